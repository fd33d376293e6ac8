//! Shared ABI types, errors and process identity for the Ironclad crates.
//!
//! `ironclad-core` holds what every other Ironclad crate agrees on: the Rust mirrors of
//! the kernel/user ABI header (`bpf-src/include/ironclad.h`), the capability checks that
//! turn `EPERM` into a useful message, and process identity (including the one place
//! where device numbers are converted between the kernel's and user space's encodings).
//!
//! ```
//! use ironclad_core::abi::{Action, LpmV4Key, Rule};
//! use ironclad_core::identity::{kernel_dev_to_user, ProcessIdentity};
//!
//! // The byte images that go into the Shield's LPM trie for 203.0.113.0/24 -> deny.
//! let key = LpmV4Key { prefixlen: 24, addr: [203, 0, 113, 0] };
//! let rule = Rule::new(1, Action::Deny);
//! assert_eq!(key.to_bytes(), [24, 0, 0, 0, 203, 0, 113, 0]);
//! assert_eq!(rule.to_bytes()[4], Action::Deny as u8);
//!
//! // A device number read in BPF, as stat() would report it.
//! assert_eq!(kernel_dev_to_user(266_338_304), 65_024);
//!
//! let me = ProcessIdentity::current()?;
//! assert_eq!(me.pid, std::process::id());
//! # Ok::<(), ironclad_core::CoreError>(())
//! ```
#![forbid(unsafe_code)]

pub mod abi;
pub mod error;
pub mod fsutil;
pub mod identity;
pub mod privilege;

pub use error::CoreError;
