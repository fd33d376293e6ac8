//! `--iface`: the interfaces the Shield attaches to, named or `auto` (the interfaces
//! of the default routes, so one DaemonSet or unit fits nodes whose uplink is called
//! differently).

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

/// The word `--iface` takes for the default-route interfaces.
pub(crate) const AUTO: &str = "auto";

/// `--iface` values with `auto` replaced by the interfaces of the IPv4 and IPv6 default
/// routes of the daemon's network namespace (each once, in the order given).
pub(crate) fn resolve(given: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in given {
        if name == AUTO {
            let found = default_route_interfaces()?;
            if found.is_empty() {
                bail!("--iface auto: this network namespace has no default route (IPv4 or IPv6); name the interfaces instead");
            }
            for iface in found {
                if !out.contains(&iface) {
                    out.push(iface);
                }
            }
        } else if !out.contains(name) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// The interfaces the default routes of the daemon's network namespace leave through
/// (the policy's `auto` selector reads the same: [`ironclad_policy::host`]).
pub(crate) fn default_route_interfaces() -> Result<BTreeSet<String>> {
    ironclad_policy::host::default_route_interfaces()
        .context("reading the default routes (/proc/thread-self/net/route, ipv6_route)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_interfaces_keep_their_order_and_appear_once() {
        let given = ["eth1", "eth0", "eth1"].map(String::from);
        assert_eq!(
            resolve(&given).expect("named only"),
            vec!["eth1".to_string(), "eth0".to_string()]
        );
    }
}
