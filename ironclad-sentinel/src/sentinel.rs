//! The [`Sentinel`] handle and its builder.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ironclad_bpf::auditlog::{AuditAction, Outcome};
use ironclad_bpf::sentinel::{object_ids, register_agent};
use ironclad_bpf::{EventSource, LoadedObject, Loader, RegisterError, SentinelLsm};
use ironclad_core::abi::{
    BpfObjectKind, InodeKey, SEN_AGENT, SEN_AGENT_DIR, SEN_ANCESTOR, SEN_MANAGER, SEN_MONITOR,
    SEN_NODES, SEN_PROTECT, SEN_TREE,
};
use ironclad_core::identity::user_dev_to_kernel;

use crate::SentinelError;

/// How the Sentinel runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SentinelMode {
    /// Attempts are refused with EPERM and reported.
    Enforcing,
    /// Attempts are reported as `would_deny` and allowed.
    MonitorOnly,
    /// Nothing is protected: the Sentinel could not start and the embedder allowed that
    /// ([`SentinelBuilder::allow_unprotected_start`]).
    Unprotected {
        /// Why it could not start.
        reason: String,
    },
}

/// A snapshot of what the Sentinel enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentinelStatus {
    /// How it runs.
    pub mode: SentinelMode,
    /// The registered agent's pid (0 when none is registered).
    pub agent_pid: u64,
    /// Files and directories protected.
    pub protected_inodes: usize,
    /// Files and directories monitored.
    pub monitored_inodes: usize,
    /// BPF maps, programs and links protected.
    pub protected_objects: usize,
    /// LSM hooks attached.
    pub hooks: usize,
    /// Events the ring buffer had no room for.
    pub lost_events: u64,
}

/// Builds and starts a [`Sentinel`].
#[derive(Debug, Clone)]
pub struct SentinelBuilder {
    protect: Vec<PathBuf>,
    monitor: Vec<PathBuf>,
    update_manager: Option<PathBuf>,
    agent_executable: Option<PathBuf>,
    monitor_only: bool,
    allow_unprotected: bool,
    pin: bool,
}

impl Default for SentinelBuilder {
    fn default() -> Self {
        Self {
            protect: Vec::new(),
            monitor: Vec::new(),
            update_manager: None,
            agent_executable: None,
            monitor_only: false,
            allow_unprotected: false,
            pin: true,
        }
    }
}

impl SentinelBuilder {
    /// Protects a file, or a directory with everything in it (also files created in it
    /// later): only the agent and the update manager may change it.
    pub fn protect(mut self, path: impl Into<PathBuf>) -> Self {
        self.protect.push(path.into());
        self
    }

    /// Monitors a file or directory: changes are reported, and allowed.
    pub fn monitor(mut self, path: impl Into<PathBuf>) -> Self {
        self.monitor.push(path.into());
        self
    }

    /// The executable of the update manager (a package manager, an updater): it may
    /// change protected files (replace the agent binary) and signal the agent; it gets no
    /// access to the BPF objects.
    pub fn update_manager(mut self, path: impl Into<PathBuf>) -> Self {
        self.update_manager = Some(path.into());
        self
    }

    /// The agent's executable (default: this process's, `/proc/self/exe`). Only a process
    /// running it may register as the agent.
    pub fn agent_executable(mut self, path: impl Into<PathBuf>) -> Self {
        self.agent_executable = Some(path.into());
        self
    }

    /// Report what would be refused instead of refusing it.
    pub fn monitor_only(mut self, monitor_only: bool) -> Self {
        self.monitor_only = monitor_only;
        self
    }

    /// Lets [`start`](Self::start) succeed without any protection when the Sentinel
    /// cannot load (no BPF LSM, an audit refusal): the failure is still written to the
    /// audit log as an alert, and [`Sentinel::status`] says `Unprotected`. Off by
    /// default: an agent that cannot protect itself does not start.
    pub fn allow_unprotected_start(mut self, allow: bool) -> Self {
        self.allow_unprotected = allow;
        self
    }

    /// Pin the hooks (default `true`): enforcement survives the agent's exit or crash,
    /// and a restarted agent registers with the Sentinel it left. Without pins, dropping
    /// the [`Sentinel`] detaches everything.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Resolves the paths, loads and attaches the hooks and registers this process as
    /// the agent. Bad paths are reported before the kernel is touched; a failure after
    /// that takes back what this call attached. Fails closed unless
    /// [`allow_unprotected_start`](Self::allow_unprotected_start) is set.
    pub fn start(self, loader: &Loader) -> Result<Sentinel, SentinelError> {
        match self.try_start(loader) {
            Ok(sentinel) => {
                loader.audit_log().record(
                    AuditAction::Load,
                    SentinelLsm::OBJECT,
                    "sentinel",
                    Outcome::Ok,
                    format!(
                        "{} ({} inodes, {} hooks)",
                        if self.monitor_only {
                            "monitor-only"
                        } else {
                            "enforcing"
                        },
                        sentinel.nodes.len(),
                        ironclad_bpf::sentinel::PROGRAMS.len()
                    ),
                );
                Ok(sentinel)
            }
            Err(err) => {
                let log = loader.audit_log();
                log.record(
                    AuditAction::Alert,
                    SentinelLsm::OBJECT,
                    "sentinel",
                    Outcome::Failed,
                    format!("self-protection is NOT active: {err}"),
                );
                if !self.allow_unprotected {
                    return Err(err);
                }
                log.record(
                    AuditAction::Alert,
                    SentinelLsm::OBJECT,
                    "sentinel",
                    Outcome::Ok,
                    "running unprotected: allowed by configuration (allow_unprotected_start)",
                );
                Ok(Sentinel {
                    lsm: None,
                    mode: SentinelMode::Unprotected {
                        reason: err.to_string(),
                    },
                    nodes: BTreeMap::new(),
                    paths: HashMap::new(),
                    pin_root: loader.pin_root().to_path_buf(),
                })
            }
        }
    }

    fn try_start(&self, loader: &Loader) -> Result<Sentinel, SentinelError> {
        crate::bpf_lsm_status()?;
        let mut table = NodeTable::default();
        self.fill(&mut table)?;

        // A Sentinel left pinned by an earlier run guards its own maps: register with it
        // first, or this process could not write them.
        let pin_dir = loader.pin_dir(SentinelLsm::OBJECT);
        let reused = match register_agent(&pin_dir) {
            Ok(()) => true,
            Err(RegisterError::NotAttached) => false,
            Err(e) => return Err(e.into()),
        };
        let mut lsm = SentinelLsm::load(loader)?;
        let result = (|| -> Result<(), SentinelError> {
            lsm.set_enforce(!self.monitor_only)?;
            lsm.set_nodes(&table.nodes)?;
            lsm.attach(self.pin)?;
            if !reused {
                register_agent(&pin_dir)?;
            }
            Ok(())
        })();
        if let Err(err) = result {
            if !reused {
                // Take back what this call attached and pinned.
                let _ = lsm.detach();
                let _ = lsm.into_object().unpin();
            }
            return Err(err);
        }
        let mut sentinel = Sentinel {
            lsm: Some(lsm),
            mode: if self.monitor_only {
                SentinelMode::MonitorOnly
            } else {
                SentinelMode::Enforcing
            },
            nodes: table.nodes,
            paths: table.paths,
            pin_root: loader.pin_root().to_path_buf(),
        };
        // The link pins exist now, and this process is the agent: protect the pins.
        if let Err(err) = sentinel
            .protect_own_objects()
            .and_then(|()| sentinel.refresh_pins())
        {
            if !reused {
                let _ = sentinel.stop();
            }
            return Err(err);
        }
        Ok(sentinel)
    }

    fn fill(&self, table: &mut NodeTable) -> Result<(), SentinelError> {
        for path in &self.protect {
            let canonical = table.add_tree(path, SEN_PROTECT, "protect")?;
            table.add_ancestors(&canonical, "protect")?;
        }
        for path in &self.monitor {
            table.add_tree(path, SEN_MONITOR, "monitor")?;
        }
        let agent = self
            .agent_executable
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        let (exe, key) = table.key_of(&agent, "agent executable")?;
        table.flag(key, SEN_AGENT, &exe);
        if let Some(dir) = exe.parent() {
            // A protected directory holding the agent: executables placed there later (by
            // the update manager) are agent builds too.
            let (dir, dir_key) = table.key_of(dir, "agent executable")?;
            if table
                .nodes
                .get(&dir_key)
                .is_some_and(|f| f & SEN_PROTECT != 0)
            {
                table.flag(dir_key, SEN_AGENT_DIR, &dir);
            }
        }
        if let Some(manager) = &self.update_manager {
            let (path, key) = table.key_of(manager, "update_manager")?;
            table.flag(key, SEN_MANAGER, &path);
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct NodeTable {
    nodes: BTreeMap<InodeKey, u32>,
    paths: HashMap<(u32, u64), PathBuf>,
    /// Mount id → device, read from /proc/self/mountinfo when a new mount turns up.
    mounts: HashMap<u64, u32>,
}

impl NodeTable {
    fn key_of(
        &mut self,
        path: &Path,
        what: &'static str,
    ) -> Result<(PathBuf, InodeKey), SentinelError> {
        let err = |source| SentinelError::Path {
            what,
            path: path.to_path_buf(),
            source,
        };
        let canonical = std::fs::canonicalize(path).map_err(err)?;
        let key = key_of_path(&canonical, what, &mut self.mounts)?;
        Ok((canonical, key))
    }

    fn flag(&mut self, key: InodeKey, flags: u32, path: &Path) {
        *self.nodes.entry(key).or_default() |= flags;
        self.paths
            .entry((key.dev, key.ino))
            .or_insert_with(|| path.to_path_buf());
    }

    fn check_size(&self) -> Result<(), SentinelError> {
        if self.nodes.len() > SEN_NODES as usize {
            return Err(SentinelError::TooManyNodes {
                count: self.nodes.len(),
                max: SEN_NODES,
            });
        }
        Ok(())
    }

    /// Flags `path` and, for a directory, everything below it (without following
    /// symbolic links inside it). Returns the canonical path.
    fn add_tree(
        &mut self,
        path: &Path,
        flags: u32,
        what: &'static str,
    ) -> Result<PathBuf, SentinelError> {
        let (canonical, key) = self.key_of(path, what)?;
        let is_dir = std::fs::metadata(&canonical)
            .map_err(|source| SentinelError::Path {
                what,
                path: path.to_path_buf(),
                source,
            })?
            .is_dir();
        if !is_dir {
            self.flag(key, flags, &canonical);
            return Ok(canonical);
        }
        let mut stack = vec![canonical.clone()];
        while let Some(dir) = stack.pop() {
            let key = key_of_path(&dir, what, &mut self.mounts)?;
            self.flag(key, flags | SEN_TREE, &dir);
            let entries = std::fs::read_dir(&dir).map_err(|source| SentinelError::Path {
                what,
                path: dir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| SentinelError::Path {
                    what,
                    path: dir.clone(),
                    source,
                })?;
                let child = entry.path();
                let meta =
                    std::fs::symlink_metadata(&child).map_err(|source| SentinelError::Path {
                        what,
                        path: child.clone(),
                        source,
                    })?;
                if meta.is_dir() {
                    stack.push(child);
                } else {
                    let key = key_of_path(&child, what, &mut self.mounts)?;
                    self.flag(key, flags, &child);
                }
            }
            self.check_size()?;
        }
        Ok(canonical)
    }

    /// Flags the directories above a protected path: nothing may be mounted over them
    /// and they may not be renamed.
    fn add_ancestors(&mut self, path: &Path, what: &'static str) -> Result<(), SentinelError> {
        for dir in path.ancestors().skip(1) {
            let (dir, key) = self.key_of(dir, what)?;
            self.flag(key, SEN_ANCESTOR, &dir);
        }
        Ok(())
    }

    /// Protects every pin under the pin root (and the directories above it).
    fn add_pins(&mut self, pin_root: &Path) -> Result<(), SentinelError> {
        if pin_root.exists() {
            let root = self.add_tree(pin_root, SEN_PROTECT, "pin root")?;
            self.add_ancestors(&root, "pin root")?;
        }
        Ok(())
    }
}

/// The kernel's identity of the inode at `path` (not following a final symlink): its
/// inode number and the device of the superblock that holds it, which is what BPF sees
/// (`inode->i_sb->s_dev`). `stat`'s `st_dev` is not always that: overlayfs reports a
/// per-layer pseudo device, btrfs one per subvolume. The mount's device comes from
/// `statx(STATX_MNT_ID)` and `/proc/self/mountinfo`; `st_dev` is the fallback on kernels
/// without `STATX_MNT_ID` (before 5.8).
fn key_of_path(
    path: &Path,
    what: &'static str,
    mounts: &mut HashMap<u64, u32>,
) -> Result<InodeKey, SentinelError> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let bad = |source: std::io::Error| SentinelError::Path {
        what,
        path: path.to_path_buf(),
        source,
    };
    let st = statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::INO | StatxFlags::MNT_ID,
    )
    .map_err(|e| bad(e.into()))?;
    let mut dev = None;
    if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        if !mounts.contains_key(&st.stx_mnt_id) {
            *mounts = ironclad_core::identity::mount_devices(Path::new("/proc/self/mountinfo"))
                .map_err(bad)?;
        }
        dev = mounts.get(&st.stx_mnt_id).copied();
    }
    let dev = match dev {
        Some(dev) => dev,
        None => {
            let udev = rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor);
            user_dev_to_kernel(udev).ok_or_else(|| {
                bad(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("device number {udev} does not fit the kernel encoding"),
                ))
            })?
        }
    };
    Ok(InodeKey {
        ino: st.stx_ino,
        dev,
        _pad0: 0,
    })
}

/// A running Sentinel. Dropping it keeps pinned hooks in force (see
/// [`SentinelBuilder::pin`]); [`Sentinel::stop`] removes them.
#[derive(Debug)]
pub struct Sentinel {
    lsm: Option<SentinelLsm>,
    mode: SentinelMode,
    nodes: BTreeMap<InodeKey, u32>,
    paths: HashMap<(u32, u64), PathBuf>,
    pin_root: PathBuf,
}

impl Sentinel {
    /// A builder with nothing protected yet.
    pub fn builder() -> SentinelBuilder {
        SentinelBuilder::default()
    }

    /// How it runs.
    pub fn mode(&self) -> &SentinelMode {
        &self.mode
    }

    /// The kernel side, when the Sentinel runs (not in `Unprotected` mode).
    pub fn kernel(&self) -> Option<&SentinelLsm> {
        self.lsm.as_ref()
    }

    fn protect_own_objects(&mut self) -> Result<(), SentinelError> {
        let Some(lsm) = &self.lsm else {
            return Ok(());
        };
        let mut ids = object_ids(lsm.object())?;
        for (_, id) in lsm.link_ids()? {
            ids.push((BpfObjectKind::Link, id));
        }
        lsm.protect_objects(&ids)?;
        Ok(())
    }

    /// Protects another loaded object (a Shield, an identity firewall): only the agent
    /// may get writable fds to its maps, and its pins may not be removed or opened for
    /// writing by anyone else.
    pub fn protect_bpf(&mut self, object: &LoadedObject) -> Result<(), SentinelError> {
        let Some(lsm) = &self.lsm else {
            return Ok(());
        };
        let ids = object_ids(object)?;
        lsm.protect_objects(&ids)?;
        self.refresh_pins()
    }

    /// Protects links (attachments) by their kernel ids (e.g.
    /// [`XdpAttachment::link_id`](ironclad_bpf::XdpAttachment::link_id)): nobody but the
    /// agent gets an fd to them to detach or update them.
    pub fn protect_links(
        &mut self,
        link_ids: impl IntoIterator<Item = u32>,
    ) -> Result<(), SentinelError> {
        let Some(lsm) = &self.lsm else {
            return Ok(());
        };
        let ids: Vec<_> = link_ids
            .into_iter()
            .map(|id| (BpfObjectKind::Link, id))
            .collect();
        lsm.protect_objects(&ids)?;
        Ok(())
    }

    /// Makes `ifindexes` (interfaces of the agent's network namespace whose tc hooks
    /// carry its programs) the protected interfaces, replacing the earlier set: nobody
    /// but the agent may change their tc filters or chains, delete their clsact qdisc
    /// or attach a tcx program to them. This is what guards classic tc filters, which
    /// are not links (kernels without tcx), and what keeps a program from being put
    /// before the firewall's on either mechanism.
    pub fn protect_interfaces(&mut self, ifindexes: &[u32]) -> Result<(), SentinelError> {
        let Some(lsm) = &self.lsm else {
            return Ok(());
        };
        lsm.set_protected_interfaces(ifindexes)?;
        Ok(())
    }

    /// Rescans the pin root and protects every pin in it (after loading or pinning
    /// more objects).
    pub fn refresh_pins(&mut self) -> Result<(), SentinelError> {
        let Some(lsm) = &self.lsm else {
            return Ok(());
        };
        let mut table = NodeTable {
            nodes: std::mem::take(&mut self.nodes),
            paths: std::mem::take(&mut self.paths),
            mounts: HashMap::new(),
        };
        let result = table.add_pins(&self.pin_root);
        self.nodes = table.nodes;
        self.paths = table.paths;
        result?;
        lsm.set_nodes(&self.nodes)?;
        Ok(())
    }

    /// The event ring buffer (denials, monitored changes, registrations), with paths
    /// resolved for the inodes the Sentinel knows.
    pub fn event_source(&self) -> Result<EventSource, SentinelError> {
        match &self.lsm {
            Some(lsm) => Ok(lsm.event_source(self.paths.clone())?),
            None => Err(SentinelError::NotRunning {
                reason: match &self.mode {
                    SentinelMode::Unprotected { reason } => reason.clone(),
                    _ => "stopped".to_string(),
                },
            }),
        }
    }

    /// The known path of an inode (kernel device encoding, inode number).
    pub fn path_of(&self, dev: u32, ino: u64) -> Option<&Path> {
        self.paths.get(&(dev, ino)).map(PathBuf::as_path)
    }

    /// What is enforced now.
    pub fn status(&self) -> Result<SentinelStatus, SentinelError> {
        let count = |flag: u32| self.nodes.values().filter(|f| *f & flag != 0).count();
        let (agent_pid, protected_objects, hooks, lost_events) = match &self.lsm {
            Some(lsm) => (
                lsm.state()?.agent_tgid,
                lsm.protected_objects()?,
                lsm.attached_hooks(),
                lsm.lost_events()?,
            ),
            None => (0, 0, 0, 0),
        };
        Ok(SentinelStatus {
            mode: self.mode.clone(),
            agent_pid,
            protected_inodes: count(SEN_PROTECT),
            monitored_inodes: count(SEN_MONITOR),
            protected_objects,
            hooks,
            lost_events,
        })
    }

    /// Detaches every hook and removes the Sentinel's pins: protection ends. Only the
    /// registered agent can do this.
    pub fn stop(mut self) -> Result<(), SentinelError> {
        if let Some(mut lsm) = self.lsm.take() {
            lsm.detach()?;
            let object = lsm.into_object();
            object.unpin()?;
        }
        Ok(())
    }
}
