//! The process cache: who every process is, fed by the kernel's exec, fork and exit
//! tracepoints (`bpf-src/process.bpf.c`), so that every event names its process right,
//! even one that exited before its event was read.
//!
//! For each process the cache keeps its command name, the path it was executed by, the
//! executable's identity, its (redacted) arguments, uid/gid, parent, start time, cgroup
//! and container. A pid may name several processes over time: each exec or reuse of the
//! pid opens a new segment `[since, until)` of kernel time, and an event is matched to
//! the segment in which it happened, so a reused pid never lends its name to an older
//! event. When the event carries the executable identity the kernel saw, a cached
//! segment with another identity is not used: the cache says "unknown" rather than
//! name the wrong process.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ironclad_bpf::{EventReader, Loader, ProcessMonitor, Telemetry};
//! use ironclad_events::{Fanout, Overflow};
//! use ironclad_policy::{process::ProcessPolicy, telemetry::TelemetryPolicy};
//!
//! let loader = Loader::builder().build()?;
//! let processes = Arc::new(ProcessMonitor::start(&loader, &ProcessPolicy::default())?);
//! let mut policy = TelemetryPolicy::default();
//! policy.dns = true;
//! let telemetry = Telemetry::start(&loader, &policy, "/sys/fs/cgroup".as_ref())?;
//! let fanout = Arc::new(Fanout::new());
//! let sub = fanout.subscribe("log", 1024, Overflow::DropNewest);
//! let reader =
//!     EventReader::with_processes(vec![telemetry.event_source()?], fanout, processes)?;
//! reader.poll(std::time::Duration::from_secs(1))?;
//! for event in sub.receiver().try_iter() {
//!     println!("{}", event.to_json()); // "process": {"comm": "dig", "exe": "/usr/bin/dig", ...}
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ironclad_core::abi::{process_flags, process_stat, ProcExe, ProcessEvent, ProcessOp};
use ironclad_core::identity::MountDevices;
use ironclad_events::process::{container_of, Redactor};
use ironclad_events::{Ancestor, Event, ExeFile, ProcessBlock};
use ironclad_policy::process::ProcessPolicy;
use libbpf_rs::Link;

use crate::error::{BpfError, Result};
use crate::loader::{LoadedObject, Loader};
use crate::names;

const RING: &str = names::process::ic_process_events;
const TRACEPOINTS: &[&str] = &[
    names::process::ic_process_exec,
    names::process::ic_process_fork,
    names::process::ic_process_exit,
];

/// Counters of the process cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessCacheStats {
    /// Processes (segments) held, live and recently exited.
    pub cached: usize,
    /// Of them, processes still running.
    pub live: usize,
    /// Processes not cached because the cache was full of live ones (their events
    /// carry no `process` block).
    pub overflows: u64,
    /// Records the kernel could not write (ring buffer full).
    pub lost: u64,
    /// Records the kernel wrote.
    pub records: u64,
    /// Lookups refused because the cached process ran another executable than the
    /// event's (a lost record, or a stale entry): the event is left unnamed.
    pub mismatches: u64,
}

/// One process over one stretch of kernel time.
#[derive(Debug)]
struct Segment {
    since: u64,
    until: Option<u64>,
    exit_code: Option<i32>,
    proc: Arc<Process>,
}

/// What the cache knows of one process image.
#[derive(Debug, Clone)]
struct Process {
    pid: u32,
    ppid: u32,
    comm: String,
    exe_id: ProcExe,
    exe: Option<String>,
    script: Option<String>,
    args: Vec<String>,
    args_truncated: bool,
    uid: u32,
    gid: u32,
    cgroup_id: u64,
    start_ns: u64,
}

/// Cgroup ids (the directory's inode on cgroup2) to paths under the root.
#[derive(Debug, Default)]
struct CgroupNames {
    root: Option<PathBuf>,
    names: HashMap<u64, String>,
    tried: HashSet<u64>,
}

impl CgroupNames {
    fn name(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if !self.names.contains_key(&id) && self.tried.insert(id) {
            if self.tried.len() > 65_536 {
                self.tried.clear();
            }
            self.rescan();
        }
        self.names.get(&id).cloned()
    }

    /// Walks the cgroup2 tree (new cgroups appear with containers and services).
    fn rescan(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some(root) = self.root.clone() else {
            return;
        };
        self.names.clear();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            self.names.insert(meta.ino(), format!("/{}", rel.display()));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
}

#[derive(Debug)]
struct Table {
    pids: HashMap<u32, Vec<Segment>>,
    segments: usize,
    /// Closed segments in the order they closed: (until, pid).
    closed: VecDeque<(u64, u32)>,
    capacity: usize,
    retain_ns: u64,
    overflows: u64,
    mismatches: u64,
    args: bool,
    redactor: Redactor,
    /// The DLP detectors, over arguments too: a card number or a key on a command line
    /// is no more an event's business than in TLS plaintext.
    dlp: ironclad_policy::dlp::Dlp,
    lineage_depth: u32,
    cgroups: CgroupNames,
    /// Wall-clock minus CLOCK_BOOTTIME, ns.
    boot_offset: i128,
    latest: u64,
}

/// `args` with secrets replaced: `redactor`'s rules, then whatever a DLP detector finds
/// inside an argument (a card number in `--data card=...`, an AWS key) replaced by
/// [`ironclad_events::process::REDACTED`].
fn redact_args<S: AsRef<str>>(
    redactor: &Redactor,
    dlp: &ironclad_policy::dlp::Dlp,
    args: impl IntoIterator<Item = S>,
) -> Vec<String> {
    redactor
        .redact(args)
        .into_iter()
        .map(|arg| {
            let mut findings = dlp.scan(arg.as_bytes());
            if findings.is_empty() {
                return arg;
            }
            findings.sort_by_key(|f| std::cmp::Reverse(f.start));
            let mut out = arg.into_bytes();
            for f in findings {
                if f.start <= f.end && f.end <= out.len() {
                    out.splice(f.start..f.end, ironclad_events::process::REDACTED.bytes());
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn comm_text(comm: &[u8]) -> String {
    let len = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    lossy(&comm[..len])
}

/// The interpreter a script's `#!` line names.
fn interpreter_of(script: &str) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let end = line.iter().position(|b| *b == b'\n').unwrap_or(line.len());
    lossy(&line[..end])
        .split_whitespace()
        .next()
        .map(str::to_string)
}

fn split_args(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let mut args: Vec<String> = bytes.split(|b| *b == 0).map(lossy).collect();
    if bytes.last() == Some(&0) {
        args.pop();
    }
    args
}

impl Process {
    /// The process an exec or fork record describes, with what user space adds.
    fn of_record(
        e: &ProcessEvent,
        exe: Option<String>,
        script: Option<String>,
        args: Vec<String>,
        args_truncated: bool,
    ) -> Self {
        Self {
            pid: e.pid,
            ppid: e.ppid,
            comm: comm_text(&e.comm),
            exe_id: e.exe,
            exe,
            script,
            args,
            args_truncated,
            uid: e.uid,
            gid: e.gid,
            cgroup_id: e.cgroup_id,
            start_ns: e.start_ns,
        }
    }
}

impl Table {
    fn wall(&self, boot_ns: u64) -> String {
        let ns = i128::from(boot_ns) + self.boot_offset;
        u64::try_from(ns)
            .map(|ns| {
                humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_nanos(ns))
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// The segment of `pid` at kernel time `at` (or the newest, if `at` is `None`).
    fn segment(&self, pid: u32, at: Option<u64>) -> Option<&Segment> {
        let segments = self.pids.get(&pid)?;
        match at {
            None => segments
                .iter()
                .rev()
                .find(|s| s.until.is_none())
                .or_else(|| segments.last()),
            Some(t) => segments
                .iter()
                .rev()
                .find(|s| s.since <= t && s.until.is_none_or(|u| t <= u)),
        }
    }

    fn open_segment_mut(&mut self, pid: u32) -> Option<&mut Segment> {
        self.pids
            .get_mut(&pid)?
            .iter_mut()
            .rev()
            .find(|s| s.until.is_none())
    }

    fn close(&mut self, pid: u32, at: u64, exit_code: Option<i32>) {
        if let Some(segment) = self.open_segment_mut(pid) {
            segment.until = Some(at.max(segment.since));
            segment.exit_code = exit_code;
            let until = at.max(segment.since);
            self.closed.push_back((until, pid));
        }
    }

    /// Removes the oldest closed segment; false if there is none.
    fn evict_one(&mut self) -> bool {
        while let Some((until, pid)) = self.closed.pop_front() {
            let Some(segments) = self.pids.get_mut(&pid) else {
                continue;
            };
            if let Some(i) = segments.iter().position(|s| s.until == Some(until)) {
                segments.remove(i);
                self.segments -= 1;
                if segments.is_empty() {
                    self.pids.remove(&pid);
                }
                return true;
            }
        }
        false
    }

    fn expire(&mut self) {
        let horizon = self.latest.saturating_sub(self.retain_ns);
        while self
            .closed
            .front()
            .is_some_and(|(until, _)| *until < horizon)
        {
            self.evict_one();
        }
    }

    fn insert(&mut self, since: u64, proc: Process) {
        if self.segments >= self.capacity && !self.evict_one() {
            // Full of live processes: say so, never guess.
            self.overflows += 1;
            return;
        }
        self.segments += 1;
        self.pids.entry(proc.pid).or_default().push(Segment {
            since,
            until: None,
            exit_code: None,
            proc: Arc::new(proc),
        });
    }

    fn apply(&mut self, e: &ProcessEvent) {
        let t = e.hdr.ktime_ns;
        self.latest = self.latest.max(t);
        self.expire();
        match ProcessOp::from_raw(e.op) {
            Some(ProcessOp::Exec) => {
                self.close(e.pid, t, None);
                let raw = lossy(e.path());
                let path = if raw.starts_with('/') || raw.is_empty() {
                    raw
                } else {
                    absolute(&raw, e).unwrap_or(raw)
                };
                let (exe, script) = if e.flags & process_flags::SCRIPT != 0 {
                    let interpreter = interpreter_of(&path).or_else(|| {
                        std::fs::read_link(format!("/proc/{}/exe", e.pid))
                            .ok()
                            .map(|p| p.display().to_string())
                    });
                    (interpreter, Some(path))
                } else {
                    ((!path.is_empty()).then_some(path), None)
                };
                let args = if self.args {
                    redact_args(&self.redactor, &self.dlp, split_args(e.args()))
                } else {
                    Vec::new()
                };
                let truncated = self.args && e.flags & process_flags::ARGS_TRUNCATED != 0;
                self.insert(t, Process::of_record(e, exe, script, args, truncated));
            }
            Some(ProcessOp::Fork) => {
                // A stale open segment means its exit record was lost: end it now.
                self.close(e.pid, t, None);
                let parent = self.segment(e.ppid, Some(t)).map(|s| s.proc.clone());
                let (exe, script, args, args_truncated) = match parent {
                    Some(p) if p.exe_id == e.exe => (
                        p.exe.clone(),
                        p.script.clone(),
                        p.args.clone(),
                        p.args_truncated,
                    ),
                    _ => (
                        std::fs::read_link(format!("/proc/{}/exe", e.pid))
                            .ok()
                            .map(|p| p.display().to_string()),
                        None,
                        Vec::new(),
                        false,
                    ),
                };
                self.insert(t, Process::of_record(e, exe, script, args, args_truncated));
            }
            Some(ProcessOp::Exit) => self.close(e.pid, t, Some(e.exit_code)),
            None => {}
        }
    }

    /// The block for `pid` at `at`; `None` if unknown or if the cached process ran
    /// another executable than `exe` (device, inode; (0, 0) = not given).
    fn block(&mut self, pid: u32, at: Option<u64>, exe: (u32, u64)) -> Option<ProcessBlock> {
        let segment = self.segment(pid, at)?;
        if exe != (0, 0) && (segment.proc.exe_id.dev, segment.proc.exe_id.ino) != exe {
            self.mismatches += 1;
            return None;
        }
        let p = segment.proc.clone();
        let exit_code = segment.exit_code;
        let mut ancestors = Vec::new();
        let mut seen = HashSet::from([pid]);
        let mut next = p.ppid;
        let mut child_start = p.start_ns;
        while ancestors.len() < self.lineage_depth as usize && next != 0 && seen.insert(next) {
            let Some(parent) = self.segment(next, at) else {
                break;
            };
            // A parent starts before its child. A process that started later holds the
            // pid of a parent that ended (the child was reparented): not an ancestor.
            // One tick of slack: starts seeded from /proc are whole ticks.
            if parent.proc.start_ns > child_start.saturating_add(ironclad_core::abi::NSEC_PER_TICK)
            {
                break;
            }
            child_start = parent.proc.start_ns;
            ancestors.push({
                let mut ev = Ancestor::default();
                ev.pid = next;
                ev.comm = parent.proc.comm.clone();
                ev.exe = parent.proc.exe.clone();
                ev
            });
            next = parent.proc.ppid;
        }
        let cgroup = self.cgroups.name(p.cgroup_id);
        Some({
            let mut ev = ProcessBlock::default();
            ev.pid = p.pid;
            ev.ppid = p.ppid;
            ev.comm = p.comm.clone();
            ev.exe = p.exe.clone();
            ev.exe_file =
                (p.exe_id.ino != 0).then(|| ExeFile::from_kernel(p.exe_id.dev, p.exe_id.ino));
            ev.script = p.script.clone();
            ev.args = p.args.clone();
            ev.args_truncated = p.args_truncated;
            ev.uid = p.uid;
            ev.gid = p.gid;
            ev.start_time = self.wall(p.start_ns);
            ev.cgroup_id = p.cgroup_id;
            ev.container = cgroup.as_deref().and_then(container_of);
            ev.cgroup = cgroup;
            ev.exit_code = exit_code;
            ev.ancestors = ancestors;
            ev
        })
    }
}

/// The directories searched for a program run by a relative path whose process (and
/// its parent) ended before its record was read.
const PROGRAM_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The absolute path of `raw`, a relative path an exec record gives, checked against
/// the file the kernel ran (device and inode): joined to the working directory of the
/// process, or of its parent (whose directory the process started in); failing both
/// (they ended), a file of that name in the usual program directories. `None` when no
/// candidate is that file. A script's record names its interpreter's file, so a script
/// path is only joined to the process's own working directory.
fn absolute(raw: &str, e: &ProcessEvent) -> Option<String> {
    let script = e.flags & process_flags::SCRIPT != 0;
    // One table per call: each namespace's is read once for all the candidates (mount
    // ids are reused after an unmount, so a table kept longer could go stale).
    let mut mounts = MountDevices::new();
    let mut same_file = |candidate: &Path, mountinfo: &Path| {
        mounts
            .exe_identity(candidate, mountinfo)
            .is_ok_and(|id| (id.dev, id.ino) == (e.exe.dev, e.exe.ino))
    };
    for (pid, own) in [(e.pid, true), (e.ppid, false)] {
        if script && !own {
            break;
        }
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let Ok(cwd) = std::fs::read_link(proc.join("cwd")) else {
            continue;
        };
        // Through /proc/PID/cwd: the process's own mount namespace.
        let through = proc.join("cwd").join(raw);
        if script || same_file(&through, &proc.join("mountinfo")) {
            let joined: PathBuf = cwd.join(raw).components().collect();
            return Some(joined.display().to_string());
        }
    }
    let name = Path::new(raw).file_name()?;
    PROGRAM_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| !script && same_file(candidate, Path::new("/proc/self/mountinfo")))
        .map(|found| found.display().to_string())
}

/// A running process from /proc, as the cache seeds it.
fn from_proc(
    pid: u32,
    cgroup_root: Option<&Path>,
    ticks: u64,
    args: bool,
    mounts: &mut MountDevices,
) -> Option<Process> {
    let stat = crate::procs::proc_stat(pid)?;
    let exe_link = PathBuf::from(format!("/proc/{pid}/exe"));
    let exe_id = mounts
        .exe_identity(&exe_link, Path::new(&format!("/proc/{pid}/mountinfo")))
        .unwrap_or_default();
    let exe = std::fs::read_link(&exe_link)
        .ok()
        .map(|p| p.display().to_string());
    let cmdline = if args {
        std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
    } else {
        Vec::new()
    };
    let cgroup_id = crate::procs::cgroup_id_of(pid, cgroup_root);
    Some(Process {
        pid,
        ppid: stat.ppid,
        comm: stat.comm,
        exe_id,
        exe,
        script: None,
        args: split_args(&cmdline),
        args_truncated: false,
        uid: stat.uid,
        gid: stat.gid,
        cgroup_id,
        start_ns: stat
            .start_ticks
            .saturating_mul(1_000_000_000 / ticks.max(1)),
    })
}

/// State the reader thread and the enrichers share.
struct Shared {
    ring: Mutex<libbpf_rs::RingBuffer<'static>>,
    table: Arc<Mutex<Table>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves a table that is still consistent enough to
    // read (every mutation is a single insert or field write): keep serving it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn refresh(&self) {
        // Errors (EINTR) leave records for the next call.
        let _ = locked(&self.ring).consume();
    }
}

/// The process monitor: its BPF object, tracepoints, reader thread and cache.
///
/// Dropping it detaches the tracepoints and stops the reader.
pub struct ProcessMonitor {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    _links: Vec<Link>,
    object: LoadedObject,
}

impl std::fmt::Debug for ProcessMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessMonitor")
            .field("stats", &self.stats().ok())
            .finish_non_exhaustive()
    }
}

impl ProcessMonitor {
    /// Audits and loads `bpf-src/process.bpf.c`, attaches its tracepoints, seeds the
    /// cache from /proc and starts a thread that reads the kernel's records.
    pub fn start(loader: &Loader, policy: &ProcessPolicy) -> Result<Self> {
        let object = loader.load_unpinned(crate::object::process())?;
        let redactor = Redactor::new(&policy.redact_args).map_err(|e| BpfError::Io {
            path: PathBuf::from("processes.redact_args"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let dlp = ironclad_policy::dlp::Dlp::new(&ironclad_policy::dlp::Detector::ALL, &[])
            .map_err(|e| BpfError::Io {
                path: PathBuf::from("the DLP detectors"),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })?;
        let ns = |t: rustix::time::Timespec| {
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        };
        let boot_offset = ns(rustix::time::clock_gettime(rustix::time::ClockId::Realtime))
            - ns(rustix::time::clock_gettime(rustix::time::ClockId::Boottime));
        let cgroup_root = ironclad_core::identity::cgroup2_root().ok();
        let table = Arc::new(Mutex::new(Table {
            pids: HashMap::new(),
            segments: 0,
            closed: VecDeque::new(),
            capacity: policy.capacity as usize,
            retain_ns: u64::from(policy.retain_exited_seconds) * 1_000_000_000,
            overflows: 0,
            mismatches: 0,
            args: policy.args,
            redactor,
            dlp,
            lineage_depth: policy.lineage_depth,
            cgroups: CgroupNames {
                root: cgroup_root.clone(),
                ..CgroupNames::default()
            },
            boot_offset,
            latest: 0,
        }));
        let handle = object.map(RING)?.handle()?;
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        let sink = table.clone();
        builder
            .add(&handle, move |record: &[u8]| {
                if let Some(e) = ProcessEvent::from_bytes(record) {
                    locked(&sink).apply(&e);
                }
                0
            })
            .map_err(|source| BpfError::Map {
                op: "ring buffer",
                map: RING.to_string(),
                source: crate::error::KernelError::from_libbpf(source),
            })?;
        let ring = builder.build().map_err(|source| BpfError::Map {
            op: "ring buffer",
            map: RING.to_string(),
            source: crate::error::KernelError::from_libbpf(source),
        })?;
        // Track first, then seed, so no process started meanwhile is missed.
        let links = object.attach_tracepoints(TRACEPOINTS)?;
        let shared = Arc::new(Shared {
            ring: Mutex::new(ring),
            table,
        });
        shared.refresh();
        let ticks = rustix::param::clock_ticks_per_second();
        let running: Vec<u32> = crate::procs::running()?
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        let mut mounts = MountDevices::new();
        for pid in running {
            if locked(&shared.table).pids.contains_key(&pid) {
                continue; // the tracepoints saw it: fresher
            }
            if let Some(p) = from_proc(pid, cgroup_root.as_deref(), ticks, policy.args, &mut mounts)
            {
                let mut table = locked(&shared.table);
                if !table.pids.contains_key(&pid) {
                    let p = Process {
                        args: redact_args(&table.redactor, &table.dlp, &p.args),
                        ..p
                    };
                    table.insert(0, p);
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let shared = shared.clone();
            let stop = stop.clone();
            let epoll = locked(&shared.ring).epoll_fd();
            std::thread::Builder::new()
                .name("ironclad-procs".to_string())
                .spawn(move || {
                    // SAFETY: the ring buffer (and with it its epoll fd) lives in
                    // `shared`, which this thread holds until it returns.
                    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(epoll) };
                    while !stop.load(Ordering::Relaxed) {
                        let mut fds = [rustix::event::PollFd::new(
                            &fd,
                            rustix::event::PollFlags::IN,
                        )];
                        let timeout = rustix::time::Timespec {
                            tv_sec: 0,
                            tv_nsec: 100_000_000,
                        };
                        // Woken when the ring is half full, else every 100 ms.
                        let _ = rustix::event::poll(&mut fds, Some(&timeout));
                        shared.refresh();
                    }
                })
                .map_err(|source| BpfError::Io {
                    path: PathBuf::from("ironclad-procs thread"),
                    source,
                })?
        };
        Ok(Self {
            shared,
            stop,
            reader: Some(reader),
            _links: links,
            object,
        })
    }

    /// Reads every record the kernel has written so far into the cache. Lookups do
    /// this themselves; call it to bring the cache up to date without one.
    pub fn refresh(&self) {
        self.shared.refresh();
    }

    /// The `process` block for `pid` as it was at kernel time `ktime_ns`
    /// (`bpf_ktime_get_ns()`; `None`: now), checked against the executable identity
    /// (device, inode; `(0, 0)`: unchecked). `None` if the cache cannot say.
    pub fn process_at(
        &self,
        pid: u32,
        ktime_ns: Option<u64>,
        exe: (u32, u64),
    ) -> Option<ProcessBlock> {
        self.refresh();
        locked(&self.shared.table).block(pid, ktime_ns, exe)
    }

    /// The `process` block for `pid` now.
    pub fn process(&self, pid: u32) -> Option<ProcessBlock> {
        self.process_at(pid, None, (0, 0))
    }

    /// Attaches the `process` block to an event that names a process (egress, dns,
    /// tls, sentinel, bandwidth); other events are left as they are.
    pub fn enrich(&self, event: &mut Event) {
        let Some((pid, ktime, exe)) = event.process_subject() else {
            return;
        };
        if pid == 0 {
            return;
        }
        if let Some(block) = self.process_at(pid, ktime, exe) {
            event.set_process(block);
        }
    }

    /// Applies a reloaded `processes` section at once: the redaction patterns, whether
    /// arguments are kept, the lineage depth and how long exited processes stay
    /// named. The processes already cached are redacted again with the new patterns
    /// (or lose their arguments), so a pattern added to hide a secret hides it in every
    /// later event, not only for processes started after the reload. The capacity is
    /// the kernel map's size and applies at the next start: returns whether the
    /// policy asks for another one.
    ///
    /// # Errors
    /// [`BpfError::Io`] naming `processes.redact_args` for a pattern that is not a
    /// regular expression; nothing is changed then.
    pub fn reconfigure(&self, policy: &ProcessPolicy) -> Result<bool> {
        let redactor = Redactor::new(&policy.redact_args).map_err(|e| BpfError::Io {
            path: PathBuf::from("processes.redact_args"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let mut guard = locked(&self.shared.table);
        let table = &mut *guard;
        for segment in table.pids.values_mut().flatten() {
            let args = if policy.args {
                redact_args(&redactor, &table.dlp, &segment.proc.args)
            } else {
                Vec::new()
            };
            if args != segment.proc.args {
                segment.proc = Arc::new(Process {
                    args,
                    ..(*segment.proc).clone()
                });
            }
        }
        table.redactor = redactor;
        table.args = policy.args;
        table.lineage_depth = policy.lineage_depth;
        table.retain_ns = u64::from(policy.retain_exited_seconds) * 1_000_000_000;
        Ok(policy.capacity as usize != table.capacity)
    }

    /// The cache's counters and the kernel's.
    pub fn stats(&self) -> Result<ProcessCacheStats> {
        let stats = self.object.map(names::process::ic_process_stats)?;
        let records = stats.sum_percpu_u64(&process_stat::EVENTS.to_ne_bytes())?;
        let lost = stats.sum_percpu_u64(&process_stat::LOST.to_ne_bytes())?;
        let table = locked(&self.shared.table);
        let live = table
            .pids
            .values()
            .flatten()
            .filter(|s| s.until.is_none())
            .count();
        Ok(ProcessCacheStats {
            cached: table.segments,
            live,
            overflows: table.overflows,
            lost,
            records,
            mismatches: table.mismatches,
        })
    }
}

impl Drop for ProcessMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_vectors_split_at_nul_and_keep_a_truncated_tail() {
        assert_eq!(
            split_args(b"curl\0-s\0http://x/\0"),
            ["curl", "-s", "http://x/"]
        );
        assert_eq!(split_args(b"sh\0-c\0echo hel"), ["sh", "-c", "echo hel"]);
        assert!(split_args(b"").is_empty());
    }
}
