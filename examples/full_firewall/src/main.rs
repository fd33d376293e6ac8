//! `full_firewall`: the reference daemon that runs Ironclad from one policy.
//!
//! Commands so far: `demo` (the Shield on a throwaway namespace, showing live drops) and
//! `audit` (the helper audit of every embedded BPF object, as JSON).

mod demo;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ironclad_bpf::{audit_object, object, Allowlist};

#[derive(Parser)]
#[command(name = "full_firewall", version, about = "Ironclad reference daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a throwaway netns/veth pair, enforce a demo policy with the Shield, send
    /// traffic from allowed and denied sources and print live per-rule drop counts.
    Demo {
        /// Seconds of traffic.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Audit every embedded BPF object against the built-in helper allowlist and print
    /// what each program calls, as JSON. Needs no privileges; loads nothing.
    Audit,
}

fn audit() -> Result<()> {
    let allowlist = Allowlist::builtin();
    let mut out = serde_json::Map::new();
    for obj in object::all() {
        let report = audit_object(obj, &allowlist)?;
        let programs: serde_json::Map<String, serde_json::Value> = report
            .programs
            .iter()
            .map(|(name, calls)| {
                let calls: Vec<String> = calls.iter().map(ToString::to_string).collect();
                (name.clone(), serde_json::json!(calls))
            })
            .collect();
        out.insert(obj.name().to_string(), serde_json::Value::Object(programs));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Demo { seconds } => demo::run(seconds),
        Command::Audit => audit(),
    }
}
