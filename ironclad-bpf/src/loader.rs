//! The loader: open → audit → load → pin.
//!
//! Every object goes through the same steps:
//!
//! 1. the helper audit ([`crate::audit`]) reads the embedded ELF; a refusal stops here and
//!    nothing of the object reaches the kernel;
//! 2. libbpf opens the object from memory; a program libbpf sees that the audit did not
//!    is refused (fail closed);
//! 3. every map gets a pin path `<pin root>/<object>/<map>`: if a compatible pin exists,
//!    libbpf reuses it (so no rule is lost across a restart), otherwise the new map is
//!    pinned there after load;
//! 4. the kernel loads the programs; the libbpf/verifier log travels inside the error.
//!
//! Each step writes an [`AuditRecord`](crate::auditlog::AuditRecord).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use ironclad_core::privilege::{self, Capability};
use libbpf_rs::{MapCore, MapFlags, ObjectBuilder, PrintLevel};

use crate::audit::{audit_object, Allowlist, AuditReport};
use crate::auditlog::{AuditAction, AuditLog, AuditSink, NullSink, Outcome};
use crate::error::{BpfError, KernelError, Result};
use crate::object::EmbeddedObject;

/// Default pin root.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/ironclad";

/// Where bpffs is mounted when it is missing and the pin root lies below it.
const BPFFS_MOUNT: &str = "/sys/fs/bpf";

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// What loading needs: programs and maps (`CAP_BPF`), tracing programs (`CAP_PERFMON`),
/// network programs (`CAP_NET_ADMIN`).
const LOAD_CAPABILITIES: &[Capability] =
    &[Capability::Bpf, Capability::Perfmon, Capability::NetAdmin];

/// Builds a [`Loader`].
pub struct LoaderBuilder {
    pin_root: PathBuf,
    sink: Arc<dyn AuditSink>,
    allowlist: Allowlist,
    mount_bpffs: bool,
    replace_stale_pins: bool,
}

impl std::fmt::Debug for LoaderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderBuilder")
            .field("pin_root", &self.pin_root)
            .field("mount_bpffs", &self.mount_bpffs)
            .finish_non_exhaustive()
    }
}

impl LoaderBuilder {
    /// Directory under which each object pins its maps and links (default
    /// [`DEFAULT_PIN_ROOT`]). It must be on bpffs.
    pub fn pin_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pin_root = dir.into();
        self
    }

    /// Where audit records go (default: nowhere).
    pub fn audit_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.sink = sink;
        self
    }

    /// The helper allowlist (default [`Allowlist::builtin`]). Only a narrowed copy of the
    /// built-in list can be given: [`Allowlist`] has no way to add entries.
    pub fn allowlist(mut self, allowlist: Allowlist) -> Self {
        self.allowlist = allowlist;
        self
    }

    /// Whether to mount bpffs at /sys/fs/bpf when the pin root lies below it and it is
    /// not mounted (default `true`).
    pub fn mount_bpffs(mut self, mount: bool) -> Self {
        self.mount_bpffs = mount;
        self
    }

    /// What to do with a pin that is not a compatible map of this build
    /// ([`BpfError::StalePin`]): refuse to load (the default), or, with `true`, remove
    /// the pin (an audit record says so) and pin a new, empty map in its place. The old
    /// map's contents (rules, counters) are lost, which is why it is not the default.
    pub fn replace_stale_pins(mut self, replace: bool) -> Self {
        self.replace_stale_pins = replace;
        self
    }

    /// Checks (and if allowed, mounts) bpffs and creates the pin root.
    pub fn build(self) -> Result<Loader> {
        install_print_capture();
        ensure_bpffs(&self.pin_root, self.mount_bpffs)?;
        if let Err(err) = create_private_dir(&self.pin_root) {
            // Name the missing capability rather than a bare EACCES.
            privilege::require(
                &format!("creating the pin root {}", self.pin_root.display()),
                LOAD_CAPABILITIES,
            )?;
            return Err(err);
        }
        Ok(Loader {
            pin_root: self.pin_root,
            log: AuditLog::new(self.sink),
            allowlist: self.allowlist,
            replace_stale_pins: self.replace_stale_pins,
            preloaded: Arc::default(),
        })
    }
}

/// Loads embedded objects after auditing them, and pins their maps. A clone loads
/// under the same pin root, allowlist and audit log (a feature that loads more objects
/// later, on a reload, keeps one).
#[derive(Debug, Clone)]
pub struct Loader {
    pin_root: PathBuf,
    log: AuditLog,
    allowlist: Allowlist,
    replace_stale_pins: bool,
    /// Objects loaded ahead ([`Loader::preload`]), not pinned yet; shared by clones.
    preloaded: Arc<Mutex<Vec<Preloaded>>>,
}

/// An object [`Loader::preload`] loaded, waiting for [`Loader::load`] to pin it. Dropped
/// unclaimed, it is released (it pinned nothing, so nothing of it stays in the kernel)
/// and the audit log says so.
#[derive(Debug)]
struct Preloaded {
    object: Option<LoadedObject>,
    elf: &'static [u8],
}

impl Drop for Preloaded {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            let (name, log) = (object.name.clone(), object.log.clone());
            drop(object);
            log.record(
                AuditAction::Load,
                &name,
                "",
                Outcome::Ok,
                "loaded ahead and not used: released, nothing of it stays in the kernel",
            );
        }
    }
}

impl Loader {
    /// A builder with the defaults: pin root [`DEFAULT_PIN_ROOT`], no audit sink, the
    /// built-in allowlist, bpffs mounted if missing.
    pub fn builder() -> LoaderBuilder {
        LoaderBuilder {
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
            sink: Arc::new(NullSink),
            allowlist: Allowlist::builtin(),
            mount_bpffs: true,
            replace_stale_pins: false,
        }
    }

    /// The pin root.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// The directory where `object` pins its maps and links.
    pub fn pin_dir(&self, object: &str) -> PathBuf {
        self.pin_root.join(object)
    }

    /// The audit log every operation through this loader writes to.
    pub fn audit_log(&self) -> &AuditLog {
        &self.log
    }

    /// The allowlist in force.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }

    /// Runs the helper audit on `object` and records the result; loads nothing.
    pub fn audit(&self, object: &EmbeddedObject) -> Result<AuditReport> {
        let result = audit_object(object, &self.allowlist);
        match &result {
            Ok(report) => {
                let programs: Vec<&str> = report.programs.keys().map(String::as_str).collect();
                self.log.record(
                    AuditAction::Audit,
                    object.name(),
                    "",
                    Outcome::Ok,
                    format!("programs: {}", programs.join(", ")),
                );
            }
            Err(BpfError::AuditRejected { violations, .. }) => {
                for v in violations {
                    self.log.record(
                        AuditAction::Audit,
                        object.name(),
                        &v.program,
                        Outcome::Refused,
                        v.to_string(),
                    );
                }
            }
            Err(e) => self.log.record(
                AuditAction::Audit,
                object.name(),
                "",
                Outcome::Refused,
                e.to_string(),
            ),
        }
        result
    }

    /// Audits, opens, loads and pins `object`. Maps already pinned (by an earlier run)
    /// are reused, so their contents survive a restart.
    pub fn load(&self, object: &EmbeddedObject) -> Result<LoadedObject> {
        self.load_with(object, true, &[])
    }

    /// Like [`load`](Self::load), with the named maps' `max_entries` set first (a table
    /// sized by the policy). A map pinned by an earlier run with another size is a
    /// stale pin, as for any other shape change.
    pub fn load_sized(
        &self,
        object: &EmbeddedObject,
        sizes: &[(&str, u32)],
    ) -> Result<LoadedObject> {
        self.load_with(object, true, sizes)
    }

    /// Loads `object` ahead, without pinning it, for the next [`load`](Self::load) of
    /// the same object through this loader (or a clone) to pin and return: the kernel
    /// verifies the programs while the caller does something else (the daemon compiles
    /// its policy meanwhile, so that a policy that turns out invalid has pinned
    /// nothing).
    ///
    /// Only a cold start is loaded ahead: when the object's pin directory holds
    /// anything (an earlier run's maps, which a load must reuse), nothing is loaded and
    /// `Ok(false)` is returned. The later `load` pins the object's maps only if the
    /// directory is still empty then; otherwise it releases the preloaded object and
    /// loads as usual. An object never claimed is released with the last clone of the
    /// loader, or by [`discard_preloaded`](Self::discard_preloaded): the audit log
    /// records its load and its release. A `load` running while the preload still
    /// verifies does not wait for it: it loads on its own.
    pub fn preload(&self, object: &EmbeddedObject) -> Result<bool> {
        if !self.pins_empty(object.name()) {
            return Ok(false);
        }
        let loaded = self.load_with(object, false, &[])?;
        self.log.record(
            AuditAction::Load,
            object.name(),
            "",
            Outcome::Ok,
            "loaded ahead, not pinned: its maps are pinned when it is used",
        );
        self.lock_preloaded().push(Preloaded {
            object: Some(loaded),
            elf: object.elf(),
        });
        Ok(true)
    }

    /// Releases every object loaded ahead and not used yet; returns how many there
    /// were.
    pub fn discard_preloaded(&self) -> usize {
        let taken = std::mem::take(&mut *self.lock_preloaded());
        taken.len()
    }

    fn lock_preloaded(&self) -> std::sync::MutexGuard<'_, Vec<Preloaded>> {
        self.preloaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `object`'s pin directory is missing or empty.
    fn pins_empty(&self, object: &str) -> bool {
        match std::fs::read_dir(self.pin_dir(object)) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    /// The preloaded copy of `object`, pinned now; `None` when there is none, or when
    /// pins appeared since (that copy is released, and the caller loads as usual,
    /// reusing them).
    fn claim_preloaded(&self, object: &EmbeddedObject) -> Option<Result<LoadedObject>> {
        let mut preloaded = {
            let mut list = self.lock_preloaded();
            let at = list.iter().position(|p| {
                p.object.as_ref().is_some_and(|o| o.name == object.name()) && p.elf == object.elf()
            })?;
            list.swap_remove(at)
        };
        if !self.pins_empty(object.name()) {
            return None;
        }
        let loaded = preloaded.object.take()?;
        Some(self.pin_preloaded(loaded))
    }

    /// Pins the maps of an object loaded without pins, as a load would have: at
    /// `<pin root>/<object>/<map>`. A pin that fails removes those made before it.
    fn pin_preloaded(&self, mut loaded: LoadedObject) -> Result<LoadedObject> {
        create_private_dir(&loaded.pin_dir)?;
        let mut pins: Vec<PinnedMap> = Vec::new();
        let pin_dir = loaded.pin_dir.clone();
        for mut map in loaded.object.maps_mut() {
            let map_name = map.name().to_string_lossy().into_owned();
            if is_internal_map(&map_name) {
                continue;
            }
            let path = pin_dir.join(&map_name);
            if let Err(e) = map.pin(&path) {
                for made in &pins {
                    let _ = std::fs::remove_file(&made.path);
                }
                let err = BpfError::Pin {
                    what: format!("map {map_name}"),
                    path: path.clone(),
                    reason: e.to_string(),
                    source: Some(crate::error::KernelError::from_libbpf(e)),
                };
                self.log.record(
                    AuditAction::Pin,
                    &loaded.name,
                    &path.display().to_string(),
                    Outcome::Failed,
                    err.to_string(),
                );
                return Err(err);
            }
            pins.push(PinnedMap {
                name: map_name,
                path,
                reused: false,
            });
        }
        for pin in &pins {
            self.log.record(
                AuditAction::Pin,
                &loaded.name,
                &pin.path.display().to_string(),
                Outcome::Ok,
                format!("map {}", pin.name),
            );
        }
        loaded.pins = pins;
        Ok(loaded)
    }

    /// Audits, opens and loads `object` without pinning anything: for features whose
    /// state need not outlive the process (its maps go when the handle is dropped).
    pub fn load_unpinned(&self, object: &EmbeddedObject) -> Result<LoadedObject> {
        self.load_with(object, false, &[])
    }

    /// Loads `object`; a tracing program (`fentry`/`fexit`) the kernel refuses (this
    /// project's test machines refuse them all: EPERM) is left out and the object
    /// loaded again without it: such programs observe, and the object's other programs
    /// never depend on them. Attaching one that was left out says why
    /// ([`BpfError::NotLoaded`]). The second load verifies the object's other programs
    /// again: on such a kernel an object with a tracing program takes twice its
    /// verification time to load.
    fn load_with(
        &self,
        object: &EmbeddedObject,
        pin: bool,
        sizes: &[(&str, u32)],
    ) -> Result<LoadedObject> {
        if pin && sizes.is_empty() {
            if let Some(claimed) = self.claim_preloaded(object) {
                return claimed;
            }
        }
        let mut refused: Vec<(String, String)> = Vec::new();
        loop {
            let mut tracing = Vec::new();
            match self.load_attempt(object, pin, sizes, &refused, &mut tracing) {
                Err(BpfError::Load {
                    object: o,
                    source,
                    verifier_log,
                }) => {
                    // libbpf's line for the program the kernel refused.
                    let culprit = verifier_log.lines().find_map(|l| {
                        let rest = l.split("prog '").nth(1)?;
                        let (prog, after) = rest.split_once("': BPF program load failed")?;
                        Some((
                            prog.to_string(),
                            after.trim_start_matches(':').trim().to_string(),
                        ))
                    });
                    match culprit {
                        Some((prog, errno))
                            if tracing.contains(&prog)
                                && !refused.iter().any(|(p, _)| *p == prog) =>
                        {
                            let why = format!("not loaded: the kernel refused it ({errno})");
                            refused.push((prog, why));
                        }
                        _ => {
                            let err = BpfError::Load {
                                object: o,
                                source,
                                verifier_log,
                            };
                            self.log.record(
                                AuditAction::Load,
                                object.name(),
                                "",
                                Outcome::Failed,
                                err.to_string(),
                            );
                            return Err(err);
                        }
                    }
                }
                other => return other,
            }
        }
    }

    /// One load of `object` with the programs of `left_out` not loaded; the names of its
    /// tracing programs go to `tracing`.
    fn load_attempt(
        &self,
        object: &EmbeddedObject,
        pin: bool,
        sizes: &[(&str, u32)],
        left_out: &[(String, String)],
        tracing: &mut Vec<String>,
    ) -> Result<LoadedObject> {
        let name = object.name();
        let _span = tracing::info_span!("ironclad.load", object = name, pin).entered();
        let report = self.audit(object)?;
        privilege::require(&format!("loading BPF object `{name}`"), LOAD_CAPABILITIES)?;

        let mut open = ObjectBuilder::default()
            .name(name)
            .and_then(|b| b.open_memory(object.elf()))
            .map_err(|source| BpfError::Open {
                object: name.to_string(),
                source: crate::error::KernelError::from_libbpf(source),
            })?;
        for prog in open.progs() {
            let prog_name = prog.name().to_string_lossy().into_owned();
            if !report.programs.contains_key(&prog_name) {
                return Err(BpfError::AuditIncomplete {
                    object: name.to_string(),
                    program: prog_name,
                });
            }
        }

        // A tracing program (fentry/fexit) whose kernel function this kernel lacks (one
        // built without it) is left out: the rest of the object still loads, and
        // attaching that program says what is missing.
        let mut skipped = left_out.to_vec();
        let mut vmlinux: Option<Option<libbpf_rs::btf::Btf<'static>>> = None;
        for mut prog in open.progs_mut() {
            let section = prog.section().to_string_lossy().into_owned();
            let Some(func) = section
                .strip_prefix("fentry/")
                .or_else(|| section.strip_prefix("fexit/"))
            else {
                continue;
            };
            let prog_name = prog.name().to_string_lossy().into_owned();
            tracing.push(prog_name.clone());
            if left_out.iter().any(|(p, _)| *p == prog_name) {
                prog.set_autoload(false);
                continue;
            }
            let btf = vmlinux.get_or_insert_with(|| libbpf_rs::btf::Btf::from_vmlinux().ok());
            let present = btf.as_ref().is_some_and(|b| {
                b.type_by_name::<libbpf_rs::btf::types::Func<'_>>(func)
                    .is_some()
            });
            if !present {
                prog.set_autoload(false);
                let why = format!("not loaded: the kernel has no function {func} (its BTF)");
                skipped.push((prog_name, why));
            }
        }

        // What the object needs that this kernel lacks (its BTF says), named before the
        // kernel answers a bare EINVAL: nothing of the object is created.
        if let Some(kernel) = crate::kernel::KernelBpf::probe() {
            let lacks = kernel.lacks(&open, &report);
            if let (false, Some(compat)) = (lacks.is_empty(), object.fallback()) {
                // The same source built for older kernels: same name, maps and pins.
                let why: Vec<String> = lacks.iter().map(|l| l.what.clone()).collect();
                self.log.record(
                    AuditAction::Load,
                    name,
                    "",
                    Outcome::Ok,
                    format!(
                        "this kernel lacks {}: loading the build for older kernels",
                        why.join(", ")
                    ),
                );
                drop(open);
                return self
                    .load_attempt(compat, pin, sizes, left_out, tracing)
                    .map(|mut loaded| {
                        loaded.for_older_kernels = true;
                        loaded
                    });
            }
            if !lacks.is_empty() {
                return Err(self.refused(
                    name,
                    BpfError::KernelLacks {
                        object: name.to_string(),
                        running: crate::kernel::release(),
                        lacks,
                    },
                ));
            }
        }

        for (map_name, entries) in sizes {
            let mut map = open
                .maps_mut()
                .find(|m| m.name().to_string_lossy() == *map_name)
                .ok_or_else(|| BpfError::NoSuchMap {
                    object: name.to_string(),
                    map: (*map_name).to_string(),
                })?;
            map.set_max_entries(*entries)
                .map_err(|source| BpfError::Open {
                    object: name.to_string(),
                    source: crate::error::KernelError::from_libbpf(source),
                })?;
        }
        let pin_dir = self.pin_dir(name);
        if pin {
            create_private_dir(&pin_dir)?;
        }
        let mut pins = Vec::new();
        for mut map in open.maps_mut().filter(|_| pin) {
            let map_name = map.name().to_string_lossy().into_owned();
            if is_internal_map(&map_name) {
                continue;
            }
            let path = pin_dir.join(&map_name);
            let mut reused = path.exists();
            if reused {
                if let Err((found, expected)) = pin_compatible(&map, &path) {
                    if !self.replace_stale_pins {
                        return Err(self.refused(
                            name,
                            BpfError::StalePin {
                                map: map_name,
                                path,
                                found,
                                expected,
                            },
                        ));
                    }
                    std::fs::remove_file(&path).map_err(|e| BpfError::Pin {
                        what: format!("map {map_name}"),
                        path: path.clone(),
                        reason: format!("removing the stale pin: {e}"),
                        source: Some(e.into()),
                    })?;
                    self.log.record(
                        AuditAction::Unpin,
                        name,
                        &path.display().to_string(),
                        Outcome::Ok,
                        format!("stale pin replaced (pinned: {found}; needed: {expected})"),
                    );
                    reused = false;
                }
            }
            map.set_pin_path(&path).map_err(|e| BpfError::Pin {
                what: format!("map {map_name}"),
                path: path.clone(),
                reason: e.to_string(),
                source: Some(crate::error::KernelError::from_libbpf(e)),
            })?;
            pins.push(PinnedMap {
                name: map_name,
                path,
                reused,
            });
        }

        let (result, log) = with_captured_log(|| open.load());
        let loaded = match result {
            Ok(loaded) => loaded,
            Err(source) => {
                // Recorded by load_with, which may instead load again without a
                // tracing program the kernel refused.
                return Err(BpfError::Load {
                    object: name.to_string(),
                    source: crate::error::KernelError::from_libbpf(source),
                    verifier_log: log,
                });
            }
        };
        let programs: Vec<&str> = report
            .programs
            .keys()
            .map(String::as_str)
            .filter(|p| !skipped.iter().any(|(s, _)| s == p))
            .collect();
        let left_out: Vec<String> = skipped
            .iter()
            .map(|(p, why)| format!("; {p} {why}"))
            .collect();
        // A program left out is no failure of the load: what it hooks is missing or
        // refused here, and attaching it says so (BpfError::NotLoaded).
        self.log.record(
            AuditAction::Load,
            name,
            "",
            Outcome::Ok,
            format!("programs: {}{}", programs.join(", "), left_out.concat()),
        );
        for pin in &pins {
            let action = if pin.reused {
                AuditAction::Reuse
            } else {
                AuditAction::Pin
            };
            self.log.record(
                action,
                name,
                &pin.path.display().to_string(),
                Outcome::Ok,
                format!("map {}", pin.name),
            );
        }
        Ok(LoadedObject {
            name: name.to_string(),
            object: loaded,
            pin_dir,
            pins,
            skipped,
            log: self.log.clone(),
            for_older_kernels: false,
        })
    }

    /// `err`, recorded as the refused load of `object`.
    fn refused(&self, object: &str, err: BpfError) -> BpfError {
        self.log.record(
            AuditAction::Load,
            object,
            "",
            Outcome::Refused,
            err.to_string(),
        );
        err
    }

    /// Removes every pin of `object` under the pin root (maps and links) and its
    /// directory, without loading it. Returns how many pins were removed. Each pinned
    /// link is detached first, so its program has stopped acting when this returns (a
    /// process still holding the link stops enforcing through it too). Maps and
    /// programs stay alive only while something else still holds them.
    pub fn remove_pins(&self, object: &str) -> Result<usize> {
        remove_pin_dir(&self.pin_dir(object), object, &self.log)
    }
}

/// Whether the map pinned at `path` can be reused for `map`: libbpf's own test (type,
/// key and value size, capacity, flags), and for an array or hash of maps the inner
/// maps it holds against the object's inner-map template (key and value size, type): a
/// new version whose per-slot tables changed shape cannot use the old outer map, whose
/// template the verifier would check the new program against. Otherwise what is pinned
/// and what is needed, for the message.
fn pin_compatible(
    map: &libbpf_rs::OpenMapMut<'_>,
    path: &Path,
) -> std::result::Result<(), (String, String)> {
    let expected = (
        map.map_type(),
        map.key_size(),
        map.value_size(),
        map.max_entries(),
        map.map_flags(),
    );
    let describe = |(ty, key, value, entries, flags): (libbpf_rs::MapType, u32, u32, u32, u32)| {
        format!("{ty:?}, key {key} B, value {value} B, {entries} entries, flags {flags:#x}")
    };
    let pinned = libbpf_rs::MapHandle::from_pinned_path(path);
    let found = pinned.as_ref().map_err(|e| e.to_string()).and_then(|h| {
        h.info().map_err(|e| e.to_string()).map(|i| {
            let raw = &i.info;
            (
                i.map_type(),
                raw.key_size,
                raw.value_size,
                raw.max_entries,
                raw.map_flags,
            )
        })
    });
    match found {
        Ok(found) if found == expected => {}
        Ok(found) => return Err((describe(found), describe(expected))),
        Err(e) => return Err((format!("not a usable map ({e})"), describe(expected))),
    }
    let (Ok(outer), Some(template)) = (pinned, inner_template(map)) else {
        return Ok(());
    };
    let describe_inner = |(ty, key, value, entries): (u32, u32, u32, Option<u32>)| match entries {
        Some(entries) => {
            format!("inner maps of type {ty}, key {key} B, value {value} B, {entries} entries")
        }
        None => format!("inner maps of type {ty}, key {key} B, value {value} B"),
    };
    for slot in 0..expected.3 {
        let Ok(Some(id)) = outer.lookup(&slot.to_ne_bytes(), libbpf_rs::MapFlags::ANY) else {
            continue;
        };
        let Some(id) = id
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
        else {
            continue;
        };
        let Ok(info) = libbpf_rs::MapHandle::from_map_id(id).and_then(|h| h.info()) else {
            continue;
        };
        let found = (
            info.info.type_,
            info.info.key_size,
            info.info.value_size,
            template.3.map(|_| info.info.max_entries),
        );
        if found != template {
            return Err((describe_inner(found), describe_inner(template)));
        }
    }
    Ok(())
}

/// The inner-map template of an array or hash of maps: (type, key size, value size, max
/// entries unless inner maps are sized per policy, `BPF_F_INNER_MAP`). A fixed-size inner
/// table of another size is another layout (the compiled IPv6 table's first level grew
/// with its record count), and the kernel refuses to put a new-sized inner map into an
/// outer map made for the old size.
fn inner_template(map: &libbpf_rs::OpenMapMut<'_>) -> Option<(u32, u32, u32, Option<u32>)> {
    use libbpf_rs::AsRawLibbpf;
    if !matches!(
        map.map_type(),
        libbpf_rs::MapType::ArrayOfMaps | libbpf_rs::MapType::HashOfMaps
    ) {
        return None;
    }
    // SAFETY: the pointer is the live bpf_map `map` borrows; libbpf returns its inner
    // template (owned by the same object) or NULL, and the getters only read it.
    unsafe {
        let inner = libbpf_sys::bpf_map__inner_map(map.as_libbpf_object().as_ptr());
        if inner.is_null() {
            return None;
        }
        Some((
            libbpf_sys::bpf_map__type(inner),
            libbpf_sys::bpf_map__key_size(inner),
            libbpf_sys::bpf_map__value_size(inner),
            (libbpf_sys::bpf_map__map_flags(inner) & libbpf_sys::BPF_F_INNER_MAP == 0)
                .then(|| libbpf_sys::bpf_map__max_entries(inner)),
        ))
    }
}

/// A map pinned (or reused) by [`Loader::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedMap {
    /// The map's name.
    pub name: String,
    /// Its pin path.
    pub path: PathBuf,
    /// `true` if an existing pin was reused rather than a new map created.
    pub reused: bool,
}

/// The verifier's budget of processed instructions for one program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`, the same on every kernel since 5.2): a program whose
/// verification needs more is refused.
pub const VERIFIER_BUDGET: u32 = 1_000_000;

/// What the kernel's verifier did with one program ([`LoadedObject::verifier_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifierStats {
    /// The program's name.
    pub program: String,
    /// The kernel's id of the program (`bpftool prog show id N`).
    pub id: u32,
    /// The instructions the verifier processed (`bpf_prog_info.verified_insns`): each
    /// path it walked counts its instructions again. Linux 5.16 and newer; 0 before.
    pub verified_insns: u32,
}

/// An object loaded into the kernel, with its maps pinned.
///
/// Dropping it closes this process's file descriptors; the pinned maps (and any pinned
/// link) stay in the kernel. [`LoadedObject::unpin`] removes them.
#[derive(Debug)]
pub struct LoadedObject {
    name: String,
    object: libbpf_rs::Object,
    pin_dir: PathBuf,
    pins: Vec<PinnedMap>,
    /// Programs left out at load, each with the reason.
    skipped: Vec<(String, String)>,
    log: AuditLog,
    /// The build for older kernels ([`EmbeddedObject::fallback`]) was loaded.
    for_older_kernels: bool,
}

impl LoadedObject {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the object's build for older kernels ([`EmbeddedObject::fallback`]) was
    /// loaded, the running kernel lacking what its main build needs.
    pub fn for_older_kernels(&self) -> bool {
        self.for_older_kernels
    }

    /// The directory holding this object's pins.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The maps pinned or reused at load.
    pub fn pinned_maps(&self) -> &[PinnedMap] {
        &self.pins
    }

    /// The audit log this object writes to.
    pub fn audit_log(&self) -> &AuditLog {
        &self.log
    }

    /// What the kernel's verifier did with each program of this object that loaded
    /// (programs left out at load have none), in the object's order: how many
    /// instructions it processed of its budget of [`VERIFIER_BUDGET`] a program. A
    /// program near the budget on one kernel is one change away from not loading
    /// there; the guest runs say how near each is on each kernel.
    pub fn verifier_stats(&self) -> Result<Vec<VerifierStats>> {
        let mut ids = Vec::new();
        for prog in self.object.progs() {
            let program = prog.name().to_string_lossy().into_owned();
            if self.skipped.iter().any(|(p, _)| *p == program) {
                continue;
            }
            let id = libbpf_rs::Program::id_from_fd(prog.as_fd()).map_err(|source| {
                BpfError::ProgramInfo {
                    object: self.name.clone(),
                    program: program.clone(),
                    source: KernelError::from_libbpf(source),
                }
            })?;
            ids.push((program, id));
        }
        // The kernel's count is in bpf_prog_info, which libbpf-rs reads only through its
        // iterator over every loaded program.
        let counts: std::collections::BTreeMap<u32, u32> =
            libbpf_rs::query::ProgInfoIter::default()
                .map(|info| (info.id, info.verified_insns))
                .collect();
        ids.into_iter()
            .map(|(program, id)| match counts.get(&id) {
                Some(&verified_insns) => Ok(VerifierStats {
                    program,
                    id,
                    verified_insns,
                }),
                // Not while this object holds the program's fd: the iterator could not
                // read it (it skips what it cannot open).
                None => Err(BpfError::ProgramInfo {
                    object: self.name.clone(),
                    program,
                    source: KernelError::from_libbpf(libbpf_rs::Error::from(std::io::Error::from(
                        std::io::ErrorKind::NotFound,
                    ))),
                }),
            })
            .collect()
    }

    /// The underlying libbpf object (crate-internal: libbpf-rs types stay out of the
    /// public API).
    pub(crate) fn libbpf(&self) -> &libbpf_rs::Object {
        &self.object
    }

    /// The map `name`, with every write recorded in the audit log.
    pub fn map(&self, name: &str) -> Result<AuditedMap<'_>> {
        let map = self
            .object
            .maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| BpfError::NoSuchMap {
                object: self.name.clone(),
                map: name.to_string(),
            })?;
        Ok(AuditedMap {
            map,
            object: &self.name,
            name: name.to_string(),
            log: &self.log,
        })
    }

    /// The program `name`.
    pub(crate) fn program(&self, name: &str) -> Result<libbpf_rs::ProgramMut<'_>> {
        self.object
            .progs_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| BpfError::NoSuchProgram {
                object: self.name.clone(),
                program: name.to_string(),
            })
    }

    /// Attaches the BTF tracepoint and `fentry` programs `names` in order (the hook is
    /// the program's section), each recorded in the audit log; the links detach when
    /// dropped. The first failure stops it (links attached
    /// before are dropped, so detached, with it).
    pub(crate) fn attach_tracepoints(&self, names: &[&str]) -> Result<Vec<libbpf_rs::Link>> {
        let mut links = Vec::with_capacity(names.len());
        for name in names {
            if let Some((_, why)) = self.skipped.iter().find(|(p, _)| p == name) {
                return Err(BpfError::NotLoaded {
                    object: self.name.clone(),
                    program: (*name).to_string(),
                    reason: why.clone(),
                });
            }
            let program = self.program(name)?;
            let target = if program.section().to_string_lossy().starts_with("fentry/") {
                "fentry"
            } else {
                "BTF tracepoint"
            };
            let result = program.attach();
            self.log
                .result(AuditAction::Attach, &self.name, target, name, &result);
            links.push(result.map_err(|source| BpfError::Attach {
                program: (*name).to_string(),
                target: target.to_string(),
                source: crate::error::KernelError::from_libbpf(source),
            })?);
        }
        Ok(links)
    }

    /// Runs program `name` on `data` in the kernel with `BPF_PROG_TEST_RUN`, `repeat`
    /// times (at least once), without attaching it. Returns the program's return value
    /// (for XDP: the verdict) and the kernel's average time per run.
    pub fn test_run(&self, name: &str, data: &[u8], repeat: u32) -> Result<TestRun> {
        self.run_program(name, data, repeat, None)
    }

    /// `BPF_PROG_TEST_RUN` of `name` on `data`; the frame as the program left it goes to
    /// `out` when given.
    fn run_program(
        &self,
        name: &str,
        data: &[u8],
        repeat: u32,
        out: Option<&mut Vec<u8>>,
    ) -> Result<TestRun> {
        let prog = self.program(name)?;
        let mut buffer = out.as_ref().map(|_| vec![0u8; data.len().max(256) + 256]);
        let input = libbpf_rs::ProgramInput {
            data_in: Some(data),
            data_out: buffer.as_deref_mut(),
            repeat: repeat.max(1),
            ..Default::default()
        };
        let output = prog.test_run(input).map_err(|source| BpfError::Attach {
            program: name.to_string(),
            target: "BPF_PROG_TEST_RUN".to_string(),
            source: crate::error::KernelError::from_libbpf(source),
        })?;
        if let (Some(out), Some(data)) = (out, output.data) {
            *out = data.to_vec();
        }
        Ok(TestRun {
            return_value: output.return_value,
            per_run: output.duration,
        })
    }

    /// Like [`test_run`](Self::test_run) once, also returning the frame as the program
    /// left it (an XDP program that rewrites the packet, e.g. into an answer).
    pub fn test_run_frame(&self, name: &str, data: &[u8]) -> Result<(TestRun, Vec<u8>)> {
        let mut frame = Vec::new();
        let run = self.run_program(name, data, 1, Some(&mut frame))?;
        Ok((run, frame))
    }

    /// Removes every pin under this object's pin directory (maps and links pinned there)
    /// and the directory. Pinned links are detached first (see
    /// [`Loader::remove_pins`]). Once this process's handles close, the kernel frees
    /// what nothing else holds.
    pub fn unpin(self) -> Result<usize> {
        remove_pin_dir(&self.pin_dir, &self.name, &self.log)
    }
}

/// The result of [`LoadedObject::test_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (for XDP, the `XDP_*` verdict).
    pub return_value: u32,
    /// Average time per run, as measured by the kernel.
    pub per_run: std::time::Duration,
}

/// A map of a loaded object. Writes are size-checked and recorded in the audit log.
#[derive(Debug)]
pub struct AuditedMap<'obj> {
    map: libbpf_rs::Map<'obj>,
    object: &'obj str,
    name: String,
    log: &'obj AuditLog,
}

impl AuditedMap<'_> {
    fn check(&self, what: &'static str, got: usize, expected: u32) -> Result<()> {
        if got == expected as usize {
            Ok(())
        } else {
            Err(BpfError::BadSize {
                map: self.name.clone(),
                what,
                got,
                expected: expected as usize,
            })
        }
    }

    /// The map's kernel id (as `bpftool map show` lists it).
    pub fn id(&self) -> Result<u32> {
        use libbpf_rs::MapCore as _;
        self.map
            .info()
            .map(|info| info.info.id)
            .map_err(|source| BpfError::Map {
                op: "get info",
                map: self.name.clone(),
                source: crate::error::KernelError::from_libbpf(source),
            })
    }

    /// The map's key size in bytes.
    pub fn key_size(&self) -> u32 {
        self.map.key_size()
    }

    /// The map's value size in bytes (per CPU for per-CPU maps).
    pub fn value_size(&self) -> u32 {
        self.map.value_size()
    }

    /// Inserts or replaces one element.
    pub fn update(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check("key", key.len(), self.map.key_size())?;
        self.check("value", value.len(), self.map.value_size())?;
        let result = self.map.update(key, value, MapFlags::ANY);
        self.log.result(
            AuditAction::MapUpdate,
            self.object,
            &self.name,
            &format!("update key={}", hex(key)),
            &result,
        );
        result.map_err(|source| BpfError::Map {
            op: "update",
            map: self.name.clone(),
            source: crate::error::KernelError::from_libbpf(source),
        })
    }

    /// Inserts or replaces many elements; writes one audit record with the count. Stops
    /// at the first failure and returns it (elements before it stay written).
    pub fn update_many<'a, I>(&self, entries: I) -> Result<usize>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut count = 0usize;
        let mut result = Ok(());
        for (key, value) in entries {
            if let Err(e) = self
                .check("key", key.len(), self.map.key_size())
                .and_then(|()| self.check("value", value.len(), self.map.value_size()))
            {
                result = Err(e);
                break;
            }
            if let Err(source) = self.map.update(key, value, MapFlags::ANY) {
                result = Err(BpfError::Map {
                    op: "update",
                    map: self.name.clone(),
                    source: crate::error::KernelError::from_libbpf(source),
                });
                break;
            }
            count += 1;
        }
        self.log.result(
            AuditAction::MapUpdate,
            self.object,
            &self.name,
            &format!("update {count} elements"),
            &result,
        );
        result.map(|()| count)
    }

    /// Replaces one element of a per-CPU map with one value per possible CPU.
    pub fn update_percpu(&self, key: &[u8], values: &[Vec<u8>]) -> Result<()> {
        self.check("key", key.len(), self.map.key_size())?;
        for value in values {
            self.check("value", value.len(), self.map.value_size())?;
        }
        let result = self.map.update_percpu(key, values, MapFlags::ANY);
        self.log.result(
            AuditAction::MapUpdate,
            self.object,
            &self.name,
            &format!("update key={} on {} CPUs", hex(key), values.len()),
            &result,
        );
        result.map_err(|source| BpfError::Map {
            op: "update",
            map: self.name.clone(),
            source: crate::error::KernelError::from_libbpf(source),
        })
    }

    /// An owned handle on the map (its own file descriptor), e.g. for a ring buffer
    /// reader that outlives this borrow.
    pub(crate) fn handle(&self) -> Result<libbpf_rs::MapHandle> {
        libbpf_rs::MapHandle::try_from(&self.map).map_err(|source| BpfError::Map {
            op: "dup",
            map: self.name.clone(),
            source: crate::error::KernelError::from_libbpf(source),
        })
    }

    /// Deletes one element; `Ok(false)` if it was not there.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.check("key", key.len(), self.map.key_size())?;
        let result = match self.map.delete(key) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(BpfError::Map {
                op: "delete",
                map: self.name.clone(),
                source: crate::error::KernelError::from_libbpf(source),
            }),
        };
        self.log.result(
            AuditAction::MapUpdate,
            self.object,
            &self.name,
            &format!("delete key={}", hex(key)),
            &result,
        );
        result
    }

    /// Deletes many elements (those already gone are skipped); writes one audit
    /// record with the count (none when nothing was deleted and nothing failed). Stops at the first failure and returns it.
    pub fn delete_many<'a, I>(&self, keys: I) -> Result<usize>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        self.delete_each(keys, |_| {})
    }

    /// [`delete_many`](Self::delete_many), calling `deleted` with the position (in
    /// `keys`) of every element this call removed, so a caller can act on exactly
    /// those (and not on one the kernel removed first).
    pub fn delete_each<'a, I>(&self, keys: I, mut deleted: impl FnMut(usize)) -> Result<usize>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut count = 0usize;
        let mut result = Ok(());
        for (at, key) in keys.into_iter().enumerate() {
            if let Err(e) = self.check("key", key.len(), self.map.key_size()) {
                result = Err(e);
                break;
            }
            match self.map.delete(key) {
                Ok(()) => {
                    count += 1;
                    deleted(at);
                }
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                Err(source) => {
                    result = Err(BpfError::Map {
                        op: "delete",
                        map: self.name.clone(),
                        source: crate::error::KernelError::from_libbpf(source),
                    });
                    break;
                }
            }
        }
        // Nothing asked and nothing done (an idle sweep): no record.
        if count > 0 || result.is_err() {
            self.log.result(
                AuditAction::MapUpdate,
                self.object,
                &self.name,
                &format!("delete {count} elements"),
                &result,
            );
        }
        result.map(|()| count)
    }

    /// Reads one element.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check("key", key.len(), self.map.key_size())?;
        self.map
            .lookup(key, MapFlags::ANY)
            .map_err(|source| BpfError::Map {
                op: "lookup",
                map: self.name.clone(),
                source: crate::error::KernelError::from_libbpf(source),
            })
    }

    /// Reads one element of a per-CPU map: one value per possible CPU.
    pub fn lookup_percpu(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        self.check("key", key.len(), self.map.key_size())?;
        self.map
            .lookup_percpu(key, MapFlags::ANY)
            .map_err(|source| BpfError::Map {
                op: "lookup",
                map: self.name.clone(),
                source: crate::error::KernelError::from_libbpf(source),
            })
    }

    /// The sum over CPUs of a per-CPU `u64` element (0 if the key is absent).
    pub fn sum_percpu_u64(&self, key: &[u8]) -> Result<u64> {
        Ok(self
            .lookup_percpu(key)?
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
            .map(u64::from_ne_bytes)
            .sum())
    }

    /// Every key currently in the map.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.map.keys().collect()
    }

    /// Hands every element (key, value) of a hash map to `each`, read in batches of
    /// 1,024 (`BPF_MAP_LOOKUP_BATCH`, one system call each where
    /// [`entries`](Self::entries) takes two per element), and returns how many there
    /// were. Elements added or removed meanwhile may be seen or not. An error is
    /// returned, never taken for the map's end.
    pub fn for_each_entry(&self, each: impl FnMut(&[u8], &[u8])) -> Result<usize> {
        use std::os::fd::AsFd;
        for_each_entry(
            self.map.as_fd(),
            self.map.key_size() as usize,
            self.map.value_size() as usize,
            &self.name,
            each,
        )
    }

    /// Every element, key and value (an element deleted between the two reads is left
    /// out), by a walk of the keys: two system calls per element
    /// ([`for_each_entry`](Self::for_each_entry) reads in batches).
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.map
            .keys()
            .filter_map(|k| {
                let v = self.map.lookup(&k, MapFlags::ANY).ok().flatten()?;
                Some((k, v))
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// libbpf's internal maps (`.rodata`, `.bss`, `.data`, `.kconfig`) are set up per load
/// and never pinned.
fn is_internal_map(name: &str) -> bool {
    name.contains('.')
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(source) => Err(BpfError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn is_bpffs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as u64 == BPF_FS_MAGIC)
}

/// Checks that `pin_root` is (or will be created) on bpffs; mounts bpffs at /sys/fs/bpf
/// if `mount` and the pin root lies below it.
fn ensure_bpffs(pin_root: &Path, mount: bool) -> Result<()> {
    let existing = pin_root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing) {
        return Ok(());
    }
    let mount_point = Path::new(BPFFS_MOUNT);
    if !pin_root.starts_with(mount_point) {
        return Err(BpfError::BpffsNotMounted {
            path: existing.to_path_buf(),
            reason: format!("{} is not on bpffs", pin_root.display()),
        });
    }
    if !mount {
        return Err(BpfError::BpffsNotMounted {
            path: mount_point.to_path_buf(),
            reason: "bpffs is not mounted and mounting was disabled".to_string(),
        });
    }
    privilege::require("mounting bpffs", &[Capability::SysAdmin])?;
    std::fs::create_dir_all(mount_point).map_err(|source| BpfError::Io {
        path: mount_point.to_path_buf(),
        source,
    })?;
    rustix::mount::mount(
        "bpf",
        mount_point,
        "bpf",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| BpfError::BpffsNotMounted {
        path: mount_point.to_path_buf(),
        reason: format!("mount failed: {e}"),
    })
}

fn remove_pin_dir(dir: &Path, object: &str, log: &AuditLog) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(BpfError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut removed = 0;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let result = if path.is_dir() {
            remove_pin_dir(&path, object, log).map(|n| {
                removed += n;
            })
        } else {
            detach_if_link(&path, object, log);
            let r = std::fs::remove_file(&path).map_err(|source| BpfError::Io {
                path: path.clone(),
                source,
            });
            log.result(
                AuditAction::Unpin,
                object,
                &path.display().to_string(),
                "",
                &r,
            );
            r.map(|()| removed += 1)
        };
        result?;
    }
    std::fs::remove_dir(dir).map_err(|source| BpfError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(removed)
}

/// Detaches the link pinned at `path` at once (`BPF_LINK_DETACH`), so the program stops
/// acting when the pins are gone rather than when the kernel's deferred release of the
/// last reference runs: removing a link's last pin frees it from a workqueue, and a
/// packet or `connect()` right after `detach` could still meet the program. A running
/// daemon holding the same link stops enforcing through it too, which is what removing
/// its pins asks for.
fn detach_if_link(path: &Path, object: &str, log: &AuditLog) {
    let Ok(link) = libbpf_rs::Link::open(path) else {
        return;
    };
    // A map or program pin (EINVAL) or a link type without detach (EOPNOTSUPP, e.g. a
    // perf-event link) is left to the unpin, which releases it as before.
    if link.detach().is_ok() {
        log.record(
            AuditAction::Detach,
            object,
            &path.display().to_string(),
            Outcome::Ok,
            "link detached before unpin",
        );
    }
}

/// What libbpf prints while a load is being captured; `None` when nothing captures.
static CAPTURE: Mutex<Option<String>> = Mutex::new(None);
/// Serializes loads so each one's log is its own.
static LOAD_LOCK: Mutex<()> = Mutex::new(());
const CAPTURE_LIMIT: usize = 16 * 1024;

fn install_print_capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Info, print_callback)));
    });
}

fn print_callback(level: PrintLevel, message: String) {
    let Ok(mut capture) = CAPTURE.lock() else {
        return;
    };
    match capture.as_mut() {
        Some(buffer) => {
            buffer.push_str(&message);
            if buffer.len() > 4 * CAPTURE_LIMIT {
                let cut = buffer.len() - CAPTURE_LIMIT;
                let cut = (cut..buffer.len())
                    .find(|i| buffer.is_char_boundary(*i))
                    .unwrap_or(cut);
                buffer.drain(..cut);
            }
        }
        // Through the program's log (its format, its priority under systemd), not
        // straight to stderr, with one `libbpf: ` (most of its lines carry their own).
        None if level == PrintLevel::Warn => {
            let text = message.trim_end();
            let text = text.strip_prefix("libbpf: ").unwrap_or(text);
            tracing::warn!(target: "libbpf", "libbpf: {text}");
        }
        None => {}
    }
}

fn with_captured_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    let _serial = LOAD_LOCK.lock();
    if let Ok(mut capture) = CAPTURE.lock() {
        *capture = Some(String::new());
    }
    let value = f();
    let mut log = CAPTURE
        .lock()
        .ok()
        .and_then(|mut c| c.take())
        .unwrap_or_default();
    if log.len() > CAPTURE_LIMIT {
        let mut cut = log.len() - CAPTURE_LIMIT;
        while !log.is_char_boundary(cut) {
            cut += 1;
        }
        log.drain(..cut);
    }
    (value, log)
}

/// Entries read per BPF_MAP_LOOKUP_BATCH call (doubled when one hash bucket holds more).
const BATCH: usize = 1024;

/// Hands every entry (key, value) of the hash map `fd` (named `name` in errors) to
/// `each`, read in batches (BPF_MAP_LOOKUP_BATCH: one system call per [`BATCH`]
/// entries, where a walk of the keys takes two per entry, a million at a full table),
/// and returns how many there were. Entries added or removed meanwhile may be seen or
/// not, as with a walk of the keys.
///
/// Written against libbpf's C call rather than libbpf-rs's batch iterator, which ends
/// as at the table's end on any error (and takes a hash map's batch, which ends at a
/// bucket, shorter than asked while more remain, for the last): a count must not be
/// silently short.
pub(crate) fn for_each_entry(
    fd: std::os::fd::BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    name: &str,
    mut each: impl FnMut(&[u8], &[u8]),
) -> Result<usize> {
    use std::os::fd::AsRawFd;
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // The position between calls: for a hash map a bucket index the kernel writes.
    let (mut from, mut to) = (vec![0u8; key_size.max(8)], vec![0u8; key_size.max(8)]);
    let mut first = true;
    let mut batch = BATCH;
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    let mut total = 0;
    loop {
        keys.resize(key_size * batch, 0);
        values.resize(value_size * batch, 0);
        let mut count = u32::try_from(batch).unwrap_or(u32::MAX);
        let in_batch = if first {
            std::ptr::null_mut()
        } else {
            from.as_mut_ptr().cast()
        };
        // SAFETY: the descriptor is this map's, open for the call; `in_batch` is null
        // or `from` (as long as `to`, at least the kernel's 4-byte bucket index);
        // `to`, `keys` and `values` are writable buffers of at least the sizes the
        // kernel writes for `count` entries of this map (key_size and value_size
        // each); `count` and `opts` live across the call.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                fd.as_raw_fd(),
                in_batch,
                to.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let errno = (ret < 0).then_some(-ret);
        match errno {
            None | Some(libc::ENOENT) => {}
            Some(libc::EINTR) => continue,
            // One bucket holds more entries than the batch: a larger one.
            Some(libc::ENOSPC) if count == 0 => {
                batch *= 2;
                continue;
            }
            Some(e) => {
                return Err(BpfError::Map {
                    op: "lookup batch",
                    map: name.to_string(),
                    source: crate::error::KernelError::from(std::io::Error::from_raw_os_error(e)),
                })
            }
        }
        let count = count as usize;
        for (key, value) in keys
            .chunks_exact(key_size)
            .zip(values.chunks_exact(value_size))
            .take(count)
        {
            each(key, value);
        }
        total += count;
        if errno == Some(libc::ENOENT) {
            return Ok(total);
        }
        std::mem::swap(&mut from, &mut to);
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_maps_are_not_pinned() {
        assert!(is_internal_map("shield.rodata"));
        assert!(is_internal_map(".rodata"));
        assert!(!is_internal_map("ic_v4_fast"));
    }

    #[test]
    fn a_pin_root_off_bpffs_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Loader::builder()
            .pin_root(dir.path().join("pins"))
            .build()
            .expect_err("tmp is not bpffs");
        let msg = err.to_string();
        assert!(msg.contains("bpffs is not mounted at"), "{msg}");
        assert!(msg.contains("mount -t bpf bpf"), "{msg}");
    }
}
