//! The stateful firewall on the guest kernels of `guest/kernels` (Debian's 6.1 among
//! them), which this machine's kernel cannot stand for: the programs pass that
//! kernel's verifier, the classifier and connection tracking decide packets there
//! (BPF_PROG_TEST_RUN) and on real traffic through a veth pair, attached by tcx links
//! from 6.6 and by classic tc filters before (chosen by probing the kernel), outliving
//! the process and adopted by the next; the scrubber and the quarantine load, rewrite
//! a frame and tag real traffic there too. `guest/run.sh` (part of
//! `./dev.sh test`) runs these with `--ignored` inside each guest.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use ironclad_bpf::{BpfError, Firewall, FirewallSettings, Loader, TcMechanism};
use ironclad_policy::error::Origin;
use ironclad_policy::firewall::{Direction, FwAction, FwProto, FwRule};
use ironclad_testing::{frames, BpffsDir};

/// tcx verdicts as the programs return them.
const PASS: i32 = -1;
const DROP: i32 = 2;

/// A loader pinning under a fresh bpffs directory named `name`, inside a guest only.
fn guest_loader(name: &str) -> (BpffsDir, Loader) {
    assert!(
        std::env::var_os("IRONCLAD_GUEST").is_some(),
        "runs inside a guest kernel: use guest/run.sh"
    );
    let pins = BpffsDir::new(name).expect("bpffs");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    (pins, loader)
}

/// What the kernel's probe must choose here: tcx links from 6.6 on, classic tc
/// filters before (the probe itself reads the kernel's BTF, not its version).
fn expected_mechanism() -> TcMechanism {
    if crate::kernel_release() >= (6, 6) {
        TcMechanism::Tcx
    } else {
        TcMechanism::Clsact
    }
}

#[test]
#[ignore = "guest kernels: runs in QEMU (guest/run.sh, part of ./dev.sh test)"]
fn the_firewall_loads_and_decides_on_the_guest_kernel_and_attaches_by_its_mechanism() {
    let (_pins, loader) = guest_loader("fwguest");
    // The verifier of this kernel accepts both programs; how much of its budget each
    // takes here is the `verifier_budget` suite's (run in every guest too).
    let firewall = Firewall::load(&loader).expect("the firewall loads on this kernel");
    let mut ssh = FwRule::new(
        Origin::field("firewall.rules[0]"),
        Direction::In,
        FwProto::Tcp,
    );
    ssh.src = vec!["10.0.0.0/24".parse().expect("net")];
    ssh.dport = vec![(22, 22)];
    ssh.action = FwAction::Accept;
    firewall
        .apply(&FirewallSettings::default().drop_inbound(true), &[ssh])
        .expect("apply");
    let run = |src: &str, dport: u16, flags: u8| {
        let frame = frames::l4(
            src.parse().expect("src"),
            "10.0.0.1".parse().expect("dst"),
            6,
            40000,
            dport,
            flags,
        );
        firewall
            .object()
            .test_run("ic_fw_in", &frame, 1)
            .expect("test run")
            .return_value as i32
    };
    assert_eq!(run("10.0.0.9", 22, 0x02), PASS, "an admitted SYN");
    assert_eq!(run("10.0.1.9", 22, 0x02), DROP, "a SYN from elsewhere");
    assert_eq!(run("10.0.0.9", 23, 0x02), DROP, "a SYN to another port");
    assert_eq!(
        run("10.0.0.9", 22, 0x10),
        PASS,
        "the admitted connection's ACK"
    );
    assert_eq!(
        run("10.0.0.8", 22, 0x10),
        DROP,
        "a bare ACK of no connection"
    );
    assert_eq!(firewall.connections().expect("connections").len(), 1);

    // The SYN-flood defence needs bpf_sk_assign_tcp_reqsk (6.9): before it, the
    // programs load without it (the calls are dead code) and turning it on says why.
    let syn = firewall.set_syn_flood(&ironclad_bpf::SynFloodSettings::always([22]));
    if crate::kernel_release() < (6, 9) {
        match syn {
            Err(e @ BpfError::KernelTooOld { needs: "6.9", .. }) => {
                assert!(e.to_string().contains("needs Linux 6.9"), "{e}");
            }
            other => panic!("the SYN-flood defence before 6.9 must be refused: {other:?}"),
        }
        let syn_frame = frames::l4(
            "10.0.0.9".parse().expect("src"),
            "10.0.0.1".parse().expect("dst"),
            6,
            40000,
            22,
            0x02,
        );
        let run = firewall
            .object()
            .test_run("ic_fw_syn", &syn_frame, 1)
            .expect("test run");
        assert_eq!(run.return_value, 2, "XDP_PASS: nothing answered here");
    } else {
        syn.expect("the SYN-flood defence turns on from 6.9");
    }

    assert_eq!(TcMechanism::probe(), expected_mechanism());
    let attachment = firewall.attach("lo").expect("attach");
    assert_eq!(attachment.mechanism(), expected_mechanism());
    attachment.detach().expect("detach");
}

#[test]
#[ignore = "guest kernels: runs in QEMU (guest/run.sh, part of ./dev.sh test)"]
fn the_scrubber_and_the_quarantine_load_and_rewrite_on_the_guest_kernel() {
    use ironclad_bpf::{Quarantine, QuarantineAction, ScrubSettings, Scrubber};
    use ironclad_core::abi::{QuarantineTotal, ScrubTotal};
    let (_pins, loader) = guest_loader("scrubguest");
    // BPF_PROG_TEST_RUN hands the frame to the program as arriving on `lo`.
    let scrubber = Scrubber::load(&loader).expect("the scrubber loads on this kernel");
    scrubber
        .set(
            "lo",
            &ScrubSettings {
                ttl_floor: 100,
                clear_df: true,
                random_ip_id: true,
                ..ScrubSettings::default()
            },
        )
        .expect("set");
    let frame = frames::l4(
        "192.0.2.7".parse().expect("ip"),
        "192.0.2.1".parse().expect("ip"),
        6,
        40000,
        443,
        0x02,
    );
    let run = scrubber
        .object()
        .test_run("ic_scrub_out", &frame, 1)
        .expect("test run");
    assert_eq!(run.return_value as i32, PASS);
    let total = |t| scrubber.total(t).expect("total").packets;
    assert_eq!(
        (
            total(ScrubTotal::Ttl),
            total(ScrubTotal::Df),
            total(ScrubTotal::Id)
        ),
        (1, 1, 1),
        "TTL 64 raised, DF cleared, ID replaced"
    );
    assert_eq!(total(ScrubTotal::Failed), 0);
    let scrubbing = scrubber.attach("lo").expect("attach");
    assert_eq!(scrubbing.mechanism(), expected_mechanism());
    drop(scrubbing);

    let quarantine = Quarantine::load(&loader).expect("the quarantine loads on this kernel");
    quarantine
        .set(
            &["192.0.2.0/24".parse().expect("net")],
            QuarantineAction::Vlan(666),
        )
        .expect("set");
    let run = quarantine
        .object()
        .test_run("ic_quarantine_in", &frame, 1)
        .expect("test run");
    assert_eq!(run.return_value as i32, PASS);
    assert_eq!(
        quarantine
            .total(QuarantineTotal::Tagged)
            .expect("total")
            .packets,
        1
    );
}

/// A shell command (as root); panics with its output when it fails.
pub(crate) fn sh(command: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", command])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Packets received on interface `iface`, from its statistics.
fn rx_packets(iface: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/rx_packets"))
        .expect("rx_packets")
        .trim()
        .parse()
        .expect("a count")
}

#[test]
#[ignore = "guest kernels: runs in QEMU (guest/run.sh, part of ./dev.sh test)"]
fn arriving_packets_of_an_ioc_source_are_tagged_and_delivered_to_the_vlan_interface() {
    use ironclad_bpf::{Quarantine, QuarantineAction};
    use ironclad_core::abi::QuarantineTotal;
    let (_pins, loader) = guest_loader("quarantineguest");
    // The guest's Debian kernel has 802.1Q (a module), which the build machine's lacks:
    // a VLAN interface on the receiving end of a veth pair.
    sh(
        "modprobe veth; modprobe 8021q; ip link del icq-a 2>/dev/null; \
        ip link add icq-a type veth peer name icq-b && \
        ip link add link icq-b name icq-b.666 type vlan id 666 && \
        ip link set icq-a up && ip link set icq-b up && ip link set icq-b.666 up",
    );
    let quarantine = Quarantine::load(&loader).expect("the quarantine loads");
    quarantine
        .set(
            &["192.0.2.0/24".parse().expect("net")],
            QuarantineAction::Vlan(666),
        )
        .expect("set");
    let _attachment = quarantine.attach("icq-b").expect("attach");
    assert_eq!(_attachment.mechanism(), expected_mechanism());
    // Frames sent into icq-a arrive on icq-b, where the quarantine's ingress program
    // sees them first: one from the IOC set, then one from elsewhere.
    let send = |src: &str| {
        let frame = frames::l4(
            src.parse().expect("ip"),
            "10.66.0.2".parse().expect("ip"),
            17,
            40000,
            5353,
            0,
        );
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        sh(&format!(
            "python3 -c \"import socket; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); \
             s.bind(('icq-a', 0)); [s.send(bytes.fromhex('{hex}')) for _ in range(3)]\""
        ));
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let (vlan_before, plain_before) = (rx_packets("icq-b.666"), rx_packets("icq-b"));
    send("192.0.2.7");
    let vlan_tagged = rx_packets("icq-b.666") - vlan_before;
    assert_eq!(
        vlan_tagged, 3,
        "the IOC source's frames arrive tagged with VLAN 666, so on icq-b.666"
    );
    assert_eq!(
        quarantine
            .total(QuarantineTotal::Tagged)
            .expect("total")
            .packets,
        3
    );
    send("198.51.100.7");
    assert_eq!(
        rx_packets("icq-b.666") - vlan_before,
        3,
        "a source outside the set is not tagged"
    );
    assert!(
        rx_packets("icq-b") - plain_before >= 6,
        "both reached icq-b"
    );
    drop(_attachment);
    sh("ip link del icq-a");
}

/// The connection-table key of a TCP connection from `remote` to `local`, as the
/// firewall's programs make it (ic_ct_make_key: IPv4 as IPv4-mapped IPv6, the lower
/// address and port first).
fn tcp_key(remote: std::net::SocketAddr, local: std::net::SocketAddr) -> ironclad_core::abi::CtKey {
    let bytes = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    };
    let (r, l) = (
        (bytes(remote.ip()), remote.port()),
        (bytes(local.ip()), local.port()),
    );
    let (lo, hi) = if r <= l { (r, l) } else { (l, r) };
    ironclad_core::abi::CtKey {
        addr_lo: lo.0,
        addr_hi: hi.0,
        port_lo: lo.1,
        port_hi: hi.1,
        proto: 6,
        _pad0: [0; 3],
    }
}

#[test]
#[ignore = "guest kernels: runs in QEMU (guest/run.sh, part of ./dev.sh test)"]
fn the_accept_hook_names_the_process_that_accepted_a_connection_on_the_guest_kernel() {
    use ironclad_core::abi::{CtEntry, CtState, CT_F_INBOUND};
    use libbpf_rs::MapCore as _;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::process::{Command, Stdio};

    let (pins, loader) = guest_loader("fwaccept");
    let firewall = Firewall::load(&loader).expect("load");
    let _hook = firewall
        .attach_accept()
        .expect("the accept hook loads and attaches on a kernel that is not locked down");
    let ct =
        libbpf_rs::MapHandle::from_pinned_path(pins.path().join(Firewall::OBJECT).join("ic_fw_ct"))
            .expect("the pinned connection table");
    let entry_of = |key: &ironclad_core::abi::CtKey| {
        ct.lookup(&key.to_bytes(), libbpf_rs::MapFlags::ANY)
            .expect("lookup")
            .and_then(|v| CtEntry::from_bytes(&v))
            .expect("the entry")
    };
    // A busy process all along: the hook must name the accept()ing one, never the task
    // that happens to run.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let busy = KillOnDrop(
        Command::new("python3")
            .args(["-c", "while True: pass"])
            .stdout(Stdio::null())
            .spawn()
            .expect("busy loop"),
    );
    for addr in ["127.0.0.1", "::1"] {
        // A server process with two listeners: it accepts on the first when told (a
        // line on stdin), never on the second.
        let mut server = Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import socket,sys\nf=socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET\na=socket.socket(f)\na.bind(('{addr}',0))\na.listen(4)\nb=socket.socket(f)\nb.bind(('{addr}',0))\nb.listen(4)\nprint(a.getsockname()[1],b.getsockname()[1],flush=True)\nsys.stdin.readline()\nc,_=a.accept()\nprint('accepted',flush=True)\nsys.stdin.read()"
                ),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("server");
        let mut out = BufReader::new(server.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("ports");
        let ports: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().expect("port"))
            .collect();
        // Both handshakes complete in the kernel before any accept().
        let accepted = TcpStream::connect((addr, ports[0])).expect("connect");
        let waiting = TcpStream::connect((addr, ports[1])).expect("connect");
        // Their entries as the firewall's ingress would have opened them (tcx attaches
        // from 6.6; the hook needs none of it).
        let keys: Vec<_> = [&accepted, &waiting]
            .iter()
            .map(|s| {
                let key = tcp_key(
                    s.local_addr().expect("client"),
                    s.peer_addr().expect("server"),
                );
                let entry = CtEntry {
                    state: CtState::Established as u8,
                    flags: CT_F_INBOUND,
                    ..CtEntry::default()
                };
                ct.update(
                    &key.to_bytes(),
                    &entry.to_bytes(),
                    libbpf_rs::MapFlags::NO_EXIST,
                )
                .expect("insert");
                key
            })
            .collect();
        let stdin = server.stdin.as_mut().expect("stdin");
        stdin.write_all(b"accept\n").expect("tell");
        line.clear();
        out.read_line(&mut line).expect("accepted");
        assert_eq!(line.trim(), "accepted");
        let named = entry_of(&keys[0]);
        assert_eq!(
            named.pid,
            server.id(),
            "{addr}: the accept()ing process: {named:?}"
        );
        assert_ne!(named.cgroup_id, 0, "{addr}: its cgroup");
        assert_eq!(entry_of(&keys[1]).pid, 0, "{addr}: accepted by no process");
        drop(server.stdin.take());
        let _ = server.wait();
        for key in &keys {
            let _ = ct.delete(&key.to_bytes());
        }
        drop((accepted, waiting));
    }
    drop(busy);
}

/// Real traffic through the stateful firewall on the guest's kernel, attached as the
/// agent attaches it (`attach_pinned`): by tcx links from 6.6, by classic tc filters
/// before (Debian 12's 6.1). It drops a new inbound connection and passes the
/// host's own one out; it keeps enforcing when the handles are gone as with `kill -9`;
/// a new process adopts it without a second copy of either program; on classic tc,
/// filters deleted from outside are put back by the next check.
#[test]
#[ignore = "guest kernels: runs in QEMU (guest/run.sh, part of ./dev.sh test)"]
fn the_firewall_filters_real_traffic_on_the_guest_kernel_and_outlives_its_process() {
    use crate::firewall::{repairs, Net};
    let (_pins, loader) = guest_loader("fwtraffic");
    sh("modprobe veth");
    let net = Net::new("fwguest", 30);
    let dev = net.veth.host().to_string();
    let host = net.host(false);
    let listener = std::net::TcpListener::bind((host.as_str(), 0)).expect("listener");
    let port = listener.local_addr().expect("addr").port();
    // Filters of a program, one line each (`filter protocol all pref 49569 bpf chain 0
    // handle 0x1c1a ic_fw_in ... id 41 name ic_fw_in tag ...`), after a line naming
    // the priority alone.
    let ours = |point: &str, program: &str| {
        let shown = sh(&format!("tc filter show dev {dev} {point}"));
        let count = shown
            .lines()
            .filter(|l| l.contains("handle 0x1c1a") && l.contains(program))
            .count();
        eprintln!("tc filter show dev {dev} {point}: {count} of {program}:\n{shown}");
        count
    };
    {
        let firewall = Firewall::load(&loader).expect("load");
        firewall
            .configure(&FirewallSettings::default().drop_inbound(true))
            .expect("configure");
        let attached = firewall.attach_pinned(&dev).expect("attach");
        assert_eq!(attached.mechanism(), expected_mechanism());
        crate::firewall::drops_in_and_answers_out(&net, port);
        // The handles go as with kill -9: nothing is detached.
    }
    assert!(
        !net.connects_in(&host, port),
        "still enforced with no process"
    );
    let firewall = Firewall::load(&loader).expect("a second process's load");
    let mut attached = firewall.attach_pinned(&dev).expect("adopt");
    assert!(
        !net.connects_in(&host, port),
        "enforced by the adopting process"
    );
    if expected_mechanism() == TcMechanism::Clsact {
        assert_eq!(
            (ours("ingress", "ic_fw_in"), ours("egress", "ic_fw_out")),
            (1, 1),
            "adopted in place, not added twice"
        );
        crate::firewall::filters_deleted_and_put_back(&net, &firewall, &mut attached, port);
    }
    assert_eq!(repairs(&firewall, &mut attached), [None, None]);
    attached.detach().expect("detach");
    assert_eq!(
        (ours("ingress", "ic_fw_in"), ours("egress", "ic_fw_out")),
        (0, 0)
    );
    assert!(net.connects_in(&host, port), "detached: open again");
}
