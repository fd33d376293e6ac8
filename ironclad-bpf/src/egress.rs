//! The identity firewall: per-process egress policy at `connect()` and `sendmsg()`
//! (`bpf-src/egress.bpf.c`).
//!
//! The kernel decides who is connecting by the executable the process runs (device,
//! inode and modification time of the file, tracked on exec/fork/exit and seeded from
//! /proc),
//! its comm, uid and cgroup; a denied `connect()` fails with EPERM before a SYN leaves,
//! a denied datagram is never sent. Policies are swapped atomically: the new rule set is
//! written beside the live one and a single generation flip makes it live.
//!
//! ```no_run
//! use std::path::Path;
//! use ironclad_bpf::{EgressFirewall, Loader};
//! use ironclad_policy::config::compile_file;
//!
//! let loader = Loader::builder().build()?;
//! let policy = compile_file(Path::new("/etc/ironclad/policy.yaml"))?;
//! let firewall = EgressFirewall::load(&loader)?;
//! let report = firewall.replace(policy.egress.as_ref().expect("an egress section"))?;
//! println!("{} rules live", report.rules);
//! // The whole host; detached when `attached` is dropped (`attach_pinned`: it stays).
//! let attached = firewall.attach(Path::new("/sys/fs/cgroup"))?;
//! for (rule_id, hits) in firewall.rule_counters()? {
//!     println!("rule {rule_id}: {hits}");
//! }
//! # drop(attached);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The API has the Shield's shape: `replace(&self)` returns a report, `attach` returns
//! a handle ([`CgroupAttachment`], like [`XdpAttachment`](crate::XdpAttachment)) whose
//! drop detaches what is not pinned.
//!
//! # Minimum kernel
//! cgroup `connect`/`sendmsg` hooks through `bpf_link`: 5.7; BTF tracepoints: 5.5;
//! `bpf_loop`: 5.17.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ironclad_core::abi::{
    egress_match, DnsTotal, EgressBucket, EgressConfig, EgressDstKey, EgressDstLengths,
    EgressDstOwner, EgressTotal, FwAddrKey, FwSummary, ProcExe, ProcInfo, EGRESS_DST_HASH_LENGTHS,
    EGRESS_F_DOMAINS, EGRESS_F_DST_FILTER, EGRESS_F_DST_HASH, EGRESS_NO_CLASS,
    EGRESS_OWNERS_SEVERAL, FW_DIM_DPORT, FW_DIM_DST,
};
use ironclad_policy::firewall::{Direction, PacketProto};

use crate::classes::{self, prefix_mask, ClassImages};
use ironclad_events::{Event, Fanout};
use ironclad_policy::egress::{exe_identity, CompiledEgress};
use libbpf_rs::Link;

use crate::error::{BpfError, Result};
use crate::events::{EventReader, EventSource};
use crate::loader::{LoadedObject, Loader};
use crate::names;

mod domains;

pub use domains::{
    name_hash, DeniedAddress, DomainStatus, DomainSweep, FeedCounters, OpenedAddress,
};

const HOOKS: &[&str] = &[
    names::egress::ic_connect4,
    names::egress::ic_connect6,
    names::egress::ic_sendmsg4,
    names::egress::ic_sendmsg6,
];

/// The DNS of the sockets the hooks mark (rules by name, domain feeds): attached to the
/// hooks' cgroups only while the live policy uses names, since they run on every packet
/// of the cgroup's sockets.
const DNS_HOOKS: &[&str] = &[names::egress::ic_dns_out, names::egress::ic_dns_in];

/// The DNS programs' links on one cgroup, by program name, each with what
/// [`EgressFirewall::verify`] compares the kernel's view with (empty: not attached).
type DnsLinks = Vec<(&'static str, Link, crate::attach::LinkWatch)>;

/// The DNS programs' links, per cgroup the hooks were attached to.
#[derive(Debug, Default)]
struct DnsHooks {
    /// Each cgroup (and whether its hooks are pinned), with its DNS links when attached.
    cgroups: Vec<(PathBuf, bool, DnsLinks)>,
    /// The live policy uses names.
    wanted: bool,
}
const TRACEPOINTS: &[&str] = crate::procs::TRACEPOINTS;

/// Executable paths, from /proc at load and from every policy since; shared with the
/// event source's enrichment, so it names executables of later policies too.
#[derive(Debug, Default)]
struct Known {
    /// By the kernel's identity (file and modification time), for the process table.
    by_id: HashMap<ProcExe, String>,
    /// By file (device, inode), what decision events carry.
    by_file: HashMap<(u32, u64), String>,
}

impl Known {
    fn insert(&mut self, id: ProcExe, path: String) {
        self.by_file.insert((id.dev, id.ino), path.clone());
        self.by_id.insert(id, path);
    }
}

type KnownExes = Arc<Mutex<Known>>;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A loaded identity firewall.
#[derive(Debug)]
pub struct EgressFirewall {
    object: LoadedObject,
    /// The process-tracking tracepoints (pinned by `attach_pinned`).
    tracepoints: Mutex<Vec<Link>>,
    known_exes: KnownExes,
    /// Serialises policy swaps: each flips the generation the other reads.
    edit: Mutex<()>,
    /// The domain policy's user space state (hash key, pattern bits, name table).
    domains: Arc<Mutex<domains::DomainState>>,
    /// The DNS programs' links.
    dns_hooks: Mutex<DnsHooks>,
}

/// A rule's identity across reloads: a stable hash (SipHash-1-3, fixed key) of its
/// summary and of which of the rules with that summary it is; never 0 (an unused id).
fn rule_key(summary: &str, nth: u32) -> u64 {
    use std::hash::Hasher;
    let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0x6972_6f6e, 0x636c_6164);
    hasher.write(summary.as_bytes());
    hasher.write(&nth.to_le_bytes());
    hasher.finish().max(1)
}

/// What [`EgressFirewall::replace`] made live.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EgressReport {
    /// Rules of the live policy.
    pub rules: usize,
    /// Executables the policy names (their paths now name events too).
    pub executables: usize,
    /// The rule set now live (0 or 1): the other one takes the next policy.
    pub generation: u8,
}

/// The identity firewall's hooks on one cgroup, from [`EgressFirewall::attach`] or
/// [`EgressFirewall::attach_pinned`]. Dropping it detaches hooks that are not pinned;
/// [`detach`](Self::detach) also removes pinned ones.
#[derive(Debug)]
#[must_use = "dropping a CgroupAttachment detaches the hooks that are not pinned"]
pub struct CgroupAttachment {
    links: Vec<(&'static str, Link)>,
    /// One per link: what [`EgressFirewall::verify`] compares the kernel's view with.
    watch: Vec<crate::attach::LinkWatch>,
    cgroup: PathBuf,
    log: crate::auditlog::AuditLog,
}

/// A watch for each link, as it is now.
fn watches(links: &[(&'static str, Link)]) -> Vec<crate::attach::LinkWatch> {
    links
        .iter()
        .map(|(_, l)| crate::attach::LinkWatch::of(l))
        .collect()
}

impl CgroupAttachment {
    /// The cgroup v2 directory the hooks are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Where the hooks are pinned (empty when they are not).
    pub fn pin_paths(&self) -> Vec<PathBuf> {
        self.links
            .iter()
            .filter_map(|(_, link)| link.pin_path())
            .collect()
    }

    /// The links' kernel ids (as `bpftool link show` lists them), e.g. for the
    /// Sentinel to protect them.
    pub fn link_ids(&self) -> Result<Vec<u32>> {
        self.links
            .iter()
            .map(|(_, link)| crate::sentinel::link_id(link))
            .collect()
    }

    /// Detaches every hook now, removing its pin if it has one.
    pub fn detach(self) -> Result<()> {
        for (name, mut link) in self.links {
            if let Some(path) = link.pin_path() {
                let result = link.unpin();
                self.log.result(
                    crate::auditlog::AuditAction::Unpin,
                    EgressFirewall::OBJECT,
                    &path.display().to_string(),
                    name,
                    &result,
                );
                result.map_err(|e| BpfError::Pin {
                    what: format!("link {name}"),
                    path,
                    reason: e.to_string(),
                    source: Some(crate::error::KernelError::from_libbpf(e)),
                })?;
            }
            let result = link.detach();
            self.log.result(
                crate::auditlog::AuditAction::Detach,
                EgressFirewall::OBJECT,
                &format!("{name} on {}", self.cgroup.display()),
                "",
                &result,
            );
            result.map_err(|source| BpfError::Attach {
                program: name.to_string(),
                target: format!("detach from cgroup {}", self.cgroup.display()),
                source: crate::error::KernelError::from_libbpf(source),
            })?;
        }
        Ok(())
    }
}

impl EgressFirewall {
    /// Name of the BPF object (and of its pin directory).
    pub const OBJECT: &'static str = "egress";

    /// Audits and loads the programs (maps pinned, so a restart keeps the process table
    /// and the policy), starts tracking processes and seeds the table from /proc.
    pub fn load(loader: &Loader) -> Result<Self> {
        let object = loader.load(crate::object::egress())?;
        // Track first, then seed, so no process started meanwhile is missed.
        let tracepoints = object.attach_tracepoints(TRACEPOINTS)?;
        let mut known = Known::default();
        for (id, path) in crate::procs::seed(&object)? {
            known.insert(id, path);
        }
        Ok(Self {
            object,
            tracepoints: Mutex::new(tracepoints),
            known_exes: Arc::new(Mutex::new(known)),
            edit: Mutex::new(()),
            domains: Arc::new(Mutex::new(domains::DomainState::default())),
            dns_hooks: Mutex::new(DnsHooks::default()),
        })
    }

    /// What the process table says about process `pid`: its executable (with the path
    /// when known), parent, uid, gid, cgroup id and comm as of its exec (or of the
    /// firewall's start, for processes that were already running).
    pub fn process(&self, pid: u32) -> Result<Option<ProcessEntry>> {
        let bytes = self
            .object
            .map(crate::procs::TABLE)?
            .lookup(&pid.to_ne_bytes())?;
        Ok(bytes.and_then(|b| ProcInfo::from_bytes(&b)).map(|info| {
            let len = info.comm.iter().position(|c| *c == 0).unwrap_or(16);
            ProcessEntry {
                exe_path: locked(&self.known_exes).by_id.get(&info.exe).cloned(),
                comm: String::from_utf8_lossy(&info.comm[..len]).into_owned(),
                info,
            }
        }))
    }

    /// The live configuration.
    pub fn config(&self) -> Result<EgressConfig> {
        Ok(self
            .object
            .map(names::egress::ic_egress_config)?
            .lookup(&0u32.to_ne_bytes())?
            .and_then(|b| EgressConfig::from_bytes(&b))
            .unwrap_or_default())
    }

    /// Makes `policy` live atomically: its rules and index are written to the rule set
    /// that is not live, then one write of the configuration flips the generation, so
    /// every decision sees either the old policy or the new one. Rule counters restart
    /// at zero.
    pub fn replace(&self, policy: &CompiledEgress) -> Result<EgressReport> {
        let _span =
            tracing::info_span!("ironclad.egress.replace", rules = policy.rules.len()).entered();
        let _edit = locked(&self.edit);
        let live = self.config()?;
        let next = 1 - (live.generation & 1);
        let (rules, index) = if next == 0 {
            (
                names::egress::ic_egress_rules0,
                names::egress::ic_egress_index0,
            )
        } else {
            (
                names::egress::ic_egress_rules1,
                names::egress::ic_egress_index1,
            )
        };
        let index_map = self.object.map(index)?;
        for key in index_map.keys() {
            index_map.delete(&key)?;
        }
        // The spare generation's classes and bit-to-slot entries, from an earlier policy.
        let class_maps = (
            self.object.map(names::egress::ic_egress_addr)?,
            self.object.map(names::egress::ic_egress_ports)?,
            self.object.map(names::egress::ic_egress_words)?,
            self.object.map(names::egress::ic_egress_summaries)?,
        );
        let generation = u8::try_from(next).unwrap_or(0);
        classes::clear_slot(
            generation,
            &class_maps.0,
            &class_maps.1,
            &class_maps.2,
            &class_maps.3,
        )?;
        let slots_map = self.object.map(names::egress::ic_egress_slots)?;
        let stale: Vec<Vec<u8>> = slots_map
            .keys()
            .into_iter()
            .filter(|k| {
                k.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_ne_bytes)
                    .is_some_and(|k| k >> 31 == next)
            })
            .collect();
        slots_map.delete_many(stale.iter().map(Vec::as_slice))?;
        let dst_map = self.object.map(names::egress::ic_egress_dst)?;
        let dst_trie = self.object.map(names::egress::ic_egress_dst_trie)?;
        let clear_dst = || -> Result<()> {
            let stale: Vec<Vec<u8>> = dst_map
                .keys()
                .into_iter()
                .filter(|k| {
                    EgressDstKey::from_bytes(k).is_some_and(|k| u32::from(k.generation) == next)
                })
                .collect();
            dst_map.delete_many(stale.iter().map(Vec::as_slice))?;
            let stale: Vec<Vec<u8>> = dst_trie
                .keys()
                .into_iter()
                .filter(|k| FwAddrKey::from_bytes(k).is_some_and(|k| u32::from(k.tag[0]) == next))
                .collect();
            dst_trie
                .delete_many(stale.iter().map(Vec::as_slice))
                .map(|_| ())
        };
        clear_dst()?;

        let rule_map = self.object.map(rules)?;
        let images: Vec<([u8; 4], Vec<u8>)> = policy
            .entries
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let slot = u32::try_from(i + 1).unwrap_or(u32::MAX);
                (slot.to_ne_bytes(), r.to_bytes().to_vec())
            })
            .collect();
        rule_map.update_many(images.iter().map(|(k, v)| (&k[..], &v[..])))?;

        // Each identity key's classifier, tagged with the key's id (see struct
        // ic_egress_bucket in ironclad.h).
        let mut class_images = ClassImages::default();
        let mut bit_slots: Vec<([u8; 4], [u8; 4])> = Vec::new();
        let mut buckets: Vec<([u8; 32], [u8; EgressBucket::SIZE])> = Vec::new();
        let mut first_class = 0u32;
        for (id, (key, slots)) in policy.index.iter().enumerate() {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            let [_, _, hi, lo] = id.to_be_bytes();
            buckets.push((
                key.to_bytes(),
                EgressBucket {
                    id,
                    rules: u32::try_from(slots.len()).unwrap_or(u32::MAX),
                }
                .to_bytes(),
            ));
            let Some(classifier) = policy.classifiers.get(key) else {
                continue;
            };
            for (pidx, proto) in [PacketProto::Tcp, PacketProto::Udp, PacketProto::Other]
                .into_iter()
                .enumerate()
            {
                let Some(bucket) = classifier.buckets.get(&(Direction::Out, proto)) else {
                    continue;
                };
                let pidx = u8::try_from(pidx).unwrap_or(0);
                class_images.push_addresses(
                    [generation, pidx | FW_DIM_DST << 2, hi, lo],
                    first_class,
                    &bucket.dst,
                    true,
                    &classifier.classes,
                );
                class_images.push_pieces(
                    [generation, pidx | FW_DIM_DPORT << 2, hi, lo],
                    first_class,
                    &bucket.dport.pieces,
                    &classifier.classes,
                );
                for (bit, position) in bucket.rules.iter().enumerate() {
                    if let Some(slot) = slots.get(*position) {
                        let bit = u32::try_from(bit).unwrap_or(u32::MAX);
                        let k = EgressBucket::slot_key(next, u32::from(pidx), id, bit);
                        bit_slots.push((k.to_ne_bytes(), u32::from(*slot).to_ne_bytes()));
                    }
                }
            }
            // Class ids are the classifier's own, shifted past the keys before it.
            class_images.push_classes(generation, first_class, &classifier.classes);
            first_class = first_class
                .saturating_add(u32::try_from(classifier.classes.len()).unwrap_or(u32::MAX));
        }
        // Every prefix the rules name, when every rule names some, with the key that
        // owns it: a connection outside them all is decided by the default without any
        // key lookup, one inside a prefix only one key's rules name without that key's
        // index entry and destination trie. One prefix length (a feed's /32s, networks
        // of one size): a hash, one lookup however many; lengths mixed: the trie.
        let filter = destination_filter(policy);
        let hashed = filter
            .as_deref()
            .and_then(|f| dst_hash_images(generation, f));
        let owners: Vec<[u8; EgressDstOwner::SIZE]> = filter
            .iter()
            .flatten()
            .map(|(_, _, owner)| owner.to_bytes())
            .collect();
        let lengths_map = self.object.map(names::egress::ic_egress_dst_lengths)?;
        let write = || -> Result<()> {
            class_images.write(&class_maps.0, &class_maps.1, &class_maps.2, &class_maps.3)?;
            classes::write_all(&slots_map, &bit_slots)?;
            classes::write_all(&index_map, &buckets)?;
            let lengths = match (&filter, &hashed) {
                (_, Some((keys, lengths))) => {
                    dst_map.update_many(keys.iter().zip(&owners).map(|(k, v)| (&k[..], &v[..])))?;
                    *lengths
                }
                (Some(filter), None) => {
                    let keys = dst_trie_images(generation, filter);
                    dst_trie
                        .update_many(keys.iter().zip(&owners).map(|(k, v)| (&k[..], &v[..])))?;
                    EgressDstLengths::default()
                }
                (None, None) => EgressDstLengths::default(),
            };
            lengths_map.update(&next.to_ne_bytes(), &lengths.to_bytes())
        };
        if let Err(e) = write() {
            let _ = clear_dst();
            // The live generation was never touched; give the spare one's memory back.
            let _ = classes::clear_slot(
                generation,
                &class_maps.0,
                &class_maps.1,
                &class_maps.2,
                &class_maps.3,
            );
            return Err(e);
        }
        // Names: the table questions are matched against, the pattern bits, the domain
        // rules of the spare generation, the DNS settings.
        let domains_live = domains::apply(&self.object, &mut locked(&self.domains), policy, next)?;
        self.carry_counters(policy)?;
        let config = EgressConfig {
            // A count, not the rule set alone (that is its low bit): the kernel's verdict
            // memo is keyed by it, so no verdict of an earlier policy is ever found.
            generation: live.generation.wrapping_add(1),
            default_action: policy.default_action,
            kinds: policy.index.keys().fold(0u8, |kinds, key| {
                kinds | 1u8.checked_shl(u32::from(key.kind)).unwrap_or(0)
            }),
            needs: policy.entries.iter().fold(0u8, |needs, rule| {
                let read = rule.match_
                    & (egress_match::EXE
                        | egress_match::COMM
                        | egress_match::CGROUP
                        | egress_match::ANCESTOR);
                needs | u8::try_from(read).unwrap_or(u8::MAX)
            }),
            flags: match (&filter, &hashed) {
                (None, _) => 0,
                (Some(_), None) => EGRESS_F_DST_FILTER,
                (Some(_), Some(_)) => EGRESS_F_DST_FILTER | EGRESS_F_DST_HASH,
            } | if domains_live { EGRESS_F_DOMAINS } else { 0 },
            rate_per_sec: policy.rate_limit.map_or(0, |r| r.per_second),
            rate_burst: policy.rate_limit.map_or(0, |r| r.burst),
        };
        self.object
            .map(names::egress::ic_egress_config)?
            .update(&0u32.to_ne_bytes(), &config.to_bytes())?;
        {
            let mut hooks = locked(&self.dns_hooks);
            hooks.wanted = domains_live;
            self.sync_dns_hooks(&mut hooks)?;
        }
        let mut known = locked(&self.known_exes);
        let exe_paths = self.object.map(names::egress::ic_dns_exe_paths)?;
        for (id, path) in &policy.executables {
            known.insert(*id, path.display().to_string());
            let label = ironclad_core::abi::DnsLabel::new(&path.display().to_string(), false);
            exe_paths.update(&id.to_bytes(), &label.to_bytes())?;
        }
        Ok(EgressReport {
            rules: policy.rules.len(),
            executables: policy.executables.len(),
            generation: u8::try_from(next).unwrap_or(0),
        })
    }

    /// Attaches the four hooks to the cgroup v2 directory `cgroup` (and so to every
    /// process in it and below). Detached when the returned handle is dropped. While the
    /// live policy has rules by name or domain feeds, the DNS programs (cgroup_skb
    /// egress and ingress) are attached there too, held by the firewall.
    pub fn attach(&self, cgroup: &Path) -> Result<CgroupAttachment> {
        let dir = std::fs::File::open(cgroup).map_err(|source| BpfError::Io {
            path: cgroup.to_path_buf(),
            source,
        })?;
        let mut links = Vec::with_capacity(HOOKS.len());
        for name in HOOKS {
            let result = self.object.program(name)?.attach_cgroup(dir.as_raw_fd());
            self.object.audit_log().result(
                crate::auditlog::AuditAction::Attach,
                Self::OBJECT,
                &format!("{name} on {}", cgroup.display()),
                "",
                &result,
            );
            let link = result.map_err(|source| BpfError::Attach {
                program: (*name).to_string(),
                target: format!("cgroup {}", cgroup.display()),
                source: crate::error::KernelError::from_libbpf(source),
            })?;
            links.push((*name, link));
        }
        let attachment = CgroupAttachment {
            watch: watches(&links),
            links,
            cgroup: cgroup.to_path_buf(),
            log: self.object.audit_log().clone(),
        };
        self.add_dns_cgroup(cgroup, false)?;
        Ok(attachment)
    }

    /// Records `cgroup` as one the hooks are on and attaches the DNS programs there when
    /// the live policy uses names.
    fn add_dns_cgroup(&self, cgroup: &Path, pinned: bool) -> Result<()> {
        let mut hooks = locked(&self.dns_hooks);
        match hooks.cgroups.iter_mut().find(|(c, _, _)| c == cgroup) {
            Some(entry) => entry.1 |= pinned,
            None => hooks
                .cgroups
                .push((cgroup.to_path_buf(), pinned, Vec::new())),
        }
        self.sync_dns_hooks(&mut hooks)
    }

    /// Attaches the DNS programs to every recorded cgroup when names are used (adopting
    /// pinned links of an earlier run, pinning them with pinned hooks), detaches them
    /// (and removes their pins) when not.
    fn sync_dns_hooks(&self, hooks: &mut DnsHooks) -> Result<()> {
        let wanted = hooks.wanted;
        let pin_dir = self.object.pin_dir().to_path_buf();
        for (cgroup, pinned, links) in &mut hooks.cgroups {
            if wanted && links.is_empty() {
                let dir = std::fs::File::open(&*cgroup).map_err(|source| BpfError::Io {
                    path: cgroup.clone(),
                    source,
                })?;
                for name in DNS_HOOKS {
                    let pin = pin_dir.join(format!("link_{name}"));
                    let prog = self.object.program(name)?;
                    let link = if *pinned && pin.exists() {
                        let mut link = Link::open(&pin).map_err(|e| BpfError::Pin {
                            what: format!("link {name}"),
                            path: pin.clone(),
                            reason: e.to_string(),
                            source: Some(crate::error::KernelError::from_libbpf(e)),
                        })?;
                        link.update_prog(&prog).map_err(|e| BpfError::Pin {
                            what: format!("link {name}"),
                            path: pin.clone(),
                            reason: format!("cannot swap the program into it: {e}"),
                            source: Some(crate::error::KernelError::from_libbpf(e)),
                        })?;
                        link
                    } else {
                        let result = prog.attach_cgroup(dir.as_raw_fd());
                        self.object.audit_log().result(
                            crate::auditlog::AuditAction::Attach,
                            Self::OBJECT,
                            &format!("{name} on {}", cgroup.display()),
                            "rules by name are live",
                            &result,
                        );
                        result.map_err(|source| BpfError::Attach {
                            program: (*name).to_string(),
                            target: format!("cgroup {}", cgroup.display()),
                            source: crate::error::KernelError::from_libbpf(source),
                        })?
                    };
                    let watch = crate::attach::LinkWatch::of(&link);
                    links.push((*name, link, watch));
                }
            }
            if wanted && *pinned {
                // Attached before the hooks were pinned (attach_pinned attaches, then
                // pins): pinned now.
                for (name, link, _) in links.iter_mut() {
                    pin_link(&pin_dir, name, link)?;
                }
            } else if !wanted {
                for (name, mut link, _) in links.drain(..) {
                    if link.pin_path().is_some() {
                        let _ = link.unpin();
                    }
                    let result = link.detach();
                    self.object.audit_log().result(
                        crate::auditlog::AuditAction::Detach,
                        Self::OBJECT,
                        &format!("{name} on {}", cgroup.display()),
                        "no rule by name",
                        &result,
                    );
                }
                if *pinned {
                    // Pins of an earlier run's DNS links, when this run never held them.
                    for name in DNS_HOOKS {
                        let pin = pin_dir.join(format!("link_{name}"));
                        if let Ok(mut link) = Link::open(&pin) {
                            let _ = link.unpin();
                            let _ = link.detach();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Attaches like [`attach`](Self::attach) and pins the links under the pin
    /// directory, so the policy keeps being enforced after this process exits (or is
    /// killed). Links pinned by an earlier run are adopted and this run's programs are
    /// swapped into them atomically. The process-tracking tracepoints are pinned too
    /// (replacing pins of an earlier run), so identities stay current while no agent
    /// runs.
    pub fn attach_pinned(&self, cgroup: &Path) -> Result<CgroupAttachment> {
        let dir = self.object.pin_dir().to_path_buf();
        let pinned: Vec<PathBuf> = HOOKS
            .iter()
            .map(|h| dir.join(format!("link_{h}")))
            .collect();
        // An earlier run's link detached from outside (dead) cannot be adopted: its pin
        // goes, and so do the others' (all four are attached anew, none twice).
        let mut dead = false;
        for path in &pinned {
            dead |= crate::attach::remove_dead_link_pin(
                path,
                Self::OBJECT,
                &format!("link on cgroup {}", cgroup.display()),
                self.object.audit_log(),
            )?;
        }
        if dead {
            for path in pinned.iter().filter(|p| p.exists()) {
                if let Ok(mut link) = Link::open(path) {
                    let result = link.unpin();
                    self.object.audit_log().result(
                        crate::auditlog::AuditAction::Unpin,
                        Self::OBJECT,
                        &path.display().to_string(),
                        "the others of a set with a dead link",
                        &result,
                    );
                    let _ = link.detach();
                }
            }
        }
        let mut attachment = if pinned.iter().all(|p| p.exists()) {
            let mut links = Vec::with_capacity(HOOKS.len());
            for (name, path) in HOOKS.iter().zip(&pinned) {
                let mut link = Link::open(path).map_err(|e| BpfError::Pin {
                    what: format!("link {name}"),
                    path: path.clone(),
                    reason: e.to_string(),
                    source: Some(crate::error::KernelError::from_libbpf(e)),
                })?;
                let prog = self.object.program(name)?;
                let result = link.update_prog(&prog);
                self.object.audit_log().result(
                    crate::auditlog::AuditAction::Reuse,
                    Self::OBJECT,
                    &path.display().to_string(),
                    &format!("{name}: program swapped in"),
                    &result,
                );
                result.map_err(|e| BpfError::Pin {
                    what: format!("link {name}"),
                    path: path.clone(),
                    reason: format!("cannot swap the program into it: {e}"),
                    source: Some(crate::error::KernelError::from_libbpf(e)),
                })?;
                links.push((*name, link));
            }
            CgroupAttachment {
                watch: watches(&links),
                links,
                cgroup: cgroup.to_path_buf(),
                log: self.object.audit_log().clone(),
            }
        } else {
            self.attach(cgroup)?
        };
        for (name, link) in TRACEPOINTS.iter().zip(locked(&self.tracepoints).iter_mut()) {
            pin_link(&dir, name, link)?;
        }
        for (name, link) in &mut attachment.links {
            pin_link(&dir, name, link)?;
        }
        self.add_dns_cgroup(cgroup, true)?;
        Ok(attachment)
    }

    /// Checks `attachment`'s hooks (this firewall's, on one cgroup) against the kernel
    /// and puts back what was undone from outside: a link detached (`bpftool link
    /// detach`) is replaced by a new one pinned in its place, a program swapped into it
    /// is swapped out, a removed pin is pinned again, each with an audit record
    /// (`repair`). One result per hook: `Ok(None)` all was well, `Ok(Some(what))` what
    /// was found and put back, an error found undone and not put back.
    pub fn verify(&self, attachment: &mut CgroupAttachment) -> Vec<Result<Option<String>>> {
        let CgroupAttachment {
            links,
            watch,
            cgroup,
            ..
        } = attachment;
        let on = cgroup.display().to_string();
        let links = links
            .iter_mut()
            .zip(watch.iter_mut())
            .map(|((name, link), watch)| (*name, format!("{name} on {on}"), link, watch));
        let mut results = crate::attach::verify_links(
            &self.object,
            Self::OBJECT,
            links,
            crate::attach::cgroup_attacher(cgroup),
        );
        // The DNS programs on the same cgroup, while the policy uses names: a rule by
        // name decides on the addresses they learn, so they are enforcement too.
        let mut hooks = locked(&self.dns_hooks);
        if let Some((_, _, dns)) = hooks.cgroups.iter_mut().find(|(c, _, _)| c == cgroup) {
            let dns = dns
                .iter_mut()
                .map(|(name, link, watch)| (*name, format!("{name} on {on}"), link, watch));
            results.extend(crate::attach::verify_links(
                &self.object,
                Self::OBJECT,
                dns,
                crate::attach::cgroup_attacher(cgroup),
            ));
        }
        results
    }

    /// The kernel ids of the DNS programs' links (attached while the live policy uses
    /// names), for the Sentinel to protect with the hooks' own
    /// ([`CgroupAttachment::link_ids`]).
    pub fn dns_link_ids(&self) -> Result<Vec<u32>> {
        let hooks = locked(&self.dns_hooks);
        hooks
            .cgroups
            .iter()
            .flat_map(|(_, _, links)| links.iter())
            .map(|(_, link, _)| crate::sentinel::link_id(link))
            .collect()
    }

    /// Gives each rule of `policy` its counts: those of the live rule with the same
    /// identity (its summary, and which of the rules with that summary it is), moved
    /// to the new rule id, or zero for a new rule. Rule ids are places in the policy,
    /// so a reload that inserts a rule moves the others; their counts follow them. The
    /// identities are kept in a pinned map (`ic_egress_rule_keys`), so a restart that
    /// adopts the pins carries them too. Every live count is read before any is
    /// written; a decision made during the swap itself may land on the old id.
    fn carry_counters(&self, policy: &CompiledEgress) -> Result<()> {
        let counters = self.object.map(names::egress::ic_egress_counters)?;
        let keys = self.object.map(names::egress::ic_egress_rule_keys)?;
        let mut carried: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
        for id in 1..u32::try_from(self.rule_count()?).unwrap_or(0) + 1 {
            let key = keys
                .lookup(&id.to_ne_bytes())?
                .and_then(|b| b.get(..8).and_then(|b| b.try_into().ok()))
                .map_or(0, u64::from_ne_bytes);
            if key == 0 {
                continue;
            }
            if let Some(values) = counters.lookup_percpu(&id.to_ne_bytes())? {
                carried.entry(key).or_insert(values);
            }
        }
        let mut seen: HashMap<&str, u32> = HashMap::new();
        let mut written: HashSet<u32> = HashSet::new();
        for rule in &policy.rules {
            if !written.insert(rule.rule_id) {
                continue;
            }
            let nth = seen.entry(rule.summary.as_str()).or_insert(0);
            let key = rule_key(&rule.summary, *nth);
            *nth += 1;
            let id = rule.rule_id.to_ne_bytes();
            let values = match carried.remove(&key) {
                Some(values) => values,
                None => {
                    let cpus = counters.lookup_percpu(&id)?.map_or(0, |v| v.len());
                    vec![vec![0u8; 8]; cpus]
                }
            };
            counters.update_percpu(&id, &values)?;
            keys.update(&id, &key.to_ne_bytes())?;
        }
        Ok(())
    }

    /// Decisions per rule id, summed over CPUs.
    pub fn rule_counters(&self) -> Result<Vec<(u32, u64)>> {
        let map = self.object.map(names::egress::ic_egress_counters)?;
        let mut out = Vec::new();
        for id in 1..u32::try_from(self.rule_count()?).unwrap_or(0) + 1 {
            let total: u64 = map.sum_percpu_u64(&id.to_ne_bytes())?;
            out.push((id, total));
        }
        Ok(out)
    }

    fn rule_count(&self) -> Result<usize> {
        let cfg = self.config()?;
        let rules = if cfg.generation & 1 == 0 {
            names::egress::ic_egress_rules0
        } else {
            names::egress::ic_egress_rules1
        };
        let map = self.object.map(rules)?;
        let mut highest = 0usize;
        for slot in 1..ironclad_core::abi::EGRESS_MAX_RULES {
            match map.lookup(&slot.to_ne_bytes())? {
                Some(bytes) if bytes.iter().any(|b| *b != 0) => {
                    let id = u32::from_ne_bytes(bytes[..4].try_into().unwrap_or([0; 4]));
                    highest = highest.max(id as usize);
                }
                _ => break,
            }
        }
        Ok(highest)
    }

    /// Removes the addresses DNS answers opened whose time has passed, and gives their
    /// room back to the executable and user that held them. The table is not an LRU (a
    /// flood of answers would evict what other processes' answers opened): each
    /// (executable, user) holds at most `IC_DNS_PER_SCOPE` entries and each user
    /// `IC_DNS_PER_UID`, a full share or table refuses new addresses (counted as
    /// `owner_full` and `table_full`), and only this sweep frees room. An agent calls it
    /// every few seconds and when those counters grow (`ironclad-agent` does, from its
    /// tick); rules by name stay correct without it, but room runs out.
    pub fn sweep_domains(&self) -> Result<DomainSweep> {
        domains::sweep(&self.object)
    }

    /// The domain policy as the kernel has it: the live patterns, the addresses DNS
    /// answers opened (by executable, with the time each pattern keeps them open), the
    /// addresses of domain feeds' names (refused), and the counters.
    pub fn domain_status(&self) -> Result<DomainStatus> {
        let known = self.known_exes.clone();
        let live = std::sync::OnceLock::new();
        let path_of = move |exe: &ProcExe| {
            locked(&known).by_id.get(exe).cloned().or_else(|| {
                live.get_or_init(domains::live_executables)
                    .get(exe)
                    .cloned()
            })
        };
        let open = |name: &'static str| self.object.map(name)?.handle();
        domains::status(&open, &path_of)
    }

    /// The domain policy's totals alone ([`DomainStatus::totals`]), from the pins under
    /// `pin_root`: one map read, whatever the address tables hold (what a page that
    /// refreshes every second reads).
    pub fn dns_totals_from_pins(pin_root: &Path) -> Result<Vec<(DnsTotal, u64)>> {
        domains::totals(&|name| open_pin(pin_root, name))
    }

    /// [`domain_status`](Self::domain_status) from the pins under `pin_root`, without
    /// loading anything (executables are named from the live processes that run them).
    pub fn domain_status_from_pins(pin_root: &Path) -> Result<DomainStatus> {
        let open = |name: &'static str| open_pin(pin_root, name);
        let recorded = open(names::egress::ic_dns_exe_paths).ok();
        let live = std::sync::OnceLock::new();
        let path_of = move |exe: &ProcExe| {
            recorded
                .as_ref()
                .and_then(|m| {
                    libbpf_rs::MapCore::lookup(m, &exe.to_bytes(), libbpf_rs::MapFlags::ANY)
                        .ok()
                        .flatten()
                })
                .and_then(|b| ironclad_core::abi::DnsLabel::from_bytes(&b))
                .and_then(|l| l.text())
                .or_else(|| {
                    live.get_or_init(domains::live_executables)
                        .get(exe)
                        .cloned()
                })
        };
        domains::status(&open, &path_of)
    }

    /// One total, summed over CPUs.
    pub fn total(&self, which: EgressTotal) -> Result<u64> {
        self.object
            .map(names::egress::ic_egress_totals)?
            .sum_percpu_u64(&(which as u32).to_ne_bytes())
    }

    /// One total of the domain policy, summed over CPUs.
    pub fn domain_total(&self, which: DnsTotal) -> Result<u64> {
        self.object
            .map(names::egress::ic_dns_totals)?
            .sum_percpu_u64(&(which as u32).to_ne_bytes())
    }

    /// connect() attempts the rate limit refused for the executable at `path`.
    pub fn rate_limited(&self, path: &Path) -> Result<u64> {
        let id = exe_identity(path).map_err(|source| BpfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value = self
            .object
            .map(names::egress::ic_egress_rate)?
            .lookup(&id.to_bytes())?;
        Ok(value
            .and_then(|v| v.get(16..24).and_then(|b| b.try_into().ok()))
            .map_or(0, u64::from_ne_bytes))
    }

    /// Opens the event ring buffer; each decision is decoded, given the executable's
    /// path, and published to `fanout`.
    pub fn events(&self, fanout: Arc<Fanout<Event>>) -> Result<EventReader> {
        EventReader::new(vec![self.event_source()?], fanout)
    }

    /// The decision ring buffer with its executable-path enrichment, to read together
    /// with other sources in one [`EventReader`].
    pub fn event_source(&self) -> Result<EventSource> {
        let known = self.known_exes.clone();
        let domain_state = self.domains.clone();
        let exe_paths = self.object.map(names::egress::ic_dns_exe_paths)?.handle()?;
        let seen_names = self
            .object
            .map(names::egress::ic_dns_seen_names)?
            .handle()?;
        let opened = self.object.map(names::egress::ic_dns_addrs)?.handle()?;
        let enrich = Box::new(move |event: &mut Event| {
            match event {
                Event::Connect(d) => {
                    if let Some(feed) = &mut d.feed {
                        if let Some(name) = locked(&domain_state).feed_name(feed) {
                            *feed = name;
                        }
                    }
                }
                Event::DnsPolicy(r) => {
                    if r.what == "answer" {
                        domains::remember_names(&seen_names, &opened, r);
                    }
                    let state = locked(&domain_state);
                    r.patterns = state
                        .patterns()
                        .into_iter()
                        .filter(|(b, _)| r.pattern_bits >> b & 1 == 1)
                        .map(|(_, p)| p.to_string())
                        .collect();
                    if let Some(name) = usize::from(r.feed_id)
                        .checked_sub(1)
                        .and_then(|i| state.feed_names().get(i))
                    {
                        r.feed = Some(name.clone());
                    }
                    drop(state);
                    let a = &mut r.actor;
                    a.exe = locked(&known).by_file.get(&(a.exe_dev, a.exe_ino)).cloned();
                    if a.exe.is_none() {
                        // The process just sent or received DNS: it is usually still
                        // there. Its path names this and later reports (the status's
                        // table of opened addresses) when its identity is the one the
                        // kernel saw.
                        let path = std::fs::read_link(format!("/proc/{}/exe", a.pid)).ok();
                        if let Some(path) = path {
                            if let Ok(id) = exe_identity(&path) {
                                if (id.dev, id.ino) == (a.exe_dev, a.exe_ino) {
                                    let shown = path.display().to_string();
                                    locked(&known).insert(id, shown.clone());
                                    // For `status` read from the pins.
                                    let _ = libbpf_rs::MapCore::update(
                                        &exe_paths,
                                        &id.to_bytes(),
                                        &ironclad_core::abi::DnsLabel::new(&shown, false)
                                            .to_bytes(),
                                        libbpf_rs::MapFlags::ANY,
                                    );
                                    a.exe = Some(shown);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
            if let Event::Connect(d) | Event::RateLimited(d) = event {
                let d = &mut d.actor;
                let named = locked(&known).by_file.get(&(d.exe_dev, d.exe_ino)).cloned();
                d.exe = named.or_else(|| {
                    std::fs::read_link(format!("/proc/{}/exe", d.pid))
                        .ok()
                        .map(|p| p.display().to_string())
                });
            }
        });
        Ok(EventSource::new(
            self.object.map(names::egress::ic_egress_events)?.handle()?,
            names::egress::ic_egress_events,
            Some(enrich),
        ))
    }

    /// The loaded object.
    pub fn object(&self) -> &LoadedObject {
        &self.object
    }

    /// Reads the firewall's pinned maps under `pin_root` without loading anything.
    pub fn status_from_pins(pin_root: &Path) -> Result<EgressStatus> {
        use libbpf_rs::{MapCore, MapFlags, MapHandle};
        let dir = pin_root.join(Self::OBJECT);
        let open = |name: &str| {
            let path = dir.join(name);
            MapHandle::from_pinned_path(&path).map_err(|e| BpfError::Pin {
                what: format!("map {name}"),
                path: path.clone(),
                reason: e.to_string(),
                source: Some(crate::error::KernelError::from_libbpf(e)),
            })
        };
        let lookup_err = |name: &'static str| {
            move |source: libbpf_rs::Error| BpfError::Map {
                op: "lookup",
                map: name.to_string(),
                source: crate::error::KernelError::from_libbpf(source),
            }
        };
        let sum = |values: Option<Vec<Vec<u8>>>| -> u64 {
            values
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map(u64::from_ne_bytes)
                .sum()
        };
        let config = open(names::egress::ic_egress_config)?
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(lookup_err(names::egress::ic_egress_config))?
            .and_then(|b| EgressConfig::from_bytes(&b))
            .unwrap_or_default();
        let rules = open(if config.generation & 1 == 0 {
            names::egress::ic_egress_rules0
        } else {
            names::egress::ic_egress_rules1
        })?;
        let counters = open(names::egress::ic_egress_counters)?;
        let mut ids = std::collections::BTreeSet::new();
        for slot in 1..ironclad_core::abi::EGRESS_MAX_RULES {
            match rules
                .lookup(&slot.to_ne_bytes(), MapFlags::ANY)
                .map_err(lookup_err("ic_egress_rules"))?
            {
                Some(bytes) if bytes.iter().any(|b| *b != 0) => {
                    ids.insert(u32::from_ne_bytes(bytes[..4].try_into().unwrap_or([0; 4])));
                }
                _ => break,
            }
        }
        let mut rule_counts = Vec::new();
        for id in ids {
            rule_counts.push((
                id,
                sum(counters
                    .lookup_percpu(&id.to_ne_bytes(), MapFlags::ANY)
                    .map_err(lookup_err(names::egress::ic_egress_counters))?),
            ));
        }
        let totals_map = open(names::egress::ic_egress_totals)?;
        let mut totals = Vec::new();
        for t in EgressTotal::ALL {
            totals.push((
                t,
                sum(totals_map
                    .lookup_percpu(&(t as u32).to_ne_bytes(), MapFlags::ANY)
                    .map_err(lookup_err(names::egress::ic_egress_totals))?),
            ));
        }
        Ok(EgressStatus {
            config,
            rules: rule_counts,
            totals,
        })
    }
}

/// One process as the identity firewall's process table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessEntry {
    /// The raw record (executable identity, ppid, uid, gid, cgroup id, comm).
    pub info: ProcInfo,
    /// The executable's path, when the firewall knows it (seen running, or named by
    /// the policy).
    pub exe_path: Option<String>,
    /// The command name.
    pub comm: String,
}

/// What the identity firewall's pinned maps say.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EgressStatus {
    /// The live configuration (generation, default action, rate limit).
    pub config: EgressConfig,
    /// Decisions per rule id of the live policy.
    pub rules: Vec<(u32, u64)>,
    /// Totals.
    pub totals: Vec<(EgressTotal, u64)>,
}

/// Pins `link` as `dir/link_NAME` unless it is pinned already (a stale file of an
/// earlier run is replaced).
fn pin_link(dir: &Path, name: &str, link: &mut Link) -> Result<()> {
    let path = dir.join(format!("link_{name}"));
    if link.pin_path().is_some() {
        return Ok(());
    }
    if path.exists() {
        let _ = std::fs::remove_file(&path);
    }
    link.pin(&path).map_err(|e| BpfError::Pin {
        what: format!("link {name}"),
        path: path.clone(),
        reason: e.to_string(),
        source: Some(crate::error::KernelError::from_libbpf(e)),
    })
}

/// Who owns a prefix of the destination filter: the identity keys (by id) whose rules
/// name it or a prefix containing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owners {
    One(usize),
    Several,
}

impl Owners {
    fn with(self, key: usize) -> Self {
        match self {
            Self::One(k) if k == key => self,
            _ => Self::Several,
        }
    }
}

/// One key's destination prefixes of one protocol (its classifier bucket's, over the
/// 128-bit space): their classes by (address, length), and their lengths, longest
/// first.
struct KeyPrefixes {
    classes: HashMap<(u128, u32), u32>,
    lengths: Vec<u32>,
}

impl KeyPrefixes {
    fn new(bucket: &ironclad_policy::firewall::Bucket) -> Self {
        let mut classes = HashMap::new();
        for (net, class) in &bucket.dst.prefixes {
            // The identity firewall's tries hold the IPv6 form only (IPv4 rules are
            // IPv4-mapped), as `ClassImages::push_addresses` writes them for it.
            if let ipnetwork::IpNetwork::V6(n) = net {
                classes.insert((u128::from(n.network()), u32::from(n.prefix())), *class);
            }
        }
        let mut lengths: Vec<u32> = classes.keys().map(|(_, l)| *l).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        Self { classes, lengths }
    }

    /// The class of the key's longest prefix containing `addr/len`.
    fn class_of(&self, addr: u128, len: u32) -> Option<u32> {
        self.lengths
            .iter()
            .filter(|l| **l <= len)
            .find_map(|l| self.classes.get(&(addr & prefix_mask(*l), *l)).copied())
    }
}

/// The identity firewall's destination filter for `policy`: every prefix its rules name
/// (address over the 128-bit space, IPv4-mapped; length), ascending, each with what the
/// kernel needs to know of the destinations whose longest prefix it is
/// ([`EgressDstOwner`]). `None` when a rule names no destination (it matches every one)
/// or one names them all, or there is no rule: no destination is outside every rule's.
///
/// Every address whose longest prefix is `P` has, under each key whose rules name `P` or
/// a prefix containing it, the class of that key's longest prefix containing `P`: one
/// of its longer prefixes containing the address would be a longer prefix of the
/// filter. Under every other key, no rule matches it. So when one key owns `P`, the
/// filter's entry can carry that key's classes.
fn destination_filter(policy: &CompiledEgress) -> Option<Vec<(u128, u32, EgressDstOwner)>> {
    let mut key_of_slot = vec![usize::MAX; policy.entries.len() + 1];
    for (id, slots) in policy.index.values().enumerate() {
        for slot in slots {
            if let Some(k) = key_of_slot.get_mut(usize::from(*slot)) {
                *k = id;
            }
        }
    }
    let mut named: Vec<(u128, u32, usize)> = Vec::with_capacity(policy.entries.len());
    for (i, rule) in policy.entries.iter().enumerate() {
        // Rules by name are not in the classifier: the domain step decides them.
        if rule.match_ & egress_match::DOMAIN != 0 {
            continue;
        }
        if rule.match_ & egress_match::DST == 0 || rule.prefixlen == 0 {
            return None;
        }
        let len = u32::from(rule.prefixlen.min(128));
        let key = key_of_slot
            .get(i + 1)
            .copied()
            .filter(|k| *k != usize::MAX)?;
        named.push((u128::from_be_bytes(rule.dst) & prefix_mask(len), len, key));
    }
    if named.is_empty() {
        return None;
    }
    // A prefix sorts after every prefix containing it.
    named.sort_unstable();
    named.dedup();
    // Each key, and its first class id as `replace` numbers them.
    let mut keys = Vec::with_capacity(policy.index.len());
    let mut first = 0u32;
    for key in policy.index.keys() {
        let classifier = policy.classifiers.get(key);
        keys.push((key, classifier, first));
        if let Some(c) = classifier {
            first = first.saturating_add(u32::try_from(c.classes.len()).unwrap_or(u32::MAX));
        }
    }
    let mut prefixes: HashMap<(usize, usize), KeyPrefixes> = HashMap::new();
    // The chain of prefixes containing the current one, each with its owners.
    let mut chain: Vec<(u128, u32, Owners)> = Vec::new();
    let mut filter = Vec::new();
    let mut i = 0;
    while let Some(&(addr, len, key)) = named.get(i) {
        while chain
            .last()
            .is_some_and(|(a, l, _)| *l > len || (addr ^ a) & prefix_mask(*l) != 0)
        {
            chain.pop();
        }
        let mut owners = chain
            .last()
            .map_or(Owners::One(key), |(_, _, o)| o.with(key));
        i += 1;
        while let Some(&(_, _, other)) = named.get(i).filter(|(a, l, _)| (*a, *l) == (addr, len)) {
            owners = owners.with(other);
            i += 1;
        }
        chain.push((addr, len, owners));
        let mut owner = EgressDstOwner {
            kind: EGRESS_OWNERS_SEVERAL,
            ..EgressDstOwner::default()
        };
        if let Owners::One(id) = owners {
            let (key, classifier, first) = *keys.get(id)?;
            owner.kind = key.kind;
            owner.id = u16::try_from(id).ok()?;
            owner.value = key.value;
            for (p, proto) in [PacketProto::Tcp, PacketProto::Udp, PacketProto::Other]
                .into_iter()
                .enumerate()
            {
                let class = classifier.and_then(|c| {
                    let bucket = c.buckets.get(&(Direction::Out, proto))?;
                    let class = prefixes
                        .entry((id, p))
                        .or_insert_with(|| KeyPrefixes::new(bucket))
                        .class_of(addr, len)?;
                    let bitmap = c.classes.get(usize::try_from(class).ok()?)?;
                    let summary = classes::summary_of(bitmap);
                    (summary != FwSummary::default())
                        .then(|| (first.saturating_add(class), summary))
                });
                let (id, summary) = class.unwrap_or((EGRESS_NO_CLASS, FwSummary::default()));
                *owner.classes.get_mut(p)? = id;
                *owner.summaries.get_mut(p)? = summary;
            }
        }
        filter.push((addr, len, owner));
    }
    Some(filter)
}

/// `filter`'s keys in the hash `ic_egress_dst` under `generation`, and its lengths:
/// `None` when it has more than [`EGRESS_DST_HASH_LENGTHS`] of them (the trie then
/// costs less than a lookup per length: two hash lookups of the 24-byte key, ~70 ns
/// here, are dearer than the trie's walk to a prefix alone in its branch).
fn dst_hash_images(
    generation: u8,
    filter: &[(u128, u32, EgressDstOwner)],
) -> Option<(Vec<[u8; EgressDstKey::SIZE]>, EgressDstLengths)> {
    let mut lengths = EgressDstLengths::default();
    let mut keys = Vec::with_capacity(filter.len());
    for &(addr, len, _) in filter {
        let len = u8::try_from(len).ok().filter(|l| *l <= 128)?;
        let count = usize::from(lengths.count);
        if !lengths.prefixlen[..count].contains(&len) {
            if count >= EGRESS_DST_HASH_LENGTHS {
                return None;
            }
            *lengths.prefixlen.get_mut(count)? = len;
            lengths.count += 1;
        }
        keys.push(
            EgressDstKey {
                generation,
                prefixlen: len,
                _pad0: [0; 6],
                addr: (addr & prefix_mask(u32::from(len))).to_be_bytes(),
            }
            .to_bytes(),
        );
    }
    Some((keys, lengths))
}

/// `filter`'s keys in the trie `ic_egress_dst_trie` under `generation`.
fn dst_trie_images(
    generation: u8,
    filter: &[(u128, u32, EgressDstOwner)],
) -> Vec<[u8; FwAddrKey::SIZE]> {
    filter
        .iter()
        .map(|(addr, len, _)| {
            FwAddrKey {
                prefixlen: 32 + len,
                tag: [generation, 0, 0, 0],
                addr: addr.to_be_bytes(),
            }
            .to_bytes()
        })
        .collect()
}

/// The egress object's pinned map `name` under `pin_root`.
fn open_pin(pin_root: &Path, name: &'static str) -> Result<libbpf_rs::MapHandle> {
    let path = pin_root.join(EgressFirewall::OBJECT).join(name);
    libbpf_rs::MapHandle::from_pinned_path(&path).map_err(|e| BpfError::Pin {
        what: format!("map {name}"),
        path: path.clone(),
        reason: e.to_string(),
        source: Some(crate::error::KernelError::from_libbpf(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironclad_core::abi::{EgressKey, EgressKeyKind};

    fn v6(s: &str) -> u128 {
        u128::from(
            s.parse::<std::net::Ipv6Addr>()
                .unwrap_or_else(|e| panic!("{s}: {e}")),
        )
    }

    fn compiled(rules: &str) -> CompiledEgress {
        let yaml = format!("egress:\n  default: allow\n  rules:\n{rules}");
        ironclad_policy::config::compile_str(&yaml, Path::new("p.yaml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .egress
            .unwrap_or_else(|| panic!("an egress section"))
    }

    #[test]
    fn the_hashed_filter_takes_one_prefix_length_and_masks_each_key() {
        let owner = EgressDstOwner::default();
        let filter = [
            (v6("::ffff:10.1.2.3") & prefix_mask(120), 120, owner),
            (v6("::ffff:10.9.0.0"), 120, owner),
            (v6("::ffff:192.0.2.7"), 120, owner),
        ];
        let (keys, lengths) = dst_hash_images(1, &filter).unwrap_or_else(|| panic!("hashed"));
        assert_eq!((lengths.count, lengths.prefixlen[0]), (1, 120));
        let keys: Vec<EgressDstKey> = keys
            .iter()
            .filter_map(|k| EgressDstKey::from_bytes(k))
            .collect();
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|k| (k.generation, k.prefixlen) == (1, 120)));
        assert_eq!(
            u128::from_be_bytes(keys[2].addr),
            v6("::ffff:192.0.2.0"),
            "the bits past the length are zero"
        );
        let mixed = [(v6("2001:db8::"), 64, owner), (v6("2001:db9::"), 65, owner)];
        assert!(
            dst_hash_images(0, &mixed).is_none(),
            "two lengths: the trie"
        );
        assert!(dst_hash_images(0, &mixed[..1]).is_some());
    }

    #[test]
    fn the_filter_names_the_one_key_owning_each_prefix_with_its_classes() {
        let policy = compiled(
            "    - uid: 0\n      dst: 10.0.0.0/8\n      proto: tcp\n      action: deny\n\
             \x20   - uid: 0\n      dst: 10.1.0.0/16\n      ports: 443\n      action: allow\n\
             \x20   - uid: 1000\n      dst: 10.1.2.0/24\n      action: deny\n\
             \x20   - uid: 1000\n      dst: 192.0.2.7\n      proto: udp\n      action: deny\n\
             \x20   - uid: 1000\n      dst: 2001:db8::/32\n      action: log\n\
             \x20   - uid: 0\n      dst: 2001:db8::/32\n      action: deny\n",
        );
        let filter = destination_filter(&policy).unwrap_or_else(|| panic!("a filter"));
        let at = |net: &str, len: u32| {
            filter
                .iter()
                .find(|(a, l, _)| (*a, *l) == (v6(net), len))
                .map(|(_, _, o)| *o)
                .unwrap_or_else(|| panic!("{net}/{len} in the filter"))
        };
        // Every prefix a rule names, ascending, none merged into another.
        let prefixes: Vec<(u128, u32)> = filter.iter().map(|(a, l, _)| (*a, *l)).collect();
        assert_eq!(
            prefixes,
            vec![
                (v6("::ffff:10.0.0.0"), 104),
                (v6("::ffff:10.1.0.0"), 112),
                (v6("::ffff:10.1.2.0"), 120),
                (v6("::ffff:192.0.2.7"), 128),
                (v6("2001:db8::"), 32),
            ]
        );
        let keys: Vec<&EgressKey> = policy.index.keys().collect();
        let uid = |owner: &EgressDstOwner| {
            let key = keys[usize::from(owner.id)];
            assert_eq!((owner.kind, owner.value), (key.kind, key.value));
            u32::from_ne_bytes([
                owner.value[0],
                owner.value[1],
                owner.value[2],
                owner.value[3],
            ])
        };
        // 10.0.0.0/8 and 10.1.0.0/16: uid 0's alone; tcp only for the /8.
        let wide = at("::ffff:10.0.0.0", 104);
        assert_eq!((wide.kind, uid(&wide)), (EgressKeyKind::Uid as u8, 0));
        assert_ne!(wide.classes[0], EGRESS_NO_CLASS, "tcp");
        assert_eq!(
            wide.classes[1], EGRESS_NO_CLASS,
            "no udp rule of uid 0 there"
        );
        assert_eq!(wide.summaries[1], FwSummary::default());
        let inner = at("::ffff:10.1.0.0", 112);
        assert_eq!(uid(&inner), 0);
        assert_ne!(inner.classes[0], wide.classes[0], "the /16 adds a rule");
        assert_ne!(
            inner.classes[1], EGRESS_NO_CLASS,
            "its rule is for any protocol"
        );
        // 10.1.2.0/24 is inside uid 0's prefixes and names uid 1000's: both keys.
        assert_eq!(at("::ffff:10.1.2.0", 120).kind, EGRESS_OWNERS_SEVERAL);
        assert_eq!(
            at("2001:db8::", 32).kind,
            EGRESS_OWNERS_SEVERAL,
            "named by both"
        );
        let host = at("::ffff:192.0.2.7", 128);
        assert_eq!(uid(&host), 1000);
        assert_eq!(
            (host.classes[0], host.classes[2]),
            (EGRESS_NO_CLASS, EGRESS_NO_CLASS),
            "a udp rule only"
        );
        assert_ne!(host.classes[1], EGRESS_NO_CLASS);
        // The classes are the key's, numbered past the keys before it, with their
        // summaries.
        for owner in [wide, inner, host] {
            let key = keys[usize::from(owner.id)];
            let before: usize = policy
                .index
                .keys()
                .take_while(|k| *k != key)
                .filter_map(|k| policy.classifiers.get(k))
                .map(|c| c.classes.len())
                .sum();
            for (class, summary) in owner.classes.iter().zip(&owner.summaries) {
                if *class == EGRESS_NO_CLASS {
                    continue;
                }
                let own = usize::try_from(*class).unwrap_or(usize::MAX) - before;
                let bitmap = &policy.classifiers[key].classes[own];
                assert_eq!(*summary, classes::summary_of(bitmap));
                assert_ne!(*summary, FwSummary::default());
            }
        }
    }

    #[test]
    fn there_is_no_filter_when_a_rule_names_no_destination_or_every_one() {
        assert!(destination_filter(&compiled(
            "    - uid: 0\n      dst: 10.0.0.0/8\n      action: deny\n\
             \x20   - uid: 1\n      action: deny\n"
        ))
        .is_none());
        assert!(destination_filter(&compiled(
            "    - uid: 0\n      dst: ::/0\n      action: deny\n"
        ))
        .is_none());
    }
}
