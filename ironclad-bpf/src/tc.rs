//! Programs on an interface's traffic hooks (ingress and egress): tcx links where the
//! running kernel has them (Linux 6.6), classic tc where it does not — a clsact qdisc
//! and a direct-action BPF filter at a fixed handle and priority, as
//! `tc filter add dev IF ingress bpf da` makes. The same programs run on both: tcx's
//! verdicts (`TCX_NEXT` -1, `TCX_PASS` 0, `TCX_DROP` 2, `TCX_REDIRECT` 7) are classic
//! tc's (`TC_ACT_UNSPEC`, `TC_ACT_OK`, `TC_ACT_SHOT`, `TC_ACT_REDIRECT`).
//!
//! The mechanism is chosen by asking the running kernel's BTF whether it knows the tcx
//! attach type ([`TcMechanism::probe`]), never by its version.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Instant;

use libbpf_rs::{Link, TcHook, TC_EGRESS, TC_INGRESS};

use crate::attach::{ifindex, verify_links, LinkWatch};
use crate::auditlog::{AuditAction, AuditLog, Outcome};
use crate::error::{BpfError, KernelError, Result};
use crate::loader::LoadedObject;

/// How programs are hooked on an interface's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TcMechanism {
    /// tcx links (Linux 6.6 on): listed by `bpftool link`, not removable with `tc`, and
    /// protected by the Sentinel like every other link.
    Tcx,
    /// Classic tc, for kernels without tcx: a clsact qdisc with a direct-action BPF
    /// filter per program at handle [`FILTER_HANDLE`] and a priority per feature
    /// (`tc filter show dev IF ingress`). Filters are not links: the Sentinel guards
    /// them through their interface (`Sentinel::protect_interfaces` in
    /// `ironclad-sentinel`), and a filter removed or replaced from outside is put back
    /// at the next health check.
    Clsact,
}

impl TcMechanism {
    /// `tcx` or `tc clsact`, as status and audit records name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Clsact => "tc clsact",
        }
    }

    /// The running kernel's mechanism: [`Tcx`](Self::Tcx) when the `enum
    /// bpf_attach_type` of its BTF has `BPF_TCX_INGRESS`, [`Clsact`](Self::Clsact)
    /// when it does not. Without kernel BTF, tcx is tried (and its failure reported).
    /// Asked once per process.
    pub fn probe() -> Self {
        static PROBED: OnceLock<TcMechanism> = OnceLock::new();
        *PROBED.get_or_init(|| match crate::kernel::KernelBpf::probe() {
            Some(kernel) if !kernel.has_attach_type("BPF_TCX_INGRESS") => Self::Clsact,
            _ => Self::Tcx,
        })
    }
}

/// The handle of every classic tc filter this crate adds (`tc filter show` prints it
/// as `handle 0x1c1a`); the feature is told by the priority.
pub const FILTER_HANDLE: u32 = 0x1c1a;

/// Classic tc priorities (`tc filter show` prints them as `pref`), one per feature,
/// in the order tcx appends them: the firewall first (a lower priority runs first).
pub mod priority {
    /// The stateful firewall (`pref 49569`).
    pub const FIREWALL: u32 = 0xc1a1;
    /// The scrubber (`pref 49570`).
    pub const SCRUB: u32 = 0xc1a2;
    /// The quarantine (`pref 49571`).
    pub const QUARANTINE: u32 = 0xc1a3;
}

/// Removes every classic tc filter this crate adds (handle [`FILTER_HANDLE`] at one of
/// the [`priority`] values) from every interface of this network namespace, as a
/// `detach` after the process is gone must: a filter holds its program, and the
/// program its maps, with no pin to remove. The `clsact` qdiscs stay. Returns
/// `(interface, "ingress" | "egress", priority)` of each filter removed.
pub fn remove_filters() -> Result<Vec<(String, &'static str, u32)>> {
    // No program is needed to find or delete a filter (libbpf zeroes the fd for both),
    // but the builder takes one: any open fd does.
    let any = std::fs::File::open("/dev/null").map_err(|source| BpfError::Io {
        path: "/dev/null".into(),
        source,
    })?;
    let dir = std::path::Path::new("/sys/class/net");
    let entries = std::fs::read_dir(dir).map_err(|source| BpfError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let iface = entry.file_name().to_string_lossy().into_owned();
        let Ok(index) = ifindex(&iface) else {
            continue;
        };
        for point in ["ingress", "egress"] {
            for prio in [priority::FIREWALL, priority::SCRUB, priority::QUARANTINE] {
                let Ok(mut hook) = filter_hook(any.as_fd(), index, point, prio) else {
                    continue;
                };
                if hook.query().is_err() {
                    continue;
                }
                hook.detach().map_err(|source| BpfError::Attach {
                    program: format!("the filter at priority {prio}"),
                    target: format!("removing it from tc {point} on {iface}"),
                    source: KernelError::from_libbpf(source),
                })?;
                removed.push((iface.clone(), point, prio));
            }
        }
    }
    Ok(removed)
}

/// The address of one of this crate's classic filters: `ifindex`'s `point` (`ingress`
/// or `egress`), handle [`FILTER_HANDLE`], `priority`; `fd` is the program to put there
/// (a query or a delete reads none).
fn filter_hook(
    fd: BorrowedFd<'_>,
    ifindex: u32,
    point: &str,
    priority: u32,
) -> std::result::Result<TcHook, libbpf_rs::Error> {
    let index =
        i32::try_from(ifindex).map_err(|_| libbpf_rs::Error::from_raw_os_error(libc::EINVAL))?;
    let mut hook = TcHook::new(fd);
    hook.ifindex(index)
        .attach_point(if point == "egress" {
            TC_EGRESS
        } else {
            TC_INGRESS
        })
        .handle(FILTER_HANDLE)
        .priority(priority);
    Ok(hook)
}

/// A classic tc filter this process put in place.
#[derive(Debug)]
struct Filter {
    /// The program it should run, held open so that the filter can be put back or
    /// removed without the object (a handle dropped after it).
    prog: OwnedFd,
    /// The program's id.
    prog_id: u32,
    /// After a failed repair: not before this instant again, and the errno.
    retry: Option<(Instant, i32)>,
}

#[derive(Debug)]
enum Hold {
    Link(Link, LinkWatch),
    Filter(Filter),
}

#[derive(Debug)]
struct Entry {
    /// The program's name.
    name: String,
    /// `ingress` or `egress`.
    point: &'static str,
    hold: Hold,
}

/// Programs of one object on an interface's ingress and egress hooks, by the
/// kernel's mechanism ([`TcMechanism`]). Dropping it detaches them, unless
/// [`keep`](Self::keep) was called (pinned links; filters, which the kernel holds
/// without a process).
#[derive(Debug)]
pub(crate) struct TcPrograms {
    entries: Vec<Entry>,
    object_name: String,
    iface: String,
    ifindex: u32,
    priority: u32,
    mechanism: TcMechanism,
    keep: bool,
    log: AuditLog,
}

/// `(program, "ingress" | "egress")`.
pub(crate) type TcProgram<'a> = (&'a str, &'static str);

impl TcPrograms {
    /// Attaches each of `programs` of `object` to `iface` by `mechanism` (the kernel's
    /// is [`TcMechanism::probe`]; classic tc at `priority`), each attach audited; on a
    /// failure what was attached goes again and the error names the program and hook
    /// (or, where tcx was asked for and the kernel is older than 6.6, that `feature`
    /// needs it).
    pub(crate) fn attach(
        mechanism: TcMechanism,
        object: &LoadedObject,
        object_name: &str,
        feature: &'static str,
        programs: &[TcProgram<'_>],
        iface: &str,
        priority: u32,
    ) -> Result<Self> {
        let mut made = Self {
            entries: Vec::with_capacity(programs.len()),
            object_name: object_name.to_string(),
            iface: iface.to_string(),
            ifindex: ifindex(iface)?,
            priority,
            mechanism,
            keep: false,
            log: object.audit_log().clone(),
        };
        for (name, point) in programs {
            let prog = object.program(name)?;
            let target = made.target(point);
            let hold = match made.mechanism {
                TcMechanism::Tcx => {
                    let result = crate::firewall::attach_tcx(&prog, made.ifindex);
                    made.log
                        .result(AuditAction::Attach, object_name, &target, name, &result);
                    let link = result.map_err(|source| {
                        let source = KernelError::from_libbpf(source);
                        match crate::firewall::older_than_tcx() {
                            Some(running) => BpfError::KernelTooOld {
                                feature,
                                needs: "6.6",
                                running,
                                source: Some(source),
                            },
                            None => BpfError::Attach {
                                program: (*name).to_string(),
                                target: target.clone(),
                                source,
                            },
                        }
                    })?;
                    let watch = LinkWatch::of(&link);
                    Hold::Link(link, watch)
                }
                TcMechanism::Clsact => {
                    let result = prog
                        .as_fd()
                        .try_clone_to_owned()
                        .map_err(libbpf_rs::Error::from)
                        .and_then(|fd| Ok((made.put_filter(fd.as_fd(), point)?, fd)));
                    made.log
                        .result(AuditAction::Attach, object_name, &target, name, &result);
                    let (prog_id, prog) = result.map_err(|source| BpfError::Attach {
                        program: (*name).to_string(),
                        target: target.clone(),
                        source: KernelError::from_libbpf(source),
                    })?;
                    Hold::Filter(Filter {
                        prog,
                        prog_id,
                        retry: None,
                    })
                }
            };
            made.entries.push(Entry {
                name: (*name).to_string(),
                point,
                hold,
            });
        }
        Ok(made)
    }

    /// Programs of `object` already in tcx links (adopted from pins), as if attached.
    pub(crate) fn from_links(
        object: &LoadedObject,
        object_name: &str,
        iface: &str,
        priority: u32,
        links: Vec<(TcProgram<'_>, Link)>,
    ) -> Result<Self> {
        Ok(Self {
            entries: links
                .into_iter()
                .map(|((name, point), link)| {
                    let watch = LinkWatch::of(&link);
                    Entry {
                        name: name.to_string(),
                        point,
                        hold: Hold::Link(link, watch),
                    }
                })
                .collect(),
            object_name: object_name.to_string(),
            iface: iface.to_string(),
            ifindex: ifindex(iface)?,
            priority,
            mechanism: TcMechanism::Tcx,
            keep: false,
            log: object.audit_log().clone(),
        })
    }

    /// `tcx ingress on eth0`, `tc clsact egress on eth0`.
    fn target(&self, point: &str) -> String {
        format!("{} {point} on {}", self.mechanism.name(), self.iface)
    }

    /// Creates the clsact qdisc if missing and puts `prog` in this feature's filter of
    /// `point`, replacing whatever program that filter ran; the id of the program the
    /// kernel now runs there.
    fn put_filter(
        &self,
        prog: BorrowedFd<'_>,
        point: &str,
    ) -> std::result::Result<u32, libbpf_rs::Error> {
        let mut hook = self.hook(prog, point)?;
        // An existing clsact qdisc (another tool's, or an earlier run's) is kept.
        hook.create()?;
        hook.replace(true).attach()?;
        hook.query()
    }

    /// This feature's filter of `point`, with `fd` as the program to put there.
    fn hook(
        &self,
        fd: BorrowedFd<'_>,
        point: &str,
    ) -> std::result::Result<TcHook, libbpf_rs::Error> {
        filter_hook(fd, self.ifindex, point, self.priority)
    }

    /// The mechanism the programs are attached by.
    pub(crate) fn mechanism(&self) -> TcMechanism {
        self.mechanism
    }

    /// The interface's index.
    pub(crate) fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The audit log attaches and repairs are recorded in.
    pub(crate) fn audit_log(&self) -> &AuditLog {
        &self.log
    }

    /// The interface.
    pub(crate) fn iface(&self) -> &str {
        &self.iface
    }

    /// The links' kernel ids (none for classic tc filters, which are not links).
    pub(crate) fn link_ids(&self) -> Result<Vec<u32>> {
        self.entries
            .iter()
            .filter_map(|e| match &e.hold {
                Hold::Link(link, _) => Some(crate::sentinel::link_id(link)),
                Hold::Filter(_) => None,
            })
            .collect()
    }

    /// Each tcx link with its program's name (empty for classic tc).
    pub(crate) fn links_mut(&mut self) -> impl Iterator<Item = (&str, &mut Link)> {
        self.entries.iter_mut().filter_map(|e| match &mut e.hold {
            Hold::Link(link, _) => Some((e.name.as_str(), link)),
            Hold::Filter(_) => None,
        })
    }

    /// Leaves the programs attached when this handle is dropped (its links are
    /// pinned, or its filters meant to outlive the process).
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }

    /// Checks each program's hook against the kernel and puts back what was undone
    /// from outside, each repair audited: a tcx link detached is attached anew, a
    /// program swapped into it is swapped out ([`verify_links`]); a classic filter
    /// deleted (`tc filter del`, or its qdisc with `tc qdisc del dev IF clsact`) is
    /// added again, one running another program gets this one back. One result per
    /// program: `Ok(None)` all was well, `Ok(Some(what))` what was found and put back,
    /// an error what could not be (that hook is not filtered). A failed re-attach is
    /// tried again after [`crate::attach::REPAIR_RETRY`], not at every check.
    pub(crate) fn verify(&mut self, object: &LoadedObject) -> Vec<Result<Option<String>>> {
        let mut out = Vec::with_capacity(self.entries.len());
        let mut entries = std::mem::take(&mut self.entries);
        let index = self.ifindex;
        for entry in &mut entries {
            let target = self.target(entry.point);
            match &mut entry.hold {
                Hold::Link(link, watch) => {
                    let one = std::iter::once((entry.name.as_str(), target, link, watch));
                    out.extend(verify_links(object, &self.object_name, one, |prog| {
                        crate::firewall::attach_tcx(prog, index)
                    }));
                }
                Hold::Filter(filter) => {
                    out.push(self.verify_filter(&entry.name, entry.point, filter));
                }
            }
        }
        self.entries = entries;
        out
    }

    fn verify_filter(
        &self,
        name: &str,
        point: &str,
        filter: &mut Filter,
    ) -> Result<Option<String>> {
        let target = self.target(point);
        let mut hook =
            self.hook(filter.prog.as_fd(), point)
                .map_err(|source| BpfError::Attach {
                    program: name.to_string(),
                    target: target.clone(),
                    source: KernelError::from_libbpf(source),
                })?;
        let found = match hook.query() {
            Ok(id) if id == filter.prog_id => return Ok(None),
            Ok(id) => format!(
                "the filter ({target}, handle {FILTER_HANDLE:#x}, priority {:#x}) ran program {id}, not {}",
                self.priority, filter.prog_id
            ),
            Err(_) => format!(
                "the filter ({target}, handle {FILTER_HANDLE:#x}, priority {:#x}) was removed from outside",
                self.priority
            ),
        };
        let now = Instant::now();
        if let Some((at, errno)) = filter.retry.filter(|(at, _)| *at > now) {
            return Err(BpfError::Attach {
                program: name.to_string(),
                target: format!(
                    "{target} ({found}; putting it back failed, next attempt in {} s)",
                    at.duration_since(now).as_secs() + 1
                ),
                source: KernelError::from_libbpf(libbpf_rs::Error::from_raw_os_error(errno)),
            });
        }
        match self.put_filter(filter.prog.as_fd(), point) {
            Ok(prog_id) => {
                filter.prog_id = prog_id;
                filter.retry = None;
                let done = format!("{found}: {name} put back");
                self.log.record(
                    AuditAction::Repair,
                    &self.object_name,
                    &target,
                    Outcome::Ok,
                    done.clone(),
                );
                Ok(Some(done))
            }
            Err(e) => {
                self.log.record(
                    AuditAction::Repair,
                    &self.object_name,
                    &target,
                    Outcome::Failed,
                    format!("{found}; putting it back failed: {e}"),
                );
                let source = KernelError::from_libbpf(e);
                filter.retry = Some((
                    now + crate::attach::REPAIR_RETRY,
                    source.errno().unwrap_or(libc::EIO),
                ));
                Err(BpfError::Attach {
                    program: name.to_string(),
                    target: format!("{target} ({found}; putting it back)"),
                    source,
                })
            }
        }
    }

    /// Removes this feature's classic filter of `point` (the qdisc stays: other
    /// filters may use it). A filter already gone is not an error.
    fn remove_filter(
        &self,
        filter: &Filter,
        point: &str,
    ) -> std::result::Result<(), libbpf_rs::Error> {
        let mut hook = self.hook(filter.prog.as_fd(), point)?;
        match hook.detach() {
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Detaches every program now, each audited; the first failure is returned after
    /// all were tried.
    pub(crate) fn detach(mut self) -> Result<()> {
        self.keep = true;
        let mut first = None;
        for entry in std::mem::take(&mut self.entries) {
            let target = self.target(entry.point);
            let result = match entry.hold {
                Hold::Link(link, _) => link.detach(),
                Hold::Filter(filter) => self.remove_filter(&filter, entry.point),
            };
            self.log.result(
                AuditAction::Detach,
                &self.object_name,
                &target,
                &entry.name,
                &result,
            );
            if let Err(source) = result {
                first.get_or_insert(BpfError::Attach {
                    program: entry.name.clone(),
                    target: format!("detach from {target}"),
                    source: KernelError::from_libbpf(source),
                });
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for TcPrograms {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for entry in &self.entries {
            // Links detach when their last fd closes; filters are held by the kernel
            // and are removed here.
            if let Hold::Filter(filter) = &entry.hold {
                let result = self.remove_filter(filter, entry.point);
                self.log.result(
                    AuditAction::Detach,
                    &self.object_name,
                    &self.target(entry.point),
                    &format!("{} (handle dropped)", entry.name),
                    &result,
                );
            }
        }
    }
}
