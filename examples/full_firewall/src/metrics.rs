//! `run --metrics ADDR:PORT`: Prometheus metrics, a JSON status API and a live dashboard
//! on one HTTP listener.
//!
//! | path | what |
//! |---|---|
//! | `/metrics` | Prometheus text format 0.0.4: aggregate counters only |
//! | `/healthz` | liveness: 200 while the control loop turns, 503 when it has stalled |
//! | `/readyz` | readiness: 200 when every configured feature runs, 503 with the reasons |
//! | `/` | the dashboard: one page (its chart library, uPlot, at `/uplot.js` and `/uplot.css`; nothing from elsewhere) polling `/api/status`, `/api/history` (and `/api/events` with the token in the page's `#token=` fragment) |
//! | `/api/status` | JSON: programs, policy, Shield rules (top 200 by packets) and totals, the stateful firewall (top 200 rules by packets, totals, connections), egress, readiness, memory |
//! | `/api/history` | JSON: the last hour of the main counters as rates, sampled by the daemon ([`crate::history`]) |
//! | `/api/events` | JSON: recent events, payloads included (TLS plaintext, DNS names), top denied addresses, top talkers, top refused processes: **bearer token only** (`--metrics-token-file`), otherwise 401/403 |
//!
//! Counters are read from the pinned maps on each request, so they are the kernel's
//! own numbers at that moment. Recent events come from a subscription to the daemon's
//! event fan-out. The listener answers `GET`/`HEAD` only, and only requests whose `Host`
//! is an IP literal, `localhost` or a name given with `--metrics-allow-host` (a web page
//! cannot reach it by DNS rebinding). It is a hyper HTTP/1 server on one thread: head
//! deadline 5 s, connection deadline 15 s; beyond 512 connections, or 64 from one peer
//! address, the oldest one that has not sent its request is closed (else the oldest);
//! two page builds at a time. Slow or idle clients cannot stall it, nor can a local user
//! churning connections close a scrape or a probe between its request and its answer.
//! Binding happens before anything is loaded, so a bad address changes nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use ironclad_bpf::{
    EgressFirewall, Firewall, FirewallStatus, RuleStatus, Shield, ShieldStatus, Telemetry,
};
use ironclad_core::abi::{EgressTotal, FwTotal, ShieldTotal};
use ironclad_events::{Event, Fanout, Overflow};
use ironclad_policy::shield::CompiledShield;
use ironclad_policy::sources::SourceKind;
use tracing::{info, warn};

use crate::history::{self, History, Sample};
use crate::status;
use ironclad_agent::health::Health;

/// The dashboard page, served as is.
const PAGE: &str = include_str!("dashboard.html");
/// The dashboard's chart library, uPlot (MIT; vendor/uPlot.LICENSE), served by the
/// daemon itself: the page loads nothing from elsewhere.
const UPLOT_JS: &str = include_str!("vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("vendor/uPlot.min.css");
/// How many recent events `/api/status` returns.
const RECENT_EVENTS: usize = 50;
/// How many rules `/api/status` returns (those with the most packets).
const TOP_RULES: usize = 200;

/// What one feature of the daemon is doing, as the dashboard and `ironclad_program_up`
/// show it.
#[derive(Debug, Clone)]
struct Program {
    up: bool,
    detail: String,
}

/// A feed or country set of the applied policy.
#[derive(Debug, Clone)]
pub(crate) struct SourceStat {
    name: String,
    feed: bool,
    modified: Option<SystemTime>,
    ipv4: usize,
    ipv6: usize,
    skipped: usize,
}

impl SourceStat {
    /// The sources of a compiled Shield policy with their compiled prefix counts.
    pub(crate) fn of(shield: &CompiledShield) -> Vec<Self> {
        shield
            .sources
            .iter()
            .map(|source| {
                let set = shield.sets.iter().find(|s| s.name == source.name);
                let ipv4 = set.map_or(0, |s| s.prefixes.ipv4_len());
                Self {
                    name: source.name.clone(),
                    feed: matches!(source.kind, SourceKind::Feed { .. }),
                    modified: source.modified,
                    ipv4,
                    ipv6: set.map_or(0, |s| s.prefixes.len()) - ipv4,
                    skipped: source.skipped,
                }
            })
            .collect()
    }
}

/// State the daemon updates and the listener reads.
#[derive(Debug)]
struct State {
    policy_serial: u64,
    policy_loaded_at: SystemTime,
    reload_failures: u64,
    rollbacks: u64,
    programs: BTreeMap<String, Program>,
    recent: VecDeque<serde_json::Value>,
    events_seen: u64,
    /// The events seen, by kind (`shield_drop`, `tls`, `flow`, ...).
    events_by_kind: BTreeMap<&'static str, u64>,
    sources: Vec<SourceStat>,
    /// Per fetched feed: successful and failed downloads.
    fetches: BTreeMap<String, (u64, u64)>,
    /// The applied egress rules' `rule` labels by rule id.
    egress_rules: BTreeMap<u32, String>,
    /// The applied egress rules' names and text by rule id (the dashboard's status).
    egress_names: BTreeMap<u32, status::RuleName>,
    /// The stateful firewall's live rules by counter id.
    firewall_rules: BTreeMap<u32, ironclad_bpf::FwRuleLabel>,
    /// The last policy loads: start, reloads applied, refused, rolled back.
    reloads: VecDeque<serde_json::Value>,
    /// Shield drops by source address since the start (for the dashboard's top list).
    drop_sources: HashMap<String, u64>,
    /// Egress refusals by executable (or command name when the path is unknown).
    refused_processes: HashMap<String, u64>,
    /// Telemetry's latest bandwidth report of each process, by pid: the top talkers
    /// by process, which need no connection table (none when no report came).
    talking_processes: Option<HashMap<u32, Talking>>,
    /// Reload outcomes by (feature, outcome).
    feature_reloads: BTreeMap<(String, &'static str), u64>,
    /// When each feature's policy was last applied (start, reload, start on reload).
    feature_applied: BTreeMap<String, SystemTime>,
    /// The counters features keep in the kernel besides their status (events lost,
    /// TLS bytes withheld, the process cache's records), by feature, as last read.
    kernel_counters: BTreeMap<&'static str, Vec<(&'static str, u64)>>,
}

/// How many loads the reload history keeps.
const RELOAD_HISTORY: usize = 20;
/// How many sources or processes the top lists count at most: past it the smaller
/// half is forgotten, so a spoofed flood cannot grow the daemon's memory.
const TOP_TRACKED: usize = 4096;
/// How many entries a top list shows.
const TOP_SHOWN: usize = 10;

/// Counts one more for `key`, keeping the map bounded.
fn count_top(map: &mut HashMap<String, u64>, key: String) {
    *map.entry(key).or_default() += 1;
    if map.len() > TOP_TRACKED {
        let mut counts: Vec<u64> = map.values().copied().collect();
        counts.sort_unstable();
        let median = counts[counts.len() / 2];
        map.retain(|_, n| *n > median);
    }
}

/// A process's traffic as telemetry last reported it (bytes since it was first
/// counted, IP lengths).
#[derive(Debug, Clone)]
struct Talking {
    /// Its executable (the command name when the path is unknown).
    process: String,
    sent: u64,
    received: u64,
}

/// Keeps `sample` as its process's latest report, the map bounded as [`count_top`]'s:
/// past [`TOP_TRACKED`] processes, those with fewer bytes than the median are
/// forgotten (exited ones among them, whose last report stays until then).
fn record_talking(map: &mut HashMap<u32, Talking>, sample: &ironclad_events::BandwidthSample) {
    let total = sample.tx_bytes.saturating_add(sample.rx_bytes);
    let path = sample
        .process
        .as_ref()
        .and_then(|p| p.exe.clone())
        .or_else(|| sample.exe.clone());
    let process = match (path, map.get(&sample.pid)) {
        (Some(path), _) => path,
        // Its executable as an earlier report named it, while it ran (after its exit
        // telemetry knows only the command name); the same process as long as its
        // counters did not go back (a reused pid starts again from zero).
        (None, Some(earlier)) if earlier.sent.saturating_add(earlier.received) <= total => {
            earlier.process.clone()
        }
        (None, _) => sample
            .comm
            .clone()
            .unwrap_or_else(|| format!("pid {}", sample.pid)),
    };
    map.insert(
        sample.pid,
        Talking {
            process,
            sent: sample.tx_bytes,
            received: sample.rx_bytes,
        },
    );
    if map.len() > TOP_TRACKED {
        let mut totals: Vec<u64> = map
            .values()
            .map(|t| t.sent.saturating_add(t.received))
            .collect();
        totals.sort_unstable();
        let median = totals[totals.len() / 2];
        map.retain(|_, t| t.sent.saturating_add(t.received) > median);
    }
}

/// The bytes sent and received by every process telemetry reported, summed (the
/// history's traffic chart: it goes down, a gap in the chart, only when a pid is
/// reused or the map forgets the smaller half).
fn traffic_of(map: &HashMap<u32, Talking>) -> (u64, u64) {
    map.values().fold((0, 0), |(sent, received), t| {
        (
            sent.saturating_add(t.sent),
            received.saturating_add(t.received),
        )
    })
}

/// The `TOP_SHOWN` processes with the most bytes both ways, most first.
fn top_talking(map: &HashMap<u32, Talking>) -> Vec<serde_json::Value> {
    let mut entries: Vec<(&u32, &Talking)> = map.iter().collect();
    entries.sort_by(|a, b| {
        let total = |t: &Talking| t.sent.saturating_add(t.received);
        total(b.1).cmp(&total(a.1)).then(a.0.cmp(b.0))
    });
    entries
        .into_iter()
        .take(TOP_SHOWN)
        .map(|(pid, t)| {
            serde_json::json!({
                "process": t.process,
                "pid": pid,
                "sent": t.sent,
                "received": t.received,
            })
        })
        .collect()
}

/// The `TOP_SHOWN` largest entries, largest first.
fn top(map: &HashMap<String, u64>, key: &str) -> Vec<serde_json::Value> {
    let mut entries: Vec<(&String, &u64)> = map.iter().collect();
    entries.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    entries
        .into_iter()
        .take(TOP_SHOWN)
        .map(|(k, n)| serde_json::json!({ key: k, "count": n }))
        .collect()
}

impl State {
    fn load(&mut self, outcome: &str) {
        if self.reloads.len() == RELOAD_HISTORY {
            self.reloads.pop_front();
        }
        self.reloads.push_back(serde_json::json!({
            "at": unix_seconds(SystemTime::now()),
            "outcome": outcome,
            "serial": self.policy_serial,
        }));
    }
}

struct Shared {
    pin_root: PathBuf,
    /// The counters of the last hour (`/api/history`).
    history: Mutex<History>,
    config: PathBuf,
    fanout: Arc<Fanout<Event>>,
    state: Mutex<State>,
    access: Access,
    health: Health,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still readable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The daemon's handle on the listener: it reports what it loaded and applied.
#[derive(Clone)]
pub(crate) struct Metrics {
    shared: Arc<Shared>,
}

/// At a clean stop the ring is written once more, so that the next daemon has every
/// sample up to the stop (the sampler writes it at most every `SAVE_EVERY`).
impl Drop for Metrics {
    fn drop(&mut self) {
        let saved = {
            let history = self.shared.history();
            history
                .file()
                .map(|file| (file.to_path_buf(), history.to_saved()))
        };
        if let Some((file, bytes)) = saved {
            if let Err(e) = crate::run::write_atomically(&file, &bytes) {
                warn!(
                    "dashboard: its history is not kept in {}: {e}",
                    file.display()
                );
            }
        }
    }
}

impl Metrics {
    /// Binds `addr` (before anything is loaded: an address in use is an error that
    /// changes nothing) and starts serving.
    pub(crate) fn start(
        addr: SocketAddr,
        access: Access,
        health: Health,
        pin_root: PathBuf,
        config: PathBuf,
        fanout: Arc<Fanout<Event>>,
        history: History,
    ) -> Result<Self> {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("--metrics {addr}: cannot listen"))?;
        // The kernel's accept queue as long as the host allows (std listens with 128):
        // every local user shares it, and one that connects in a loop while this
        // thread is short of CPU filled 128 slots, so a probe's SYN was dropped three
        // times in a row and it timed out without ever being accepted.
        rustix::net::listen(&listener, -1)
            .with_context(|| format!("--metrics {addr}: cannot set the accept queue's length"))?;
        let local = listener.local_addr().context("--metrics: local address")?;
        if !addr.ip().is_loopback() && access.token.is_none() {
            warn!(
                "--metrics {addr} is not a loopback address and has no --metrics-token-file: \
                 anyone who reaches it reads the counters (events are not served without a token)"
            );
        }
        let subscription = fanout.subscribe("dashboard", 256, Overflow::DropOldest);
        let shared = Arc::new(Shared {
            pin_root,
            history: Mutex::new(history),
            config,
            fanout,
            state: Mutex::new(State {
                policy_serial: 0,
                policy_loaded_at: SystemTime::now(),
                reload_failures: 0,
                rollbacks: 0,
                programs: BTreeMap::new(),
                recent: VecDeque::with_capacity(RECENT_EVENTS),
                events_seen: 0,
                events_by_kind: BTreeMap::new(),
                sources: Vec::new(),
                fetches: BTreeMap::new(),
                egress_rules: BTreeMap::new(),
                egress_names: BTreeMap::new(),
                firewall_rules: BTreeMap::new(),
                reloads: VecDeque::with_capacity(RELOAD_HISTORY),
                drop_sources: HashMap::new(),
                refused_processes: HashMap::new(),
                talking_processes: None,
                feature_reloads: BTreeMap::new(),
                feature_applied: BTreeMap::new(),
                kernel_counters: BTreeMap::new(),
            }),
            access,
            health,
        });
        let events = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("metrics-events".into())
            .spawn(move || {
                while let Ok(event) = subscription.receiver().recv() {
                    let value = serde_json::to_value(&event).unwrap_or(serde_json::Value::Null);
                    let mut state = events.state();
                    state.events_seen += 1;
                    *state.events_by_kind.entry(event.kind()).or_default() += 1;
                    match &event {
                        Event::ShieldDrop(d) => {
                            count_top(&mut state.drop_sources, d.src.to_string())
                        }
                        // The stateful firewall's refusals (logged rules, the sampled
                        // default drops): by the remote end.
                        Event::FirewallMatch(m)
                            if matches!(m.verdict, "drop" | "reject" | "rate_limited") =>
                        {
                            let remote = if m.direction == "in" { m.src } else { m.dst };
                            count_top(&mut state.drop_sources, remote.to_string());
                        }
                        Event::Connect(d) | Event::RateLimited(d)
                            if matches!(
                                d.verdict,
                                ironclad_core::abi::EgressAction::Deny
                                    | ironclad_core::abi::EgressAction::RateLimited
                            ) =>
                        {
                            let who = d.actor.exe.clone().unwrap_or_else(|| d.actor.comm.clone());
                            count_top(&mut state.refused_processes, who);
                        }
                        Event::Bandwidth(b) => record_talking(
                            state.talking_processes.get_or_insert_with(HashMap::new),
                            b,
                        ),
                        _ => {}
                    }
                    if state.recent.len() == RECENT_EVENTS {
                        state.recent.pop_front();
                    }
                    state.recent.push_back(value);
                }
            })
            .context("starting the metrics event thread")?;
        let sampler = Arc::clone(&shared);
        let (mut last_save, mut warned) = (None, false);
        std::thread::Builder::new()
            .name("metrics-history".into())
            .spawn(move || loop {
                // The connection table's size: counted in batches, its entries not
                // decoded (the top talkers are, only when a token holder asks).
                let connections = Firewall::connection_count_from_pins(&sampler.pin_root).ok();
                let (events, traffic) = {
                    let state = sampler.state();
                    (
                        state.events_by_kind.clone(),
                        state.talking_processes.as_ref().map(traffic_of),
                    )
                };
                let sample = Sample::read(
                    &sampler.pin_root,
                    connections,
                    traffic,
                    &events,
                    resident_bytes(),
                );
                let (interval, saved) = {
                    let mut history = sampler.history();
                    history.push(sample);
                    let due = last_save
                        .is_none_or(|t: std::time::Instant| t.elapsed() >= history::SAVE_EVERY);
                    let saved = history
                        .file()
                        .filter(|_| due)
                        .map(|file| (file.to_path_buf(), history.to_saved()));
                    (history.interval(), saved)
                };
                // Kept for the next daemon (written outside the lock the pages take).
                if let Some((file, bytes)) = saved {
                    last_save = Some(std::time::Instant::now());
                    match crate::run::write_atomically(&file, &bytes) {
                        Ok(()) => warned = false,
                        // Said once (and again after a write that worked): a run
                        // directory the daemon cannot write loses the hour at restart.
                        Err(e) if !warned => {
                            warned = true;
                            warn!(
                                "dashboard: its history is not kept in {} (a restart loses it): {e}",
                                file.display()
                            );
                        }
                        Err(e) => tracing::debug!("keeping the dashboard's history in {}: {e}", file.display()),
                    }
                }
                std::thread::sleep(interval);
            })
            .context("starting the metrics history thread")?;
        let server = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                if let Err(e) = serve(listener, server) {
                    tracing::error!("the metrics listener stopped: {e}");
                }
            })
            .context("starting the metrics listener")?;
        info!("metrics on http://{local}/metrics, dashboard on http://{local}/");
        Ok(Self { shared })
    }

    /// Records a feature's state (`up`) and a one-line description.
    /// The features' kernel counters as just read
    /// ([`Features::kernel_counters`](ironclad_agent::features::Features::kernel_counters)).
    pub(crate) fn kernel_counters(
        &self,
        counters: BTreeMap<&'static str, Vec<(&'static str, u64)>>,
    ) {
        self.shared.state().kernel_counters = counters;
    }

    pub(crate) fn program(&self, name: &str, up: bool, detail: impl Into<String>) {
        self.shared.state().programs.insert(
            name.to_string(),
            Program {
                up,
                detail: detail.into(),
            },
        );
    }

    /// A policy was applied: the serial goes up by one and the load time is now;
    /// `sources` are its feeds and countries (`None`: the Shield's are unchanged).
    pub(crate) fn policy_applied(&self, sources: Option<Vec<SourceStat>>) {
        let mut state = self.shared.state();
        state.policy_serial += 1;
        state.policy_loaded_at = SystemTime::now();
        if let Some(sources) = sources {
            state.sources = sources;
        }
        let outcome = if state.policy_serial == 1 {
            "started"
        } else {
            "applied"
        };
        state.load(outcome);
    }

    /// An unconfirmed reload was rolled back: the serial goes up (the kernel holds a
    /// policy again that was applied before) and the rollback is counted.
    pub(crate) fn rolled_back(&self, sources: Option<Vec<SourceStat>>) {
        self.policy_applied(sources);
        let mut state = self.shared.state();
        state.rollbacks += 1;
        if let Some(last) = state.reloads.back_mut() {
            last["outcome"] = "rolled_back".into();
        }
    }

    /// The egress rules the kernel holds now: their series are labelled by what each
    /// rule matches and does ([`CompiledEgressRule::summary`]), not by its place in the
    /// policy, so a rule keeps its series when a reload moves it. Two identical rules
    /// get ` (2)`, ` (3)`... after the first.
    ///
    /// [`CompiledEgressRule::summary`]: ironclad_policy::egress::CompiledEgressRule::summary
    pub(crate) fn egress_rules(&self, egress: Option<&ironclad_policy::egress::CompiledEgress>) {
        let mut labels = BTreeMap::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for rule in egress.map(|e| e.rules.as_slice()).unwrap_or_default() {
            let n = seen.entry(rule.summary.as_str()).or_default();
            *n += 1;
            let label = if *n == 1 {
                rule.summary.clone()
            } else {
                format!("{} ({n})", rule.summary)
            };
            labels.insert(rule.rule_id, label);
        }
        let names = status::egress_rule_names(egress)
            .into_iter()
            .map(|n| (n.id, n))
            .collect();
        let mut state = self.shared.state();
        state.egress_rules = labels;
        state.egress_names = names;
    }

    /// The stateful firewall's live rules by counter id: their series are labelled by
    /// name (`firewall.rules[2]`), as `status`, `rules list` and events name them.
    pub(crate) fn firewall_rules(&self, labels: BTreeMap<u32, ironclad_bpf::FwRuleLabel>) {
        self.shared.state().firewall_rules = labels;
    }

    /// The features running after the start: their policies were applied now.
    pub(crate) fn features_started<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        let now = SystemTime::now();
        let mut state = self.shared.state();
        for name in names {
            state.feature_applied.insert(name.clone(), now);
        }
    }

    /// What a reload did to each feature: counted by outcome; an applied or started one
    /// gets a new applied time.
    pub(crate) fn feature_reloads(
        &self,
        outcomes: &BTreeMap<&'static str, ironclad_agent::features::ReloadOutcome>,
    ) {
        use ironclad_agent::features::ReloadOutcome;
        let now = SystemTime::now();
        let mut state = self.shared.state();
        for (feature, outcome) in outcomes {
            *state
                .feature_reloads
                .entry(((*feature).to_string(), outcome.as_str()))
                .or_default() += 1;
            if matches!(outcome, ReloadOutcome::Applied | ReloadOutcome::Started) {
                state.feature_applied.insert((*feature).to_string(), now);
            }
        }
    }

    /// A download of feed `name` succeeded (200 or 304) or failed.
    pub(crate) fn fetch_result(&self, name: &str, ok: bool) {
        let mut state = self.shared.state();
        let entry = state.fetches.entry(name.to_string()).or_default();
        if ok {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    /// A reload was refused or failed.
    pub(crate) fn reload_failed(&self) {
        let mut state = self.shared.state();
        state.reload_failures += 1;
        state.load("refused");
    }
}

/// Who may ask what: the bearer token for payload endpoints, and the `Host` names
/// accepted besides IP literals and `localhost`.
#[derive(Clone, Default)]
pub(crate) struct Access {
    /// The bearer token (`--metrics-token-file`); `None`: payload endpoints are off.
    pub(crate) token: Option<Vec<u8>>,
    /// Extra `Host` names (`--metrics-allow-host`).
    pub(crate) hosts: Vec<String>,
}

impl Access {
    /// Reads the token file: a regular file, not readable by group or others (like an
    /// SSH key), holding at least 16 characters; surrounding white space is ignored.
    pub(crate) fn token_from_file(path: &std::path::Path) -> Result<Vec<u8>> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("--metrics-token-file {}", path.display()))?;
        if meta.mode() & 0o077 != 0 {
            anyhow::bail!(
                "--metrics-token-file {}: mode {:o} lets other users read the token; chmod 600 it",
                path.display(),
                meta.mode() & 0o777
            );
        }
        let bytes = ironclad_core::fsutil::read_regular_file(path, 4096)
            .with_context(|| format!("--metrics-token-file {}", path.display()))?;
        let token = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
        if token.len() < 16 {
            anyhow::bail!(
                "--metrics-token-file {}: the token is shorter than 16 characters",
                path.display()
            );
        }
        Ok(token)
    }

    /// Whether a `Host` header names this listener in a way a web page cannot forge by
    /// DNS rebinding: an IP literal (`127.0.0.1:9477`, `[::1]:9477`), `localhost`, or a
    /// name the operator allowed.
    fn host_ok(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return false;
        };
        let name = if let Some(rest) = host.strip_prefix('[') {
            // [v6]:port
            match rest.split_once(']') {
                Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => return false,
            }
        } else {
            host.rsplit_once(':').map_or(host, |(name, _)| name)
        };
        name.parse::<std::net::Ipv4Addr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Whether the request carries the bearer token (compared in constant time).
    fn authorized(&self, header: Option<&str>) -> bool {
        let (Some(token), Some(header)) = (&self.token, header) else {
            return false;
        };
        let Some(given) = header.strip_prefix("Bearer ") else {
            return false;
        };
        let given = given.trim().as_bytes();
        given.len() == token.len()
            && given
                .iter()
                .zip(token)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Connections served at once; a new one beyond it closes the oldest.
const MAX_CONNECTIONS: usize = 512;
/// Connections one peer address may hold at once; a new one beyond it closes that
/// peer's oldest.
const MAX_PER_PEER: usize = 64;
/// A request head must arrive within this (slow clients are cut off).
const HEADER_DEADLINE: Duration = Duration::from_secs(5);
/// A whole connection lives at most this long.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
/// Pages built from the pinned maps at once (they read every rule's counter).
const MAX_PAGE_BUILDS: usize = 2;

type Body = http_body_util::Full<hyper::body::Bytes>;

fn response(status: u16, content_type: &str, body: String) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(Body::new(body.into()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    let headers = r.headers_mut();
    for (k, v) in [
        ("content-type", content_type),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("connection", "close"),
    ] {
        if let Ok(v) = hyper::header::HeaderValue::from_str(v) {
            headers.insert(k, v);
        }
    }
    r
}

/// Answers one request. Payloads (events: TLS plaintext, DNS names) only with the
/// bearer token; counters and health for any local caller whose `Host` is honest.
async fn route(
    req: hyper::Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
    pages: Arc<tokio::sync::Semaphore>,
) -> hyper::Response<Body> {
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if !shared
        .access
        .host_ok(header(hyper::header::HOST).as_deref())
    {
        return response(
            421,
            "text/plain",
            "this listener answers to IP addresses and localhost only\n".to_string(),
        );
    }
    let method = req.method().clone();
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return response(405, "text/plain", "GET only\n".to_string());
    }
    let path = req.uri().path().to_string();
    let authorized = shared
        .access
        .authorized(header(hyper::header::AUTHORIZATION).as_deref());
    let mut answer = match path.as_str() {
        "/healthz" => {
            let report = shared.health.report();
            if report.is_fresh() {
                response(200, "text/plain", format!("ok {:.1}\n", report.age()))
            } else if let Some(a) = report.activity.as_ref().filter(|_| report.is_busy()) {
                // A long reload: the loop is busy with a step that still reports.
                response(
                    200,
                    "text/plain",
                    format!("busy {:.1} s: {}\n", a.elapsed(), a.what),
                )
            } else {
                response(503, "text/plain", format!("control loop stalled for {:.1} s\n", report.age()))
            }
        }
        "/readyz" => {
            let report = shared.health.report();
            if report.ready {
                response(200, "text/plain", "ready\n".to_string())
            } else {
                response(
                    503,
                    "text/plain",
                    format!("not ready: {}\n", report.not_running().join("; ")),
                )
            }
        }
        "/" | "/index.html" => response(200, "text/html; charset=utf-8", PAGE.to_string()),
        "/uplot.js" => response(200, "text/javascript; charset=utf-8", UPLOT_JS.to_string()),
        "/uplot.css" => response(200, "text/css; charset=utf-8", UPLOT_CSS.to_string()),
        "/api/events" if shared.access.token.is_none() => response(
            403,
            "text/plain",
            "events carry payloads (TLS plaintext, DNS names): start the daemon with --metrics-token-file to serve them\n"
                .to_string(),
        ),
        "/api/events" if !authorized => {
            let mut r = response(401, "text/plain", "a bearer token is needed\n".to_string());
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            r
        }
        "/metrics" | "/api/status" | "/api/history" | "/api/events" => {
            // Reading every rule's counter takes a while at a million rules: off the
            // reactor, and only a few at once.
            let Ok(_permit) = pages.acquire().await else {
                return response(503, "text/plain", "shutting down\n".to_string());
            };
            let built = tokio::task::spawn_blocking(move || match path.as_str() {
                "/metrics" => (
                    "text/plain; version=0.0.4; charset=utf-8",
                    prometheus(&shared),
                ),
                "/api/status" => ("application/json", api_status(&shared).to_string()),
                // Up to an hour of samples: off the reactor as the other pages.
                "/api/history" => ("application/json", shared.history().to_json().to_string()),
                _ => ("application/json", api_events(&shared).to_string()),
            })
            .await;
            match built {
                Ok((kind, body)) => response(200, kind, body),
                Err(e) => response(500, "text/plain", format!("{e}\n")),
            }
        }
        _ => response(404, "text/plain", "not found\n".to_string()),
    };
    if method == hyper::Method::HEAD {
        *answer.body_mut() = Body::new(hyper::body::Bytes::new());
    }
    answer
}

/// One open connection: its id, what closes it, and whether its request head has
/// arrived (it is being answered).
type OpenConnection = (
    u64,
    Arc<tokio::sync::Notify>,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<tokio::net::TcpStream>,
);

/// A connection's socket, shared by its task (hyper reads and writes through it) and
/// the list of open connections, which peeks at it to choose one to close. Written
/// here because hyper takes its I/O by value and tokio's `TcpStream` reads and writes
/// through `&mut` only; these delegate to its `&self` readiness calls.
struct SharedStream(Arc<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for SharedStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            // A would-block clears the readiness tokio had: wait for the next.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for SharedStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Ok(n) => return std::task::Poll::Ready(Ok(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(
            rustix::net::shutdown(&*self.0, rustix::net::Shutdown::Write).map_err(Into::into),
        )
    }
}

/// Whether bytes wait unread on the socket (a request that came after its connection
/// was accepted, before its task read it).
fn has_unread(stream: &tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        rustix::net::recv(
            stream,
            &mut byte,
            rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT
        ),
        Ok((n, _)) if n > 0
    )
}

/// Whose connections share a per-peer limit: the peer's address and, for a peer on this
/// host, the user owning its socket. Every local user connects from the same loopback
/// address; counted as one peer, an unprivileged user opening connections as fast as it
/// can filled the shared queue in the time between a root probe's connect and its
/// request (a client the scheduler held back for a few milliseconds), and the probe's
/// connection, having sent nothing yet, was closed to make room (CI, one `/healthz` in
/// 48 under eight churners). Each local user now has a queue of its own.
type PeerKey = (std::net::IpAddr, Option<u32>);

/// Asks the kernel (sock_diag) which user owns the client end of a connection accepted
/// from this host. One netlink socket, opened with the listener; the kernel answers
/// within the request's `send`, so the `recv` never waits.
struct PeerOwners {
    socket: netlink_sys::Socket,
    seq: u32,
    /// The answers' buffer, kept for the listener's life (one answer is under 200
    /// bytes; a page's worth leaves room for the kernel's attributes).
    answer: Vec<u8>,
}

impl PeerOwners {
    fn open() -> std::io::Result<Self> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            seq: 0,
            answer: Vec::with_capacity(8192),
        })
    }

    /// The owner of the socket at `peer` connected to `local`, if `peer` is a loopback
    /// address and the kernel still knows the socket; `None` otherwise (the limit then
    /// counts the address alone).
    fn uid(&mut self, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
        use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
        use netlink_packet_sock_diag::{
            constants::{AF_INET, AF_INET6, IPPROTO_TCP},
            inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
            SockDiagMessage,
        };
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let (peer, local) = (canonical(peer), canonical(local));
        if !peer.ip().is_loopback() || peer.is_ipv4() != local.is_ipv4() {
            return None;
        }
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.seq;
        // The client's socket: its own end is the peer, its far end our listener.
        let socket_id = SocketId {
            source_port: peer.port(),
            destination_port: local.port(),
            source_address: peer.ip(),
            destination_address: local.ip(),
            interface_id: 0,
            // INET_DIAG_NOCOOKIE: found by its addresses alone.
            cookie: [0xff; 8],
        };
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family: if peer.is_ipv4() { AF_INET } else { AF_INET6 },
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut out = vec![0; request.buffer_len()];
        request.serialize(&mut out);
        if let Err(e) = self.socket.send(&out, 0) {
            tracing::debug!("sock_diag request: {e}");
            return None;
        }
        // Answers to earlier requests a failed receive left behind are skipped by
        // their sequence number.
        loop {
            self.answer.clear();
            if self
                .socket
                .recv(&mut self.answer, libc::MSG_DONTWAIT)
                .is_err()
            {
                return None;
            }
            let Ok(answer) = NetlinkMessage::<SockDiagMessage>::deserialize(&self.answer) else {
                return None;
            };
            if answer.header.sequence_number != self.seq {
                continue;
            }
            return match answer.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    Some(r.header.uid)
                }
                _ => None,
            };
        }
    }
}

/// Open connections, in total and per peer (`PeerKey`), oldest first. When a limit is
/// reached a connection of that peer (or of the peer with the most) is closed to make
/// room: the oldest that has sent nothing its task has not read and is not being
/// answered, else the oldest not being answered, else the oldest. (A request that
/// arrived after its connection was accepted waits on the socket until its task is
/// polled; under a flood of connects the next accepts came first and closed it: 1 of
/// 48 probes in CI, one run in six here with the CPUs busy.) Refusing the
/// new one would let whoever holds connections open lock everyone else out, and every
/// local user shares the loopback address; closing the oldest whatever it does let one
/// that opened and dropped connections fast close a probe's connection between its
/// request and its answer (red team round 3: `/metrics` and `/healthz` stopped
/// answering). A connection being answered is closed last.
#[derive(Default)]
struct Connections {
    total: usize,
    next: u64,
    per_peer: BTreeMap<PeerKey, std::collections::VecDeque<OpenConnection>>,
}

impl Connections {
    /// Registers a new connection from `peer`, closing one where a limit says so.
    fn open(
        &mut self,
        peer: PeerKey,
        stream: &Arc<tokio::net::TcpStream>,
    ) -> (
        u64,
        Arc<tokio::sync::Notify>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let evict_from = if self
            .per_peer
            .get(&peer)
            .is_some_and(|q| q.len() >= MAX_PER_PEER)
        {
            Some(peer)
        } else if self.total >= MAX_CONNECTIONS {
            self.per_peer
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(key, _)| *key)
        } else {
            None
        };
        if let Some(q) = evict_from.and_then(|key| self.per_peer.get_mut(&key)) {
            let answered = |busy: &std::sync::atomic::AtomicBool| {
                busy.load(std::sync::atomic::Ordering::Acquire)
            };
            let victim = q
                .iter()
                .position(|(_, _, busy, s)| !answered(busy) && !has_unread(s))
                .or_else(|| q.iter().position(|(_, _, busy, _)| !answered(busy)))
                .unwrap_or(0);
            if let Some((_, cancel, _, _)) = q.remove(victim) {
                cancel.notify_one();
                self.total -= 1;
            }
        }
        self.next += 1;
        let cancel = Arc::new(tokio::sync::Notify::new());
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.per_peer.entry(peer).or_default().push_back((
            self.next,
            Arc::clone(&cancel),
            Arc::clone(&busy),
            Arc::clone(stream),
        ));
        self.total += 1;
        (self.next, cancel, busy)
    }

    /// A connection ended (unless it was closed to make room, and so already gone).
    fn close(&mut self, peer: PeerKey, id: u64) {
        if let Some(q) = self.per_peer.get_mut(&peer) {
            if let Some(at) = q.iter().position(|(i, _, _, _)| *i == id) {
                q.remove(at);
                self.total -= 1;
            }
            if q.is_empty() {
                self.per_peer.remove(&peer);
            }
        }
    }
}

/// Serves the listener until the process ends: a small async HTTP/1 server (hyper) on
/// one thread, so idle or slow connections cost no thread; head deadline, connection
/// deadline, connection limits in total and per peer.
fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(MAX_PAGE_BUILDS + 1)
        .build()?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let pages = Arc::new(tokio::sync::Semaphore::new(MAX_PAGE_BUILDS));
        let open = Arc::new(Mutex::new(Connections::default()));
        let mut owners = PeerOwners::open()
            .inspect_err(|e| {
                tracing::warn!(
                    "metrics: no sock_diag socket ({e}): local users share one connection limit"
                );
            })
            .ok();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!("metrics accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let stream = Arc::new(stream);
            let owner = match (owners.as_mut(), stream.local_addr()) {
                (Some(owners), Ok(local)) => owners.uid(peer, local),
                _ => None,
            };
            let key = (peer.ip(), owner);
            let (id, cancel, busy) = open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .open(key, &stream);
            let (shared, pages, open) = (Arc::clone(&shared), Arc::clone(&pages), Arc::clone(&open));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    // The head has arrived: this connection is closed last.
                    busy.store(true, std::sync::atomic::Ordering::Release);
                    let (shared, pages) = (Arc::clone(&shared), Arc::clone(&pages));
                    async move { Ok::<_, std::convert::Infallible>(route(req, shared, pages).await) }
                });
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_DEADLINE)
                    .keep_alive(false)
                    .max_buf_size(16 * 1024);
                let conn = http.serve_connection(
                    hyper_util::rt::TokioIo::new(SharedStream(stream)),
                    service,
                );
                tokio::select! {
                    done = tokio::time::timeout(CONNECTION_DEADLINE, conn) => {
                        if let Ok(Err(e)) = done {
                            tracing::debug!("metrics connection from {peer}: {e}");
                        }
                    }
                    () = cancel.notified() => {}
                }
                open.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .close(key, id);
            });
            // The connections' tasks run between two accepts (under a flood of connects
            // `accept` is always ready): a request that came with its connection is
            // read, and its connection marked as being answered, before newer
            // connections could close it.
            tokio::task::yield_now().await;
        }
    })
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The resident set size of this process, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// The page's metric families, collected from the pinned maps and the daemon's state
/// on each request, then written in the Prometheus text format by the `prometheus`
/// crate's encoder (escaping, number formatting, one `# HELP`/`# TYPE` block per
/// family), with the process metrics of its process collector.
#[derive(Default)]
struct Exposition {
    families: Vec<prometheus::proto::MetricFamily>,
}

/// A sample's value: counters and gauges are floats in the exposition format.
trait SampleValue {
    fn value(&self) -> f64;
}

macro_rules! sample_value_as {
    ($($t:ty),*) => {$(
        impl SampleValue for $t {
            #[allow(clippy::cast_precision_loss, clippy::cast_lossless, reason = "Prometheus values are float64")]
            fn value(&self) -> f64 {
                *self as f64
            }
        }
    )*};
}
sample_value_as!(u8, u16, u32, u64, usize, i32, i64, f64);

impl SampleValue for bool {
    fn value(&self) -> f64 {
        if *self {
            1.0
        } else {
            0.0
        }
    }
}

impl<T: SampleValue + ?Sized> SampleValue for &T {
    fn value(&self) -> f64 {
        (**self).value()
    }
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        use prometheus::proto::MetricType;
        let mut family = prometheus::proto::MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(match kind {
            "counter" => MetricType::COUNTER,
            _ => MetricType::GAUGE,
        });
        self.families.push(family);
    }

    /// A sample of the family `name` (the last one of that name opened).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl SampleValue) {
        use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricType};
        let Some(family) = self.families.iter_mut().rev().find(|f| f.name() == name) else {
            debug_assert!(false, "sample of {name} before its family");
            return;
        };
        let mut metric = Metric::default();
        metric.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*k).to_string());
                    pair.set_value((*v).to_string());
                    pair
                })
                .collect(),
        );
        let value = value.value();
        if family.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            metric.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            metric.set_gauge(g);
        }
        family.mut_metric().push(metric);
    }

    /// The text page: every family with samples, then the process's own metrics
    /// (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
    /// `process_open_fds`, `process_start_time_seconds`, ...).
    fn finish(mut self) -> String {
        use prometheus::core::Collector;
        use prometheus::Encoder;
        self.families.retain(|f| !f.get_metric().is_empty());
        self.families
            .extend(prometheus::process_collector::ProcessCollector::for_self().collect());
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.families, &mut out) {
            return format!("# the metrics could not be written: {e}\n");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn action_name(rule: &RuleStatus) -> String {
    format!("{:?}", rule.action).to_lowercase()
}

fn shield_metrics(out: &mut Exposition, status: &ShieldStatus) {
    let families = [
        (
            "ironclad_shield_rule_packets_total",
            "Packets that matched a Shield rule: dropped (deny), passed (allow), or counted only in dry-run.",
        ),
        (
            "ironclad_shield_rule_bytes_total",
            "Bytes of the packets that matched a Shield rule.",
        ),
    ];
    for (family, help) in families {
        out.family(family, "counter", help);
        for rule in &status.rules {
            let (name, action) = (rule.label.to_string(), action_name(rule));
            let value = if family.ends_with("packets_total") {
                rule.counter.packets
            } else {
                rule.counter.bytes
            };
            out.sample(family, &[("rule", &name), ("action", &action)], value);
        }
    }
    for (family, help, packets) in [
        (
            "ironclad_shield_packets_total",
            "Packets the Shield saw, by verdict.",
            true,
        ),
        (
            "ironclad_shield_bytes_total",
            "Bytes the Shield saw, by verdict.",
            false,
        ),
    ] {
        out.family(family, "counter", help);
        for (t, c) in status
            .totals
            .iter()
            .filter(|(t, _)| !matches!(t, ShieldTotal::EventsLost | ShieldTotal::EventsOverBudget))
        {
            let value = if packets { c.packets } else { c.bytes };
            out.sample(family, &[("verdict", t.name())], value);
        }
    }
    out.family(
        "ironclad_shield_rules",
        "gauge",
        "Rules loaded in the Shield.",
    );
    out.sample("ironclad_shield_rules", &[], status.rules.len());
    out.family(
        "ironclad_map_memory_bytes",
        "gauge",
        "Kernel memory of each Shield map.",
    );
    for m in &status.memory {
        out.sample("ironclad_map_memory_bytes", &[("map", &m.name)], m.bytes);
    }
}

fn source_metrics(out: &mut Exposition, sources: &[SourceStat]) {
    if sources.is_empty() {
        return;
    }
    out.family(
        "ironclad_source_prefixes",
        "gauge",
        "Prefixes a feed or country contributes after aggregation, by family.",
    );
    for s in sources {
        for (family, n) in [("ipv4", s.ipv4), ("ipv6", s.ipv6)] {
            out.sample(
                "ironclad_source_prefixes",
                &[("source", &s.name), ("family", family)],
                n,
            );
        }
    }
    let now = SystemTime::now();
    let age = |s: &SourceStat| {
        s.modified
            .and_then(|m| now.duration_since(m).ok())
            .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
    };
    out.family(
        "ironclad_feed_age_seconds",
        "gauge",
        "Seconds since a feed's data was last confirmed: a file's modification time, a fetched feed's last successful download.",
    );
    for s in sources.iter().filter(|s| s.feed) {
        if let Some(age) = age(s) {
            out.sample("ironclad_feed_age_seconds", &[("feed", &s.name)], age);
        }
    }
    out.family(
        "ironclad_feed_skipped_entries",
        "gauge",
        "Bad entries a lenient feed skipped when it was last read.",
    );
    for s in sources.iter().filter(|s| s.feed) {
        out.sample(
            "ironclad_feed_skipped_entries",
            &[("feed", &s.name)],
            s.skipped,
        );
    }
    if let Some(geo) = sources.iter().find(|s| !s.feed) {
        if let Some(age) = age(geo) {
            out.family(
                "ironclad_geoip_database_age_seconds",
                "gauge",
                "Seconds since the GeoIP database file was modified.",
            );
            out.sample("ironclad_geoip_database_age_seconds", &[], age);
        }
    }
}

/// The whole `/metrics` page.
fn prometheus(shared: &Shared) -> String {
    let mut out = Exposition::default();
    out.family(
        "ironclad_build_info",
        "gauge",
        "The full_firewall version, as a label.",
    );
    out.sample(
        "ironclad_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    {
        let state = shared.state();
        out.family(
            "ironclad_policy_serial",
            "gauge",
            "The applied policy's serial: 1 at start, one more for each applied reload.",
        );
        out.sample("ironclad_policy_serial", &[], state.policy_serial);
        out.family(
            "ironclad_policy_load_timestamp_seconds",
            "gauge",
            "When the applied policy was loaded (Unix time).",
        );
        out.sample(
            "ironclad_policy_load_timestamp_seconds",
            &[],
            (unix_seconds(state.policy_loaded_at) * 1000.0).round() / 1000.0,
        );
        out.family(
            "ironclad_policy_reload_failures_total",
            "counter",
            "Reloads refused (invalid policy) or failed (the kernel refused); the old policy stayed.",
        );
        out.sample(
            "ironclad_policy_reload_failures_total",
            &[],
            state.reload_failures,
        );
        out.family(
            "ironclad_policy_rollbacks_total",
            "counter",
            "Reloads not confirmed within --confirm-within, whose previous policy came back.",
        );
        out.sample("ironclad_policy_rollbacks_total", &[], state.rollbacks);
        source_metrics(&mut out, &state.sources);
        if !state.fetches.is_empty() {
            out.family(
                "ironclad_feed_fetches_total",
                "counter",
                "Downloads of a feed with a url, by result (ok: 200 or 304; failed: the last good copy stayed).",
            );
            for (feed, (ok, failed)) in &state.fetches {
                out.sample(
                    "ironclad_feed_fetches_total",
                    &[("feed", feed), ("result", "ok")],
                    ok,
                );
                out.sample(
                    "ironclad_feed_fetches_total",
                    &[("feed", feed), ("result", "failed")],
                    failed,
                );
            }
        }
        let report = shared.health.report();
        out.family(
            "ironclad_ready",
            "gauge",
            "1 when every feature the policy configures runs; 0 when the daemon runs degraded (fail-open: some of the policy is not enforced).",
        );
        out.sample("ironclad_ready", &[], u8::from(report.ready));
        out.family(
            "ironclad_records_lost_total",
            "counter",
            "Records a sink could not write (the events file, the audit log: full disk, I/O errors), by sink.",
        );
        for (sink, lost) in &report.losses {
            out.sample("ironclad_records_lost_total", &[("sink", sink)], lost);
        }
        out.family(
            "ironclad_feature_reloads_total",
            "counter",
            "What reloads did to each feature: applied, kept (nothing for it changed), started, stopped, failed (its old policy stayed).",
        );
        for ((feature, outcome), n) in &state.feature_reloads {
            out.sample(
                "ironclad_feature_reloads_total",
                &[("feature", feature), ("result", outcome)],
                n,
            );
        }
        out.family(
            "ironclad_feature_applied_timestamp_seconds",
            "gauge",
            "When each feature's policy was last written to the kernel (Unix time): at start, or by the last reload that applied or started it.",
        );
        for (feature, at) in &state.feature_applied {
            out.sample(
                "ironclad_feature_applied_timestamp_seconds",
                &[("feature", feature)],
                (unix_seconds(*at) * 1000.0).round() / 1000.0,
            );
        }
        out.family(
            "ironclad_program_up",
            "gauge",
            "1 when a feature is loaded and enforcing or reporting, 0 when it is configured but disabled.",
        );
        for (name, program) in &state.programs {
            out.sample(
                "ironclad_program_up",
                &[("program", name)],
                u8::from(program.up),
            );
        }
    }
    let shield = Shield::status_from_pins(&shared.pin_root).ok();
    if let Some(status) = &shield {
        shield_metrics(&mut out, status);
    }
    let egress = EgressFirewall::status_from_pins(&shared.pin_root).ok();
    if let Some(status) = &egress {
        out.family(
            "ironclad_egress_rule_decisions_total",
            "counter",
            "connect()/sendmsg() calls decided by an egress rule.",
        );
        let labels = shared.state().egress_rules.clone();
        for (id, hits) in &status.rules {
            let rule = labels
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("rule {id}"));
            out.sample(
                "ironclad_egress_rule_decisions_total",
                &[("rule", &rule)],
                hits,
            );
        }
        out.family(
            "ironclad_egress_decisions_total",
            "counter",
            "connect()/sendmsg() decisions of the egress firewall, by verdict.",
        );
        for (t, n) in status
            .totals
            .iter()
            .filter(|(t, _)| *t != EgressTotal::EventsLost)
        {
            out.sample(
                "ironclad_egress_decisions_total",
                &[("verdict", t.name())],
                n,
            );
        }
    }
    if let Some(d) = EgressFirewall::domain_status_from_pins(&shared.pin_root)
        .ok()
        .filter(|d| d.active)
    {
        domain_metrics(&mut out, &d);
    }
    let firewall = Firewall::status_from_pins(&shared.pin_root).ok();
    if let Some(status) = &firewall {
        let rules = shared.state().firewall_rules.clone();
        firewall_metrics(&mut out, status, &rules);
    }
    out.family(
        "ironclad_kernel_events_lost_total",
        "counter",
        "Events the kernel could not report because a ring buffer was full, by source.",
    );
    if let Some((_, c)) = shield
        .as_ref()
        .and_then(|s| s.totals.iter().find(|(t, _)| *t == ShieldTotal::EventsLost))
    {
        out.sample(
            "ironclad_kernel_events_lost_total",
            &[("source", "shield")],
            c.packets,
        );
    }
    if let Some((_, n)) = egress
        .as_ref()
        .and_then(|e| e.totals.iter().find(|(t, _)| *t == EgressTotal::EventsLost))
    {
        out.sample(
            "ironclad_kernel_events_lost_total",
            &[("source", "egress")],
            n,
        );
    }
    if let Some((_, c)) = firewall
        .as_ref()
        .and_then(|f| f.totals.iter().find(|(t, _)| *t == FwTotal::EventsLost))
    {
        out.sample(
            "ironclad_kernel_events_lost_total",
            &[("source", "firewall")],
            c.packets,
        );
    }
    // The IDS's payload snippets: a ring of their own.
    if let Some((_, c)) = firewall
        .as_ref()
        .and_then(|f| f.totals.iter().find(|(t, _)| *t == FwTotal::IdsLost))
    {
        out.sample(
            "ironclad_kernel_events_lost_total",
            &[("source", "ids")],
            c.packets,
        );
    }
    if let Ok(n) = Telemetry::lost_dns_events_from_pins(&shared.pin_root) {
        out.sample("ironclad_kernel_events_lost_total", &[("source", "dns")], n);
    }
    let kernel_counters = shared.state().kernel_counters.clone();
    // Telemetry's lost records are its DNS ring's: `dns` above.
    for (feature, counters) in kernel_counters.iter().filter(|(f, _)| **f != "telemetry") {
        for (_, n) in counters.iter().filter(|(c, _)| *c == "events_lost") {
            out.sample(
                "ironclad_kernel_events_lost_total",
                &[("source", feature)],
                *n,
            );
        }
    }
    out.family(
        "ironclad_feature_kernel_total",
        "counter",
        "Counters features keep in the kernel besides their events and status, by feature and counter: tls withheld_bytes (plaintext over the per-second budget, not captured), processes records (written by the kernel) and not_cached (new processes a full cache had no room for).",
    );
    for (feature, counters) in &kernel_counters {
        for (counter, n) in counters.iter().filter(|(c, _)| *c != "events_lost") {
            out.sample(
                "ironclad_feature_kernel_total",
                &[("feature", feature), ("counter", counter)],
                *n,
            );
        }
    }
    out.family(
        "ironclad_kernel_events_over_budget_total",
        "counter",
        "Sampled drops not reported because their CPU had reached the events-per-second cap.",
    );
    if let Some((_, c)) = shield.as_ref().and_then(|s| {
        s.totals
            .iter()
            .find(|(t, _)| *t == ShieldTotal::EventsOverBudget)
    }) {
        out.sample(
            "ironclad_kernel_events_over_budget_total",
            &[("source", "shield")],
            c.packets,
        );
    }
    let subscribers = shared.fanout.stats();
    out.family(
        "ironclad_events_delivered_total",
        "counter",
        "Events delivered to each in-process subscriber.",
    );
    for (name, stats) in &subscribers {
        out.sample(
            "ironclad_events_delivered_total",
            &[("subscriber", name)],
            stats.delivered,
        );
    }
    out.family(
        "ironclad_events_dropped_total",
        "counter",
        "Events dropped for an in-process subscriber whose queue was full.",
    );
    for (name, stats) in &subscribers {
        out.sample(
            "ironclad_events_dropped_total",
            &[("subscriber", name)],
            stats.dropped,
        );
    }
    out.family(
        "ironclad_events_by_kind_total",
        "counter",
        "Events by kind (shield_drop, flow, tls, sentinel, ...), as the metrics listener \
         received them: those dropped for it, ironclad_events_dropped_total{subscriber=\"dashboard\"}, \
         are not counted.",
    );
    for (kind, n) in &shared.state().events_by_kind {
        out.sample("ironclad_events_by_kind_total", &[("kind", kind)], *n);
    }
    out.finish()
}

/// The domain policy: DNS read, addresses opened and denied, per feed.
fn domain_metrics(out: &mut Exposition, d: &ironclad_bpf::egress::DomainStatus) {
    out.family(
        "ironclad_egress_dns_total",
        "counter",
        "DNS traffic the domain policy read, by what became of it (queries, responses, opened, denied, unsolicited, malformed, oversized, split, query_blocked, connect_denied, untracked).",
    );
    for (t, n) in d
        .totals
        .iter()
        .filter(|(t, _)| *t != ironclad_core::abi::DnsTotal::EventsLost)
    {
        out.sample("ironclad_egress_dns_total", &[("what", t.name())], n);
    }
    out.family(
        "ironclad_egress_domain_addresses",
        "gauge",
        "Addresses open now: by a DNS answer for a dst_domain pattern (per executable that received it), or denied as a domain feed's.",
    );
    out.sample(
        "ironclad_egress_domain_addresses",
        &[("state", "opened")],
        d.opened.len(),
    );
    out.sample(
        "ironclad_egress_domain_addresses",
        &[("state", "denied")],
        d.denied.len(),
    );
    out.family(
        "ironclad_egress_domain_feed_total",
        "counter",
        "Per domain feed: queries for its names, of which blocked, addresses its names resolved to, connect()s to them refused.",
    );
    for f in &d.feeds {
        for (c, n) in &f.counters {
            out.sample(
                "ironclad_egress_domain_feed_total",
                &[("feed", &f.name), ("counter", c.name())],
                n,
            );
        }
    }
}

/// The stateful firewall's verdicts, per-rule counters and table use.
fn firewall_metrics(
    out: &mut Exposition,
    status: &FirewallStatus,
    rules: &BTreeMap<u32, ironclad_bpf::FwRuleLabel>,
) {
    use ironclad_core::abi::FwTotal;
    let total = |t: FwTotal| {
        status
            .totals
            .iter()
            .find(|(x, _)| *x == t)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    };
    // Verdicts: each packet the firewall's programs see is counted under exactly one,
    // so a sum over `verdict` is every packet. What the other totals say (why a drop,
    // NAT, the IDS, SYN cookies, lost events) overlaps with them: their own families.
    for (family, help, bytes) in [
        (
            "ironclad_firewall_packets_total",
            "Packets through the stateful firewall, by verdict (each packet under one).",
            false,
        ),
        (
            "ironclad_firewall_bytes_total",
            "Bytes through the stateful firewall, by verdict (each packet under one).",
            true,
        ),
    ] {
        out.family(family, "counter", help);
        for t in FwTotal::VERDICTS {
            let c = total(t);
            out.sample(
                family,
                &[("verdict", t.name())],
                if bytes { c.bytes } else { c.packets },
            );
        }
    }
    out.family(
        "ironclad_firewall_drop_reasons_total",
        "counter",
        "Why packets were dropped besides a rule's or the default policy's action: each is also counted in ironclad_firewall_packets_total (as dropped, or under the verdict it had before NAT or the IDS dropped it).",
    );
    for (reason, t) in [
        ("rate_limited", FwTotal::RateLimited),
        ("limit_source", FwTotal::LimitSource),
        ("limit_subnet", FwTotal::LimitSubnet),
        ("limit_port", FwTotal::LimitPort),
        ("limit_interface", FwTotal::LimitInterface),
        ("nat_no_port", FwTotal::NatNoPort),
        ("nat_failed", FwTotal::NatFailed),
        ("ids_blocked", FwTotal::IdsBlocked),
        ("ids_kernel_matched", FwTotal::IdsKernelMatched),
    ] {
        out.sample(
            "ironclad_firewall_drop_reasons_total",
            &[("reason", reason)],
            total(t).packets,
        );
    }
    out.family(
        "ironclad_firewall_rejects_sent_total",
        "counter",
        "Answers (TCP RST, ICMP unreachable) sent for packets a reject rule refused.",
    );
    out.sample(
        "ironclad_firewall_rejects_sent_total",
        &[],
        total(FwTotal::Rejected).packets,
    );
    out.family(
        "ironclad_firewall_would_drop_packets_total",
        "counter",
        "Dry-run: packets the policy would have dropped, passed.",
    );
    out.sample(
        "ironclad_firewall_would_drop_packets_total",
        &[],
        total(FwTotal::WouldDrop).packets,
    );
    out.family(
        "ironclad_firewall_syn_cookies_total",
        "counter",
        "The SYN-flood defence: SYNs answered with a cookie (sent), handshakes completed with a valid one (accepted), ACKs with none (invalid; also verdict=\"invalid\").",
    );
    for (outcome, t) in [
        ("sent", FwTotal::SynCookies),
        ("accepted", FwTotal::CookieAccepted),
        ("invalid", FwTotal::CookieInvalid),
    ] {
        out.sample(
            "ironclad_firewall_syn_cookies_total",
            &[("outcome", outcome)],
            total(t).packets,
        );
    }
    out.family(
        "ironclad_firewall_nat_translated_packets_total",
        "counter",
        "Packets NAT rewrote (either direction).",
    );
    out.sample(
        "ironclad_firewall_nat_translated_packets_total",
        &[],
        total(FwTotal::NatTranslated).packets,
    );
    out.family(
        "ironclad_firewall_ids_snippets_total",
        "counter",
        "Payload snippets handed to the IDS matcher.",
    );
    out.sample(
        "ironclad_firewall_ids_snippets_total",
        &[],
        total(FwTotal::IdsSnippets).packets,
    );
    out.family(
        "ironclad_firewall_ids_snippet_bytes_total",
        "counter",
        "Payload bytes handed to the IDS matcher.",
    );
    out.sample(
        "ironclad_firewall_ids_snippet_bytes_total",
        &[],
        total(FwTotal::IdsSnippets).bytes,
    );
    out.family(
        "ironclad_firewall_rule_packets_total",
        "counter",
        "Packets that started a connection (or were decided, stateless) by a firewall rule, by the rule's name (firewall.rules[N], or api-N for a rule the control API added).",
    );
    let name = |id: &u32| crate::status::counter_name(*id, rules.get(id).map(|l| l.name.as_str()));
    for (id, c) in &status.rules {
        out.sample(
            "ironclad_firewall_rule_packets_total",
            &[("rule", &name(id))],
            c.packets,
        );
    }
    out.family(
        "ironclad_firewall_rule_info",
        "gauge",
        "1 for each live firewall rule: its name, what it matches and does, and its comment.",
    );
    for (id, _) in &status.rules {
        let label = rules.get(id);
        out.sample(
            "ironclad_firewall_rule_info",
            &[
                ("rule", &name(id)),
                ("matches", label.map_or("", |l| l.summary.as_str())),
                (
                    "comment",
                    label.and_then(|l| l.comment.as_deref()).unwrap_or(""),
                ),
            ],
            1,
        );
    }
    out.family(
        "ironclad_firewall_connections",
        "gauge",
        "Connections in the firewall's table (expired ones not yet swept included).",
    );
    out.sample("ironclad_firewall_connections", &[], status.connections);
    out.family(
        "ironclad_firewall_syn_flood_mode",
        "gauge",
        "1 for the SYN-flood defence's mode (off, always, under_attack).",
    );
    for mode in ["off", "always", "under_attack"] {
        out.sample(
            "ironclad_firewall_syn_flood_mode",
            &[("mode", mode)],
            u64::from(status.syn_flood.mode.name() == mode),
        );
    }
    out.family(
        "ironclad_firewall_syn_flood_attacks_total",
        "counter",
        "Times SYNs to the protected ports crossed the under_attack threshold.",
    );
    out.sample(
        "ironclad_firewall_syn_flood_attacks_total",
        &[],
        status.syn_state.attacks,
    );
    // NAT rules by position and kind: a rule's label is its place in the policy
    // (`nat.dnat[0]`), which a reload that keeps the rules keeps.
    out.family(
        "ironclad_firewall_nat_packets_total",
        "counter",
        "Packets each NAT rule translated (both directions).",
    );
    for (kind, counters) in [
        ("dnat", &status.nat.forward_counters),
        ("snat", &status.nat.source_counters),
    ] {
        for (i, c) in counters.iter().enumerate() {
            out.sample(
                "ironclad_firewall_nat_packets_total",
                &[("rule", &format!("nat.{kind}[{i}]"))],
                c.packets,
            );
        }
    }
    out.family(
        "ironclad_firewall_nat_connections",
        "gauge",
        "Connections NAT translates now.",
    );
    out.sample(
        "ironclad_firewall_nat_connections",
        &[],
        (status.nat.entries / 2) as u64,
    );
    out.family(
        "ironclad_firewall_limit_per_second",
        "gauge",
        "The rate limits on new inbound connections, by limit (0: off); their refusals are ironclad_firewall_drop_reasons_total{reason=\"limit_<limit>\"}.",
    );
    for kind in ironclad_bpf::FwLimitKind::ALL {
        out.sample(
            "ironclad_firewall_limit_per_second",
            &[("limit", kind.name())],
            status
                .limits
                .get(kind)
                .map_or(0, |r| u64::from(r.per_second)),
        );
    }
}

/// The dashboard's data.
fn api_status(shared: &Shared) -> serde_json::Value {
    let shield = Shield::status_from_pins(&shared.pin_root)
        .ok()
        .map(|mut s| {
            let total_rules = s.rules.len();
            s.rules.sort_by(|a, b| {
                b.counter
                    .packets
                    .cmp(&a.counter.packets)
                    .then(a.rule_id.cmp(&b.rule_id))
            });
            s.rules.truncate(TOP_RULES);
            let mut json = status::to_json(&s);
            json["rules_total"] = total_rules.into();
            json
        });
    let egress_names = shared.state().egress_names.clone();
    let egress = EgressFirewall::status_from_pins(&shared.pin_root)
        .ok()
        .map(|e| status::egress_json(&e, &egress_names));
    let firewall = Firewall::status_from_pins(&shared.pin_root)
        .ok()
        .map(|mut f| {
            let names = status::firewall_rule_names(&shared.state().firewall_rules);
            f.rules
                .sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(&b.0)));
            let total_rules = f.rules.len();
            f.rules.truncate(TOP_RULES);
            let mut json = status::firewall_json(&f, &names);
            json["rules_total"] = total_rules.into();
            json
        });
    // The domain policy's DNS totals: the egress row's counters.
    let dns_totals: Vec<(&'static str, u64)> =
        EgressFirewall::dns_totals_from_pins(&shared.pin_root)
            .map(|totals| {
                totals
                    .iter()
                    .map(|(t, n)| match t {
                        ironclad_core::abi::DnsTotal::EventsLost => ("dns_events_lost", *n),
                        t => (t.name(), *n),
                    })
                    .collect()
            })
            .unwrap_or_default();
    let state = shared.state();
    // The process cache runs with the daemon, as no feature of the policy: its row
    // when it runs.
    let cache = state.kernel_counters.contains_key("processes").then(|| {
        (
            "processes".to_string(),
            Program {
                up: true,
                detail: "process cache".to_string(),
            },
        )
    });
    let programs: Vec<serde_json::Value> = state
        .programs
        .iter()
        .chain(cache.as_ref().map(|(n, p)| (n, p)))
        .map(|(name, p)| {
            // The events this feature reported, by kind (none listed before its first).
            let kinds = history::EVENT_FEATURES
                .iter()
                .find(|(id, _)| id.strip_prefix("events_") == Some(name.as_str()))
                .map_or(&[][..], |(_, kinds)| *kinds);
            let events: BTreeMap<&str, u64> = kinds
                .iter()
                .filter_map(|k| state.events_by_kind.get(k).map(|n| (*k, *n)))
                .collect();
            // What it counts in the kernel besides (events lost, bytes withheld, ...).
            let mut counters: BTreeMap<&str, u64> = state
                .kernel_counters
                .get(name.as_str())
                .into_iter()
                .flatten()
                .copied()
                .collect();
            if name == "egress" {
                counters.extend(dns_totals.iter().copied());
            }
            serde_json::json!({"name": name, "up": p.up, "detail": p.detail, "events": events, "counters": counters})
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": shared.config.display().to_string(),
        "policy": {
            "serial": state.policy_serial,
            "loaded_at": unix_seconds(state.policy_loaded_at),
            "reload_failures": state.reload_failures,
            "history": state.reloads.iter().rev().cloned().collect::<Vec<_>>(),
        },
        "programs": programs,
        "shield": shield,
        "firewall": firewall,
        "egress": egress,
        "events": {
            "seen": state.events_seen,
            "by_kind": state.events_by_kind,
            "dropped": shared.fanout.stats().into_iter().find(|(name, _)| name == "dashboard").map_or(0, |(_, s)| s.dropped),
            "served_at": if shared.access.token.is_some() { "/api/events (bearer token)" } else { "not served (no --metrics-token-file)" },
        },
        "ready": shared.health.report().ready,
        "memory": {"resident_bytes": resident_bytes()},
    })
}

/// The recent events (payloads included), for token holders.
fn api_events(shared: &Shared) -> serde_json::Value {
    // The top talkers read every connection's counters: at most once per history
    // interval, however many pages poll (each every second).
    let (interval, cached) = {
        let history = shared.history();
        (history.interval(), history.talkers.clone())
    };
    let talkers = match cached.filter(|(at, _)| at.elapsed() < interval) {
        Some((_, talkers)) => talkers,
        None => {
            // None (`null`) without a connection table to read: the stateful firewall
            // does not run, which the page says rather than "none".
            let talkers = Firewall::connections_from_pins(&shared.pin_root)
                .map(|c| history::top_talkers(&c, TOP_SHOWN))
                .ok();
            shared.history().talkers = Some((std::time::Instant::now(), talkers.clone()));
            talkers
        }
    };
    let state = shared.state();
    serde_json::json!({
        "seen": state.events_seen,
        "recent": state.recent.iter().rev().cloned().collect::<Vec<_>>(),
        "top_sources": top(&state.drop_sources, "src"),
        "top_processes": top(&state.refused_processes, "process"),
        "top_talkers": talkers,
        // null until telemetry reports bandwidth (`telemetry: bandwidth: true`).
        "top_talking_processes": state.talking_processes.as_ref().map(top_talking),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bandwidth(
        pid: u32,
        comm: &str,
        exe: Option<&str>,
        sent: u64,
        received: u64,
    ) -> ironclad_events::BandwidthSample {
        let mut sample = ironclad_events::BandwidthSample::default();
        sample.pid = pid;
        sample.comm = Some(comm.to_string());
        sample.exe = exe.map(str::to_string);
        sample.tx_bytes = sent;
        sample.rx_bytes = received;
        sample
    }

    #[test]
    fn talking_processes_keep_their_executable_past_exit_rank_by_bytes_and_stay_bounded() {
        let mut map = HashMap::new();
        record_talking(
            &mut map,
            &bandwidth(7, "curl", Some("/usr/bin/curl"), 10, 100),
        );
        // Its last report, after it exited: the command name only.
        record_talking(&mut map, &bandwidth(7, "curl", None, 20, 5_000));
        assert_eq!(map[&7].process, "/usr/bin/curl");
        assert_eq!((map[&7].sent, map[&7].received), (20, 5_000));
        record_talking(
            &mut map,
            &bandwidth(8, "python3", Some("/usr/bin/python3.11"), 9_000, 0),
        );
        let top = top_talking(&map);
        assert_eq!(top[0]["pid"], 8, "{top:?}");
        assert_eq!(top[1]["process"], "/usr/bin/curl", "{top:?}");
        // The pid reused by another process: its counters start again, and the name
        // of the one before is not carried over.
        record_talking(&mut map, &bandwidth(7, "wget", None, 0, 3));
        assert_eq!(map[&7].process, "wget");
        // A flood of processes: bounded, and the largest kept.
        for pid in 100..(100 + 3 * TOP_TRACKED as u32) {
            record_talking(&mut map, &bandwidth(pid, "x", None, u64::from(pid), 0));
        }
        assert!(map.len() <= TOP_TRACKED, "{}", map.len());
        let top = top_talking(&map);
        assert_eq!(top.len(), TOP_SHOWN);
        assert_eq!(
            top[0]["pid"],
            100 + 3 * TOP_TRACKED as u64 - 1,
            "{:?}",
            top[0]
        );
    }

    /// Runs `test` on the server's kind of runtime with a listener on 127.0.0.1.
    fn on_a_loopback_listener<F, T>(test: T)
    where
        T: FnOnce(tokio::net::TcpListener, SocketAddr) -> F,
        F: std::future::Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            test(listener, addr).await;
        });
    }

    /// Making room closes the oldest connection with nothing unread and no answer
    /// under way: not the oldest, whose request came after it was accepted and waits
    /// unread on its socket, nor one being answered.
    #[test]
    fn room_is_made_by_closing_what_sent_nothing_and_not_a_waiting_request() {
        use std::io::Write;
        on_a_loopback_listener(|listener, addr| async move {
            let mut open = Connections::default();
            let mut clients = Vec::new();
            let mut handles = Vec::new();
            for i in 0..MAX_PER_PEER {
                let mut client = std::net::TcpStream::connect(addr).expect("connect");
                if i == 0 {
                    // The oldest: its request arrives and is not read yet.
                    client
                        .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
                        .expect("write");
                }
                let (stream, peer) = listener.accept().await.expect("accept");
                let stream = Arc::new(stream);
                let (id, cancel, busy) = open.open((peer.ip(), None), &stream);
                if i == 1 {
                    // The second: being answered.
                    busy.store(true, std::sync::atomic::Ordering::Release);
                }
                handles.push((id, cancel, stream));
                clients.push(client);
            }
            // Give the request time to reach the socket.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let (stream, peer) = listener.accept().await.expect("accept");
            open.open((peer.ip(), None), &Arc::new(stream));
            let ids: Vec<u64> = open.per_peer[&(peer.ip(), None)]
                .iter()
                .map(|c| c.0)
                .collect();
            assert_eq!(ids.len(), MAX_PER_PEER);
            assert!(ids.contains(&handles[0].0), "the waiting request stays");
            assert!(ids.contains(&handles[1].0), "the answer under way stays");
            assert!(
                !ids.contains(&handles[2].0),
                "the oldest that sent nothing goes"
            );
        });
    }

    /// sock_diag names the user owning the client end of a loopback connection, and
    /// nothing for an address that is not a loopback one.
    #[test]
    fn a_loopback_peer_is_named_by_the_user_owning_its_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(local).expect("connect");
        let (_server, peer) = listener.accept().expect("accept");
        assert_eq!(peer, client.local_addr().expect("client addr"));
        let mut owners = PeerOwners::open().expect("sock_diag socket");
        assert_eq!(
            owners.uid(peer, local),
            Some(rustix::process::geteuid().as_raw())
        );
        // Twice: the second answer is the second request's, not a leftover.
        assert_eq!(
            owners.uid(peer, local),
            Some(rustix::process::geteuid().as_raw())
        );
        let remote: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
        assert_eq!(owners.uid(remote, local), None);
        // A loopback address with no such connection: not found, no owner.
        let gone: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert_eq!(owners.uid(gone, local), None);
    }

    /// One local user's full queue closes only its own connections: another user's
    /// connection from the same address that has sent nothing yet stays.
    #[test]
    fn one_users_connections_never_close_another_users() {
        on_a_loopback_listener(|listener, addr| async move {
            let ip = addr.ip();
            let mut open = Connections::default();
            let mut clients = Vec::new();
            let _probe = std::net::TcpStream::connect(addr).expect("connect");
            let (stream, _) = listener.accept().await.expect("accept");
            let (probe, _, _) = open.open((ip, Some(0)), &Arc::new(stream));
            for _ in 0..2 * MAX_PER_PEER {
                clients.push(std::net::TcpStream::connect(addr).expect("connect"));
                let (stream, _) = listener.accept().await.expect("accept");
                open.open((ip, Some(65534)), &Arc::new(stream));
            }
            assert_eq!(open.per_peer[&(ip, Some(65534))].len(), MAX_PER_PEER);
            assert_eq!(
                open.per_peer[&(ip, Some(0))]
                    .iter()
                    .map(|c| c.0)
                    .collect::<Vec<_>>(),
                vec![probe]
            );
        });
    }

    #[test]
    fn exposition_lines() {
        let mut out = Exposition::default();
        out.family("ironclad_x_total", "counter", "An x.");
        out.sample(
            "ironclad_x_total",
            &[("rule", "10.0.0.0/8"), ("action", "deny")],
            7,
        );
        out.sample("ironclad_x_total", &[("rule", "a\"b\\c\nd")], 1);
        out.family("ironclad_empty", "gauge", "No samples: left out.");
        out.family("ironclad_y_seconds", "gauge", "A y.");
        out.sample("ironclad_y_seconds", &[], 0.25);
        let page = out.finish();
        assert!(
            page.starts_with(
                "# HELP ironclad_x_total An x.\n# TYPE ironclad_x_total counter\n\
                 ironclad_x_total{rule=\"10.0.0.0/8\",action=\"deny\"} 7\n\
                 ironclad_x_total{rule=\"a\\\"b\\\\c\\nd\"} 1\n\
                 # HELP ironclad_y_seconds A y.\n# TYPE ironclad_y_seconds gauge\n\
                 ironclad_y_seconds 0.25\n"
            ),
            "{page}"
        );
        assert!(!page.contains("ironclad_empty"), "{page}");
        // The process collector's families follow.
        assert!(page.contains("\nprocess_resident_memory_bytes "), "{page}");
        assert!(page.contains("\nprocess_start_time_seconds "), "{page}");
        assert!(page.contains("\nprocess_open_fds "), "{page}");
    }
}
