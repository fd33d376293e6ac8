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
    let path = Path::new("/sys/class/net").join(iface).join("ifindex");
    let text = std::fs::read_to_string(&path).map_err(|e| no_such(e.to_string()))?;
    text.trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| no_such(format!("{}: {e}", path.display())))
}

/// An XDP program attached to an interface through a `bpf_link`.
///
/// Because it is a link, `ip link set dev IF xdp off` cannot remove it. Dropping the guard
/// detaches the program, unless [`pin`](Self::pin) was called: a pinned attachment keeps
/// enforcing after the process exits (or is killed) until the pin is removed.
#[must_use = "dropping an XdpAttachment detaches the program unless it is pinned"]
#[derive(Debug)]
pub struct XdpAttachment {
    link: Link,
    object: String,
    program: String,
    iface: String,
    ifindex: u32,
    pinned: Option<PathBuf>,
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
        log.result(AuditAction::Attach, object, &target, &program, &result);
        let link = result.map_err(|source| BpfError::Attach {
            program: program.clone(),
            target,
            source,
        })?;
        Ok(Self {
            link,
            object: object.to_string(),
            program,
            iface: iface.to_string(),
            ifindex: index,
            pinned: None,
            detached: false,
            log: log.clone(),
        })
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
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
            source,
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
