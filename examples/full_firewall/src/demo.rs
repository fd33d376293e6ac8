//! `full_firewall demo`: the Shield on a throwaway network namespace, with live drops.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use ironclad_bpf::{JsonLinesFile, Loader, Shield};
use ironclad_core::abi::ShieldTotal;
use ironclad_core::testing::{BpffsDir, NetNs, VethPair};
use ironclad_policy::shield::{compile, ShieldPolicy};

/// A traffic source inside the namespace.
struct Source {
    addr: &'static str,
    expect: &'static str,
}

const SOURCES: &[Source] = &[
    Source {
        addr: "10.250.0.2",
        expect: "passes (no rule)",
    },
    Source {
        addr: "10.250.0.66",
        expect: "dropped by 10.250.0.64/26",
    },
    Source {
        addr: "10.250.0.70",
        expect: "passes: allow 10.250.0.70/32 inside the denied /26",
    },
    Source {
        addr: "10.250.0.65",
        expect: "passes: management valve beats the deny",
    },
    Source {
        addr: "fd99::2",
        expect: "passes (no rule)",
    },
    Source {
        addr: "fd99::66",
        expect: "dropped by fd99::40/122",
    },
];

fn nets(list: &[&str]) -> Result<Vec<IpNetwork>> {
    list.iter()
        .map(|s| s.parse().with_context(|| format!("bad CIDR {s}")))
        .collect()
}

fn ping(ns: &NetNs, from: &str, seconds: u64) -> Result<Child> {
    let to = if from.contains(':') {
        "fd99::1"
    } else {
        "10.250.0.1"
    };
    let mut cmd = ns.command("ping");
    if from.contains(':') {
        cmd.arg("-6");
    }
    cmd.args([
        "-n",
        "-q",
        "-i",
        "0.2",
        "-w",
        &seconds.to_string(),
        "-I",
        from,
        to,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .context("starting ping (install iputils-ping)")
}

/// Runs the demo for `seconds` of traffic.
pub(crate) fn run(seconds: u64) -> Result<()> {
    println!("Ironclad Shield demo: XDP drops on a throwaway veth pair\n");
    let ns = NetNs::new("demo").context("creating a network namespace (needs root)")?;
    let peer_addrs: Vec<String> = SOURCES
        .iter()
        .map(|s| {
            if s.addr.contains(':') {
                format!("{}/64", s.addr)
            } else {
                format!("{}/24", s.addr)
            }
        })
        .collect();
    let peer_refs: Vec<&str> = peer_addrs.iter().map(String::as_str).collect();
    let veth = VethPair::new(&ns, &["10.250.0.1/24", "fd99::1/64"], &peer_refs)
        .context("creating the veth pair")?;
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", veth.host()))?;
    ns.exec(&[
        "ip",
        "-6",
        "neigh",
        "replace",
        "fd99::1",
        "lladdr",
        mac.trim(),
        "dev",
        veth.peer(),
        "nud",
        "permanent",
    ])?;
    println!(
        "network: namespace {} | host end {} (10.250.0.1, fd99::1) <-> {} in the namespace",
        ns.name(),
        veth.host(),
        veth.peer()
    );

    let policy = ShieldPolicy {
        deny: nets(&["10.250.0.64/26", "fd99::40/122"])?,
        allow: nets(&["10.250.0.70/32"])?,
        management: nets(&["10.250.0.65/32"])?,
        dry_run: false,
    };
    let compiled = compile(&policy).map_err(|errors| {
        anyhow::anyhow!(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"))
    })?;
    for rule in &compiled.rules {
        println!(
            "rule {}: {:?} {} ({})",
            rule.id, rule.action, rule.cidr, rule.origin
        );
    }
    println!("management valve: 10.250.0.65/32\n");

    let pins = BpffsDir::new("demo").context("creating a bpffs pin directory")?;
    let audit_path =
        std::env::temp_dir().join(format!("ironclad-demo-{}.jsonl", std::process::id()));
    let loader = Loader::builder()
        .pin_root(pins.path())
        .audit_sink(Arc::new(JsonLinesFile::open(&audit_path)?))
        .build()?;
    let shield = Shield::load(&loader)?;
    shield.apply(&compiled)?;
    let attachment = shield.attach(veth.host())?;
    println!(
        "shield: audited, loaded, maps pinned under {}, attached to {} (ifindex {})",
        loader.pin_dir(Shield::OBJECT).display(),
        attachment.iface(),
        attachment.ifindex()
    );
    println!("audit log: {}\n", audit_path.display());

    for s in SOURCES {
        println!("  traffic from {:<12} {}", s.addr, s.expect);
    }
    println!();
    let mut pings = Vec::new();
    for s in SOURCES {
        pings.push((s, ping(&ns, s.addr, seconds)?));
    }

    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let mut line = format!("t={:>2}s", start.elapsed().as_secs());
        for rule in &compiled.rules {
            let c = shield.rule_counter(rule.id)?;
            line.push_str(&format!(
                " | {} {:?}: {} pkts",
                rule.cidr, rule.action, c.packets
            ));
        }
        let totals = shield.totals()?;
        for (total, c) in totals {
            if matches!(total, ShieldTotal::Dropped | ShieldTotal::Valve) {
                line.push_str(&format!(" | {}: {}", total.name(), c.packets));
            }
        }
        println!("{line}");
    }

    println!("\nper source (ping's own count of echo replies):");
    for (source, child) in pings {
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("no summary");
        println!("  {:<12} {summary}", source.addr);
    }

    println!("\nfinal counters:");
    for rule in &compiled.rules {
        let c = shield.rule_counter(rule.id)?;
        println!(
            "  rule {} {:<16} {:<5?} {:>4} packets {:>6} bytes",
            rule.id, rule.cidr, rule.action, c.packets, c.bytes
        );
    }
    for (total, c) in shield.totals()? {
        println!(
            "  total {:<11} {:>4} packets {:>6} bytes",
            total.name(),
            c.packets,
            c.bytes
        );
    }

    attachment.detach()?;
    drop(shield);
    let removed = loader.remove_pins(Shield::OBJECT)?;
    println!("\ncleanup: detached, {removed} pins removed, namespace and veth deleted");
    Ok(())
}
