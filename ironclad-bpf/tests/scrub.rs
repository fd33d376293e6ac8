//! Packet scrubbing against the kernel: the host sends real TCP SYNs and UDP
//! datagrams with a low TTL, DF set and its usual MSS through a veth pair with
//! checksum offload off; a raw socket in the namespace reads them as they arrive and
//! checks TTL, DF, IP ID, the MSS option and every checksum.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::process::{Command, Stdio};

use ironclad_bpf::{Loader, ScrubSettings, Scrubber};
use ironclad_core::abi::ScrubTotal;
use ironclad_testing::{require_privileges, BpffsDir, NetNs, VethPair};

/// Captures IPv4 TCP SYNs to port 9 and UDP datagrams to port 9999 on `iface` until
/// its standard input ends (then 0.3 s more, for late or extra packets; 60 s at most);
/// prints one JSON object per packet: ttl, df, id, mss (SYNs), and whether the IPv4
/// and TCP/UDP checksums are valid. Until told, not for a fixed time: on a busy
/// machine the sender's python3 took longer to start than a fixed window lasted.
const CAPTURE: &str = r#"
import json, select, socket, struct, sys, time
iface = sys.argv[1]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.bind((iface, 0))
print("listening", flush=True)
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return t
end, inputs = time.time() + 60, [s, sys.stdin]
while time.time() < end:
    ready, _, _ = select.select(inputs, [], [], 0.1)
    if sys.stdin in ready and not sys.stdin.readline():
        inputs, end = [s], min(end, time.time() + 0.3)
    if s not in ready:
        continue
    f = s.recv(65535)
    ip = f[14:]
    if f[12:14] == b"\x86\xdd" and len(ip) >= 48 and ip[6] == 17 and struct.unpack("!H", ip[42:44])[0] == 9999:
        l4 = ip[40:40 + struct.unpack("!H", ip[4:6])[0]]
        pseudo = ip[8:40] + struct.pack("!IxxxB", len(l4), 17)
        print(json.dumps({"kind": "udp6", "hops": ip[7], "l4_ok": csum(pseudo + l4) == 0xffff}), flush=True)
        continue
    if f[12:14] != b"\x08\x00" or len(ip) < 20 or ip[0] >> 4 != 4: continue
    ihl = (ip[0] & 15) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    ip = ip[:total]
    proto, l4 = ip[9], ip[ihl:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, proto, len(l4))
    out = {"ttl": ip[8], "df": bool(ip[6] & 0x40), "id": struct.unpack("!H", ip[4:6])[0],
           "ip_ok": csum(ip[:ihl]) == 0xffff}
    if proto == 6 and struct.unpack("!H", l4[2:4])[0] == 9 and l4[13] & 2:
        out["kind"] = "syn"
        out["l4_ok"] = csum(pseudo + l4) == 0xffff
        opts, i = l4[20:(l4[12] >> 4) * 4], 0
        while i < len(opts):
            if opts[i] == 0: break
            if opts[i] == 1: i += 1; continue
            if opts[i] == 2: out["mss"] = struct.unpack("!H", opts[i+2:i+4])[0]
            i += opts[i+1]
    elif proto == 17 and struct.unpack("!H", l4[2:4])[0] == 9999:
        out["kind"] = "udp"
        out["l4_ok"] = struct.unpack("!H", l4[6:8])[0] == 0 or csum(pseudo + l4) == 0xffff
    else:
        continue
    print(json.dumps(out), flush=True)
"#;

/// From the host: three TCP SYNs to port 9 (nothing listens: each is answered with a
/// RST) and three UDP datagrams to port 9999, TTL 3, DF set, IP ID as Linux chooses.
const SEND: &str = r#"
import socket, sys
peer = sys.argv[1]
for _ in range(3):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 3)
    t.settimeout(1)
    t.connect_ex((peer, 9))
    t.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 3)
u.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF on
for i in range(3):
    u.sendto(b"scrub me %d" % i, (peer, 9999))
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 3)
for i in range(3):
    u6.sendto(b"scrub me %d" % i, (sys.argv[2], 9999))
"#;

fn capture_while_sending(
    ns: &NetNs,
    peer_iface: &str,
    peer: &str,
    peer6: &str,
) -> Vec<serde_json::Value> {
    let mut capture = ns
        .command("python3")
        .args(["-c", CAPTURE, peer_iface])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("capture");
    let mut stdout = std::io::BufReader::new(capture.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("read");
    assert_eq!(first.trim(), "listening");
    let sent = Command::new("python3")
        .args(["-c", SEND, peer, peer6])
        .status()
        .expect("send");
    assert!(sent.success());
    // Every packet was handed to the veth before the sender exited: the capture
    // stops 0.3 s after its input ends.
    drop(capture.stdin.take());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read");
    capture.wait().expect("capture");
    rest.lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

#[test]
fn scrubbed_packets_arrive_with_the_floor_ttl_clamped_mss_no_df_new_ids_and_valid_checksums() {
    require_privileges!();
    let ns = NetNs::new("scrub").expect("netns");
    let veth = VethPair::new(
        &ns,
        &["10.220.1.1/24", "fd00:220:1::1/64"],
        &["10.220.1.2/24", "fd00:220:1::2/64"],
    )
    .expect("veth");
    // Checksums computed by the stack, not left to an offload: what the far side reads
    // is what the scrubber wrote.
    let off = Command::new("ethtool")
        .args(["-K", veth.host(), "tx", "off"])
        .stdout(Stdio::null())
        .status()
        .expect("ethtool");
    assert!(off.success());
    let pins = BpffsDir::new("scrub").expect("bpffs");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let scrubber = Scrubber::load(&loader).expect("load");
    let _attached = scrubber.attach(veth.host()).expect("attach");

    // Attached but not configured for this interface: packets pass as sent.
    let before = capture_while_sending(&ns, veth.peer(), "10.220.1.2", "fd00:220:1::2");
    let syns: Vec<_> = before.iter().filter(|p| p["kind"] == "syn").collect();
    let udp: Vec<_> = before.iter().filter(|p| p["kind"] == "udp").collect();
    let udp6: Vec<_> = before.iter().filter(|p| p["kind"] == "udp6").collect();
    assert_eq!(
        (syns.len(), udp.len(), udp6.len()),
        (3, 3, 3),
        "{before:#?}"
    );
    for p in &udp6 {
        assert_eq!(
            (p["hops"].as_i64(), p["l4_ok"].as_bool()),
            (Some(3), Some(true)),
            "{p}"
        );
    }
    for p in syns.iter().chain(&udp) {
        assert_eq!(p["ttl"], 3, "{p}");
        assert_eq!(p["df"], true, "{p}");
        assert_eq!(
            (p["ip_ok"].as_bool(), p["l4_ok"].as_bool()),
            (Some(true), Some(true)),
            "{p}"
        );
    }
    assert_eq!(syns[0]["mss"], 1460, "veth's MTU 1500: MSS 1460");
    assert_eq!(scrubber.total(ScrubTotal::Seen).expect("total").packets, 0);

    scrubber
        .set(
            veth.host(),
            &ScrubSettings {
                ttl_floor: 64,
                hop_limit_floor: 64,
                mss_max: 1200,
                clear_df: true,
                random_ip_id: true,
                ..ScrubSettings::default()
            },
        )
        .expect("set");
    let after = capture_while_sending(&ns, veth.peer(), "10.220.1.2", "fd00:220:1::2");
    let syns: Vec<_> = after.iter().filter(|p| p["kind"] == "syn").collect();
    let udp: Vec<_> = after.iter().filter(|p| p["kind"] == "udp").collect();
    let udp6: Vec<_> = after.iter().filter(|p| p["kind"] == "udp6").collect();
    assert_eq!((syns.len(), udp.len(), udp6.len()), (3, 3, 3), "{after:#?}");
    for p in &udp6 {
        assert_eq!(
            (p["hops"].as_i64(), p["l4_ok"].as_bool()),
            (Some(64), Some(true)),
            "{p}"
        );
    }
    for p in syns.iter().chain(&udp) {
        assert_eq!(p["ttl"], 64, "{p}");
        assert_eq!(p["df"], false, "{p}");
        assert_eq!(p["ip_ok"], true, "IPv4 checksum after the rewrite: {p}");
        assert_eq!(p["l4_ok"], true, "TCP/UDP checksum after the rewrite: {p}");
    }
    for syn in &syns {
        assert_eq!(syn["mss"], 1200, "{syn}");
    }
    // Linux gives the datagrams of one socket consecutive ids; scrubbed, they are not.
    let ids: Vec<i64> = udp.iter().map(|p| p["id"].as_i64().unwrap_or(0)).collect();
    let consecutive = ids.windows(2).all(|w| w[1] == w[0] + 1);
    assert!(!consecutive, "random ids: {ids:?}");
    let total = |t| scrubber.total(t).expect("total").packets;
    assert!(total(ScrubTotal::Ttl) >= 9, "IPv4 TTLs and IPv6 hop limits");
    assert!(total(ScrubTotal::Mss) >= 3);
    assert!(total(ScrubTotal::Df) >= 6);
    assert!(total(ScrubTotal::Id) >= 6);
    assert_eq!(total(ScrubTotal::Failed), 0);
}
