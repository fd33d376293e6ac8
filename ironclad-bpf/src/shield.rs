//! The Shield: an XDP source-address firewall (`bpf-src/shield.bpf.c`).
//!
//! For every IPv4/IPv6 packet the program checks, in order: the management safety valve
//! (always passes), then the longest matching prefix in the rule trie of the packet's
//! family (deny drops, allow passes: an allow inside a denied range wins because it is
//! longer), then passes. Non-IP and malformed frames pass and are counted.
//!
//! ```no_run
//! use ironclad_bpf::{Loader, Shield};
//! use ironclad_core::abi::Action;
//!
//! let loader = Loader::builder().build()?;
//! let shield = Shield::load(&loader)?;
//! shield.insert_rule("203.0.113.0/24".parse()?, 1, Action::Deny)?;
//! shield.add_valve("192.0.2.10/32".parse()?)?;
//! let mut attachment = shield.attach("eth0")?;
//! attachment.pin(loader.pin_dir("shield").join("link_eth0"))?;
//! println!("{:?}", shield.rule_counter(1)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ipnetwork::IpNetwork;
use ironclad_core::abi::{
    Action, Counter, LpmV4Key, LpmV6Key, Rule, ShieldConfig, ShieldTotal, SHIELD_F_DRY_RUN,
    SHIELD_MAX_RULES,
};

use ironclad_policy::shield::CompiledShield;

use crate::attach::XdpAttachment;
use crate::error::{BpfError, Result};
use crate::loader::{LoadedObject, Loader};

const RULES_V4: &str = "ic_rules_v4";
const RULES_V6: &str = "ic_rules_v6";
const VALVE_V4: &str = "ic_valve_v4";
const VALVE_V6: &str = "ic_valve_v6";
const RULE_COUNTERS: &str = "ic_rule_counters";
const TOTALS: &str = "ic_totals";
const CONFIG: &str = "ic_shield_config";
const PROGRAM: &str = "ic_shield_xdp";

/// The LPM key bytes of `net` (host bits cleared).
fn lpm_key(net: IpNetwork) -> Vec<u8> {
    match net {
        IpNetwork::V4(n) => LpmV4Key {
            prefixlen: u32::from(n.prefix()),
            addr: n.network().octets(),
        }
        .to_bytes()
        .to_vec(),
        IpNetwork::V6(n) => LpmV6Key {
            prefixlen: u32::from(n.prefix()),
            addr: n.network().octets(),
        }
        .to_bytes()
        .to_vec(),
    }
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

    /// The loaded object (pins, maps, audit log).
    pub fn object(&self) -> &LoadedObject {
        &self.object
    }

    /// Writes a compiled policy into the kernel: the safety valve first (so management
    /// traffic is never cut off while rules arrive), then the mode, then every rule.
    /// Rules already loaded and not in `policy` stay; on a kernel error, the entries
    /// this call added are removed again before the error is returned.
    pub fn apply(&self, policy: &CompiledShield) -> Result<()> {
        let mut added: Vec<IpNetwork> = Vec::new();
        let result = (|| {
            for net in &policy.management {
                self.add_valve(*net)?;
            }
            self.set_dry_run(policy.dry_run)?;
            for rule in &policy.rules {
                if self.rule(rule.cidr)?.is_none() {
                    added.push(rule.cidr);
                }
                self.insert_rule(rule.cidr, rule.id, rule.action)?;
            }
            Ok(())
        })();
        if result.is_err() {
            for net in added {
                let _ = self.remove_rule(net);
            }
        }
        result
    }

    /// Adds or replaces the rule for `net`: packets whose source it covers (and no
    /// longer prefix covers) are counted under `rule_id` and dropped (`Deny`) or passed
    /// (`Allow`).
    pub fn insert_rule(&self, net: IpNetwork, rule_id: u32, action: Action) -> Result<()> {
        if rule_id >= SHIELD_MAX_RULES {
            return Err(BpfError::BadSize {
                map: RULE_COUNTERS.to_string(),
                what: "rule id",
                got: rule_id as usize,
                expected: SHIELD_MAX_RULES as usize - 1,
            });
        }
        let map = if net.is_ipv4() { RULES_V4 } else { RULES_V6 };
        self.object
            .map(map)?
            .update(&lpm_key(net), &Rule::new(rule_id, action).to_bytes())
    }

    /// The rule stored for exactly `net`, if any.
    pub fn rule(&self, net: IpNetwork) -> Result<Option<Rule>> {
        let map = if net.is_ipv4() { RULES_V4 } else { RULES_V6 };
        Ok(self
            .object
            .map(map)?
            .lookup(&lpm_key(net))?
            .and_then(|bytes| Rule::from_bytes(&bytes)))
    }

    /// Removes the rule for exactly `net`; `Ok(false)` if there was none.
    pub fn remove_rule(&self, net: IpNetwork) -> Result<bool> {
        let map = if net.is_ipv4() { RULES_V4 } else { RULES_V6 };
        self.object.map(map)?.delete(&lpm_key(net))
    }

    /// Adds `net` to the management safety valve: its traffic always passes.
    pub fn add_valve(&self, net: IpNetwork) -> Result<()> {
        let map = if net.is_ipv4() { VALVE_V4 } else { VALVE_V6 };
        self.object
            .map(map)?
            .update(&lpm_key(net), &1u32.to_ne_bytes())
    }

    /// Turns dry-run on (count and report, never drop) or off.
    pub fn set_dry_run(&self, dry_run: bool) -> Result<()> {
        let mut config = self.config()?;
        config.flags = if dry_run {
            config.flags | SHIELD_F_DRY_RUN
        } else {
            config.flags & !SHIELD_F_DRY_RUN
        };
        self.set_config(&config)
    }

    /// Whether dry-run is on.
    pub fn dry_run(&self) -> Result<bool> {
        let bytes = self.object.map(CONFIG)?.lookup(&0u32.to_ne_bytes())?;
        Ok(bytes
            .and_then(|b| ShieldConfig::from_bytes(&b))
            .is_some_and(|c| c.flags & SHIELD_F_DRY_RUN != 0))
    }

    fn percpu_sum(&self, map: &str, index: u32) -> Result<Counter> {
        let values = self.object.map(map)?.lookup_percpu(&index.to_ne_bytes())?;
        let per_cpu: Vec<Counter> = values
            .unwrap_or_default()
            .iter()
            .filter_map(|v| Counter::from_bytes(v))
            .collect();
        Ok(Counter::sum(&per_cpu))
    }

    /// Packets and bytes counted under `rule_id`, summed over CPUs.
    pub fn rule_counter(&self, rule_id: u32) -> Result<Counter> {
        self.percpu_sum(RULE_COUNTERS, rule_id)
    }

    /// Every global total, summed over CPUs.
    pub fn totals(&self) -> Result<Vec<(ShieldTotal, Counter)>> {
        ShieldTotal::ALL
            .iter()
            .map(|t| Ok((*t, self.percpu_sum(TOTALS, *t as u32)?)))
            .collect()
    }

    /// Runs the XDP program on one frame with `BPF_PROG_TEST_RUN` (`repeat` times) and
    /// returns the verdict and the kernel's time per run. Counters count these runs.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<crate::loader::TestRun> {
        self.object.test_run(PROGRAM, frame, repeat)
    }

    /// Attaches the Shield to `iface` through a `bpf_link` (native XDP where the driver
    /// supports it, generic otherwise).
    pub fn attach(&self, iface: &str) -> Result<XdpAttachment> {
        let prog = self.object.program(PROGRAM)?;
        XdpAttachment::attach(&prog, Shield::OBJECT, iface, self.object.audit_log())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_keys_clear_host_bits() {
        let net: IpNetwork = "10.1.2.3/16".parse().expect("cidr");
        assert_eq!(lpm_key(net), vec![16, 0, 0, 0, 10, 1, 0, 0]);
        let net6: IpNetwork = "fd00::1/8".parse().expect("cidr");
        let key = lpm_key(net6);
        assert_eq!(key.len(), LpmV6Key::SIZE);
        assert_eq!(&key[..5], &[8, 0, 0, 0, 0xfd]);
        assert!(key[5..].iter().all(|b| *b == 0));
    }
}
