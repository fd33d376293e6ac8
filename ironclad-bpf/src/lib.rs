//! Ironclad's eBPF programs, embedded in the binary, with an audited loader, pinning,
//! an audit log and attach handles.
//!
//! Every object in `bpf-src/` is compiled at build time (clang, CO-RE) and embedded with
//! `include_bytes!`; no `.o` file is read at run time, and libbpf, libelf and zlib are
//! linked statically. [`Loader::load`] audits each program's helper and kfunc calls
//! against an [`Allowlist`] before anything reaches the kernel, loads the object, and
//! pins its maps under a pin root so state outlives the process. Every load, audit
//! result, pin, attach, detach and map update is written to an [`AuditSink`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use ironclad_bpf::{JsonLinesFile, Loader, Shield};
//! use ironclad_core::abi::Action;
//!
//! let loader = Loader::builder()
//!     .pin_root("/sys/fs/bpf/ironclad")
//!     .audit_sink(Arc::new(JsonLinesFile::open("/var/log/ironclad-audit.jsonl")?))
//!     .build()?;
//! let shield = Shield::load(&loader)?; // audited, loaded, maps pinned (or reused)
//! shield.insert_rule("198.51.100.0/24".parse()?, 1, Action::Deny)?;
//! let _attachment = shield.attach("eth0")?; // detaches on drop unless pinned
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Minimum kernel
//! XDP through `bpf_link`: Linux 5.9. The loader itself needs `CAP_BPF`,
//! `CAP_PERFMON` and `CAP_NET_ADMIN` (root has them) and a bpffs for pins.

pub mod attach;
pub mod audit;
pub mod auditlog;
mod classes;
pub mod egress;
pub mod error;
pub mod events;
pub mod firewall;
pub mod ids;
pub mod kernel;
pub mod loader;
pub mod names;
pub mod object;
pub mod process;
mod procs;
pub mod quarantine;
pub mod scrub;
pub mod sentinel;
pub mod shield;
pub mod tc;
pub mod telemetry;
pub mod tls;

pub use attach::{
    ifindex, link_health, xdp_tx_path, LinkHealth, XdpAttachment, XdpMode, XdpTxPath,
};
pub use audit::{audit_object, Allowlist, AuditReport, Callee, Reason, Violation};
pub use auditlog::{
    AuditAction, AuditLog, AuditRecord, AuditSink, FanoutSink, JsonLinesFile, MemorySink, NullSink,
    Outcome, TeeSink,
};
pub use egress::{CgroupAttachment, EgressFirewall, EgressReport, EgressStatus, ProcessEntry};
pub use error::{BpfError, KernelError, Result};
#[cfg(feature = "tokio")]
pub use events::EventStream;
pub use events::{EventReader, EventSource, EventStats};
pub use firewall::{
    interface_address, AcceptHook, Connection, Firewall, FirewallAttachment, FirewallReport,
    FirewallSettings, FirewallStatus, Forward, FwLimitKind, FwRuleLabel, LimitRate, LimitSettings,
    NatSettings, NatStatus, SourceNat, Sweep, SynFloodSettings, SynMode, Translation,
    DEFAULT_RULE_NAME,
};
pub use ids::{IdsMatcher, IdsSettings, IdsStats};
/// The counters [`Shield::total`] and [`EgressFirewall::total`] take, re-exported so an
/// embedder needs no other crate to read them.
pub use ironclad_core::abi::{Counter, EgressTotal, ShieldTotal};
pub use loader::{
    AuditedMap, LoadedObject, Loader, LoaderBuilder, PinnedMap, TestRun, VerifierStats,
    DEFAULT_PIN_ROOT, VERIFIER_BUDGET,
};
pub use object::EmbeddedObject;
pub use process::{ProcessCacheStats, ProcessMonitor};
pub use quarantine::{Quarantine, QuarantineAction, QuarantineAttachment};
pub use scrub::{ScrubAttachment, ScrubSettings, Scrubber};
pub use sentinel::{RegisterError, SentinelLsm};
pub use shield::{
    Ipv4Path, Ipv6Path, MapMemory, ReplaceReport, RuleLabel, RuleStatus, Shield, ShieldStatus,
    IN_PLACE_MAX,
};
pub use tc::TcMechanism;
pub use telemetry::Telemetry;
pub use tls::{ProbeSite, TlsAttach, TlsMonitor, TlsPlacement, TlsPolicy, TlsScope};
