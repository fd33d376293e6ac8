//! Countries to CIDRs, from a MaxMind GeoLite2/GeoIP2 Country (or City) database.
//!
//! A network belongs to a country when its record's `country.iso_code` is that code.
//! `registered_country` and `represented_country` are not consulted, and records
//! without a `country` (anonymous proxies, satellite providers, some anycast ranges
//! in GeoLite2) belong to no country: they are neither denied by `deny_countries` nor
//! allowed by `allow_countries`. Both families are read: IPv4 from the database's IPv4
//! subtree, IPv6 from everything else. The IPv6 aliases of IPv4 space (`::ffff:0:0/96`,
//! `2002::/16`) are skipped: IPv4 packets are matched by their IPv4 source.
//!
//! ```no_run
//! use ironclad_policy::geo::country_networks;
//!
//! let found = country_networks("/var/lib/GeoIP/GeoLite2-Country.mmdb".as_ref(), &["NL", "BE"])?;
//! println!("NL: {} prefixes", found["NL"].len());
//! # Ok::<(), ironclad_policy::ConfigError>(())
//! ```

use std::collections::BTreeMap;
#[cfg(feature = "geoip")]
use std::collections::HashMap;
use std::path::Path;

use ipnetwork::IpNetwork;
#[cfg(feature = "geoip")]
use maxminddb::{path, Reader, WithinOptions};

#[cfg(feature = "geoip")]
use crate::aggregate::aggregate;
use crate::error::{ConfigError, Diagnostic};
#[cfg(feature = "geoip")]
use crate::feeds::read_regular_file;

/// The largest GeoIP database read (GeoLite2-City is about 60 MiB).
pub const MAX_DATABASE_BYTES: u64 = 512 << 20;

/// True for an ISO 3166-1 alpha-2 code as the database writes them (two ASCII capitals).
pub fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

fn db_error(path: &Path, message: String) -> ConfigError {
    ConfigError {
        diagnostics: vec![Diagnostic {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
        }],
    }
}

/// The networks of each country in `countries`: without feature `geoip` (a default
/// feature) this build cannot read the database and says so, naming it.
#[cfg(not(feature = "geoip"))]
pub fn country_networks(
    db: &Path,
    _countries: &[&str],
) -> Result<BTreeMap<String, Vec<IpNetwork>>, ConfigError> {
    Err(db_error(
        db,
        "countries need the GeoIP reader, which this build of ironclad-policy leaves out \
         (feature `geoip`)"
            .to_string(),
    ))
}

/// The networks of each country in `countries`, aggregated, IPv4 first. Every requested
/// code has an entry (empty when the database has no network for it).
#[cfg(feature = "geoip")]
pub fn country_networks(
    db: &Path,
    countries: &[&str],
) -> Result<BTreeMap<String, Vec<IpNetwork>>, ConfigError> {
    let bytes = read_regular_file(db, MAX_DATABASE_BYTES)
        .map_err(|e| db_error(db, format!("cannot open the GeoIP database: {e}")))?;
    let reader = Reader::from_source(bytes)
        .map_err(|e| db_error(db, format!("cannot open the GeoIP database: {e}")))?;
    let database_type = reader.metadata().database_type.clone();
    if !database_type.contains("Country") && !database_type.contains("City") {
        return Err(db_error(
            db,
            format!("`{database_type}` is not a GeoIP2/GeoLite2 Country or City database"),
        ));
    }
    let mut found: BTreeMap<String, Vec<IpNetwork>> = countries
        .iter()
        .map(|c| ((*c).to_string(), Vec::new()))
        .collect();
    // Records are shared by many networks: decode each record once.
    let mut codes: HashMap<usize, Option<String>> = HashMap::new();
    let mut roots: Vec<IpNetwork> = vec![IpNetwork::V4(ipnetwork::Ipv4Network::from(
        std::net::Ipv4Addr::UNSPECIFIED,
    ))];
    if reader.metadata().ip_version == 6 {
        roots.push(IpNetwork::V6(ipnetwork::Ipv6Network::from(
            std::net::Ipv6Addr::UNSPECIFIED,
        )));
    }
    let corrupt =
        |e: maxminddb::MaxMindDbError| db_error(db, format!("corrupt GeoIP database: {e}"));
    for root in roots {
        let Ok(root) = IpNetwork::new(root.ip(), 0) else {
            continue;
        };
        for item in reader
            .within(root, WithinOptions::default())
            .map_err(corrupt)?
        {
            let item = item.map_err(corrupt)?;
            let network = item.network().map_err(corrupt)?;
            // In an IPv6 database the IPv4 space is the ::/96 subtree, read as IPv4 above.
            if let IpNetwork::V6(n) = network {
                if n.prefix() >= 96 && u128::from(n.network()) >> 32 == 0 {
                    continue;
                }
            }
            let Some(offset) = item.offset() else {
                continue;
            };
            let code = match codes.get(&offset) {
                Some(code) => code.clone(),
                None => {
                    let code: Option<String> = item
                        .decode_path(&path!["country", "iso_code"])
                        .map_err(corrupt)?;
                    codes.insert(offset, code.clone());
                    code
                }
            };
            if let Some(list) = code.and_then(|c| found.get_mut(&c)) {
                list.push(network);
            }
        }
    }
    for list in found.values_mut() {
        *list = aggregate(list);
    }
    Ok(found)
}

#[cfg(all(test, feature = "geoip"))]
mod tests {
    use super::*;

    #[test]
    fn country_codes_are_two_capitals() {
        assert!(is_country_code("NL"));
        assert!(!is_country_code("nl"));
        assert!(!is_country_code("NLD"));
        assert!(!is_country_code("N1"));
    }

    fn strings(list: &[IpNetwork]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_test_database_gives_each_country_its_networks_in_both_families() {
        let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/countries-test.mmdb");
        let found = country_networks(&db, &["NL", "DE", "FR"]).expect("read");
        assert_eq!(
            strings(&found["NL"]),
            [
                "10.213.1.0/24",
                "10.213.4.0/24",
                "198.51.100.0/24",
                "fd13:1::/48"
            ],
            "the two /25s are aggregated"
        );
        assert_eq!(
            strings(&found["DE"]),
            ["10.213.2.0/24", "203.0.113.0/24", "fd13:2::/48"]
        );
        assert!(
            found["FR"].is_empty(),
            "a country without networks is empty"
        );
        // 10.213.3.0/24 has only a registered_country: it belongs to no country.
        assert!(found
            .values()
            .flatten()
            .all(|n| !n.to_string().starts_with("10.213.3.")));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/make_countries_mmdb.py");
        let err = country_networks(&db, &["NL"]).expect_err("not a database");
        assert!(
            err.to_string().contains("cannot open the GeoIP database"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_database_is_an_error_naming_it() {
        let err = country_networks(Path::new("/nonexistent/x.mmdb"), &["NL"]).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/x.mmdb: cannot open"),
            "{err}"
        );
    }
}

#[cfg(all(test, not(feature = "geoip")))]
mod without_geoip {
    #[test]
    fn countries_in_a_build_without_the_reader_are_an_error_naming_the_database() {
        match super::country_networks("/var/lib/GeoIP/Country.mmdb".as_ref(), &["NL"]) {
            Ok(found) => panic!("read without a reader: {found:?}"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with("/var/lib/GeoIP/Country.mmdb"), "{text}");
                assert!(text.contains("feature `geoip`"), "{text}");
            }
        }
    }
}
