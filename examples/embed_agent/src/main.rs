//! `embed_agent`: an existing security agent (its own command line, logging, main loop
//! and event pipeline to a collector) that adds Ironclad through the public API only.
//!
//! ```text
//! embed_agent --policy FILE --iface IFACE --forward HOST:PORT
//!             [--cgroup DIR] [--pin-dir DIR] [--audit-log FILE] [--protect PATH]...
//!             [--update-manager EXE] [--require-sentinel] [--detach-on-exit] [--heartbeat-seconds N]
//!             [--tokio] [--run-dir DIR]
//! ```
//!
//! Everything Ironclad-specific is in [`Protection::start`] (a few dozen lines) and one
//! call in the main loop; the rest is what the agent had before: a collector connection
//! that forwards JSON lines and reconnects, a heartbeat, signal handling. Its health
//! report (`RUN_DIR/health.json`: which features run, a heartbeat) comes from
//! `ironclad-agent`, so the same probe as the reference daemon's reads it. With `--tokio`
//! the same agent runs its main loop on tokio and receives Ironclad's events through
//! [`EventStream`] (no thread of Ironclad's own). The embedding guide
//! (`docs/embedding.md`) walks through both.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use ironclad_agent::health::{FeatureState, Health};
use ironclad_bpf::{
    CgroupAttachment, EgressFirewall, EventReader, EventStream, JsonLinesFile, Loader, Shield,
    XdpAttachment, DEFAULT_PIN_ROOT,
};
use ironclad_events::{Event, Fanout, Overflow, Subscription};
use ironclad_policy::config::compile_file;
use ironclad_sentinel::{Sentinel, SentinelMode};
use tracing::{info, warn};

/// The agent's command line.
#[derive(Parser)]
#[command(name = "embed_agent", about = "An agent embedding Ironclad")]
struct Args {
    /// Ironclad policy (YAML) with `shield` and `egress` sections.
    #[arg(long)]
    policy: PathBuf,
    /// Interface the Shield protects.
    #[arg(long)]
    iface: String,
    /// cgroup v2 directory whose processes the egress firewall governs.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup: PathBuf,
    /// The collector that receives the agent's events (newline-delimited JSON over TCP).
    #[arg(long)]
    forward: SocketAddr,
    /// Where Ironclad pins its programs and maps.
    #[arg(long, default_value = DEFAULT_PIN_ROOT)]
    pin_dir: PathBuf,
    /// Ironclad's audit log (every load, pin and map update).
    #[arg(long, default_value = "/var/log/embed-agent-audit.jsonl")]
    audit_log: PathBuf,
    /// More files or directories the Sentinel keeps immutable (the policy always is).
    #[arg(long)]
    protect: Vec<PathBuf>,
    /// The executable allowed to replace protected files and signal the agent (the
    /// agent's updater or package manager).
    #[arg(long)]
    update_manager: Option<PathBuf>,
    /// Refuse to run without the Sentinel (no BPF-LSM: exit with an error).
    #[arg(long)]
    require_sentinel: bool,
    /// Remove Ironclad from the kernel on exit instead of leaving enforcement pinned.
    #[arg(long)]
    detach_on_exit: bool,
    /// Seconds between heartbeat log lines.
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Run the main loop on tokio, with Ironclad's events as a `Stream`.
    #[arg(long)]
    tokio: bool,
    /// Where the health report goes (`health.json`, read by
    /// `ironclad_agent::health::probe`).
    #[arg(long, default_value = "/run/embed-agent")]
    run_dir: PathBuf,
}

/// Ironclad inside the agent: the loaded features.
struct Protection {
    health: Health,
    loader: Loader,
    sentinel: Sentinel,
    shield: Shield,
    xdp: XdpAttachment,
    egress: EgressFirewall,
    egress_hooks: CgroupAttachment,
}

/// Ironclad's events: the reader of every ring buffer and the agent's subscription.
struct Feed {
    reader: EventReader,
    events: Subscription<Event>,
}

impl Protection {
    /// Loads and attaches everything the policy asks for. Any error leaves the agent
    /// free to decide; nothing here panics.
    fn start(args: &Args) -> Result<(Self, Feed)> {
        let policy = compile_file(&args.policy)?; // FILE:LINE:COLUMN errors
        let loader = Loader::builder()
            .pin_root(&args.pin_dir)
            .audit_sink(Arc::new(JsonLinesFile::open(&args.audit_log)?))
            .build()?;
        // Self-defense first, so everything loaded after it is protected from the start.
        let mut builder = Sentinel::builder()
            .protect(&args.policy)
            .allow_unprotected_start(!args.require_sentinel);
        for path in &args.protect {
            builder = builder.protect(path);
        }
        if let Some(manager) = &args.update_manager {
            builder = builder.update_manager(manager);
        }
        let mut sentinel = builder.start(&loader)?;

        let shield = Shield::load(&loader)?;
        let shield_policy = policy
            .shield
            .as_ref()
            .context("the policy has no shield section")?;
        shield.replace(shield_policy)?;
        let xdp = shield.attach_pinned(&args.iface)?;

        let egress = EgressFirewall::load(&loader)?;
        egress.replace(
            policy
                .egress
                .as_ref()
                .context("the policy has no egress section")?,
        )?;
        let egress_hooks = egress.attach_pinned(&args.cgroup)?;

        let mut sources = vec![shield.event_source()?, egress.event_source()?];
        match sentinel.mode() {
            SentinelMode::Unprotected { reason } => {
                warn!("running WITHOUT Ironclad self-protection: {reason}");
            }
            _ => {
                sentinel.protect_bpf(shield.object())?;
                sentinel.protect_bpf(egress.object())?;
                sources.push(sentinel.event_source()?);
            }
        }
        let fanout = Arc::new(Fanout::new());
        let events = fanout.subscribe("forwarder", 4096, Overflow::DropOldest);
        let reader = EventReader::new(sources, fanout)?;
        // Ready means every feature runs: a Sentinel that could not start (no BPF-LSM)
        // leaves the agent alive but not ready, and the probe says why.
        let health = Health::new(&args.run_dir);
        let state = |up, detail: String| FeatureState { up, detail };
        health.features(
            [
                (
                    "shield",
                    state(
                        true,
                        format!("xdp on {} ({})", args.iface, xdp.mode().name()),
                    ),
                ),
                (
                    "egress",
                    state(true, format!("cgroup {}", args.cgroup.display())),
                ),
                (
                    "sentinel",
                    match sentinel.mode() {
                        SentinelMode::Unprotected { reason } => state(false, reason.clone()),
                        mode => state(true, format!("{mode:?}")),
                    },
                ),
            ]
            .into_iter()
            .map(|(name, state)| (name.to_string(), state))
            .collect(),
        );
        health.beat();
        info!(
            "ironclad: shield on {} ({} XDP, {} rules), egress on {}, sentinel {:?}",
            args.iface,
            xdp.mode().name(),
            shield_policy.rules.len() + shield_policy.sets.len(),
            args.cgroup.display(),
            sentinel.mode()
        );
        Ok((
            Self {
                health,
                loader,
                sentinel,
                shield,
                xdp,
                egress,
                egress_hooks,
            },
            Feed { reader, events },
        ))
    }

    /// Takes Ironclad out of the kernel (only with `--detach-on-exit`).
    fn detach(self) -> Result<()> {
        self.health.remove();
        self.xdp.detach()?;
        self.egress_hooks.detach()?;
        drop(self.shield);
        drop(self.egress);
        let removed = self.loader.remove_pins(Shield::OBJECT)?
            + self.loader.remove_pins(EgressFirewall::OBJECT)?;
        self.sentinel.stop()?;
        info!("ironclad detached, {removed} pins removed");
        Ok(())
    }
}

/// The agent's collector connection: one JSON object per line, reconnecting with a
/// back-off. Events that cannot be sent are counted and dropped, never block the agent.
struct Forwarder {
    addr: SocketAddr,
    conn: Option<TcpStream>,
    retry_at: Instant,
    sent: u64,
    failed: u64,
}

impl Forwarder {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: None,
            retry_at: Instant::now(),
            sent: 0,
            failed: 0,
        }
    }

    fn send(&mut self, record: &serde_json::Value) {
        if self.conn.is_none() && Instant::now() >= self.retry_at {
            match TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)) {
                Ok(conn) => {
                    info!("collector {} connected", self.addr);
                    self.conn = Some(conn);
                }
                Err(e) => {
                    warn!("collector {}: {e}; retrying in 5 s", self.addr);
                    self.retry_at = Instant::now() + Duration::from_secs(5);
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            self.failed += 1;
            return;
        };
        if let Err(e) = writeln!(conn, "{record}") {
            warn!("collector {}: {e}; reconnecting", self.addr);
            self.conn = None;
            self.failed += 1;
        } else {
            self.sent += 1;
        }
    }
}

/// The agent's envelope around one of Ironclad's events.
fn envelope(host: &str, event: &Event) -> serde_json::Value {
    serde_json::json!({
        "agent": "embed_agent",
        "host": host,
        "event": event,
    })
}

fn heartbeat(protection: &Protection, forwarder: &Forwarder) {
    let dropped = protection
        .shield
        .total(ironclad_bpf::ShieldTotal::Dropped)
        .map(|c| c.packets)
        .unwrap_or_default();
    info!(
        "heartbeat: {} events forwarded, {} not forwarded, {dropped} packets dropped",
        forwarder.sent, forwarder.failed
    );
}

fn run(args: &Args) -> Result<()> {
    let (protection, feed) = Protection::start(args).context("starting Ironclad")?;
    let mut forwarder = Forwarder::new(args.forward);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    if args.tokio {
        run_on_tokio(args, &protection, feed, &mut forwarder, host)?;
    } else {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, stop.clone())?;
        }
        let mut last_beat = Instant::now();
        info!("agent running");
        while !stop.load(Ordering::Relaxed) {
            // Ironclad's part of the loop: wait up to 100 ms for kernel events.
            if let Err(e) = feed.reader.poll(Duration::from_millis(100)) {
                warn!("reading ironclad events: {e}");
            }
            protection.health.beat();
            for event in feed.events.receiver().try_iter() {
                forwarder.send(&envelope(host, &event));
            }
            if last_beat.elapsed() >= Duration::from_secs(args.heartbeat_seconds) {
                last_beat = Instant::now();
                heartbeat(&protection, &forwarder);
            }
        }
    }
    info!("stopping");
    if args.detach_on_exit {
        protection.detach()?;
    } else {
        info!(
            "ironclad enforcement stays pinned under {}",
            args.pin_dir.display()
        );
    }
    Ok(())
}

/// The same main loop on tokio: Ironclad's events arrive as a `Stream` polled by the
/// runtime's reactor, next to the agent's timer and signals.
fn run_on_tokio(
    args: &Args,
    protection: &Protection,
    feed: Feed,
    forwarder: &mut Forwarder,
    host: &str,
) -> Result<()> {
    use futures_util::StreamExt;
    use tokio::signal::unix::{signal, SignalKind};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        // Records that do not wake the reader (TLS capture) wait at most 100 ms.
        let mut events = EventStream::new(feed.reader, feed.events, Duration::from_millis(100))?;
        let mut beat = tokio::time::interval(Duration::from_secs(args.heartbeat_seconds));
        let mut health = tokio::time::interval(Duration::from_secs(1));
        info!("agent running (tokio)");
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => forwarder.send(&envelope(host, &event)),
                    Some(Err(e)) => warn!("reading ironclad events: {e}"),
                    None => break,
                },
                _ = beat.tick() => heartbeat(protection, forwarder),
                _ = health.tick() => protection.health.beat(),
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        Ok(())
    })
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", ironclad_core::error::report(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
