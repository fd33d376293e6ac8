//! `status` and `detach`: work on the pins alone, no running daemon needed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ironclad_bpf::{Loader, Shield, ShieldStatus};
use ironclad_core::abi::SHIELD_F_DRY_RUN;
use ironclad_policy::shield::Mode;

/// `enforce` or `dry-run`, as in the policy file.
pub(crate) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::DryRun => "dry-run",
    }
}

/// The status as the JSON `status --json` prints.
pub(crate) fn to_json(status: &ShieldStatus) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = status
        .rules
        .iter()
        .map(|r| {
            serde_json::json!({
                "cidr": r.cidr.to_string(),
                "action": format!("{:?}", r.action).to_lowercase(),
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
        "links": status.links.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    })
}

pub(crate) fn status(pin_root: &Path, json: bool) -> Result<ExitCode> {
    let status = Shield::status_from_pins(pin_root)
        .with_context(|| format!("no Shield pinned under {}", pin_root.display()))?;
    if json {
        println!("{}", to_json(&status));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<6} {:<44} {:<6} {:>12} {:>14}",
        "rule", "cidr", "action", "packets", "bytes"
    );
    for r in &status.rules {
        println!(
            "{:<6} {:<44} {:<6} {:>12} {:>14}",
            r.rule_id,
            r.cidr.to_string(),
            format!("{:?}", r.action).to_lowercase(),
            r.counter.packets,
            r.counter.bytes
        );
    }
    for (t, c) in &status.totals {
        println!(
            "total {:<12} {:>12} packets {:>14} bytes",
            t.name(),
            c.packets,
            c.bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn detach(pin_root: &Path) -> Result<ExitCode> {
    let loader = Loader::builder()
        .pin_root(pin_root)
        .mount_bpffs(false)
        .build()?;
    let removed = loader.remove_pins(Shield::OBJECT)?;
    // The pin root itself goes too when nothing else is pinned there.
    let _ = std::fs::remove_dir(pin_root);
    println!("removed {removed} pins under {}", pin_root.display());
    Ok(ExitCode::SUCCESS)
}
