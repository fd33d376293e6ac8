//! Attach handles: RAII guards that detach on drop unless pinned.

use std::path::{Path, PathBuf};

use libbpf_rs::Link;

use crate::auditlog::{AuditAction, AuditLog, Outcome};
use crate::error::{BpfError, Result};

/// The ifindex of network interface `iface` (from /sys/class/net).
pub fn ifindex(iface: &str) -> Result<u32> {
    let no_such = |reason: String| BpfError::NoSuchInterface {
        iface: iface.to_string(),
        reason,
    };
    if iface.is_empty() || iface.contains('/') || iface == "." || iface == ".." {
        return Err(no_such("not a valid interface name".to_string()));
    }
    // if_nametoindex asks the kernel in the calling thread's network namespace;
    // /sys/class/net shows the namespace sysfs was mounted in, which a thread that
    // entered another (setns) does not see.
    nix::net::if_::if_nametoindex(iface).map_err(|e| no_such(e.desc().to_string()))
}

/// How an XDP program runs on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum XdpMode {
    /// In the driver, before an skb exists (fastest).
    Native,
    /// Generic (skb) mode: the driver has no XDP support; works everywhere, slower.
    Generic,
    /// Offloaded to the NIC.
    Offload,
    /// The kernel did not say.
    Unknown,
}

impl XdpMode {
    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Offload => "offload",
            Self::Unknown => "unknown",
        }
    }
}

/// What the kernel says of XDP on `ifindex` (`None` when it cannot say).
fn xdp_query(ifindex: u32) -> Option<libbpf_sys::bpf_xdp_query_opts> {
    let ifindex = i32::try_from(ifindex).ok()?;
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: `opts` is a fully initialised bpf_xdp_query_opts whose `sz` is its own size,
    // and it lives until the call returns; libbpf only writes into it.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex, 0, &mut opts) };
    (rc == 0).then_some(opts)
}

/// Asks the kernel how XDP is attached on `ifindex`.
fn query_mode(ifindex: u32) -> XdpMode {
    match xdp_query(ifindex).map(|o| u32::from(o.attach_mode)) {
        Some(libbpf_sys::XDP_ATTACHED_DRV) => XdpMode::Native,
        Some(libbpf_sys::XDP_ATTACHED_SKB) => XdpMode::Generic,
        Some(libbpf_sys::XDP_ATTACHED_HW) => XdpMode::Offload,
        _ => XdpMode::Unknown,
    }
}

/// Where the frames an XDP program sends back (`XDP_TX`) on an interface go, as far
/// as this network namespace can tell ([`xdp_tx_path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XdpTxPath {
    /// Out of the interface: a physical NIC, generic-mode XDP (transmitted as any
    /// packet), or a veth whose peer end runs an XDP program of its own.
    Leaves,
    /// A veth whose peer end, here, runs no XDP program: the frames reach the peer only
    /// if its GRO is on (`ethtool -K PEER gro on`), and are dropped otherwise.
    VethPeerWithoutXdp {
        /// The peer end's name.
        peer: String,
    },
    /// A veth whose peer end is in another network namespace (a container's): the
    /// frames reach it only if that end runs an XDP program or has GRO on, which cannot
    /// be seen from here.
    VethPeerElsewhere,
}

/// Where `XDP_TX` frames go on `iface`, on which XDP is attached in `mode`. A veth
/// hands such frames to its peer's receive queue, which exists only while the peer
/// end runs NAPI (an XDP program of its own, or GRO on): otherwise the kernel drops
/// them, so a program that answers in XDP (SYN cookies) answers nobody. A veth is
/// recognised from sysfs and the kernel's answer, not its name: a virtual device (no
/// `device` link) that runs XDP natively and is linked to another interface (its
/// `iflink`); VLAN and macvlan devices run XDP only in generic mode, where `XDP_TX`
/// frames are transmitted as any packet.
pub fn xdp_tx_path(iface: &str, mode: XdpMode) -> XdpTxPath {
    let net = std::path::Path::new("/sys/class/net");
    let read = |dev: &std::path::Path, file: &str| -> Option<u32> {
        std::fs::read_to_string(dev.join(file))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    let dev = net.join(iface);
    let (Some(index), Some(link)) = (read(&dev, "ifindex"), read(&dev, "iflink")) else {
        return XdpTxPath::Leaves;
    };
    if mode != XdpMode::Native || dev.join("device").exists() || index == link {
        return XdpTxPath::Leaves;
    }
    // The peer here: the device whose index is this one's link and whose link is this
    // one (an index alone may be another namespace's).
    let peer = std::fs::read_dir(net).ok().and_then(|entries| {
        entries.filter_map(|e| e.ok()).find(|e| {
            let path = e.path();
            read(&path, "ifindex") == Some(link) && read(&path, "iflink") == Some(index)
        })
    });
    let Some(peer) = peer else {
        return XdpTxPath::VethPeerElsewhere;
    };
    let name = peer.file_name().to_string_lossy().into_owned();
    if native_program(link) {
        XdpTxPath::Leaves
    } else {
        XdpTxPath::VethPeerWithoutXdp { peer: name }
    }
}

/// Whether a native-mode XDP program runs on `ifindex` (in this namespace).
fn native_program(ifindex: u32) -> bool {
    xdp_query(ifindex).is_some_and(|o| o.drv_prog_id != 0)
}

/// How long a failed repair waits before the next attempt.
pub(crate) const REPAIR_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// What the kernel holds of one of this process's links ([`link_health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkHealth {
    /// Attached to its hook, running the program it was given.
    Attached,
    /// Detached from its hook (`BPF_LINK_DETACH`, as `bpftool link detach` does): the
    /// link exists, its program runs nowhere.
    Detached,
    /// Attached, but running another program (a `BPF_LINK_UPDATE` from outside).
    Replaced {
        /// The program it runs now.
        prog_id: u32,
    },
}

/// Asks the kernel about `link`: whether it is still attached (its interface or cgroup
/// is gone from its `bpf_link_info` once it is detached) and, when `prog_id` is not 0,
/// whether it still runs that program. Links the kernel cannot detach (tracing, LSM,
/// perf-event links) are attached while they exist.
pub fn link_health(link: &Link, prog_id: u32) -> Result<LinkHealth> {
    use libbpf_rs::query::LinkTypeInfo;
    let info = link.info().map_err(|source| BpfError::Attach {
        program: "link".to_string(),
        target: "link info".to_string(),
        source: crate::error::KernelError::from_libbpf(source),
    })?;
    let attached = match &info.info {
        LinkTypeInfo::Xdp(x) => x.ifindex != 0,
        LinkTypeInfo::Tcx(t) => t.ifindex != 0,
        LinkTypeInfo::Netkit(n) => n.ifindex != 0,
        LinkTypeInfo::Cgroup(c) => c.cgroup_id != 0,
        LinkTypeInfo::NetNs(n) => n.ino != 0,
        _ => true,
    };
    Ok(if !attached {
        LinkHealth::Detached
    } else if prog_id != 0 && info.prog_id != prog_id {
        LinkHealth::Replaced {
            prog_id: info.prog_id,
        }
    } else {
        LinkHealth::Attached
    })
}

/// What [`verify_link`] remembers of one link between checks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinkWatch {
    /// The program this process put in the link (0: the kernel did not say).
    prog_id: u32,
    /// After a failed repair: not before this instant again, and the errno it failed
    /// with (one attempt and one audit record per interval, not one per check).
    retry: Option<(std::time::Instant, i32)>,
}

impl LinkWatch {
    /// Watches `link` as it is now: the program it runs is the one it should.
    pub(crate) fn of(link: &Link) -> Self {
        Self {
            prog_id: prog_id_of(link),
            retry: None,
        }
    }
}

/// Where a verified link is attached, for its audit records and messages.
pub(crate) struct Hook<'a> {
    /// The BPF object (the audit record's `object`).
    pub(crate) object: &'a str,
    /// The hook (`xdp on eth0`, `tcx ingress on eth0`, `ic_egress_connect4 on /sys/fs/cgroup`).
    pub(crate) target: String,
    /// The program's name.
    pub(crate) program: &'a str,
    /// The audit log.
    pub(crate) log: &'a AuditLog,
}

/// Checks `link` against the kernel and puts back what was undone from outside: a link
/// detached (`bpftool link detach`) is replaced by a new one from `attach` (pinned
/// where the old one was), a program swapped into it is swapped out for `prog`, a
/// removed pin is pinned again. Each repair is an audit record (`repair`). `Ok(None)`:
/// nothing was wrong; `Ok(Some(what))`: what was found and done. An error: found
/// undone and not put back (another program holds the hook, say); the program does not
/// run there. A failed re-attach is tried again after [`REPAIR_RETRY`], not at every
/// check.
pub(crate) fn verify_link(
    link: &mut Link,
    watch: &mut LinkWatch,
    prog: &libbpf_rs::ProgramMut<'_>,
    hook: &Hook<'_>,
    attach: impl FnOnce() -> std::result::Result<Link, libbpf_rs::Error>,
) -> Result<Option<String>> {
    let target = &hook.target;
    let id = link
        .info()
        .map_or_else(|_| "?".to_string(), |i| i.id.to_string());
    match link_health(link, watch.prog_id)? {
        LinkHealth::Attached => verify_pin(link, hook),
        LinkHealth::Replaced { prog_id } => {
            let found = format!(
                "link {id} ({target}) ran program {prog_id}, not {}",
                watch.prog_id
            );
            let result = link.update_prog(prog);
            hook.log.result(
                AuditAction::Repair,
                hook.object,
                target,
                &format!("{found}: {} swapped back in", hook.program),
                &result,
            );
            result.map_err(|source| BpfError::Attach {
                program: hook.program.to_string(),
                target: format!("{target} ({found}; swapping it back)"),
                source: crate::error::KernelError::from_libbpf(source),
            })?;
            watch.prog_id = prog_id_of(link);
            Ok(Some(format!("{found}: swapped back")))
        }
        LinkHealth::Detached => {
            let found = format!("link {id} ({target}) was detached from outside");
            let now = std::time::Instant::now();
            if let Some((at, errno)) = watch.retry.filter(|(at, _)| *at > now) {
                return Err(BpfError::Attach {
                    program: hook.program.to_string(),
                    target: format!(
                        "{target} ({found}; attaching a new link failed, next attempt in {} s)",
                        at.duration_since(now).as_secs() + 1
                    ),
                    source: crate::error::KernelError::from_libbpf(
                        libbpf_rs::Error::from_raw_os_error(errno),
                    ),
                });
            }
            let fresh = match attach() {
                Ok(fresh) => fresh,
                Err(e) => {
                    hook.log.record(
                        AuditAction::Repair,
                        hook.object,
                        target,
                        Outcome::Failed,
                        format!("{found}; attaching a new link failed: {e}"),
                    );
                    let source: crate::error::KernelError =
                        crate::error::KernelError::from_libbpf(e);
                    watch.retry = Some((now + REPAIR_RETRY, source.errno().unwrap_or(libc::EIO)));
                    return Err(BpfError::Attach {
                        program: hook.program.to_string(),
                        target: format!("{target} ({found}; attaching a new link)"),
                        source,
                    });
                }
            };
            let mut old = std::mem::replace(link, fresh);
            *watch = LinkWatch::of(link);
            let mut note = String::new();
            if let Some(path) = old.pin_path() {
                // The dead link's pin is removed so that the new link takes its path.
                let unpinned = old.unpin();
                hook.log.result(
                    AuditAction::Unpin,
                    hook.object,
                    &path.display().to_string(),
                    &format!("dead link {id}"),
                    &unpinned,
                );
                let repinned = match unpinned {
                    Ok(()) => link.pin(&path).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("the dead link's pin stays: {e}")),
                };
                if let Err(e) = repinned {
                    // Enforcing, but only while this process lives: say so.
                    note = format!(" (not pinned: {e})");
                }
            }
            drop(old);
            let new_id = link
                .info()
                .map_or_else(|_| "?".to_string(), |i| i.id.to_string());
            let done = format!("{found}: a new link {new_id} attached{note}");
            hook.log.record(
                AuditAction::Repair,
                hook.object,
                target,
                Outcome::Ok,
                done.clone(),
            );
            Ok(Some(done))
        }
    }
}

/// [`verify_link`] for each of `links` (the program's name, its hook, the link and its
/// watch), links of programs of `object` (audited as `object_name`): a detached one is
/// replaced by what `attach` makes of its program. One result per link.
pub(crate) fn verify_links<'a>(
    object: &crate::loader::LoadedObject,
    object_name: &str,
    links: impl Iterator<Item = (&'a str, String, &'a mut Link, &'a mut LinkWatch)>,
    attach: impl Fn(&libbpf_rs::ProgramMut<'_>) -> std::result::Result<Link, libbpf_rs::Error>,
) -> Vec<Result<Option<String>>> {
    links
        .map(|(name, target, link, watch)| {
            let prog = object.program(name)?;
            let hook = Hook {
                object: object_name,
                target,
                program: name,
                log: object.audit_log(),
            };
            verify_link(link, watch, &prog, &hook, || attach(&prog))
        })
        .collect()
}

/// Attaches a program to the cgroup v2 directory `cgroup` (for [`verify_links`]).
pub(crate) fn cgroup_attacher(
    cgroup: &Path,
) -> impl Fn(&libbpf_rs::ProgramMut<'_>) -> std::result::Result<Link, libbpf_rs::Error> + '_ {
    move |prog| {
        use std::os::fd::AsRawFd;
        let dir = std::fs::File::open(cgroup).map_err(|e| {
            libbpf_rs::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
        })?;
        prog.attach_cgroup(dir.as_raw_fd())
    }
}

/// A pinned link whose pin was removed from outside would detach when this process
/// exits: it is pinned again.
fn verify_pin(link: &Link, hook: &Hook<'_>) -> Result<Option<String>> {
    let Some(path) = link.pin_path() else {
        return Ok(None);
    };
    if path.exists() {
        return Ok(None);
    }
    let found = format!("the pin {} was removed from outside", path.display());
    // libbpf still holds the link as pinned at that path (and would refuse to pin it
    // again), so the kernel is asked directly.
    let result = pin_fd(link, &path);
    hook.log.result(
        AuditAction::Repair,
        hook.object,
        &hook.target,
        &format!("{found}: pinned again"),
        &result,
    );
    result.map_err(|e| BpfError::Pin {
        what: format!("link {}", hook.target),
        path: path.clone(),
        reason: e.to_string(),
        source: None,
    })?;
    Ok(Some(format!("{found}: pinned again")))
}

/// An earlier run's link pinned at `path` that was detached from outside (dead: it can
/// no longer be attached or take a program) has its pin removed, with an audit record,
/// so that a fresh link takes its place; returns whether it was dead. A live link, or
/// no pin, is left alone.
pub(crate) fn remove_dead_link_pin(
    path: &Path,
    object: &str,
    what: &str,
    log: &AuditLog,
) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let pin_error = |reason: String, e: libbpf_rs::Error| BpfError::Pin {
        what: what.to_string(),
        path: path.to_path_buf(),
        reason,
        source: Some(crate::error::KernelError::from_libbpf(e)),
    };
    let mut link = Link::open(path).map_err(|e| pin_error(e.to_string(), e))?;
    if link_health(&link, 0)? != LinkHealth::Detached {
        return Ok(false);
    }
    let id = link
        .info()
        .map_or_else(|_| "?".to_string(), |i| i.id.to_string());
    let result = link.unpin();
    log.result(
        AuditAction::Repair,
        object,
        &path.display().to_string(),
        &format!("{what}: the pinned link {id} was detached from outside; its pin removed for a new link"),
        &result,
    );
    result.map_err(|e| pin_error(format!("cannot remove the dead link's pin: {e}"), e))?;
    Ok(true)
}

/// Pins `link` at `path` with `BPF_OBJ_PIN`, whatever libbpf believes of its pin.
fn pin_fd(link: &Link, path: &Path) -> std::io::Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: the fd is the link's own, open for the call; `c` is a NUL-terminated
    // path alive for the call.
    let rc = unsafe { libbpf_sys::bpf_obj_pin(link.as_fd().as_raw_fd(), c.as_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::from_raw_os_error(-rc));
    }
    Ok(())
}

/// The id of the program `link` runs (0 when the kernel does not say).
fn prog_id_of(link: &Link) -> u32 {
    link.info().map_or(0, |i| i.prog_id)
}

/// An XDP program attached to an interface through a `bpf_link`.
///
/// Because it is a link, `ip link set dev IF xdp off` cannot remove it. The kernel
/// attaches in native mode when the driver supports XDP and falls back to generic
/// (skb) mode otherwise; [`mode`](Self::mode) reports which. Dropping the guard detaches
/// the program, unless [`pin`](Self::pin) was called: a pinned attachment keeps
/// enforcing after the process exits (or is killed) until the pin is removed.
#[must_use = "dropping an XdpAttachment detaches the program unless it is pinned"]
#[derive(Debug)]
pub struct XdpAttachment {
    link: Link,
    object: String,
    program: String,
    iface: String,
    ifindex: u32,
    mode: XdpMode,
    /// What [`verify`](Self::verify) compares the kernel's view with.
    watch: LinkWatch,
    pinned: Option<PathBuf>,
    /// Opened from a pin left by an earlier process (its program swapped).
    adopted: bool,
    detached: bool,
    log: AuditLog,
}

impl XdpAttachment {
    /// Attaches `prog` (of `object`) to `iface`.
    pub(crate) fn attach(
        prog: &libbpf_rs::ProgramMut<'_>,
        object: &str,
        iface: &str,
        log: &AuditLog,
    ) -> Result<Self> {
        let program = prog.name().to_string_lossy().into_owned();
        let target = format!("xdp on {iface}");
        let index = match ifindex(iface) {
            Ok(i) => i,
            Err(e) => {
                log.record(
                    AuditAction::Attach,
                    object,
                    &target,
                    Outcome::Failed,
                    e.to_string(),
                );
                return Err(e);
            }
        };
        let result = i32::try_from(index)
            .map_err(|_| libbpf_rs::Error::from_raw_os_error(22))
            .and_then(|i| prog.attach_xdp(i));
        let mode = if result.is_ok() {
            query_mode(index)
        } else {
            XdpMode::Unknown
        };
        log.result(
            AuditAction::Attach,
            object,
            &target,
            &format!("{program} ({} mode)", mode.name()),
            &result,
        );
        let link = result.map_err(|source| BpfError::Attach {
            program: program.clone(),
            target,
            source: crate::error::KernelError::from_libbpf(source),
        })?;
        Ok(Self {
            watch: LinkWatch::of(&link),
            link,
            object: object.to_string(),
            program,
            iface: iface.to_string(),
            ifindex: index,
            mode,
            pinned: None,
            adopted: false,
            detached: false,
            log: log.clone(),
        })
    }

    /// Opens the link pinned at `path` and atomically replaces its program with `prog`.
    pub(crate) fn adopt(
        prog: &libbpf_rs::ProgramMut<'_>,
        object: &str,
        iface: &str,
        path: &Path,
        log: &AuditLog,
    ) -> Result<Self> {
        let program = prog.name().to_string_lossy().into_owned();
        let pin_error = |reason: String, e: libbpf_rs::Error| BpfError::Pin {
            what: format!("link xdp on {iface}"),
            path: path.to_path_buf(),
            reason,
            source: Some(crate::error::KernelError::from_libbpf(e)),
        };
        let index = ifindex(iface)?;
        let mut link = Link::open(path).map_err(|e| pin_error(e.to_string(), e))?;
        let result = link.update_prog(prog);
        log.result(
            AuditAction::Reuse,
            object,
            &path.display().to_string(),
            &format!("link xdp on {iface}: program {program} swapped in"),
            &result,
        );
        result.map_err(|e| pin_error(format!("cannot swap the program into it: {e}"), e))?;
        Ok(Self {
            watch: LinkWatch::of(&link),
            link,
            object: object.to_string(),
            program,
            iface: iface.to_string(),
            ifindex: index,
            mode: query_mode(index),
            pinned: Some(path.to_path_buf()),
            adopted: true,
            detached: false,
            log: log.clone(),
        })
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The link's kernel id (as `bpftool link show` lists it), e.g. for the Sentinel to
    /// protect it.
    pub fn link_id(&self) -> Result<u32> {
        crate::sentinel::link_id(&self.link)
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Native or generic.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Whether this link was adopted from a pin an earlier process left (enforcing
    /// before this process started), rather than attached by this process.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The pin path, if pinned.
    pub fn pin_path(&self) -> Option<&Path> {
        self.pinned.as_deref()
    }

    /// Pins the link at `path` (on bpffs) so the program stays attached after this
    /// process exits.
    pub fn pin(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let result = self.link.pin(path);
        self.log.result(
            AuditAction::Pin,
            &self.object,
            &path.display().to_string(),
            &format!("link {} xdp on {}", self.program, self.iface),
            &result,
        );
        result.map_err(|e| BpfError::Pin {
            what: format!("link xdp on {}", self.iface),
            path: path.to_path_buf(),
            reason: e.to_string(),
            source: Some(crate::error::KernelError::from_libbpf(e)),
        })?;
        self.pinned = Some(path.to_path_buf());
        Ok(())
    }

    /// What the kernel holds of this link now: still attached to its interface and
    /// running the program this process put in it, detached from outside (`bpftool
    /// link detach`), or running another program (a `BPF_LINK_UPDATE` from outside).
    pub fn health(&self) -> Result<LinkHealth> {
        link_health(&self.link, self.watch.prog_id)
    }

    /// [`verify_link`] for this attachment: a detached link is replaced by a new one on
    /// the same interface.
    pub(crate) fn verify(&mut self, prog: &libbpf_rs::ProgramMut<'_>) -> Result<Option<String>> {
        let hook = Hook {
            object: &self.object,
            target: format!("xdp on {}", self.iface),
            program: &self.program,
            log: &self.log,
        };
        let ifindex = i32::try_from(self.ifindex).unwrap_or(0);
        let found = verify_link(&mut self.link, &mut self.watch, prog, &hook, || {
            prog.attach_xdp(ifindex)
        })?;
        if found.is_some() {
            self.mode = query_mode(self.ifindex);
        }
        Ok(found)
    }

    /// Detaches the program now (removing the pin, if any).
    pub fn detach(mut self) -> Result<()> {
        if let Some(path) = self.pinned.take() {
            let result = self.link.unpin();
            self.log.result(
                AuditAction::Unpin,
                &self.object,
                &path.display().to_string(),
                "",
                &result,
            );
            result.map_err(|e| BpfError::Pin {
                what: format!("link xdp on {}", self.iface),
                path,
                reason: e.to_string(),
                source: Some(crate::error::KernelError::from_libbpf(e)),
            })?;
        }
        let result = self.link.detach();
        self.detached = true;
        self.log.result(
            AuditAction::Detach,
            &self.object,
            &format!("xdp on {}", self.iface),
            &self.program,
            &result,
        );
        result.map_err(|source| BpfError::Attach {
            program: self.program.clone(),
            target: format!("xdp on {} (detach)", self.iface),
            source: crate::error::KernelError::from_libbpf(source),
        })
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        if self.pinned.is_none() && !self.detached {
            // Closing the last fd of an unpinned link detaches the program.
            self.log.record(
                AuditAction::Detach,
                &self.object,
                &format!("xdp on {}", self.iface),
                Outcome::Ok,
                format!("{} (handle dropped)", self.program),
            );
        }
    }
}

/// Entry `index` of the per-CPU counter array `map` of `object`, summed over CPUs
/// (zero when absent).
pub(crate) fn percpu_total(
    object: &crate::loader::LoadedObject,
    map: &str,
    index: u32,
) -> Result<ironclad_core::abi::Counter> {
    let values = object
        .map(map)?
        .lookup_percpu(&index.to_ne_bytes())?
        .unwrap_or_default();
    let mut sum = ironclad_core::abi::Counter::default();
    for c in values
        .iter()
        .filter_map(|b| ironclad_core::abi::Counter::from_bytes(b))
    {
        sum.packets += c.packets;
        sum.bytes += c.bytes;
    }
    Ok(sum)
}
