//! `status` and `detach`: work on the pins alone, no running daemon needed.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use std::collections::BTreeMap;

use anyhow::Result;
use ironclad_bpf::{
    EgressFirewall, EgressStatus, Firewall, FirewallStatus, Loader, RuleLabel, Shield,
    ShieldStatus, Telemetry,
};
use ironclad_core::abi::SHIELD_F_DRY_RUN;
use ironclad_policy::shield::{CompiledShield, Mode};
use ironclad_policy::sources::SourceKind;

/// `enforce` or `dry-run`, as in the policy file.
pub(crate) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::DryRun => "dry-run",
    }
}

/// Compiled prefix counts per feed and country: `name -> {ipv4_prefixes, ipv6_prefixes,
/// ...}`, as `check` prints them.
pub(crate) fn sources_json(shield: &CompiledShield) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for source in &shield.sources {
        let Some(set) = shield.sets.iter().find(|s| s.name == source.name) else {
            continue;
        };
        let v4 = set.prefixes.ipv4_len();
        let mut entry = serde_json::json!({
            "ipv4_prefixes": v4,
            "ipv6_prefixes": set.prefixes.len() - v4,
            "action": format!("{:?}", source.action).to_lowercase(),
        });
        match &source.kind {
            SourceKind::Feed { path, format, .. } => {
                entry["path"] = path.display().to_string().into();
                entry["format"] = format.name().into();
                entry["skipped"] = source.skipped.into();
                entry["masked"] = source.masked.into();
            }
            SourceKind::Country { code, db } => {
                entry["country"] = code.as_str().into();
                entry["geoip_db"] = db.display().to_string().into();
            }
            SourceKind::Everything => {}
        }
        out.insert(source.name.clone(), entry);
    }
    serde_json::Value::Object(out)
}

/// The status as the JSON `status --json` prints.
pub(crate) fn to_json(status: &ShieldStatus) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = status
        .rules
        .iter()
        .map(|r| {
            serde_json::json!({
                "cidr": r.cidr().map(|c| c.to_string()),
                "set": match &r.label {
                    RuleLabel::Set(name) => serde_json::Value::from(name.as_str()),
                    RuleLabel::Cidr(_) => serde_json::Value::Null,
                },
                "ipv4_prefixes": r.prefixes_v4,
                "ipv6_prefixes": r.prefixes_v6,
                "action": r.action.name(),
                "rule_id": r.rule_id,
                "packets": r.counter.packets,
                "bytes": r.counter.bytes,
            })
        })
        .collect();
    let totals: serde_json::Map<String, serde_json::Value> = status
        .totals
        .iter()
        .map(|(t, c)| {
            (
                t.name().to_string(),
                serde_json::json!({"packets": c.packets, "bytes": c.bytes}),
            )
        })
        .collect();
    let c = &status.config;
    serde_json::json!({
        "rules": rules,
        "totals": totals,
        "management": status.management.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "mode": if c.flags & SHIELD_F_DRY_RUN != 0 { "dry-run" } else { "enforce" },
        "rate_limit": if c.rate_pps > 0 {
            serde_json::json!({"pps": c.rate_pps, "burst": c.rate_burst})
        } else {
            serde_json::Value::Null
        },
        "sample_rate": c.sample_rate,
        "events_per_second": c.events_per_sec,
        "links": status.links.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "ipv4_lookup": status.ipv4_path.as_str(),
        "ipv6_lookup": status.ipv6_path.as_str(),
        "slot": status.slot,
        "map_bytes": status.map_bytes(),
        "maps": status
            .memory
            .iter()
            .map(|m| (m.name.clone(), serde_json::Value::from(m.bytes)))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// The egress section of `status --json`.
pub(crate) fn egress_json(
    status: &EgressStatus,
    names: &BTreeMap<u32, RuleName>,
) -> serde_json::Value {
    serde_json::json!({
        "default": if status.config.default_action == 2 { "deny" } else { "allow" },
        "rate_limit": if status.config.rate_per_sec > 0 {
            serde_json::json!({"per_second": status.config.rate_per_sec, "burst": status.config.rate_burst})
        } else {
            serde_json::Value::Null
        },
        "rules": status.rules.iter().map(|(id, hits)| {
            let n = names.get(id);
            serde_json::json!({
                "rule_id": id,
                "name": counter_name(*id, n.map(|n| n.name.as_str())),
                "rule": n.map(|n| n.rule.as_str()),
                "hits": hits,
            })
        }).collect::<Vec<_>>(),
        "totals": status.totals.iter().map(|(t, n)| (t.name().to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
    })
}

/// The domain policy's part of `status --json`: the live table of addresses DNS
/// answers opened (each with the executable that received the answer and the time each
/// pattern keeps it open), the addresses of feed names, the counters.
pub(crate) fn domains_json(status: &ironclad_bpf::egress::DomainStatus) -> serde_json::Value {
    serde_json::json!({
        "active": status.active,
        "patterns": status.patterns.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "opened": status.opened.iter().map(|o| serde_json::json!({
            "address": o.addr.to_string(),
            "name": o.name,
            "exe": o.exe_path,
            "exe_id": format!("{}:{}", o.exe.dev, o.exe.ino),
            "uid": o.uid,
            "patterns": o.patterns.iter().map(|(p, left)| serde_json::json!({
                "pattern": p.to_string(),
                "expires_in_seconds": left.as_secs(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "denied": status.denied.iter().map(|d| serde_json::json!({
            "address": d.addr.to_string(),
            "feed": d.feed,
            "expires_in_seconds": d.expires_in.as_secs(),
        })).collect::<Vec<_>>(),
        "totals": status.totals.iter().map(|(t, n)| (t.name().to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
        "feeds": status.feeds.iter().map(|f| serde_json::json!({
            "name": f.name,
            "counters": f.counters.iter().map(|(c, n)| (c.name().to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The daemon's own report (from its run directory) as JSON: alive, ready, and each
/// configured feature with what runs or why not. `null` when no daemon wrote one.
fn daemon_json(report: Option<&ironclad_agent::health::Report>) -> serde_json::Value {
    report.map_or(serde_json::Value::Null, |r| {
        let alive =
            Path::new(&format!("/proc/{}", r.pid)).exists() && (r.is_fresh() || r.is_busy());
        serde_json::json!({
            "pid": r.pid,
            "alive": alive,
            "heartbeat_age_seconds": r.age(),
            "ready": alive && r.ready,
            "features": r.features,
            "losses": r.losses,
            "activity": r.activity.as_ref().map(|a| serde_json::json!({
                "what": a.what,
                "seconds": a.elapsed(),
            })),
        })
    })
}

/// What `status` reads: each feature's pins and the daemon's health report.
struct Pinned {
    shield: ironclad_bpf::Result<ShieldStatus>,
    egress: ironclad_bpf::Result<EgressStatus>,
    firewall: ironclad_bpf::Result<FirewallStatus>,
    dns_lost: Option<u64>,
    daemon: Option<ironclad_agent::health::Report>,
}

impl Pinned {
    /// Reads them; an error when there is nothing at all (no pin, no daemon).
    fn read(pin_root: &Path, run_dir: &Path) -> Result<Self> {
        let read = Self {
            shield: Shield::status_from_pins(pin_root),
            egress: EgressFirewall::status_from_pins(pin_root),
            firewall: Firewall::status_from_pins(pin_root),
            dns_lost: Telemetry::lost_dns_events_from_pins(pin_root).ok(),
            daemon: ironclad_agent::health::read(run_dir),
        };
        if read.shield.is_err()
            && read.egress.is_err()
            && read.firewall.is_err()
            && read.dns_lost.is_none()
            && read.daemon.is_none()
        {
            anyhow::bail!("nothing is pinned under {}", pin_root.display());
        }
        Ok(read)
    }
}

/// The document `status --json` prints: the pinned maps' counters and the daemon's
/// health report (also the control API's `GetStatus`).
pub(crate) fn status_json(pin_root: &Path, run_dir: &Path) -> Result<serde_json::Value> {
    let Pinned {
        shield,
        egress,
        firewall,
        dns_lost,
        daemon,
    } = Pinned::read(pin_root, run_dir)?;
    let mut out = match &shield {
        Ok(status) => to_json(status),
        Err(_) => serde_json::json!({"rules": [], "totals": {}}),
    };
    out["daemon"] = daemon_json(daemon.as_ref());
    if let Ok(e) = &egress {
        out["egress"] = egress_json(e, &rule_names(run_dir, EGRESS_RULES));
        if let Ok(d) = EgressFirewall::domain_status_from_pins(pin_root) {
            out["egress"]["domains"] = domains_json(&d);
        }
    }
    if let Ok(f) = &firewall {
        out["firewall"] = firewall_json(f, &rule_names(run_dir, FIREWALL_RULES));
    }
    // Events the kernel could not report for lack of ring-buffer space, per source.
    let shield_lost = shield.as_ref().ok().and_then(|s| {
        s.totals
            .iter()
            .find(|(t, _)| *t == ironclad_core::abi::ShieldTotal::EventsLost)
            .map(|(_, c)| c.packets)
    });
    let egress_lost = egress.as_ref().ok().and_then(|e| {
        e.totals
            .iter()
            .find(|(t, _)| *t == ironclad_core::abi::EgressTotal::EventsLost)
            .map(|(_, n)| *n)
    });
    out["events"] = serde_json::json!({
        "lost_in_kernel": {"shield": shield_lost, "egress": egress_lost, "dns": dns_lost},
    });
    // Where each rule came from (the running daemon's report): the policy file or the
    // control API.
    if let Some(origins) = rule_origins(run_dir) {
        if let Some(rules) = out["rules"].as_array_mut() {
            for rule in rules {
                let found = origins.iter().find(|o| {
                    o["rule"] == rule["cidr"]
                        && o["section"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("shield."))
                });
                if let Some(o) = found {
                    rule["origin"] = o["origin"].clone();
                    rule["origin_id"] = o["id"].clone();
                }
            }
        }
        out["rule_origins"] = origins.into();
    }
    Ok(out)
}

/// The rules in force with their origins, as the daemon last published them.
fn rule_origins(run_dir: &Path) -> Option<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(run_dir.join(crate::api::RULES_REPORT)).ok()?;
    serde_json::from_str(&text).ok()
}

pub(crate) fn status(pin_root: &Path, run_dir: &Path, json: bool) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", status_json(pin_root, run_dir)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Pinned {
        shield,
        egress,
        firewall,
        dns_lost: _,
        daemon,
    } = Pinned::read(pin_root, run_dir)?;
    if let Some(r) = &daemon {
        let d = daemon_json(Some(r));
        let state = match (d["alive"].as_bool(), d["ready"].as_bool()) {
            (Some(false), _) => "NOT RUNNING (stale health report)",
            (_, Some(true)) => "ready",
            _ => "NOT READY: the policy is not fully enforced",
        };
        writeln!(out, "daemon {}: {state}", r.pid)?;
        if let Some(a) = r.activity.as_ref().filter(|_| r.is_busy()) {
            writeln!(out, "  busy {:.1} s: {}", a.elapsed(), a.what)?;
        }
        for (name, f) in &r.features {
            let mark = if f.up { "up  " } else { "DOWN" };
            writeln!(out, "  {mark} {name:<10} {}", f.detail)?;
        }
        for (sink, lost) in r.losses.iter().filter(|(_, n)| **n > 0) {
            writeln!(out, "  LOST {lost} records: {sink}")?;
        }
    }
    let api_rules: Vec<serde_json::Value> = rule_origins(run_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["origin"] == "api")
        .collect();
    if !api_rules.is_empty() {
        writeln!(
            out,
            "rules added through the control API (the others are the policy file's):"
        )?;
        let mut t = table(&["rule", "list", "matches", "added by"], &[]);
        for r in &api_rules {
            t.add_row(
                ["id", "section", "rule", "added_by"]
                    .map(|k| r[k].as_str().unwrap_or_default().to_string())
                    .to_vec(),
            );
        }
        writeln!(out, "{}", t.trim_fmt())?;
    }
    if let Some(e) = egress.as_ref().ok().filter(|e| !e.rules.is_empty()) {
        let names = rule_names(run_dir, EGRESS_RULES);
        let mut t = table(&["rule", "matches", "decisions"], &[2]);
        for (id, hits) in &e.rules {
            let n = names.get(id);
            t.add_row(vec![
                counter_name(*id, n.map(|n| n.name.as_str())),
                n.map(|n| n.rule.clone()).unwrap_or_default(),
                hits.to_string(),
            ]);
        }
        writeln!(
            out,
            "egress rules (connect()/sendmsg() calls each decided):"
        )?;
        writeln!(out, "{}", t.trim_fmt())?;
    }
    if let Ok(d) = EgressFirewall::domain_status_from_pins(pin_root) {
        if d.active {
            let patterns: Vec<String> = d.patterns.iter().map(ToString::to_string).collect();
            writeln!(out, "egress by name: {}", patterns.join(", "))?;
            if !d.opened.is_empty() || !d.denied.is_empty() {
                let mut t = table(
                    &["name", "address", "opened by", "for", "uid", "left"],
                    &[4, 5],
                );
                for o in &d.opened {
                    let who = o
                        .exe_path
                        .clone()
                        .unwrap_or_else(|| format!("exe {}:{}", o.exe.dev, o.exe.ino));
                    for (p, left) in &o.patterns {
                        t.add_row(vec![
                            o.name.clone().unwrap_or_else(|| "-".into()),
                            o.addr.to_string(),
                            p.to_string(),
                            who.clone(),
                            o.uid.to_string(),
                            format!("{} s", left.as_secs()),
                        ]);
                    }
                }
                for den in &d.denied {
                    t.add_row(vec![
                        "-".into(),
                        den.addr.to_string(),
                        format!("DENIED by feed {}", den.feed),
                        "-".into(),
                        "-".into(),
                        format!("{} s", den.expires_in.as_secs()),
                    ]);
                }
                writeln!(out, "{}", t.trim_fmt())?;
            }
            for f in &d.feeds {
                let counts: Vec<String> = f
                    .counters
                    .iter()
                    .map(|(c, n)| format!("{} {n}", c.name()))
                    .collect();
                writeln!(out, "domain feed {}: {}", f.name, counts.join(", "))?;
            }
        }
    }
    if let Ok(f) = &firewall {
        let s = &f.settings;
        writeln!(
            out,
            "firewall: default inbound {}, outbound {}, {}{}, {} connections",
            if s.drop_inbound { "drop" } else { "accept" },
            if s.drop_outbound { "drop" } else { "accept" },
            if s.stateful { "stateful" } else { "stateless" },
            if s.dry_run { ", dry-run" } else { "" },
            f.connections
        )?;
        if f.syn_flood.mode != ironclad_bpf::SynMode::Off {
            writeln!(
                out,
                "firewall SYN cookies ({}) on ports {}; threshold crossed {} times",
                f.syn_flood.mode.name(),
                port_list(&f.syn_flood.ports),
                f.syn_state.attacks
            )?;
        }
        if let Some(text) = limits_text(&f.limits) {
            writeln!(out, "firewall new-connection limits: {text}")?;
        }
        let nat = &f.nat;
        if nat.forwards + nat.sources > 0 {
            writeln!(
                out,
                "firewall NAT: {} port forwards, {} source translations, {} translated connections",
                nat.forwards,
                nat.sources,
                nat.entries / 2
            )?;
            for (kind, counters) in [
                ("dnat", &nat.forward_counters),
                ("snat", &nat.source_counters),
            ] {
                for (i, c) in counters.iter().enumerate() {
                    writeln!(
                        out,
                        "firewall nat.{kind}[{i}] {:>12} packets {:>14} bytes",
                        c.packets, c.bytes
                    )?;
                }
            }
        }
        if !f.rules.is_empty() {
            let names = rule_names(run_dir, FIREWALL_RULES);
            let mut t = table(&["rule", "matches", "packets", "bytes", "comment"], &[2, 3]);
            for (id, c) in &f.rules {
                let n = names.get(id);
                t.add_row(vec![
                    counter_name(*id, n.map(|n| n.name.as_str())),
                    n.map(|n| n.rule.clone()).unwrap_or_default(),
                    c.packets.to_string(),
                    size(c.bytes),
                    n.and_then(|n| n.comment.clone()).unwrap_or_default(),
                ]);
            }
            writeln!(
                out,
                "firewall rules (new connections each admitted or refused):"
            )?;
            writeln!(out, "{}", t.trim_fmt())?;
        }
        // The verdicts first (each packet counted once: they add up to every packet
        // the firewall saw), then what they do not say.
        let mut t = table(&["firewall packets", "packets", "bytes"], &[1, 2]);
        for (total, c) in f.totals.iter().filter(|(t, _)| t.is_verdict()) {
            t.add_row(vec![
                total.name().to_string(),
                c.packets.to_string(),
                size(c.bytes),
            ]);
        }
        writeln!(out, "{}", t.trim_fmt())?;
        let details: Vec<String> = f
            .totals
            .iter()
            .filter(|(t, c)| !t.is_verdict() && c.packets > 0)
            .map(|(t, c)| format!("{} {}", t.name(), c.packets))
            .collect();
        if !details.is_empty() {
            writeln!(out, "firewall details: {}", details.join(", "))?;
        }
    }
    let Ok(status) = shield else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut t = table(
        &["shield rule", "cidr or set", "action", "packets", "bytes"],
        &[3, 4],
    );
    for r in &status.rules {
        t.add_row(vec![
            r.rule_id.to_string(),
            r.label.to_string(),
            r.action.name().to_string(),
            r.counter.packets.to_string(),
            size(r.counter.bytes),
        ]);
    }
    writeln!(out, "{}", t.trim_fmt())?;
    let mut t = table(&["shield packets", "packets", "bytes"], &[1, 2]);
    for (total, c) in &status.totals {
        t.add_row(vec![
            total.name().to_string(),
            c.packets.to_string(),
            size(c.bytes),
        ]);
    }
    writeln!(out, "{}", t.trim_fmt())?;
    writeln!(
        out,
        "ipv4 lookup: {}, ipv6 lookup: {} (slot {}), map memory: {}",
        status.ipv4_path.as_str(),
        status.ipv6_path.as_str(),
        status.slot,
        size(status.map_bytes())
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `22, 80, 8000-8100`: a port set as ranges.
fn port_list(ports: &std::collections::BTreeSet<u16>) -> String {
    use ironclad_policy::firewall::{port_ranges, ports_text};
    ports_text(&port_ranges(ports))
}

/// The stateful firewall's live rules as the daemon last applied them, by counter id:
/// what `status` names each rule's counters by (`RUN_DIR/firewall-rules.json`).
pub(crate) const FIREWALL_RULES: &str = "firewall-rules.json";

/// One live rule (of the stateful or the egress firewall): its counter id, name, text
/// and comment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RuleName {
    /// The kernel's counter id.
    pub(crate) id: u32,
    /// Where it was written (`firewall.rules[2]`, `api-7`, `egress.rules[0]`).
    pub(crate) name: String,
    /// The rule in one line.
    pub(crate) rule: String,
    /// The operator's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) comment: Option<String>,
}

/// The rules the daemon last wrote to `RUN_DIR/FILE`, by counter id (none when it
/// wrote none).
pub(crate) fn rule_names(run_dir: &Path, file: &str) -> BTreeMap<u32, RuleName> {
    std::fs::read(run_dir.join(file))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<RuleName>>(&b).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.id, n))
        .collect()
}

/// Writes the firewall's live rules for `status` (removes the file when none run).
pub(crate) fn write_firewall_rules(
    run_dir: &Path,
    labels: &BTreeMap<u32, ironclad_bpf::FwRuleLabel>,
) -> std::io::Result<()> {
    let names: Vec<RuleName> = firewall_rule_names(labels).into_values().collect();
    write_or_remove(&run_dir.join(FIREWALL_RULES), &names)
}

/// The stateful firewall's live rules' names, by counter id.
pub(crate) fn firewall_rule_names(
    labels: &BTreeMap<u32, ironclad_bpf::FwRuleLabel>,
) -> BTreeMap<u32, RuleName> {
    labels
        .iter()
        .map(|(id, l)| {
            (
                *id,
                RuleName {
                    id: *id,
                    name: l.name.clone(),
                    rule: l.summary.clone(),
                    comment: l.comment.clone(),
                },
            )
        })
        .collect()
}

/// The egress firewall's live rules as the daemon last applied them, by counter id
/// (`RUN_DIR/egress-rules.json`): what `status` names their counters by.
pub(crate) const EGRESS_RULES: &str = "egress-rules.json";

/// The egress firewall's compiled rules by name (none without an egress section).
pub(crate) fn egress_rule_names(
    egress: Option<&ironclad_policy::egress::CompiledEgress>,
) -> Vec<RuleName> {
    egress
        .map(|e| e.rules.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| RuleName {
            id: r.rule_id,
            name: r.origin.clone(),
            rule: r.summary.clone(),
            comment: None,
        })
        .collect()
}

/// Writes the egress firewall's live rules for `status` (removes the file when none
/// run).
pub(crate) fn write_egress_rules(
    run_dir: &Path,
    egress: Option<&ironclad_policy::egress::CompiledEgress>,
) -> std::io::Result<()> {
    write_or_remove(&run_dir.join(EGRESS_RULES), &egress_rule_names(egress))
}

/// Writes `items` as JSON to `path` (atomically), or removes it when there are none.
fn write_or_remove<T: serde::Serialize>(path: &Path, items: &[T]) -> std::io::Result<()> {
    if items.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let text = serde_json::to_vec_pretty(items).map_err(std::io::Error::other)?;
    crate::run::write_atomically(path, &text)
}

/// A table as `status` prints them: aligned columns without borders, the numbers (the
/// columns in `right`) aligned right.
pub(crate) fn table(header: &[&str], right: &[usize]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for &i in right {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    for i in 0..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_padding((0, 2));
        }
    }
    t
}

/// A rule's name by its counter id: `default` for 0 (the default policy), `id N` when
/// the daemon's list does not know it.
fn rule_name(names: &BTreeMap<u32, RuleName>, id: u32) -> String {
    counter_name(id, names.get(&id).map(|n| n.name.as_str()))
}

/// What a firewall counter id is called wherever the daemon shows one (`status`,
/// `conntrack`, the metrics): `default` for the default policy (0), the rule's name
/// when it is known, else `id N`.
pub(crate) fn counter_name(id: u32, name: Option<&str>) -> String {
    match (id, name) {
        (0, _) => ironclad_bpf::DEFAULT_RULE_NAME.to_string(),
        (_, Some(n)) => n.to_string(),
        (_, None) => format!("id {id}"),
    }
}

/// A byte count as people read it: `1.5 MiB`.
pub(crate) fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// The firewall's part of `status --json`.
pub(crate) fn firewall_json(
    f: &FirewallStatus,
    names: &BTreeMap<u32, RuleName>,
) -> serde_json::Value {
    let s = &f.settings;
    let totals: serde_json::Map<String, serde_json::Value> = f
        .totals
        .iter()
        .map(|(t, c)| {
            (
                t.name().to_string(),
                serde_json::json!({"packets": c.packets, "bytes": c.bytes}),
            )
        })
        .collect();
    let rules: Vec<serde_json::Value> = f
        .rules
        .iter()
        .map(|(id, c)| {
            let n = names.get(id);
            serde_json::json!({
                "rule_id": id,
                "name": n.map(|n| n.name.as_str()),
                "rule": n.map(|n| n.rule.as_str()),
                "comment": n.and_then(|n| n.comment.as_deref()),
                "packets": c.packets,
                "bytes": c.bytes,
            })
        })
        .collect();
    serde_json::json!({
        "default_inbound": if s.drop_inbound { "drop" } else { "accept" },
        "default_outbound": if s.drop_outbound { "drop" } else { "accept" },
        "stateful": s.stateful,
        "mode": if s.dry_run { "dry-run" } else { "enforce" },
        "log_default_drops": s.log_default_drops,
        "connections": f.connections,
        "rules": rules,
        "totals": totals,
        "syn_flood": {
            "mode": f.syn_flood.mode.name(),
            "ports": port_list(&f.syn_flood.ports),
            "threshold_pps": f.syn_flood.threshold_pps,
            "hold_ms": f.syn_flood.hold_ms,
            "attacks": f.syn_state.attacks,
        },
        "limits": limits_json(&f.limits),
        "nat": {
            "dnat": f.nat.forward_counters.iter().map(|c| serde_json::json!({"packets": c.packets, "bytes": c.bytes})).collect::<Vec<_>>(),
            "snat": f.nat.source_counters.iter().map(|c| serde_json::json!({"packets": c.packets, "bytes": c.bytes})).collect::<Vec<_>>(),
            "translated_connections": f.nat.entries / 2,
        },
    })
}

/// `20/s (burst 40) per source, ...`, or `None` when no limit is set.
fn limits_text(limits: &ironclad_bpf::LimitSettings) -> Option<String> {
    let parts: Vec<String> = ironclad_bpf::FwLimitKind::ALL
        .iter()
        .filter_map(|&kind| {
            let r = limits.get(kind)?;
            let what = match kind {
                ironclad_bpf::FwLimitKind::Subnet => {
                    format!("per /{} (/{}) subnet", limits.v4_prefix, limits.v6_prefix)
                }
                other => format!("per {}", other.name()),
            };
            Some(format!("{}/s (burst {}) {what}", r.per_second, r.burst))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The limits as `status --json` shows them: each set one by name.
pub(crate) fn limits_json(limits: &ironclad_bpf::LimitSettings) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for kind in ironclad_bpf::FwLimitKind::ALL {
        if let Some(r) = limits.get(kind) {
            let mut one = serde_json::json!({"per_second": r.per_second, "burst": r.burst});
            if kind == ironclad_bpf::FwLimitKind::Subnet {
                one["ipv4_prefix"] = limits.v4_prefix.into();
                one["ipv6_prefix"] = limits.v6_prefix.into();
            }
            out.insert(format!("per_{}", kind.name()), one);
        }
    }
    serde_json::Value::Object(out)
}

/// `conntrack`: the firewall's tracked connections, read from its pins.
pub(crate) fn conntrack(pin_root: &Path, run_dir: &Path, json: bool) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut connections = Firewall::connections_from_pins(pin_root).map_err(|e| {
        anyhow::anyhow!(
            "cannot read a firewall's pins under {} (does the daemon run a `firewall:` section? reading them needs root): {e}",
            pin_root.display()
        )
    })?;
    connections.sort_by_key(|c| (c.proto, c.orig, c.reply));
    let endpoint = |(ip, port): (std::net::IpAddr, u16)| match ip {
        std::net::IpAddr::V6(_) => format!("[{ip}]:{port}"),
        std::net::IpAddr::V4(_) => format!("{ip}:{port}"),
    };
    let names = rule_names(run_dir, FIREWALL_RULES);
    if json {
        let list: Vec<serde_json::Value> = connections
            .iter()
            .map(|c| {
                serde_json::json!({
                    "proto": c.proto,
                    "orig": {"addr": c.orig.0.to_string(), "port": c.orig.1},
                    "reply": {"addr": c.reply.0.to_string(), "port": c.reply.1},
                    "state": c.state.name(),
                    "direction": if c.inbound { "in" } else { "out" },
                    "packets": {"orig": c.from_orig.packets, "reply": c.from_reply.packets},
                    "bytes": {"orig": c.from_orig.bytes, "reply": c.from_reply.bytes},
                    "age_seconds": c.age_secs,
                    "idle_seconds": c.idle_secs,
                    "ifindex": c.ifindex,
                    "rule_id": c.rule_id,
                    "rule": rule_name(&names, c.rule_id),
                    "pid": c.pid,
                    "cgroup_id": c.cgroup_id,
                    "flow_record": c.recorded,
                    "nat": c.nat.as_ref().map(|t| serde_json::json!({
                        "kind": t.kind,
                        "rule": t.rule,
                        "outside": {"addr": t.outside.0.to_string(), "port": t.outside.1},
                        "inside": {"addr": t.inside.0.to_string(), "port": t.inside.1},
                    })),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(list))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(
        &[
            "proto", "dir", "from", "to", "state", "pkts>", "pkts<", "idle s", "rule", "pid", "nat",
        ],
        &[5, 6, 7, 9],
    );
    for c in &connections {
        // A translated connection: how the outside sees the translated end.
        let nat = c.nat.as_ref().map_or_else(String::new, |t| {
            if t.kind == "dnat" {
                format!(
                    "dnat: the client connected to {}, forwarded to {} (nat.dnat[{}])",
                    endpoint(t.outside),
                    endpoint(t.inside),
                    t.rule
                )
            } else {
                format!(
                    "snat: {} leaves as {} (nat.snat[{}])",
                    endpoint(t.inside),
                    endpoint(t.outside),
                    t.rule
                )
            }
        });
        t.add_row(vec![
            c.proto.to_string(),
            if c.inbound { "in" } else { "out" }.to_string(),
            endpoint(c.orig),
            endpoint(c.reply),
            c.state.name().to_string(),
            c.from_orig.packets.to_string(),
            c.from_reply.packets.to_string(),
            c.idle_secs.to_string(),
            rule_name(&names, c.rule_id),
            if c.pid == 0 {
                "-".to_string()
            } else {
                c.pid.to_string()
            },
            nat,
        ]);
    }
    writeln!(out, "{}", t.trim_fmt())?;
    writeln!(out, "{} connections", connections.len())?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn detach(pin_root: &Path) -> Result<ExitCode> {
    let loader = Loader::builder()
        .pin_root(pin_root)
        .mount_bpffs(false)
        .build()?;
    // Every object the daemon pins. The Sentinel's pins are its own: it refuses their
    // removal while it enforces (stop it through its update manager).
    let mut removed = 0;
    for object in [
        Shield::OBJECT,
        EgressFirewall::OBJECT,
        Firewall::OBJECT,
        Telemetry::OBJECT,
    ] {
        removed += loader.remove_pins(object)?;
    }
    // Classic tc filters (kernels without tcx) have no pins: they are found by their
    // handle and priorities.
    let filters = ironclad_bpf::tc::remove_filters()?;
    for (iface, point, prio) in &filters {
        println!("removed the tc filter at {point} of {iface}, priority {prio}");
    }
    // The pin root itself goes too when nothing else is pinned there.
    let _ = std::fs::remove_dir(pin_root);
    println!("removed {removed} pins under {}", pin_root.display());
    Ok(ExitCode::SUCCESS)
}
