//! Typed Ironclad events: total decoding of ring-buffer records ([`decode()`]) and
//! delivery to many consumers with exact loss accounting ([`Fanout`]).
//!
//! A [`Fanout`] hands every published event to each subscriber through its own bounded
//! queue. A slow subscriber never stalls the publisher or the others: its overflow policy
//! decides which of its events it loses, and every loss is counted.
//!
//! ```
//! use ironclad_events::{Fanout, Overflow};
//!
//! let fanout = Fanout::new();
//! let logger = fanout.subscribe("logger", 1024, Overflow::DropNewest);
//! let dashboard = fanout.subscribe("dashboard", 2, Overflow::DropOldest);
//! for n in 0..5u32 {
//!     fanout.publish(&n);
//! }
//! assert_eq!(logger.receiver().try_iter().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
//! assert_eq!(dashboard.receiver().try_iter().collect::<Vec<_>>(), [3, 4]);
//! let s = dashboard.stats();
//! assert_eq!((s.published, s.delivered, s.dropped), (5, 2, 3));
//! ```
//!
//! Every event record is `#[non_exhaustive]` (a field added later is not a breaking
//! change), so an agent's own tests build one with its constructor (the fields without
//! a neutral value: addresses, verdict, direction) or `Default`, then set fields:
//!
//! ```
//! use ironclad_core::abi::EgressAction;
//! use ironclad_events::{Actor, EgressDecision, Event};
//!
//! let mut actor = Actor::default();
//! actor.pid = 4242;
//! actor.comm = "curl".to_string();
//! let mut refused = EgressDecision::new(EgressAction::Deny, "192.0.2.1".parse()?);
//! refused.dport = 443;
//! refused.actor = actor;
//! let json = Event::Connect(refused).to_json();
//! assert!(json.contains(r#""dport":443"#) && json.contains(r#""comm":"curl""#), "{json}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod decode;
pub mod dns;
pub mod fanout;
pub mod http;
pub mod process;

pub use decode::{
    decode, proto_name, Actor, AuditEntry, BandwidthSample, DecodeError, DlpFinding,
    DnsPolicyRecord, DnsRecord, EgressDecision, Event, FirewallMatch, FlowRecord, IdsAlert,
    LimitRecord, ProcessCacheNotice, SentinelRecord, ShieldDrop, TlsData, TlsDirection,
};
pub use fanout::{Fanout, Overflow, SubscriberStats, Subscription};
pub use http::Http;
pub use process::{Ancestor, Container, ExeFile, ProcessBlock};
