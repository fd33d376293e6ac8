#!/usr/bin/env python3
"""Writes countries-test.mmdb, the small GeoLite2-Country-shaped database the tests use.

    pip install mmdb-writer==0.2.7 netaddr==1.3.0
    python3 make_countries_mmdb.py

IPv6 database with the IPv4 space under ::/96, as MaxMind ships it. Networks:
  NL  10.213.1.0/24, 10.213.4.0/25, 10.213.4.128/25, 198.51.100.0/24, fd13:1::/48
  DE  10.213.2.0/24, 203.0.113.0/24, fd13:2::/48
  no `country` (only registered_country NL): 10.213.3.0/24, fd13:3::/48
"""
from netaddr import IPSet
from mmdb_writer import MMDBWriter

writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True,
                    description={"en": "Ironclad test countries"})
nl = {"country": {"iso_code": "NL", "names": {"en": "Netherlands"}},
      "registered_country": {"iso_code": "NL"}}
de = {"country": {"iso_code": "DE", "names": {"en": "Germany"}},
      "registered_country": {"iso_code": "DE"}}
anonymous = {"registered_country": {"iso_code": "NL"},
             "traits": {"is_anonymous_proxy": True}}
writer.insert_network(IPSet(["10.213.1.0/24", "10.213.4.0/25", "10.213.4.128/25", "198.51.100.0/24"]), nl)
writer.insert_network(IPSet(["fd13:1::/48"]), nl)
writer.insert_network(IPSet(["10.213.2.0/24", "203.0.113.0/24"]), de)
writer.insert_network(IPSet(["fd13:2::/48"]), de)
writer.insert_network(IPSet(["10.213.3.0/24"]), anonymous)
writer.insert_network(IPSet(["fd13:3::/48"]), anonymous)
writer.to_db_file("countries-test.mmdb")
