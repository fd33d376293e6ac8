//! Quarantine (`bpf-src/quarantine.bpf.c`): sources in an IOC set are tagged with a
//! VLAN or redirected to another interface instead of being dropped.
//!
//! Useful when dropping would tell the attacker they were seen, or lose what they do
//! next: on a gateway, the switch puts a compromised internal host's traffic (tagged on
//! egress) into a quarantine VLAN where it reaches only remediation servers; on a
//! host, an attacker's packets (tagged on ingress) arrive through a VLAN sub-interface
//! where a honeypot answers, or are redirected to a sandbox or capture interface.
//!
//! ```no_run
//! use ironclad_bpf::{Loader, Quarantine, QuarantineAction};
//! let loader = Loader::builder().build()?;
//! let quarantine = Quarantine::load(&loader)?;
//! quarantine.set(&["198.51.100.0/24".parse()?], QuarantineAction::Vlan(666))?;
//! let _attached = quarantine.attach("eth0")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ipnetwork::IpNetwork;
use ironclad_core::abi::{
    self, Counter, QuarantineTotal, QUARANTINE_PREFIXES, QUARANTINE_REDIRECT,
    QUARANTINE_REDIRECT_INGRESS, QUARANTINE_VLAN,
};

use crate::attach::{ifindex, percpu_total};
use crate::error::{BpfError, Result};
use crate::loader::{LoadedObject, Loader};
use crate::names::quarantine as names;
use crate::shield::plan::lpm_key;
use crate::tc::{priority, TcMechanism, TcPrograms};

/// What a source in the IOC set gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuarantineAction {
    /// An 802.1Q tag with this VLAN id (1..=4094), then on its way.
    Vlan(u16),
    /// Out of this interface instead.
    Redirect(String),
    /// Into this interface, as if it had arrived there (a veth's far end: a sandbox
    /// namespace).
    RedirectIngress(String),
}

impl QuarantineAction {
    fn to_abi(&self) -> Result<abi::QuarantineAction> {
        match self {
            QuarantineAction::Vlan(vid) if (1..=4094).contains(vid) => Ok(abi::QuarantineAction {
                ifindex: 0,
                vlan: *vid,
                kind: QUARANTINE_VLAN,
                _pad0: 0,
            }),
            QuarantineAction::Vlan(vid) => Err(BpfError::InvalidConfig {
                field: "quarantine.vlan",
                reason: format!("{vid}: a VLAN id is 1..=4094"),
            }),
            QuarantineAction::Redirect(iface) | QuarantineAction::RedirectIngress(iface) => {
                Ok(abi::QuarantineAction {
                    ifindex: ifindex(iface)?,
                    vlan: 0,
                    kind: if matches!(self, QuarantineAction::Redirect(_)) {
                        QUARANTINE_REDIRECT
                    } else {
                        QUARANTINE_REDIRECT_INGRESS
                    },
                    _pad0: 0,
                })
            }
        }
    }
}

/// The quarantine's programs on one interface; dropping it detaches them.
#[must_use = "dropping a QuarantineAttachment detaches the quarantine"]
#[derive(Debug)]
pub struct QuarantineAttachment {
    links: TcPrograms,
}

impl QuarantineAttachment {
    /// The interface.
    pub fn iface(&self) -> &str {
        self.links.iface()
    }

    /// The interface's index (what the Sentinel protects).
    pub fn ifindex(&self) -> u32 {
        self.links.ifindex()
    }

    /// How the programs are hooked (tcx links, or classic tc filters where the
    /// kernel has no tcx).
    pub fn mechanism(&self) -> TcMechanism {
        self.links.mechanism()
    }

    /// The links' kernel ids (as `bpftool link show` lists them), e.g. for the
    /// Sentinel to protect them; none for classic tc filters.
    pub fn link_ids(&self) -> Result<Vec<u32>> {
        self.links.link_ids()
    }
}

/// The loaded quarantine: its IOC set and totals.
#[derive(Debug)]
pub struct Quarantine {
    object: LoadedObject,
}

impl Quarantine {
    /// Checks `attachment`'s hooks against the kernel and puts back what was undone
    /// from outside (a link detached or a classic filter deleted is attached anew, a
    /// program swapped into either is swapped out), each with an audit record
    /// (`repair`); one result per program:
    /// `Ok(None)` all was well, `Ok(Some(what))` what was put back, an error what
    /// could not be.
    pub fn verify(&self, attachment: &mut QuarantineAttachment) -> Vec<Result<Option<String>>> {
        attachment.links.verify(&self.object)
    }

    /// Name of the BPF object.
    pub const OBJECT: &'static str = "quarantine";

    /// Loads the programs (not attached; the IOC set empty).
    pub fn load(loader: &Loader) -> Result<Self> {
        Ok(Self {
            object: loader.load_unpinned(crate::object::quarantine())?,
        })
    }

    /// Puts `prefixes` in the IOC set with `action` (added to what is there; a prefix
    /// already there takes the new action).
    pub fn set(&self, prefixes: &[IpNetwork], action: QuarantineAction) -> Result<()> {
        let value = action.to_abi()?.to_bytes();
        let (v4, v6): (Vec<&IpNetwork>, Vec<&IpNetwork>) =
            prefixes.iter().partition(|p| p.is_ipv4());
        for (map, set) in [(names::ic_quarantine_v4, v4), (names::ic_quarantine_v6, v6)] {
            if set.len() > QUARANTINE_PREFIXES as usize {
                return Err(BpfError::InvalidConfig {
                    field: "quarantine.sources",
                    reason: format!(
                        "{} prefixes of one family: at most {QUARANTINE_PREFIXES}",
                        set.len()
                    ),
                });
            }
            let keys: Vec<Vec<u8>> = set.iter().map(|p| lpm_key(**p)).collect();
            self.object
                .map(map)?
                .update_many(keys.iter().map(|k| (k.as_slice(), value.as_slice())))?;
        }
        Ok(())
    }

    /// Takes `prefixes` out of the IOC set; how many were in it.
    pub fn remove(&self, prefixes: &[IpNetwork]) -> Result<usize> {
        let mut removed = 0;
        for p in prefixes {
            let map = if p.is_ipv4() {
                names::ic_quarantine_v4
            } else {
                names::ic_quarantine_v6
            };
            if self.object.map(map)?.delete(&lpm_key(*p))? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Attaches the programs to `iface` (ingress and egress).
    pub fn attach(&self, iface: &str) -> Result<QuarantineAttachment> {
        let links = TcPrograms::attach(
            TcMechanism::probe(),
            &self.object,
            Self::OBJECT,
            "the quarantine (tcx hooks)",
            &[
                (names::ic_quarantine_in, "ingress"),
                (names::ic_quarantine_out, "egress"),
            ],
            iface,
            priority::QUARANTINE,
        )?;
        Ok(QuarantineAttachment { links })
    }

    /// One total, summed over CPUs.
    pub fn total(&self, which: QuarantineTotal) -> Result<Counter> {
        percpu_total(&self.object, names::ic_quarantine_totals, which as u32)
    }

    /// The loaded object.
    pub fn object(&self) -> &LoadedObject {
        &self.object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vlan_id_outside_the_802_1q_range_is_refused() {
        for vid in [0, 4095, 5000] {
            assert!(QuarantineAction::Vlan(vid).to_abi().is_err(), "{vid}");
        }
        let ok = QuarantineAction::Vlan(666).to_abi().unwrap_or_default();
        assert_eq!((ok.kind, ok.vlan), (QUARANTINE_VLAN, 666));
    }
}
