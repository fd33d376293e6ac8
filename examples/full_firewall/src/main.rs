//! `full_firewall`: the reference daemon that runs Ironclad from one YAML policy.
//!
//! ```text
//! full_firewall check  --config FILE                    validate and compile only (JSON)
//! full_firewall run    --config FILE [--iface IFACE|auto]... enforce until SIGINT/SIGTERM;
//!                      [--pin-dir DIR] [--dry-run]      SIGHUP reloads atomically
//!                      [--detach-on-exit] [--audit-log FILE] [--events FILE|-]
//! full_firewall status [--pin-dir DIR] [--json]         read the pinned maps
//! full_firewall detach [--pin-dir DIR]                  remove every pin
//! full_firewall confirm [--run-dir DIR]                 keep a reload made with --confirm-within
//! full_firewall keygen --out KEY                        a key pair for signing bundles
//! full_firewall sign   --key KEY [--serial N] BUNDLE    sign a policy bundle directory
//! full_firewall run    --bundle DIR --trusted-key PUB   run a signed bundle instead of --config
//! full_firewall demo   [--seconds N]                    the Shield on a throwaway netns
//! full_firewall audit                                   helper audit of every program
//! full_firewall rules list|add|rm [--socket PATH]         a running daemon's rules (control API)
//! full_firewall apply POLICY | --bundle DIR              replace a running daemon's policy (control API)
//! full_firewall events --follow [--kind K]...            a running daemon's events (control API)
//! ```
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad input (the policy, the arguments).

mod api;
mod cli_api;
#[cfg(feature = "demo")]
mod demo;
mod forward;
mod health;
mod history;
mod ifaces;
mod instance;
mod logging;
mod metrics;
mod notify;
mod privileges;
mod progress;
mod rollout;
mod run;
mod status;
mod streams;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ironclad_bpf::{audit_object, object, Allowlist, DEFAULT_PIN_ROOT};
use ironclad_policy::config::compile_file;

#[derive(Parser)]
#[command(name = "full_firewall", version, about = "Ironclad reference daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines on stderr are written: `text` (journald-friendly) or `json`.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and compile a policy; print prefix counts as JSON. Exit 2 with one
    /// `FILE:LINE:COLUMN: message` line per problem on stderr if it is invalid.
    /// Against this host by default (the interfaces its selectors choose here, the
    /// executables and cgroups its rules name); with `--portable`, without it.
    Check {
        /// The policy file.
        #[arg(long)]
        config: PathBuf,
        /// Check the policy for any host (a fleet's, in CI): its syntax, values and
        /// files, but not this host's interfaces, executables or cgroups.
        #[arg(long)]
        portable: bool,
    },
    /// Enforce a policy in the foreground until SIGINT/SIGTERM; SIGHUP reloads it.
    Run(Box<run::RunArgs>),
    /// Print what the pinned maps say (rules, counters, totals); no daemon needed.
    Status {
        /// The pin root.
        #[arg(long, default_value = DEFAULT_PIN_ROOT)]
        pin_dir: PathBuf,
        /// The daemon's run directory (its health report: which features enforce).
        #[arg(long, default_value = rollout::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the stateful firewall's tracked connections (read from its pins).
    Conntrack {
        /// The pin root.
        #[arg(long, default_value = DEFAULT_PIN_ROOT)]
        pin_dir: PathBuf,
        /// The daemon's run directory (the names of the firewall's rules).
        #[arg(long, default_value = rollout::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
        /// JSON (an array of connections) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when a daemon's control loop turned in the last 10 s (with `--ready`: and
    /// every configured feature runs); 1 otherwise, with the reason. For liveness and
    /// readiness probes: it reads `RUN_DIR/health.json`, no network needed.
    Health {
        /// The daemon's run directory.
        #[arg(long, default_value = rollout::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
        /// Also require every configured feature to be running.
        #[arg(long)]
        ready: bool,
    },
    /// Remove every program, link and map full_firewall pinned.
    Detach {
        /// The pin root.
        #[arg(long, default_value = DEFAULT_PIN_ROOT)]
        pin_dir: PathBuf,
    },
    #[cfg(feature = "demo")]
    /// Build a throwaway netns/veth pair, enforce `examples/full_firewall/demo.yaml`,
    /// send traffic from allowed and denied sources and print live per-rule drops.
    Demo {
        /// Seconds of traffic.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Write a new Ed25519 key pair for signing policy bundles: the private key to OUT
    /// (mode 0600; keep it off the hosts) and the public key to OUT.pub (`--trusted-key`).
    Keygen {
        /// Where the private key goes; the public key goes next to it with `.pub`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a policy bundle: a directory with `policy.yaml` and the files it refers to.
    /// Writes `manifest.json` (each file's SHA-256 and the serial) and `manifest.sig`.
    Sign {
        /// The private key (`full_firewall keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The serial; default: one more than the bundle's current manifest (1 if none).
        #[arg(long)]
        serial: Option<u64>,
        /// The bundle directory.
        bundle: PathBuf,
    },
    /// Confirm the reload a daemon started with `--confirm-within` waits on, so it stays.
    Confirm {
        /// The daemon's run directory.
        #[arg(long, default_value = rollout::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
    },
    /// Audit every embedded BPF object against the built-in helper allowlist and print
    /// what each program calls, as JSON. Needs no privileges; loads nothing.
    Audit,
    /// Replace a running daemon's policy (its control API): checked, written over its
    /// policy file (or bundle directory) and applied; provisional with `--confirm-within`.
    Apply(cli_api::ApplyArgs),
    /// List, add and remove rules of a running daemon (its control API).
    Rules(cli_api::RulesArgs),
    /// Print a running daemon's events as JSON lines as they happen (its control API).
    Events(cli_api::EventsArgs),
    /// Print the completion script of a shell (`full_firewall completions bash >
    /// /etc/bash_completion.d/full_firewall`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, roff (`full_firewall manpage > full_firewall.1`; `man -l
    /// full_firewall.1`).
    Manpage,
}

/// `check --portable`: the policy checked without this host; says what was not looked
/// up.
fn check_portable(config: &std::path::Path) -> Result<ExitCode> {
    match ironclad_policy::config::check_file_portable(config) {
        Err(err) => {
            for d in &err.diagnostics {
                eprintln!("{d}");
            }
            Ok(ExitCode::from(2))
        }
        Ok(warnings) => {
            for warning in &warnings {
                eprintln!("{warning}");
            }
            let out = serde_json::json!({
                "config": config.display().to_string(),
                "portable": true,
                "checked": "syntax, values, feeds and rule files",
                "not_checked": "this host's interfaces (selectors are checked, not resolved), executables and cgroups (their paths must be absolute): `check` without --portable on each host, and the daemon at start",
                "warnings": warnings.len(),
            });
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(config: &std::path::Path) -> Result<ExitCode> {
    match compile_file(config) {
        Err(err) => {
            for d in &err.diagnostics {
                eprintln!("{d}");
            }
            Ok(ExitCode::from(2))
        }
        Ok(compiled) => {
            for warning in &compiled.warnings {
                eprintln!("{warning}");
            }
            let mut out = serde_json::json!({
                "config": config.display().to_string(),
                "ipv4_prefixes": 0,
                "ipv6_prefixes": 0,
            });
            if let Some(f) = &compiled.firewall {
                out["firewall"] = serde_json::json!({
                    "interfaces": f.interfaces.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
                    // Which selector chose each interface on this host.
                    "interface_selectors": f.interface_selectors.iter().map(|s| serde_json::json!({
                        "selector": s.selector.to_string(),
                        "field": s.origin.field,
                        "chose": f.interfaces.iter().filter(|i| i.origin.field == s.origin.field).map(|i| i.name.clone()).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "rules": f.rules.len(),
                    "default_inbound": if f.default_inbound == ironclad_policy::firewall::FwAction::Accept { "accept" } else { "drop" },
                    "default_outbound": if f.default_outbound == ironclad_policy::firewall::FwAction::Accept { "accept" } else { "drop" },
                    "stateful": f.stateful,
                    "mode": if f.dry_run { "dry-run" } else { "enforce" },
                    "log_default_drops": f.log_default_drops,
                });
                if let Some(syn) = &f.syn_flood {
                    out["firewall"]["syn_flood"] = serde_json::json!({
                        "ports": syn.ports.iter().map(|r| ironclad_policy::firewall::ports_text(&[*r])).collect::<Vec<_>>(),
                        "mode": if syn.mode == ironclad_policy::firewall::SynFloodMode::UnderAttack { "under_attack" } else { "always" },
                        "threshold_pps": syn.threshold_pps,
                        "hold_seconds": syn.hold_seconds,
                    });
                }
                if let Some(n) = &f.nat {
                    out["firewall"]["nat"] = serde_json::json!({
                        "dnat": n.dnat.iter().map(|d| serde_json::json!({
                            "iface": d.iface,
                            "proto": d.proto.name(),
                            "dport": d.dport,
                            "to": d.to.to_string(),
                        })).collect::<Vec<_>>(),
                        "snat": n.snat.iter().map(|s| serde_json::json!({
                            "iface": s.iface,
                            "src": s.src.to_string(),
                            "to": match s.to {
                                ironclad_policy::nat::SnatTo::Addr(a) => a.to_string(),
                                _ => "masquerade".to_string(),
                            },
                        })).collect::<Vec<_>>(),
                    });
                }
                if let Some(ids) = &f.ids {
                    out["firewall"]["ids"] = serde_json::json!({
                        "rules": ids.rules.rules.len(),
                        "files": ids.rule_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                        "depth": ids.depth,
                        "sample_every": ids.sample_every,
                        "mode": if ids.dry_run { "dry-run" } else { "enforce" },
                    });
                }
                if !f.scrub.is_empty() {
                    out["firewall"]["scrub"] = f
                        .scrub
                        .iter()
                        .map(|s| {
                            serde_json::json!({
                                "interface": s.interface,
                                "ttl_floor": s.ttl_floor,
                                "hop_limit_floor": s.hop_limit_floor,
                                "mss_max": s.mss_max,
                                "clear_df": s.clear_df,
                                "random_ip_id": s.random_ip_id,
                                "ingress": s.ingress,
                            })
                        })
                        .collect();
                }
                if let Some(q) = &f.quarantine {
                    out["firewall"]["quarantine"] = serde_json::json!({
                        "interfaces": q.interfaces,
                        "sets": q.sets.iter().map(|set| serde_json::json!({
                            "sources": set.sources.len(),
                            "target": match &set.target {
                                ironclad_policy::firewall::QuarantineTarget::Vlan(v) => format!("vlan {v}"),
                                ironclad_policy::firewall::QuarantineTarget::Redirect(i) => format!("redirect {i}"),
                                ironclad_policy::firewall::QuarantineTarget::RedirectIngress(i) => format!("redirect_ingress {i}"),
                                _ => "unknown".to_string(),
                            },
                        })).collect::<Vec<_>>(),
                    });
                }
                if let Some(l) = &f.limits {
                    out["firewall"]["limits"] =
                        status::limits_json(&ironclad_bpf::LimitSettings::from_policy(Some(l)));
                }
                out["warnings"] = compiled.warnings.len().into();
            }
            if let Some(e) = &compiled.egress {
                out["egress"] = serde_json::json!({
                    "rules": e.rules.len(),
                    "default": if e.default_action == ironclad_core::abi::EgressAction::Deny as u8 { "deny" } else { "allow" },
                    "domain_rules": e.domain_rules.iter().map(|r| serde_json::json!({
                        "rule_id": r.rule_id,
                        "patterns": r.patterns.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "domain_feeds": e.domain_feeds.iter().map(|f| serde_json::json!({
                        "name": f.name,
                        "path": f.path.display().to_string(),
                        "names": f.names.len(),
                        "block_queries": f.block_queries,
                    })).collect::<Vec<_>>(),
                    "dns": {"grace_seconds": e.dns.grace_seconds, "max_ttl_seconds": e.dns.max_ttl_seconds},
                });
            }
            if let Some(shield) = &compiled.shield {
                out["ipv4_prefixes"] = shield.ipv4_prefixes().into();
                out["ipv6_prefixes"] = shield.ipv6_prefixes().into();
                out["rules"] = shield.rules.len().into();
                out["duplicates_merged"] = shield.duplicates_merged.into();
                out["management"] = shield.management.len().into();
                out["mode"] = status::mode_name(shield.mode).into();
                out["sources"] = status::sources_json(shield);
                out["warnings"] = compiled.warnings.len().into();
                for warning in shield.sources.iter().flat_map(|s| &s.warnings) {
                    eprintln!("{warning} (warning: lenient feed)");
                }
            }
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn keygen(out: &std::path::Path) -> Result<ExitCode> {
    let public = ironclad_policy::bundle::generate_key(out)?;
    println!(
        "private key: {} (keep it off the hosts)\npublic key:  {} (give it to full_firewall run --trusted-key)",
        out.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn sign(key: &std::path::Path, serial: Option<u64>, bundle: &std::path::Path) -> Result<ExitCode> {
    // A bundle whose policy does not compile is not worth signing.
    let policy = bundle.join(ironclad_policy::bundle::POLICY);
    let compiled = match compile_file(&policy) {
        Ok(compiled) => compiled,
        Err(err) => {
            for d in &err.diagnostics {
                eprintln!("{d}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    // Nor one whose policy reads a file the signature would not cover: every file it
    // reads must travel in the bundle.
    let outside = ironclad_policy::bundle::outside_paths(&compiled, bundle);
    for (file, why) in &outside {
        eprintln!(
            "{}: {} reads {}, which is not in the bundle ({why})",
            policy.display(),
            file.what,
            file.path.display()
        );
    }
    if !outside.is_empty() {
        return Ok(ExitCode::from(2));
    }
    let manifest = ironclad_policy::bundle::sign_bundle(bundle, key, serial)?;
    println!(
        "signed {}: serial {}, {} files",
        bundle.display(),
        manifest.serial,
        manifest.files.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn audit() -> Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread (the log's included): every thread inherits the smaller sets.
    let dropped = matches!(cli.command, Command::Run(_)).then(privileges::drop_unneeded);
    // The demo's output is what it shows: its log only says what went wrong.
    #[cfg(feature = "demo")]
    let level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    #[cfg(not(feature = "demo"))]
    let level = "info";
    logging::init(cli.log_format, level);
    // The daemon's fatal reason goes through its log (a journald priority under
    // systemd, a JSON line with `--log-format json`); a command's, to the terminal.
    let fatal_to_log = matches!(cli.command, Command::Run(_));
    match dropped {
        Some(Ok(caps)) if !caps.is_empty() => {
            tracing::debug!("capabilities dropped: {caps:?}");
        }
        Some(Err(e)) => tracing::warn!("dropping the capabilities run does not use: {e}"),
        _ => {}
    }
    let result = match cli.command {
        Command::Check {
            config,
            portable: false,
        } => check(&config),
        Command::Check {
            config,
            portable: true,
        } => check_portable(&config),
        Command::Run(args) => run::run(&args),
        Command::Status {
            pin_dir,
            run_dir,
            json,
        } => status::status(&pin_dir, &run_dir, json),
        Command::Conntrack {
            pin_dir,
            run_dir,
            json,
        } => status::conntrack(&pin_dir, &run_dir, json),
        Command::Health { run_dir, ready } => Ok(health::probe(&run_dir, ready)),
        Command::Detach { pin_dir } => status::detach(&pin_dir),
        #[cfg(feature = "demo")]
        Command::Demo { seconds } => demo::run(seconds).map(|()| ExitCode::SUCCESS),
        Command::Audit => audit(),
        Command::Rules(args) => cli_api::rules(args),
        Command::Apply(args) => cli_api::apply(args),
        Command::Events(args) => cli_api::events(args),
        Command::Confirm { run_dir } => rollout::confirm(&run_dir),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "full_firewall",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Keygen { out } => keygen(&out),
        Command::Sign {
            key,
            serial,
            bundle,
        } => sign(&key, serial, &bundle),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`full_firewall status | head`): what it wanted was read.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let reason = ironclad_core::error::report(e.as_ref());
            if fatal_to_log {
                tracing::error!("{reason}");
            } else {
                eprintln!("full_firewall: {reason}");
            }
            ExitCode::FAILURE
        }
    }
}
