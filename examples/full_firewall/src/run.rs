//! `run`: enforce a policy in the foreground.
//!
//! Start-up: compile the policy (bad input: exit 2, nothing in the kernel changes; on a
//! cold start the kernel verifies the Shield's program meanwhile, pinned only once the
//! policy is valid), load the Shield (adopting pinned maps), make the maps equal the
//! policy, then adopt the pinned link or attach and pin a new one. If the Shield cannot
//! load or attach (old kernel, missing interface, XDP refused) the daemon says so and
//! keeps running its other features: it fails open, traffic is untouched.
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
use ironclad_agent::confirm::{ConfirmWindow, WindowOutcome};
use ironclad_agent::features::{Features, Settings, Snapshot};
use ironclad_agent::feeds::{FeedFetcher, FeedWatch};
use ironclad_agent::health::{FeatureState, Health};
use ironclad_agent::AgentError;
use ironclad_bpf::{AuditAction, AuditLog, BpfError, Outcome as AuditOutcome};
use ironclad_bpf::{JsonLinesFile, Loader, DEFAULT_PIN_ROOT};
use ironclad_events::{Event, Fanout, Overflow, ProcessCacheNotice, Subscription};
use ironclad_policy::bundle::{outside_paths, verify_bundle, Accepted, TrustedKey};
use ironclad_policy::config::{compile_file_with_rules, CompiledConfig};
use ironclad_policy::runtime::{RuleSection, RuntimeRule};
use ironclad_policy::shield::Mode;
use ironclad_policy::sources::SourceCache;
use tracing::{debug, error, info, warn};

use crate::api::{rule_entries, Api, Change, Store, StoreFileChange};
use crate::metrics::{Access, Metrics, SourceStat};
use crate::notify::Notifier;
use crate::rollout::{DAEMON, DEFAULT_RUN_DIR};
use ironclad_api::v1::{ConfirmResponse, RuleEntry};

/// Events queued for the `--events` writer between two drains (every 100 ms at most):
/// 8192 of them is 80,000 events a second before the oldest are dropped (and counted),
/// in about 2 MiB; the kernel's ring buffers hold more behind it.
const EVENTS_QUEUE: usize = 8192;

/// What the watch calls the policy file (`--watch-config`).
const POLICY_FILE: &str = "the policy file";

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
    /// An interface the Shield attaches to (needed when the policy has a `shield`
    /// section). Repeat it for several, or give `auto`: the interfaces of the network
    /// namespace's IPv4 and IPv6 default routes, found at start.
    #[arg(long, value_name = "IFACE|auto")]
    iface: Vec<String>,
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
    /// one) and a new file starts. 0: never. SIGHUP reopens it (for logrotate).
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    events_max_bytes: u64,
    /// Rotate the audit log at this size, as the events file. 0: never. SIGHUP
    /// reopens it.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    audit_max_bytes: u64,
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
    /// How often the dashboard's history (`/api/history`: rates over the last hour,
    /// kept in the daemon) samples the counters.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    metrics_history_interval: Duration,
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
    /// Reload when the policy file changes (checked this often, e.g. `2s`): a
    /// ConfigMap update reaches the daemon without a restart, validated like SIGHUP (an
    /// invalid file leaves the old rules in force). Feeds with `refresh` are watched
    /// either way.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "bundle")]
    watch_config: Option<Duration>,
    /// Report a start or reload step that runs longer than this (e.g. `500ms`): in the
    /// log (`busy 1.2 s: full_firewall.reload > ironclad.shield.write ...`, then every
    /// 2 s) and in `status`, where the daemon counts as busy, not hung.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1s")]
    progress_after: Duration,
    /// Exit with an error when a feature the policy configures cannot start, instead of
    /// running without it (failing open, not ready).
    #[arg(long)]
    require_all: bool,
    /// Serve the control API (gRPC: status, rules, events) on this Unix socket, made
    /// mode 0600 and answered for root only (default: `RUN_DIR/api.sock`).
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// Do not serve the control API.
    #[arg(long, conflicts_with = "api_socket")]
    no_api: bool,
    /// Push every event to a collector at this address as JSON lines over TCP
    /// (reconnecting by itself; a slow or absent collector loses events, counted, and
    /// never slows enforcement).
    #[arg(long, value_name = "HOST:PORT")]
    forward_tcp: Option<String>,
    /// Also serve the control API on this TCP address, with mutual TLS only (clients
    /// need a certificate from `--api-tls-client-ca`).
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["api_tls_cert", "api_tls_key", "api_tls_client_ca"], conflicts_with = "no_api")]
    api_listen: Option<std::net::SocketAddr>,
    /// The TCP listener's certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "api_listen")]
    api_tls_cert: Option<PathBuf>,
    /// The TCP listener's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "api_listen")]
    api_tls_key: Option<PathBuf>,
    /// The CA whose client certificates the TCP listener accepts (PEM).
    #[arg(long, value_name = "FILE", requires = "api_listen")]
    api_tls_client_ca: Option<PathBuf>,
}

impl RunArgs {
    /// The policy file or the bundle directory, for messages.
    fn source(&self) -> &Path {
        self.bundle
            .as_deref()
            .or(self.config.as_deref())
            .unwrap_or(Path::new("(none)"))
    }

    /// The feed files to watch, and the policy file with `--watch-config`.
    fn watch(&self, shield: Option<&ironclad_policy::shield::CompiledShield>) -> FeedWatch {
        let feeds = FeedWatch::of(shield);
        match (self.watch_config, &self.config) {
            (Some(every), Some(config)) => feeds.with_file(POLICY_FILE, config, every),
            _ => feeds,
        }
    }

    fn accepted_path(&self) -> PathBuf {
        self.state_dir.join("bundle-accepted.json")
    }

    /// The control API's socket, unless `--no-api`.
    fn api_socket(&self) -> Option<PathBuf> {
        if self.no_api {
            return None;
        }
        Some(
            self.api_socket
                .clone()
                .unwrap_or_else(|| self.run_dir.join(crate::api::SOCKET_NAME)),
        )
    }
}

/// A compiled policy, and for a bundle what to remember once it is applied.
struct LoadedPolicy {
    config: CompiledConfig,
    accepted: Option<Accepted>,
}

/// Why a policy was refused: the whole text, for the terminal and the log, and what a
/// caller of the control API (`ApplyPolicy`, a rule change) may be told.
pub(crate) struct Refused {
    /// Everything the compiler said.
    pub(crate) text: String,
    /// The same, but for the files the caller did not send: their messages quote the
    /// line they found, and a policy that names `/etc/shadow` as a feed must not read
    /// it to the caller line by line. Those say where, not what.
    pub(crate) caller: String,
}

impl Refused {
    fn plain(text: String) -> Self {
        Self {
            caller: text.clone(),
            text,
        }
    }

    /// A policy that does not compile, `before` its messages. `sent` is what the
    /// caller sent: the policy file, or the directory of a bundle.
    fn invalid(before: &str, e: &ironclad_policy::error::ConfigError, sent: &Path) -> Self {
        let caller: Vec<String> = e
            .diagnostics
            .iter()
            .map(|d| {
                // A file that cannot be read (or is not a file) says so without
                // quoting anything.
                if d.path.starts_with(sent) || d.is_whole_file() {
                    d.to_string()
                } else {
                    format!(
                        "{}:{}:{}: not valid (its message quotes the file, so it is in the daemon's log only)",
                        d.path.display(),
                        d.line,
                        d.column
                    )
                }
            })
            .collect();
        Self {
            text: format!("{before}{e}"),
            caller: format!("{before}{}", caller.join("\n")),
        }
    }
}

/// Whether the policy file names a Shield (a line `shield:` at the top level), with
/// `--iface` given: a guess (no YAML parse) of whether to load the Shield's program
/// while the policy compiles. A wrong guess costs time, never correctness: the program
/// loaded ahead is pinned only when the compiled policy has a Shield, and released
/// otherwise. A bundle is not guessed at (its policy is read once it is verified).
fn shield_likely(args: &RunArgs) -> bool {
    if args.iface.is_empty() || args.bundle.is_some() {
        return false;
    }
    args.config.as_deref().is_some_and(|path| {
        std::fs::read_to_string(path)
            .is_ok_and(|text| text.lines().any(|l| l.starts_with("shield:")))
    })
}

/// [`load_policy`], with the Shield's program loaded ahead through `early` on a second
/// thread meanwhile ([`Loader::preload`]): with a 1M-line feed the start took 450 ms
/// instead of 558 here, the compile and the kernel's verification side by side.
fn load_policy_preloading(
    args: &RunArgs,
    audit: &AuditLog,
    sources: &SourceCache,
    rules: &[RuntimeRule],
    early: Option<&Loader>,
) -> std::result::Result<LoadedPolicy, Refused> {
    let (loaded, preload) = std::thread::scope(|scope| {
        let preload = early.and_then(|loader| {
            std::thread::Builder::new()
                .name("shield-preload".into())
                .spawn_scoped(scope, move || {
                    loader.preload(ironclad_bpf::object::shield())
                })
                .ok()
        });
        let loaded = load_policy(args, audit, sources, rules);
        (loaded, preload.map(std::thread::ScopedJoinHandle::join))
    });
    match preload {
        Some(Ok(Ok(true))) => {
            tracing::debug!("the Shield's program was verified while the policy compiled");
        }
        Some(Ok(Err(e))) => {
            tracing::debug!("loading the Shield ahead failed ({e}); it loads after the compile");
        }
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        Some(Ok(Ok(false))) | None => {}
    }
    loaded
}

/// Reads the policy: the file, or the verified copy of a signed bundle (every accept and
/// refusal of a bundle goes to the audit log). Feed files
/// that did not change since the last load come from `sources` (not read again, and
/// shared with the policy in force).
fn load_policy(
    args: &RunArgs,
    audit: &AuditLog,
    sources: &SourceCache,
    rules: &[RuntimeRule],
) -> std::result::Result<LoadedPolicy, Refused> {
    let _span =
        tracing::info_span!("ironclad.policy.compile", policy = %args.source().display()).entered();
    let (path, accepted) = match (&args.bundle, &args.trusted_key) {
        (Some(dir), Some(key)) => {
            let record = |message: &str| {
                policy_record(
                    audit,
                    args,
                    AuditOutcome::Refused,
                    format!("bundle refused: {message}"),
                );
            };
            let refuse = |message: String| {
                record(&message);
                Refused::plain(format!("{}: bundle refused: {message}", dir.display()))
            };
            let key = TrustedKey::from_file(key).map_err(|e| refuse(e.to_string()))?;
            let last = Accepted::load(&args.accepted_path()).map_err(|e| refuse(e.to_string()))?;
            let staging = args.state_dir.join("bundle");
            let verified = verify_bundle(dir, &key, last.as_ref(), &staging)
                .map_err(|e| refuse(e.to_string()))?;
            let compiled = compile_file_with_rules(&verified.policy, Some(sources), rules)
                .map_err(|e| {
                    record(&format!("its policy is invalid:\n{e}"));
                    Refused::invalid(
                        &format!(
                            "{}: bundle refused: its policy is invalid:\n",
                            dir.display()
                        ),
                        &e,
                        &staging,
                    )
                })?;
            let outside = outside_paths(&compiled, &args.state_dir.join("bundle"));
            if !outside.is_empty() {
                let files: Vec<String> = outside
                    .iter()
                    .map(|(f, why)| format!("{} reads {} ({why})", f.what, f.path.display()))
                    .collect();
                return Err(refuse(format!(
                    "its policy reads files that are not in the bundle: {}",
                    files.join("; ")
                )));
            }
            (compiled, Some(verified.accepted))
        }
        _ => {
            let Some(path) = &args.config else {
                return Err(Refused::plain("give --config or --bundle".to_string()));
            };
            (
                compile_file_with_rules(path, Some(sources), rules)
                    .map_err(|e| Refused::invalid("", &e, path))?,
                None,
            )
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

/// Tells the health report, the metrics listener and `status` what runs: the features'
/// states and the stateful firewall's live rules by name.
fn publish_features(
    health: &Health,
    metrics: Option<&Metrics>,
    features: &Features<'_>,
    states: BTreeMap<String, FeatureState>,
    run_dir: &Path,
) {
    let labels = features
        .firewall()
        .map(ironclad_bpf::Firewall::rule_labels)
        .unwrap_or_default();
    if let Err(e) = crate::status::write_firewall_rules(run_dir, &labels) {
        warn!(
            "writing the firewall's rule names to {}: {e}",
            run_dir.join(crate::status::FIREWALL_RULES).display()
        );
    }
    if let Some(m) = metrics {
        for (name, f) in &states {
            m.program(name, f.up, f.detail.clone());
        }
        m.firewall_rules(labels);
    }
    health.features(states);
    health.beat();
}

/// Tells the metrics listener and `status` which egress rules the kernel now holds
/// (their names and text).
fn egress_applied(
    metrics: Option<&Metrics>,
    egress: Option<&ironclad_policy::egress::CompiledEgress>,
    run_dir: &Path,
) {
    if let Some(m) = metrics {
        m.egress_rules(egress);
    }
    if let Err(e) = crate::status::write_egress_rules(run_dir, egress) {
        warn!(
            "writing the egress rules' names to {}: {e}",
            run_dir.join(crate::status::EGRESS_RULES).display()
        );
    }
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

    /// Opens `path` to append, never through a symbolic link and only as a regular
    /// file: the daemon runs as root, and a link planted where the events go would
    /// have it append to whatever file the link names.
    fn open_file(path: &Path) -> Result<(Box<dyn Write>, u64)> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = File::options()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => anyhow::anyhow!(
                    "opening {}: a symbolic link (the events file is never written through one)",
                    path.display()
                ),
                _ => anyhow::Error::new(e).context(format!("opening {}", path.display())),
            })?;
        let meta = file
            .metadata()
            .with_context(|| format!("opening {}", path.display()))?;
        if !meta.is_file() {
            anyhow::bail!("opening {}: not a regular file", path.display());
        }
        Ok((Box::new(BufWriter::new(file)), meta.len()))
    }

    fn name(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "stdout".to_string(), |p| p.display().to_string())
    }

    /// Writes on to whatever file is at the path now (the old one flushed).
    fn reopen(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let _ = self.out.flush();
        match Self::open_file(&path) {
            Ok((out, written)) => {
                self.out = out;
                self.written = written;
            }
            Err(e) => warn!("reopening the events file {}: {e:#}", path.display()),
        }
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
    // Before anything is touched: a second daemon on the same pins or run directory
    // would replace the live one's programs and, exiting, delete its control socket.
    let _instance = match crate::instance::lock(&args.pin_dir, &args.run_dir)? {
        Ok(lock) => lock,
        Err(held) => {
            error!("{held}");
            return Ok(ExitCode::from(1));
        }
    };
    map_large_buffers();
    let sink = Arc::new(JsonLinesFile::open(&args.audit_log)?.rotate_at(args.audit_max_bytes));
    // The start (compiling a large policy, writing it to the kernel) is reported while
    // it runs, as a reload is.
    let start_span = tracing::info_span!("full_firewall.start").entered();
    let audit = AuditLog::new(sink.clone());
    // Feed files read once and shared between the policies of successive reloads.
    let sources = SourceCache::new();
    // Rules added through the control API before: enforced from the start, with the
    // policy file's.
    let mut store = match Store::load(&args.state_dir) {
        Ok(store) => store,
        Err(e) => {
            crate::logging::diagnostics(&format!("{e:#}"));
            error!("the control API's rules cannot be read; nothing was changed");
            return Ok(ExitCode::from(2));
        }
    };
    let fanout = Arc::new(Fanout::new());
    // The loader's records go to the audit log, and its repairs (a link detached or
    // replaced from outside, put back) to the event stream too.
    let loader_sink: Arc<dyn ironclad_bpf::AuditSink> = Arc::new(ironclad_bpf::TeeSink::new(vec![
        sink.clone(),
        Arc::new(ironclad_bpf::FanoutSink::only(
            fanout.clone(),
            &[AuditAction::Repair],
        )),
    ]));
    let loader_of = |mount_bpffs: bool| {
        Loader::builder()
            .pin_root(&args.pin_dir)
            .audit_sink(loader_sink.clone())
            .replace_stale_pins(args.replace_stale_pins)
            .mount_bpffs(mount_bpffs)
            .build()
    };
    // On a cold start of a policy with a Shield, the kernel verifies the Shield's
    // program while the policy compiles, on the other core. Nothing is pinned until the
    // policy has compiled, so an invalid one still changes nothing; nor is bpffs mounted
    // for it.
    let early = shield_likely(args).then(|| loader_of(false).ok()).flatten();
    let loaded = load_policy_preloading(args, &audit, &sources, &store.rules(), early.as_ref());
    let LoadedPolicy {
        config,
        accepted: first_accepted,
    } = match loaded {
        Ok(loaded) => loaded,
        Err(refused) => {
            crate::logging::diagnostics(&refused.text);
            error!("the policy is invalid; nothing was changed");
            return Ok(ExitCode::from(2));
        }
    };
    let ifaces = match crate::ifaces::resolve(&args.iface) {
        Ok(ifaces) => ifaces,
        Err(e) => {
            error!("{e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if config.shield.is_none() {
        // Guessed wrong: the Shield's program loaded ahead goes.
        if let Some(loader) = &early {
            loader.discard_preloaded();
        }
    }
    if config.shield.is_some() && ifaces.is_empty() {
        error!("the policy has a shield section: --iface is required");
        return Ok(ExitCode::from(2));
    }
    if args.iface.iter().any(|i| i == crate::ifaces::AUTO) {
        info!("--iface auto: the Shield attaches to {}", ifaces.join(", "));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing signal handlers")?;

    // Bound before anything is loaded: an address in use changes nothing.
    let health = Health::new(&args.run_dir);
    crate::progress::watch(health.clone(), args.progress_after);
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
                crate::history::History::restore_or_empty(
                    &args.run_dir.join(crate::history::HISTORY_FILE),
                    args.metrics_history_interval,
                ),
            )?)
        }
        None => None,
    };
    let api_socket = args.api_socket();
    let api_listener = api_socket.as_deref().map(Api::bind).transpose()?;
    let api_tcp = match (
        args.api_listen,
        &args.api_tls_cert,
        &args.api_tls_key,
        &args.api_tls_client_ca,
    ) {
        (Some(addr), Some(cert), Some(key), Some(client_ca)) => Some(Api::bind_tcp(
            addr,
            ironclad_api::server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
            },
        )?),
        _ => None,
    };
    let loader = match early {
        Some(loader) => loader,
        None => loader_of(true)?,
    };
    let subscription = fanout.subscribe("events-writer", EVENTS_QUEUE, Overflow::DropOldest);
    let forwarder = args
        .forward_tcp
        .as_deref()
        .map(|addr| crate::forward::Forwarder::start(addr, &fanout))
        .transpose()?;
    let mut events_out = args
        .events
        .as_deref()
        .map(|p| EventsOut::open(p, args.events_max_bytes))
        .transpose()?;
    let cgroup = match &args.cgroup {
        Some(path) => path.clone(),
        None => match ironclad_core::identity::cgroup2_root() {
            Ok(root) => root,
            // Only the identity firewall and telemetry attach to a cgroup. Without one
            // mounted (`ip netns exec` mounts a fresh /sys, hiding /sys/fs/cgroup) the
            // other features run; those two would fail naming the path.
            Err(e) if config.egress.is_none() && config.telemetry.is_none() => {
                tracing::debug!("no cgroup v2 root ({e}); no feature of this policy needs one");
                std::path::PathBuf::from("/sys/fs/cgroup")
            }
            Err(e) => return Err(anyhow::Error::from(e).context("finding the cgroup v2 root")),
        },
    };
    let mut settings = Settings::new(cgroup).require_all(args.require_all);
    for iface in &ifaces {
        settings = settings.iface(iface);
    }
    // Every feature the policy configures; one that cannot start is down with its
    // reason (the daemon fails open and is not ready), except a required Sentinel and
    // a stale pin, which stop it here.
    let mut features = match Features::start(&loader, settings, &config, fanout.clone()) {
        Ok(features) => features,
        Err(AgentError::Bpf { source, .. }) if matches!(*source, BpfError::StalePin { .. }) => {
            return Err(stale_pin(&source, &args.pin_dir))
        }
        Err(e) if args.require_all => {
            return Err(anyhow::Error::from(e)
                .context("a feature the policy configures cannot start (--require-all)"))
        }
        Err(e) => return Err(e.into()),
    };
    let mut process_losses = (0u64, 0u64);
    // What the features attached is checked against the kernel this often (and put
    // back when it was undone from outside): status, /readyz and GetStatus report
    // what the kernel held at most this long ago.
    const VERIFY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    let mut verified = std::time::Instant::now();

    let mut feeds = args.watch(config.shield.as_ref());
    // Fetched feeds are enforced from their cached copies already; downloads start now.
    let observer = metrics
        .clone()
        .map(|m| -> ironclad_agent::feeds::FetchObserver {
            std::sync::Arc::new(move |name: &str, ok: bool| m.fetch_result(name, ok))
        });
    let fetcher = FeedFetcher::start(config.shield.as_ref(), stop.clone(), observer)
        .context("starting the feed fetcher")?;
    // With a confirmation window the applied policy is kept, to come back to; otherwise
    // it is in the kernel now and a reload compiles the file again.
    let mut rollout = match args.confirm_within {
        Some(window) => Some(ConfirmWindow::start(window, &args.run_dir, DAEMON)?),
        None => None,
    };
    let mut current = Snapshot::default();
    // An `ApplyPolicy` call waiting for this turn's reload, and the file to put back if
    // a provisional policy it applied is not confirmed.
    let mut pending_apply: Option<PendingApply> = None;
    let mut rollback_undo: Option<Undo> = None;
    if rollout.is_some() {
        current = Snapshot::of(&config);
    }
    if let Some(m) = &metrics {
        m.policy_applied(config.shield.as_ref().map(SourceStat::of));
        m.features_started(
            features
                .states()
                .iter()
                .filter(|(_, f)| f.up)
                .map(|(n, _)| n),
        );
    }
    egress_applied(metrics.as_ref(), config.egress.as_ref(), &args.run_dir);
    let policy_name = args.source().display().to_string();
    let api = match (api_listener, &api_socket) {
        (Some(listener), Some(socket)) => Some(Api::start(
            listener,
            api_tcp,
            socket,
            fanout.clone(),
            &args.pin_dir,
            &args.run_dir,
            args.source(),
        )?),
        _ => None,
    };
    if let Some(api) = &api {
        api.publish_rules(rule_entries(&config, &store, &policy_name));
    }
    drop(config);
    drop(start_span);
    let mut notifier = Notifier::from_env();
    let states = features.states();
    notifier.features(&states);
    let down: Vec<String> = states
        .iter()
        .filter(|(_, f)| !f.up)
        .map(|(name, f)| format!("{name} ({})", f.detail))
        .collect();
    // What the last periodic check published (or the start did).
    let mut last_checked = states.clone();
    publish_features(&health, metrics.as_ref(), &features, states, &args.run_dir);
    accept(args, &audit, first_accepted.as_ref());
    release_memory();
    // Started: what it never does from now on is taken away in every thread.
    match crate::privileges::deny_unneeded_calls() {
        Ok(n) => debug!("system-call filter: {n} calls denied in every thread"),
        Err(e) => warn!("the daemon's own system-call filter is not installed: {e}"),
    }
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
        if let Some(f) = &forwarder {
            health.losses("forward-tcp", f.lost());
        }
        if let Some(stats) = features.processes().and_then(|p| p.stats().ok()) {
            let now = (stats.overflows, stats.lost);
            if now != process_losses {
                // Events of these processes carry no process block: say so.
                warn!(
                    "process cache: {} processes not cached (full: {} held, {} live), {} kernel records lost",
                    stats.overflows, stats.cached, stats.live, stats.lost
                );
                fanout.publish(&Event::ProcessCache({
                    let mut ev = ProcessCacheNotice::default();
                    ev.time =
                        humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
                    ev.overflows = stats.overflows;
                    ev.lost = stats.lost;
                    ev.cached = stats.cached;
                    ev.live = stats.live;
                    ev
                }));
                process_losses = now;
            }
            health.losses("process-cache", stats.overflows);
            health.losses("process-records", stats.lost);
        }
        health.beat();
        notifier.beat();
        // Waits for a ring that wakes its reader, then takes what every ring holds
        // (TLS records are written without a wakeup, one per call).
        poll(&features, api.as_ref());
        if let Some(api) = &api {
            while let Some(change) = api.next_change() {
                let change = match change {
                    Change::Apply {
                        request,
                        by,
                        received,
                        reply,
                    } => {
                        // Written now, applied by this turn's reload, answered there.
                        match prepare_apply(args, &sources, &store, request) {
                            Ok((undo, warnings)) => {
                                info!("control API: a new policy from {by}");
                                pending_apply = Some(PendingApply {
                                    reply,
                                    received,
                                    by,
                                    undo,
                                    warnings,
                                });
                                reload.store(true, Ordering::Relaxed);
                                break;
                            }
                            Err(status) => {
                                policy_record(
                                    &audit,
                                    args,
                                    AuditOutcome::Refused,
                                    format!("api policy from {by} refused: {}", status.message()),
                                );
                                let _ = reply.send(Err(status));
                                continue;
                            }
                        }
                    }
                    other => other,
                };
                let mut ctx = ChangeContext {
                    args,
                    audit: &audit,
                    sources: &sources,
                    store: &mut store,
                    features: &mut features,
                    metrics: metrics.as_ref(),
                    api,
                    policy: &policy_name,
                    rollout: rollout.as_mut(),
                    current: &mut current,
                };
                ctx.apply(change);
                let states = features.states();
                notifier.features(&states);
                publish_features(&health, metrics.as_ref(), &features, states, &args.run_dir);
            }
        }
        features.tick();
        if verified.elapsed() >= VERIFY_EVERY {
            verified = std::time::Instant::now();
            // Links checked (and repaired), and what each feature reports read again:
            // a state that changes with the kernel (a link put back, a veth peer given
            // an XDP program) shows within a second.
            let repaired = features.verify();
            // An interface the firewall's selectors choose appeared or vanished: the
            // policy is compiled and applied again against the interfaces there are.
            if let Some(change) = features.interface_change() {
                if rollout.is_some() {
                    // A reload here would be provisional, and its rollback would bring
                    // back the interfaces that just changed: the operator decides.
                    warn!(
                        "{change}: not applied by itself under --confirm-within; reload (SIGHUP) and confirm to apply it"
                    );
                    policy_record(
                        &audit,
                        args,
                        AuditOutcome::Refused,
                        format!("{change}: waits for a confirmed reload"),
                    );
                } else {
                    info!("{change}: reloading {}", args.source().display());
                    policy_record(&audit, args, AuditOutcome::Ok, change.to_string());
                    reload.store(true, Ordering::Relaxed);
                }
            }
            if let Some(m) = &metrics {
                m.kernel_counters(features.kernel_counters());
            }
            let states = features.states();
            if repaired || states != last_checked {
                notifier.features(&states);
                publish_features(
                    &health,
                    metrics.as_ref(),
                    &features,
                    states.clone(),
                    &args.run_dir,
                );
                last_checked = states;
            }
        }
        write_events(&subscription, &mut events_out, &health);
        if fetcher.take_update() {
            reload.store(true, Ordering::Relaxed);
        }
        if let Some(changed) = feeds.changed() {
            if changed == POLICY_FILE {
                info!("{} changed: reloading", args.source().display());
            } else {
                info!(
                    "feed `{changed}` changed: reloading {}",
                    args.source().display()
                );
            }
            reload.store(true, Ordering::Relaxed);
        }
        if let Some(outcome) = rollout.as_mut().and_then(ConfirmWindow::poll) {
            match outcome {
                WindowOutcome::Confirmed => {
                    if let Some(undo) = rollback_undo.take() {
                        undo.discard();
                    }
                    store.confirmed();
                    info!("the new policy is confirmed");
                    policy_record(
                        loader.audit_log(),
                        args,
                        AuditOutcome::Ok,
                        "confirmed".to_string(),
                    );
                }
                WindowOutcome::Expired(previous) => {
                    if let Some(undo) = rollback_undo.take() {
                        undo.on_expiry();
                    }
                    // The runtime rules an unconfirmed change added or removed come
                    // back with the policy (the snapshot holds them compiled in).
                    match store.roll_back() {
                        Ok(true) => {
                            info!("the runtime rules before the unconfirmed change are back")
                        }
                        Ok(false) => {}
                        Err(e) => error!(
                            "restoring the runtime rules before the unconfirmed change: {e:#}"
                        ),
                    }
                    let restored = features.roll_back(&previous);
                    if let (Some(api), Some(config)) = (&api, &previous.config) {
                        api.publish_rules(rule_entries(config, &store, &policy_name));
                    }
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
                        let shield = previous.config.as_ref().and_then(|c| c.shield.as_ref());
                        m.rolled_back(shield.map(SourceStat::of));
                        m.feature_reloads(features.reload_outcomes());
                    }
                    if let Some(egress) = previous.config.as_ref().and_then(|c| c.egress.as_ref()) {
                        egress_applied(metrics.as_ref(), Some(egress), &args.run_dir);
                    }
                    // A feature the rollback started or stopped shows in status.
                    let states = features.states();
                    notifier.features(&states);
                    publish_features(&health, metrics.as_ref(), &features, states, &args.run_dir);
                    current = previous;
                    release_memory();
                }
            }
        }
        if reload.swap(false, Ordering::Relaxed) {
            // A SIGHUP after logrotate moved the files: write to new ones from here.
            if let Err(e) = sink.reopen() {
                warn!("reopening the audit log: {e}");
            }
            if let Some(out) = events_out.as_mut() {
                out.reopen();
            }
            info!("reloading {}", args.source().display());
            let _reload_span = tracing::info_span!("full_firewall.reload").entered();
            let reads = sources.reads();
            let loaded = load_policy(args, &audit, &sources, &store.rules());
            let now = sources.reads();
            info!(
                "feeds: {} unchanged, {} read by their changed lines, {} read whole",
                now.unchanged.saturating_sub(reads.unchanged),
                now.by_changes.saturating_sub(reads.by_changes),
                now.whole.saturating_sub(reads.whole)
            );
            match loaded {
                Err(refused) => {
                    crate::logging::diagnostics(&refused.text);
                    warn!("reload refused: the new policy is invalid; the old rules stay");
                    if let Some(m) = &metrics {
                        m.reload_failed();
                    }
                    if let Some(p) = pending_apply.take() {
                        p.undo.restore();
                        let _ = p
                            .reply
                            .send(Err(tonic::Status::invalid_argument(refused.caller)));
                    }
                }
                Ok(LoadedPolicy {
                    config: mut new_config,
                    accepted: new_accepted,
                }) => {
                    let mut confirm_before = None;
                    if let Some(r) = rollout.as_mut() {
                        let waited = r.is_pending();
                        let deadline = r.provisional(current.clone(), args.source());
                        confirm_before = Some(deadline);
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
                    if new_config.shield.is_some() {
                        feeds = args.watch(new_config.shield.as_ref());
                        fetcher.replace(new_config.shield.as_ref());
                    }
                    let applied = features.reload(&new_config);
                    if let Some(m) = &metrics {
                        m.feature_reloads(features.reload_outcomes());
                    }
                    if rollout.is_some() {
                        current = Snapshot::of(&new_config);
                    }
                    if let (Some(api), true) = (&api, applied) {
                        api.publish_rules(rule_entries(&new_config, &store, &policy_name));
                    }
                    if let Some(p) = pending_apply.take() {
                        let result = if applied {
                            policy_record(
                                &audit,
                                args,
                                AuditOutcome::Ok,
                                format!("api policy from {} applied", p.by),
                            );
                            let confirm_before_unix = confirm_before
                                .and_then(|d| d.duration_since(std::time::UNIX_EPOCH).ok())
                                .map_or(0, |d| d.as_secs());
                            if confirm_before.is_some() {
                                // The first unconfirmed policy's file comes back.
                                match rollback_undo {
                                    None => rollback_undo = Some(p.undo),
                                    Some(_) => p.undo.discard(),
                                }
                            } else {
                                p.undo.discard();
                            }
                            Ok(ironclad_api::v1::ApplyPolicyResponse {
                                applied_micros: micros(p.received),
                                confirm_before_unix,
                                warnings: p.warnings,
                            })
                        } else {
                            p.undo.restore();
                            Err(tonic::Status::internal(
                                "a feature refused the new policy (see the daemon's log); the policy file is as it was",
                            ))
                        };
                        let _ = p.reply.send(result);
                    }
                    let new_sources = new_config.shield.as_ref().map(SourceStat::of);
                    // A policy without an egress section leaves the running rules as
                    // they are, and their labels with them.
                    let new_egress = new_config.egress.take();
                    // The compiled policy is in the kernel now: its memory goes back to
                    // the system before the loop turns again.
                    drop(new_config);
                    release_memory();
                    if applied {
                        accept(args, &audit, new_accepted.as_ref());
                    }
                    if let Some(m) = &metrics {
                        if applied {
                            m.policy_applied(new_sources);
                        } else {
                            m.reload_failed();
                        }
                    }
                    if applied && new_egress.is_some() {
                        egress_applied(metrics.as_ref(), new_egress.as_ref(), &args.run_dir);
                    }
                    let states = features.states();
                    notifier.features(&states);
                    publish_features(&health, metrics.as_ref(), &features, states, &args.run_dir);
                    // The last line of a reload: status, metrics and the API's rule
                    // list all show its outcome from here on.
                    if applied {
                        info!("reload finished: the new policy is applied");
                    } else {
                        warn!("reload finished: a feature refused the new policy");
                    }
                }
            }
        }
    }
    notifier.stopping();
    // Every feature stops, the last started first (enforcement stays pinned unless
    // --detach-on-exit), after publishing every ring's last records and the last
    // bandwidth report; they are written out even when a stop fails.
    let stopped = features.stop(args.detach_on_exit);
    write_events(&subscription, &mut events_out, &health);
    stopped?;
    health.remove();
    Ok(ExitCode::SUCCESS)
}

/// An `ApplyPolicy` call whose policy is written and waits for the reload.
struct PendingApply {
    reply: tokio::sync::oneshot::Sender<
        std::result::Result<ironclad_api::v1::ApplyPolicyResponse, tonic::Status>,
    >,
    received: std::time::Instant,
    by: String,
    undo: Undo,
    warnings: Vec<String>,
}

/// What puts the policy file (or bundle directory) back as it was before an
/// `ApplyPolicy`.
enum Undo {
    /// The policy file's text before.
    File { path: PathBuf, text: Vec<u8> },
    /// The bundle directory before, moved aside.
    Bundle { dir: PathBuf, old: PathBuf },
}

/// Replaces `path` by `bytes` (a temporary file in its directory renamed over it).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map_or_else(|| "policy".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.api-tmp"));
    std::fs::write(&tmp, bytes)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl Undo {
    /// Puts the file or directory back.
    fn restore(self) {
        match self {
            Undo::File { path, text } => match write_atomically(&path, &text) {
                Ok(()) => info!("{} is as it was before the API's policy", path.display()),
                Err(e) => error!("putting {} back: {e}", path.display()),
            },
            Undo::Bundle { dir, old } => {
                let _ = std::fs::remove_dir_all(&dir);
                match std::fs::rename(&old, &dir) {
                    Ok(()) => info!("{} is as it was before the API's bundle", dir.display()),
                    Err(e) => error!("putting {} back: {e}", dir.display()),
                }
            }
        }
    }

    /// The provisional policy was not confirmed: the policy file comes back with the
    /// kernel's rules. A bundle does not (its serial is older than the one accepted: a
    /// reload would refuse it); the bundle directory keeps the new bundle.
    fn on_expiry(self) {
        match self {
            Undo::File { .. } => self.restore(),
            Undo::Bundle { .. } => self.discard(),
        }
    }

    /// The change stays: drop what would have undone it.
    fn discard(self) {
        if let Undo::Bundle { old, .. } = self {
            let _ = std::fs::remove_dir_all(old);
        }
    }
}

/// Checks an `ApplyPolicy` request and writes its policy over the daemon's policy file
/// or bundle directory, for the reload to apply. Nothing is written unless the policy
/// compiles (with the runtime rules) and a bundle verifies.
fn prepare_apply(
    args: &RunArgs,
    sources: &SourceCache,
    store: &Store,
    request: ironclad_api::v1::ApplyPolicyRequest,
) -> std::result::Result<(Undo, Vec<String>), tonic::Status> {
    use tonic::Status;
    let rules = store.rules();
    match (&args.config, &args.bundle) {
        (Some(path), None) => {
            if request.policy_yaml.is_empty() {
                return Err(Status::failed_precondition(
                    "the daemon runs a policy file (--config): send policy_yaml",
                ));
            }
            let compiled = ironclad_policy::config::compile_str_with_rules(
                &request.policy_yaml,
                path,
                Some(sources),
                &rules,
            )
            .map_err(|e| {
                let refused = Refused::invalid("", &e, path);
                warn!(
                    "ApplyPolicy refused: the policy is invalid:\n{}",
                    refused.text
                );
                Status::invalid_argument(refused.caller)
            })?;
            let warnings = compiled.warnings.iter().map(ToString::to_string).collect();
            let text = std::fs::read(path).map_err(|e| {
                Status::failed_precondition(format!("reading {}: {e}", path.display()))
            })?;
            write_atomically(path, request.policy_yaml.as_bytes()).map_err(|e| {
                Status::failed_precondition(format!(
                    "{} cannot be replaced: {e} (a read-only policy, such as a ConfigMap, is changed where it comes from)",
                    path.display()
                ))
            })?;
            Ok((
                Undo::File {
                    path: path.clone(),
                    text,
                },
                warnings,
            ))
        }
        (None, Some(dir)) => {
            if request.bundle_files.is_empty() {
                return Err(Status::failed_precondition(
                    "the daemon runs a signed bundle (--bundle): send bundle_files",
                ));
            }
            let name = dir
                .file_name()
                .map_or_else(|| "bundle".into(), |n| n.to_string_lossy().into_owned());
            let new = dir.with_file_name(format!(".{name}.api-new"));
            let old = dir.with_file_name(format!(".{name}.api-old"));
            let _ = std::fs::remove_dir_all(&new);
            let written = write_bundle(&new, &request.bundle_files);
            let checked = written.and_then(|()| {
                let key = args
                    .trusted_key
                    .as_deref()
                    .ok_or_else(|| Status::failed_precondition("no --trusted-key"))?;
                let key = ironclad_policy::bundle::TrustedKey::from_file(key)
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                let last = Accepted::load(&args.accepted_path())
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                let staging = args.state_dir.join("bundle-api-check");
                let verified = verify_bundle(&new, &key, last.as_ref(), &staging)
                    .map_err(|e| Status::invalid_argument(format!("bundle refused: {e}")))?;
                let compiled = compile_file_with_rules(&verified.policy, Some(sources), &rules)
                    .map_err(|e| {
                        let refused = Refused::invalid("its policy is invalid:\n", &e, &staging);
                        warn!("ApplyPolicy refused: {}", refused.text);
                        Status::invalid_argument(refused.caller)
                    });
                let _ = std::fs::remove_dir_all(&staging);
                Ok(compiled?
                    .warnings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>())
            });
            let warnings = match checked {
                Ok(w) => w,
                Err(status) => {
                    let _ = std::fs::remove_dir_all(&new);
                    return Err(status);
                }
            };
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(dir, &old)
                .and_then(|()| {
                    std::fs::rename(&new, dir).inspect_err(|_| {
                        let _ = std::fs::rename(&old, dir);
                    })
                })
                .map_err(|e| {
                    let _ = std::fs::remove_dir_all(&new);
                    Status::failed_precondition(format!(
                        "{} cannot be replaced: {e}",
                        dir.display()
                    ))
                })?;
            Ok((
                Undo::Bundle {
                    dir: dir.clone(),
                    old,
                },
                warnings,
            ))
        }
        _ => Err(Status::failed_precondition(
            "the daemon has no policy source",
        )),
    }
}

/// Writes a bundle's files into `dir` (made, mode 0700). Paths must stay inside it.
fn write_bundle(
    dir: &Path,
    files: &std::collections::HashMap<String, Vec<u8>>,
) -> std::result::Result<(), tonic::Status> {
    use std::os::unix::fs::DirBuilderExt;
    let io =
        |e: std::io::Error| tonic::Status::failed_precondition(format!("{}: {e}", dir.display()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(io)?;
    for (name, bytes) in files {
        let rel = Path::new(name);
        let inside = !name.is_empty()
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(tonic::Status::invalid_argument(format!(
                "bundle_files: `{name}` is not a relative path inside the bundle"
            )));
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, bytes).map_err(io)?;
    }
    Ok(())
}

/// Waits up to 100 ms for events; with the control API, a queued change ends the wait
/// at once.
fn poll(features: &Features<'_>, api: Option<&Api>) {
    match api {
        Some(api) => features.poll_or_woken(Duration::from_millis(100), api.wake_fd()),
        None => features.poll(Duration::from_millis(100)),
    }
}

/// A Shield rule the control API adds or removes, to write in place.
enum ShieldEdit {
    /// The rule labelled `label` (`api-N`) is new.
    Insert { label: String },
    /// The rule for `net` goes.
    Remove { net: ipnetwork::IpNetwork },
}

/// What applying a rule change through the control API needs.
struct ChangeContext<'a, 'f> {
    args: &'a RunArgs,
    audit: &'a AuditLog,
    sources: &'a SourceCache,
    store: &'a mut Store,
    features: &'a mut Features<'f>,
    metrics: Option<&'a Metrics>,
    api: &'a Api,
    policy: &'a str,
    /// With `--confirm-within`: a change is provisional, and `current` is what the
    /// kernel holds (the snapshot a later rollback comes back to).
    rollout: Option<&'a mut ConfirmWindow<Snapshot>>,
    current: &'a mut Snapshot,
}

/// What a rule change applied: how, the compiled policy's warnings, and when it must be
/// confirmed by (Unix seconds; 0: it is final).
struct Applied {
    how: &'static str,
    warnings: Vec<String>,
    confirm_before_unix: u64,
}

impl ChangeContext<'_, '_> {
    /// Compiles the policy file with `rules` and applies it as a reload. A policy that
    /// does not compile with them changes nothing (`FAILED_PRECONDITION`, with the
    /// compiler's messages); a kernel that refuses it gets the rules in force before
    /// back (`INTERNAL`).
    fn enforce(
        &mut self,
        next: &StoreFileChange,
        edit: Option<ShieldEdit>,
    ) -> std::result::Result<(Vec<RuleEntry>, &'static str, CompiledConfig), tonic::Status> {
        let rules = Store::rules_of(next);
        let loaded = load_policy(self.args, self.audit, self.sources, &rules)
            .map_err(|r| crate::api::refused(r.caller))?;
        let config = loaded.config;
        if let Some(done) = edit.and_then(|e| self.edit_in_place(e, &config)) {
            done.map_err(|e| tonic::Status::internal(format!("the Shield refused the edit: {e}")))?;
            if let Some(m) = self.metrics {
                m.policy_applied(config.shield.as_ref().map(SourceStat::of));
            }
            return Ok((
                rule_entries(&config, &Store::view(next), self.policy),
                "written in place",
                config,
            ));
        }
        if !self.features.reload(&config) {
            let back = load_policy(self.args, self.audit, self.sources, &self.store.rules())
                .map(|l| self.features.reload(&l.config))
                .unwrap_or(false);
            if let Some(m) = self.metrics {
                m.feature_reloads(self.features.reload_outcomes());
            }
            return Err(tonic::Status::internal(if back {
                "a feature refused the new rules: the rules in force before are back (see the daemon's log)"
            } else {
                "a feature refused the new rules, and restoring the rules before failed: the daemon is not ready (see its log)"
            }));
        }
        if let Some(m) = self.metrics {
            m.feature_reloads(self.features.reload_outcomes());
            m.policy_applied(config.shield.as_ref().map(SourceStat::of));
        }
        if config.egress.is_some() {
            egress_applied(self.metrics, config.egress.as_ref(), &self.args.run_dir);
        }
        Ok((
            rule_entries(&config, &Store::view(next), self.policy),
            "applied by a reload",
            config,
        ))
    }

    /// A Shield rule added or removed by `edit` written in place (one prefix, as
    /// `Shield::insert_rule` and `remove_rule` do), when `config` (the whole policy with
    /// the runtime rules) says the prefix is that rule's alone: no other rule or set
    /// lists it. `None`: a reload applies `config` instead.
    fn edit_in_place(
        &self,
        edit: ShieldEdit,
        config: &CompiledConfig,
    ) -> Option<std::result::Result<(), BpfError>> {
        let shield = self.features.shield()?;
        let policy = config.shield.as_ref()?;
        // The prefix, and for an addition the action of the rule labelled `label`.
        let (net, action) = match &edit {
            ShieldEdit::Insert { label } => {
                let rule = policy.rules.iter().find(|r| r.origin == *label)?;
                let alone = policy.rules.iter().filter(|r| r.cidr == rule.cidr).count() == 1;
                alone.then_some((rule.cidr, Some(rule.action)))?
            }
            ShieldEdit::Remove { net } => {
                (!policy.rules.iter().any(|r| r.cidr == *net)).then_some((*net, None))?
            }
        };
        if policy
            .sets
            .iter()
            .any(|s| s.prefixes.binary_search(&net).is_ok())
        {
            return None;
        }
        Some(match action {
            Some(action) => shield.insert_new_rule(net, action).map(|_| ()),
            None => shield.remove_rule(net).map(|_| ()),
        })
    }

    /// Enforces `next` (by `edit` in place when it can) and stores it; the rules in
    /// force before come back when it cannot be stored (what is not kept is not
    /// enforced either).
    /// With `--confirm-within` the change is provisional: the rules before it are kept
    /// on disk and come back at the deadline (or at the next start) unless confirmed.
    fn change(
        &mut self,
        next: StoreFileChange,
        edit: Option<ShieldEdit>,
    ) -> std::result::Result<Applied, tonic::Status> {
        let adding = match &edit {
            Some(ShieldEdit::Insert { label }) => Some(label.clone()),
            _ => None,
        };
        let (entries, how, config) = self.enforce(&next, edit)?;
        // A Shield prefix listed already is merged into the first rule that lists it:
        // stored, the copy would never show in `rules list` nor count a packet.
        if let Some(label) = adding.filter(|l| !entries.iter().any(|e| e.id == *l)) {
            let rule = Store::rules_of(&next)
                .into_iter()
                .find(|r| r.label() == label)
                .map(|r| r.rule)
                .unwrap_or_default();
            let net = rule.trim().parse::<ipnetwork::IpNetwork>().ok();
            let first = config
                .shield
                .as_ref()
                .and_then(|s| s.rules.iter().find(|r| Some(r.cidr) == net))
                .map_or_else(|| "another rule".to_string(), |r| r.origin.clone());
            // The kernel holds what it held: the copy changed nothing there.
            return Err(tonic::Status::already_exists(format!(
                "`{}` is already listed, as {first} (`rules list` shows it): a copy would never show nor count",
                rule.trim()
            )));
        }
        let kept = match self.rollout {
            Some(_) => self.store.keep_until_confirmed(),
            None => Ok(()),
        };
        if let Err(e) = kept.and_then(|()| self.store.save(next)) {
            let before = self.store.current();
            let _ = self.enforce(&before, None);
            return Err(tonic::Status::internal(format!("{e:#}")));
        }
        self.api.publish_rules(entries);
        let mut confirm_before_unix = 0;
        if let Some(r) = self.rollout.as_deref_mut() {
            let deadline = r.provisional(self.current.clone(), self.args.source());
            *self.current = Snapshot::of(&config);
            let until = humantime::format_rfc3339_seconds(deadline);
            info!("runtime rules changed provisionally: run `full_firewall confirm` before {until} or the rules before come back");
            self.record(
                "runtime-rules",
                AuditOutcome::Ok,
                format!("rule change applied provisionally, confirm before {until}"),
            );
            confirm_before_unix = deadline
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
        }
        Ok(Applied {
            how,
            warnings: config.warnings.iter().map(|d| d.message.clone()).collect(),
            confirm_before_unix,
        })
    }

    fn record(&self, object: &str, outcome: AuditOutcome, detail: String) {
        self.audit.record(
            AuditAction::Policy,
            "full_firewall",
            object,
            outcome,
            detail,
        );
    }

    /// Applies `change` and answers its caller. Under `--confirm-within` a change made
    /// while another waits for confirmation is provisional with it: the rollback puts
    /// back the policy and the rules in force before the first of them.
    fn apply(&mut self, change: Change) {
        match change {
            // The window's poll, later in this turn, takes the confirmation.
            Change::Confirm { by, reply } => {
                let answer = match self.rollout.as_deref_mut().map(ConfirmWindow::confirm_now) {
                    None | Some(Ok(false)) => Ok(ConfirmResponse { was_pending: false }),
                    Some(Ok(true)) => {
                        info!("control API: {by} confirms the pending policy");
                        Ok(ConfirmResponse { was_pending: true })
                    }
                    Some(Err(e)) => Err(tonic::Status::failed_precondition(e.to_string())),
                };
                let _ = reply.send(answer);
            }
            // Applied by the loop's reload (`prepare_apply`).
            Change::Apply { reply, .. } => {
                let _ = reply.send(Err(tonic::Status::internal(
                    "a policy is applied by the control loop's reload",
                )));
            }
            Change::Add {
                mut rule,
                comment,
                by,
                received,
                reply,
            } => {
                rule.id = self.store.next_id();
                let label = rule.label();
                let what = format!("{} `{}` by {by}", rule.section, rule.rule);
                let next = self.store.with(&rule, &comment, &by);
                let edit = matches!(
                    rule.section,
                    RuleSection::ShieldDeny | RuleSection::ShieldAllow
                )
                .then(|| ShieldEdit::Insert {
                    label: label.clone(),
                });
                let result = self.change(next, edit);
                match &result {
                    Ok(applied) => {
                        info!("control API: rule {label} added ({}): {what}", applied.how);
                        self.record(&label, AuditOutcome::Ok, format!("api rule added: {what}"));
                    }
                    Err(status) => {
                        warn!("control API: rule refused: {what}: {}", status.message());
                        self.record(
                            &label,
                            AuditOutcome::Refused,
                            format!("api rule refused: {what}: {}", status.message()),
                        );
                    }
                }
                let _ = reply.send(result.map(|applied| {
                    // What this rule brought: the warnings that name it (the lock-out
                    // guard's `warning: api-N: denies every IPv4 source ...`).
                    let mine = format!("warning: {label}: ");
                    let warnings: Vec<String> = applied
                        .warnings
                        .into_iter()
                        .filter(|w| w.starts_with(&mine))
                        .collect();
                    for w in &warnings {
                        warn!("control API: {w}");
                    }
                    ironclad_api::v1::AddRuleResponse {
                        id: label,
                        applied_micros: micros(received),
                        warnings,
                        confirm_before_unix: applied.confirm_before_unix,
                    }
                }));
            }
            Change::Remove {
                id,
                by,
                received,
                reply,
            } => {
                let result = match self.store.without(&id) {
                    None => Err(tonic::Status::not_found(format!(
                        "no rule {id} (`full_firewall rules list` shows the rules in force)"
                    ))),
                    Some(next) => {
                        let edit = self
                            .api
                            .shield_rule(&id)
                            .map(|net| ShieldEdit::Remove { net });
                        self.change(next, edit)
                    }
                };
                match &result {
                    Ok(applied) => {
                        info!("control API: rule {id} removed by {by} ({})", applied.how);
                        self.record(&id, AuditOutcome::Ok, format!("api rule removed by {by}"));
                    }
                    Err(status) => self.record(
                        &id,
                        AuditOutcome::Refused,
                        format!("api rule removal by {by} refused: {}", status.message()),
                    ),
                }
                let _ = reply.send(result.map(|applied| ironclad_api::v1::RemoveRuleResponse {
                    applied_micros: micros(received),
                    confirm_before_unix: applied.confirm_before_unix,
                }));
            }
        }
    }
}

fn micros(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
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

/// Gives every buffer of 256 KiB or more its own mapping, returned to the system as soon
/// as it is freed. glibc's default threshold rises to the size of the largest buffer
/// freed (up to 32 MiB), after which a reload's feed text and prefix lists (14-18 MB
/// each at a million lines) are carved out of the heap, where they leave their pages
/// resident until `malloc_trim`: measured with a 1M-line feed, a reload peaked at
/// 101-125 MiB resident with the default, 100.5 MiB in every round with this (the
/// footprint check wants at most twice the steady size). `mallopt(3)` has no safe
/// wrapper in any maintained crate, hence the FFI.
fn map_large_buffers() {
    // SAFETY: mallopt only sets a glibc tunable under glibc's own lock and takes no
    // pointer; it is safe to call at any time from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
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
