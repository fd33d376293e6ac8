//! TLS visibility: OpenSSL plaintext through uprobes (`bpf-src/tls.bpf.c`).
//!
//! Entry probes on `SSL_write`, `SSL_write_ex`, `SSL_read` and `SSL_read_ex` stash each
//! call's buffer per thread; return probes learn how many bytes moved and copy up to
//! [`TlsPolicy::max_bytes`] of them into a ring buffer, in chunks of 4 KiB. Capture is
//! **off by default**: only processes in scope (by executable identity, comm, cgroup or
//! pid) are captured. Data goes to the local ring buffer and the embedder, nowhere else.
//!
//! By default ([`TlsAttach::Library`]) the probes are on the library, for every process
//! that maps it; a process out of scope traps and returns at the scope check. With
//! [`TlsAttach::PerProcess`] they are attached per process in scope (pid-filtered
//! uprobes): a process out of scope carries no breakpoint at all. Processes in scope
//! when the monitor starts (or when the scope changes) get their probes at once; a
//! process that comes into scope later (an exec of an in-scope executable or comm, a
//! fork into an in-scope cgroup) is reported by the kernel at its exec or fork, and a
//! thread of the monitor attaches its probes then. That attach races the new program's
//! first TLS call and loses against short-lived ones: the first uprobe registration
//! after a quiet period took 8 to 32 ms here (see docs/tls.md).
//!
//! Where in the library the probes trap is planned once ([`plan_probes`],
//! [`TlsPlacement`]): on an instruction the kernel emulates where the library allows
//! it, which saves a single-step trap per probe.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ironclad_bpf::{Loader, TlsMonitor, TlsPolicy, TlsScope};
//! use ironclad_events::{Event, Fanout, Overflow};
//!
//! let loader = Loader::builder().build()?;
//! let mut policy = TlsPolicy::default();
//! policy.scope = vec![TlsScope::Exe("/usr/bin/curl".into())];
//! let monitor = TlsMonitor::start(&loader, &policy)?;
//! let fanout = Arc::new(Fanout::new());
//! let sub = fanout.subscribe("log", 1024, Overflow::DropOldest);
//! let events = monitor.events(fanout.clone())?;
//! events.poll(std::time::Duration::from_secs(1))?;
//! for event in sub.receiver().try_iter() {
//!     if let Event::TlsData(tls) = event {
//!         println!("{} {:?} {:?}", tls.actor.pid, tls.direction, tls.http);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Minimum kernel
//! Uprobes and BTF tracepoints: Linux 5.5; ring buffer: 5.8.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ironclad_core::abi::{self, ExeId, TLS_CHUNK, TLS_MAX_CHUNKS};
use ironclad_core::identity::FileId;
use ironclad_events::{Event, Fanout};
use libbpf_rs::{Link, UprobeOpts};

use crate::error::{BpfError, Result};
use crate::events::{EventReader, EventSource};
use crate::loader::{LoadedObject, Loader};
use crate::names;

pub use ironclad_policy::tls::{TlsAttach, TlsPlacement, TlsPolicy, TlsScope};

const LIB_NAME: &str = "libssl.so.3";

/// This build's architecture as `ldconfig -p` names it, and its Debian multiarch
/// directories: the library the probes go on must be one this process's architecture
/// runs (the uprobes read that architecture's registers).
#[cfg(target_arch = "aarch64")]
const LDCONFIG_ARCH: &str = "AArch64";
#[cfg(target_arch = "aarch64")]
const MULTIARCH_DIRS: [&str; 2] = ["/usr/lib/aarch64-linux-gnu", "/lib/aarch64-linux-gnu"];
#[cfg(not(target_arch = "aarch64"))]
const LDCONFIG_ARCH: &str = "x86-64";
#[cfg(not(target_arch = "aarch64"))]
const MULTIARCH_DIRS: [&str; 2] = ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"];

/// Finds `libssl.so.3`: in the mappings of `pid` if given (through `/proc/PID/root`, so
/// a container's own library is found), else in the dynamic linker's cache (this build's
/// architecture's entry), else in the usual directories.
pub fn find_libssl(pid: Option<u32>) -> Result<PathBuf> {
    let not_found = |reason: String| BpfError::Io {
        path: PathBuf::from(LIB_NAME),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, reason),
    };
    if let Some(pid) = pid {
        let maps =
            std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| BpfError::Io {
                path: PathBuf::from(format!("/proc/{pid}/maps")),
                source: e,
            })?;
        let path = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| Path::new(p).file_name().is_some_and(|f| f == LIB_NAME))
            .ok_or_else(|| not_found(format!("process {pid} has no {LIB_NAME} mapped")))?;
        return Ok(PathBuf::from(format!("/proc/{pid}/root{path}")));
    }
    if let Ok(out) = std::process::Command::new("ldconfig").arg("-p").output() {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(path) = text
            .lines()
            .filter(|l| l.trim_start().starts_with(LIB_NAME) && l.contains(LDCONFIG_ARCH))
            .filter_map(|l| l.split("=> ").nth(1))
            .map(|p| PathBuf::from(p.trim()))
            .find(|p| p.exists())
        {
            return Ok(path);
        }
    }
    for dir in MULTIARCH_DIRS
        .into_iter()
        .chain(["/usr/lib64", "/usr/lib", "/lib64"])
    {
        let path = Path::new(dir).join(LIB_NAME);
        if path.exists() {
            return Ok(path);
        }
    }
    Err(not_found(format!("{LIB_NAME} not found (give its path)")))
}

/// The 16-byte comm key (NUL-padded, truncated to 15 bytes like the kernel's).
fn comm_key(comm: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    let bytes = comm.as_bytes();
    let n = bytes.len().min(15);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

fn exe_id(path: &Path) -> Result<ExeId> {
    let id = FileId::of_path(path)?;
    Ok(ExeId {
        dev: id.kernel_dev,
        _pad0: 0,
        ino: id.ino,
    })
}

/// The probes: (program, symbol, return probe).
const PROBES: &[(&str, &str, bool)] = &[
    (names::tls::ic_ssl_write, "SSL_write", false),
    (names::tls::ic_ssl_write_ret, "SSL_write", true),
    (names::tls::ic_ssl_write_ex, "SSL_write_ex", false),
    (names::tls::ic_ssl_write_ex_ret, "SSL_write_ex", true),
    (names::tls::ic_ssl_read, "SSL_read", false),
    (names::tls::ic_ssl_read_ret, "SSL_read", true),
    (names::tls::ic_ssl_read_ex, "SSL_read_ex", false),
    (names::tls::ic_ssl_read_ex_ret, "SSL_read_ex", true),
    (names::tls::ic_ssl_handshake, HANDSHAKE, false),
    (names::tls::ic_ssl_handshake_ret, HANDSHAKE, true),
];

/// The handshake (`SSL_connect` and `SSL_accept` call it): probed to learn the socket of
/// each connection before its first write. Optional: a binary without the symbol
/// still has its reads and writes captured, its connections named from their first read.
const HANDSHAKE: &str = "SSL_do_handshake";

/// One probe of the plan: which program, at which offset of the library file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSite {
    /// The BPF program (`ic_ssl_write_ex`, `ic_ssl_write_ex_ret`...).
    pub program: &'static str,
    /// The exported functions whose calls it sees (`SSL_write_ex`, or both `SSL_write`
    /// and `SSL_write_ex` when it sits on the function they share).
    pub covers: Vec<&'static str>,
    /// Offset in the library file (the uprobe's offset).
    pub offset: u64,
    /// A return probe.
    pub retprobe: bool,
    /// Where it sits: the exported symbol, or `SSL_write_ex→0x355e0` for the internal
    /// function at that address that `SSL_write_ex` forwards to.
    pub at: String,
}

/// The file offset of virtual address `address`, given (address, size, file offset) of
/// the sections with file contents.
fn file_offset(sections: &[(u64, u64, u64)], address: u64) -> Option<u64> {
    sections
        .iter()
        .find(|(start, size, _)| (*start..start + size).contains(&address))
        .map(|(start, _, offset)| address - start + offset)
}

/// The code of the library: symbols, and bytes by virtual address.
struct LibraryCode {
    data: Vec<u8>,
    /// (virtual address, size, file offset) of each probed symbol.
    symbols: HashMap<&'static str, (u64, u64, u64)>,
    /// (virtual address, size, file offset) of each section with file contents.
    sections: Vec<(u64, u64, u64)>,
    /// Whether the code is x86-64's, the only code [`forwards_to`] and
    /// [`starts_emulated`] read (arm64's libssl keeps its probes on the symbols).
    x86_64: bool,
}

impl LibraryCode {
    fn read(library: &Path) -> Result<Self> {
        use object::{Object, ObjectSection, ObjectSymbol};
        let io = |source: std::io::Error| BpfError::Io {
            path: library.to_path_buf(),
            source,
        };
        let invalid = |message: String| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                message,
            ))
        };
        let data = std::fs::read(library).map_err(io)?;
        let file = object::File::parse(&*data).map_err(|e| invalid(e.to_string()))?;
        let sections: Vec<(u64, u64, u64)> = file
            .sections()
            .filter_map(|s| {
                s.file_range()
                    .map(|(offset, size)| (s.address(), size, offset))
            })
            .filter(|(address, size, _)| *address != 0 && *size != 0)
            .collect();
        let mut symbols = HashMap::new();
        for (_, symbol, _) in PROBES {
            let found = file
                .dynamic_symbols()
                .chain(file.symbols())
                .find(|s| s.name() == Ok(*symbol) && s.address() != 0);
            if found.is_none() && *symbol == HANDSHAKE {
                continue;
            }
            let found = found.ok_or_else(|| {
                io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no symbol {symbol}"),
                ))
            })?;
            let address = found.address();
            let offset = file_offset(&sections, address)
                .ok_or_else(|| invalid(format!("{symbol} is in no section with file contents")))?;
            symbols.insert(*symbol, (address, found.size(), offset));
        }
        let x86_64 = file.architecture() == object::Architecture::X86_64;
        drop(file);
        Ok(Self {
            data,
            symbols,
            sections,
            x86_64,
        })
    }

    /// The file offset of virtual address `address`.
    fn offset_of(&self, address: u64) -> Option<u64> {
        file_offset(&self.sections, address)
    }

    /// Up to `len` bytes of code at virtual address `address`.
    fn code(&self, address: u64, len: u64) -> &[u8] {
        let Some(offset) = self.offset_of(address) else {
            return &[];
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = usize::try_from(offset.saturating_add(len)).unwrap_or(usize::MAX);
        self.data
            .get(start..end.min(self.data.len()))
            .unwrap_or_default()
    }
}

/// `endbr64`: marks a branch target; changes no register and no stack.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// The length of a leading `endbr64` in `code` (0 or 4).
fn endbr_len(code: &[u8]) -> u64 {
    if code.starts_with(&ENDBR64) {
        4
    } else {
        0
    }
}

/// Whether `code` starts with an instruction the kernel's uprobes emulate instead of
/// single-stepping out of line: `push` of a 64-bit register (x86-64).
///
/// Only the push is relied on (it is what compilers put first in a function that
/// saves registers, and what was measured); the kernel emulates calls and jumps too.
fn starts_emulated(code: &[u8]) -> bool {
    matches!(code, [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..])
}

/// The address of the function that the function at `address` forwards its call to,
/// unchanged, if its code is exactly `[endbr64] sub $imm8,%rsp; call rel32`: nothing
/// between entry and the call writes a register, so the callee receives the very
/// arguments of the exported function.
fn forwards_to(code: &[u8], address: u64) -> Option<u64> {
    let skip = usize::try_from(endbr_len(code)).ok()?;
    let rest = code.get(skip..)?;
    // 48 83 ec ib: sub $imm8, %rsp; e8 rel32: call.
    let [0x48, 0x83, 0xec, _, 0xe8, a, b, c, d, ..] = *rest else {
        return None;
    };
    let next = address.checked_add(u64::try_from(skip).ok()? + 9)?;
    Some(next.wrapping_add_signed(i64::from(i32::from_le_bytes([a, b, c, d]))))
}

/// Whether the function `code` at `address` contains a direct call to `target`.
fn calls(code: &[u8], address: u64, target: u64) -> bool {
    code.windows(5).enumerate().any(|(i, w)| {
        let [0xe8, a, b, c, d] = *w else {
            return false;
        };
        let next = address + i as u64 + 5;
        next.wrapping_add_signed(i64::from(i32::from_le_bytes([a, b, c, d]))) == target
    })
}

/// Where each probe goes in `library` (see [`TlsPlacement`]): the plan the monitor
/// attaches, resolved once per library (libbpf would parse the library again for every
/// attach, and attaches race a new program).
///
/// With [`TlsPlacement::Auto`], for each direction: when `SSL_write_ex` only adjusts
/// the stack and calls an internal function (its arguments unchanged) whose first
/// instruction the kernel emulates, the `_ex` probes (entry and return) go on that
/// function, where a probe costs one trap instead of a trap and a single step; if
/// `SSL_write` calls the same function, it is covered by them and gets no probe of its
/// own. Anything else keeps the probes on the exported functions, and so does code of
/// another architecture than x86-64 (arm64's uprobes emulate a different set of
/// instructions, and no placement there was measured).
pub fn plan_probes(library: &Path, placement: TlsPlacement) -> Result<Vec<ProbeSite>> {
    let code = LibraryCode::read(library)?;
    let at_symbol = |program: &'static str, symbol: &'static str, retprobe: bool| {
        let (_, _, offset) = code.symbols.get(symbol).copied().unwrap_or_default();
        ProbeSite {
            program,
            covers: vec![symbol],
            offset,
            retprobe,
            at: symbol.to_string(),
        }
    };
    let mut plan = Vec::new();
    for (plain, ex, programs) in [
        (
            "SSL_write",
            "SSL_write_ex",
            [
                names::tls::ic_ssl_write,
                names::tls::ic_ssl_write_ret,
                names::tls::ic_ssl_write_ex,
                names::tls::ic_ssl_write_ex_ret,
            ],
        ),
        (
            "SSL_read",
            "SSL_read_ex",
            [
                names::tls::ic_ssl_read,
                names::tls::ic_ssl_read_ret,
                names::tls::ic_ssl_read_ex,
                names::tls::ic_ssl_read_ex_ret,
            ],
        ),
    ] {
        let [plain_entry, plain_ret, ex_entry, ex_ret] = programs;
        let forwarded = (placement == TlsPlacement::Auto && code.x86_64)
            .then(|| {
                let (address, size, _) = code.symbols.get(ex).copied()?;
                let target = forwards_to(code.code(address, size.max(16)), address)?;
                let head = code.code(target, 16);
                let skip = endbr_len(head);
                let first = head.get(usize::try_from(skip).ok()?..)?;
                starts_emulated(first).then_some(())?;
                Some((target, code.offset_of(target)? + skip))
            })
            .flatten();
        let Some((target, offset)) = forwarded else {
            plan.push(at_symbol(plain_entry, plain, false));
            plan.push(at_symbol(plain_ret, plain, true));
            plan.push(at_symbol(ex_entry, ex, false));
            plan.push(at_symbol(ex_ret, ex, true));
            continue;
        };
        let (plain_address, plain_size, _) = code.symbols.get(plain).copied().unwrap_or_default();
        let plain_covered = calls(code.code(plain_address, plain_size), plain_address, target);
        let covers = if plain_covered {
            vec![plain, ex]
        } else {
            vec![ex]
        };
        for (program, retprobe) in [(ex_entry, false), (ex_ret, true)] {
            plan.push(ProbeSite {
                program,
                covers: covers.clone(),
                offset,
                retprobe,
                at: format!("{ex}→{target:#x}"),
            });
        }
        if !plain_covered {
            plan.push(at_symbol(plain_entry, plain, false));
            plan.push(at_symbol(plain_ret, plain, true));
        }
    }
    if code.symbols.contains_key(HANDSHAKE) {
        plan.push(at_symbol(names::tls::ic_ssl_handshake, HANDSHAKE, false));
        plan.push(at_symbol(names::tls::ic_ssl_handshake_ret, HANDSHAKE, true));
    }
    Ok(plan)
}

/// The offset in the file `library` of the code of `symbol` (an uprobe's offset).
pub fn symbol_offset(library: &Path, symbol: &str) -> Result<u64> {
    let code = LibraryCode::read(library)?;
    code.symbols
        .get(symbol)
        .map(|(_, _, offset)| *offset)
        .ok_or_else(|| BpfError::Io {
            path: library.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{symbol} is not one of the probed functions"),
            ),
        })
}

/// The per-process probes: links by pid.
#[derive(Debug)]
struct Probes {
    object: Arc<LoadedObject>,
    library: PathBuf,
    plan: Vec<ProbeSite>,
    by_pid: HashMap<u32, Vec<Link>>,
    failures: u64,
    missed: u64,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Links and counters stay consistent whatever panicked: keep using them.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Probes {
    /// Attaches the plan's probes to process `pid` (again, if it had them: a reused pid
    /// or a new program). A process that exited meanwhile is not an error.
    fn attach(&mut self, pid: u32) -> Result<()> {
        self.by_pid.remove(&pid);
        let mut links = Vec::with_capacity(self.plan.len());
        for site in &self.plan {
            let opts = UprobeOpts {
                retprobe: site.retprobe,
                ..UprobeOpts::default()
            };
            let pid_arg = i32::try_from(pid).unwrap_or(-1);
            match self.object.program(site.program)?.attach_uprobe_with_opts(
                pid_arg,
                &self.library,
                usize::try_from(site.offset).unwrap_or(usize::MAX),
                opts,
            ) {
                Ok(link) => links.push(link),
                Err(_) if !Path::new(&format!("/proc/{pid}")).exists() => {
                    // It ended before its probes were in place.
                    self.missed += 1;
                    return Ok(());
                }
                Err(source) => {
                    self.failures += 1;
                    return Err(BpfError::Attach {
                        program: site.program.to_string(),
                        target: format!("{}:{} in process {pid}", self.library.display(), site.at),
                        source: crate::error::KernelError::from_libbpf(source),
                    });
                }
            }
        }
        self.by_pid.insert(pid, links);
        Ok(())
    }

    /// Drops the probes of processes that have exited.
    fn prune(&mut self) {
        self.by_pid
            .retain(|pid, _| Path::new(&format!("/proc/{pid}")).exists());
    }
}

/// Running TLS capture. Dropping it (or [`stop`](Self::stop)) detaches every probe;
/// the traced programs keep working. Nothing is pinned: capture ends with the process.
pub struct TlsMonitor {
    object: Arc<LoadedObject>,
    links: Vec<Link>,
    library: PathBuf,
    /// Executable paths by (kernel device, inode): the scope's and those seen at start.
    known_exes: HashMap<(u32, u64), String>,
    probes: Arc<Mutex<Probes>>,
    stop: Arc<AtomicBool>,
    attacher: Option<std::thread::JoinHandle<()>>,
    /// The DLP detectors run over the plaintext (`TlsPolicy::dlp`) and whether they
    /// mask the data too; replaced by [`configure`](Self::configure).
    dlp: Arc<std::sync::RwLock<Option<DlpScan>>>,
}

/// The DLP detectors in force.
#[derive(Debug, Clone)]
struct DlpScan {
    dlp: Arc<ironclad_policy::dlp::Dlp>,
    redact_data: bool,
}

impl std::fmt::Debug for TlsMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMonitor")
            .field("library", &self.library)
            .field("probed_processes", &self.probed_processes())
            .finish_non_exhaustive()
    }
}

/// A scope resolved once (executables to identities, cgroup directories to ids, the
/// cgroup2 root), to test every running process against it.
struct ResolvedScope {
    pids: std::collections::HashSet<u32>,
    comms: std::collections::HashSet<[u8; 16]>,
    exes: std::collections::HashSet<(u32, u64)>,
    cgroups: std::collections::HashSet<u64>,
    cgroup_root: Option<PathBuf>,
    /// Each mount namespace's table read once per pass.
    mounts: ironclad_core::identity::MountDevices,
}

impl ResolvedScope {
    fn new(scope: &[TlsScope]) -> Self {
        use std::os::unix::fs::MetadataExt;
        let mut resolved = Self {
            pids: Default::default(),
            comms: Default::default(),
            exes: Default::default(),
            cgroups: Default::default(),
            cgroup_root: None,
            mounts: Default::default(),
        };
        for entry in scope {
            match entry {
                TlsScope::Pid(pid) => {
                    resolved.pids.insert(*pid);
                }
                TlsScope::Comm(comm) => {
                    resolved.comms.insert(comm_key(comm));
                }
                TlsScope::Exe(path) => {
                    if let Ok(id) = exe_id(path) {
                        resolved.exes.insert((id.dev, id.ino));
                    }
                }
                TlsScope::Cgroup(path) => {
                    if let Ok(meta) = std::fs::metadata(path) {
                        resolved.cgroups.insert(meta.ino());
                    }
                }
            }
        }
        if !resolved.cgroups.is_empty() {
            resolved.cgroup_root = ironclad_core::identity::cgroup2_root().ok();
        }
        resolved
    }

    /// Whether running process `pid` is in scope, from /proc (each file read only when
    /// the scope has entries of its kind).
    fn contains(&mut self, pid: u32) -> bool {
        if self.pids.contains(&pid) {
            return true;
        }
        if !self.comms.is_empty() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if self.comms.contains(&comm_key(comm.trim_end_matches('\n'))) {
                return true;
            }
        }
        if !self.exes.is_empty() {
            // The link leads into the process's mount namespace: its table names the
            // superblock (a container's overlay), as the kernel sees it.
            let proc = PathBuf::from(format!("/proc/{pid}"));
            if let Ok(id) = self
                .mounts
                .exe_identity(&proc.join("exe"), &proc.join("mountinfo"))
            {
                if self.exes.contains(&(id.dev, id.ino)) {
                    return true;
                }
            }
        }
        !self.cgroups.is_empty()
            && self.cgroups.contains(&crate::procs::cgroup_id_of(
                pid,
                self.cgroup_root.as_deref(),
            ))
    }
}

impl TlsMonitor {
    /// Audits and loads the TLS object, seeds the executable table from /proc, sets the
    /// scope and limits, and attaches the probes to `config.library` (or the library
    /// [`find_libssl`] finds).
    pub fn start(loader: &Loader, config: &TlsPolicy) -> Result<Self> {
        let _span = tracing::info_span!("ironclad.tls.start").entered();
        let library = match &config.library {
            Some(path) => path.clone(),
            None => find_libssl(None)?,
        };
        if !library.exists() {
            return Err(BpfError::Io {
                path: library,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such library"),
            });
        }
        let object = Arc::new(loader.load_unpinned(crate::object::tls())?);
        let plan = plan_probes(&library, config.placement)?;
        let mut monitor = Self {
            object: object.clone(),
            links: Vec::new(),
            library: library.clone(),
            known_exes: HashMap::new(),
            probes: Arc::new(Mutex::new(Probes {
                object,
                library,
                plan,
                by_pid: HashMap::new(),
                failures: 0,
                missed: 0,
            })),
            stop: Arc::new(AtomicBool::new(false)),
            attacher: None,
            dlp: Arc::new(std::sync::RwLock::new(None)),
        };
        monitor.configure(config)?;
        let per_process = config.attach == TlsAttach::PerProcess;
        let starts: &[&str] = if per_process {
            &[
                names::tls::ic_tls_exec,
                names::tls::ic_tls_fork,
                names::tls::ic_tls_sock_read,
            ]
        } else {
            &[names::tls::ic_tls_sock_read]
        };
        // Track first, then seed, so no process started meanwhile is missed.
        let tracepoints: Vec<&str> = crate::procs::TRACEPOINTS
            .iter()
            .chain(starts)
            .copied()
            .collect();
        let links = monitor.object.attach_tracepoints(&tracepoints)?;
        monitor.links.extend(links);
        for (id, path) in crate::procs::seed(&monitor.object)? {
            monitor.known_exes.insert((id.dev, id.ino), path);
        }
        for entry in &config.scope {
            if let TlsScope::Exe(path) = entry {
                let id = exe_id(path)?;
                monitor
                    .known_exes
                    .insert((id.dev, id.ino), path.display().to_string());
            }
        }
        if !per_process {
            monitor.attach_library()?;
            return Ok(monitor);
        }
        monitor.attach_in_scope(&config.scope)?;
        // Processes that come into scope later are reported by the kernel at exec/fork.
        let handle = monitor.object.map(names::tls::ic_tls_starts)?.handle()?;
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        let probes = monitor.probes.clone();
        builder
            .add(&handle, move |record: &[u8]| {
                if let Some(pid) = record.get(..4).and_then(|b| b.try_into().ok()) {
                    // A failure is counted (attach_failures) and the others go on.
                    let _ = locked(&probes).attach(u32::from_ne_bytes(pid));
                }
                0
            })
            .map_err(|source| BpfError::Map {
                op: "ring buffer",
                map: names::tls::ic_tls_starts.to_string(),
                source: crate::error::KernelError::from_libbpf(source),
            })?;
        let ring = builder.build().map_err(|source| BpfError::Map {
            op: "ring buffer",
            map: names::tls::ic_tls_starts.to_string(),
            source: crate::error::KernelError::from_libbpf(source),
        })?;
        let stop = monitor.stop.clone();
        let probes = monitor.probes.clone();
        monitor.attacher = Some(
            std::thread::Builder::new()
                .name("ironclad-tls".to_string())
                .spawn(move || {
                    let _handle = handle;
                    let mut last_prune = std::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let _ = ring.poll(Duration::from_millis(100));
                        // What a missed wakeup left in the ring (poll only reads a
                        // ring its wakeup reported).
                        let _ = ring.consume();
                        if last_prune.elapsed() >= Duration::from_secs(1) {
                            locked(&probes).prune();
                            last_prune = std::time::Instant::now();
                        }
                    }
                })
                .map_err(|source| BpfError::Io {
                    path: PathBuf::from("ironclad-tls thread"),
                    source,
                })?,
        );
        monitor.object.audit_log().record(
            crate::auditlog::AuditAction::Attach,
            "tls",
            &monitor.library.display().to_string(),
            crate::auditlog::Outcome::Ok,
            format!(
                "per-process probes, {} processes in scope at start",
                monitor.probed_processes().len()
            ),
        );
        Ok(monitor)
    }

    /// The library the probes are attached to.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Replaces the scope and limits.
    pub fn configure(&self, config: &TlsPolicy) -> Result<()> {
        // The detectors first: a bad pattern changes nothing.
        let dlp = match &config.dlp {
            Some(policy) => Some(DlpScan {
                dlp: Arc::new(policy.build().map_err(|e| BpfError::InvalidConfig {
                    field: "tls.dlp",
                    reason: e.to_string(),
                })?),
                redact_data: policy.redact_data,
            }),
            None => None,
        };
        if let Ok(mut live) = self.dlp.write() {
            *live = dlp;
        }
        let max_bytes = config.max_bytes.min(TLS_CHUNK as u32 * TLS_MAX_CHUNKS);
        let cfg = abi::TlsConfig {
            max_bytes,
            bytes_per_sec: config.bytes_per_second,
        };
        for map in [
            names::tls::ic_tls_scope_pid,
            names::tls::ic_tls_scope_cgroup,
            names::tls::ic_tls_scope_comm,
            names::tls::ic_tls_scope_exe,
        ] {
            let map = self.object.map(map)?;
            for key in map.keys() {
                map.delete(&key)?;
            }
        }
        let on = [1u8];
        for entry in &config.scope {
            match entry {
                TlsScope::Pid(pid) => self
                    .object
                    .map(names::tls::ic_tls_scope_pid)?
                    .update(&pid.to_ne_bytes(), &on)?,
                TlsScope::Comm(comm) => self
                    .object
                    .map(names::tls::ic_tls_scope_comm)?
                    .update(&comm_key(comm), &on)?,
                TlsScope::Exe(path) => self
                    .object
                    .map(names::tls::ic_tls_scope_exe)?
                    .update(&exe_id(path)?.to_bytes(), &on)?,
                TlsScope::Cgroup(path) => {
                    use std::os::unix::fs::MetadataExt;
                    let id = std::fs::metadata(path)
                        .map_err(|source| BpfError::Io {
                            path: path.clone(),
                            source,
                        })?
                        .ino();
                    self.object
                        .map(names::tls::ic_tls_scope_cgroup)?
                        .update(&id.to_ne_bytes(), &on)?;
                }
            }
        }
        self.object
            .map(names::tls::ic_tls_config)?
            .update(&0u32.to_ne_bytes(), &cfg.to_bytes())?;
        if self.attacher.is_some() {
            self.attach_in_scope(&config.scope)?;
        }
        Ok(())
    }

    /// [`TlsAttach::Library`]: the probes on the library itself, for every process.
    fn attach_library(&mut self) -> Result<()> {
        let plan = locked(&self.probes).plan.clone();
        for site in &plan {
            let opts = UprobeOpts {
                retprobe: site.retprobe,
                ..UprobeOpts::default()
            };
            let target = format!("{}:{}", self.library.display(), site.at);
            let result = self.object.program(site.program)?.attach_uprobe_with_opts(
                -1,
                &self.library,
                usize::try_from(site.offset).unwrap_or(usize::MAX),
                opts,
            );
            self.object.audit_log().result(
                crate::auditlog::AuditAction::Attach,
                "tls",
                &target,
                site.program,
                &result,
            );
            self.links.push(result.map_err(|source| BpfError::Attach {
                program: site.program.to_string(),
                target,
                source: crate::error::KernelError::from_libbpf(source),
            })?);
        }
        Ok(())
    }

    /// Where the probes sit in the library (see [`plan_probes`]).
    pub fn probe_sites(&self) -> Vec<ProbeSite> {
        locked(&self.probes).plan.clone()
    }

    /// Attaches the probes to every running process in `scope` and detaches them from
    /// the processes out of it.
    fn attach_in_scope(&self, scope: &[TlsScope]) -> Result<()> {
        let mut resolved = ResolvedScope::new(scope);
        let wanted: Vec<u32> = crate::procs::running()?
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|pid| resolved.contains(*pid))
            .collect();
        let mut probes = locked(&self.probes);
        probes.by_pid.retain(|pid, _| wanted.contains(pid));
        for pid in wanted {
            if !probes.by_pid.contains_key(&pid) {
                probes.attach(pid)?;
            }
        }
        Ok(())
    }

    /// The processes that carry the probes now.
    pub fn probed_processes(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = locked(&self.probes).by_pid.keys().copied().collect();
        pids.sort_unstable();
        pids
    }

    /// Per-process attaches that failed (the process ran on without capture).
    pub fn attach_failures(&self) -> u64 {
        locked(&self.probes).failures
    }

    /// Processes that came into scope and ended before their probes were in place
    /// ([`TlsAttach::PerProcess`] only): their TLS was not captured.
    pub fn missed_processes(&self) -> u64 {
        locked(&self.probes).missed
    }

    /// Opens the event ring buffer; every chunk is decoded, given the executable path
    /// of its process, and published to `fanout`.
    ///
    /// The path comes from `/proc/PID/exe` while the process runs and its identity
    /// matches what the kernel reported; after it exits, from the executables known by
    /// identity (the scope's and those seen running).
    pub fn events(&self, fanout: Arc<Fanout<Event>>) -> Result<EventReader> {
        EventReader::new(vec![self.event_source()?], fanout)
    }

    /// The plaintext ring buffer with its executable-path enrichment, to read together
    /// with other sources in one [`EventReader`].
    pub fn event_source(&self) -> Result<EventSource> {
        let mut known = self.known_exes.clone();
        let mut enrich = move |event: &mut Event| {
            if let Event::TlsData(tls) = event {
                let tls = &mut tls.actor;
                let key = (tls.exe_dev, tls.exe_ino);
                if key == (0, 0) {
                    return;
                }
                if !known.contains_key(&key) {
                    let live = PathBuf::from(format!("/proc/{}/exe", tls.pid));
                    if exe_id(&live).is_ok_and(|id| (id.dev, id.ino) == key) {
                        if let Ok(path) = std::fs::read_link(&live) {
                            if known.len() > 65_536 {
                                known.clear();
                            }
                            known.insert(key, path.display().to_string());
                        }
                    }
                }
                tls.exe = known.get(&key).cloned();
            }
        };
        let dlp = Arc::clone(&self.dlp);
        // Each record: decoded and enriched, then scanned by the DLP detectors (their
        // findings published before the data, which is masked when the policy says so).
        let handler = Box::new(
            move |record: &[u8], publish: &mut dyn FnMut(Event)| -> bool {
                let Ok(mut event) = ironclad_events::decode(record) else {
                    return false;
                };
                enrich(&mut event);
                let scan = dlp.read().ok().and_then(|d| d.clone());
                if let (Some(scan), Event::TlsData(tls)) = (scan, &mut event) {
                    let findings = scan.dlp.scan(&tls.data);
                    for f in &findings {
                        publish(Event::Dlp({
                            let mut ev = ironclad_events::DlpFinding::new(tls.direction);
                            ev.ktime_ns = tls.ktime_ns;
                            ev.detector = f.detector.clone();
                            ev.redacted = f.redacted.clone();
                            ev.actor = tls.actor.clone();
                            ev.cgroup_id = tls.cgroup_id;
                            ev.ssl = tls.ssl;
                            ev.local = tls.local;
                            ev.remote = tls.remote;
                            ev.call_id = tls.call_id;
                            ev.offset = tls
                                .offset
                                .saturating_add(u32::try_from(f.start).unwrap_or(u32::MAX));
                            ev
                        }));
                    }
                    if scan.redact_data && !findings.is_empty() {
                        // The HTTP parser kept the request or status line: gone when a
                        // secret is in it (a key in a URL).
                        let line_end = tls
                            .data
                            .windows(2)
                            .position(|w| w == b"\r\n")
                            .unwrap_or(tls.data.len());
                        if findings.iter().any(|f| f.start < line_end) {
                            tls.http = None;
                        }
                        ironclad_policy::dlp::Dlp::redact(&mut tls.data, &findings);
                    }
                }
                publish(event);
                true
            },
        );
        Ok(EventSource::with_handler(
            self.object.map(names::tls::ic_tls_events)?.handle()?,
            names::tls::ic_tls_events,
            handler,
        ))
    }

    /// Chunks lost because the ring buffer was full, summed over CPUs.
    pub fn lost_chunks(&self) -> Result<u64> {
        self.stat(0)
    }

    /// Bytes withheld by the per-second budget, summed over CPUs.
    pub fn withheld_bytes(&self) -> Result<u64> {
        self.stat(1)
    }

    fn stat(&self, index: u32) -> Result<u64> {
        let values = self
            .object
            .map(names::tls::ic_tls_stats)?
            .lookup_percpu(&index.to_ne_bytes())?
            .unwrap_or_default();
        Ok(values
            .iter()
            .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
            .map(u64::from_ne_bytes)
            .sum())
    }

    /// Detaches every probe now (uprobe links are destroyed; the programs go when the
    /// monitor is dropped).
    pub fn stop(mut self) {
        self.halt();
        let probes = self.links.len();
        self.links.clear();
        self.object.audit_log().record(
            crate::auditlog::AuditAction::Detach,
            "tls",
            &self.library.display().to_string(),
            crate::auditlog::Outcome::Ok,
            format!("{probes} tracepoints and every per-process probe"),
        );
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.attacher.take() {
            let _ = thread.join();
        }
        locked(&self.probes).by_pid.clear();
    }
}

impl Drop for TlsMonitor {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_keys_are_padded_and_truncated_like_the_kernel() {
        assert_eq!(&comm_key("curl")[..5], b"curl\0");
        let long = comm_key("a-very-long-command-name");
        assert_eq!(&long[..15], b"a-very-long-com");
        assert_eq!(long[15], 0);
    }

    #[test]
    fn finds_the_system_libssl() {
        let path = find_libssl(None).expect("libssl.so.3 is installed (curl needs it)");
        assert!(path.ends_with(LIB_NAME), "{}", path.display());
        let own = find_libssl(Some(std::process::id()));
        assert!(own.is_err(), "this test binary does not map libssl");
    }

    /// `sub $8,%rsp; call rel32` at `address`, calling `target`.
    fn wrapper(address: u64, target: u64, prefix: &[u8]) -> Vec<u8> {
        let mut code = prefix.to_vec();
        code.extend([0x48, 0x83, 0xec, 0x08, 0xe8]);
        let next = address + code.len() as u64 + 4;
        let rel = i32::try_from(target as i64 - next as i64).expect("near");
        code.extend(rel.to_le_bytes());
        code.extend([0x31, 0xd2, 0xc3]);
        code
    }

    #[test]
    fn a_wrapper_that_only_adjusts_the_stack_forwards_its_arguments() {
        assert_eq!(
            forwards_to(&wrapper(0x35a50, 0x355e0, &[]), 0x35a50),
            Some(0x355e0)
        );
        // A forward call too, and after endbr64 (CET builds).
        assert_eq!(
            forwards_to(&wrapper(0x1000, 0x2000, &ENDBR64), 0x1000),
            Some(0x2000)
        );
        // Anything written before the call (here `xor %ecx,%ecx`: a changed argument)
        // is not a plain forward.
        let mut changed = vec![0x48, 0x83, 0xec, 0x08, 0x31, 0xc9, 0xe8];
        changed.extend(0x100i32.to_le_bytes());
        assert_eq!(forwards_to(&changed, 0x1000), None);
        assert_eq!(forwards_to(&[0x48, 0x83, 0xec], 0x1000), None, "cut short");
        assert_eq!(forwards_to(&[], 0x1000), None);
    }

    #[test]
    fn a_function_calling_the_shared_one_is_recognised() {
        let mut body = vec![0x48, 0x83, 0xec, 0x18, 0x48, 0x89, 0xe1];
        body.extend(wrapper(0x4000 + body.len() as u64, 0x3000, &[]));
        assert!(calls(&body, 0x4000, 0x3000));
        assert!(!calls(&body, 0x4000, 0x3004));
        assert!(!calls(&body[..8], 0x4000, 0x3000), "the call cut off");
    }

    #[test]
    fn only_pushes_count_as_emulated_first_instructions() {
        assert!(starts_emulated(&[0x55, 0x48, 0x89, 0xe5])); // push %rbp
        assert!(starts_emulated(&[0x41, 0x56])); // push %r14
        assert!(!starts_emulated(&[0x48, 0x83, 0xec, 0x08])); // sub $8,%rsp
        assert!(!starts_emulated(&ENDBR64));
        assert!(!starts_emulated(&[0x41]));
        assert!(!starts_emulated(&[]));
        assert_eq!(endbr_len(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]), 4);
        assert_eq!(endbr_len(&[0x55]), 0);
    }

    #[test]
    fn the_plan_of_the_system_library_covers_all_four_functions() {
        let library = find_libssl(None).expect("libssl.so.3 on the test machine");
        for placement in [TlsPlacement::Auto, TlsPlacement::Symbols] {
            let plan = plan_probes(&library, placement).expect("plan");
            for symbol in ["SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex"] {
                let sites: Vec<&ProbeSite> =
                    plan.iter().filter(|s| s.covers.contains(&symbol)).collect();
                assert_eq!(
                    sites.iter().map(|s| s.retprobe).collect::<Vec<_>>(),
                    [false, true],
                    "{placement:?}: {symbol} has an entry and a return probe: {plan:#?}"
                );
                assert_eq!(sites[0].offset, sites[1].offset);
            }
        }
    }
}
