//! Errors of `ironclad-policy`.

use ipnetwork::IpNetwork;

/// A policy that cannot be compiled. Each variant names the offending field, written as
/// its path in the policy (`shield.deny[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A CIDR has bits set below its prefix length (`10.0.0.1/8`).
    #[error("{field}: `{cidr}` has host bits set; did you mean `{network}`?")]
    HostBitsSet {
        /// Where in the policy.
        field: String,
        /// As written.
        cidr: IpNetwork,
        /// The network it probably means.
        network: IpNetwork,
    },
    /// The same prefix is both denied and allowed.
    #[error("{field}: `{cidr}` is also listed at {other}, with the opposite action")]
    Conflict {
        /// Where in the policy.
        field: String,
        /// The prefix.
        cidr: IpNetwork,
        /// Where it was listed first.
        other: String,
    },
    /// More rules than the kernel's counter array holds.
    #[error("{field}: {count} rules exceed the limit of {limit}")]
    TooManyRules {
        /// Where in the policy.
        field: String,
        /// How many rules the policy has.
        count: usize,
        /// The limit.
        limit: u32,
    },
}
