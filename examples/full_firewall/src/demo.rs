//! `full_firewall demo`: the Shield on a throwaway network namespace, with live drops.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ironclad_bpf::{Firewall, FirewallSettings, JsonLinesFile, Loader, Shield};
use ironclad_core::abi::ShieldTotal;
use ironclad_events::{Event, Fanout, Overflow};
use ironclad_policy::config::compile_str;
use ironclad_testing::{BpffsDir, NetNs, VethPair};

/// The demo policy, embedded so the binary runs from anywhere.
const DEMO_POLICY: &str = include_str!("../demo.yaml");
const DEMO_POLICY_PATH: &str = "examples/full_firewall/demo.yaml";

/// `1 packet`, `3 packets`.
fn packets(n: u64) -> String {
    if n == 1 {
        "1 packet".to_string()
    } else {
        format!("{n} packets")
    }
}

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

/// Whether a TCP connection from `src` in the namespace to `dst:port` opens within 1 s.
fn connects(ns: &NetNs, src: &str, dst: &str, port: u16) -> Result<bool> {
    ns.tcp_connects(src, dst, port, 1.0)
        .context("python3 in the namespace")
}

/// The stateful firewall on the same veth: a denied port, an admitted one, and the
/// host's own connection out whose replies pass as established.
fn firewall_part(
    ns: &NetNs,
    veth: &VethPair,
    loader: &Loader,
    policy: &ironclad_policy::firewall::FirewallPolicy,
) -> Result<()> {
    let firewall = Firewall::load_with_table(loader, policy.table_size)?;
    firewall.apply(&FirewallSettings::from_policy(policy), &policy.rules)?;
    let attachment = firewall.attach(veth.host())?;
    println!(
        "\nIronclad stateful firewall: {} on {} with connection tracking",
        attachment.mechanism().name(),
        veth.host()
    );
    // Flow records: a line when each connection opens (read from the firewall's ring)
    // and when it ends (from the sweep).
    let fanout = Arc::new(Fanout::new());
    let flows = fanout.subscribe("demo-flows", 4096, Overflow::DropOldest);
    let reader = firewall.events(fanout.clone())?;
    // The reader names each flow's rule (`firewall.rules[2]`, `default`).
    let rule_name = |rule: Option<&str>| match rule {
        Some(ironclad_bpf::DEFAULT_RULE_NAME) | None => {
            "the default policy (no rule matched)".to_string()
        }
        Some(name) => name.to_string(),
    };
    println!(
        "policy {DEMO_POLICY_PATH}: new inbound connections no rule admits are {}; rules in order (first match wins):",
        if policy.default_inbound == ironclad_policy::firewall::FwAction::Accept {
            "accepted"
        } else {
            "dropped"
        }
    );
    for rule in &policy.rules {
        let nets = |n: &[ipnetwork::IpNetwork]| {
            n.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  {:<17} {:<3} {}{}{}{} -> {}{}",
            rule.origin.field,
            rule.direction.name(),
            ironclad_policy::firewall::proto_name(rule.proto),
            if rule.src.is_empty() {
                String::new()
            } else {
                format!(" from {}", nets(&rule.src))
            },
            if rule.dst.is_empty() {
                String::new()
            } else {
                format!(" to {}", nets(&rule.dst))
            },
            rule.dport
                .first()
                .map(|(lo, _)| format!(" dport {lo}"))
                .unwrap_or_default(),
            rule.action.name(),
            rule.comment
                .as_deref()
                .map(|c| format!("  ({c})"))
                .unwrap_or_default()
        );
    }
    let listeners = [
        std::net::TcpListener::bind("10.250.0.1:8022")?,
        std::net::TcpListener::bind("10.250.0.1:8023")?,
        std::net::TcpListener::bind("[fd99::1]:8022")?,
    ];
    for (src, dst, port, expect) in [
        ("10.250.0.2", "10.250.0.1", 8022, "open: the rule admits it"),
        (
            "10.250.0.70",
            "10.250.0.1",
            8022,
            "dropped: not the admitted source",
        ),
        (
            "10.250.0.2",
            "10.250.0.1",
            8023,
            "dropped: no rule for the port",
        ),
        ("fd99::2", "fd99::1", 8022, "open: the rule admits it"),
    ] {
        let open = connects(ns, src, dst, port)?;
        println!(
            "  connect {src:<11} -> port {port}: {:<7} (expected {expect})",
            if open { "OPEN" } else { "DROPPED" }
        );
    }
    drop(listeners);
    // The host's own connection out: a web server in the namespace answers through the
    // default-deny, as an established connection.
    let site = std::env::temp_dir().join(format!("ironclad-demo-site-{}", std::process::id()));
    std::fs::create_dir_all(&site)?;
    std::fs::write(site.join("index.html"), "hello from the namespace\n")?;
    let mut server = ns
        .command("python3")
        .args(["-m", "http.server", "--bind", "10.250.0.2", "8080"])
        .current_dir(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("python3 -m http.server in the namespace")?;
    let answer = (|| -> Result<String> {
        use std::io::{Read, Write};
        let start = Instant::now();
        loop {
            match std::net::TcpStream::connect_timeout(
                &"10.250.0.2:8080".parse()?,
                Duration::from_millis(500),
            ) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                    let mut text = String::new();
                    s.read_to_string(&mut text)?;
                    return Ok(text.lines().next().unwrap_or_default().to_string());
                }
                Err(_) if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    })();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&site);
    println!(
        "  host -> http://10.250.0.2:8080/: {} (its replies pass as established)",
        answer?
    );
    println!("conntrack:");
    for c in firewall.connections()? {
        println!(
            "  {:<4} {:<3} {}:{} -> {}:{} {} ({} out, {} back)",
            c.proto,
            if c.inbound { "in" } else { "out" },
            c.orig.0,
            c.orig.1,
            c.reply.0,
            c.reply.1,
            c.state.name(),
            packets(c.from_orig.packets),
            packets(c.from_reply.packets)
        );
    }
    let totals: Vec<String> = firewall
        .totals()?
        .into_iter()
        .filter(|(_, c)| c.packets > 0)
        .map(|(t, c)| format!("{} {}", t.name(), c.packets))
        .collect();
    println!("firewall totals (packets): {}", totals.join(", "));
    let flow_line = |f: &ironclad_events::FlowRecord| {
        format!(
            "{} {:<3} {}:{} -> {}:{}",
            f.proto, f.direction, f.src, f.sport, f.dst, f.dport
        )
    };
    reader.drain()?;
    println!("flows opened (flows: true in the policy):");
    for event in flows.receiver().try_iter() {
        if let Event::Flow(f) = event {
            println!(
                "  {:<44} admitted by {}",
                flow_line(&f),
                rule_name(f.rule.as_deref())
            );
        }
    }
    // A connection both sides closed is kept 10 s (a late packet of it still belongs to
    // it), then the sweep removes it and reports its end.
    println!(
        "(the closed connections are removed 10 s after their last packet, with their end records)"
    );
    std::thread::sleep(Duration::from_secs(11));
    println!("flows ended:");
    for f in firewall.expire()?.flows {
        println!(
            "  {:<44} {} after {} ms: {} from the side that opened it, {} back",
            flow_line(&f),
            f.end_reason.unwrap_or("ended"),
            f.duration_ms.unwrap_or(0),
            packets(f.orig_packets),
            packets(f.reply_packets)
        );
    }
    drop(reader);
    attachment.detach()?;
    Ok(())
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

    let config = compile_str(
        &DEMO_POLICY.replace("DEMO_VETH", veth.host()),
        std::path::Path::new(DEMO_POLICY_PATH),
    )?;
    let compiled = config
        .shield
        .context("the demo policy has no shield section")?;
    let firewall_policy = config
        .firewall
        .context("the demo policy has no firewall section")?;
    println!("policy {DEMO_POLICY_PATH}:");
    for rule in &compiled.rules {
        println!(
            "  rule {}: {} {} ({})",
            rule.id,
            rule.action.name(),
            rule.cidr,
            rule.origin
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
                    "  drop event: {} {} -> {}, rule {} ({})",
                    ironclad_events::proto_name(drop.proto),
                    drop.src,
                    drop.dst,
                    drop.rule_id,
                    drop.verdict.name()
                );
                shown += 1;
            }
        }
        let mut line = format!("t={:>2}s", start.elapsed().as_secs());
        for rule in shield.rules()? {
            line.push_str(&format!(
                " | {} {}: {} pkts",
                rule.label,
                rule.action.name(),
                rule.counter.packets
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
            rule.action.name(),
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

    firewall_part(&ns, &veth, &loader, &firewall_policy)?;

    attachment.detach()?;
    drop(events);
    drop(shield);
    let removed = loader.remove_pins(Shield::OBJECT)? + loader.remove_pins(Firewall::OBJECT)?;
    println!("\ncleanup: detached, {removed} pins removed, namespace and veth deleted");
    Ok(())
}
