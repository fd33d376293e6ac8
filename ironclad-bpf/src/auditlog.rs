//! The audit log: one structured record for every load, audit result, pin, attach,
//! detach and map update.
//!
//! Records go to an [`AuditSink`] the embedder chooses: [`JsonLinesFile`] appends one
//! JSON object per line to a file (what the reference daemon uses), [`MemorySink`] keeps
//! them for inspection, [`NullSink`] drops them. A record looks like:
//!
//! ```json
//! {"time":"2026-11-22T08:00:00.123456789Z","time_ns":1795334400123456789,
//!  "action":"map_update","object":"shield","target":"ic_v4_fast","outcome":"ok",
//!  "detail":"key=18000000cb007100","who":{"pid":4242,"uid":0,"comm":"agent","exe":"/usr/bin/agent"}}
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ironclad_core::identity::ProcessIdentity;
use serde::Serialize;

use crate::error::{BpfError, Result};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// The helper audit of an object (outcome `ok` or `refused`).
    Audit,
    /// Loading an object into the kernel.
    Load,
    /// Pinning a map or link (a new pin).
    Pin,
    /// Reusing an existing pin.
    Reuse,
    /// Removing a pin.
    Unpin,
    /// Attaching a program.
    Attach,
    /// Detaching a program.
    Detach,
    /// Writing or deleting map elements.
    MapUpdate,
    /// A protection that could not start, or that an operator chose to run without.
    Alert,
    /// A whole policy applied, confirmed, rolled back, accepted or refused.
    Policy,
    /// An attachment found detached or its program replaced from outside, and what
    /// was done about it (put back: `ok`; could not be: `failed`).
    Repair,
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused by Ironclad's own checks (the audit).
    Refused,
    /// Failed in the kernel or the file system.
    Failed,
}

/// The process that acted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Who {
    /// Process id.
    pub pid: u32,
    /// Real uid.
    pub uid: u32,
    /// Command name.
    pub comm: String,
    /// Executable path, if readable.
    pub exe: Option<PathBuf>,
}

impl Who {
    fn current() -> Self {
        match ProcessIdentity::current() {
            Ok(id) => Self {
                pid: id.pid,
                uid: id.uid,
                comm: id.comm,
                exe: id.exe,
            },
            Err(_) => Self {
                pid: std::process::id(),
                uid: u32::MAX,
                comm: String::new(),
                exe: None,
            },
        }
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// RFC 3339 UTC time with nanoseconds.
    pub time: String,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u128,
    /// What was done.
    pub action: AuditAction,
    /// The BPF object concerned (`shield`...).
    pub object: String,
    /// The map, program, link or pin path concerned.
    pub target: String,
    /// How it went.
    pub outcome: Outcome,
    /// Free-form detail: the error, the key written, the interface...
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Who did it.
    pub who: Who,
}

impl AuditRecord {
    /// The record as one JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"action\":\"serialization_failed\",\"detail\":\"{e}\"}}")
        })
    }
}

/// Where audit records go. Implementations must not block for long: records are written
/// on the caller's thread.
pub trait AuditSink: Send + Sync {
    /// Receives one record.
    fn record(&self, record: &AuditRecord);
}

/// Drops every record.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl AuditSink for NullSink {
    fn record(&self, _record: &AuditRecord) {}
}

/// Keeps every record in memory.
#[derive(Debug, Default)]
pub struct MemorySink {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the records so far.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl AuditSink for MemorySink {
    fn record(&self, record: &AuditRecord) {
        if let Ok(mut records) = self.records.lock() {
            records.push(record.clone());
        }
    }
}

/// Publishes records as [`ironclad_events::Event::Audit`] to a fan-out, so the audit
/// log (or the part of it subscribers care for) is one more event stream.
#[derive(Debug)]
pub struct FanoutSink {
    fanout: Arc<ironclad_events::Fanout<ironclad_events::Event>>,
    /// Only these actions (`None`: every record).
    only: Option<Vec<AuditAction>>,
}

impl FanoutSink {
    /// A sink publishing every record to `fanout`.
    pub fn new(fanout: Arc<ironclad_events::Fanout<ironclad_events::Event>>) -> Self {
        Self { fanout, only: None }
    }

    /// A sink publishing to `fanout` only the records of `actions` (a daemon's stream
    /// carries repairs, not every pin and map write).
    pub fn only(
        fanout: Arc<ironclad_events::Fanout<ironclad_events::Event>>,
        actions: &[AuditAction],
    ) -> Self {
        Self {
            fanout,
            only: Some(actions.to_vec()),
        }
    }
}

impl AuditSink for FanoutSink {
    fn record(&self, record: &AuditRecord) {
        if self
            .only
            .as_ref()
            .is_some_and(|only| !only.contains(&record.action))
        {
            return;
        }
        self.fanout.publish(&ironclad_events::Event::Audit({
            let mut ev = ironclad_events::AuditEntry::default();
            ev.time = record.time.clone();
            ev.action = snake_name(record.action);
            ev.object = record.object.clone();
            ev.target = record.target.clone();
            ev.outcome = snake_name(record.outcome);
            ev.detail = record.detail.clone();
            ev.pid = record.who.pid;
            ev.uid = record.who.uid;
            ev.comm = record.who.comm.clone();
            ev.exe = record.who.exe.as_ref().map(|p| p.display().to_string());
            ev
        }));
    }
}

/// Sends every record to several sinks (e.g. a file and a fan-out).
pub struct TeeSink {
    sinks: Vec<Arc<dyn AuditSink>>,
}

impl std::fmt::Debug for TeeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeSink")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl TeeSink {
    /// A sink writing to each of `sinks`, in order.
    pub fn new(sinks: Vec<Arc<dyn AuditSink>>) -> Self {
        Self { sinks }
    }
}

impl AuditSink for TeeSink {
    fn record(&self, record: &AuditRecord) {
        for sink in &self.sinks {
            sink.record(record);
        }
    }
}

/// The serialized (snake_case) name of an audit enum value.
fn snake_name(value: impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Appends one JSON object per line to a file, flushed after every record. With
/// [`rotate_at`](Self::rotate_at) the file moves to `FILE.1` (replacing an older one)
/// when a record would take it past the size, and a new one starts; [`reopen`](Self::reopen)
/// starts writing to whatever file is at the path now (after `logrotate` moved it: the
/// daemon calls it on SIGHUP).
#[derive(Debug)]
pub struct JsonLinesFile {
    path: PathBuf,
    file: Mutex<OpenFile>,
    max_bytes: u64,
    lost: std::sync::atomic::AtomicU64,
    failing: std::sync::atomic::AtomicBool,
}

/// The open file and how many bytes it holds.
#[derive(Debug)]
struct OpenFile {
    file: File,
    written: u64,
}

/// Opens `path` to append, never through a symbolic link (`ELOOP`) and only as a
/// regular file: the writer runs as root, and a link planted at the path would have it
/// append to the file the link names.
fn open_append(path: &Path) -> Result<OpenFile> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| BpfError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok(OpenFile {
        file,
        written: meta.len(),
    })
}

impl JsonLinesFile {
    /// Opens (creating, mode 0600) `path` for appending.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = open_append(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
            max_bytes: 0,
            lost: std::sync::atomic::AtomicU64::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Rotates the file at `max_bytes` (0: never): it becomes `FILE.1`, replacing the
    /// older one, and a new file starts.
    #[must_use]
    pub fn rotate_at(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Closes the file and opens the path again (creating it): after an external
    /// rotation moved the file, records go to the new one.
    pub fn reopen(&self) -> Result<()> {
        let fresh = open_append(&self.path)?;
        if let Ok(mut file) = self.file.lock() {
            *file = fresh;
        }
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that could not be written (a full disk, an I/O error) since it was
    /// opened. Audit loss is fail-open: enforcement goes on, the loss is counted here
    /// and reported on stderr (the first failure of each run of failures).
    pub fn lost(&self) -> u64 {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves the file to `FILE.1` and opens a new one (the file lock held).
    fn rotate(&self, open: &mut OpenFile) {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        match std::fs::rename(&self.path, &old)
            .map_err(|source| BpfError::Io {
                path: self.path.clone(),
                source,
            })
            .and_then(|()| open_append(&self.path))
        {
            Ok(fresh) => *open = fresh,
            Err(e) => eprintln!(
                "ironclad: audit log {}: rotating: {e} (writing on to the old file)",
                self.path.display()
            ),
        }
    }
}

impl AuditSink for JsonLinesFile {
    fn record(&self, record: &AuditRecord) {
        if let Ok(mut open) = self.file.lock() {
            let mut line = record.to_json();
            line.push('\n');
            let len = line.len() as u64;
            if self.max_bytes > 0 && open.written > 0 && open.written + len > self.max_bytes {
                self.rotate(&mut open);
            }
            // An audit write failure must not stop enforcement; it is counted and
            // reported on stderr once per run of failures.
            if let Err(e) = open.file.write_all(line.as_bytes()) {
                let before = self.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if before == 0
                    || !self
                        .failing
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    eprintln!(
                        "ironclad: audit log {}: {e}: audit records are being LOST (enforcement continues)",
                        self.path.display()
                    );
                }
            } else {
                open.written += len;
                self.failing
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// The handle every component writes audit records through.
#[derive(Clone)]
pub struct AuditLog {
    sink: Arc<dyn AuditSink>,
    who: Arc<Who>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("who", &self.who).finish()
    }
}

/// Every audit record is also a `tracing` event (target `ironclad::audit`), silent
/// unless the embedder installs a subscriber: refusals, failures and alerts at `warn`,
/// loads, attaches, detaches and policies at `info`, pins and map updates at `debug`.
fn trace_record(action: AuditAction, object: &str, on: &str, outcome: Outcome, detail: &str) {
    match (action, outcome) {
        (_, Outcome::Refused | Outcome::Failed) | (AuditAction::Alert, _) => {
            tracing::warn!(target: "ironclad::audit", ?action, object, on, ?outcome, detail);
        }
        (
            AuditAction::Load | AuditAction::Attach | AuditAction::Detach | AuditAction::Policy,
            _,
        ) => {
            tracing::info!(target: "ironclad::audit", ?action, object, on, ?outcome, detail);
        }
        _ => tracing::debug!(target: "ironclad::audit", ?action, object, on, ?outcome, detail),
    }
}

impl AuditLog {
    /// A log writing to `sink`, attributing records to the current process.
    pub fn new(sink: Arc<dyn AuditSink>) -> Self {
        Self {
            sink,
            who: Arc::new(Who::current()),
        }
    }

    /// Writes one record.
    pub fn record(
        &self,
        action: AuditAction,
        object: &str,
        target: &str,
        outcome: Outcome,
        detail: impl Into<String>,
    ) {
        let now = SystemTime::now();
        let time_ns = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let detail = detail.into();
        trace_record(action, object, target, outcome, &detail);
        self.sink.record(&AuditRecord {
            time: humantime::format_rfc3339_nanos(now).to_string(),
            time_ns,
            action,
            object: object.to_string(),
            target: target.to_string(),
            outcome,
            detail,
            who: (*self.who).clone(),
        });
    }

    /// Records `result` of an operation with `Ok`/`Failed` and the error as detail.
    pub(crate) fn result<T, E: std::fmt::Display>(
        &self,
        action: AuditAction,
        object: &str,
        target: &str,
        detail: &str,
        result: &std::result::Result<T, E>,
    ) {
        match result {
            Ok(_) => self.record(action, object, target, Outcome::Ok, detail),
            Err(e) => {
                let detail = if detail.is_empty() {
                    e.to_string()
                } else {
                    format!("{detail}: {e}")
                };
                self.record(action, object, target, Outcome::Failed, detail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serialize_as_one_json_line() {
        let sink = Arc::new(MemorySink::new());
        let log = AuditLog::new(sink.clone());
        log.record(
            AuditAction::MapUpdate,
            "shield",
            "ic_v4_fast",
            Outcome::Ok,
            "key=18000000cb007100",
        );
        let records = sink.records();
        assert_eq!(records.len(), 1);
        let json = records[0].to_json();
        assert!(!json.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["action"], "map_update");
        assert_eq!(value["object"], "shield");
        assert_eq!(value["outcome"], "ok");
        assert_eq!(value["who"]["pid"], std::process::id());
        assert!(value["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn the_audit_log_is_a_subscriber_stream_too() {
        let fanout = Arc::new(ironclad_events::Fanout::new());
        let sub = fanout.subscribe("audit", 16, ironclad_events::Overflow::DropNewest);
        let memory = Arc::new(MemorySink::new());
        let log = AuditLog::new(Arc::new(TeeSink::new(vec![
            memory.clone(),
            Arc::new(FanoutSink::new(fanout.clone())),
        ])));
        log.record(
            AuditAction::Pin,
            "shield",
            "/sys/fs/bpf/x",
            Outcome::Ok,
            "map x",
        );
        assert_eq!(memory.records().len(), 1);
        let event = sub.receiver().try_recv().expect("published");
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).expect("json");
        assert_eq!(json["kind"], "audit");
        assert_eq!(json["action"], "pin");
        assert_eq!(json["outcome"], "ok");
        assert_eq!(json["pid"], std::process::id());
    }

    #[test]
    fn json_file_sink_appends_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let sink = Arc::new(JsonLinesFile::open(&path).expect("open"));
        let log = AuditLog::new(sink);
        log.record(AuditAction::Load, "shield", "", Outcome::Ok, "");
        log.record(
            AuditAction::Pin,
            "shield",
            "/sys/fs/bpf/x",
            Outcome::Failed,
            "EPERM",
        );
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("\"outcome\":\"failed\""));
    }

    #[test]
    fn json_file_sink_rotates_by_size_and_reopens_after_an_external_move() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let rotated = dir.path().join("audit.jsonl.1");
        let sink = Arc::new(JsonLinesFile::open(&path).expect("open").rotate_at(1000));
        let log = AuditLog::new(sink.clone());
        for i in 0..40 {
            log.record(
                AuditAction::MapUpdate,
                "shield",
                "m",
                Outcome::Ok,
                format!("record {i}"),
            );
        }
        let current = std::fs::read_to_string(&path).expect("current");
        let older = std::fs::read_to_string(&rotated).expect("rotated");
        assert!(
            current.len() <= 1000 && older.len() <= 1000,
            "{} {}",
            current.len(),
            older.len()
        );
        // Nothing lost between the two files: the last records, in order, each whole.
        let lines: Vec<&str> = older.lines().chain(current.lines()).collect();
        let last: Vec<String> = lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON line");
                v["detail"].as_str().expect("detail").to_string()
            })
            .collect();
        let n = last.len();
        assert!(n >= 4, "{n}");
        let expected: Vec<String> = (40 - n..40).map(|i| format!("record {i}")).collect();
        assert_eq!(last, expected);
        assert_eq!(sink.lost(), 0);

        // logrotate moves the file away; records go to it until the reopen, then to a
        // new file at the path.
        let moved = dir.path().join("audit.jsonl.moved");
        std::fs::rename(&path, &moved).expect("move");
        log.record(
            AuditAction::Load,
            "shield",
            "",
            Outcome::Ok,
            "before reopen",
        );
        sink.reopen().expect("reopen");
        log.record(AuditAction::Load, "shield", "", Outcome::Ok, "after reopen");
        assert!(std::fs::read_to_string(&moved)
            .expect("moved")
            .contains("before reopen"));
        let fresh = std::fs::read_to_string(&path).expect("new file");
        assert_eq!(fresh.lines().count(), 1);
        assert!(fresh.contains("after reopen"));
    }
}
