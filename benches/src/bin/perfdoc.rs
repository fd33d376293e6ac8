//! `perfdoc`: docs/performance.md from measured figures (see `ironclad_benches::perfdoc`).
//!
//! ```text
//! perfdoc collect --criterion target/criterion --figures FILE --commit SHA [--dirty]
//!                 --date DATE --out docs/perf-data.json
//! perfdoc render  --template docs/performance.md.in --data docs/perf-data.json
//!                 --out docs/performance.md
//! perfdoc check   --template docs/performance.md.in --data docs/perf-data.json
//!                 --doc docs/performance.md --criterion target/criterion --figures FILE
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ironclad_benches::perfdoc::{
    check, load_data, read_criterion, read_figures, render, CheckInput, Machine, PerfData,
    PerfDocError,
};

struct Args {
    command: String,
    values: BTreeMap<String, String>,
    dirty: bool,
}

fn parse() -> Result<Args, String> {
    let mut argv = std::env::args().skip(1);
    let command = argv
        .next()
        .ok_or("usage: perfdoc collect|render|check ...")?;
    let mut values = BTreeMap::new();
    let mut dirty = false;
    while let Some(flag) = argv.next() {
        if flag == "--dirty" {
            dirty = true;
            continue;
        }
        let key = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument `{flag}`"))?;
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        values.insert(key.to_string(), value);
    }
    Ok(Args {
        command,
        values,
        dirty,
    })
}

impl Args {
    fn path(&self, key: &str) -> Result<PathBuf, String> {
        self.values
            .get(key)
            .map(PathBuf::from)
            .ok_or_else(|| format!("{}: --{key} is required", self.command))
    }
    fn text(&self, key: &str) -> Result<String, String> {
        self.values
            .get(key)
            .cloned()
            .ok_or_else(|| format!("{}: --{key} is required", self.command))
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn produced(args: &Args) -> Result<BTreeMap<String, ironclad_benches::figures::Figure>, String> {
    let mut figures = read_criterion(&args.path("criterion")?).map_err(|e| e.to_string())?;
    // A figure recorded by the benchmark itself wins over criterion's of the same id.
    figures.extend(read_figures(&args.path("figures")?).map_err(|e| e.to_string())?);
    Ok(figures)
}

fn run(args: &Args) -> Result<(), String> {
    match args.command.as_str() {
        "collect" => {
            let data = PerfData {
                commit: args.text("commit")?,
                dirty: args.dirty,
                date: args.text("date")?,
                machine: Machine::current(),
                figures: produced(args)?,
            };
            if data.figures.is_empty() {
                return Err("collect: no figures found (did the benchmarks run?)".to_string());
            }
            let text = serde_json::to_string_pretty(&data).map_err(|e| e.to_string())?;
            write(&args.path("out")?, &(text + "\n"))?;
            println!("perfdoc: {} figures collected", data.figures.len());
            Ok(())
        }
        "render" => {
            let data = load_data(&args.path("data")?).map_err(|e| e.to_string())?;
            let template = read(&args.path("template")?)?;
            let doc = render(&template, &data).map_err(|e: PerfDocError| {
                format!(
                    "{}:{e}",
                    args.path("template").unwrap_or_default().display()
                )
            })?;
            write(&args.path("out")?, &doc)
        }
        "check" => {
            let data = load_data(&args.path("data")?).map_err(|e| e.to_string())?;
            let template = read(&args.path("template")?)?;
            let document = read(&args.path("doc")?)?;
            let produced: BTreeSet<String> = produced(args)?.into_keys().collect();
            check(&CheckInput {
                template: &template,
                data: &data,
                document: &document,
                produced: &produced,
            })
            .map_err(|e| e.to_string())?;
            println!(
                "perfdoc: docs/performance.md is the rendering of its template, and every \
                 figure in it was produced by a benchmark of this run ({} ids)",
                produced.len()
            );
            Ok(())
        }
        other => Err(format!(
            "unknown command `{other}`: collect, render or check"
        )),
    }
}

fn main() -> ExitCode {
    match parse().and_then(|args| run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perfdoc: {e}");
            ExitCode::FAILURE
        }
    }
}
