//! The dashboard's history: the daemon's main counters sampled every
//! `--metrics-history-interval` (10 s) into a ring that keeps the last hour, served as
//! rates per second at `/api/history`. It lives in the daemon, so a page opened now
//! shows the hour before it, and every open page shows the same figures.
//!
//! Each sample reads the features' totals from their pins (a few map lookups each,
//! whatever the rule count; the egress rules' counters too), the connection table's
//! entry count (read in batches of 1,024 entries, one system call each), the events
//! the dashboard's subscription has seen (by kind), and the daemon's resident memory. A
//! feature that is not running has no value in that sample (a gap in its line, not a
//! zero), and a counter that went down (a feature restarted with new maps) gives no rate
//! for that interval.
//!
//! The ring outlives a restart of the daemon: the sampler writes it to
//! `RUN_DIR/history.json` (at most every [`SAVE_EVERY`]), and the next daemon reads it
//! back, keeping what is younger than the span (by series id, so a version that charts
//! other series keeps the ones it still has). Time the daemon was down, or the sampler
//! did not run, is a gap in every line: no rate is drawn across more than
//! [`GAP_INTERVALS`] intervals.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ironclad_bpf::{Connection, EgressFirewall, Firewall, Shield};
use ironclad_core::abi::{EgressTotal, FwTotal, ShieldTotal};

/// How long the ring reaches back.
pub(crate) const SPAN: Duration = Duration::from_secs(3600);
/// The most samples the ring keeps, whatever the interval.
const MAX_SAMPLES: usize = 3601;
/// The file (under the run directory) the ring is kept in between restarts.
pub(crate) const HISTORY_FILE: &str = "history.json";
/// The ring is written to its file at most this often (an hour at a 1 s interval is
/// 3,601 samples: not every second).
pub(crate) const SAVE_EVERY: Duration = Duration::from_secs(10);
/// Samples further apart than this many intervals have a gap between them, not a rate.
const GAP_INTERVALS: f64 = 3.0;
/// The largest history file read back (an hour at 1 s of every series is about 1 MB).
const MAX_FILE: u64 = 16 << 20;

/// A rate per second between samples, or a value as sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rate,
    Gauge,
}

/// One line of a chart.
struct Series {
    id: &'static str,
    label: &'static str,
    kind: Kind,
}

/// One chart: its lines share a unit.
struct Chart {
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    series: &'static [Series],
}

const fn rate(id: &'static str, label: &'static str) -> Series {
    Series {
        id,
        label,
        kind: Kind::Rate,
    }
}

const fn gauge(id: &'static str, label: &'static str) -> Series {
    Series {
        id,
        label,
        kind: Kind::Gauge,
    }
}

/// What the dashboard charts, in the order of its page. The series ids are the keys of
/// [`Sample::values`], in this order.
const CHARTS: &[Chart] = &[
    Chart {
        id: "shield_packets",
        title: "Shield (XDP): packets",
        unit: "packets/s",
        series: &[
            rate("shield_passed", "passed"),
            rate("shield_dropped", "dropped"),
        ],
    },
    Chart {
        id: "shield_bytes",
        title: "Shield (XDP): bytes",
        unit: "bytes/s",
        series: &[
            rate("shield_passed_bytes", "passed"),
            rate("shield_dropped_bytes", "dropped"),
        ],
    },
    Chart {
        id: "firewall_packets",
        title: "Stateful firewall: packets",
        unit: "packets/s",
        series: &[
            rate("firewall_accepted", "accepted"),
            rate("firewall_denied", "dropped, rejected, invalid"),
        ],
    },
    Chart {
        id: "firewall_connections",
        title: "Stateful firewall: connections",
        unit: "connections",
        series: &[gauge("firewall_connections", "tracked")],
    },
    Chart {
        id: "firewall_new",
        title: "Stateful firewall: new connections",
        unit: "connections/s",
        series: &[rate("firewall_new", "accepted")],
    },
    Chart {
        id: "egress",
        title: "Identity firewall: connect() and sendmsg()",
        unit: "calls/s",
        series: &[
            rate("egress_allowed", "allowed"),
            rate("egress_denied", "denied"),
        ],
    },
    Chart {
        id: "telemetry_bytes",
        title: "Telemetry: traffic of its cgroup's processes",
        unit: "bytes/s",
        series: &[
            rate("telemetry_sent", "sent"),
            rate("telemetry_received", "received"),
        ],
    },
    Chart {
        id: "events",
        title: "Events, by the feature that reported them",
        unit: "events/s",
        series: &[
            rate("events", "all"),
            rate("events_shield", "Shield"),
            rate("events_firewall", "stateful firewall"),
            rate("events_egress", "identity firewall"),
            rate("events_tls", "TLS"),
            rate("events_telemetry", "telemetry"),
            rate("events_sentinel", "Sentinel"),
            rate("events_daemon", "audit, process cache"),
        ],
    },
    Chart {
        id: "memory",
        title: "Daemon memory",
        unit: "bytes",
        series: &[gauge("resident", "resident")],
    },
];

/// Which feature reports each event kind: the events chart's series, and (by the
/// feature's name after `events_`) each row of `/api/status`'s `programs`.
pub(crate) const EVENT_FEATURES: &[(&str, &[&str])] = &[
    ("events_shield", &["shield_drop"]),
    (
        "events_firewall",
        &["firewall", "flow", "firewall_limit", "ids_alert"],
    ),
    ("events_egress", &["connect", "rate_limited", "dns_policy"]),
    ("events_tls", &["tls", "dlp"]),
    ("events_telemetry", &["bandwidth", "dns"]),
    ("events_sentinel", &["sentinel"]),
    ("events_daemon", &["audit", "process_cache"]),
];

/// The counters at one moment: one value per series (in [`CHARTS`] order), `None` where
/// the feature was not running or its maps could not be read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sample {
    /// Unix time, seconds.
    pub(crate) at: f64,
    pub(crate) values: Vec<Option<u64>>,
}

impl Sample {
    /// Reads every series now: the features' totals from the pins under `pin_root`,
    /// the `events` seen by the dashboard (by kind) and `resident` memory as the caller
    /// has them. `connections`: the connection table's entry count, when the stateful
    /// firewall runs. `traffic`: the bytes sent and received by telemetry's processes as
    /// their bandwidth reports last counted them, summed, when telemetry reported any.
    pub(crate) fn read(
        pin_root: &Path,
        connections: Option<usize>,
        traffic: Option<(u64, u64)>,
        events: &std::collections::BTreeMap<&'static str, u64>,
        resident: Option<u64>,
    ) -> Self {
        let of_kinds = |kinds: &[&str]| kinds.iter().filter_map(|k| events.get(k)).sum::<u64>();
        let shield = Shield::totals_from_pins(pin_root).ok();
        let shield_total = |which: &[ShieldTotal], bytes: bool| {
            shield.as_ref().map(|totals| {
                totals
                    .iter()
                    .filter(|(t, _)| which.contains(t))
                    .map(|(_, c)| if bytes { c.bytes } else { c.packets })
                    .sum::<u64>()
            })
        };
        let firewall = Firewall::totals_from_pins(pin_root).ok();
        let firewall_total = |which: &[FwTotal]| {
            firewall.as_ref().map(|totals| {
                totals
                    .iter()
                    .filter(|(t, _)| which.contains(t))
                    .map(|(_, c)| c.packets)
                    .sum::<u64>()
            })
        };
        let connections = connections.and_then(|n| u64::try_from(n).ok());
        let egress = EgressFirewall::status_from_pins(pin_root).ok();
        let egress_total = |which: &[EgressTotal]| {
            egress.as_ref().map(|e| {
                e.totals
                    .iter()
                    .filter(|(t, _)| which.contains(t))
                    .map(|(_, n)| *n)
                    .sum::<u64>()
            })
        };
        // Each packet under one verdict: these two sets are disjoint and, with
        // WouldDrop and NonIp, cover every packet the firewall sees.
        let accepted = [
            FwTotal::Established,
            FwTotal::Related,
            FwTotal::NewAccepted,
            FwTotal::Untracked,
        ];
        let denied = [
            FwTotal::Dropped,
            FwTotal::Rejected,
            FwTotal::Invalid,
            FwTotal::TableFull,
        ];
        let dropped = [ShieldTotal::Dropped, ShieldTotal::RateLimited];
        let passed = [
            ShieldTotal::Passed,
            ShieldTotal::Malformed,
            ShieldTotal::Valve,
            ShieldTotal::NonIp,
        ];
        let read = [
            ("shield_passed", shield_total(&passed, false)),
            ("shield_dropped", shield_total(&dropped, false)),
            ("shield_passed_bytes", shield_total(&passed, true)),
            ("shield_dropped_bytes", shield_total(&dropped, true)),
            ("firewall_accepted", firewall_total(&accepted)),
            ("firewall_denied", firewall_total(&denied)),
            ("firewall_connections", connections),
            ("firewall_new", firewall_total(&[FwTotal::NewAccepted])),
            ("egress_allowed", egress_total(&[EgressTotal::Allowed])),
            (
                "egress_denied",
                egress_total(&[EgressTotal::Denied, EgressTotal::RateLimited]),
            ),
            ("telemetry_sent", traffic.map(|(sent, _)| sent)),
            ("telemetry_received", traffic.map(|(_, received)| received)),
            ("events", Some(events.values().sum())),
            ("resident", resident),
        ];
        let by_feature: Vec<(&str, Option<u64>)> = EVENT_FEATURES
            .iter()
            // No line until the feature reported something: features that do not run
            // (or report nothing) draw none, rather than a zero.
            .map(|(id, kinds)| (*id, Some(of_kinds(kinds)).filter(|n| *n > 0)))
            .collect();
        // In the charts' order, by id: a series read under no id has no values.
        let values = CHARTS
            .iter()
            .flat_map(|c| c.series)
            .map(|s| {
                read.iter()
                    .chain(&by_feature)
                    .find(|(id, _)| *id == s.id)
                    .and_then(|(_, v)| *v)
            })
            .collect();
        Self {
            at: unix_seconds(SystemTime::now()),
            values,
        }
    }
}

/// The ring of samples.
#[derive(Debug)]
pub(crate) struct History {
    interval: Duration,
    samples: VecDeque<Sample>,
    /// The remote addresses with the most bytes in the connection table, and when they
    /// were read (`/api/events`, for token holders: read there, at most once per
    /// interval).
    pub(crate) talkers: Option<(std::time::Instant, Option<Vec<serde_json::Value>>)>,
    /// Where the ring is kept between restarts (none in tests).
    file: Option<std::path::PathBuf>,
}

/// The `n` remote addresses with the most bytes (both ways) over the tracked
/// connections: the peer that opened an inbound connection, the destination of an
/// outbound one.
pub(crate) fn top_talkers(connections: &[Connection], n: usize) -> Vec<serde_json::Value> {
    let mut by_peer: HashMap<IpAddr, (u64, u64, u64)> = HashMap::new();
    for c in connections {
        let peer = if c.inbound { c.orig.0 } else { c.reply.0 };
        let entry = by_peer.entry(peer).or_default();
        entry.0 += c.from_orig.bytes + c.from_reply.bytes;
        entry.1 += c.from_orig.packets + c.from_reply.packets;
        entry.2 += 1;
    }
    let mut peers: Vec<(IpAddr, (u64, u64, u64))> = by_peer.into_iter().collect();
    peers.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    peers
        .into_iter()
        .take(n)
        .map(|(address, (bytes, packets, connections))| {
            serde_json::json!({
                "address": address.to_string(),
                "bytes": bytes,
                "packets": packets,
                "connections": connections,
            })
        })
        .collect()
}

/// The ring as its file holds it: each sample's values under the series ids of the
/// daemon that wrote it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    series: Vec<String>,
    samples: Vec<Sample>,
}

impl History {
    /// The ring saved at `path` by an earlier daemon, for samples `interval` apart: the
    /// samples younger than [`SPAN`] (none from the future), each series under its id.
    /// No file is an empty ring; a file that cannot be read or parsed is an error (the
    /// caller starts with an empty ring and says why).
    pub(crate) fn restore(path: &Path, interval: Duration) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let mut history = Self::new(interval);
        history.file = Some(path.to_path_buf());
        let bytes = match ironclad_core::fsutil::read_regular_file(path, MAX_FILE) {
            Ok(bytes) => bytes,
            Err(ironclad_core::fsutil::ReadFileError::Io(e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(history)
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let saved: Saved = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a saved history", path.display()))?;
        let now = unix_seconds(SystemTime::now());
        // Where each of this daemon's series was in the saved samples.
        let from: Vec<Option<usize>> = CHARTS
            .iter()
            .flat_map(|c| c.series)
            .map(|s| saved.series.iter().position(|id| id == s.id))
            .collect();
        for sample in saved.samples {
            if sample.at > now || now - sample.at > SPAN.as_secs_f64() {
                continue;
            }
            let values = from
                .iter()
                .map(|at| at.and_then(|i| sample.values.get(i).copied().flatten()))
                .collect();
            history.push(Sample {
                at: sample.at,
                values,
            });
        }
        Ok(history)
    }

    /// The ring as its file holds it.
    pub(crate) fn to_saved(&self) -> Vec<u8> {
        let saved = Saved {
            series: CHARTS
                .iter()
                .flat_map(|c| c.series)
                .map(|s| s.id.to_string())
                .collect(),
            samples: self.samples.iter().cloned().collect(),
        };
        serde_json::to_vec(&saved).unwrap_or_default()
    }

    /// [`History::restore`] from `path`, or an empty ring kept there when that fails
    /// (said as a warning): what the daemon starts with.
    pub(crate) fn restore_or_empty(path: &Path, interval: Duration) -> Self {
        match Self::restore(path, interval) {
            Ok(h) => {
                if h.len() > 0 {
                    tracing::info!(
                        "dashboard: {} samples of the last hour read back from {}",
                        h.len(),
                        path.display()
                    );
                }
                h
            }
            Err(e) => {
                tracing::warn!("dashboard: starting with no history: {e:#}");
                let mut h = Self::new(interval);
                h.file = Some(path.to_path_buf());
                h
            }
        }
    }

    /// Where the ring is kept between restarts.
    pub(crate) fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The number of samples held.
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// An empty ring for samples `interval` apart: it keeps [`SPAN`] of them (and one
    /// more, the first rate's start).
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            samples: VecDeque::with_capacity(Self::capacity_for(interval)),
            talkers: None,
            file: None,
        }
    }

    fn capacity_for(interval: Duration) -> usize {
        let per_span = SPAN.as_millis() / interval.as_millis().max(1);
        usize::try_from(per_span)
            .unwrap_or(MAX_SAMPLES)
            .saturating_add(1)
            .min(MAX_SAMPLES)
    }

    /// The time between samples.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Adds a sample, forgetting the oldest past the span.
    pub(crate) fn push(&mut self, sample: Sample) {
        if self.samples.len() == Self::capacity_for(self.interval) {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// What `/api/history` serves: the sample times (each rate's end) and, per chart,
    /// each series' values (rates per second, or gauges), `null` where there is none. A
    /// series with no value at all (a feature that never ran) is left out, and so is a
    /// chart left with no series.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let gap = self.interval.as_secs_f64() * GAP_INTERVALS;
        // Each pair of samples is a point at the later one's time; a pair further apart
        // than `gap` (the daemon was down) is preceded by an empty point just after the
        // earlier sample, so that no line is drawn across the time nothing was sampled.
        let mut points: Vec<(f64, Option<(&Sample, &Sample)>)> = Vec::new();
        for (a, b) in self.samples.iter().zip(self.samples.iter().skip(1)) {
            if b.at - a.at > gap {
                points.push((a.at + self.interval.as_secs_f64(), None));
            }
            points.push((b.at, Some((a, b))));
        }
        let times: Vec<f64> = points.iter().map(|(t, _)| *t).collect();
        let mut index = 0;
        let mut charts = Vec::new();
        for chart in CHARTS {
            let mut series = Vec::new();
            for s in chart.series {
                let values: Vec<Option<f64>> = points
                    .iter()
                    .map(|(_, pair)| pair.and_then(|(a, b)| point(s.kind, a, b, index, gap)))
                    .collect();
                index += 1;
                if values.iter().any(Option::is_some) {
                    series.push(serde_json::json!({
                        "id": s.id,
                        "label": s.label,
                        "values": values,
                    }));
                }
            }
            if !series.is_empty() {
                charts.push(serde_json::json!({
                    "id": chart.id,
                    "title": chart.title,
                    "unit": chart.unit,
                    "series": series,
                }));
            }
        }
        serde_json::json!({
            "interval_s": self.interval.as_secs_f64(),
            "span_s": SPAN.as_secs(),
            "t": times,
            "charts": charts,
        })
    }
}

/// One point of series `index` between samples `a` and `b`.
fn point(kind: Kind, a: &Sample, b: &Sample, index: usize, gap: f64) -> Option<f64> {
    let now = b.values.get(index).copied().flatten()?;
    match kind {
        Kind::Gauge => Some(now as f64),
        Kind::Rate => {
            let before = a.values.get(index).copied().flatten()?;
            let seconds = b.at - a.at;
            // A counter that went down was restarted: no rate across that; nor across
            // a time nothing was sampled (an average over it would be made up).
            (now >= before && seconds > 0.0 && seconds <= gap)
                .then(|| (now - before) as f64 / seconds)
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number of series over all charts.
    fn series_count() -> usize {
        CHARTS.iter().map(|c| c.series.len()).sum()
    }

    fn sample(at: f64, first: Option<u64>) -> Sample {
        let mut values = vec![None; series_count()];
        values[0] = first;
        // The memory gauge, last.
        values[series_count() - 1] = Some(1000);
        Sample { at, values }
    }

    #[test]
    fn rates_are_per_second_between_samples_with_gaps_where_a_counter_went_down_or_was_missing() {
        let mut h = History::new(Duration::from_secs(10));
        h.push(sample(100.0, Some(0)));
        h.push(sample(110.0, Some(500)));
        h.push(sample(120.0, None));
        h.push(sample(130.0, Some(800)));
        h.push(sample(140.0, Some(100)));
        h.push(sample(150.0, Some(300)));
        let json = h.to_json();
        assert_eq!(
            json["t"],
            serde_json::json!([110.0, 120.0, 130.0, 140.0, 150.0])
        );
        let charts = json["charts"].as_array().unwrap();
        // The Shield's packets chart (passed only: dropped never had a value) and memory.
        assert_eq!(charts.len(), 2);
        assert_eq!(charts[0]["id"], "shield_packets");
        assert_eq!(charts[0]["unit"], "packets/s");
        assert_eq!(charts[0]["series"].as_array().unwrap().len(), 1);
        assert_eq!(
            charts[0]["series"][0]["values"],
            serde_json::json!([50.0, null, null, null, 20.0])
        );
        assert_eq!(charts[1]["id"], "memory");
        assert_eq!(
            charts[1]["series"][0]["values"],
            serde_json::json!([1000.0, 1000.0, 1000.0, 1000.0, 1000.0])
        );
    }

    #[test]
    fn a_sample_puts_each_reading_under_its_series() {
        // No pins there: the features' series are empty, the daemon's own are not.
        let events = std::collections::BTreeMap::from([("shield_drop", 5), ("tls", 1), ("dlp", 1)]);
        let read = Sample::read(
            Path::new("/nonexistent"),
            Some(3),
            Some((40, 2000)),
            &events,
            Some(1000),
        );
        let ids: Vec<&str> = CHARTS.iter().flat_map(|c| c.series).map(|s| s.id).collect();
        let value = |id: &str| ids.iter().position(|i| *i == id).map(|i| read.values[i]);
        assert_eq!(value("events"), Some(Some(7)));
        assert_eq!(value("events_shield"), Some(Some(5)));
        assert_eq!(value("events_tls"), Some(Some(2)));
        assert_eq!(value("events_sentinel"), Some(None));
        // Every event kind is some feature's.
        for kind in ironclad_events::Event::KINDS {
            assert_eq!(
                EVENT_FEATURES
                    .iter()
                    .filter(|(_, kinds)| kinds.contains(kind))
                    .count(),
                1,
                "{kind}"
            );
        }
        assert_eq!(value("resident"), Some(Some(1000)));
        assert_eq!(value("firewall_connections"), Some(Some(3)));
        assert_eq!(value("telemetry_sent"), Some(Some(40)));
        assert_eq!(value("telemetry_received"), Some(Some(2000)));
        assert_eq!(value("shield_dropped"), Some(None));
        assert_eq!(read.values.len(), series_count());
    }

    #[test]
    fn a_restart_is_a_gap_and_the_saved_ring_comes_back_by_series_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HISTORY_FILE);
        let now = unix_seconds(SystemTime::now()).floor();
        let mut h = History::new(Duration::from_secs(10));
        // Too old to come back, then three samples, a 100 s restart, two more.
        h.push(sample(now - 4000.0, Some(0)));
        for (at, n) in [
            (-300.0, 0),
            (-290.0, 100),
            (-280.0, 200),
            (-180.0, 5000),
            (-170.0, 5100),
        ] {
            h.push(sample(now + at, Some(n)));
        }
        // Written by a daemon that also charted a series this one does not.
        let mut saved: serde_json::Value = serde_json::from_slice(&h.to_saved()).unwrap();
        saved["series"].as_array_mut().unwrap().push("gone".into());
        for s in saved["samples"].as_array_mut().unwrap() {
            s["values"].as_array_mut().unwrap().push(42.into());
        }
        std::fs::write(&path, saved.to_string()).unwrap();
        let back = History::restore(&path, Duration::from_secs(10)).unwrap();
        assert_eq!(back.len(), 5);
        let json = back.to_json();
        // The empty point 10 s after the last sample before the restart.
        assert_eq!(
            json["t"],
            serde_json::json!([
                now - 290.0,
                now - 280.0,
                now - 270.0,
                now - 180.0,
                now - 170.0
            ])
        );
        assert_eq!(
            json["charts"][0]["series"][0]["values"],
            serde_json::json!([10.0, 10.0, null, null, 10.0])
        );
        // The memory gauge has its values, with the empty point between.
        assert_eq!(
            json["charts"][1]["series"][0]["values"],
            serde_json::json!([1000.0, 1000.0, null, 1000.0, 1000.0])
        );
        // No file: an empty ring; a file that is not a history: an error naming it.
        let none = History::restore(&dir.path().join("none.json"), Duration::from_secs(10));
        assert_eq!(none.map(|h| h.len()).ok(), Some(0));
        std::fs::write(&path, "{").unwrap();
        let bad = History::restore(&path, Duration::from_secs(10)).unwrap_err();
        assert!(
            bad.to_string()
                .contains("history.json is not a saved history"),
            "{bad}"
        );
    }

    #[test]
    fn the_ring_keeps_an_hour_of_samples() {
        let mut h = History::new(Duration::from_secs(10));
        for i in 0..1000u32 {
            h.push(sample(f64::from(i) * 10.0, Some(u64::from(i))));
        }
        assert_eq!(h.samples.len(), 361);
        assert_eq!(h.samples.front().map(|s| s.at), Some(6390.0));
        let json = h.to_json();
        assert_eq!(json["t"].as_array().unwrap().len(), 360);
        assert_eq!(json["span_s"], 3600);
        // A sub-second interval is capped.
        assert_eq!(
            History::capacity_for(Duration::from_millis(100)),
            MAX_SAMPLES
        );
    }
}
