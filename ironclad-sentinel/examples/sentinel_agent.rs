//! A minimal agent protected by the Sentinel: the process the guest-kernel tests attack.
//!
//! It loads a Shield (so there are maps and pins to defend), starts the Sentinel over the
//! paths it is given, writes every Sentinel event as a JSON line to `--events`, prints
//! `ready {json}` on stdout, and then obeys one command per line on stdin:
//!
//! - `write PATH TEXT` / `append PATH TEXT`: change a file as the agent;
//! - `map-update`: write a Shield rule as the agent;
//! - `shield-config`: print the Shield's configuration value (hex), read as the agent;
//! - `shield-config-id`: print that map's kernel id;
//! - `shield-link-id` / `shield-link-health`: with `--iface`, the Shield's XDP link's
//!   kernel id, and what the kernel holds of it (`Attached`, `Detached`, ...);
//! - `status`: print the Sentinel's status;
//! - `crash`: abort without cleaning up (the pinned Sentinel stays in force);
//! - `quit` (or end of input): stop the Sentinel, remove the pins, exit.
//!
//! ```text
//! sentinel_agent --pin-root /sys/fs/bpf/t --events ev.jsonl --audit audit.jsonl \
//!     --protect /etc/agent [--monitor PATH] [--manager EXE] [--monitor-only] [--iface IF]
//! sentinel_agent --intrude /sys/fs/bpf/t   # a second copy: try to register, write a map
//! ```

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ironclad_bpf::{EventReader, JsonLinesFile, Loader, Shield};
use ironclad_core::abi::Action;
use ironclad_events::{Fanout, Overflow};
use ironclad_sentinel::Sentinel;

#[derive(Default)]
struct Args {
    pin_root: PathBuf,
    events: PathBuf,
    audit: PathBuf,
    protect: Vec<PathBuf>,
    monitor: Vec<PathBuf>,
    manager: Option<PathBuf>,
    monitor_only: bool,
    /// An interface to attach the Shield to (a pinned XDP link the Sentinel protects).
    iface: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--pin-root" => out.pin_root = value()?.into(),
            "--events" => out.events = value()?.into(),
            "--audit" => out.audit = value()?.into(),
            "--protect" => out.protect.push(value()?.into()),
            "--monitor" => out.monitor.push(value()?.into()),
            "--manager" => out.manager = Some(value()?.into()),
            "--monitor-only" => out.monitor_only = true,
            "--iface" => out.iface = Some(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    if out.pin_root.as_os_str().is_empty() || out.events.as_os_str().is_empty() {
        bail!("--pin-root and --events are required");
    }
    Ok(out)
}

/// What a second copy of the agent binary can do while the agent runs: print the outcome
/// of registering and of opening a Shield map for writing.
fn intrude(pin_root: &std::path::Path) {
    let register = ironclad_bpf::sentinel::register_agent(&pin_root.join("sentinel"));
    println!("register: {register:?}");
    let map = libbpf_rs::MapHandle::from_pinned_path(pin_root.join("shield/ic_shield_config"));
    println!("open map: {:?}", map.as_ref().map(|_| ()));
}

fn main() -> anyhow::Result<()> {
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("--intrude") {
        intrude(std::path::Path::new(
            &raw.next().context("--intrude PIN_ROOT")?,
        ));
        return Ok(());
    }
    let args = args()?;
    let loader = Loader::builder()
        .pin_root(&args.pin_root)
        .audit_sink(Arc::new(JsonLinesFile::open(&args.audit)?))
        .build()?;
    let mut builder = Sentinel::builder().monitor_only(args.monitor_only);
    for p in &args.protect {
        builder = builder.protect(p);
    }
    for p in &args.monitor {
        builder = builder.monitor(p);
    }
    if let Some(m) = &args.manager {
        builder = builder.update_manager(m);
    }
    let mut sentinel = builder.start(&loader)?;
    let shield = Shield::load(&loader)?;
    shield.insert_rule("192.0.2.0/24".parse()?, 1, Action::Deny)?;
    sentinel.protect_bpf(shield.object())?;
    let attachment = match &args.iface {
        Some(iface) => {
            let attachment = shield.attach_pinned(iface)?;
            sentinel.protect_links([attachment.link_id()?])?;
            // The link's pin too.
            sentinel.refresh_pins()?;
            Some(attachment)
        }
        None => None,
    };

    let fanout = Arc::new(Fanout::new());
    let subscription = fanout.subscribe("events-file", 65_536, Overflow::DropOldest);
    let reader = EventReader::new(vec![sentinel.event_source()?], fanout)?;
    let mut events = std::fs::File::create(&args.events)
        .with_context(|| format!("creating {}", args.events.display()))?;

    let (tx, commands) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let status = sentinel.status()?;
    println!(
        "ready {{\"pid\":{},\"agent_pid\":{},\"hooks\":{},\"protected_objects\":{}}}",
        std::process::id(),
        status.agent_pid,
        status.hooks,
        status.protected_objects
    );
    std::io::stdout().flush()?;

    loop {
        reader.poll(Duration::from_millis(20))?;
        for event in subscription.receiver().try_iter() {
            writeln!(events, "{}", event.to_json())?;
        }
        events.flush()?;
        let command = match commands.try_recv() {
            Ok(c) => c,
            Err(mpsc::TryRecvError::Empty) => continue,
            Err(mpsc::TryRecvError::Disconnected) => "quit".to_string(),
        };
        let mut words = command.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("write"), Some(path), text) => std::fs::write(path, text.unwrap_or(""))
                .map(|()| "ok".to_string())
                .unwrap_or_else(|e| format!("err {e}")),
            (Some("append"), Some(path), text) => std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(text.unwrap_or("").as_bytes()))
                .map(|()| "ok".to_string())
                .unwrap_or_else(|e| format!("err {e}")),
            (Some("map-update"), _, _) => shield
                .insert_rule("198.51.100.0/24".parse()?, 2, Action::Deny)
                .map(|()| "ok".to_string())
                .unwrap_or_else(|e| format!("err {e}")),
            (Some("shield-config"), _, _) => shield
                .object()
                .map(ironclad_bpf::names::shield::ic_shield_config)?
                .lookup(&0u32.to_ne_bytes())?
                .map(|v| v.iter().map(|b| format!("{b:02x}")).collect::<String>())
                .unwrap_or_default(),
            (Some("shield-config-id"), _, _) => shield
                .object()
                .map(ironclad_bpf::names::shield::ic_shield_config)?
                .id()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            (Some("shield-link-id"), _, _) => attachment
                .as_ref()
                .and_then(|a| a.link_id().ok())
                .map_or_else(|| "err no link".to_string(), |id| id.to_string()),
            (Some("shield-link-health"), _, _) => attachment.as_ref().map_or_else(
                || "err no link".to_string(),
                |a| {
                    a.health()
                        .map_or_else(|e| format!("err {e}"), |h| format!("{h:?}"))
                },
            ),
            (Some("status"), _, _) => format!("{:?}", sentinel.status()?),
            (Some("crash"), _, _) => std::process::abort(),
            (Some("quit"), _, _) => break,
            _ => format!("err unknown command {command:?}"),
        };
        println!("{reply}");
        std::io::stdout().flush()?;
    }
    drop(reader);
    if let Some(a) = attachment {
        a.detach()?;
    }
    let pins = shield.object().pin_dir().to_path_buf();
    drop(shield);
    sentinel.stop()?;
    loader.remove_pins("shield")?;
    let _ = std::fs::remove_dir(pins);
    println!("bye");
    Ok(())
}
