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

/// The interfaces the default routes leave through (up routes, `0.0.0.0/0` and
/// `::/0`, loopback excluded).
pub(crate) fn default_route_interfaces() -> Result<BTreeSet<String>> {
    const RTF_UP: u16 = 0x1;
    let mut found = BTreeSet::new();
    for route in procfs::net::route().context("reading the IPv4 routes (/proc/net/route)")? {
        if route.destination.is_unspecified()
            && route.mask.is_unspecified()
            && route.flags & RTF_UP != 0
            && route.iface != "lo"
        {
            found.insert(route.iface);
        }
    }
    // procfs reads only the IPv4 table; the IPv6 one is a fixed-column text table.
    let v6 = match std::fs::read_to_string("/proc/net/ipv6_route") {
        Ok(text) => text,
        // No IPv6 in this kernel: the IPv4 routes are all there is.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).context("reading the IPv6 routes (/proc/net/ipv6_route)"),
    };
    found.extend(ipv6_defaults(&v6));
    Ok(found)
}

/// The interfaces of up IPv6 default routes in `/proc/net/ipv6_route` text: columns
/// destination, prefix length, source, its length, next hop, metric, references, use,
/// flags (hex), interface.
fn ipv6_defaults(text: &str) -> BTreeSet<String> {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [dest, plen, _, _, _, _, _, _, flags, iface] = cols.as_slice() else {
                return None;
            };
            let flags = u32::from_str_radix(flags, 16).ok()?;
            (dest.bytes().all(|b| b == b'0')
                && *plen == "00"
                && flags & RTF_UP != 0
                && flags & RTF_REJECT == 0
                && *iface != "lo")
                .then(|| (*iface).to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_default_routes_are_read_from_the_kernel_table_format() {
        // As a host with a router-advertised default route prints it, with the
        // unreachable default the kernel keeps on lo and a /64 on-link route.
        let text = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe80000000000000021122fffe334455 00000400 00000001 00000000 00450003   enp3s0
20010db8000100000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001   enp3s0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        assert_eq!(
            ipv6_defaults(text).into_iter().collect::<Vec<_>>(),
            vec!["enp3s0".to_string()]
        );
        assert!(ipv6_defaults("").is_empty());
        assert!(ipv6_defaults("garbage line\n").is_empty());
    }

    #[test]
    fn named_interfaces_keep_their_order_and_appear_once() {
        let given = ["eth1", "eth0", "eth1"].map(String::from);
        assert_eq!(
            resolve(&given).expect("named only"),
            vec!["eth1".to_string(), "eth0".to_string()]
        );
    }
}
