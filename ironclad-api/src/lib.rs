//! Ironclad's control API: gRPC on a Unix socket, so that agents in any language (and
//! the `full_firewall` command line) read the status, list, add and remove rules, and
//! stream events of a running daemon.
//!
//! The contract is `proto/ironclad/control/v1/control.proto` (package
//! `ironclad.control.v1`); [`v1`] is the code generated from it, [`server`] serves an
//! implementation of [`v1::control_server::Control`] on a socket only root may use, and
//! [`client`] connects to one.
//!
//! ```no_run
//! use ironclad_api::v1::{AddRuleRequest, Section};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut api = ironclad_api::client::connect("/run/ironclad/api.sock").await?;
//! let added = api
//!     .add_rule(AddRuleRequest {
//!         section: Section::ShieldDeny as i32,
//!         rule: "203.0.113.0/24".to_string(),
//!         comment: "scanner".to_string(),
//!     })
//!     .await?
//!     .into_inner();
//! println!("enforced as {} after {} us", added.id, added.applied_micros);
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod contract;
pub mod server;

/// The code generated from `control.proto` (messages, the `Control` service's server
/// trait and client).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("ironclad.control.v1");
}

/// The encoded `FileDescriptorSet` of `control.proto`, as compiled into this crate.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/control_v1_descriptor.bin"));

/// Where the reference daemon serves the API by default.
pub const DEFAULT_SOCKET: &str = "/run/ironclad/api.sock";

/// What can go wrong setting up the API's socket or connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A file-system step on the socket's path failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The socket's path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something other than a socket is at the path: it is not removed.
    #[error("{0} exists and is not a socket: not replaced")]
    NotASocket(std::path::PathBuf),
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The descriptor set compiled in could not be decoded.
    #[error("the compiled descriptor set: {0}")]
    Descriptor(#[from] prost::DecodeError),
}
