//! `run`: enforce a policy in the foreground.
//!
//! Start-up: compile the policy (bad input: exit 2, nothing in the kernel changes), load
//! the Shield (adopting pinned maps), make the maps equal the policy, then adopt the
//! pinned link or attach and pin a new one. If the Shield cannot load or attach (old
//! kernel, missing interface, XDP refused) the daemon says so and keeps running its
//! other features: it fails open, traffic is untouched.
//!
//! While running: drop events are written to `--events`; SIGHUP recompiles the policy
//! and applies it only if it is valid; SIGINT/SIGTERM stop the daemon, leaving
//! enforcement pinned in place unless `--detach-on-exit`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ironclad_bpf::{AuditAction, AuditLog, BpfError, Outcome as AuditOutcome};
use ironclad_bpf::{
    CgroupAttachment, EgressFirewall, EventReader, EventSource, JsonLinesFile, Loader,
    ProcessMonitor, Shield, Telemetry, TlsMonitor, XdpAttachment, DEFAULT_PIN_ROOT,
};
use ironclad_events::{Event, Fanout, Overflow, ProcessCacheNotice, Subscription};
use ironclad_policy::bundle::{outside_paths, verify_bundle, Accepted, TrustedKey};
use ironclad_policy::config::{compile_file, CompiledConfig};
use ironclad_policy::egress::CompiledEgress;
use ironclad_policy::process::ProcessPolicy;
use ironclad_policy::sentinel::SentinelPolicy;
use ironclad_policy::shield::{CompiledShield, Mode};
use ironclad_policy::telemetry::TelemetryPolicy;
use ironclad_policy::tls::TlsPolicy;
use ironclad_sentinel::{Sentinel, SentinelMode};
use tracing::{error, info, warn};

use crate::metrics::{Access, Metrics, SourceStat};
use crate::rollout::{Applied, DAEMON, DEFAULT_RUN_DIR};
use ironclad_agent::confirm::{ConfirmWindow, WindowOutcome};
use ironclad_agent::feeds::{FeedFetcher, FeedWatch};
use ironclad_agent::health::{FeatureState as Feature, Health};

/// Events queued for the `--events` writer between two drains (every 100 ms at most):
/// 8192 of them is 80,000 events a second before the oldest are dropped (and counted),
/// in about 2 MiB; the kernel's ring buffers hold more behind it.
const EVENTS_QUEUE: usize = 8192;

/// Arguments of `run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The policy file.
    #[arg(long, required_unless_present = "bundle", conflicts_with = "bundle")]
    config: Option<PathBuf>,
    /// A signed policy bundle (a directory made by `full_firewall sign`) instead of
    /// `--config`: applied only if its signature verifies with `--trusted-key`, its
    /// files match, and its serial is not older than the last accepted one.
    #[arg(long, requires = "trusted_key")]
    bundle: Option<PathBuf>,
    /// The public key bundles must be signed with (`full_firewall keygen` writes it).
    #[arg(long)]
    trusted_key: Option<PathBuf>,
    /// Where the last accepted bundle's serial and the verified copy of the bundle live.
    #[arg(long, default_value = "/var/lib/ironclad")]
    state_dir: PathBuf,
    /// Interface the Shield attaches to (needed when the policy has a `shield` section).
    #[arg(long)]
    iface: Option<String>,
    /// The pin root.
    #[arg(long, default_value = DEFAULT_PIN_ROOT)]
    pin_dir: PathBuf,
    /// Count and report, never drop, whatever the policy's mode says.
    #[arg(long)]
    dry_run: bool,
    /// cgroup v2 directory the egress firewall attaches to (default: the cgroup v2 root,
    /// so every process on the host).
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// On exit, detach and remove every pin instead of leaving enforcement in place.
    #[arg(long)]
    detach_on_exit: bool,
    /// Where audit records go (JSON lines).
    #[arg(long, default_value = "/var/log/ironclad-audit.jsonl")]
    audit_log: PathBuf,
    /// Write every event as one JSON line to this file (`-` for stdout). A full disk
    /// loses events (counted in `status`, `/metrics`), never enforcement.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Rotate the events file at this size: it becomes `FILE.1` (replacing the older
    /// one) and a new file starts. 0: never.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    events_max_bytes: u64,
    /// Serve Prometheus metrics (`/metrics`), health (`/healthz`, `/readyz`), the live
    /// dashboard (`/`) and its JSON (`/api/status`) on this address, e.g.
    /// `127.0.0.1:9477`. Counters only; events need `--metrics-token-file`.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// A file (mode 0600) holding the bearer token `/api/events` asks for: events carry
    /// payloads (TLS plaintext, DNS names) and are not served without it.
    #[arg(long, value_name = "FILE")]
    metrics_token_file: Option<PathBuf>,
    /// A host name the listener answers to besides IP literals and `localhost` (the
    /// `Host` check that stops DNS rebinding); may be repeated.
    #[arg(long, value_name = "NAME")]
    metrics_allow_host: Vec<String>,
    /// Make every reload provisional: unless `full_firewall confirm` runs within this
    /// time (e.g. `120s`), the previous policy comes back by itself.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    confirm_within: Option<Duration>,
    /// Where the health report (`health.json`, read by `status` and `health`) and the
    /// pid and pending-confirmation files (`--confirm-within`) live.
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// Replace pins at the pin root that are not compatible maps of this build (left by
    /// another version or program) with new, empty maps. Without it such a pin stops
    /// the start with a message naming it.
    #[arg(long)]
    replace_stale_pins: bool,
}

impl RunArgs {
    /// The policy file or the bundle directory, for messages.
    fn source(&self) -> &Path {
        self.bundle
            .as_deref()
            .or(self.config.as_deref())
            .unwrap_or(Path::new("(none)"))
    }

    fn accepted_path(&self) -> PathBuf {
        self.state_dir.join("bundle-accepted.json")
    }
}

/// A compiled policy, and for a bundle what to remember once it is applied.
struct LoadedPolicy {
    config: CompiledConfig,
    accepted: Option<Accepted>,
}

/// Reads the policy: the file, or the verified copy of a signed bundle (every accept and
/// refusal of a bundle goes to the audit log). An error is the text to print.
fn load_policy(args: &RunArgs, audit: &AuditLog) -> std::result::Result<LoadedPolicy, String> {
    let (path, accepted) = match (&args.bundle, &args.trusted_key) {
        (Some(dir), Some(key)) => {
            let refuse = |message: String| {
                policy_record(
                    audit,
                    args,
                    AuditOutcome::Refused,
                    format!("bundle refused: {message}"),
                );
                format!("{}: bundle refused: {message}", dir.display())
            };
            let key = TrustedKey::from_file(key).map_err(|e| refuse(e.to_string()))?;
            let last = Accepted::load(&args.accepted_path()).map_err(|e| refuse(e.to_string()))?;
            let verified = verify_bundle(dir, &key, last.as_ref(), &args.state_dir.join("bundle"))
                .map_err(|e| refuse(e.to_string()))?;
            let compiled = compile_file(&verified.policy)
                .map_err(|e| refuse(format!("its policy is invalid:\n{e}")))?;
            if let Some((outside, why)) = compiled
                .shield
                .as_ref()
                .map(|s| outside_paths(s, &args.state_dir.join("bundle")))
                .and_then(|p| p.into_iter().next())
            {
                return Err(refuse(format!(
                    "its policy reads {}, which is not in the bundle ({why})",
                    outside.display()
                )));
            }
            (compiled, Some(verified.accepted))
        }
        _ => {
            let Some(path) = &args.config else {
                return Err("give --config or --bundle".to_string());
            };
            (compile_file(path).map_err(|e| e.to_string())?, None)
        }
    };
    let mut config = path;
    for warning in &config.warnings {
        warn!("{warning}");
    }
    if let Some(shield) = config.shield.as_mut() {
        if args.dry_run {
            shield.mode = Mode::DryRun;
        }
        for warning in shield.sources.iter().flat_map(|s| &s.warnings) {
            warn!("{warning} (lenient feed: skipped or masked)");
        }
    }
    Ok(LoadedPolicy { config, accepted })
}

/// An audit record about the policy from `args` (action `policy`).
fn policy_record(audit: &AuditLog, args: &RunArgs, outcome: AuditOutcome, detail: String) {
    audit.record(
        AuditAction::Policy,
        "full_firewall",
        &args.source().display().to_string(),
        outcome,
        detail,
    );
}

/// Remembers an applied bundle as accepted (later bundles must not be older).
fn accept(args: &RunArgs, audit: &AuditLog, accepted: Option<&Accepted>) {
    let Some(accepted) = accepted else {
        return;
    };
    match accepted.save(&args.accepted_path()) {
        Ok(()) => {
            info!("bundle serial {} accepted", accepted.serial);
            policy_record(
                audit,
                args,
                AuditOutcome::Ok,
                format!("bundle accepted: serial {}", accepted.serial),
            );
        }
        Err(e) => error!("recording the accepted bundle: {e}"),
    }
}

/// The running identity firewall and its (pinned) hooks on the cgroup.
struct Egress {
    firewall: EgressFirewall,
    _attachment: CgroupAttachment,
}

/// One reader of every running feature's ring buffer (one epoll set, one drain per
/// turn of the loop), whose events get the process cache's `process` block when the
/// process monitor runs. Built again when a feature starts or stops; records waiting
/// in a ring meanwhile stay there for the new reader.
fn event_reader(
    features: &Features<'_>,
    fanout: &Arc<Fanout<Event>>,
    processes: Option<&Arc<ProcessMonitor>>,
) -> Option<EventReader> {
    let mut sources: Vec<EventSource> = Vec::new();
    let mut add = |feature: &str, source: std::result::Result<EventSource, String>| match source {
        Ok(source) => sources.push(source),
        Err(e) => warn!("{feature}: its events cannot be read: {e}"),
    };
    if let Some(r) = features.shield {
        add("shield", r.shield.event_source().map_err(|e| e.to_string()));
    }
    if let Some(e) = features.egress {
        add(
            "egress",
            e.firewall.event_source().map_err(|e| e.to_string()),
        );
    }
    if let Some(o) = features.observer {
        add(
            "telemetry",
            o.telemetry.event_source().map_err(|e| e.to_string()),
        );
    }
    if let Some(t) = features.tls {
        add("tls", t.monitor.event_source().map_err(|e| e.to_string()));
    }
    if let Some(g) = features.guard {
        add(
            "sentinel",
            g.sentinel.event_source().map_err(|e| e.to_string()),
        );
    }
    if sources.is_empty() {
        return None;
    }
    let reader = match processes {
        Some(p) => EventReader::with_processes(sources, fanout.clone(), p.clone()),
        None => EventReader::new(sources, fanout.clone()),
    };
    match reader {
        Ok(reader) => {
            info!("reading events of {}", reader.sources());
            Some(reader)
        }
        Err(e) => {
            error!("no events are read: {e}");
            None
        }
    }
}

/// Starts the process cache when a feature that reports processes is configured.
fn process_policy(config: &CompiledConfig) -> Option<ProcessPolicy> {
    let wanted = config.egress.is_some()
        || config.tls.is_some()
        || config.sentinel.is_some()
        || config.telemetry.is_some_and(|t| t.dns || t.bandwidth)
        || config.processes.is_some();
    wanted.then(|| config.processes.clone().unwrap_or_default())
}

/// Starts the process cache (see [`process_policy`] for when).
fn start_processes(
    loader: &Loader,
    policy: Option<ProcessPolicy>,
    reasons: &mut Reasons,
) -> Option<Arc<ProcessMonitor>> {
    let policy = policy?;
    match ProcessMonitor::start(loader, &policy) {
        Ok(m) => {
            info!(
                "process cache: lineage depth {}, capacity {}, arguments {}",
                policy.lineage_depth,
                policy.capacity,
                if policy.args {
                    "recorded (redacted)"
                } else {
                    "not recorded"
                }
            );
            Some(Arc::new(m))
        }
        Err(e) => {
            warn!("process cache disabled, events name processes from /proc only: {e}");
            reasons.insert("processes", e.to_string());
            None
        }
    }
}

/// Why a configured feature is not running, by feature name.
type Reasons = BTreeMap<&'static str, String>;

fn start_egress(
    loader: &Loader,
    policy: &CompiledEgress,
    cgroup: &Path,
    reasons: &mut Reasons,
) -> Option<Egress> {
    let started = EgressFirewall::load(loader).and_then(|firewall| {
        firewall.replace(policy)?;
        let attachment = firewall.attach_pinned(cgroup)?;
        Ok(Egress {
            firewall,
            _attachment: attachment,
        })
    });
    match started {
        Ok(egress) => {
            info!(
                "egress firewall on cgroup {}: {} rules",
                cgroup.display(),
                policy.rules.len()
            );
            Some(egress)
        }
        Err(e) => {
            warn!("egress firewall disabled: {e}");
            reasons.insert("egress", e.to_string());
            None
        }
    }
}

/// Running telemetry.
struct Observer {
    telemetry: Telemetry,
    policy: TelemetryPolicy,
    last_report: std::time::Instant,
}

fn start_telemetry(
    loader: &Loader,
    policy: &TelemetryPolicy,
    cgroup: &Path,
    reasons: &mut Reasons,
) -> Option<Observer> {
    let started = Telemetry::start(loader, policy, cgroup).map(|telemetry| Observer {
        telemetry,
        policy: *policy,
        last_report: std::time::Instant::now(),
    });
    match started {
        Ok(o) => {
            info!(
                "telemetry on cgroup {}: dns {}, bandwidth {} (every {} s)",
                cgroup.display(),
                policy.dns,
                policy.bandwidth,
                policy.interval_seconds
            );
            Some(o)
        }
        Err(e) => {
            warn!("telemetry disabled: {e}");
            reasons.insert("telemetry", e.to_string());
            None
        }
    }
}

/// Publishes one `bandwidth` event per process with traffic, every interval.
fn report_bandwidth(
    o: &mut Observer,
    fanout: &Fanout<Event>,
    processes: Option<&Arc<ProcessMonitor>>,
    now: bool,
) {
    let due = o.last_report.elapsed() >= Duration::from_secs(u64::from(o.policy.interval_seconds));
    if !o.policy.bandwidth || !(due || now) {
        return;
    }
    o.last_report = std::time::Instant::now();
    match o.telemetry.bandwidth() {
        Ok(samples) => {
            for sample in samples {
                let mut event = Event::Bandwidth(sample);
                if let Some(p) = processes {
                    p.enrich(&mut event);
                }
                fanout.publish(&event);
            }
        }
        Err(e) => warn!("reading bandwidth: {e}"),
    }
}

/// Running TLS capture.
struct Tls {
    monitor: TlsMonitor,
}

fn start_tls(loader: &Loader, policy: &TlsPolicy, reasons: &mut Reasons) -> Option<Tls> {
    let started = TlsMonitor::start(loader, policy).map(|monitor| Tls { monitor });
    match started {
        Ok(tls) => {
            info!(
                "tls capture on {}: {} scope entries, {} bytes per call",
                tls.monitor.library().display(),
                policy.scope.len(),
                policy.max_bytes
            );
            Some(tls)
        }
        Err(e) => {
            warn!("tls capture disabled: {e}");
            reasons.insert("tls", e.to_string());
            None
        }
    }
}

/// The running Shield: the object and its attachment.
struct Running {
    shield: Shield,
    attachment: XdpAttachment,
}

fn start_shield(
    loader: &Loader,
    policy: &CompiledShield,
    iface: &str,
) -> ironclad_bpf::Result<Running> {
    let shield = Shield::load(loader)?;
    let report = shield.replace(policy)?;
    let attachment = shield.attach_pinned(iface)?;
    info!(
        "shield enforcing on {iface} ({} mode, {}): {} rules ({} added, {} kept, {} removed), {} management prefixes, IPv4 via the {} path",
        attachment.mode().name(),
        if policy.mode == Mode::DryRun { "dry-run" } else { "enforce" },
        policy.rules.len() + policy.sets.len(),
        report.added,
        report.kept,
        report.removed,
        policy.management.len(),
        report.ipv4_path.as_str(),
    );
    Ok(Running { shield, attachment })
}

/// The running Sentinel.
struct Guard {
    sentinel: Sentinel,
}

/// Starts the Sentinel from the policy's `sentinel` section. Fails closed: an error here
/// stops the daemon unless the section says `required: false`.
fn start_sentinel(loader: &Loader, policy: &SentinelPolicy) -> Result<Option<Guard>> {
    let mut builder = Sentinel::builder()
        .monitor_only(policy.monitor_only)
        .allow_unprotected_start(!policy.required);
    for path in &policy.protect {
        builder = builder.protect(path);
    }
    for path in &policy.monitor {
        builder = builder.monitor(path);
    }
    if let Some(manager) = &policy.update_manager {
        builder = builder.update_manager(manager);
    }
    let sentinel = builder
        .start(loader)
        .context("the sentinel could not start (sentinel.required is true)")?;
    if let SentinelMode::Unprotected { reason } = sentinel.mode() {
        error!("running WITHOUT self-protection (sentinel.required: false): {reason}");
        return Ok(None);
    }
    let status = sentinel.status()?;
    info!(
        "sentinel {}: {} protected and {} monitored files, {} hooks",
        if policy.monitor_only {
            "monitoring (monitor-only)"
        } else {
            "enforcing"
        },
        status.protected_inodes,
        status.monitored_inodes,
        status.hooks
    );
    Ok(Some(Guard { sentinel }))
}

/// Puts a loaded object under the Sentinel's protection (its maps and pins).
fn guard_object(guard: &mut Option<Guard>, object: &ironclad_bpf::LoadedObject) {
    if let Some(g) = guard.as_mut() {
        if let Err(e) = g.sentinel.protect_bpf(object) {
            warn!("sentinel: could not protect `{}`: {e}", object.name());
        }
    }
}

/// Puts `previous` back: the Shield's and the egress firewall's policies (an empty policy
/// where there was none). Returns whether everything was restored.
fn roll_back(previous: &Applied, shield: Option<&Running>, egress: Option<&mut Egress>) -> bool {
    // What there was, or an empty policy when there was none.
    fn or_empty<T: Clone, E>(was: &Option<T>, empty: impl FnOnce() -> Result<T, E>) -> Option<T> {
        was.clone().or_else(|| empty().ok())
    }
    let mut ok = true;
    if let Some(r) = shield {
        let policy = or_empty(&previous.shield, || {
            ironclad_policy::shield::compile(&Default::default())
        });
        match policy.map(|p| r.shield.replace(&p)) {
            Some(Ok(report)) => info!(
                "shield rolled back: {} added, {} changed, {} removed, {} kept",
                report.added, report.changed, report.removed, report.kept
            ),
            Some(Err(e)) => {
                ok = false;
                error!("rolling the shield back failed: {e}");
            }
            None => ok = false,
        }
    }
    if let Some(e) = egress {
        let policy = or_empty(&previous.egress, || {
            ironclad_policy::egress::compile(&Default::default())
        });
        match policy.map(|p| e.firewall.replace(&p)) {
            Some(Ok(_)) => info!("egress policy rolled back"),
            Some(Err(err)) => {
                ok = false;
                error!("rolling the egress policy back failed: {err}");
            }
            None => ok = false,
        }
    }
    ok
}

/// Which features a policy configures.
struct Configured {
    shield: bool,
    egress: bool,
    tls: bool,
    telemetry: bool,
    sentinel: bool,
}

impl Configured {
    fn of(config: &CompiledConfig) -> Self {
        Self {
            shield: config.shield.is_some(),
            egress: config.egress.is_some(),
            tls: config.tls.is_some(),
            telemetry: config.telemetry.is_some_and(|t| t.dns || t.bandwidth),
            sentinel: config.sentinel.is_some(),
        }
    }
}

/// The features running now.
struct Features<'a> {
    shield: Option<&'a Running>,
    egress: Option<&'a Egress>,
    tls: Option<&'a Tls>,
    observer: Option<&'a Observer>,
    guard: Option<&'a Guard>,
}

/// What runs: up with a description, or down with the reason when the policy
/// configures a feature that could not start.
fn feature_states(
    configured: &Configured,
    running: Features<'_>,
    reasons: &Reasons,
) -> BTreeMap<String, Feature> {
    let mut out = BTreeMap::new();
    let mut report = |name: &'static str, wanted: bool, detail: Option<String>| {
        let feature = match detail {
            Some(detail) => Feature { up: true, detail },
            None if wanted => Feature {
                up: false,
                detail: reasons.get(name).map_or_else(
                    || "configured, not running (see the log)".to_string(),
                    |r| format!("not running: {r}"),
                ),
            },
            None => return,
        };
        out.insert(name.to_string(), feature);
    };
    report(
        "shield",
        configured.shield,
        running.shield.map(|r| {
            let mode = match r.shield.mode() {
                Ok(Mode::DryRun) => "dry-run",
                Ok(Mode::Enforce) => "enforce",
                Err(_) => "unknown mode",
            };
            format!("XDP ({}) {mode}", r.attachment.mode().name())
        }),
    );
    report(
        "egress",
        configured.egress,
        running
            .egress
            .map(|_| "cgroup connect4/6 and sendmsg4/6".to_string()),
    );
    report(
        "tls",
        configured.tls,
        running
            .tls
            .map(|t| format!("uprobes on {}", t.monitor.library().display())),
    );
    report(
        "telemetry",
        configured.telemetry,
        running.observer.map(|o| {
            format!(
                "dns {}, bandwidth {}",
                if o.policy.dns { "on" } else { "off" },
                if o.policy.bandwidth { "on" } else { "off" }
            )
        }),
    );
    report(
        "sentinel",
        configured.sentinel,
        running.guard.map(|g| match g.sentinel.mode() {
            SentinelMode::Unprotected { .. } => "unprotected".to_string(),
            _ => "BPF-LSM self-defense".to_string(),
        }),
    );
    out
}

/// Tells the health report and the metrics listener what runs.
fn publish_features(health: &Health, metrics: Option<&Metrics>, states: BTreeMap<String, Feature>) {
    if let Some(m) = metrics {
        for (name, f) in &states {
            m.program(name, f.up, f.detail.clone());
        }
    }
    health.features(states);
    health.beat();
}

/// The `--events` sink: JSON lines to a file (rotated by size) or stdout. A write that
/// fails (a full disk, an I/O error) never stops the daemon: the events are counted as
/// lost, the first failure of each run is logged with the file's name, and writing
/// resumes when the file accepts data again.
struct EventsOut {
    path: Option<PathBuf>,
    out: Box<dyn Write>,
    written: u64,
    max_bytes: u64,
    lost: u64,
    failing: bool,
}

impl EventsOut {
    fn open(path: &Path, max_bytes: u64) -> Result<Self> {
        if path == Path::new("-") {
            return Ok(Self {
                path: None,
                out: Box::new(std::io::stdout()),
                written: 0,
                max_bytes: 0,
                lost: 0,
                failing: false,
            });
        }
        let (out, written) = Self::open_file(path)?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            out,
            written,
            max_bytes,
            lost: 0,
            failing: false,
        })
    }

    fn open_file(path: &Path) -> Result<(Box<dyn Write>, u64)> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = File::options()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata().map_or(0, |m| m.len());
        Ok((Box::new(BufWriter::new(file)), len))
    }

    fn name(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "stdout".to_string(), |p| p.display().to_string())
    }

    /// Moves the file to `FILE.1` (replacing an older one) and starts a new one.
    fn rotate(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let _ = self.out.flush();
        let mut old = path.clone().into_os_string();
        old.push(".1");
        match std::fs::rename(&path, &old)
            .map_err(anyhow::Error::from)
            .and_then(|()| Self::open_file(&path))
        {
            Ok((out, written)) => {
                self.out = out;
                self.written = written;
                info!("events file {} rotated", path.display());
            }
            Err(e) => warn!("rotating the events file {}: {e:#}", path.display()),
        }
    }

    fn failed(&mut self, e: &std::io::Error, events: u64) {
        self.lost += events;
        if !self.failing {
            self.failing = true;
            error!(
                "events file {}: {e}: events are being LOST (counted; enforcement continues)",
                self.name()
            );
        }
    }

    /// Writes what the subscription holds.
    fn write(&mut self, sub: &Subscription<Event>) {
        let mut batch = 0u64;
        while let Ok(event) = sub.receiver().try_recv() {
            let line = format!("{}\n", event.to_json());
            if self.max_bytes > 0 && self.written + line.len() as u64 > self.max_bytes {
                self.rotate();
            }
            match self.out.write_all(line.as_bytes()) {
                Ok(()) => {
                    self.written += line.len() as u64;
                    batch += 1;
                }
                Err(e) => self.failed(&e, 1),
            }
        }
        match self.out.flush() {
            Ok(()) if batch > 0 => {
                if self.failing {
                    info!("events file {} writable again", self.name());
                }
                self.failing = false;
            }
            Ok(()) => {}
            // Buffered lines that did not reach the file are lost too.
            Err(e) => self.failed(&e, batch),
        }
    }
}

fn write_events(sub: &Subscription<Event>, out: &mut Option<EventsOut>, health: &Health) {
    match out.as_mut() {
        Some(out) => {
            out.write(sub);
            health.losses("events-file", out.lost);
        }
        // No --events: keep the queue from filling, nothing else.
        None => while sub.receiver().try_recv().is_ok() {},
    }
}

pub(crate) fn run(args: &RunArgs) -> Result<ExitCode> {
    let sink = Arc::new(JsonLinesFile::open(&args.audit_log)?);
    let audit = AuditLog::new(sink.clone());
    let LoadedPolicy {
        config,
        accepted: first_accepted,
    } = match load_policy(args, &audit) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            error!("the policy is invalid; nothing was changed");
            return Ok(ExitCode::from(2));
        }
    };
    let configured = Configured::of(&config);
    let process_policy = process_policy(&config);
    let policy = config.shield;
    let iface = match (&policy, &args.iface) {
        (Some(_), None) => {
            error!("the policy has a shield section: --iface is required");
            return Ok(ExitCode::from(2));
        }
        (_, iface) => iface.clone(),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing signal handlers")?;

    let fanout = Arc::new(Fanout::new());
    // Bound before anything is loaded: an address in use changes nothing.
    let health = Health::new(&args.run_dir);
    let metrics = match args.metrics {
        Some(addr) => {
            let access = Access {
                token: args
                    .metrics_token_file
                    .as_deref()
                    .map(Access::token_from_file)
                    .transpose()?,
                hosts: args.metrics_allow_host.clone(),
            };
            Some(Metrics::start(
                addr,
                access,
                health.clone(),
                args.pin_dir.clone(),
                args.source().to_path_buf(),
                fanout.clone(),
            )?)
        }
        None => None,
    };
    let mut reasons = Reasons::new();
    let loader = Loader::builder()
        .pin_root(&args.pin_dir)
        .audit_sink(sink.clone())
        .replace_stale_pins(args.replace_stale_pins)
        .build()?;
    let subscription = fanout.subscribe("events-writer", EVENTS_QUEUE, Overflow::DropOldest);
    let mut events_out = args
        .events
        .as_deref()
        .map(|p| EventsOut::open(p, args.events_max_bytes))
        .transpose()?;
    // The Sentinel first: it registers this process as the agent before anything else is
    // loaded, and everything loaded after is put under its protection.
    let mut guard = match &config.sentinel {
        Some(policy) => start_sentinel(&loader, policy)?,
        None => None,
    };

    let processes = start_processes(&loader, process_policy, &mut reasons);
    let mut process_losses = (0u64, 0u64);

    let mut running = match (&policy, &iface) {
        (Some(policy), Some(iface)) => match start_shield(&loader, policy, iface) {
            Ok(running) => Some(running),
            Err(e @ BpfError::StalePin { .. }) => {
                return Err(stale_pin(&e, &args.pin_dir));
            }
            Err(e) => {
                warn!("shield disabled, traffic on {iface} is not filtered: {e}");
                reasons.insert("shield", format!("traffic on {iface} is not filtered: {e}"));
                None
            }
        },
        _ => None,
    };
    let sources = policy.as_ref().map(SourceStat::of);
    let mut feeds = FeedWatch::of(policy.as_ref());
    // Fetched feeds are enforced from their cached copies already; downloads start now.
    let observer = metrics
        .clone()
        .map(|m| -> ironclad_agent::feeds::FetchObserver {
            std::sync::Arc::new(move |name: &str, ok: bool| m.fetch_result(name, ok))
        });
    let fetcher = FeedFetcher::start(policy.as_ref(), stop.clone(), observer)
        .context("starting the feed fetcher")?;
    // With a confirmation window the applied policy is kept, to come back to; otherwise
    // it is in the kernel now and a reload compiles the file again.
    let mut rollout = match args.confirm_within {
        Some(window) => Some(ConfirmWindow::start(window, &args.run_dir, DAEMON)?),
        None => None,
    };
    let mut current = Applied::default();
    if rollout.is_some() {
        current = Applied {
            shield: policy.clone(),
            egress: config.egress.clone(),
        };
    }
    drop(policy);
    let mut tls = config
        .tls
        .as_ref()
        .and_then(|t| start_tls(&loader, t, &mut reasons));
    let cgroup = match &args.cgroup {
        Some(path) => path.clone(),
        None => ironclad_core::identity::cgroup2_root().context("finding the cgroup v2 root")?,
    };
    let mut egress = config
        .egress
        .as_ref()
        .and_then(|e| start_egress(&loader, e, &cgroup, &mut reasons));
    let mut observer = config
        .telemetry
        .as_ref()
        .filter(|t| t.dns || t.bandwidth)
        .and_then(|t| start_telemetry(&loader, t, &cgroup, &mut reasons));
    if let Some(r) = &running {
        guard_object(&mut guard, r.shield.object());
    }
    if let Some(e) = &egress {
        guard_object(&mut guard, e.firewall.object());
    }
    if let Some(m) = &metrics {
        m.policy_applied(sources);
    }
    // What runs now, for the health report and the metrics (after start and reloads).
    macro_rules! running_features {
        () => {
            Features {
                shield: running.as_ref(),
                egress: egress.as_ref(),
                tls: tls.as_ref(),
                observer: observer.as_ref(),
                guard: guard.as_ref(),
            }
        };
    }
    let mut reader = event_reader(&running_features!(), &fanout, processes.as_ref());
    let states = feature_states(&configured, running_features!(), &reasons);
    let down: Vec<String> = states
        .iter()
        .filter(|(_, f)| !f.up)
        .map(|(name, f)| format!("{name} ({})", f.detail))
        .collect();
    publish_features(&health, metrics.as_ref(), states);
    accept(args, &audit, first_accepted.as_ref());
    release_memory();
    if down.is_empty() {
        info!("ready");
    } else {
        // Fail-open is a choice the policy did not make: say it where operators look.
        error!(
            "not ready: the policy is NOT fully enforced; configured but not running: {}",
            down.join("; ")
        );
    }

    while !stop.load(Ordering::Relaxed) {
        health.losses("audit-log", sink.lost());
        if let Some(stats) = processes.as_ref().and_then(|p| p.stats().ok()) {
            let now = (stats.overflows, stats.lost);
            if now != process_losses {
                // Events of these processes carry no process block: say so.
                warn!(
                    "process cache: {} processes not cached (full: {} held, {} live), {} kernel records lost",
                    stats.overflows, stats.cached, stats.live, stats.lost
                );
                fanout.publish(&Event::ProcessCache(ProcessCacheNotice {
                    time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
                    overflows: stats.overflows,
                    lost: stats.lost,
                    cached: stats.cached,
                    live: stats.live,
                }));
                process_losses = now;
            }
            health.losses("process-cache", stats.overflows);
            health.losses("process-records", stats.lost);
        }
        health.beat();
        match &reader {
            Some(r) => {
                // Waits for a ring that wakes its reader, then takes what every ring
                // holds (TLS records are written without a wakeup, one per call).
                if let Err(e) = r.poll(Duration::from_millis(100)) {
                    warn!("reading events: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
        if let Some(o) = observer.as_mut() {
            report_bandwidth(o, &fanout, processes.as_ref(), false);
        }
        write_events(&subscription, &mut events_out, &health);
        if fetcher.take_update() {
            reload.store(true, Ordering::Relaxed);
        }
        if let Some(changed) = feeds.changed() {
            info!(
                "feed `{changed}` changed: reloading {}",
                args.source().display()
            );
            reload.store(true, Ordering::Relaxed);
        }
        if let Some(outcome) = rollout.as_mut().and_then(ConfirmWindow::poll) {
            match outcome {
                WindowOutcome::Confirmed => {
                    info!("the new policy is confirmed");
                    policy_record(
                        loader.audit_log(),
                        args,
                        AuditOutcome::Ok,
                        "confirmed".to_string(),
                    );
                }
                WindowOutcome::Expired(previous) => {
                    let restored = roll_back(&previous, running.as_ref(), egress.as_mut());
                    if restored {
                        warn!(
                            "the new policy was not confirmed in time: the previous policy is back"
                        );
                    } else {
                        error!("the new policy was not confirmed in time, and the rollback failed");
                    }
                    policy_record(
                        loader.audit_log(),
                        args,
                        if restored {
                            AuditOutcome::Ok
                        } else {
                            AuditOutcome::Failed
                        },
                        "not confirmed in time: rolled back to the previous policy".to_string(),
                    );
                    if let Some(m) = &metrics {
                        m.rolled_back(previous.shield.as_ref().map(SourceStat::of));
                    }
                    current = previous;
                    release_memory();
                }
            }
        }
        if reload.swap(false, Ordering::Relaxed) {
            info!("reloading {}", args.source().display());
            match load_policy(args, &audit) {
                Err(diagnostics) => {
                    eprintln!("{diagnostics}");
                    warn!("reload refused: the new policy is invalid; the old rules stay");
                    if let Some(m) = &metrics {
                        m.reload_failed();
                    }
                }
                Ok(LoadedPolicy {
                    config: new_config,
                    accepted: new_accepted,
                }) => {
                    let mut failed = false;
                    let mut started_or_stopped = false;
                    let configured = Configured::of(&new_config);
                    let mut next = current.clone();
                    if let Some(r) = rollout.as_mut() {
                        if new_config.shield.is_some() {
                            next.shield.clone_from(&new_config.shield);
                        }
                        if new_config.egress.is_some() {
                            next.egress.clone_from(&new_config.egress);
                        }
                        let waited = r.is_pending();
                        let deadline = r.provisional(current.clone(), args.source());
                        let until = humantime::format_rfc3339_seconds(deadline);
                        info!(
                            "applying provisionally: run `full_firewall confirm` before {until} or the {} policy comes back",
                            if waited { "last confirmed" } else { "previous" }
                        );
                        policy_record(
                            loader.audit_log(),
                            args,
                            AuditOutcome::Ok,
                            format!("applied provisionally, confirm before {until}"),
                        );
                    }
                    let new_sources = new_config.shield.as_ref().map(SourceStat::of);
                    if new_config.shield.is_some() {
                        feeds = FeedWatch::of(new_config.shield.as_ref());
                        fetcher.replace(new_config.shield.as_ref());
                    }
                    match (egress.as_mut(), &new_config.egress) {
                        (Some(e), Some(new_egress)) => match e.firewall.replace(new_egress) {
                            Ok(report) => info!("egress policy reloaded: {} rules", report.rules),
                            Err(err) => {
                                failed = true;
                                warn!("egress reload failed, the old policy stays: {err}");
                            }
                        },
                        (None, Some(new_egress)) => {
                            egress = start_egress(&loader, new_egress, &cgroup, &mut reasons);
                            started_or_stopped |= egress.is_some();
                            if let Some(e) = &egress {
                                guard_object(&mut guard, e.firewall.object());
                            }
                        }
                        (Some(_), None) => info!("reload: the new policy has no egress section; the egress policy is left as it is"),
                        (None, None) => {}
                    }
                    match (&tls, &new_config.tls) {
                        (Some(t), Some(new_tls)) => match t.monitor.configure(new_tls) {
                            Ok(()) => info!("tls scope reloaded"),
                            Err(e) => {
                                failed = true;
                                warn!("tls reload failed: {e}");
                            }
                        },
                        (None, Some(new_tls)) => {
                            tls = start_tls(&loader, new_tls, &mut reasons);
                            started_or_stopped |= tls.is_some();
                        }
                        (Some(_), None) => {
                            // Its last records first: the reader goes with it below.
                            if let Some(r) = &reader {
                                let _ = r.drain();
                            }
                            tls = None;
                            started_or_stopped = true;
                            info!("tls capture stopped: no tls section any more");
                        }
                        (None, None) => {}
                    }
                    match new_config.shield {
                        None => info!("reload: the new policy has no shield section; the shield is left as it is"),
                        Some(new_policy) => match (&running, &iface) {
                    (Some(r), _) => match r.shield.replace(&new_policy) {
                        Ok(report) => info!(
                            "reloaded: {} added, {} changed, {} removed, {} kept, {} prefixes edited in place",
                            report.added, report.changed, report.removed, report.kept, report.in_place
                        ),
                        Err(e) => {
                            failed = true;
                            warn!("reload failed, the old rules stay: {e}");
                        }
                    },
                    (None, Some(iface)) => {
                        running = start_shield(&loader, &new_policy, iface)
                            .map_err(|e| {
                                warn!("shield still disabled: {e}");
                                reasons.insert(
                                    "shield",
                                    format!("traffic on {iface} is not filtered: {e}"),
                                );
                            })
                            .ok();
                        started_or_stopped |= running.is_some();
                        if let Some(r) = &running {
                            guard_object(&mut guard, r.shield.object());
                        }
                    }
                    (None, None) => {
                        failed = true;
                        warn!("reload refused: --iface was not given");
                    }
                        },
                    }
                    if started_or_stopped {
                        // The old reader goes first: two readers of one ring would
                        // split its records between them.
                        drop(reader.take());
                        reader = event_reader(&running_features!(), &fanout, processes.as_ref());
                    }
                    if rollout.is_some() {
                        current = next;
                    }
                    release_memory();
                    if !failed {
                        accept(args, &audit, new_accepted.as_ref());
                    }
                    if let Some(m) = &metrics {
                        if failed {
                            m.reload_failed();
                        } else {
                            m.policy_applied(new_sources);
                        }
                    }
                    publish_features(
                        &health,
                        metrics.as_ref(),
                        feature_states(&configured, running_features!(), &reasons),
                    );
                }
            }
        }
    }
    // Every ring's last records, then the reader goes before anything is detached or
    // stopped (it holds their ring buffers open).
    if let Some(r) = reader.take() {
        let _ = r.drain();
        write_events(&subscription, &mut events_out, &health);
    }
    if let Some(t) = tls.take() {
        t.monitor.stop();
    }
    if let Some(mut o) = observer.take() {
        report_bandwidth(&mut o, &fanout, processes.as_ref(), true);
        write_events(&subscription, &mut events_out, &health);
    }
    if let Some(e) = egress.take() {
        drop(e);
        if args.detach_on_exit {
            let removed = loader.remove_pins(EgressFirewall::OBJECT)?;
            info!("egress firewall detached; {removed} pins removed");
        } else {
            info!("stopping; the egress policy stays pinned");
        }
    }

    if let Some(r) = running.take() {
        if args.detach_on_exit {
            r.attachment.detach()?;
            drop(r.shield);
            let removed = loader.remove_pins(Shield::OBJECT)?;
            info!("detached; {removed} pins removed");
        } else {
            info!(
                "stopping; enforcement stays pinned at {}",
                r.attachment
                    .pin_path()
                    .map_or_else(String::new, |p| p.display().to_string())
            );
        }
    }
    if let Some(g) = guard.take() {
        if args.detach_on_exit {
            g.sentinel.stop()?;
            info!("sentinel stopped; its pins removed");
        } else {
            info!("stopping; the sentinel stays pinned and keeps protecting");
        }
    }
    health.remove();
    Ok(ExitCode::SUCCESS)
}

/// Gives the memory a reload's compilation used back to the system. glibc keeps freed
/// heap memory (a million-prefix policy leaves tens of MiB behind every reload) until
/// asked; `malloc_trim(3)` has no safe wrapper in any maintained crate, hence the FFI.
fn release_memory() {
    // SAFETY: malloc_trim only walks glibc's own heap metadata under its locks; it takes
    // no pointers from us and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The start-up error for a stale pin: what it is and the two ways out.
fn stale_pin(e: &BpfError, pin_dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{e}\nnothing was enforced. Clear Ironclad's pins with `full_firewall detach --pin-dir {}` \
         (enforcement stops until the next start), or start with --replace-stale-pins \
         (the stale map's rules and counters are lost)",
        pin_dir.display()
    )
}
