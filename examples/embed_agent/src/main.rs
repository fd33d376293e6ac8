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
//! Everything Ironclad-specific is [`start_ironclad`] (the policy, with the agent's own
//! protection added, handed to `ironclad-agent`'s feature supervisor) and one call in
//! the main loop; the rest is what the agent had before: a collector connection that
//! forwards JSON lines and reconnects, a heartbeat, signal handling. Its health report
//! (`RUN_DIR/health.json`: which features run, a heartbeat) comes from `ironclad-agent`,
//! so the same probe as the reference daemon's reads it. With `--tokio` the same agent
//! runs its main loop on tokio and receives Ironclad's events through [`EventStream`]
//! (no thread of Ironclad's own). The embedding guide (`docs/embedding.md`) walks
//! through both.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use ironclad_agent::features::{Features, Settings};
use ironclad_agent::health::Health;
use ironclad_bpf::{EventStream, JsonLinesFile, Loader, Shield, DEFAULT_PIN_ROOT};
use ironclad_core::abi::ShieldTotal;
use ironclad_events::{Event, Fanout, Overflow, Subscription};
use ironclad_policy::config::{compile_file, CompiledConfig};
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

/// The policy the agent enforces: its file, with the agent's own files and updater
/// put under the Sentinel (`--protect`, `--update-manager`, `--require-sentinel`
/// add to a `sentinel:` section when the file has one).
fn policy(args: &Args) -> Result<CompiledConfig> {
    let mut policy = compile_file(&args.policy)?; // FILE:LINE:COLUMN errors
    policy
        .shield
        .as_ref()
        .context("the policy has no shield section")?;
    policy
        .egress
        .as_ref()
        .context("the policy has no egress section")?;
    let sentinel = policy.sentinel.get_or_insert_with(|| {
        let mut sentinel = ironclad_policy::sentinel::SentinelPolicy::default();
        sentinel.required = false;
        sentinel
    });
    sentinel.protect.push(args.policy.clone());
    sentinel.protect.extend(args.protect.iter().cloned());
    if args.update_manager.is_some() {
        sentinel.update_manager.clone_from(&args.update_manager);
    }
    sentinel.required |= args.require_sentinel;
    Ok(policy)
}

/// Loads and attaches everything the policy asks for, the Sentinel first. Any error
/// leaves the agent free to decide; nothing here panics.
fn start_ironclad<'l>(
    args: &Args,
    loader: &'l Loader,
    events: Arc<Fanout<Event>>,
) -> Result<(Features<'l>, Health)> {
    let policy = policy(args)?;
    let settings = Settings::new(&args.cgroup).iface(&args.iface);
    let features = Features::start(loader, settings, &policy, events)?;
    // Ready means every feature runs: a Sentinel that could not start (no BPF-LSM)
    // leaves the agent alive but not ready, and the probe says why.
    let health = Health::new(&args.run_dir);
    let states = features.states();
    for (name, state) in &states {
        match (name.as_str(), state.up) {
            ("sentinel", false) => {
                warn!("running WITHOUT Ironclad self-protection: {}", state.detail);
            }
            (_, true) => info!("ironclad {name}: {}", state.detail),
            (_, false) => warn!("ironclad {name} is down: {}", state.detail),
        }
    }
    health.features(states);
    health.beat();
    Ok((features, health))
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

fn heartbeat(args: &Args, forwarder: &Forwarder) {
    let dropped = Shield::status_from_pins(&args.pin_dir)
        .ok()
        .and_then(|s| {
            s.totals
                .into_iter()
                .find(|(t, _)| *t == ShieldTotal::Dropped)
        })
        .map(|(_, c)| c.packets)
        .unwrap_or_default();
    info!(
        "heartbeat: {} events forwarded, {} not forwarded, {dropped} packets dropped",
        forwarder.sent, forwarder.failed
    );
}

fn run(args: &Args) -> Result<()> {
    let loader = Loader::builder()
        .pin_root(&args.pin_dir)
        .audit_sink(Arc::new(JsonLinesFile::open(&args.audit_log)?))
        .build()?;
    let fanout = Arc::new(Fanout::new());
    let events = fanout.subscribe("forwarder", 4096, Overflow::DropOldest);
    let (mut features, health) =
        start_ironclad(args, &loader, fanout).context("starting Ironclad")?;
    let mut forwarder = Forwarder::new(args.forward);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    if args.tokio {
        let reader = features
            .take_reader()
            .context("no feature has events to read")?;
        let stream = (reader, events);
        run_on_tokio(args, &health, stream, &mut forwarder, host)?;
    } else {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, stop.clone())?;
        }
        let mut last_beat = Instant::now();
        info!("agent running");
        while !stop.load(Ordering::Relaxed) {
            // Ironclad's part of the loop: wait up to 100 ms for kernel events.
            features.poll(Duration::from_millis(100));
            health.beat();
            for event in events.receiver().try_iter() {
                forwarder.send(&envelope(host, &event));
            }
            if last_beat.elapsed() >= Duration::from_secs(args.heartbeat_seconds) {
                last_beat = Instant::now();
                heartbeat(args, &forwarder);
            }
        }
    }
    info!("stopping");
    if args.detach_on_exit {
        health.remove();
        features.stop(true)?;
        info!("ironclad detached");
    } else {
        features.stop(false)?;
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
    health: &Health,
    (reader, events): (ironclad_bpf::EventReader, Subscription<Event>),
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
        let mut events = EventStream::new(reader, events, Duration::from_millis(100))?;
        let mut beat = tokio::time::interval(Duration::from_secs(args.heartbeat_seconds));
        let mut alive = tokio::time::interval(Duration::from_secs(1));
        info!("agent running (tokio)");
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => forwarder.send(&envelope(host, &event)),
                    Some(Err(e)) => warn!("reading ironclad events: {e}"),
                    None => break,
                },
                _ = beat.tick() => heartbeat(args, forwarder),
                _ = alive.tick() => health.beat(),
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
