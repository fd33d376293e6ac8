//! What the running kernel offers BPF programs, read from its BTF: the helpers of
//! `enum bpf_func_id`, the map types of `enum bpf_map_type`, the program types of
//! `enum bpf_prog_type` and the attach types of `enum bpf_attach_type`. The kernel's
//! own type information names exactly what it was built with (a backport counts, a
//! version string does not), and reading it loads nothing.
//!
//! The loader checks every object against it before the kernel sees the object: an
//! object that needs a helper or a map type this kernel lacks is refused with
//! [`BpfError::KernelLacks`](crate::BpfError::KernelLacks), which names each missing
//! piece and the programs or maps that need it, instead of the kernel's bare
//! `EINVAL` ("number of funcs in func_info doesn't match number of subprogs" is what
//! Linux 5.10 answers a program that calls `bpf_loop`).
//!
//! ```no_run
//! use ironclad_bpf::kernel::KernelBpf;
//!
//! if let Some(kernel) = KernelBpf::probe() {
//!     println!("bpf_loop: {}", kernel.has_helper("loop"));
//! }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

use libbpf_rs::btf::types::Enum;
use libbpf_rs::btf::Btf;

/// The running kernel's release, as `uname -r` prints it (`?` if unreadable).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".to_string(), |r| r.trim().to_string())
}

/// The BPF vocabulary of the running kernel (its BTF's enums).
#[derive(Debug, Clone, Default)]
pub struct KernelBpf {
    /// Helper names without `BPF_FUNC_` (`loop`, `map_lookup_elem`).
    helpers: BTreeSet<String>,
    /// Map type values of `enum bpf_map_type`.
    map_types: BTreeSet<u32>,
    /// Program type values of `enum bpf_prog_type`.
    prog_types: BTreeSet<u32>,
    /// Attach type names (`BPF_TCX_INGRESS`).
    attach_types: BTreeSet<String>,
}

/// The enumerators of `name` in `btf` (the `__MAX_…` sentinels left out: their value
/// is one past the last real member, which is a member of a newer kernel).
fn enumerators(btf: &Btf<'_>, name: &str) -> Vec<(String, u32)> {
    btf.type_by_name::<Enum<'_>>(name)
        .map(|e| {
            e.iter()
                .filter_map(|m| {
                    let name = m.name?.to_str()?;
                    (!name.starts_with("__")).then(|| (name.to_string(), m.value as u32))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl KernelBpf {
    /// The running kernel's, read once per process from `/sys/kernel/btf/vmlinux`;
    /// `None` when the kernel has no BTF (no CO-RE object loads there either, and
    /// libbpf says so).
    pub fn probe() -> Option<&'static Self> {
        static PROBED: OnceLock<Option<KernelBpf>> = OnceLock::new();
        PROBED
            .get_or_init(|| Btf::from_vmlinux().ok().map(|btf| Self::from_btf(&btf)))
            .as_ref()
    }

    /// The vocabulary a kernel's BTF states.
    fn from_btf(btf: &Btf<'_>) -> Self {
        Self {
            helpers: enumerators(btf, "bpf_func_id")
                .into_iter()
                .filter_map(|(n, _)| n.strip_prefix("BPF_FUNC_").map(str::to_string))
                .collect(),
            map_types: enumerators(btf, "bpf_map_type")
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            prog_types: enumerators(btf, "bpf_prog_type")
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            attach_types: enumerators(btf, "bpf_attach_type")
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
        }
    }

    /// Whether the kernel has helper `name` (without `bpf_`: `loop`).
    pub fn has_helper(&self, name: &str) -> bool {
        self.helpers.contains(name)
    }

    /// Whether the kernel has map type `ty` (its `enum bpf_map_type` value).
    pub fn has_map_type(&self, ty: u32) -> bool {
        self.map_types.contains(&ty)
    }

    /// Whether the kernel has program type `ty` (its `enum bpf_prog_type` value).
    pub fn has_prog_type(&self, ty: u32) -> bool {
        self.prog_types.contains(&ty)
    }

    /// Whether the kernel has attach type `name` (`BPF_TCX_INGRESS`).
    pub fn has_attach_type(&self, name: &str) -> bool {
        self.attach_types.contains(name)
    }
}

/// Something an object needs that the running kernel lacks, and who needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lack {
    /// What is missing: `the helper bpf_loop`, `the map type task_storage`.
    pub what: String,
    /// The first Linux release that has it, where this crate knows it (a hint for the
    /// operator; nothing is decided by it).
    pub since: Option<&'static str>,
    /// The programs (for a helper or program type) or maps (for a map type) that need
    /// it.
    pub needed_by: Vec<String>,
}

impl fmt::Display for Lack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.what)?;
        if let Some(since) = self.since {
            write!(f, " (Linux {since})")?;
        }
        // A helper every program calls would list them all (the Sentinel's 24): the
        // first three name the case, the count says the rest.
        match self.needed_by.len() {
            0..=4 => write!(f, ", needed by {}", self.needed_by.join(", ")),
            n => write!(
                f,
                ", needed by {} and {} more",
                self.needed_by[..3].join(", "),
                n - 3
            ),
        }
    }
}

/// The first release of the helpers this project's objects call that appeared after
/// 5.8 (what 5.10 lacks): for the message only.
const HELPER_SINCE: &[(&str, &str)] = &[
    ("task_storage_get", "5.11"),
    ("get_current_task_btf", "5.11"),
    ("loop", "5.17"),
    ("xdp_load_bytes", "5.18"),
    ("xdp_store_bytes", "5.18"),
    ("tcp_raw_gen_syncookie_ipv4", "6.0"),
    ("tcp_raw_gen_syncookie_ipv6", "6.0"),
    ("tcp_raw_check_syncookie_ipv4", "6.0"),
    ("tcp_raw_check_syncookie_ipv6", "6.0"),
];

/// As [`HELPER_SINCE`], for map types (libbpf's names).
const MAP_SINCE: &[(&str, &str)] = &[("task_storage", "5.11")];

/// `TaskStorage` → `task_storage` (libbpf-rs's variant names, as libbpf spells types).
fn snake(debug: &str) -> String {
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Adds `who` to the lack named `what`, creating it.
fn push(lacks: &mut Vec<Lack>, what: String, since: Option<&'static str>, who: &str) {
    match lacks.iter_mut().find(|l| l.what == what) {
        Some(lack) => {
            if !lack.needed_by.iter().any(|w| w == who) {
                lack.needed_by.push(who.to_string());
            }
        }
        None => lacks.push(Lack {
            what,
            since,
            needed_by: vec![who.to_string()],
        }),
    }
}

impl KernelBpf {
    /// What the opened `object` needs that this kernel lacks: the program types and
    /// helpers of each program it will load (the helper audit's `report` lists every
    /// call reachable from each program), and its maps' types. Empty when it has
    /// everything.
    pub(crate) fn lacks(
        &self,
        object: &libbpf_rs::OpenObject,
        report: &crate::audit::AuditReport,
    ) -> Vec<Lack> {
        let mut lacks = Vec::new();
        for prog in object.progs() {
            if !prog.autoload() {
                continue;
            }
            let name = prog.name().to_string_lossy().into_owned();
            let ty = prog.prog_type();
            if !self.has_prog_type(ty as u32) {
                let what = format!("the program type {}", snake(&format!("{ty:?}")));
                push(&mut lacks, what, None, &name);
            }
            let Some(calls) = report.programs.get(&name) else {
                continue;
            };
            for call in calls {
                let crate::audit::Callee::Helper(id) = call else {
                    continue;
                };
                let Some(helper) = crate::audit::helper_name(*id) else {
                    continue;
                };
                if !self.has_helper(helper) {
                    let since = HELPER_SINCE
                        .iter()
                        .find(|(h, _)| *h == helper)
                        .map(|(_, s)| *s);
                    push(&mut lacks, format!("the helper bpf_{helper}"), since, &name);
                }
            }
        }
        for map in object.maps() {
            let ty = map.map_type();
            if !self.has_map_type(u32::from(ty)) {
                let kind = snake(&format!("{ty:?}"));
                let since = MAP_SINCE.iter().find(|(m, _)| *m == kind).map(|(_, s)| *s);
                let name = map.name().to_string_lossy().into_owned();
                push(&mut lacks, format!("the map type {kind}"), since, &name);
            }
        }
        lacks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_read_as_libbpf_spells_them() {
        assert_eq!(snake("TaskStorage"), "task_storage");
        assert_eq!(snake("Lsm"), "lsm");
        assert_eq!(snake("Hash"), "hash");
    }

    #[test]
    fn a_lack_names_what_when_and_who() {
        let lack = Lack {
            what: "the helper bpf_loop".into(),
            since: Some("5.17"),
            needed_by: vec!["ic_connect4".into(), "ic_sendmsg4".into()],
        };
        assert_eq!(
            lack.to_string(),
            "the helper bpf_loop (Linux 5.17), needed by ic_connect4, ic_sendmsg4"
        );
        let many = Lack {
            what: "the map type task_storage".into(),
            since: None,
            needed_by: (0..24).map(|i| format!("p{i}")).collect(),
        };
        assert_eq!(
            many.to_string(),
            "the map type task_storage, needed by p0, p1, p2 and 21 more"
        );
    }

    #[test]
    fn the_hosts_kernel_has_what_every_supported_kernel_has() {
        // Every kernel with BTF (5.2+) has these, and every kernel this project runs
        // on has BTF.
        let kernel = KernelBpf::probe();
        assert!(kernel.is_some(), "no kernel BTF at /sys/kernel/btf/vmlinux");
        let kernel = kernel.cloned().unwrap_or_default();
        assert!(kernel.has_helper("map_lookup_elem"));
        assert!(kernel.has_map_type(1), "BPF_MAP_TYPE_HASH");
        assert!(kernel.has_prog_type(6), "BPF_PROG_TYPE_XDP");
        assert!(!kernel.has_helper("no_such_helper"));
        assert!(!kernel.has_map_type(u32::MAX));
    }
}
