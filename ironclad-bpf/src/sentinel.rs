//! The Sentinel's kernel side: the BPF-LSM programs of `bpf-src/sentinel.bpf.c`, their
//! inode and object tables, and the agent registration handshake.
//!
//! This is the low-level handle; `ironclad-sentinel` builds the protected and monitored
//! sets from paths and is what agents use. Every hook refuses with EPERM (or, in
//! monitor-only mode, reports what it would refuse) and reports to a ring buffer.
//!
//! ```no_run
//! use ironclad_bpf::{sentinel, Loader, SentinelLsm};
//!
//! let loader = Loader::builder().build()?;
//! let mut lsm = SentinelLsm::load(&loader)?;
//! lsm.attach(true)?; // pinned: enforcement outlives this process
//! sentinel::register_agent(&loader.pin_dir("sentinel"))?; // this process is the agent
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Minimum kernel
//! BPF-LSM (`CONFIG_BPF_LSM=y`, `bpf` in `lsm=`): 5.7; task storage: 5.11;
//! `bpf_get_current_task_btf`: 5.11. Tested on Debian's 6.1 kernel.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use ironclad_core::abi::{
    BpfObjectKey, BpfObjectKind, InodeKey, SentinelConfig, SentinelNode, SentinelState,
    SEN_F_ENFORCE, SEN_PRCTL_REGISTER,
};
use ironclad_events::Event;
use libbpf_rs::{Link, MapCore};

use crate::auditlog::AuditAction;
use crate::error::{BpfError, Result};
use crate::events::EventSource;
use crate::loader::{LoadedObject, Loader};
use crate::names;

/// The LSM programs, in attach order: the registration and bookkeeping hooks first, so
/// the agent can register as soon as anything is enforced.
pub const PROGRAMS: &[&str] = &[
    names::sentinel::ic_task_prctl,
    names::sentinel::ic_task_free,
    names::sentinel::ic_file_open,
    names::sentinel::ic_file_permission,
    names::sentinel::ic_path_truncate,
    names::sentinel::ic_path_chmod,
    names::sentinel::ic_path_chown,
    names::sentinel::ic_inode_setxattr,
    names::sentinel::ic_inode_removexattr,
    names::sentinel::ic_inode_unlink,
    names::sentinel::ic_inode_rmdir,
    names::sentinel::ic_inode_rename,
    names::sentinel::ic_inode_link,
    names::sentinel::ic_inode_create,
    names::sentinel::ic_inode_mkdir,
    names::sentinel::ic_inode_mknod,
    names::sentinel::ic_inode_symlink,
    names::sentinel::ic_sb_mount,
    names::sentinel::ic_move_mount,
    names::sentinel::ic_bpf_map,
    names::sentinel::ic_bpf,
    names::sentinel::ic_netlink_send,
    names::sentinel::ic_task_kill,
    names::sentinel::ic_ptrace_access_check,
];

/// Why the registration handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// No Sentinel is attached: the kernel does not know the handshake.
    #[error("no Sentinel is attached (prctl {SEN_PRCTL_REGISTER:#x} is unknown to the kernel)")]
    NotAttached,
    /// The Sentinel refused: another agent is registered, or this executable is not the
    /// agent's.
    #[error("the Sentinel refused the registration: another agent is registered, or this executable is not the agent's")]
    Refused,
    /// Another error.
    #[error("prctl({SEN_PRCTL_REGISTER:#x}): {0}")]
    Os(std::io::Error),
}

/// Registers the calling process as the agent: the kernel accepts it once, from an
/// executable the Sentinel knows as the agent's, while no agent is registered. The
/// registration ends when the process exits (or execs).
///
/// `pin_dir` is the Sentinel's pin directory ([`Loader::pin_dir`]`("sentinel")`): an LSM
/// program cannot make a system call succeed (a zero return lets the kernel's default
/// answer through, and prctl's is EINVAL), so the kernel refuses with EPERM and accepts
/// silently, and the outcome is read back from the pinned state map.
pub fn register_agent(pin_dir: &Path) -> std::result::Result<(), RegisterError> {
    // SAFETY: prctl with integer arguments only; the kernel reads no memory of ours.
    let rc = unsafe { libc::prctl(SEN_PRCTL_REGISTER, 0, 0, 0, 0) };
    let err = std::io::Error::last_os_error();
    if rc != 0 && err.raw_os_error() == Some(libc::EPERM) {
        return Err(RegisterError::Refused);
    }
    if rc != 0 && err.raw_os_error() != Some(libc::EINVAL) {
        return Err(RegisterError::Os(err));
    }
    match read_state(&pin_dir.join(names::sentinel::ic_sentinel_state)) {
        Ok(Some(state)) if state.agent_tgid == u64::from(std::process::id()) => Ok(()),
        Ok(_) => Err(RegisterError::NotAttached),
        Err(e) => Err(RegisterError::Os(e)),
    }
}

/// Reads the Sentinel's state through a read-only fd to its pinned map (`None` if there
/// is no pin).
fn read_state(pin: &Path) -> std::io::Result<Option<SentinelState>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    let Ok(path) = std::ffi::CString::new(pin.as_os_str().as_bytes()) else {
        return Ok(None);
    };
    let opts = libbpf_sys::bpf_obj_get_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_obj_get_opts>() as libbpf_sys::size_t,
        file_flags: libbpf_sys::BPF_F_RDONLY,
        path_fd: 0,
    };
    // SAFETY: `path` is a NUL-terminated string and `opts` a valid options struct, both
    // alive for the call.
    let fd = unsafe { libbpf_sys::bpf_obj_get_opts(path.as_ptr(), &opts) };
    if fd < 0 {
        let err = std::io::Error::from_raw_os_error(-fd);
        return if err.kind() == std::io::ErrorKind::NotFound {
            Ok(None)
        } else {
            Err(err)
        };
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let key = 0u32;
    let mut value = [0u8; SentinelState::SIZE];
    // SAFETY: the key and value buffers have the map's key and value sizes (4 and
    // SentinelState::SIZE bytes, checked against the C struct at compile time).
    let rc = unsafe {
        libbpf_sys::bpf_map_lookup_elem(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&key as *const u32).cast(),
            value.as_mut_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(SentinelState::from_bytes(&value))
}

/// The ids of an object's maps and programs, for [`SentinelLsm::protect_objects`].
pub fn object_ids(object: &LoadedObject) -> Result<Vec<(BpfObjectKind, u32)>> {
    let mut ids = Vec::new();
    for map in object.libbpf().maps() {
        // Maps libbpf did not create (none here) have no fd.
        let info = map.info().map_err(|source| BpfError::Map {
            op: "get info",
            map: map.name().to_string_lossy().into_owned(),
            source: crate::error::KernelError::from_libbpf(source),
        })?;
        ids.push((BpfObjectKind::Map, info.info.id));
    }
    for prog in object.libbpf().progs() {
        let id =
            libbpf_rs::Program::id_from_fd(prog.as_fd()).map_err(|source| BpfError::Attach {
                program: prog.name().to_string_lossy().into_owned(),
                target: "program info".to_string(),
                source: crate::error::KernelError::from_libbpf(source),
            })?;
        ids.push((BpfObjectKind::Prog, id));
    }
    Ok(ids)
}

/// The kernel id of a link.
pub(crate) fn link_id(link: &Link) -> Result<u32> {
    link.info()
        .map(|i| i.id)
        .map_err(|source| BpfError::Attach {
            program: "link".to_string(),
            target: "link info".to_string(),
            source: crate::error::KernelError::from_libbpf(source),
        })
}

/// The loaded Sentinel programs and their tables.
#[derive(Debug)]
pub struct SentinelLsm {
    object: LoadedObject,
    links: Vec<(String, Link)>,
}

impl SentinelLsm {
    /// Name of the BPF object (and of its pin directory).
    pub const OBJECT: &'static str = "sentinel";

    /// Audits and loads the programs, pinning the maps (or reusing the pins of a Sentinel
    /// left by an earlier run of the agent). Nothing is enforced before
    /// [`attach`](Self::attach).
    pub fn load(loader: &Loader) -> Result<Self> {
        let object = loader.load(crate::object::sentinel())?;
        Ok(Self {
            object,
            links: Vec::new(),
        })
    }

    /// The loaded object (maps, programs, pin directory).
    pub fn object(&self) -> &LoadedObject {
        &self.object
    }

    /// The loaded object, giving up the links (pinned links stay attached).
    pub fn into_object(self) -> LoadedObject {
        self.object
    }

    fn link_pin(&self, program: &str) -> PathBuf {
        self.object.pin_dir().join("links").join(program)
    }

    /// Attaches every hook. With `pin`, each link is pinned under the object's pin
    /// directory (`links/<program>`) so enforcement survives this process; a link
    /// already pinned there by an earlier run is reused rather than attached twice.
    pub fn attach(&mut self, pin: bool) -> Result<()> {
        let log = self.object.audit_log().clone();
        if pin {
            let dir = self.object.pin_dir().join("links");
            std::fs::create_dir_all(&dir).map_err(|source| BpfError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        for name in PROGRAMS {
            if self.links.iter().any(|(n, _)| n == name) {
                continue;
            }
            let pin_path = self.link_pin(name);
            if pin && pin_path.exists() {
                let link = Link::open(&pin_path);
                log.result(
                    AuditAction::Reuse,
                    Self::OBJECT,
                    &pin_path.display().to_string(),
                    name,
                    &link,
                );
                let link = link.map_err(|e| BpfError::Pin {
                    what: format!("link of {name}"),
                    path: pin_path.clone(),
                    reason: e.to_string(),
                    source: Some(crate::error::KernelError::from_libbpf(e)),
                })?;
                self.links.push(((*name).to_string(), link));
                continue;
            }
            // The program's own section: the build for older kernels hooks another
            // function for one of them (ic_path_chown on lsm/inode_setattr).
            let program = self.object.program(name)?;
            let target = program.section().to_string_lossy().into_owned();
            let result = program.attach_lsm();
            log.result(AuditAction::Attach, Self::OBJECT, &target, name, &result);
            let mut link = result.map_err(|source| BpfError::Attach {
                program: (*name).to_string(),
                target,
                source: crate::error::KernelError::from_libbpf(source),
            })?;
            if pin {
                let pinned = link.pin(&pin_path);
                log.result(
                    AuditAction::Pin,
                    Self::OBJECT,
                    &pin_path.display().to_string(),
                    name,
                    &pinned,
                );
                pinned.map_err(|e| BpfError::Pin {
                    what: format!("link of {name}"),
                    path: pin_path.clone(),
                    reason: e.to_string(),
                    source: Some(crate::error::KernelError::from_libbpf(e)),
                })?;
            }
            self.links.push(((*name).to_string(), link));
        }
        Ok(())
    }

    /// How many hooks are attached.
    pub fn attached_hooks(&self) -> usize {
        self.links.len()
    }

    /// The kernel ids of the attached links, by program name.
    pub fn link_ids(&self) -> Result<Vec<(String, u32)>> {
        self.links
            .iter()
            .map(|(name, link)| link_id(link).map(|id| (name.clone(), id)))
            .collect()
    }

    /// Detaches every hook and removes the link pins (the maps stay pinned). Only the
    /// agent can do this once the Sentinel protects its own pins.
    pub fn detach(&mut self) -> Result<()> {
        let log = self.object.audit_log().clone();
        for (name, mut link) in self.links.drain(..) {
            if link.pin_path().is_some() {
                let unpinned = link.unpin();
                log.result(AuditAction::Unpin, Self::OBJECT, &name, "link", &unpinned);
            }
            // Tracing links (LSM among them) do not support BPF_LINK_DETACH: closing the
            // last fd, once unpinned, detaches the program.
            drop(link);
            log.record(
                AuditAction::Detach,
                Self::OBJECT,
                &name,
                crate::auditlog::Outcome::Ok,
                "lsm",
            );
        }
        let dir = self.object.pin_dir().join("links");
        if dir.exists() {
            for entry in std::fs::read_dir(&dir)
                .map_err(|source| BpfError::Io {
                    path: dir.clone(),
                    source,
                })?
                .flatten()
            {
                let path = entry.path();
                let removed = std::fs::remove_file(&path);
                log.result(
                    AuditAction::Unpin,
                    Self::OBJECT,
                    &path.display().to_string(),
                    "link",
                    &removed,
                );
            }
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }

    /// Replaces the inode table with `nodes` (inode → `IC_SEN_*` flags): new and changed
    /// entries are written first, stale ones deleted after, so no inode that stays
    /// protected is ever unprotected in between.
    pub fn set_nodes(&self, nodes: &BTreeMap<InodeKey, u32>) -> Result<()> {
        let map = self.object.map(names::sentinel::ic_sentinel_nodes)?;
        let current = self.nodes()?;
        let images: Vec<([u8; InodeKey::SIZE], [u8; SentinelNode::SIZE])> = nodes
            .iter()
            .filter(|(k, f)| current.get(k) != Some(f))
            .map(|(k, f)| {
                (
                    k.to_bytes(),
                    SentinelNode {
                        flags: *f,
                        _pad0: 0,
                    }
                    .to_bytes(),
                )
            })
            .collect();
        map.update_many(images.iter().map(|(k, v)| (&k[..], &v[..])))?;
        for key in current.keys().filter(|k| !nodes.contains_key(k)) {
            map.delete(&key.to_bytes())?;
        }
        Ok(())
    }

    /// The inode table as the kernel holds it.
    pub fn nodes(&self) -> Result<BTreeMap<InodeKey, u32>> {
        let map = self.object.map(names::sentinel::ic_sentinel_nodes)?;
        let mut out = BTreeMap::new();
        for key in map.keys() {
            if let (Some(k), Some(v)) = (
                InodeKey::from_bytes(&key),
                map.lookup(&key)?.and_then(|v| SentinelNode::from_bytes(&v)),
            ) {
                out.insert(k, v.flags);
            }
        }
        Ok(out)
    }

    /// Adds BPF objects (maps, programs, links by kernel id) to the protected set:
    /// only the agent may then get a writable fd to the maps or an fd to the links.
    pub fn protect_objects(&self, ids: &[(BpfObjectKind, u32)]) -> Result<()> {
        let map = self.object.map(names::sentinel::ic_sentinel_objects)?;
        let images: Vec<[u8; BpfObjectKey::SIZE]> = ids
            .iter()
            .map(|(kind, id)| {
                BpfObjectKey {
                    kind: *kind as u32,
                    id: *id,
                }
                .to_bytes()
            })
            .collect();
        let one = 1u32.to_ne_bytes();
        map.update_many(images.iter().map(|k| (&k[..], &one[..])))?;
        Ok(())
    }

    /// Makes `ifindexes` (interfaces of this process's network namespace) the
    /// protected interfaces, replacing the earlier set: on each, nobody but the agent
    /// may change tc filters or chains, create or delete the clsact qdisc, or attach a
    /// tcx program (each refusal an event, op `tc`). An empty set protects none.
    pub fn set_protected_interfaces(&self, ifindexes: &[u32]) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let map = self.object.map(names::sentinel::ic_sentinel_objects)?;
        let key = |kind: BpfObjectKind, id: u32| {
            BpfObjectKey {
                kind: kind as u32,
                id,
            }
            .to_bytes()
        };
        let netns = std::fs::metadata("/proc/self/ns/net")
            .map_err(|source| BpfError::Io {
                path: PathBuf::from("/proc/self/ns/net"),
                source,
            })?
            .ino();
        let netns = u32::try_from(netns).map_err(|_| BpfError::InvalidConfig {
            field: "network namespace",
            reason: format!("inode number {netns} does not fit the kernel's 32 bits"),
        })?;
        let stale: Vec<Vec<u8>> = map
            .keys()
            .into_iter()
            .filter(|k| {
                BpfObjectKey::from_bytes(k).is_some_and(|o| {
                    (o.kind == BpfObjectKind::Iface as u32 && !ifindexes.contains(&o.id))
                        || (o.kind == BpfObjectKind::Netns as u32
                            && (ifindexes.is_empty() || o.id != netns))
                })
            })
            .collect();
        map.delete_many(stale.iter().map(Vec::as_slice))?;
        if ifindexes.is_empty() {
            return Ok(());
        }
        let mut images: Vec<[u8; BpfObjectKey::SIZE]> = ifindexes
            .iter()
            .map(|i| key(BpfObjectKind::Iface, *i))
            .collect();
        images.push(key(BpfObjectKind::Netns, netns));
        let one = 1u32.to_ne_bytes();
        map.update_many(images.iter().map(|k| (&k[..], &one[..])))?;
        Ok(())
    }

    /// How many BPF objects are protected.
    pub fn protected_objects(&self) -> Result<usize> {
        Ok(self
            .object
            .map(names::sentinel::ic_sentinel_objects)?
            .keys()
            .len())
    }

    /// Turns refusal on (`true`) or off (monitor-only: attempts are reported as
    /// `would_deny` and allowed).
    pub fn set_enforce(&self, enforce: bool) -> Result<()> {
        let config = SentinelConfig {
            flags: if enforce { SEN_F_ENFORCE } else { 0 },
            _pad0: 0,
        };
        self.object
            .map(names::sentinel::ic_sentinel_config)?
            .update(&0u32.to_ne_bytes(), &config.to_bytes())
    }

    /// The live configuration.
    pub fn config(&self) -> Result<SentinelConfig> {
        Ok(self
            .object
            .map(names::sentinel::ic_sentinel_config)?
            .lookup(&0u32.to_ne_bytes())?
            .and_then(|b| SentinelConfig::from_bytes(&b))
            .unwrap_or_default())
    }

    /// Who is registered.
    pub fn state(&self) -> Result<SentinelState> {
        Ok(self
            .object
            .map(names::sentinel::ic_sentinel_state)?
            .lookup(&0u32.to_ne_bytes())?
            .and_then(|b| SentinelState::from_bytes(&b))
            .unwrap_or_default())
    }

    /// Events the ring buffer had no room for.
    pub fn lost_events(&self) -> Result<u64> {
        self.object
            .map(names::sentinel::ic_sentinel_lost)?
            .sum_percpu_u64(&0u32.to_ne_bytes())
    }

    /// The event ring buffer. `paths` names known inodes (kernel device, inode) so each
    /// record carries the target's path. An actor's executable is named from `paths`
    /// when it is one of them (so a short-lived intruder running the agent's binary is
    /// named after it exits), else from `/proc/<pid>/exe` while the process lives.
    pub fn event_source(&self, paths: HashMap<(u32, u64), PathBuf>) -> Result<EventSource> {
        let enrich = Box::new(move |event: &mut Event| {
            if let Event::Sentinel(r) = event {
                r.path = paths
                    .get(&(r.target_dev, r.target_ino))
                    .map(|p| p.display().to_string())
                    .or_else(|| {
                        paths
                            .get(&(r.parent_dev, r.parent_ino))
                            .map(|dir| Path::new(dir).join(&r.name).display().to_string())
                    });
                // An executable the Sentinel knows (the agent's own binary, run by
                // an intruder) is named by its identity: the process may be gone
                // before this record is read. Others are named from `/proc` while
                // the process lives.
                let a = &mut r.actor;
                a.exe = paths
                    .get(&(a.exe_dev, a.exe_ino))
                    .map(|p| p.display().to_string())
                    .or_else(|| {
                        std::fs::read_link(format!("/proc/{}/exe", a.pid))
                            .ok()
                            .map(|p| p.display().to_string())
                    });
            }
        });
        Ok(EventSource::new(
            self.object
                .map(names::sentinel::ic_sentinel_events)?
                .handle()?,
            names::sentinel::ic_sentinel_events,
            Some(enrich),
        ))
    }
}
