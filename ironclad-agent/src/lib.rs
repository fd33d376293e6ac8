//! What every agent embedding Ironclad needs around the kernel features.
//!
//! The kernel features live in `ironclad-bpf` and `ironclad-sentinel`; this crate holds
//! the machinery an agent wraps them in, so that an EDR, a fleet agent and the
//! reference daemon `full_firewall` do not each write it again:
//!
//! - [`features`]: every kernel feature behind one trait, started, reloaded, rolled
//!   back and stopped by one supervisor that reads all their events;
//! - [`health`]: which configured features run and which do not, a heartbeat, a file
//!   other processes read, and the liveness/readiness [`probe`](health::probe);
//! - [`confirm`]: commit-confirm reloads, rolled back by the agent itself unless the
//!   operator confirms in time;
//! - [`feeds`]: noticing changed feed files and (feature `fetch`) downloading feeds.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use ironclad_agent::confirm::{ConfirmWindow, WindowOutcome};
//! use ironclad_agent::health::{self, FeatureState, Health};
//!
//! let run_dir = tempfile::tempdir()?;
//! let health = Health::new(run_dir.path());
//! health.features(BTreeMap::from([(
//!     "shield".to_string(),
//!     FeatureState::up("xdp on eth0"),
//! )]));
//! health.beat(); // every turn of the control loop
//! assert!(health::probe(run_dir.path(), true).healthy);
//!
//! // Reloads are provisional for a minute: what the agent enforced before comes back
//! // unless `ironclad_agent::confirm::confirm(run_dir, "my-agent")` is called in time.
//! let mut window = ConfirmWindow::start(Duration::from_secs(60), run_dir.path(), "my-agent")?;
//! window.provisional("the policy before the reload", "/etc/agent/policy.yaml".as_ref());
//! match window.poll() {
//!     Some(WindowOutcome::Expired(previous)) => println!("apply {previous} again"),
//!     Some(WindowOutcome::Confirmed) => println!("confirmed"),
//!     None => {} // still waiting
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod confirm;
pub mod error;
pub mod features;
pub mod feeds;
pub mod health;

pub use error::{AgentError, Result};
