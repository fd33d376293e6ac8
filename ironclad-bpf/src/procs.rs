//! Listing running processes from /proc, to seed the kernel's process tables.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ironclad_core::abi::{ProcExe, ProcInfo};
use ironclad_core::identity::MountDevices;

use crate::error::{BpfError, Result};
use crate::loader::LoadedObject;
use crate::names;

/// The process table map of `bpf-src/lib/proctable.h`: named the same in every object
/// that includes it (`names` checks egress, telemetry and tls each).
pub(crate) const TABLE: &str = names::egress::ic_procs;
/// Its three tracepoint programs.
pub(crate) const TRACEPOINTS: &[&str] = &[
    names::egress::ic_proc_exec,
    names::egress::ic_proc_fork,
    names::egress::ic_proc_exit,
];

/// Every running process: its pid and the path of its `/proc/PID/exe` link (kernel
/// threads included; their link cannot be followed).
pub(crate) fn running() -> Result<Vec<(u32, PathBuf)>> {
    let dir = std::fs::read_dir("/proc").map_err(|source| BpfError::Io {
        path: PathBuf::from("/proc"),
        source,
    })?;
    Ok(dir
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, entry.path().join("exe")))
        })
        .collect())
}

/// The id of process `pid`'s cgroup v2 directory (its inode under `cgroup_root`);
/// 0 if unknown.
pub(crate) fn cgroup_id_of(pid: u32, cgroup_root: Option<&Path>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| {
            let rel = text
                .lines()
                .find_map(|l| l.strip_prefix("0::"))?
                .to_string();
            let dir = cgroup_root?.join(rel.trim_start_matches('/'));
            std::fs::metadata(dir).ok().map(|m| m.ino())
        })
        .unwrap_or(0)
}

/// What `/proc/PID/stat` and `/proc/PID/status` say of a running process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// The command name (stat field 2).
    pub comm: String,
    /// The parent's pid (field 4).
    pub ppid: u32,
    /// Start, clock ticks since boot (field 22): the unit of `ProcInfo::start`.
    pub start_ticks: u64,
    /// Real user and group id (status `Uid:`, `Gid:`).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
}

/// Reads [`ProcStat`] of `pid`; `None` if it is gone or unreadable.
pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm may hold spaces and parentheses: it ends at the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3 of stat(5); ppid 4; starttime 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u32> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(ProcStat {
        comm,
        ppid,
        start_ticks,
        uid: field("Uid:")?,
        gid: field("Gid:")?,
    })
}

/// A process's record as seeding from /proc builds it, given the start of every process
/// read in this pass (its parent's among them).
fn proc_info(
    pid: u32,
    stat: &ProcStat,
    exe: ProcExe,
    cgroup_root: Option<&Path>,
    starts: &HashMap<u32, u64>,
) -> ProcInfo {
    // A parent gone meanwhile leaves no start to follow: the walk stops there.
    let pstart = starts.get(&stat.ppid).copied().unwrap_or(u64::MAX);
    let mut info = ProcInfo {
        exe,
        ppid: stat.ppid,
        uid: stat.uid,
        gid: stat.gid,
        cgroup_id: cgroup_id_of(pid, cgroup_root),
        start: stat.start_ticks,
        pstart,
        ..ProcInfo::default()
    };
    let comm = stat.comm.as_bytes();
    let n = comm.len().min(15);
    info.comm[..n].copy_from_slice(&comm[..n]);
    info
}

/// Fills the process table of `object` from /proc (entries the tracepoints already
/// wrote are fresher and kept) and returns the executable paths seen, by identity.
/// Attach the tracepoints first, so no process started meanwhile is missed.
pub(crate) fn seed(object: &LoadedObject) -> Result<HashMap<ProcExe, String>> {
    let cgroup_root = ironclad_core::identity::cgroup2_root().ok();
    let mut known = HashMap::new();
    let mut entries: Vec<([u8; 4], [u8; ProcInfo::SIZE])> = Vec::new();
    let mut mounts = MountDevices::new();
    // Every process's stat first: a parent's start is then at hand for its children.
    let stats: Vec<(u32, PathBuf, ProcStat)> = running()?
        .into_iter()
        .filter_map(|(pid, exe)| proc_stat(pid).map(|stat| (pid, exe, stat)))
        .collect();
    let starts: HashMap<u32, u64> = stats
        .iter()
        .map(|(pid, _, stat)| (*pid, stat.start_ticks))
        .collect();
    for (pid, exe, stat) in &stats {
        // Kernel threads and processes that exit meanwhile have no executable.
        // The link leads into the process's mount namespace: its mount table names the
        // superblock.
        let mountinfo = PathBuf::from(format!("/proc/{pid}/mountinfo"));
        let Ok(id) = mounts.exe_identity(exe, &mountinfo) else {
            continue;
        };
        let info = proc_info(*pid, stat, id, cgroup_root.as_deref(), &starts);
        entries.push((pid.to_ne_bytes(), info.to_bytes()));
        if let Ok(path) = std::fs::read_link(exe) {
            known.insert(id, path.display().to_string());
        }
    }
    let table = object.map(TABLE)?;
    let fresh: Vec<([u8; 4], [u8; ProcInfo::SIZE])> = entries
        .into_iter()
        .filter(|(pid, _)| matches!(table.lookup(pid), Ok(None)))
        .collect();
    table.update_many(fresh.iter().map(|(k, v)| (&k[..], &v[..])))?;
    Ok(known)
}
