//! `full_firewall demo`: the Shield on a throwaway network namespace, with live drops.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ironclad_bpf::{JsonLinesFile, Loader, Shield};
use ironclad_core::abi::ShieldTotal;
use ironclad_events::{Event, Fanout, Overflow};
use ironclad_policy::config::compile_str;
use ironclad_testing::{BpffsDir, NetNs, VethPair};

/// The demo policy, embedded so the binary runs from anywhere.
const DEMO_POLICY: &str = include_str!("../demo.yaml");
const DEMO_POLICY_PATH: &str = "examples/full_firewall/demo.yaml";

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

    let config = compile_str(DEMO_POLICY, std::path::Path::new(DEMO_POLICY_PATH))?;
    let compiled = config
        .shield
        .context("the demo policy has no shield section")?;
    println!("policy {DEMO_POLICY_PATH}:");
    for rule in &compiled.rules {
        println!(
            "  rule {}: {:?} {} ({})",
            rule.id, rule.action, rule.cidr, rule.origin
        );
    }
    for net in &compiled.management {
        println!("  management valve: {net}");
    }
    println!();

    let pins = BpffsDir::new("demo").context("creating a bpffs pin directory")?;
    let audit_path =
        std::env::temp_dir().join(format!("ironclad-demo-{}.jsonl", std::process::id()));
    let loader = Loader::builder()
        .pin_root(pins.path())
        .audit_sink(Arc::new(JsonLinesFile::open(&audit_path)?))
        .build()?;
    let shield = Shield::load(&loader)?;
    shield.replace(&compiled)?;
    let attachment = shield.attach(veth.host())?;
    let fanout = Arc::new(Fanout::new());
    let drops = fanout.subscribe("demo", 4096, Overflow::DropOldest);
    let events = shield.events(fanout.clone())?;
    println!(
        "shield: audited, loaded, maps pinned under {}, attached to {} (ifindex {}, {} XDP)",
        loader.pin_dir(Shield::OBJECT).display(),
        attachment.iface(),
        attachment.ifindex(),
        attachment.mode().name()
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
    let mut shown = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_secs(1) {
            events.poll(Duration::from_millis(100))?;
        }
        for event in drops.receiver().try_iter() {
            let Event::ShieldDrop(drop) = event else {
                continue;
            };
            if shown < 3 {
                println!(
                    "  drop event: {} -> {} proto {} rule {} ({})",
                    drop.src,
                    drop.dst,
                    drop.proto,
                    drop.rule_id,
                    drop.verdict.name()
                );
                shown += 1;
            }
        }
        let mut line = format!("t={:>2}s", start.elapsed().as_secs());
        for rule in shield.rules()? {
            line.push_str(&format!(
                " | {} {:?}: {} pkts",
                rule.label, rule.action, rule.counter.packets
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
    for rule in shield.rules()? {
        println!(
            "  rule {} {:<16} {:<5} {:>4} packets {:>6} bytes",
            rule.rule_id,
            rule.label.to_string(),
            format!("{:?}", rule.action),
            rule.counter.packets,
            rule.counter.bytes
        );
    }
    println!(
        "  drop events decoded: {} (undecodable: {})",
        events.stats().decoded(),
        events.stats().undecodable()
    );
    for (total, c) in shield.totals()? {
        println!(
            "  total {:<11} {:>4} packets {:>6} bytes",
            total.name(),
            c.packets,
            c.bytes
        );
    }

    attachment.detach()?;
    drop(events);
    drop(shield);
    let removed = loader.remove_pins(Shield::OBJECT)?;
    println!("\ncleanup: detached, {removed} pins removed, namespace and veth deleted");
    Ok(())
}
