//! Ironclad's policy model and its pure, deterministic compilation to kernel map keys.
//!
//! This crate never touches the kernel: a policy (the *spec*) is validated and compiled
//! here, and `ironclad-bpf` writes the result into maps (the *object*). Compilation
//! reports every problem at once, each naming the field it is about.
//!
//! ```
//! use ironclad_policy::shield::{compile, ShieldPolicy};
//!
//! let policy = ShieldPolicy {
//!     deny: vec!["203.0.113.0/24".parse()?, "2001:db8:bad::/48".parse()?],
//!     allow: vec!["203.0.113.7/32".parse()?],
//!     management: vec!["192.0.2.10/32".parse()?],
//!     dry_run: false,
//! };
//! let compiled = compile(&policy).map_err(|e| format!("{e:?}"))?;
//! assert_eq!(compiled.ipv4_prefixes(), 2);
//! assert_eq!(compiled.ipv6_prefixes(), 1);
//! assert_eq!(compiled.rules[2].origin, "shield.allow[0]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod error;
pub mod shield;

pub use error::PolicyError;
