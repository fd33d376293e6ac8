//! `docs/performance.md` generated from measured figures.
//!
//! The document is rendered from a template (`docs/performance.md.in`) and the figures
//! of one full run (`docs/perf-data.json`, written by `./dev.sh perf`). A figure in the
//! template is a placeholder, `{{ EXPR | FORMAT }}`:
//!
//! - `EXPR` is terms joined by ` + `, ` - `, ` * `, ` / ` (spaces around each operator,
//!   since ids contain `/` and `-`), with the usual precedence and parentheses. A term is
//!   a number or a benchmark id, optionally followed by `@min`, `@median` (the default),
//!   `@max` or `@n`.
//! - `FORMAT` is a unit and its decimals: `ns0`, `us2`, `ms0`, `s2` (the value is in
//!   nanoseconds), `mib1`, `kib0` (bytes), `int` (a count with thousands separators),
//!   `num1`, `pct1` (a percentage), `x1` (a ratio, "12.9×"); a trailing `~` adds the
//!   spread of a single id ("36 ns (min 35, max 38 of 15)").
//!   `lt:LIMIT1:TEXT1:LIMIT2:TEXT2:...:ELSE` writes the text of the first limit the
//!   value is below, else the last text, so a conclusion follows the numbers it rests on.
//! - `{{meta:commit}}`, `{{meta:date}}`, `{{meta:machine}}` name the run.
//! - `{{given:55%}}` writes its text as it is: an input of a benchmark (a rule set's
//!   shape), not a measurement, marked so the typed-figure check passes it.
//!
//! `perfdoc check` (run by `./dev.sh test`) fails when a placeholder names an id no
//! benchmark of this run produced, when the data lacks an id the template uses, when
//! the committed document is not the rendering of the template and the data, or when
//! the template types a timing figure outside a placeholder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::figures::{Figure, Unit};

/// What went wrong generating or checking the document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PerfDocError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file did not hold the JSON it should.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A placeholder of the template is malformed or names a missing figure.
    #[error("{line}:{column}: {message}")]
    Template {
        /// 1-based line in the template.
        line: usize,
        /// 1-based column in the template.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The check found problems (one per line).
    #[error("docs/performance.md check failed:\n{0}")]
    Check(String),
}

/// The machine a run was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// The CPU's model name.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
}

impl Machine {
    /// Reads this machine's description from `/proc`.
    pub fn current() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0.0);
        Self {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu,
            cores,
            memory_gib: (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

/// The figures of one full run and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfData {
    /// The commit measured.
    pub commit: String,
    /// Whether the work tree had uncommitted changes.
    pub dirty: bool,
    /// When (UTC).
    pub date: String,
    /// On what.
    pub machine: Machine,
    /// Every figure, by id.
    pub figures: BTreeMap<String, Figure>,
}

fn read(path: &Path) -> Result<String, PerfDocError> {
    std::fs::read_to_string(path).map_err(|source| PerfDocError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn json<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, PerfDocError> {
    serde_json::from_str(text).map_err(|source| PerfDocError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads `docs/perf-data.json`.
pub fn load_data(path: &Path) -> Result<PerfData, PerfDocError> {
    json(path, &read(path)?)
}

/// The figures of a JSON Lines file written by [`crate::figures::record`]; a later line
/// for the same id replaces an earlier one. A missing file holds none.
pub fn read_figures(path: &Path) -> Result<BTreeMap<String, Figure>, PerfDocError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(PerfDocError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Figure = json(path, line)?;
        out.insert(f.id.clone(), f);
    }
    Ok(out)
}

#[derive(Deserialize)]
struct CriterionBenchmark {
    full_id: String,
}

#[derive(Deserialize)]
struct CriterionSample {
    iters: Vec<f64>,
    times: Vec<f64>,
}

/// The figures of every criterion benchmark under `dir` (`target/criterion`): for each
/// `new/` result, the time per iteration of each sample, in nanoseconds.
pub fn read_criterion(dir: &Path) -> Result<BTreeMap<String, Figure>, PerfDocError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d == dir => break,
            Err(source) => return Err(PerfDocError::Io { path: d, source }),
        };
        for entry in entries {
            let path = entry
                .map_err(|source| PerfDocError::Io {
                    path: d.clone(),
                    source,
                })?
                .path();
            if !path.is_dir() {
                continue;
            }
            let (bench, sample) = (path.join("benchmark.json"), path.join("sample.json"));
            if path.file_name().is_some_and(|n| n == "new") && bench.is_file() && sample.is_file() {
                let b: CriterionBenchmark = json(&bench, &read(&bench)?)?;
                let s: CriterionSample = json(&sample, &read(&sample)?)?;
                let per_iter: Vec<f64> = s
                    .iters
                    .iter()
                    .zip(&s.times)
                    .filter(|(i, _)| **i > 0.0)
                    .map(|(i, t)| t / i)
                    .collect();
                if let Some(f) = Figure::of(&b.full_id, Unit::Ns, &per_iter) {
                    out.insert(b.full_id, f);
                }
            } else {
                stack.push(path);
            }
        }
    }
    Ok(out)
}

/// One `{{ ... }}` of the template.
#[derive(Debug, Clone, PartialEq)]
struct Placeholder {
    /// Byte range of the whole `{{...}}` in the template.
    start: usize,
    end: usize,
    line: usize,
    column: usize,
    body: String,
}

fn placeholders(template: &str) -> Result<Vec<Placeholder>, PerfDocError> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = template[from..].find("{{").map(|i| i + from) {
        let (line, column) = position(template, open);
        let close = template[open..]
            .find("}}")
            .map(|i| i + open)
            .ok_or_else(|| PerfDocError::Template {
                line,
                column,
                message: "`{{` without `}}`".to_string(),
            })?;
        out.push(Placeholder {
            start: open,
            end: close + 2,
            line,
            column,
            body: template[open + 2..close].trim().to_string(),
        });
        from = close + 2;
    }
    Ok(out)
}

fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |n| at - n - 1) + 1;
    (line, column)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stat {
    Min,
    Median,
    Max,
    N,
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Number(f64),
    Figure(String, Stat),
}

fn parse_term(token: &str) -> Result<Term, String> {
    if let Ok(n) = token.parse::<f64>() {
        return Ok(Term::Number(n));
    }
    let (id, stat) = match token.split_once('@') {
        None => (token, Stat::Median),
        Some((id, "min")) => (id, Stat::Min),
        Some((id, "median")) => (id, Stat::Median),
        Some((id, "max")) => (id, Stat::Max),
        Some((id, "n")) => (id, Stat::N),
        Some((_, other)) => return Err(format!("unknown statistic `@{other}`")),
    };
    if id.is_empty() {
        return Err("an empty benchmark id".to_string());
    }
    Ok(Term::Figure(id.to_string(), stat))
}

/// An expression over figures: `+ - * /` with the usual precedence, and parentheses.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Term(Term),
    Op(char, Box<Expr>, Box<Expr>),
}

/// Tokens: `(` and `)` stand alone; everything else is separated by whitespace (ids
/// contain `/` and `-`, so operators need spaces around them).
fn tokens(text: &str) -> Vec<String> {
    text.replace('(', " ( ")
        .replace(')', " ) ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

struct Parser {
    tokens: Vec<String>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }
    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }
    /// sum := product (("+" | "-") product)*
    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        while let Some(op @ ("+" | "-")) = self.peek() {
            let op = if op == "+" { '+' } else { '-' };
            self.at += 1;
            left = Expr::Op(op, Box::new(left), Box::new(self.product()?));
        }
        Ok(left)
    }
    /// product := atom (("*" | "/") atom)*
    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.atom()?;
        while let Some(op @ ("*" | "/")) = self.peek() {
            let op = if op == "*" { '*' } else { '/' };
            self.at += 1;
            left = Expr::Op(op, Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
    }
    /// atom := "(" sum ")" | term
    fn atom(&mut self) -> Result<Expr, String> {
        match self.next().as_deref() {
            None => Err("an expression ends where a term was expected".to_string()),
            Some("(") => {
                let inner = self.sum()?;
                match self.next().as_deref() {
                    Some(")") => Ok(inner),
                    _ => Err("`(` without `)`".to_string()),
                }
            }
            Some(t @ (")" | "+" | "-" | "*" | "/")) => Err(format!("unexpected `{t}`")),
            Some(t) => parse_term(t).map(Expr::Term),
        }
    }
}

impl Expr {
    fn parse(text: &str) -> Result<Self, String> {
        let mut p = Parser {
            tokens: tokens(text),
            at: 0,
        };
        let e = p.sum()?;
        match p.peek() {
            None => Ok(e),
            Some(t) => Err(format!("expected an operator, found `{t}`")),
        }
    }

    fn ids(&self) -> Vec<&str> {
        match self {
            Expr::Term(Term::Figure(id, _)) => vec![id.as_str()],
            Expr::Term(Term::Number(_)) => Vec::new(),
            Expr::Op(_, a, b) => {
                let mut ids = a.ids();
                ids.extend(b.ids());
                ids
            }
        }
    }

    /// The single id this expression is, if it is one.
    fn single_id(&self) -> Option<&str> {
        match self {
            Expr::Term(Term::Figure(id, _)) => Some(id),
            _ => None,
        }
    }

    fn eval(&self, figures: &BTreeMap<String, Figure>) -> Result<f64, String> {
        match self {
            Expr::Term(Term::Number(n)) => Ok(*n),
            Expr::Term(Term::Figure(id, stat)) => {
                let f = figures
                    .get(id)
                    .ok_or_else(|| format!("no figure `{id}` in the data"))?;
                Ok(match stat {
                    Stat::Min => f.min,
                    Stat::Median => f.median,
                    Stat::Max => f.max,
                    Stat::N => f.n as f64,
                })
            }
            Expr::Op(op, a, b) => {
                let (a, b) = (a.eval(figures)?, b.eval(figures)?);
                match op {
                    '+' => Ok(a + b),
                    '-' => Ok(a - b),
                    '*' => Ok(a * b),
                    _ if b == 0.0 => Err("division by zero".to_string()),
                    _ => Ok(a / b),
                }
            }
        }
    }
}

/// `v` with `decimals` decimals and thousands separators.
fn grouped(v: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if v < 0.0 && out.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '-');
    }
    out
}

/// A value formatted by `spec` (without the spread): the number and its unit.
fn format_value(v: f64, spec: &str) -> Result<(String, &'static str), String> {
    let split = spec
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(spec.len());
    let (unit, digits) = spec.split_at(split);
    let decimals: usize = if digits.is_empty() {
        0
    } else {
        digits
            .parse()
            .map_err(|_| format!("bad decimals in `{spec}`"))?
    };
    let (scaled, suffix) = match unit {
        "ns" => (v, " ns"),
        "us" => (v / 1e3, " µs"),
        "ms" => (v / 1e6, " ms"),
        "s" => (v / 1e9, " s"),
        "mib" => (v / 1024.0 / 1024.0, " MiB"),
        "kib" => (v / 1024.0, " KiB"),
        "int" | "num" => (v, ""),
        "pct" => (v, "%"),
        "x" => (v, "×"),
        other => return Err(format!("unknown format `{other}`")),
    };
    Ok((grouped(scaled, decimals), suffix))
}

fn render_one(body: &str, data: &PerfData) -> Result<String, String> {
    if let Some(given) = body.strip_prefix("given:") {
        return Ok(given.trim().to_string());
    }
    if let Some(key) = body.strip_prefix("meta:") {
        let m = &data.machine;
        return match key {
            "commit" => Ok(format!(
                "{}{}",
                data.commit.get(..12).unwrap_or(&data.commit),
                if data.dirty {
                    " with uncommitted changes"
                } else {
                    ""
                }
            )),
            "date" => Ok(data.date.clone()),
            "machine" => Ok(format!(
                "{} cores ({}), {} GiB, Linux {}",
                m.cores, m.cpu, m.memory_gib, m.kernel
            )),
            other => Err(format!("unknown meta key `{other}`")),
        };
    }
    let (expr, spec) = body
        .rsplit_once('|')
        .ok_or("a placeholder needs `EXPR | FORMAT`")?;
    let (expr, spec) = (Expr::parse(expr)?, spec.trim());
    let v = expr.eval(&data.figures)?;
    if let Some(cases) = spec.strip_prefix("lt:") {
        // LIMIT1:TEXT1:LIMIT2:TEXT2:...:ELSE, the first limit the value is below wins.
        let parts: Vec<&str> = cases.split(':').collect();
        if parts.len().is_multiple_of(2) {
            return Err("`lt:` needs LIMIT:TEXT pairs and a last TEXT".to_string());
        }
        for pair in parts.chunks(2) {
            let [limit, text] = pair else {
                return Ok(pair[0].to_string());
            };
            let limit: f64 = limit.parse().map_err(|_| format!("bad limit `{limit}`"))?;
            if v < limit {
                return Ok((*text).to_string());
            }
        }
        return Err("`lt:` needs a last TEXT".to_string());
    }
    let (spec, spread) = match spec.strip_suffix('~') {
        Some(s) => (s, true),
        None => (spec, false),
    };
    let (text, suffix) = format_value(v, spec)?;
    if !spread {
        return Ok(format!("{text}{suffix}"));
    }
    let Some(id) = expr.single_id() else {
        return Err("a spread (`~`) needs a single benchmark id".to_string());
    };
    let f = data
        .figures
        .get(id)
        .ok_or_else(|| format!("no figure `{id}` in the data"))?;
    if f.n < 2 {
        return Ok(format!("{text}{suffix} (one run)"));
    }
    let (min, _) = format_value(f.min, spec)?;
    let (max, _) = format_value(f.max, spec)?;
    Ok(format!("{text}{suffix} (min {min}, max {max} of {})", f.n))
}

/// The document: `template` with every placeholder replaced by its figure.
pub fn render(template: &str, data: &PerfData) -> Result<String, PerfDocError> {
    let mut out = String::with_capacity(template.len());
    let mut from = 0;
    for p in placeholders(template)? {
        out.push_str(&template[from..p.start]);
        let text = render_one(&p.body, data).map_err(|message| PerfDocError::Template {
            line: p.line,
            column: p.column,
            message,
        })?;
        out.push_str(&text);
        from = p.end;
    }
    out.push_str(&template[from..]);
    Ok(out)
}

/// Every benchmark id the template's placeholders name, with the first place each is used.
fn template_ids(template: &str) -> Result<BTreeMap<String, (usize, usize)>, PerfDocError> {
    let mut ids = BTreeMap::new();
    for p in placeholders(template)? {
        if p.body.starts_with("meta:") || p.body.starts_with("given:") {
            continue;
        }
        let expr = p
            .body
            .rsplit_once('|')
            .map(|(e, _)| e)
            .ok_or_else(|| PerfDocError::Template {
                line: p.line,
                column: p.column,
                message: "a placeholder needs `EXPR | FORMAT`".to_string(),
            })
            .and_then(|e| {
                Expr::parse(e).map_err(|message| PerfDocError::Template {
                    line: p.line,
                    column: p.column,
                    message,
                })
            })?;
        for id in expr.ids() {
            ids.entry(id.to_string()).or_insert((p.line, p.column));
        }
    }
    Ok(ids)
}

/// Timing figures typed into the template outside a placeholder (a number followed by
/// ns, µs, ms, % or "packets/s"): each is a figure no run produced.
pub fn typed_figures(template: &str) -> Result<Vec<(usize, usize, String)>, PerfDocError> {
    let mut blanked = template.to_string();
    for p in placeholders(template)?.iter().rev() {
        blanked.replace_range(p.start..p.end, &" ".repeat(p.end - p.start));
    }
    let mut found = Vec::new();
    let bytes: Vec<(usize, char)> = blanked.char_indices().collect();
    let mut i = 0;
    while i < bytes.len() {
        let (at, c) = bytes[i];
        let starts_number = c.is_ascii_digit() && (i == 0 || !bytes[i - 1].1.is_alphanumeric());
        if !starts_number {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < bytes.len() && (bytes[j].1.is_ascii_digit() || ",.".contains(bytes[j].1)) {
            j += 1;
        }
        let number_end = bytes.get(j).map_or(blanked.len(), |b| b.0);
        let rest = blanked[number_end..].trim_start_matches(' ');
        let unit = ["ns", "µs", "us", "ms", "%", "packets/s"]
            .into_iter()
            .find(|u| {
                rest.starts_with(u)
                    && !rest[u.len()..]
                        .chars()
                        .next()
                        .is_some_and(|n| n.is_alphanumeric())
            });
        if let Some(unit) = unit {
            let (line, column) = position(&blanked, at);
            found.push((line, column, format!("{}{unit}", &blanked[at..number_end])));
        }
        i = j.max(i + 1);
    }
    Ok(found)
}

/// What `perfdoc check` compares.
pub struct CheckInput<'a> {
    /// The template's text.
    pub template: &'a str,
    /// The committed data.
    pub data: &'a PerfData,
    /// The committed document's text.
    pub document: &'a str,
    /// The ids this run's benchmarks produced (criterion's and recorded ones).
    pub produced: &'a BTreeSet<String>,
}

/// Checks the document against its template, its data and this run's benchmarks; every
/// problem found is listed in the error.
pub fn check(input: &CheckInput<'_>) -> Result<(), PerfDocError> {
    let mut problems = Vec::new();
    for (id, (line, column)) in template_ids(input.template)? {
        if !input.produced.contains(&id) {
            problems.push(format!(
                "performance.md.in:{line}:{column}: `{id}`: no benchmark of this run produced it"
            ));
        }
        if !input.data.figures.contains_key(&id) {
            problems.push(format!(
                "performance.md.in:{line}:{column}: `{id}` is not in docs/perf-data.json (run ./dev.sh perf)"
            ));
        }
    }
    for (line, column, text) in typed_figures(input.template)? {
        problems.push(format!(
            "performance.md.in:{line}:{column}: `{text}` is typed, not measured: use a placeholder"
        ));
    }
    match render(input.template, input.data) {
        Ok(rendered) if rendered != input.document => problems.push(
            "docs/performance.md is not the rendering of docs/performance.md.in with \
             docs/perf-data.json: edit the template and run `./dev.sh perf-render`"
                .to_string(),
        ),
        Ok(_) => {}
        Err(e) => problems.push(format!("performance.md.in:{e}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PerfDocError::Check(problems.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> PerfData {
        let mut figures = BTreeMap::new();
        for f in [
            Figure::of("a/b/1", Unit::Ns, &[35.0, 36.0, 38.0]).unwrap(),
            Figure::of("empty", Unit::Ns, &[26.0]).unwrap(),
            Figure::of("mem", Unit::Bytes, &[59_034_624.0]).unwrap(),
        ] {
            figures.insert(f.id.clone(), f);
        }
        PerfData {
            commit: "0123456789abcdef".to_string(),
            dirty: false,
            date: "2026-11-23".to_string(),
            machine: Machine {
                kernel: "6.18".to_string(),
                cpu: "cpu".to_string(),
                cores: 2,
                memory_gib: 24.0,
            },
            figures,
        }
    }

    #[test]
    fn placeholders_render_values_spreads_expressions_and_conclusions() {
        let t = "x {{a/b/1 | ns0~}}, over {{a/b/1@min - empty | ns0}}, \
                 {{a/b/1 / empty | x1}}, {{mem | mib1}}, {{(a/b/1 - empty) / empty * 100 | pct1}} \
                 {{a/b/1 | lt:40:fast:slow}} {{a/b/1 | lt:0:neg:30:small:big}} {{meta:commit}} {{ 2 + 3 * 4 | int}} {{given:55%}}";
        let out = render(t, &data()).unwrap();
        assert_eq!(
            out,
            "x 36 ns (min 35, max 38 of 3), over 9 ns, 1.4×, 56.3 MiB, 38.5% fast big 0123456789ab 14 55%"
        );
    }

    #[test]
    fn a_missing_id_or_bad_format_names_line_and_column() {
        let err = render("ok\n  {{nope | ns0}}", &data()).unwrap_err();
        assert!(
            err.to_string().starts_with("2:3: no figure `nope`"),
            "{err}"
        );
        let err = render("{{a/b/1 | parsecs}}", &data()).unwrap_err();
        assert!(err.to_string().contains("unknown format"), "{err}");
        let err = render("{{a/b/1 - empty | ns0~}}", &data()).unwrap_err();
        assert!(err.to_string().contains("single benchmark id"), "{err}");
        let err = render("{{(a/b/1 - empty | ns0}}", &data()).unwrap_err();
        assert!(err.to_string().contains("without `)`"), "{err}");
        let err = render("{{a/b/1 empty | ns0}}", &data()).unwrap_err();
        assert!(err.to_string().contains("expected an operator"), "{err}");
    }

    #[test]
    fn typed_timing_figures_are_found_outside_placeholders_only() {
        let found = typed_figures(
            "a 64-byte frame, 15 rounds, 3 s, v6 {{x | ns0}}\nit took 1.42 µs and 5%, 2,000 ns",
        )
        .unwrap();
        let texts: Vec<_> = found.iter().map(|f| f.2.as_str()).collect();
        assert_eq!(texts, ["1.42µs", "5%", "2,000ns"]);
        assert_eq!((found[0].0, found[0].1), (2, 9));
    }

    #[test]
    fn check_lists_unproduced_ids_stale_documents_and_typed_figures() {
        let template = "{{a/b/1 | ns0}} {{gone | ns0}} 12 ns";
        let mut data = data();
        data.figures.insert(
            "gone".to_string(),
            Figure::of("gone", Unit::Ns, &[1.0]).unwrap(),
        );
        let produced: BTreeSet<String> = ["a/b/1".to_string()].into();
        let err = check(&CheckInput {
            template,
            data: &data,
            document: "36 ns 2 ns 12 ns",
            produced: &produced,
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`gone`: no benchmark of this run produced it"),
            "{err}"
        );
        assert!(err.contains("is not the rendering"), "{err}");
        assert!(err.contains("`12ns` is typed"), "{err}");
        let produced: BTreeSet<String> = ["a/b/1".to_string(), "gone".to_string()].into();
        check(&CheckInput {
            template: "{{a/b/1 | ns0}} {{gone | ns0}}",
            data: &data,
            document: "36 ns 1 ns",
            produced: &produced,
        })
        .unwrap();
    }

    #[test]
    fn criterion_results_become_figures_per_iteration() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("g/f/100/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("benchmark.json"), r#"{"full_id":"g/f/100","x":1}"#).unwrap();
        std::fs::write(
            new.join("sample.json"),
            r#"{"sampling_mode":"Linear","iters":[1.0,2.0,4.0],"times":[10.0,30.0,48.0]}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("g/f/100/base")).unwrap();
        let figures = read_criterion(dir.path()).unwrap();
        let f = &figures["g/f/100"];
        assert_eq!((f.min, f.median, f.max, f.n), (10.0, 12.0, 15.0, 3));
        assert!(read_criterion(&dir.path().join("absent"))
            .unwrap()
            .is_empty());
    }

    /// The repository's own document: CI checks it against this run's benchmarks only
    /// after the guests, near the end of the run; a figure typed into the template, an id
    /// missing from the data or a document not rendered again fails here, in the host
    /// tests, within minutes.
    #[test]
    fn the_repository_s_template_types_no_figure_and_renders_to_its_document() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        let template = std::fs::read_to_string(docs.join("performance.md.in")).unwrap();
        let data = load_data(&docs.join("perf-data.json")).unwrap();
        let document = std::fs::read_to_string(docs.join("performance.md")).unwrap();
        let typed = typed_figures(&template).unwrap();
        assert!(
            typed.is_empty(),
            "typed figures in performance.md.in: {typed:?}"
        );
        let missing: Vec<String> = template_ids(&template)
            .unwrap()
            .into_iter()
            .filter(|(id, _)| !data.figures.contains_key(id))
            .map(|(id, (line, column))| format!("{line}:{column}: {id}"))
            .collect();
        assert!(missing.is_empty(), "not in perf-data.json: {missing:?}");
        assert!(
            render(&template, &data).unwrap() == document,
            "docs/performance.md is not the rendering of its template: run ./dev.sh perf-render"
        );
    }
}
