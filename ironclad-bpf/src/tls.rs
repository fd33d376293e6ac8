//! TLS visibility: OpenSSL plaintext through uprobes (`bpf-src/tls.bpf.c`).
//!
//! Entry probes on `SSL_write`, `SSL_write_ex`, `SSL_read` and `SSL_read_ex` stash each
//! call's buffer per thread; return probes learn how many bytes moved and copy up to
//! [`TlsPolicy::max_bytes`] of them into a ring buffer, in chunks of 4 KiB. Capture is
//! **off by default**: only processes in scope (by executable identity, comm, cgroup or
//! pid) are captured. Data goes to the local ring buffer and the embedder, nowhere else.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ironclad_bpf::{Loader, TlsMonitor, TlsPolicy, TlsScope};
//! use ironclad_events::{Event, Fanout, Overflow};
//!
//! let loader = Loader::builder().build()?;
//! let policy = TlsPolicy {
//!     scope: vec![TlsScope::Exe("/usr/bin/curl".into())],
//!     ..TlsPolicy::default()
//! };
//! let monitor = TlsMonitor::start(&loader, &policy)?;
//! let fanout = Arc::new(Fanout::new());
//! let sub = fanout.subscribe("log", 1024, Overflow::DropOldest);
//! let events = monitor.events(fanout.clone())?;
//! events.poll(std::time::Duration::from_secs(1))?;
//! for event in sub.receiver().try_iter() {
//!     if let Event::TlsData(tls) = event {
//!         println!("{} {:?} {:?}", tls.pid, tls.direction, tls.http);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Minimum kernel
//! Uprobes and BTF tracepoints: Linux 5.5; ring buffer: 5.8.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironclad_core::abi::{self, ExeId, TLS_CHUNK, TLS_MAX_CHUNKS};
use ironclad_core::identity::FileId;
use ironclad_events::{Event, Fanout};
use libbpf_rs::{Link, UprobeOpts};

use crate::error::{BpfError, Result};
use crate::events::{EventReader, EventSource};
use crate::loader::{LoadedObject, Loader};

pub use ironclad_policy::tls::{TlsPolicy, TlsScope};

const LIB_NAME: &str = "libssl.so.3";

/// Finds `libssl.so.3`: in the mappings of `pid` if given (through `/proc/PID/root`, so
/// a container's own library is found), else in the dynamic linker's cache, else in the
/// usual directories.
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
            .filter(|l| l.trim_start().starts_with(LIB_NAME) && l.contains("x86-64"))
            .filter_map(|l| l.split("=> ").nth(1))
            .map(|p| PathBuf::from(p.trim()))
            .find(|p| p.exists())
        {
            return Ok(path);
        }
    }
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/lib64",
    ] {
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
    ("ic_ssl_write", "SSL_write", false),
    ("ic_ssl_write_ret", "SSL_write", true),
    ("ic_ssl_write_ex", "SSL_write_ex", false),
    ("ic_ssl_write_ex_ret", "SSL_write_ex", true),
    ("ic_ssl_read", "SSL_read", false),
    ("ic_ssl_read_ret", "SSL_read", true),
    ("ic_ssl_read_ex", "SSL_read_ex", false),
    ("ic_ssl_read_ex_ret", "SSL_read_ex", true),
];

/// Running TLS capture. Dropping it (or [`stop`](Self::stop)) detaches every probe;
/// the traced programs keep working. Nothing is pinned: capture ends with the process.
#[derive(Debug)]
pub struct TlsMonitor {
    object: LoadedObject,
    links: Vec<Link>,
    library: PathBuf,
    /// Executable paths by (kernel device, inode): the scope's and those seen at start.
    known_exes: HashMap<(u32, u64), String>,
}

impl TlsMonitor {
    /// Audits and loads the TLS object, seeds the executable table from /proc, sets the
    /// scope and limits, and attaches the probes to `config.library` (or the library
    /// [`find_libssl`] finds).
    pub fn start(loader: &Loader, config: &TlsPolicy) -> Result<Self> {
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
        let object = loader.load_unpinned(crate::object::tls())?;
        let mut monitor = Self {
            object,
            links: Vec::new(),
            library,
            known_exes: HashMap::new(),
        };
        monitor.configure(config)?;
        // Track first, then seed, so no process started meanwhile is missed.
        for name in crate::procs::TRACEPOINTS {
            let prog = monitor.object.program(name)?;
            let link = prog.attach().map_err(|source| BpfError::Attach {
                program: (*name).to_string(),
                target: "BTF tracepoint".to_string(),
                source,
            })?;
            monitor.links.push(link);
        }
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
        for (name, symbol, retprobe) in PROBES {
            let prog = monitor.object.program(name)?;
            let opts = UprobeOpts {
                func_name: Some((*symbol).to_string()),
                retprobe: *retprobe,
                ..UprobeOpts::default()
            };
            let result = prog.attach_uprobe_with_opts(-1, &monitor.library, 0, opts);
            monitor.object.audit_log().result(
                crate::auditlog::AuditAction::Attach,
                "tls",
                &format!("{}:{symbol}", monitor.library.display()),
                name,
                &result,
            );
            let link = result.map_err(|source| BpfError::Attach {
                program: (*name).to_string(),
                target: format!("{}:{symbol}", monitor.library.display()),
                source,
            })?;
            monitor.links.push(link);
        }
        Ok(monitor)
    }

    /// The library the probes are attached to.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Replaces the scope and limits.
    pub fn configure(&self, config: &TlsPolicy) -> Result<()> {
        let max_bytes = config.max_bytes.min(TLS_CHUNK as u32 * TLS_MAX_CHUNKS);
        let cfg = abi::TlsConfig {
            max_bytes,
            bytes_per_sec: config.bytes_per_second,
        };
        for map in [
            "ic_tls_scope_pid",
            "ic_tls_scope_cgroup",
            "ic_tls_scope_comm",
            "ic_tls_scope_exe",
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
                    .map("ic_tls_scope_pid")?
                    .update(&pid.to_ne_bytes(), &on)?,
                TlsScope::Comm(comm) => self
                    .object
                    .map("ic_tls_scope_comm")?
                    .update(&comm_key(comm), &on)?,
                TlsScope::Exe(path) => self
                    .object
                    .map("ic_tls_scope_exe")?
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
                        .map("ic_tls_scope_cgroup")?
                        .update(&id.to_ne_bytes(), &on)?;
                }
            }
        }
        self.object
            .map("ic_tls_config")?
            .update(&0u32.to_ne_bytes(), &cfg.to_bytes())
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
        let enrich = Box::new(move |event: &mut Event| {
            if let Event::TlsData(tls) = event {
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
        });
        Ok(EventSource::new(
            self.object.map("ic_tls_events")?.handle()?,
            "ic_tls_events",
            Some(enrich),
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
            .map("ic_tls_stats")?
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
        let probes = self.links.len();
        self.links.clear();
        self.object.audit_log().record(
            crate::auditlog::AuditAction::Detach,
            "tls",
            &self.library.display().to_string(),
            crate::auditlog::Outcome::Ok,
            format!("{probes} probes"),
        );
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
}
