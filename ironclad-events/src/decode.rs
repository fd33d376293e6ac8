//! Total decoding of ring-buffer records into typed events.
//!
//! Every record starts with an [`EventHeader`]. Decoding never panics on any input: a
//! record that is too short, from another ABI version, of an unknown kind or with an
//! inconsistent size is a [`DecodeError`], which callers count rather than misparse.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ironclad_core::abi::{EventHeader, EventKind, ShieldEvent, ShieldVerdict, ABI_VERSION};
use serde::Serialize;

/// A record that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header or the record's kind needs.
    #[error("record of {got} bytes is shorter than the {need} its kind needs")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// The record was written by a different ABI version.
    #[error("record has ABI version {0}, this build understands {ABI_VERSION}")]
    Version(u16),
    /// The kind is not one this build knows.
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
    /// The header's size field disagrees with the record.
    #[error("header says {said} bytes, the record has {got}")]
    SizeMismatch {
        /// The header's size field.
        said: u32,
        /// The record's length.
        got: usize,
    },
    /// A field holds a value outside its enum.
    #[error("field {field} has invalid value {value}")]
    BadField {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
    },
}

/// A packet the Shield dropped (or, in dry-run, would have dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShieldDrop {
    /// `bpf_ktime_get_ns()` when it happened (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP/UDP), 0 if none.
    pub sport: u16,
    /// Destination port (TCP/UDP), 0 if none.
    pub dport: u16,
    /// IP protocol number of the L4 header.
    pub proto: u8,
    /// The rule that matched (0 for the rate limit).
    pub rule_id: u32,
    /// What was done.
    #[serde(serialize_with = "verdict_name")]
    pub verdict: ShieldVerdict,
    /// Ingress interface index.
    pub ifindex: u32,
    /// Frame length.
    pub len: u32,
}

fn verdict_name<S: serde::Serializer>(v: &ShieldVerdict, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.name())
}

/// Every kind of event Ironclad reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A Shield drop or would-drop.
    ShieldDrop(ShieldDrop),
}

impl Event {
    /// The event as one JSON line (no trailing newline), with a `kind` field.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"kind\":\"unserializable\",\"error\":\"{e}\"}}"))
    }
}

fn addr(family: u8, bytes: [u8; 16]) -> Result<IpAddr, DecodeError> {
    match family {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[12], bytes[13], bytes[14], bytes[15],
        ))),
        6 => Ok(IpAddr::V6(Ipv6Addr::from(bytes))),
        other => Err(DecodeError::BadField {
            field: "family",
            value: u64::from(other),
        }),
    }
}

/// Decodes one record.
pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
    let header = EventHeader::from_bytes(record).ok_or(DecodeError::Truncated {
        need: EventHeader::SIZE,
        got: record.len(),
    })?;
    if header.version != ABI_VERSION as u16 {
        return Err(DecodeError::Version(header.version));
    }
    if header.size as usize != record.len() {
        return Err(DecodeError::SizeMismatch {
            said: header.size,
            got: record.len(),
        });
    }
    match header.kind {
        k if k == EventKind::Shield as u16 => {
            let e = ShieldEvent::from_bytes(record).ok_or(DecodeError::Truncated {
                need: ShieldEvent::SIZE,
                got: record.len(),
            })?;
            let verdict = ShieldVerdict::from_raw(e.verdict).ok_or(DecodeError::BadField {
                field: "verdict",
                value: u64::from(e.verdict),
            })?;
            Ok(Event::ShieldDrop(ShieldDrop {
                ktime_ns: e.hdr.ktime_ns,
                src: addr(e.family, e.src)?,
                dst: addr(e.family, e.dst)?,
                sport: e.sport,
                dport: e.dport,
                proto: e.proto,
                rule_id: e.rule_id,
                verdict,
                ifindex: e.ifindex,
                len: e.pkt_len,
            }))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ShieldEvent {
        let mut src = [0u8; 16];
        src[10] = 0xff;
        src[11] = 0xff;
        src[12..].copy_from_slice(&[203, 0, 113, 9]);
        let mut dst = src;
        dst[12..].copy_from_slice(&[192, 0, 2, 1]);
        ShieldEvent {
            hdr: EventHeader {
                version: ABI_VERSION as u16,
                kind: EventKind::Shield as u16,
                size: ShieldEvent::SIZE as u32,
                ktime_ns: 42,
            },
            src,
            dst,
            rule_id: 7,
            ifindex: 3,
            pkt_len: 98,
            sport: 40000,
            dport: 443,
            family: 4,
            proto: 6,
            verdict: ShieldVerdict::Drop as u8,
            _pad0: [0; 5],
        }
    }

    #[test]
    fn decodes_a_shield_drop() {
        let event = decode(&sample().to_bytes()).expect("decodes");
        let Event::ShieldDrop(drop) = &event;
        assert_eq!(drop.src, "203.0.113.9".parse::<IpAddr>().expect("ip"));
        assert_eq!(drop.dst, "192.0.2.1".parse::<IpAddr>().expect("ip"));
        assert_eq!((drop.sport, drop.dport, drop.proto), (40000, 443, 6));
        assert_eq!(drop.rule_id, 7);
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).expect("json");
        assert_eq!(json["kind"], "shield_drop");
        assert_eq!(json["src"], "203.0.113.9");
        assert_eq!(json["verdict"], "drop");
    }

    #[test]
    fn every_prefix_of_a_record_is_an_error_not_a_panic() {
        let bytes = sample().to_bytes();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn unknown_kinds_versions_and_values_are_reported() {
        let mut e = sample();
        e.hdr.kind = 99;
        assert_eq!(decode(&e.to_bytes()), Err(DecodeError::UnknownKind(99)));
        let mut e = sample();
        e.hdr.version = 2;
        assert_eq!(decode(&e.to_bytes()), Err(DecodeError::Version(2)));
        let mut e = sample();
        e.verdict = 9;
        assert!(matches!(
            decode(&e.to_bytes()),
            Err(DecodeError::BadField {
                field: "verdict",
                ..
            })
        ));
        let mut e = sample();
        e.family = 5;
        assert!(matches!(
            decode(&e.to_bytes()),
            Err(DecodeError::BadField {
                field: "family",
                ..
            })
        ));
        let mut long = sample().to_bytes().to_vec();
        long.push(0);
        assert!(matches!(
            decode(&long),
            Err(DecodeError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 100) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (state >> (i % 8)) as u8).collect();
            let _ = decode(&bytes);
        }
    }
}
