//! Ironclad's policy model and its deterministic compilation to kernel map keys.
//!
//! This crate never touches the kernel: a policy (the *spec*) is validated and compiled
//! here, and `ironclad-bpf` writes the result into maps (the *object*). Compilation
//! reports every problem at once, each naming the field it is about. It reads the files
//! a policy names (feeds, executables whose identity a rule takes, the GeoIP database);
//! its network and cryptographic I/O is behind default features: `fetch` (downloading
//! feeds), `geoip` (countries) and `bundle` (signed bundles).
//!
//! ```
//! use std::path::Path;
//! use ironclad_policy::config::compile_str;
//!
//! let yaml = "
//! shield:
//!   deny: [203.0.113.0/24, 2001:db8:bad::/48]
//!   allow: [203.0.113.7]
//!   management: [192.0.2.10]
//! ";
//! let compiled = compile_str(yaml, Path::new("policy.yaml"))?;
//! let shield = compiled.shield.expect("has a shield section");
//! assert_eq!(shield.ipv4_prefixes(), 2);
//! assert_eq!(shield.ipv6_prefixes(), 1);
//! assert_eq!(shield.rules[2].origin, "shield.allow[0]");
//!
//! let err = compile_str("shield:\n  deny: [10.0.0.1/8]\n", Path::new("bad.yaml")).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "bad.yaml:2:10: shield.deny[0]: `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The policy sections, rules and compiled outputs are `#[non_exhaustive]`, so a field
//! added in a later version does not break an embedder: build them from `Default` or a
//! constructor and set the fields a policy file would.
//!
//! ```
//! use ironclad_policy::tls::{TlsPolicy, TlsScope};
//!
//! let mut tls = TlsPolicy::default();
//! tls.scope = vec![TlsScope::Comm("curl".into())];
//! tls.max_bytes = 4096;
//! assert!(tls.dlp.is_none());
//! ```
#![forbid(unsafe_code)]

pub mod aggregate;
#[cfg(feature = "bundle")]
pub mod bundle;
pub mod compact;
pub mod config;
pub mod dlp;
pub mod domains;
pub mod egress;
pub mod error;
pub mod fastpath;
pub mod fastpath6;
pub mod feeds;
pub mod fetch;
pub mod firewall;
mod firewall_section;
pub mod geo;
pub mod host;
pub mod ids;
pub mod nat;
pub mod process;
pub mod runtime;
pub mod sentinel;
pub mod shield;
pub mod sources;
pub mod telemetry;
pub mod tls;

pub use compact::PrefixList;
pub use error::{ConfigError, Diagnostic, Origin, PolicyError};
