//! `run --metrics ADDR:PORT`: Prometheus metrics, a JSON status API and a live dashboard
//! on one HTTP listener.
//!
//! | path | what |
//! |---|---|
//! | `/metrics` | Prometheus text format 0.0.4 |
//! | `/` | the dashboard: one self-contained page (no external resources) polling `/api/status` |
//! | `/api/status` | JSON: programs, policy, Shield rules (top 200 by packets) and totals, egress, recent events |
//!
//! Counters are read from the pinned maps on each request, so they are the kernel's
//! own numbers at that moment. Recent events come from a subscription to the daemon's
//! event fan-out. The listener answers `GET` only; it is meant for loopback or a
//! management network (it has no authentication), and binding happens before anything
//! is loaded, so a bad address changes nothing.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use ironclad_bpf::{EgressFirewall, RuleStatus, Shield, ShieldStatus, Telemetry};
use ironclad_core::abi::{EgressTotal, ShieldTotal};
use ironclad_events::{Event, Fanout, Overflow};
use ironclad_policy::shield::CompiledShield;
use ironclad_policy::sources::SourceKind;
use tracing::{info, warn};

use crate::status;

/// The dashboard page, served as is.
const PAGE: &str = include_str!("dashboard.html");
/// How many recent events `/api/status` returns.
const RECENT_EVENTS: usize = 50;
/// How many rules `/api/status` returns (those with the most packets).
const TOP_RULES: usize = 200;
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 16;
/// The longest request head read.
const MAX_REQUEST_HEAD: u64 = 8 * 1024;

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
                let ipv4 = set.map_or(0, |s| s.prefixes.iter().filter(|n| n.is_ipv4()).count());
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
    programs: BTreeMap<&'static str, Program>,
    recent: VecDeque<serde_json::Value>,
    events_seen: u64,
    sources: Vec<SourceStat>,
    /// Per fetched feed: successful and failed downloads.
    fetches: BTreeMap<String, (u64, u64)>,
}

struct Shared {
    pin_root: PathBuf,
    config: PathBuf,
    fanout: Arc<Fanout<Event>>,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still readable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The daemon's handle on the listener: it reports what it loaded and applied.
#[derive(Clone)]
pub(crate) struct Metrics {
    shared: Arc<Shared>,
}

impl Metrics {
    /// Binds `addr` (before anything is loaded: an address in use is an error that
    /// changes nothing) and starts serving.
    pub(crate) fn start(
        addr: SocketAddr,
        pin_root: PathBuf,
        config: PathBuf,
        fanout: Arc<Fanout<Event>>,
    ) -> Result<Self> {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("--metrics {addr}: cannot listen"))?;
        let local = listener.local_addr().context("--metrics: local address")?;
        let subscription = fanout.subscribe("dashboard", 256, Overflow::DropOldest);
        let shared = Arc::new(Shared {
            pin_root,
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
                sources: Vec::new(),
                fetches: BTreeMap::new(),
            }),
        });
        let events = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("metrics-events".into())
            .spawn(move || {
                while let Ok(event) = subscription.receiver().recv() {
                    let value = serde_json::to_value(&event).unwrap_or(serde_json::Value::Null);
                    let mut state = events.state();
                    state.events_seen += 1;
                    if state.recent.len() == RECENT_EVENTS {
                        state.recent.pop_front();
                    }
                    state.recent.push_back(value);
                }
            })
            .context("starting the metrics event thread")?;
        let server = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&listener, &server))
            .context("starting the metrics listener")?;
        info!("metrics on http://{local}/metrics, dashboard on http://{local}/");
        Ok(Self { shared })
    }

    /// Records a feature's state (`up`) and a one-line description.
    pub(crate) fn program(&self, name: &'static str, up: bool, detail: impl Into<String>) {
        self.shared.state().programs.insert(
            name,
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
    }

    /// An unconfirmed reload was rolled back: the serial goes up (the kernel holds a
    /// policy again that was applied before) and the rollback is counted.
    pub(crate) fn rolled_back(&self, sources: Option<Vec<SourceStat>>) {
        self.policy_applied(sources);
        self.shared.state().rollbacks += 1;
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
        self.shared.state().reload_failures += 1;
    }
}

fn serve(listener: &TcpListener, shared: &Arc<Shared>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        while active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            std::thread::sleep(Duration::from_millis(10));
        }
        active.fetch_add(1, Ordering::AcqRel);
        let shared = Arc::clone(shared);
        let active = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                if let Err(e) = answer(stream, &shared) {
                    tracing::debug!("metrics request: {e}");
                }
                active.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            warn!("metrics: cannot start a connection thread: {e}");
        }
    }
}

/// Reads one request head and writes one response; the connection then closes.
fn answer(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST_HEAD));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The rest of the head (headers) is read and ignored.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header != "\r\n" && header != "\n" {
        header.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        )
    } else {
        match path {
            "/metrics" => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                prometheus(shared),
            ),
            "/api/status" => ("200 OK", "application/json", api_status(shared).to_string()),
            "/" | "/index.html" => ("200 OK", "text/html; charset=utf-8", PAGE.to_string()),
            _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
        }
    };
    let mut out = std::io::BufWriter::new(&stream);
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        out.write_all(body.as_bytes())?;
    }
    out.flush()
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

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Builds the text exposition format: one `# HELP`/`# TYPE` block per family.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
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
            let (id, name, action) = (
                rule.rule_id.to_string(),
                rule.label.to_string(),
                action_name(rule),
            );
            let value = if family.ends_with("packets_total") {
                rule.counter.packets
            } else {
                rule.counter.bytes
            };
            out.sample(
                family,
                &[("rule_id", &id), ("rule", &name), ("action", &action)],
                value,
            );
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
            .filter(|(t, _)| *t != ShieldTotal::EventsLost)
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
            .map(|d| format!("{:.3}", d.as_secs_f64()))
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
            format!("{:.3}", unix_seconds(state.policy_loaded_at)),
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
        for (id, hits) in &status.rules {
            out.sample(
                "ironclad_egress_rule_decisions_total",
                &[("rule_id", &id.to_string())],
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
    if let Ok(n) = Telemetry::lost_dns_events_from_pins(&shared.pin_root) {
        out.sample("ironclad_kernel_events_lost_total", &[("source", "dns")], n);
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
    if let Some(rss) = resident_bytes() {
        out.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size of the daemon.",
        );
        out.sample("process_resident_memory_bytes", &[], rss);
    }
    out.text
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
    let egress = EgressFirewall::status_from_pins(&shared.pin_root)
        .ok()
        .map(|e| status::egress_json(&e));
    let state = shared.state();
    let programs: Vec<serde_json::Value> = state
        .programs
        .iter()
        .map(|(name, p)| serde_json::json!({"name": name, "up": p.up, "detail": p.detail}))
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": shared.config.display().to_string(),
        "policy": {
            "serial": state.policy_serial,
            "loaded_at": unix_seconds(state.policy_loaded_at),
            "reload_failures": state.reload_failures,
        },
        "programs": programs,
        "shield": shield,
        "egress": egress,
        "events": {
            "seen": state.events_seen,
            "recent": state.recent.iter().rev().cloned().collect::<Vec<_>>(),
        },
        "memory": {"resident_bytes": resident_bytes()},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
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
        out.sample("ironclad_x_total", &[], 1);
        assert_eq!(
            out.text,
            "# HELP ironclad_x_total An x.\n# TYPE ironclad_x_total counter\n\
             ironclad_x_total{rule=\"10.0.0.0/8\",action=\"deny\"} 7\nironclad_x_total 1\n"
        );
    }
}
