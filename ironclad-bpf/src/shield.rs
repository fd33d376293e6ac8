//! The Shield: an XDP source-address firewall (`bpf-src/shield.bpf.c`).
//!
//! For every IPv4/IPv6 packet the program checks, in order: the management safety valve
//! (always passes), then the longest matching prefix in the rule trie of the packet's
//! family (deny drops; allow is an exception inside a denied range, because it is
//! longer), then the optional per-source token bucket. Non-IP and malformed frames pass
//! and are counted. Drops are sampled 1-in-N into a ring buffer ([`Shield::events`]).
//!
//! ```no_run
//! use std::path::Path;
//! use ironclad_bpf::{Loader, Shield};
//! use ironclad_policy::config::compile_file;
//!
//! let loader = Loader::builder().build()?;
//! let policy = compile_file(Path::new("/etc/ironclad/policy.yaml"))?;
//! let shield = Shield::load(&loader)?;
//! shield.replace(policy.shield.as_ref().expect("a shield section"))?;
//! // Adopts a link pinned by an earlier run (no gap), or attaches and pins a new one.
//! let attachment = shield.attach_pinned("eth0")?;
//! println!("attached in {:?} mode", attachment.mode());
//! for rule in shield.rules()? {
//!     println!("{} {:?}: {} packets", rule.cidr, rule.action, rule.counter.packets);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What survives a crash
//! The maps (rules, valve, counters, mode) and, with [`Shield::attach_pinned`], the XDP
//! link are pinned under `<pin root>/shield/`. If the agent dies, the kernel keeps
//! enforcing the last policy; the next [`Shield::load`] adopts the maps and
//! [`Shield::attach_pinned`] swaps the new program into the pinned link atomically.
//! [`Loader::remove_pins`] (`full_firewall detach`) removes everything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ironclad_core::abi::{
    Action, Counter, LpmV4Key, LpmV6Key, Rule, ShieldConfig, ShieldTotal, SHIELD_F_DRY_RUN,
    SHIELD_MAX_RULES,
};
use ironclad_events::{Event, Fanout};
use ironclad_policy::shield::{CompiledShield, Mode, RateLimit};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::attach::XdpAttachment;
use crate::error::{BpfError, Result};
use crate::events::{EventReader, EventSource};
use crate::loader::{LoadedObject, Loader};

const RULES_V4: &str = "ic_rules_v4";
const RULES_V6: &str = "ic_rules_v6";
const VALVE_V4: &str = "ic_valve_v4";
const VALVE_V6: &str = "ic_valve_v6";
const RULE_COUNTERS: &str = "ic_rule_counters";
const TOTALS: &str = "ic_totals";
const CONFIG: &str = "ic_shield_config";
const EVENTS: &str = "ic_shield_events";
const PROGRAM: &str = "ic_shield_xdp";

/// The LPM key bytes of `net` (host bits cleared).
fn lpm_key(net: IpNetwork) -> Vec<u8> {
    match net {
        IpNetwork::V4(n) => LpmV4Key {
            prefixlen: u32::from(n.prefix()),
            addr: n.network().octets(),
        }
        .to_bytes(),
        IpNetwork::V6(n) => LpmV6Key {
            prefixlen: u32::from(n.prefix()),
            addr: n.network().octets(),
        }
        .to_bytes(),
    }
}

/// The network an LPM key (of either family, by length) stands for.
fn net_of_key(key: &[u8]) -> Option<IpNetwork> {
    if key.len() == LpmV4Key::SIZE {
        let k = LpmV4Key::from_bytes(key)?;
        Ipv4Network::new(k.addr.into(), u8::try_from(k.prefixlen).ok()?)
            .ok()
            .map(IpNetwork::V4)
    } else {
        let k = LpmV6Key::from_bytes(key)?;
        Ipv6Network::new(k.addr.into(), u8::try_from(k.prefixlen).ok()?)
            .ok()
            .map(IpNetwork::V6)
    }
}

fn rules_map(net: IpNetwork) -> &'static str {
    if net.is_ipv4() {
        RULES_V4
    } else {
        RULES_V6
    }
}

fn valve_map(net: IpNetwork) -> &'static str {
    if net.is_ipv4() {
        VALVE_V4
    } else {
        VALVE_V6
    }
}

/// A rule as the kernel holds it, with its counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStatus {
    /// The prefix.
    pub cidr: IpNetwork,
    /// The counter index.
    pub rule_id: u32,
    /// Deny or allow.
    pub action: Action,
    /// Packets and bytes it matched, summed over CPUs.
    pub counter: Counter,
}

/// Everything the Shield's pinned maps say, readable without loading anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldStatus {
    /// Every rule, sorted by rule id.
    pub rules: Vec<RuleStatus>,
    /// Global totals.
    pub totals: Vec<(ShieldTotal, Counter)>,
    /// The management valve.
    pub management: Vec<IpNetwork>,
    /// Mode, rate limit, sampling.
    pub config: ShieldConfig,
    /// XDP links pinned under the Shield's pin directory (`link_<iface>`).
    pub links: Vec<PathBuf>,
}

/// What [`Shield::replace`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaceReport {
    /// Rules added.
    pub added: usize,
    /// Rules whose action changed.
    pub changed: usize,
    /// Rules removed.
    pub removed: usize,
    /// Rules left as they were (their counters continue).
    pub kept: usize,
    /// The rule id of every prefix now loaded.
    pub ids: BTreeMap<IpNetwork, u32>,
}

/// Read access to a map either through a loaded object or a pinned path.
trait MapRead {
    fn entries(&self, name: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    fn percpu(&self, name: &str, index: u32) -> Result<Counter>;
    fn value(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

fn sum_percpu(values: Option<Vec<Vec<u8>>>) -> Counter {
    let per_cpu: Vec<Counter> = values
        .unwrap_or_default()
        .iter()
        .filter_map(|v| Counter::from_bytes(v))
        .collect();
    Counter::sum(&per_cpu)
}

impl MapRead for LoadedObject {
    fn entries(&self, name: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let map = self.map(name)?;
        let mut out = Vec::new();
        for key in map.keys() {
            if let Some(value) = map.lookup(&key)? {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    fn percpu(&self, name: &str, index: u32) -> Result<Counter> {
        Ok(sum_percpu(
            self.map(name)?.lookup_percpu(&index.to_ne_bytes())?,
        ))
    }

    fn value(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.map(name)?.lookup(key)
    }
}

/// The Shield's pinned maps, opened by path.
struct PinnedMaps {
    dir: PathBuf,
}

impl PinnedMaps {
    fn open(&self, name: &str) -> Result<MapHandle> {
        let path = self.dir.join(name);
        MapHandle::from_pinned_path(&path).map_err(|e| BpfError::Pin {
            what: format!("map {name}"),
            path,
            reason: e.to_string(),
        })
    }
}

fn map_err(op: &'static str, map: &str) -> impl FnOnce(libbpf_rs::Error) -> BpfError {
    let map = map.to_string();
    move |source| BpfError::Map { op, map, source }
}

impl MapRead for PinnedMaps {
    fn entries(&self, name: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let map = self.open(name)?;
        let mut out = Vec::new();
        for key in map.keys() {
            if let Some(value) = map
                .lookup(&key, MapFlags::ANY)
                .map_err(map_err("lookup", name))?
            {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    fn percpu(&self, name: &str, index: u32) -> Result<Counter> {
        let map = self.open(name)?;
        Ok(sum_percpu(
            map.lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
                .map_err(map_err("lookup", name))?,
        ))
    }

    fn value(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.open(name)?
            .lookup(key, MapFlags::ANY)
            .map_err(map_err("lookup", name))
    }
}

fn read_rules(maps: &dyn MapRead) -> Result<Vec<(IpNetwork, Rule)>> {
    let mut rules = Vec::new();
    for map in [RULES_V4, RULES_V6] {
        for (key, value) in maps.entries(map)? {
            if let (Some(net), Some(rule)) = (net_of_key(&key), Rule::from_bytes(&value)) {
                rules.push((net, rule));
            }
        }
    }
    rules.sort_by_key(|(net, rule)| (rule.rule_id, *net));
    Ok(rules)
}

fn read_status(maps: &dyn MapRead, links: Vec<PathBuf>) -> Result<ShieldStatus> {
    let mut rules = Vec::new();
    for (cidr, rule) in read_rules(maps)? {
        rules.push(RuleStatus {
            cidr,
            rule_id: rule.rule_id,
            action: Action::from_raw(rule.action).unwrap_or(Action::None),
            counter: maps.percpu(RULE_COUNTERS, rule.rule_id)?,
        });
    }
    let totals = ShieldTotal::ALL
        .iter()
        .map(|t| Ok((*t, maps.percpu(TOTALS, *t as u32)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut management = Vec::new();
    for map in [VALVE_V4, VALVE_V6] {
        for (key, _) in maps.entries(map)? {
            if let Some(net) = net_of_key(&key) {
                management.push(net);
            }
        }
    }
    management.sort();
    let config = maps
        .value(CONFIG, &0u32.to_ne_bytes())?
        .and_then(|b| ShieldConfig::from_bytes(&b))
        .unwrap_or_default();
    Ok(ShieldStatus {
        rules,
        totals,
        management,
        config,
        links,
    })
}

fn pinned_links(dir: &Path) -> Vec<PathBuf> {
    let mut links: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("link_"))
                })
                .collect()
        })
        .unwrap_or_default();
    links.sort();
    links
}

/// A loaded Shield object. Its maps are pinned under `<pin root>/shield/`, so rules and
/// counters survive a restart of the process; a second `load` adopts them.
#[derive(Debug)]
pub struct Shield {
    object: LoadedObject,
}

impl Shield {
    /// Name of the Shield's BPF object (and of its pin directory).
    pub const OBJECT: &'static str = "shield";

    /// Audits and loads the Shield, reusing pinned maps from an earlier run.
    pub fn load(loader: &Loader) -> Result<Self> {
        Ok(Self {
            object: loader.load(crate::object::shield())?,
        })
    }

    /// Reads the Shield's pinned maps under `pin_root` without loading anything (no
    /// running agent needed).
    pub fn status_from_pins(pin_root: &Path) -> Result<ShieldStatus> {
        let dir = pin_root.join(Self::OBJECT);
        let maps = PinnedMaps { dir: dir.clone() };
        read_status(&maps, pinned_links(&dir))
    }

    /// The loaded object (pins, maps, audit log).
    pub fn object(&self) -> &LoadedObject {
        &self.object
    }

    /// Everything the maps say now.
    pub fn status(&self) -> Result<ShieldStatus> {
        read_status(&self.object, pinned_links(self.object.pin_dir()))
    }

    /// Every rule in the kernel with its counter.
    pub fn rules(&self) -> Result<Vec<RuleStatus>> {
        Ok(self.status()?.rules)
    }

    /// Makes the kernel's state equal `policy`, changing only what differs:
    ///
    /// 1. new management prefixes are added first, so the valve never shrinks before
    ///    the rules change;
    /// 2. mode, rate limit and sampling are set;
    /// 3. rules are added or updated, then rules not in `policy` are removed; a prefix
    ///    already loaded keeps its rule id, so its counter continues;
    /// 4. management prefixes not in `policy` are removed last.
    ///
    /// New rule ids get zeroed counters. If the kernel refuses a write, the rules this
    /// call added are removed again and the error is returned.
    pub fn replace(&self, policy: &CompiledShield) -> Result<ReplaceReport> {
        let existing: BTreeMap<IpNetwork, Rule> = read_rules(&self.object)?.into_iter().collect();
        let used: std::collections::BTreeSet<u32> = existing.values().map(|r| r.rule_id).collect();
        let wanted: BTreeMap<IpNetwork, Action> =
            policy.rules.iter().map(|r| (r.cidr, r.action)).collect();

        // Ids: keep the kernel's id for a prefix it has; give new prefixes the lowest
        // ids neither kept nor taken.
        let kept_ids: std::collections::BTreeSet<u32> = existing
            .iter()
            .filter(|(net, _)| wanted.contains_key(net))
            .map(|(_, r)| r.rule_id)
            .collect();
        let mut next_free = (1..SHIELD_MAX_RULES).filter(|id| !kept_ids.contains(id));
        let mut report = ReplaceReport::default();
        let mut plan = Vec::new();
        for rule in &policy.rules {
            let id = match existing.get(&rule.cidr) {
                Some(old) => old.rule_id,
                None => next_free.next().ok_or_else(|| BpfError::BadSize {
                    map: RULE_COUNTERS.to_string(),
                    what: "rule count",
                    got: policy.rules.len(),
                    expected: SHIELD_MAX_RULES as usize - 1,
                })?,
            };
            report.ids.insert(rule.cidr, id);
            plan.push((rule.cidr, id, rule.action));
        }

        for net in &policy.management {
            self.add_valve(*net)?;
        }
        self.set_config(&policy.config())?;

        let mut added = Vec::new();
        let result = (|| {
            for (cidr, id, action) in &plan {
                match existing.get(cidr) {
                    Some(old) if old.action == *action as u8 => report.kept += 1,
                    Some(_) => {
                        self.insert_rule(*cidr, *id, *action)?;
                        report.changed += 1;
                    }
                    None => {
                        if used.contains(id) {
                            // The id belonged to a rule about to be removed: start at zero.
                            self.reset_counter(*id)?;
                        }
                        self.insert_rule(*cidr, *id, *action)?;
                        if !used.contains(id) {
                            self.reset_counter(*id)?;
                        }
                        added.push(*cidr);
                        report.added += 1;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            for net in added {
                let _ = self.remove_rule(net);
            }
            return Err(e);
        }
        for net in existing.keys().filter(|n| !wanted.contains_key(n)) {
            self.remove_rule(*net)?;
            report.removed += 1;
        }
        for net in self.status()?.management {
            if !policy.management.contains(&net) {
                self.remove_valve(net)?;
            }
        }
        Ok(report)
    }

    /// Adds or replaces the rule for `net`: packets whose source it covers (and no
    /// longer prefix covers) are counted under `rule_id` and dropped (`Deny`) or passed
    /// (`Allow`).
    pub fn insert_rule(&self, net: IpNetwork, rule_id: u32, action: Action) -> Result<()> {
        if rule_id == 0 || rule_id >= SHIELD_MAX_RULES {
            return Err(BpfError::BadSize {
                map: RULE_COUNTERS.to_string(),
                what: "rule id",
                got: rule_id as usize,
                expected: SHIELD_MAX_RULES as usize - 1,
            });
        }
        self.object
            .map(rules_map(net))?
            .update(&lpm_key(net), &Rule::new(rule_id, action).to_bytes())
    }

    /// The rule stored for exactly `net`, if any.
    pub fn rule(&self, net: IpNetwork) -> Result<Option<Rule>> {
        Ok(self
            .object
            .map(rules_map(net))?
            .lookup(&lpm_key(net))?
            .and_then(|bytes| Rule::from_bytes(&bytes)))
    }

    /// Removes the rule for exactly `net`; `Ok(false)` if there was none.
    pub fn remove_rule(&self, net: IpNetwork) -> Result<bool> {
        self.object.map(rules_map(net))?.delete(&lpm_key(net))
    }

    /// Zeroes the counter of `rule_id` on every CPU.
    pub fn reset_counter(&self, rule_id: u32) -> Result<()> {
        let map = self.object.map(RULE_COUNTERS)?;
        let cpus = map
            .lookup_percpu(&rule_id.to_ne_bytes())?
            .map_or(0, |v| v.len());
        let zero = vec![Counter::default().to_bytes().to_vec(); cpus];
        map.update_percpu(&rule_id.to_ne_bytes(), &zero)
    }

    /// Adds `net` to the management safety valve: its traffic always passes.
    pub fn add_valve(&self, net: IpNetwork) -> Result<()> {
        self.object
            .map(valve_map(net))?
            .update(&lpm_key(net), &1u32.to_ne_bytes())
    }

    /// Removes `net` from the safety valve; `Ok(false)` if it was not there.
    pub fn remove_valve(&self, net: IpNetwork) -> Result<bool> {
        self.object.map(valve_map(net))?.delete(&lpm_key(net))
    }

    /// The runtime configuration (mode, rate limit, sampling).
    pub fn config(&self) -> Result<ShieldConfig> {
        let bytes = self.object.map(CONFIG)?.lookup(&0u32.to_ne_bytes())?;
        Ok(bytes
            .and_then(|b| ShieldConfig::from_bytes(&b))
            .unwrap_or_default())
    }

    /// Writes the runtime configuration.
    pub fn set_config(&self, config: &ShieldConfig) -> Result<()> {
        self.object
            .map(CONFIG)?
            .update(&0u32.to_ne_bytes(), &config.to_bytes())
    }

    /// Turns dry-run on (count and report, never drop) or off.
    pub fn set_mode(&self, mode: Mode) -> Result<()> {
        let mut config = self.config()?;
        config.flags = match mode {
            Mode::DryRun => config.flags | SHIELD_F_DRY_RUN,
            Mode::Enforce => config.flags & !SHIELD_F_DRY_RUN,
        };
        self.set_config(&config)
    }

    /// The current mode.
    pub fn mode(&self) -> Result<Mode> {
        Ok(if self.config()?.flags & SHIELD_F_DRY_RUN != 0 {
            Mode::DryRun
        } else {
            Mode::Enforce
        })
    }

    /// Sets (or with `None` removes) the per-source rate limit.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) -> Result<()> {
        let mut config = self.config()?;
        config.rate_pps = limit.map_or(0, |l| l.pps);
        config.rate_burst = limit.map_or(0, |l| l.burst);
        self.set_config(&config)
    }

    /// Reports one drop in `n` (per CPU) as an event; 0 turns events off.
    pub fn set_sample_rate(&self, n: u32) -> Result<()> {
        let mut config = self.config()?;
        config.sample_rate = n;
        self.set_config(&config)
    }

    /// Packets and bytes counted under `rule_id`, summed over CPUs.
    pub fn rule_counter(&self, rule_id: u32) -> Result<Counter> {
        self.object.percpu(RULE_COUNTERS, rule_id)
    }

    /// Every global total, summed over CPUs.
    pub fn totals(&self) -> Result<Vec<(ShieldTotal, Counter)>> {
        ShieldTotal::ALL
            .iter()
            .map(|t| Ok((*t, self.object.percpu(TOTALS, *t as u32)?)))
            .collect()
    }

    /// One total, summed over CPUs.
    pub fn total(&self, which: ShieldTotal) -> Result<Counter> {
        self.object.percpu(TOTALS, which as u32)
    }

    /// Runs the XDP program on one frame with `BPF_PROG_TEST_RUN` (`repeat` times) and
    /// returns the verdict and the kernel's time per run. Counters count these runs.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<crate::loader::TestRun> {
        self.object.test_run(PROGRAM, frame, repeat)
    }

    /// Attaches the Shield to `iface` through a `bpf_link` (native XDP where the driver
    /// supports it, generic otherwise: see [`XdpAttachment::mode`]). The program is
    /// detached when the returned guard is dropped, unless it is pinned.
    pub fn attach(&self, iface: &str) -> Result<XdpAttachment> {
        let prog = self.object.program(PROGRAM)?;
        XdpAttachment::attach(&prog, Shield::OBJECT, iface, self.object.audit_log())
    }

    /// The pin path of the link on `iface`: `<pin root>/shield/link_<iface>`.
    pub fn link_pin_path(&self, iface: &str) -> PathBuf {
        self.object.pin_dir().join(format!("link_{iface}"))
    }

    /// Attaches to `iface` and pins the link, so enforcement outlives the process. If a
    /// link is already pinned for `iface` (an earlier run, perhaps killed), it is
    /// adopted and this program is swapped into it atomically: no packet goes
    /// unfiltered in between.
    pub fn attach_pinned(&self, iface: &str) -> Result<XdpAttachment> {
        let path = self.link_pin_path(iface);
        let prog = self.object.program(PROGRAM)?;
        if path.exists() {
            return XdpAttachment::adopt(
                &prog,
                Shield::OBJECT,
                iface,
                &path,
                self.object.audit_log(),
            );
        }
        let mut attachment =
            XdpAttachment::attach(&prog, Shield::OBJECT, iface, self.object.audit_log())?;
        attachment.pin(&path)?;
        Ok(attachment)
    }

    /// The drop-event ring buffer, to read together with other sources in one
    /// [`EventReader`].
    pub fn event_source(&self) -> Result<EventSource> {
        Ok(EventSource::new(
            self.object.map(EVENTS)?.handle()?,
            EVENTS,
            None,
        ))
    }

    /// Opens the drop-event ring buffer alone; each decoded event is published to
    /// `fanout`.
    pub fn events(&self, fanout: Arc<Fanout<Event>>) -> Result<EventReader> {
        EventReader::new(vec![self.event_source()?], fanout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_keys_clear_host_bits_and_read_back() {
        let net: IpNetwork = "10.1.2.3/16".parse().expect("cidr");
        let key = lpm_key(net);
        assert_eq!(key, vec![16, 0, 0, 0, 10, 1, 0, 0]);
        assert_eq!(net_of_key(&key), Some("10.1.0.0/16".parse().expect("cidr")));
        let net6: IpNetwork = "fd00::1/8".parse().expect("cidr");
        let key = lpm_key(net6);
        assert_eq!(key.len(), LpmV6Key::SIZE);
        assert_eq!(&key[..5], &[8, 0, 0, 0, 0xfd]);
        assert!(key[5..].iter().all(|b| *b == 0));
        assert_eq!(net_of_key(&key), Some("fd00::/8".parse().expect("cidr")));
        assert_eq!(net_of_key(&[1, 2]), None);
    }
}
