//! The helper audit: every BPF program's calls are checked against an allowlist before
//! anything of its object reaches the kernel.
//!
//! The audit reads the object's ELF itself (the exact bytes handed to libbpf). For every
//! entry program (a global function in a non-`.text` executable section, which is what
//! libbpf loads) it walks the instructions, follows bpf-to-bpf calls and callback
//! references (`ld_imm64` of a function address) into `.text` subprograms, and collects:
//!
//! - helper calls (`call` with `src_reg == 0`, the helper id in `imm`);
//! - kfunc calls (`call` relocated against an undefined extern symbol).
//!
//! A call is refused when the helper is never allowed ([`never_allowed`]), unknown, or
//! not on the program's allowlist. Any refusal rejects the whole object.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind, SymbolKind};

use crate::error::{BpfError, Result};
use crate::object::EmbeddedObject;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/allowlist.rs"));
    include!(concat!(env!("OUT_DIR"), "/helpers.rs"));
}

const INSN_SIZE: usize = 8;
const BPF_JMP_CALL: u8 = 0x85;
const BPF_LD_IMM64: u8 = 0x18;
const PSEUDO_CALL: u8 = 1;

/// The name of helper `id` (without the `bpf_` prefix), if the kernel defines it.
pub fn helper_name(id: u32) -> Option<&'static str> {
    generated::HELPER_NAMES
        .binary_search_by_key(&id, |(i, _)| *i)
        .ok()
        .and_then(|at| generated::HELPER_NAMES.get(at))
        .map(|(_, name)| *name)
}

/// The id of helper `name` (without the `bpf_` prefix).
pub fn helper_id(name: &str) -> Option<u32> {
    generated::HELPER_NAMES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(id, _)| *id)
}

/// Helpers no Ironclad program may call, whatever any allowlist says:
/// `probe_write_user`, `override_return`, `send_signal`, `send_signal_thread`, `sys_bpf`.
pub fn never_allowed() -> &'static [&'static str] {
    generated::NEVER_ALLOWED
}

/// Something a BPF program calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Callee {
    /// A BPF helper by id (see [`helper_name`]).
    Helper(u32),
    /// A kernel function (kfunc) by name.
    Kfunc(String),
}

impl Callee {
    /// The allowlist spelling: the helper name without `bpf_`, or `kfunc:<name>`.
    pub fn allowlist_name(&self) -> String {
        match self {
            Self::Helper(id) => helper_name(*id).map_or_else(|| format!("#{id}"), str::to_string),
            Self::Kfunc(name) => format!("kfunc:{name}"),
        }
    }
}

impl fmt::Display for Callee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Helper(id) => match helper_name(*id) {
                Some(name) => write!(f, "bpf_{name} (helper {id})"),
                None => write!(f, "unknown helper {id}"),
            },
            Self::Kfunc(name) => write!(f, "kfunc {name}"),
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The helper is in [`never_allowed`].
    NeverAllowed,
    /// The program's allowlist does not list it.
    NotAllowlisted,
    /// The helper id is not one this kernel header knows.
    UnknownHelper,
}

/// One refused call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Violation {
    /// The entry program whose execution can reach the call.
    pub program: String,
    /// The function containing the call: the program itself or a subprogram.
    pub function: String,
    /// Index of the call instruction within `function`.
    pub insn_index: usize,
    /// What is called.
    pub callee: Callee,
    /// Why it is refused.
    pub reason: Reason,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "program `{}` calls {}", self.program, self.callee)?;
        if self.function == self.program {
            write!(f, " at instruction {}", self.insn_index)?;
        } else {
            write!(
                f,
                " at instruction {} of subprogram `{}`",
                self.insn_index, self.function
            )?;
        }
        match self.reason {
            Reason::NeverAllowed => write!(f, ", which is never allowed"),
            Reason::NotAllowlisted => write!(f, ", which its allowlist does not permit"),
            Reason::UnknownHelper => write!(f, ", which this kernel header does not define"),
        }
    }
}

/// Per-program allowlists of helpers and kfuncs.
///
/// [`Allowlist::builtin`] is the table compiled from `bpf-src/allowlist.txt`. An embedder
/// can read it and narrow it with [`revoke`](Self::revoke); there is no way to widen it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    entries: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Allowlist {
    /// The allowlist shipped with this build.
    pub fn builtin() -> Self {
        let entries = generated::BUILTIN_ALLOWLIST
            .iter()
            .map(|(object, program, callees)| {
                (
                    ((*object).to_string(), (*program).to_string()),
                    callees.iter().map(|c| (*c).to_string()).collect(),
                )
            })
            .collect();
        Self { entries }
    }

    /// What `object.program` may call (allowlist spellings), or `None` if it has no entry
    /// (and so may call nothing).
    pub fn allowed(&self, object: &str, program: &str) -> Option<&BTreeSet<String>> {
        self.entries.get(&(object.to_string(), program.to_string()))
    }

    /// Every entry: `((object, program), callees)`.
    pub fn entries(&self) -> impl Iterator<Item = (&(String, String), &BTreeSet<String>)> {
        self.entries.iter()
    }

    /// Removes `callee` (allowlist spelling) from `object.program`; returns whether it was
    /// there. Loading that program afterwards fails if it calls `callee`.
    pub fn revoke(&mut self, object: &str, program: &str, callee: &str) -> bool {
        self.entries
            .get_mut(&(object.to_string(), program.to_string()))
            .is_some_and(|set| set.remove(callee))
    }

    /// Removes `callee` from every program's entry; returns how many entries changed.
    pub fn revoke_everywhere(&mut self, callee: &str) -> usize {
        self.entries
            .values_mut()
            .filter_map(|set| set.remove(callee).then_some(()))
            .count()
    }

    fn permits(&self, object: &str, program: &str, callee: &Callee) -> Option<Reason> {
        if let Callee::Helper(id) = callee {
            match helper_name(*id) {
                None => return Some(Reason::UnknownHelper),
                Some(name) if never_allowed().contains(&name) => return Some(Reason::NeverAllowed),
                Some(_) => {}
            }
        }
        let allowed = self
            .allowed(object, program)
            .is_some_and(|set| set.contains(&callee.allowlist_name()));
        (!allowed).then_some(Reason::NotAllowlisted)
    }
}

/// What the audit found in one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReport {
    /// The object.
    pub object: String,
    /// Every entry program and the set of calls reachable from it.
    pub programs: BTreeMap<String, BTreeSet<Callee>>,
}

/// A function (entry program or subprogram) located in the ELF.
#[derive(Debug, Clone)]
struct Function {
    name: String,
    section: object::SectionIndex,
    /// First instruction index within the section.
    start: usize,
    /// One past the last instruction index within the section.
    end: usize,
}

/// A relocation target relevant to calls.
#[derive(Debug, Clone)]
enum Target {
    /// An undefined symbol (extern kfunc or extern variable).
    Extern(String),
    /// A defined symbol in section `section` at byte offset `value`.
    Defined {
        section: object::SectionIndex,
        value: u64,
    },
}

/// An executable section: its bytes and the call-relevant relocations by byte offset.
struct CodeSection<'data> {
    data: &'data [u8],
    relocs: HashMap<u64, Target>,
}

/// Audits `object` against `allowlist` without loading anything.
///
/// Returns the report if every call of every program is permitted, or
/// [`BpfError::AuditRejected`] listing every refused call.
pub fn audit_object(object: &EmbeddedObject, allowlist: &Allowlist) -> Result<AuditReport> {
    let name = object.name();
    let malformed = |reason: String| BpfError::MalformedObject {
        object: name.to_string(),
        reason,
    };
    let file = object::File::parse(object.elf()).map_err(|e| malformed(e.to_string()))?;

    let mut functions: Vec<Function> = Vec::new();
    for symbol in file.symbols() {
        if symbol.kind() != SymbolKind::Text {
            continue;
        }
        let Some(section) = symbol.section_index() else {
            continue;
        };
        let sym_name = symbol.name().map_err(|e| malformed(e.to_string()))?;
        let start = usize::try_from(symbol.address()).map_err(|e| malformed(e.to_string()))?;
        let size = usize::try_from(symbol.size()).map_err(|e| malformed(e.to_string()))?;
        if start % INSN_SIZE != 0 || size % INSN_SIZE != 0 {
            return Err(malformed(format!(
                "function `{sym_name}` is not instruction-aligned"
            )));
        }
        functions.push(Function {
            name: sym_name.to_string(),
            section,
            start: start / INSN_SIZE,
            end: (start + size) / INSN_SIZE,
        });
    }

    let mut sections: HashMap<object::SectionIndex, CodeSection<'_>> = HashMap::new();
    for section in file.sections() {
        if section.kind() != SectionKind::Text {
            continue;
        }
        let data = section.data().map_err(|e| malformed(e.to_string()))?;
        let mut relocs = HashMap::new();
        for (offset, reloc) in section.relocations() {
            let RelocationTarget::Symbol(sym_index) = reloc.target() else {
                continue;
            };
            let sym = file
                .symbol_by_index(sym_index)
                .map_err(|e| malformed(e.to_string()))?;
            let target = match sym.section_index() {
                Some(section) if !sym.is_undefined() => Target::Defined {
                    section,
                    value: sym.address(),
                },
                _ => Target::Extern(
                    sym.name()
                        .map_err(|e| malformed(e.to_string()))?
                        .to_string(),
                ),
            };
            relocs.insert(offset, target);
        }
        sections.insert(section.index(), CodeSection { data, relocs });
    }

    let text_index = file.section_by_name(".text").map(|s| s.index());
    let entries: Vec<&Function> = functions
        .iter()
        .filter(|f| Some(f.section) != text_index && sections.contains_key(&f.section))
        .collect();

    let mut report = AuditReport {
        object: name.to_string(),
        programs: BTreeMap::new(),
    };
    let mut violations = Vec::new();
    for entry in entries {
        let mut calls = BTreeSet::new();
        let mut seen: HashSet<(object::SectionIndex, usize)> = HashSet::new();
        let mut queue: VecDeque<&Function> = VecDeque::from([entry]);
        while let Some(function) = queue.pop_front() {
            if !seen.insert((function.section, function.start)) {
                continue;
            }
            let CodeSection { data, relocs } = sections
                .get(&function.section)
                .ok_or_else(|| malformed(format!("`{}` is not in code", function.name)))?;
            let mut idx = function.start;
            while idx < function.end {
                let at = idx * INSN_SIZE;
                let insn = data.get(at..at + INSN_SIZE).ok_or_else(|| {
                    malformed(format!("`{}` runs past its section", function.name))
                })?;
                let code = insn[0];
                let src_reg = insn[1] >> 4;
                let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
                let reloc = relocs.get(&(at as u64));
                let mut callee_fn: Option<(object::SectionIndex, i64)> = None;
                if code == BPF_JMP_CALL {
                    let callee = if src_reg == 0 {
                        Some(Callee::Helper(imm as u32))
                    } else if src_reg == PSEUDO_CALL {
                        match reloc {
                            Some(Target::Extern(kfunc)) => Some(Callee::Kfunc(kfunc.clone())),
                            Some(Target::Defined { section, value }) => {
                                callee_fn = Some((
                                    *section,
                                    (*value / INSN_SIZE as u64) as i64 + i64::from(imm) + 1,
                                ));
                                None
                            }
                            None => {
                                callee_fn =
                                    Some((function.section, idx as i64 + i64::from(imm) + 1));
                                None
                            }
                        }
                    } else {
                        return Err(malformed(format!(
                            "`{}` instruction {}: call with src_reg {src_reg}",
                            function.name,
                            idx - function.start
                        )));
                    };
                    if let Some(callee) = callee {
                        if let Some(reason) = allowlist.permits(name, &entry.name, &callee) {
                            violations.push(Violation {
                                program: entry.name.clone(),
                                function: function.name.clone(),
                                insn_index: idx - function.start,
                                callee: callee.clone(),
                                reason,
                            });
                        }
                        calls.insert(callee);
                    }
                } else if code == BPF_LD_IMM64 {
                    if let Some(Target::Defined { section, value }) = reloc {
                        if sections.contains_key(section) {
                            callee_fn = Some((
                                *section,
                                ((*value as i64) + i64::from(imm)) / INSN_SIZE as i64,
                            ));
                        }
                    }
                    idx += 1; // ld_imm64 occupies two slots
                }
                if let Some((section, target)) = callee_fn {
                    let target = usize::try_from(target).map_err(|_| {
                        malformed(format!("`{}` calls before its section", function.name))
                    })?;
                    let callee = functions
                        .iter()
                        .find(|f| f.section == section && f.start <= target && target < f.end)
                        .ok_or_else(|| {
                            malformed(format!(
                                "`{}` calls instruction {target}, which is in no function",
                                function.name
                            ))
                        })?;
                    queue.push_back(callee);
                }
                idx += 1;
            }
        }
        report.programs.insert(entry.name.clone(), calls);
    }

    if violations.is_empty() {
        Ok(report)
    } else {
        Err(BpfError::AuditRejected {
            object: name.to_string(),
            violations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_table_comes_from_the_kernel_header() {
        assert_eq!(helper_name(1), Some("map_lookup_elem"));
        assert_eq!(helper_name(36), Some("probe_write_user"));
        assert_eq!(helper_id("sys_bpf"), Some(166));
        assert_eq!(helper_name(0), Some("unspec"));
        assert_eq!(helper_name(100_000), None);
    }

    #[test]
    fn never_allowed_helpers_exist_in_the_kernel_table() {
        for name in never_allowed() {
            assert!(helper_id(name).is_some(), "{name}");
        }
        assert_eq!(never_allowed().len(), 5);
    }

    #[test]
    fn builtin_allowlist_never_contains_forbidden_helpers() {
        let list = Allowlist::builtin();
        assert!(list.entries().count() > 0);
        for (_, callees) in list.entries() {
            for forbidden in never_allowed() {
                assert!(!callees.contains(*forbidden));
            }
        }
    }

    #[test]
    fn revoke_narrows_and_cannot_widen() {
        let mut list = Allowlist::builtin();
        assert!(list.revoke("shield", "ic_shield_xdp", "map_lookup_elem"));
        assert!(!list.revoke("shield", "ic_shield_xdp", "map_lookup_elem"));
        assert!(list
            .allowed("shield", "ic_shield_xdp")
            .is_some_and(|s| !s.contains("map_lookup_elem")));
        assert!(!list.revoke("shield", "no_such_program", "map_lookup_elem"));
    }

    #[test]
    fn shield_passes_the_builtin_audit() {
        let report = audit_object(crate::object::shield(), &Allowlist::builtin())
            .expect("shield passes its audit");
        let calls = report
            .programs
            .get("ic_shield_xdp")
            .expect("program audited");
        assert!(calls.contains(&Callee::Helper(1)), "{calls:?}");
    }

    #[test]
    fn a_revoked_helper_rejects_the_shield() {
        let mut list = Allowlist::builtin();
        list.revoke("shield", "ic_shield_xdp", "map_lookup_elem");
        let err = audit_object(crate::object::shield(), &list).expect_err("must be refused");
        let BpfError::AuditRejected { violations, .. } = &err else {
            panic!("unexpected error {err}");
        };
        assert!(violations
            .iter()
            .all(|v| v.reason == Reason::NotAllowlisted && v.callee == Callee::Helper(1)));
        assert!(
            err.to_string().contains("bpf_map_lookup_elem (helper 1)"),
            "{err}"
        );
    }

    #[test]
    fn forbidden_helpers_are_found_directly_and_in_subprograms() {
        let object = crate::object::test_objects::audit_forbidden();
        let err = audit_object(object, &Allowlist::builtin()).expect_err("must be refused");
        let BpfError::AuditRejected { violations, .. } = err else {
            panic!("unexpected error");
        };
        let write = violations
            .iter()
            .find(|v| v.callee == Callee::Helper(36))
            .expect("probe_write_user found");
        assert_eq!(write.program, "ic_test_write_user");
        assert_eq!(write.function, "ic_test_write_user");
        assert_eq!(write.reason, Reason::NeverAllowed);
        // The reported index points at exactly that call instruction in the ELF.
        let file = object::File::parse(object.elf()).expect("elf");
        let section = file.section_by_name("raw_tp/sys_enter").expect("section");
        let data = section.data().expect("data");
        let at = write.insn_index * INSN_SIZE;
        assert_eq!(&data[at..at + INSN_SIZE], &[0x85, 0, 0, 0, 36, 0, 0, 0]);
        let signal = violations
            .iter()
            .find(|v| {
                helper_name(match v.callee {
                    Callee::Helper(id) => id,
                    _ => 0,
                }) == Some("send_signal")
            })
            .expect("send_signal found through the subprogram");
        assert_eq!(signal.program, "ic_test_signal");
        assert_eq!(signal.function, "ic_test_hidden_signal");
        assert_eq!(signal.reason, Reason::NeverAllowed);
        assert!(!violations.iter().any(|v| v.program == "ic_test_benign"));
    }

    #[test]
    fn garbage_is_a_malformed_object_not_a_panic() {
        static JUNK: EmbeddedObject = EmbeddedObject::new("junk", b"\x7fELF not really", None);
        let err = audit_object(&JUNK, &Allowlist::builtin()).expect_err("junk");
        assert!(matches!(err, BpfError::MalformedObject { .. }), "{err}");
    }
}
