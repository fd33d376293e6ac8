//! Packet scrubbing (`bpf-src/scrub.bpf.c`): tcx programs that normalise what leaves
//! (and, if asked, what arrives on) the interfaces an operator chooses: a TTL /
//! hop-limit floor, MSS clamping on SYNs, DF clearing and IPv4 ID randomisation, every
//! checksum kept right. Opt-in per interface; it never drops a packet.
//!
//! ```no_run
//! use ironclad_bpf::{Loader, ScrubSettings, Scrubber};
//! let loader = Loader::builder().build()?;
//! let scrubber = Scrubber::load(&loader)?;
//! let settings = ScrubSettings { ttl_floor: 64, mss_max: 1360, clear_df: true, ..ScrubSettings::default() };
//! scrubber.set("wg0", &settings)?;
//! let _attached = scrubber.attach("wg0")?;
//! # Ok::<(), ironclad_bpf::BpfError>(())
//! ```

use ironclad_core::abi::{
    Counter, ScrubConfig, ScrubTotal, SCRUB_F_CLEAR_DF, SCRUB_F_INGRESS, SCRUB_F_RANDOM_ID,
};

use crate::attach::{ifindex, percpu_total};
use crate::error::{BpfError, Result};
use crate::loader::{LoadedObject, Loader};
use crate::names::scrub as names;
use crate::tc::{priority, TcMechanism, TcPrograms};

/// What the scrubber does to one interface's packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubSettings {
    /// Raise a lower IPv4 TTL to this (0: leave it).
    pub ttl_floor: u8,
    /// Raise a lower IPv6 hop limit to this (0: leave it).
    pub hop_limit_floor: u8,
    /// Lower a larger MSS option of TCP SYNs and SYN-ACKs to this (0: leave it).
    pub mss_max: u16,
    /// Clear the IPv4 Don't Fragment bit.
    pub clear_df: bool,
    /// Give unfragmented IPv4 packets a random identification.
    pub random_ip_id: bool,
    /// Scrub arriving packets too (else leaving ones only).
    pub ingress: bool,
}

impl ScrubSettings {
    /// Refuses settings that would break traffic rather than normalise it.
    pub fn check(&self) -> Result<()> {
        if self.mss_max != 0 && self.mss_max < 536 {
            return Err(BpfError::InvalidConfig {
                field: "scrub.mss_max",
                reason: format!(
                    "{}: below 536, the least every IPv4 host must accept",
                    self.mss_max
                ),
            });
        }
        Ok(())
    }

    fn to_config(self) -> ScrubConfig {
        let mut flags = 0;
        if self.clear_df {
            flags |= SCRUB_F_CLEAR_DF;
        }
        if self.random_ip_id {
            flags |= SCRUB_F_RANDOM_ID;
        }
        if self.ingress {
            flags |= SCRUB_F_INGRESS;
        }
        ScrubConfig {
            ttl_floor: self.ttl_floor,
            hop_floor: self.hop_limit_floor,
            mss_max: self.mss_max,
            flags,
        }
    }
}

/// The scrubber's programs attached to one interface; dropping it detaches them.
#[must_use = "dropping a ScrubAttachment detaches the scrubber"]
#[derive(Debug)]
pub struct ScrubAttachment {
    links: TcPrograms,
}

impl ScrubAttachment {
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

/// The loaded scrubber: its per-interface configuration and totals.
#[derive(Debug)]
pub struct Scrubber {
    object: LoadedObject,
}

impl Scrubber {
    /// Checks `attachment`'s hooks against the kernel and puts back what was undone
    /// from outside (a link detached or a classic filter deleted is attached anew, a
    /// program swapped into either is swapped out), each with an audit record
    /// (`repair`); one result per program:
    /// `Ok(None)` all was well, `Ok(Some(what))` what was put back, an error what
    /// could not be.
    pub fn verify(&self, attachment: &mut ScrubAttachment) -> Vec<Result<Option<String>>> {
        attachment.links.verify(&self.object)
    }

    /// Name of the BPF object.
    pub const OBJECT: &'static str = "scrub";

    /// Loads the programs (not attached; no interface configured).
    pub fn load(loader: &Loader) -> Result<Self> {
        Ok(Self {
            object: loader.load_unpinned(crate::object::scrub())?,
        })
    }

    /// Sets what `iface` gets (before or after attaching).
    pub fn set(&self, iface: &str, settings: &ScrubSettings) -> Result<()> {
        settings.check()?;
        let index = ifindex(iface)?;
        self.object
            .map(names::ic_scrub_config)?
            .update(&index.to_ne_bytes(), &settings.to_config().to_bytes())
    }

    /// Stops scrubbing `iface` (its hooks, if still attached, pass everything);
    /// whether it was configured.
    pub fn unset(&self, iface: &str) -> Result<bool> {
        let index = ifindex(iface)?;
        self.object
            .map(names::ic_scrub_config)?
            .delete(&index.to_ne_bytes())
    }

    /// What `iface` gets, if it is configured.
    pub fn settings(&self, iface: &str) -> Result<Option<ScrubConfig>> {
        let index = ifindex(iface)?;
        Ok(self
            .object
            .map(names::ic_scrub_config)?
            .lookup(&index.to_ne_bytes())?
            .and_then(|b| ScrubConfig::from_bytes(&b)))
    }

    /// Attaches both programs to `iface` (the ingress one does nothing unless the
    /// interface's settings ask for arriving packets).
    pub fn attach(&self, iface: &str) -> Result<ScrubAttachment> {
        let links = TcPrograms::attach(
            TcMechanism::probe(),
            &self.object,
            Self::OBJECT,
            "scrubbing (tcx hooks)",
            &[
                (names::ic_scrub_out, "egress"),
                (names::ic_scrub_in, "ingress"),
            ],
            iface,
            priority::SCRUB,
        )?;
        Ok(ScrubAttachment { links })
    }

    /// One total, summed over CPUs.
    pub fn total(&self, which: ScrubTotal) -> Result<Counter> {
        percpu_total(&self.object, names::ic_scrub_totals, which as u32)
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
    fn settings_become_the_kernels_config_and_a_tiny_mss_is_refused() {
        let s = ScrubSettings {
            ttl_floor: 64,
            hop_limit_floor: 32,
            mss_max: 1360,
            clear_df: true,
            random_ip_id: true,
            ingress: false,
        };
        let c = s.to_config();
        assert_eq!((c.ttl_floor, c.hop_floor, c.mss_max), (64, 32, 1360));
        assert_eq!(c.flags, SCRUB_F_CLEAR_DF | SCRUB_F_RANDOM_ID);
        assert!(s.check().is_ok());
        let tiny = ScrubSettings {
            mss_max: 100,
            ..ScrubSettings::default()
        };
        assert!(tiny.check().is_err());
    }
}
