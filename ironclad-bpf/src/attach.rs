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

/// Asks the kernel how XDP is attached on `ifindex`.
fn query_mode(ifindex: u32) -> XdpMode {
    let Ok(ifindex) = i32::try_from(ifindex) else {
        return XdpMode::Unknown;
    };
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: `opts` is a fully initialised bpf_xdp_query_opts whose `sz` is its own size,
    // and it lives until the call returns; libbpf only writes into it.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex, 0, &mut opts) };
    if rc != 0 {
        return XdpMode::Unknown;
    }
    match u32::from(opts.attach_mode) {
        libbpf_sys::XDP_ATTACHED_DRV => XdpMode::Native,
        libbpf_sys::XDP_ATTACHED_SKB => XdpMode::Generic,
        libbpf_sys::XDP_ATTACHED_HW => XdpMode::Offload,
        _ => XdpMode::Unknown,
    }
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
            source: source.into(),
        })?;
        Ok(Self {
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
            source: Some(e.into()),
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
            source: Some(e.into()),
        })?;
        self.pinned = Some(path.to_path_buf());
        Ok(())
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
                source: Some(e.into()),
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
            source: source.into(),
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

/// Attaches each `(program, "ingress"|"egress")` of `object` to `iface` with tcx links,
/// each attach recorded in the audit log; the links, in order. On a failure the
/// links made so far are dropped (detached) and the error names the program, or,
/// on a kernel older than tcx (6.6), says that `feature` needs a newer one.
pub(crate) fn attach_tcx_programs(
    object: &crate::loader::LoadedObject,
    object_name: &str,
    feature: &'static str,
    programs: &[(&str, &str)],
    iface: &str,
) -> Result<Vec<Link>> {
    let index = ifindex(iface)?;
    let mut links = Vec::with_capacity(programs.len());
    for (name, point) in programs {
        let prog = object.program(name)?;
        let result = crate::firewall::attach_tcx(&prog, index);
        object.audit_log().result(
            AuditAction::Attach,
            object_name,
            &format!("tcx {point} on {iface}"),
            name,
            &result,
        );
        links.push(result.map_err(|source| {
            let source: crate::error::KernelError = source.into();
            match crate::firewall::older_than_tcx() {
                Some(running) => BpfError::KernelTooOld {
                    feature,
                    needs: "6.6",
                    running,
                    source: Some(source),
                },
                None => BpfError::Attach {
                    program: (*name).to_string(),
                    target: format!("tcx {point} on {iface}"),
                    source,
                },
            }
        })?);
    }
    Ok(links)
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
