//! The identity firewall with real processes: a small C client compiled by the test,
//! byte-identical copies of it at different paths, run inside test cgroups, connecting
//! to listeners on loopback.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironclad_bpf::{CgroupAttachment, EgressFirewall, Loader};
use ironclad_core::abi::EgressTotal;
use ironclad_events::{Event, Fanout, Overflow};
use ironclad_policy::config::compile_str;
use ironclad_policy::egress::CompiledEgress;
use ironclad_testing::require_privileges;
use ironclad_testing::{bpftool, BpffsDir, TestCgroup};

/// The client, compiled into a temporary directory, with a second byte-identical copy.
struct Clients {
    dir: tempfile::TempDir,
}

impl Clients {
    fn build() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/net_client.c");
        for (name, variant) in [("client-a", "0"), ("client-other", "1")] {
            let out = Command::new("cc")
                .args(["-O1", "-o"])
                .arg(dir.path().join(name))
                .arg(format!("-DVARIANT={variant}"))
                .arg(&src)
                .output()
                .expect("cc");
            assert!(out.status.success(), "{out:?}");
        }
        std::fs::copy(dir.path().join("client-a"), dir.path().join("client-b")).expect("copy");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Runs `client` inside `cgroup`; returns (ok, eperm, other).
fn run(cgroup: &TestCgroup, client: &Path, args: &[&str]) -> (u32, u32, u32) {
    let out = cgroup
        .command(&client.display().to_string())
        .args(args)
        .output()
        .expect("client");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> u32 {
        text.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad client output {out:?}"))
    };
    (field("ok"), field("eperm"), field("other"))
}

/// A TCP listener on loopback counting accepted connections.
fn tcp_listener(addr: &str) -> (u16, Arc<Accepted>) {
    let listener = TcpListener::bind((addr, 0)).expect("listen");
    let local = listener.local_addr().expect("addr");
    let accepted = Arc::new(Accepted {
        local,
        ports: Mutex::new(Vec::new()),
        markers: AtomicU32::new(0),
    });
    let log = accepted.clone();
    // Every connection is accepted and closed at once, so clients waiting for the
    // server (curl, openssl s_client) end.
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            // A connection already reset has no peer any more: port 0, never a marker's.
            let port = stream.peer_addr().map_or(0, |peer| peer.port());
            log.ports
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(port);
        }
    });
    (local.port(), accepted)
}

/// The connections a listener accepted, counted exactly when asked: `count` makes a
/// connection of its own (from the test process, outside the lab's cgroup) and waits
/// until the accepting thread has taken it. Connections leave the accept queue in
/// order, so every one a client completed before the question has been counted by
/// then. (Read straight from the thread's counter, a busy machine's late accept
/// showed up in the next step's count.)
struct Accepted {
    local: std::net::SocketAddr,
    /// The peer port of every connection accepted, in order.
    ports: Mutex<Vec<u16>>,
    /// How many of them were `count`'s own.
    markers: AtomicU32,
}

impl Accepted {
    fn count(&self) -> u32 {
        let from = self
            .ports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        let marker = std::net::TcpStream::connect(self.local).expect("the marker connection");
        let port = marker.local_addr().expect("addr").port();
        let start = std::time::Instant::now();
        loop {
            let ports = self
                .ports
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if ports[from..].contains(&port) {
                let markers = self.markers.fetch_add(1, Ordering::SeqCst) + 1;
                return ports.len() as u32 - markers;
            }
            drop(ports);
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the listener never accepted the marker connection"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The identity firewall's decisions read so far (every queued record drained first).
fn decisions(
    events: &ironclad_bpf::EventReader,
    sub: &ironclad_events::Subscription<Event>,
) -> Vec<ironclad_events::EgressDecision> {
    events.drain().expect("drain");
    sub.receiver()
        .try_iter()
        .filter_map(|e| match e {
            Event::Connect(d) => Some(d),
            _ => None,
        })
        .collect()
}

struct Lab {
    _pins: BpffsDir,
    _loader: Loader,
    firewall: EgressFirewall,
    /// The hooks on `cgroup`, once attached (dropping them detaches).
    attached: Option<CgroupAttachment>,
    cgroup: TestCgroup,
    clients: Clients,
}

fn policy(yaml: &str) -> CompiledEgress {
    compile_str(yaml, Path::new("egress.yaml"))
        .unwrap_or_else(|e| panic!("policy: {e}"))
        .egress
        .expect("egress section")
}

impl Lab {
    fn new(tag: &str) -> Self {
        let pins = BpffsDir::new(tag).expect("bpffs");
        let loader = Loader::builder()
            .pin_root(pins.path())
            .build()
            .expect("loader");
        let firewall = EgressFirewall::load(&loader).expect("load");
        let cgroup = TestCgroup::new(tag).expect("cgroup");
        Self {
            _pins: pins,
            _loader: loader,
            firewall,
            attached: None,
            cgroup,
            clients: Clients::build(),
        }
    }

    fn apply(&mut self, yaml: &str) {
        let p = policy(yaml);
        self.firewall.replace(&p).expect("replace");
    }

    fn attach(&mut self) {
        let path = self.cgroup.path().to_path_buf();
        self.attached = Some(self.firewall.attach(&path).expect("attach"));
    }
}

#[test]
fn copies_of_one_binary_are_told_apart_and_renames_or_comm_do_not_matter() {
    require_privileges!();
    let mut lab = Lab::new("egress-copies");
    let a = lab.clients.path("client-a");
    let b = lab.clients.path("client-b");
    lab.apply(&format!(
        "egress:\n  default: deny\n  rules:\n    - exe: {}\n      dst: 127.0.0.1\n      proto: tcp\n      action: allow\n",
        a.display()
    ));
    lab.attach();
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("test", 1024, Overflow::DropNewest);
    let events = lab.firewall.events(fanout.clone()).expect("events");

    let (port, accepted) = tcp_listener("127.0.0.1");
    let p = port.to_string();
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &p]),
        (1, 0, 0),
        "allowed copy"
    );
    assert_eq!(
        run(&lab.cgroup, &b, &["tcp4", "127.0.0.1", &p]),
        (0, 1, 0),
        "identical copy, other inode"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(accepted.count(), 1, "no SYN from the denied copy");

    // Renamed, and with another comm: the same file, still allowed.
    let renamed = lab.clients.path("renamed");
    std::fs::rename(&a, &renamed).expect("rename");
    assert_eq!(
        run(
            &lab.cgroup,
            &renamed,
            &["tcp4", "127.0.0.1", &p, "1", "client-b"]
        ),
        (1, 0, 0)
    );

    // Rewritten in place with other content (same inode, new modification time): a
    // different program, so the rule no longer names it...
    std::fs::copy(lab.clients.path("client-other"), &renamed).expect("overwrite");
    assert_eq!(
        run(&lab.cgroup, &renamed, &["tcp4", "127.0.0.1", &p]),
        (0, 1, 0)
    );
    // ...until the policy naming its path is applied again (what a reload does).
    lab.apply(&format!(
        "egress:\n  default: deny\n  rules:\n    - exe: {}\n      dst: 127.0.0.1\n      proto: tcp\n      action: allow\n",
        renamed.display()
    ));
    assert_eq!(
        run(&lab.cgroup, &renamed, &["tcp4", "127.0.0.1", &p]),
        (1, 0, 0),
        "the rewritten file, named again"
    );

    let denials = decisions(&events, &sub);
    assert_eq!(denials.len(), 2, "{denials:#?}");
    assert_eq!(denials[0].dst.to_string(), "127.0.0.1");
    assert_eq!(denials[0].dport, port);
    assert_eq!(denials[0].actor.comm, "client-b");
    assert_eq!(denials[0].rule_id, 0, "the default denied it");
    assert!(lab.firewall.total(EgressTotal::Denied).expect("total") >= 2);
    assert_eq!(
        lab.firewall.rule_counters().expect("counters"),
        vec![(1, 1)],
        "the counter of the rule applied last"
    );
}

/// Connections accepted by `listener` once `command` (run in `cgroup`) has exited.
fn accepted_after(cgroup: &TestCgroup, command: &str, args: &[&str], accepted: &Accepted) -> u32 {
    let before = accepted.count();
    let _ = cgroup
        .command(command)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    accepted.count() - before
}

#[test]
fn a_binary_installed_by_the_package_manager_is_matched_by_its_path() {
    require_privileges!();
    // dpkg writes a binary and then sets its modification time to the package's: the
    // change time is the install's, so mtime != ctime for every installed binary. Some
    // machine images are flattened (every file's times equal); there the binary is
    // installed here the way dpkg does it, so the state under test is always the real one.
    use std::os::unix::fs::MetadataExt;
    let installed = Path::new("/usr/bin/openssl");
    let meta = std::fs::metadata(installed).expect("/usr/bin/openssl (package openssl)");
    let dpkg_state =
        |m: &std::fs::Metadata| (m.mtime(), m.mtime_nsec()) != (m.ctime(), m.ctime_nsec());
    let staging = tempfile::tempdir().expect("tempdir");
    let openssl = if dpkg_state(&meta) {
        installed.to_path_buf()
    } else {
        let staged = staging.path().join("openssl");
        std::fs::copy(installed, &staged).expect("install openssl");
        let package_time = meta.modified().expect("mtime");
        // ctime moves on with every change; wait so it is past the package's time.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::File::options()
            .write(true)
            .open(&staged)
            .and_then(|f| f.set_modified(package_time))
            .expect("set the package's modification time");
        staged
    };
    let meta = std::fs::metadata(&openssl).expect("openssl");
    assert!(
        dpkg_state(&meta),
        "{}: modification time != change time, as dpkg leaves a binary",
        openssl.display()
    );
    let openssl = openssl.to_str().expect("utf-8 path").to_owned();
    let mut lab = Lab::new("egress-installed");
    lab.apply(&format!(
        "egress:\n  default: deny\n  rules:\n    - exe: {openssl}\n      dst: 127.0.0.1\n      proto: tcp\n      action: allow\n",
    ));
    lab.attach();
    let (port, accepted) = tcp_listener("127.0.0.1");
    let target = format!("127.0.0.1:{port}");
    assert_eq!(
        accepted_after(
            &lab.cgroup,
            &openssl,
            &["s_client", "-connect", &target],
            &accepted
        ),
        1,
        "the installed openssl is allowed by its path"
    );
    let a = lab.clients.path("client-a");
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &port.to_string()]),
        (0, 1, 0),
        "anything else meets the default deny"
    );
}

#[test]
fn curl_reaches_out_only_when_started_by_the_named_ancestor() {
    require_privileges!();
    let (port, accepted) = tcp_listener("127.0.0.1");
    let url = format!("http://127.0.0.1:{port}/");
    let curl = format!("/usr/bin/curl -s -m 2 -o /dev/null {url}; true");
    let mut lab = Lab::new("egress-ancestor");
    // bash two levels up (bash -> sh -> curl) opens the way; anything else is refused.
    lab.apply(
        "egress:\n  rules:\n    - exe: /usr/bin/curl\n      ancestor_exe: /usr/bin/bash\n      ancestor_depth: 2\n      action: allow\n    - exe: /usr/bin/curl\n      action: deny\n",
    );
    lab.attach();
    let chain = format!("sh -c '{curl}'; true");
    assert_eq!(
        accepted_after(&lab.cgroup, "/usr/bin/bash", &["-c", &chain], &accepted),
        1,
        "bash -> sh -> curl: bash is the second ancestor"
    );
    assert_eq!(
        accepted_after(&lab.cgroup, "sh", &["-c", &curl], &accepted),
        0,
        "sh -> curl started by this test: no bash within two ancestors"
    );
    // curl's second ancestor is whatever started this test: cargo on a build machine,
    // the guest's script (bash) in the arm64 guest. The verdict follows the real chain.
    let runner = std::fs::read_link(format!("/proc/{}/exe", std::os::unix::process::parent_id()))
        .expect("the test runner's executable");
    assert_eq!(
        accepted_after(
            &lab.cgroup,
            "/usr/bin/curl",
            &["-s", "-m", "2", &url],
            &accepted
        ),
        u32::from(runner == Path::new("/usr/bin/bash")),
        "curl started by this test, itself started by {runner:?}"
    );
    // parent_exe: the parent only.
    lab.apply(
        "egress:\n  rules:\n    - exe: /usr/bin/curl\n      parent_exe: /usr/bin/bash\n      action: allow\n    - exe: /usr/bin/curl\n      action: deny\n",
    );
    assert_eq!(
        accepted_after(&lab.cgroup, "/usr/bin/bash", &["-c", &curl], &accepted),
        1,
        "bash -> curl"
    );
    assert_eq!(
        accepted_after(&lab.cgroup, "/usr/bin/bash", &["-c", &chain], &accepted),
        0,
        "bash -> sh -> curl: the parent is sh"
    );
    let rule_hits = lab.firewall.rule_counters().expect("counters");
    assert!(
        rule_hits.iter().any(|(id, n)| *id == 2 && *n >= 1),
        "{rule_hits:?}"
    );
}

#[test]
fn a_parent_pid_taken_by_the_named_ancestor_after_the_parent_ended_opens_nothing() {
    require_privileges!();
    // curl is started by sh, which ends; bash (the named parent) then gets sh's pid.
    // The process table still gives curl's parent as that pid: only the parent's start
    // time tells that the bash now holding it is not curl's parent.
    let (port, accepted) = tcp_listener("127.0.0.1");
    let mut lab = Lab::new("egress-reused-parent");
    lab.apply(
        "egress:\n  rules:\n    - exe: /usr/bin/curl\n      parent_exe: /usr/bin/bash\n      action: allow\n    - exe: /usr/bin/curl\n      action: deny\n",
    );
    lab.attach();
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("curl-config");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    // curl blocks opening its config (a FIFO) until the test writes the URL into it;
    // sh waits until curl has exec'd (as sh's child), then ends.
    let script = format!(
        "/usr/bin/curl -s -m 2 -o /dev/null -K {} >/dev/null 2>&1 </dev/null & sleep 0.3; echo $!",
        fifo.display()
    );
    let out = lab
        .cgroup
        .command("/usr/bin/sh")
        .args(["-c", &script])
        .stderr(Stdio::null())
        .output()
        .expect("sh");
    assert!(out.status.success(), "{out:?}");
    let curl: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("curl's pid");
    std::thread::sleep(Duration::from_millis(100)); // curl has exec'd
                                                    // The ended sh's pid: the kernel's process table keeps it as curl's parent.
    let entry = lab
        .firewall
        .process(curl)
        .expect("process table")
        .expect("curl in the process table");
    assert_eq!(entry.comm, "curl");
    let sh_pid = entry.info.ppid;
    assert!(
        !Path::new(&format!("/proc/{sh_pid}")).exists(),
        "sh has ended: {:?} {entry:?}",
        std::fs::read_to_string(format!("/proc/{sh_pid}/stat"))
    );
    std::thread::sleep(Duration::from_millis(30)); // another start tick
    let holder = ironclad_testing::spawn_with_pid(sh_pid, 20, || {
        let mut bash = lab.cgroup.command("/usr/bin/bash");
        bash.args(["-c", "sleep 10; true"]); // not `exec`ed into sleep
        bash
    })
    .expect("spawn bash");
    let mut holder = holder.expect("sh's pid was not reused by bash in 20 tries");
    std::thread::sleep(Duration::from_millis(100)); // bash has exec'd
    let before = accepted.count();
    std::fs::write(&fifo, format!("url = \"http://127.0.0.1:{port}/\"\n")).expect("config");
    let start = std::time::Instant::now();
    while Path::new(&format!("/proc/{curl}")).exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        accepted.count() - before,
        0,
        "curl's parent was sh; the bash that took sh's pid later is not its parent"
    );
    // And the rule does open the way for a curl whose live parent is bash.
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(
        accepted_after(
            &lab.cgroup,
            "/usr/bin/bash",
            &[
                "-c",
                &format!("/usr/bin/curl -s -m 2 -o /dev/null {url}; true")
            ],
            &accepted
        ),
        1
    );
}

#[test]
fn a_binary_on_overlayfs_is_matched_by_its_path_and_recorded_with_the_same_identity() {
    require_privileges!();
    // A container's root: the binary lives in an image layer on another filesystem
    // (a tmpfs here), exec'd through the overlay. With layers on different
    // filesystems, `stat` reports the layer's device for the file, not the overlay's
    // superblock the kernel sees.
    let clients = Clients::build();
    let root = tempfile::tempdir().expect("tempdir");
    let (lower, upper, work, merged) = (
        root.path().join("lower"),
        root.path().join("upper"),
        root.path().join("work"),
        root.path().join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(d).expect("mkdir");
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let mount = |args: &[&str], at: &Path| {
        let status = Command::new("mount")
            .args(args)
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount {args:?} {}", at.display());
        Unmount(at.to_path_buf())
    };
    let _lower = mount(&["-t", "tmpfs", "layer"], &lower);
    std::fs::copy(clients.path("client-a"), lower.join("client-a")).expect("copy into layer");
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let _overlay = mount(&["-t", "overlay", "overlay", "-o", &options], &merged);
    {
        use std::os::unix::fs::MetadataExt;
        let (file, mnt) = (
            std::fs::metadata(merged.join("client-a")).expect("stat"),
            std::fs::metadata(&merged).expect("stat"),
        );
        assert_ne!(
            file.dev(),
            mnt.dev(),
            "stat shows the layer's device for the file: the case this test is about"
        );
    }
    let exe = merged.join("client-a");

    let mut lab = Lab::new("egress-overlay");
    lab.apply(&format!(
        "egress:\n  default: deny\n  rules:\n    - exe: {}\n      dst: 127.0.0.1\n      proto: tcp\n      action: allow\n",
        exe.display()
    ));
    lab.attach();
    let (port, accepted) = tcp_listener("127.0.0.1");
    let p = port.to_string();
    assert_eq!(
        run(&lab.cgroup, &exe, &["tcp4", "127.0.0.1", &p]),
        (1, 0, 0)
    );
    // The lower file run by its own path is an inode of another superblock (the
    // layer's): the rule names the program as the container sees it.
    assert_eq!(
        run(
            &lab.cgroup,
            &lower.join("client-a"),
            &["tcp4", "127.0.0.1", &p]
        ),
        (0, 1, 0),
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(accepted.count(), 1);

    // The kernel's record of the running process agrees with the identity computed
    // from the path.
    let mut child = lab
        .cgroup
        .command(&exe.display().to_string())
        .args(["wait-tcp4", "127.0.0.1", "9"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("client");
    // The cgroup's `sh` must have exec'd the client: 200 ms were not always enough on
    // a loaded CI machine, and the table rightly named `sh`.
    exec_of(child.id(), &exe);
    let entry = lab
        .firewall
        .process(child.id())
        .expect("lookup")
        .expect("recorded at exec");
    assert_eq!(
        entry.info.exe,
        ironclad_policy::egress::exe_identity(&exe).expect("identity")
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    let _ = child.wait();
}

#[test]
fn ipv6_udp_sendto_and_ipv4_mapped_destinations_are_enforced() {
    require_privileges!();
    let mut lab = Lab::new("egress-v6");
    let a = lab.clients.path("client-a");
    let b = lab.clients.path("client-b");
    lab.apply(&format!(
        "egress:\n  default: allow\n  rules:\n    - exe: {a}\n      dst: 127.0.0.1\n      ports: 9\n      action: deny\n    - exe: {b}\n      action: deny\n",
        a = a.display(),
        b = b.display()
    ));
    lab.attach();
    let (port6, accepted6) = tcp_listener("::1");
    let p6 = port6.to_string();
    assert_eq!(run(&lab.cgroup, &a, &["tcp6", "::1", &p6]), (1, 0, 0));
    assert_eq!(run(&lab.cgroup, &b, &["tcp6", "::1", &p6]), (0, 1, 0));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(accepted6.count(), 1);

    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let pu = udp.local_addr().expect("addr").port().to_string();
    assert_eq!(run(&lab.cgroup, &a, &["udp4", "127.0.0.1", &pu]), (1, 0, 0));
    assert_eq!(
        run(&lab.cgroup, &b, &["udp4", "127.0.0.1", &pu]),
        (0, 1, 0),
        "unconnected sendto"
    );
    let mut buf = [0u8; 8];
    assert!(udp.recv(&mut buf).is_ok());
    assert!(udp.recv(&mut buf).is_err(), "exactly one datagram arrived");

    // Port 9 on 127.0.0.1 is denied to A; an AF_INET6 socket to ::ffff:127.0.0.1 is the
    // same destination and gets the same answer.
    assert_eq!(run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", "9"]), (0, 1, 0));
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp6", "::ffff:127.0.0.1", "9"]),
        (0, 1, 0),
        "no mapped bypass"
    );
    assert_eq!(
        run(&lab.cgroup, &a, &["udp6", "::ffff:127.0.0.1", "9"]),
        (0, 1, 0)
    );
}

#[test]
fn a_rule_by_cgroup_allows_the_same_binary_in_one_cgroup_only() {
    require_privileges!();
    let mut lab = Lab::new("egress-cg");
    let allowed = TestCgroup::new_in(lab.cgroup.path(), "in").expect("child cgroup");
    let denied = TestCgroup::new_in(lab.cgroup.path(), "out").expect("child cgroup");
    lab.apply(&format!(
        "egress:\n  default: deny\n  rules:\n    - cgroup: {}\n      action: allow\n",
        allowed.path().display()
    ));
    lab.attach();
    let (port, _) = tcp_listener("127.0.0.1");
    let p = port.to_string();
    let a = lab.clients.path("client-a");
    assert_eq!(run(&allowed, &a, &["tcp4", "127.0.0.1", &p]), (1, 0, 0));
    assert_eq!(run(&denied, &a, &["tcp4", "127.0.0.1", &p]), (0, 1, 0));
}

#[test]
fn the_connect_rate_limit_cuts_a_burst_to_its_budget() {
    require_privileges!();
    let mut lab = Lab::new("egress-rate");
    lab.apply("egress:\n  default: allow\n  rate_limit: { per_second: 50, burst: 100 }\n");
    lab.attach();
    let (port, _) = tcp_listener("127.0.0.1");
    let a = lab.clients.path("client-a");
    let start = std::time::Instant::now();
    let (ok, eperm, other) = run(
        &lab.cgroup,
        &a,
        &["tcp4", "127.0.0.1", &port.to_string(), "500"],
    );
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(ok + eperm + other, 500);
    assert_eq!(other, 0);
    let budget = 100.0 + 50.0 * seconds;
    assert!(
        f64::from(ok) <= budget + 2.0 && ok >= 100,
        "{ok} connects in {seconds:.2}s, budget {budget:.1}"
    );
    assert_eq!(
        u64::from(eperm),
        lab.firewall.rate_limited(&a).expect("count")
    );
    assert_eq!(
        lab.firewall.total(EgressTotal::RateLimited).expect("t"),
        u64::from(eperm)
    );
}

#[test]
fn processes_started_before_the_firewall_are_identified() {
    require_privileges!();
    let clients = Clients::build();
    let a = clients.path("client-a");
    let cgroup = TestCgroup::new("egress-seed").expect("cgroup");
    let (port, accepted) = tcp_listener("127.0.0.1");
    let mut early = cgroup
        .command(&a.display().to_string())
        .args(["wait-tcp4", "127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client");
    // Running the client (not the cgroup's `sh` still) before the firewall loads.
    exec_of(early.id(), &a);

    let pins = BpffsDir::new("egress-seed").expect("bpffs");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let firewall = EgressFirewall::load(&loader).expect("load");
    firewall
        .replace(&policy(&format!(
            "egress:\n  default: deny\n  rules:\n    - exe: {}\n      action: allow\n",
            a.display()
        )))
        .expect("replace");
    let _attached = firewall.attach(cgroup.path()).expect("attach");

    early
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    let mut out = String::new();
    early
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert!(out.starts_with("ok=1 eperm=0"), "seeded from /proc: {out}");
    assert!(early.wait().expect("wait").success());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(accepted.count(), 1);
}

/// The kernel's verdict memo (`ic_egress_memo`: what the named path decided, by caller,
/// destination and generation) never answers for another caller, nor with a verdict of
/// an earlier policy, even one whose rule set had the same parity (a memo keyed by the
/// live rule set alone would give the first policy's `allow` back to the third). The
/// rule is client-a's and names its comm too: client-a under another comm passes the
/// filter's owner check and is decided (and remembered) apart.
#[test]
fn a_remembered_verdict_is_never_another_callers_or_an_earlier_policys() {
    require_privileges!();
    use libbpf_rs::MapCore as _;
    let mut lab = Lab::new("egress-memo");
    let a = lab.clients.path("client-a");
    let b = lab.clients.path("client-b");
    let (port, accepted) = tcp_listener("127.0.0.1");
    let p = port.to_string();
    let rule = |action: &str, default: &str| {
        format!(
            "egress:\n  default: {default}\n  rules:\n    - exe: {}\n      comm: worker\n      dst: 127.0.0.1\n      ports: {port}\n      action: {action}\n",
            a.display()
        )
    };
    let memo_entries = |pins: &BpffsDir| -> Vec<u32> {
        // The key's first field is the generation it was decided under.
        pinned(pins, "ic_egress_memo")
            .keys()
            .map(|k| u32::from_ne_bytes([k[0], k[1], k[2], k[3]]))
            .collect()
    };
    let worker = ["tcp4", "127.0.0.1", &p, "1", "worker"];
    let other = ["tcp4", "127.0.0.1", &p, "1", "other"];
    lab.apply(&rule("allow", "deny"));
    lab.attach();
    let first = live_config(&lab._pins).generation;
    for _ in 0..3 {
        assert_eq!(run(&lab.cgroup, &a, &worker), (1, 0, 0));
        assert_eq!(
            run(&lab.cgroup, &a, &other),
            (0, 1, 0),
            "client-a under another comm is not given the worker's verdict"
        );
        assert_eq!(
            run(&lab.cgroup, &b, &worker),
            (0, 1, 0),
            "a byte-identical copy (another inode) is not client-a"
        );
    }
    let remembered = memo_entries(&lab._pins);
    assert!(
        remembered.len() == 2 && remembered.iter().all(|g| *g == first),
        "client-a's two verdicts remembered under generation {first}: {remembered:?}"
    );

    lab.apply(&rule("deny", "allow"));
    assert_eq!(run(&lab.cgroup, &a, &worker), (0, 1, 0));
    assert_eq!(run(&lab.cgroup, &a, &other), (1, 0, 0));
    // The third policy uses the first one's rule set again (generation + 2), its first
    // slot now a rule for the other comm: a verdict remembered from the first policy
    // (the worker's slot 1, the other comm's "no rule") would decide both wrongly.
    lab.apply(&format!(
        "egress:\n  default: deny\n  rules:\n    - exe: {a}\n      comm: other\n      dst: 127.0.0.1\n      ports: {port}\n      action: allow\n    - exe: {a}\n      comm: worker\n      dst: 127.0.0.1\n      ports: {port}\n      action: deny\n",
        a = a.display()
    ));
    let third = live_config(&lab._pins).generation;
    assert_eq!((third - first, third & 1), (2, first & 1));
    for _ in 0..3 {
        assert_eq!(
            run(&lab.cgroup, &a, &worker),
            (0, 1, 0),
            "the first policy's allow is not remembered into the third"
        );
    }
    assert_eq!(run(&lab.cgroup, &a, &other), (1, 0, 0));
    assert!(memo_entries(&lab._pins).contains(&third));
    std::thread::sleep(Duration::from_millis(200));
    // Three connections of the worker under the first policy, one of the other comm
    // under the second and one under the third.
    assert_eq!(accepted.count(), 5);
}

#[test]
fn a_bad_policy_is_refused_and_the_live_one_stays() {
    require_privileges!();
    let mut lab = Lab::new("egress-bad");
    let a = lab.clients.path("client-a");
    lab.apply(&format!(
        "egress:\n  default: deny\n  rules:\n    - exe: {}\n      action: allow\n",
        a.display()
    ));
    lab.attach();
    let generation = lab.firewall.config().expect("config").generation;
    let bad = compile_str(
        "egress:\n  default: allow\n  rules:\n    - exe: /nonexistent/tool\n      action: allow\n    - dst: 10.0.0.0/33\n      action: deny\n    - ports: 0\n      action: deny\n",
        Path::new("bad.yaml"),
    )
    .expect_err("refused");
    let lines: Vec<String> = bad.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines.iter().all(|l| l.starts_with("bad.yaml:")));
    assert_eq!(
        lab.firewall.config().expect("config").generation,
        generation
    );
    let (port, _) = tcp_listener("127.0.0.1");
    let p = port.to_string();
    assert_eq!(run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &p]), (1, 0, 0));
    assert_eq!(
        run(
            &lab.cgroup,
            &lab.clients.path("client-b"),
            &["tcp4", "127.0.0.1", &p]
        ),
        (0, 1, 0)
    );
}

/// Waits (10 s at most) until the process `pid` runs `exe`: the cgroup's `sh` has
/// moved itself into the cgroup and exec'd it. A fixed pause was too short on a slow
/// machine, and the table then held the `sh`.
fn exec_of(pid: u32, exe: &std::path::Path) {
    let start = std::time::Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .as_deref()
        != Some(exe)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{pid} never exec'd {}",
            exe.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_process_table_records_identity_parent_ids_cgroup_and_comm() {
    require_privileges!();
    let clients = Clients::build();
    let a = clients.path("client-a");
    let cgroup = TestCgroup::new("egress-table").expect("cgroup");
    let mut before = cgroup
        .command(&a.display().to_string())
        .args(["wait-tcp4", "127.0.0.1", "9"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("client");
    exec_of(before.id(), &a);
    let pins = BpffsDir::new("egress-table").expect("bpffs");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let firewall = EgressFirewall::load(&loader).expect("load");
    let mut after = cgroup
        .command(&a.display().to_string())
        .args(["wait-tcp4", "127.0.0.1", "9"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("client");
    exec_of(after.id(), &a);

    let identity = ironclad_policy::egress::exe_identity(&a).expect("stat");
    let cgroup_id = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(cgroup.path()).expect("cgroup").ino()
    };
    for (child, how) in [(&before, "seeded from /proc"), (&after, "recorded at exec")] {
        let entry = firewall
            .process(child.id())
            .expect("lookup")
            .unwrap_or_else(|| panic!("{how}: not in the table"));
        assert_eq!(entry.info.exe, identity, "{how}");
        assert_eq!(
            entry.info.ppid,
            std::process::id(),
            "{how}: the sh that exec'd it was forked by us"
        );
        assert_eq!((entry.info.uid, entry.info.gid), (0, 0), "{how}");
        assert_eq!(entry.info.cgroup_id, cgroup_id, "{how}");
        assert_eq!(entry.comm, "client-a", "{how}");
        assert_eq!(
            entry.exe_path.as_deref(),
            Some(a.display().to_string().as_str()),
            "{how}"
        );
    }
    for child in [&mut before, &mut after] {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("go");
        let _ = child.wait();
    }
    let gone = before.id();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        firewall.process(gone).expect("lookup").is_none(),
        "dropped on exit"
    );
}

/// The firewall has the Shield's shape: `replace(&self)` reports what went live, and
/// `attach` returns a handle: dropping it detaches, `detach` also removes its pins.
#[test]
fn the_attachment_is_a_handle_dropped_or_detached_like_the_shields() {
    require_privileges!();
    let mut lab = Lab::new("egress-handle");
    let client = lab.clients.path("client-a");
    let (port, _accepted) = tcp_listener("127.0.0.1");
    let p = port.to_string();
    let deny_all = policy("egress:\n  default: deny\n");
    let first = lab.firewall.replace(&deny_all).expect("replace");
    let second = lab
        .firewall
        .replace(&policy(
            "egress:\n  default: deny\n  rules:\n    - dst: 192.0.2.1\n      action: allow\n",
        ))
        .expect("replace");
    assert_eq!((first.rules, second.rules), (0, 1));
    assert_ne!(
        first.generation, second.generation,
        "each swap flips the rule set"
    );
    lab.firewall.replace(&deny_all).expect("replace");

    let connect = |lab: &Lab| run(&lab.cgroup, &client, &["tcp4", "127.0.0.1", &p]);
    assert_eq!(connect(&lab), (1, 0, 0), "not attached yet");
    lab.attach();
    assert_eq!(connect(&lab), (0, 1, 0), "attached: refused");
    drop(lab.attached.take());
    assert_eq!(connect(&lab), (1, 0, 0), "the handle dropped: detached");

    let pinned = lab
        .firewall
        .attach_pinned(lab.cgroup.path())
        .expect("attach pinned");
    assert_eq!(pinned.cgroup(), lab.cgroup.path());
    let pins = pinned.pin_paths();
    assert_eq!(
        pins.len(),
        4,
        "connect4/6, sendmsg4/6 (the DNS programs only with rules by name): {pins:?}"
    );
    assert!(pins.iter().all(|p| p.exists()), "{pins:?}");
    let ids = pinned.link_ids().expect("link ids");
    assert_eq!(ids.len(), 4);
    for id in &ids {
        let link = bpftool(&["link", "show", "id", &id.to_string()]).expect("bpftool");
        assert_eq!(link["type"], "cgroup", "{link}");
    }
    assert_eq!(connect(&lab), (0, 1, 0), "pinned: refused");
    pinned.detach().expect("detach");
    assert!(pins.iter().all(|p| !p.exists()), "the pins went: {pins:?}");
    assert_eq!(connect(&lab), (1, 0, 0), "detached");
}

#[test]
fn ten_thousand_rules_sharing_one_executable_decide_by_destination_port_and_the_rest_of_who() {
    require_privileges!();
    let mut lab = Lab::new("egress-shared");
    let a = lab.clients.path("client-a");
    let b = lab.clients.path("client-b");
    let (open, _) = tcp_listener("127.0.0.1");
    let (closed, _) = tcp_listener("127.0.0.1");
    let (first, _) = tcp_listener("127.0.0.1");
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").expect("/proc/self").uid()
    };
    // Rule 1 (no identity: the `any` key) denies `first` to everyone. Then 10,000 rules
    // share client-a's executable: 9,997 that never match loopback, one for another
    // uid (the destination and port match, the rest of the identity does not), one
    // that denies `closed`, and one that would deny `open` but comes after a rule
    // allowing it.
    let mut yaml = format!(
        "egress:\n  default: allow\n  rules:\n    - dst: 127.0.0.1\n      ports: {first}\n      action: deny\n"
    );
    for i in 0..9_997u32 {
        yaml.push_str(&format!(
            "    - exe: {a}\n      dst: 10.{}.{}.0/24\n      ports: {}\n      action: deny\n",
            (i >> 8) & 0xff,
            i & 0xff,
            1000 + i % 5000,
            a = a.display()
        ));
    }
    yaml.push_str(&format!(
        "    - exe: {a}\n      uid: {other}\n      dst: 127.0.0.1\n      ports: {closed}\n      action: allow\n\
         \x20   - exe: {a}\n      dst: 127.0.0.1\n      ports: {closed}\n      proto: tcp\n      action: deny\n\
         \x20   - exe: {a}\n      dst: 127.0.0.0/8\n      ports: {open}\n      action: allow\n\
         \x20   - exe: {a}\n      dst: 127.0.0.1\n      ports: {open}\n      action: deny\n",
        a = a.display(),
        other = uid + 1,
    ));
    let compiled = policy(&yaml);
    assert_eq!(compiled.rules.len(), 10_002);
    let shared = compiled
        .index
        .values()
        .map(Vec::len)
        .max()
        .expect("an identity");
    assert_eq!(shared, 10_001, "one executable's rules (64 at most before)");
    lab.firewall.replace(&compiled).expect("replace");
    lab.attach();

    let port = |p: u16| p.to_string();
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &port(closed)]),
        (0, 1, 0),
        "the 10,000th rule of the executable denies, past the other uid's rule"
    );
    assert_eq!(
        run(&lab.cgroup, &a, &["udp4", "127.0.0.1", &port(closed)]),
        (1, 0, 0),
        "that rule is tcp only"
    );
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &port(open)]),
        (1, 0, 0),
        "an earlier allow of a wider prefix wins"
    );
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &port(first)]),
        (0, 1, 0),
        "the first rule of the policy (another key) comes before them all"
    );
    assert_eq!(
        run(&lab.cgroup, &b, &["tcp4", "127.0.0.1", &port(closed)]),
        (1, 0, 0),
        "another executable has none of these rules"
    );
    assert_eq!(
        run(
            &lab.cgroup,
            &a,
            &["tcp6", "::ffff:127.0.0.1", &port(closed)]
        ),
        (0, 1, 0),
        "the IPv4-mapped address is the same destination"
    );
    let counters: std::collections::BTreeMap<u32, u64> = lab
        .firewall
        .rule_counters()
        .expect("counters")
        .into_iter()
        .collect();
    assert_eq!(counters.get(&1), Some(&1), "rule 1: the first port");
    assert_eq!(
        counters.get(&9_999),
        Some(&0),
        "the other uid's rule never matched"
    );
    assert_eq!(
        counters.get(&10_000),
        Some(&2),
        "tcp4 and tcp6 to the closed port"
    );
    assert_eq!(counters.get(&10_001), Some(&1), "the wider allow");
    assert_eq!(counters.get(&10_002), Some(&0), "behind it");
}

/// A decision reads only the caller's fields the live rules compare (a rule by
/// destination reads none of them); the event of a denial still names the whole caller.
/// A rule by uid decides by the caller's real uid (read from its credentials).
#[test]
fn a_denial_by_destination_alone_names_the_whole_caller_and_uid_rules_see_the_callers_uid() {
    require_privileges!();
    use std::os::unix::fs::PermissionsExt;
    let mut lab = Lab::new("egress-who");
    let a = lab.clients.path("client-a");
    // The client runs as nobody below: its directory must be open to it.
    std::fs::set_permissions(
        lab.clients.dir.path(),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let (denied_port, denied_accepted) = tcp_listener("127.0.0.1");
    let (uid_port, uid_accepted) = tcp_listener("127.0.0.1");
    lab.apply(&format!(
        "egress:\n  default: allow\n  rules:\n    - dst: 127.0.0.1\n      ports: {denied_port}\n      action: deny\n    - uid: 65534\n      ports: {uid_port}\n      action: deny\n"
    ));
    lab.attach();
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("test", 1024, Overflow::DropNewest);
    let events = lab.firewall.events(fanout.clone()).expect("events");

    let dp = denied_port.to_string();
    let up = uid_port.to_string();
    assert_eq!(run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &dp]), (0, 1, 0));
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &up]),
        (1, 0, 0),
        "root is not uid 65534"
    );
    let as_nobody = lab
        .cgroup
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&a)
        .args(["tcp4", "127.0.0.1", &up])
        .output()
        .expect("setpriv");
    let text = String::from_utf8_lossy(&as_nobody.stdout);
    assert!(
        text.contains("ok=0") && text.contains("eperm=1"),
        "uid 65534 is denied: {as_nobody:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(denied_accepted.count(), 0);
    assert_eq!(uid_accepted.count(), 1, "only root's connection");

    let denials = decisions(&events, &sub);
    assert_eq!(denials.len(), 2, "{denials:#?}");
    let exe = ironclad_core::identity::exe_identity(&a).expect("identity");
    let cgroup_id =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(lab.cgroup.path()).expect("cgroup"));
    for (d, uid, port, rule) in [
        (&denials[0], 0, denied_port, 1),
        (&denials[1], 65534, uid_port, 2),
    ] {
        assert_eq!(d.actor.comm, "client-a", "{d:#?}");
        assert_eq!(d.actor.uid, uid, "{d:#?}");
        assert_eq!(
            (d.actor.exe_dev, d.actor.exe_ino),
            (exe.dev, exe.ino),
            "{d:#?}"
        );
        assert_eq!(d.cgroup_id, cgroup_id, "{d:#?}");
        assert_eq!(d.dport, port);
        assert_eq!(d.rule_id, rule);
        assert!(d.actor.pid > 0, "{d:#?}");
    }
}

/// A prefix of the destination filter in the kernel: generation, address, length.
type FilterPrefix = (u8, [u8; 16], u32);

/// The identity firewall's map `name`, through its pin (as `bpftool` would open it).
fn pinned(pins: &BpffsDir, name: &str) -> libbpf_rs::MapHandle {
    libbpf_rs::MapHandle::from_pinned_path(pins.path().join("egress").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The live configuration, through its pin.
fn live_config(pins: &BpffsDir) -> ironclad_core::abi::EgressConfig {
    use libbpf_rs::MapCore as _;
    pinned(pins, "ic_egress_config")
        .lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .expect("config")
        .and_then(|v| ironclad_core::abi::EgressConfig::from_bytes(&v))
        .expect("config value")
}

/// The live configuration's flags and the destination filter's prefixes in the kernel,
/// in the trie and in the hash (read through the pins, as `bpftool` would).
fn destination_filter(pins: &BpffsDir) -> (u8, Vec<FilterPrefix>, Vec<FilterPrefix>) {
    use ironclad_core::abi::{EgressDstKey, FwAddrKey};
    use libbpf_rs::MapCore as _;
    let open = |name: &str| pinned(pins, name);
    let config = live_config(pins);
    let mut trie: Vec<FilterPrefix> = open("ic_egress_dst_trie")
        .keys()
        .filter_map(|k| FwAddrKey::from_bytes(&k))
        .map(|k| (k.tag[0], k.addr, k.prefixlen - 32))
        .collect();
    let mut hash: Vec<FilterPrefix> = open("ic_egress_dst")
        .keys()
        .filter_map(|k| EgressDstKey::from_bytes(&k))
        .map(|k| (k.generation, k.addr, u32::from(k.prefixlen)))
        .collect();
    trie.sort_unstable();
    hash.sort_unstable();
    (config.flags, trie, hash)
}

#[test]
fn outside_every_rules_destinations_the_default_decides_and_a_rule_without_one_turns_that_off() {
    require_privileges!();
    use ironclad_core::abi::{EGRESS_F_DST_FILTER, EGRESS_F_DST_HASH};
    let mut lab = Lab::new("egress-dstf");
    let a = lab.clients.path("client-a");
    let (port_a, accepted_a) = tcp_listener("127.0.0.1");
    let (port_b, accepted_b) = tcp_listener("127.0.0.2");
    let (pa, pb) = (port_a.to_string(), port_b.to_string());
    let mapped = |last: u8| {
        let mut addr = [0u8; 16];
        addr[10..].copy_from_slice(&[0xff, 0xff, 127, 0, 0, last]);
        addr
    };
    lab.attach();

    // Default deny, one allowed destination: outside it, the default still denies.
    // One prefix length: the filter is the hash.
    lab.apply(&format!(
        "egress:\n  default: deny\n  rules:\n    - uid: 0\n      dst: 127.0.0.1\n      ports: {pa}\n      action: allow\n"
    ));
    let (flags, trie, hash) = destination_filter(&lab._pins);
    assert_eq!(flags, EGRESS_F_DST_FILTER | EGRESS_F_DST_HASH);
    let live = hash.first().map(|p| p.0).expect("the filter's prefixes");
    assert_eq!(hash, vec![(live, mapped(1), 128)]);
    assert!(trie.is_empty(), "{trie:?}");
    assert_eq!(run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &pa]), (1, 0, 0));
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.2", &pb]),
        (0, 1, 0),
        "outside every rule's destination: the default (deny)"
    );
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &pb]),
        (0, 1, 0),
        "a named destination, another port: the default"
    );

    // A rule by comm alone names no destination: no filter, and it decides anywhere.
    lab.apply(&format!(
        "egress:\n  default: allow\n  rules:\n    - uid: 0\n      dst: 127.0.0.2\n      action: deny\n    - comm: client-a\n      ports: {pa}\n      action: deny\n"
    ));
    let (flags, trie, hash) = destination_filter(&lab._pins);
    assert_eq!(flags & EGRESS_F_DST_FILTER, 0);
    assert!(
        hash.iter().all(|p| p.0 == live) && trie.is_empty(),
        "none written for the new generation: {hash:?} {trie:?}"
    );
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &pa]),
        (0, 1, 0),
        "the comm rule, at a destination no other rule names"
    );
    assert_eq!(run(&lab.cgroup, &a, &["tcp4", "127.0.0.2", &pb]), (0, 1, 0));

    // Back to the first generation's maps: its old prefixes are gone with it. Every
    // prefix a rule names is in the filter, 127.0.0.1 inside 127.0.0.0/31 too (each
    // carries its own classes). Two lengths: the trie.
    lab.apply("egress:\n  default: allow\n  rules:\n    - uid: 0\n      dst: 127.0.0.2/32\n      action: deny\n    - uid: 0\n      dst: 127.0.0.1\n      ports: 2\n      action: deny\n    - uid: 0\n      dst: 127.0.0.0/31\n      ports: 1\n      action: deny\n");
    let (flags, trie, hash) = destination_filter(&lab._pins);
    assert_eq!(flags, EGRESS_F_DST_FILTER);
    let mut net = mapped(0);
    net[15] = 0;
    assert_eq!(
        trie,
        vec![
            (live, net, 127),
            (live, mapped(1), 128),
            (live, mapped(2), 128)
        ],
        "every prefix a rule names"
    );
    assert!(hash.iter().all(|p| p.0 != live), "{hash:?}");
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &pa]),
        (1, 0, 0),
        "inside the filter, no rule matches: the default (allow)"
    );
    assert_eq!(run(&lab.cgroup, &a, &["tcp4", "127.0.0.2", &pb]), (0, 1, 0));

    // One length again, /31s: the hash is looked up with the destination masked to
    // it, and the rule decides.
    lab.apply(&format!(
        "egress:\n  default: allow\n  rules:\n    - uid: 0\n      dst: 127.0.0.2/31\n      ports: 1\n      action: deny\n    - uid: 0\n      dst: 127.0.0.0/31\n      ports: {pa}\n      action: deny\n"
    ));
    let (flags, trie, hash) = destination_filter(&lab._pins);
    assert_eq!(flags, EGRESS_F_DST_FILTER | EGRESS_F_DST_HASH);
    assert_eq!(
        hash.iter()
            .filter(|p| p.0 != live)
            .cloned()
            .collect::<Vec<_>>(),
        vec![(1 - live, net, 127), (1 - live, mapped(2), 127)]
    );
    assert!(trie.iter().all(|p| p.0 == live), "{trie:?}");
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &pa]),
        (0, 1, 0),
        "inside 127.0.0.0/31: its rule denies"
    );

    // Five lengths: the trie again, and the hash keeps nothing of this generation.
    lab.apply(&format!(
        "egress:\n  default: allow\n  rules:\n    - uid: 0\n      dst: 127.0.0.2\n      action: deny\n    - uid: 0\n      dst: 127.0.0.8/30\n      action: deny\n    - uid: 0\n      dst: 127.0.1.0/24\n      action: deny\n    - uid: 0\n      dst: 127.1.0.0/16\n      action: deny\n    - uid: 0\n      dst: 127.64.0.0/10\n      ports: {pa}\n      action: deny\n"
    ));
    let (flags, trie, hash) = destination_filter(&lab._pins);
    assert_eq!(flags, EGRESS_F_DST_FILTER);
    // Five replacements since the first: the live generation is the first's again
    // (sorted by address).
    assert_eq!(
        trie.iter()
            .filter(|p| p.0 == live)
            .map(|p| p.2)
            .collect::<Vec<_>>(),
        vec![128, 126, 120, 112, 106],
        "{trie:?}"
    );
    assert!(hash.iter().all(|p| p.0 != live), "{hash:?}");
    assert_eq!(run(&lab.cgroup, &a, &["tcp4", "127.0.0.2", &pb]), (0, 1, 0));
    assert_eq!(
        run(&lab.cgroup, &a, &["tcp4", "127.0.0.1", &pa]),
        (1, 0, 0),
        "outside every named prefix: the default (allow)"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(accepted_a.count(), 3);
    assert_eq!(accepted_b.count(), 0);
}

/// One rule of a random policy, as the reference reads it.
#[derive(Debug, Clone)]
struct RefRule {
    uid: Option<u32>,
    comm: Option<&'static str>,
    /// Index into the differential test's clients.
    exe: Option<usize>,
    tcp: Option<bool>,
    dst: Option<ipnetwork::IpNetwork>,
    ports: Vec<(u16, u16)>,
    action: &'static str,
}

/// A caller of the differential test: client, uid, comm.
type Caller = (usize, u32, &'static str);

impl RefRule {
    fn yaml(&self, clients: &[PathBuf]) -> String {
        let mut y = String::from("    - action: ");
        y.push_str(self.action);
        y.push('\n');
        if let Some(uid) = self.uid {
            y.push_str(&format!("      uid: {uid}\n"));
        }
        if let Some(comm) = self.comm {
            y.push_str(&format!("      comm: {comm}\n"));
        }
        if let Some(exe) = self.exe {
            y.push_str(&format!("      exe: {}\n", clients[exe].display()));
        }
        if let Some(tcp) = self.tcp {
            y.push_str(if tcp {
                "      proto: tcp\n"
            } else {
                "      proto: udp\n"
            });
        }
        if let Some(dst) = self.dst {
            y.push_str(&format!("      dst: {dst}\n"));
        }
        if !self.ports.is_empty() {
            let list: Vec<String> = self
                .ports
                .iter()
                .map(|(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("\"{lo}-{hi}\"")
                    }
                })
                .collect();
            y.push_str(&format!("      ports: [{}]\n", list.join(", ")));
        }
        y
    }

    /// Whether the rule matches `caller` connecting to `dst` (IPv4 as IPv4-mapped
    /// IPv6) port `port`, over TCP or UDP.
    fn matches(&self, caller: Caller, tcp: bool, dst: std::net::Ipv6Addr, port: u16) -> bool {
        let (exe, uid, comm) = caller;
        let in_dst = match self.dst {
            None => true,
            Some(ipnetwork::IpNetwork::V4(n)) => {
                dst.to_ipv4_mapped().is_some_and(|a| n.contains(a))
            }
            Some(ipnetwork::IpNetwork::V6(n)) => n.contains(dst),
        };
        self.uid.is_none_or(|u| u == uid)
            && self.comm.is_none_or(|c| c == comm)
            && self.exe.is_none_or(|e| e == exe)
            && self.tcp.is_none_or(|t| t == tcp)
            && in_dst
            && (self.ports.is_empty()
                || self
                    .ports
                    .iter()
                    .any(|(lo, hi)| (*lo..=*hi).contains(&port)))
    }
}

/// The live generation's destination filter entries, as (one owner key, several).
fn filter_owners(pins: &BpffsDir) -> (usize, usize) {
    use ironclad_core::abi::{EgressDstKey, EgressDstOwner, FwAddrKey, EGRESS_OWNERS_SEVERAL};
    use libbpf_rs::MapCore as _;
    let open = |name: &str| pinned(pins, name);
    // The live rule set: the generation's low bit.
    let live = live_config(pins).generation & 1;
    let mut owners = Vec::new();
    for (name, generation_of) in [
        (
            "ic_egress_dst",
            &(|k: &[u8]| EgressDstKey::from_bytes(k).map(|k| u32::from(k.generation)))
                as &dyn Fn(&[u8]) -> Option<u32>,
        ),
        ("ic_egress_dst_trie", &|k: &[u8]| {
            FwAddrKey::from_bytes(k).map(|k| u32::from(k.tag[0]))
        }),
    ] {
        let map = open(name);
        for key in map.keys().filter(|k| generation_of(k) == Some(live)) {
            let value = map
                .lookup(&key, libbpf_rs::MapFlags::ANY)
                .expect("lookup")
                .and_then(|v| EgressDstOwner::from_bytes(&v))
                .expect("owner");
            owners.push(value.kind);
        }
    }
    let several = owners
        .iter()
        .filter(|k| **k == EGRESS_OWNERS_SEVERAL)
        .count();
    (owners.len() - several, several)
}

/// The kernel against a reference scan of the rules in policy order, on random
/// policies: identities by uid, comm and executable (one key or several per
/// destination), nested IPv4 and IPv6 prefixes, protocols, port lists and ranges, every
/// action, both defaults; the destination filter as a hash (one prefix length), a trie
/// (several) and absent (a rule without a destination). Callers connect from a network
/// namespace of their own (no route: nothing leaves; the hook decides before routing).
#[test]
fn random_policies_decide_as_a_scan_of_the_rules_in_order() {
    require_privileges!();
    use ipnetwork::{IpNetwork, Ipv4Network};
    use ironclad_core::abi::{EGRESS_F_DST_FILTER, EGRESS_F_DST_HASH};
    use ironclad_testing::rules::Rng;
    use std::net::{Ipv4Addr, Ipv6Addr};

    let mut lab = Lab::new("egress-diff");
    let clients = [
        lab.clients.path("client-a"),
        lab.clients.path("client-other"),
    ];
    let net = |s: &str| -> IpNetwork { s.parse().unwrap_or_else(|e| panic!("{s}: {e}")) };
    let pool: Vec<IpNetwork> = [
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.3/32",
        "10.2.0.0/16",
        "10.2.128.0/17",
        "192.0.2.0/24",
        "192.0.2.7/32",
        "198.51.100.0/24",
        "2001:db8::/32",
        "2001:db8:1::/48",
        "2001:db8:1::5/128",
        "fd00::/8",
    ]
    .iter()
    .map(|s| net(s))
    .collect();
    let port_lists: [&[(u16, u16)]; 6] = [
        &[],
        &[(443, 443)],
        &[(53, 53)],
        &[(1000, 2000)],
        &[(80, 80), (443, 443)],
        &[(8080, 8080)],
    ];
    let probe_ports = [22u16, 53, 80, 443, 1500, 2000, 8080, 9999];
    let callers: [Caller; 4] = [
        (0, 0, "client-a"),
        (0, 1000, "client-a"),
        (0, 0, "worker"),
        (1, 1000, "worker"),
    ];
    let random_in = |rng: &mut Rng, n: IpNetwork| -> Ipv6Addr {
        match n {
            IpNetwork::V4(n) => {
                let host = (rng.next_u64() as u32) & !u32::from(n.mask());
                Ipv4Addr::from(u32::from(n.network()) | host).to_ipv6_mapped()
            }
            IpNetwork::V6(n) => {
                let host = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))
                    & !u128::from(n.mask());
                Ipv6Addr::from(u128::from(n.network()) | host)
            }
        }
    };
    lab.attach();

    let mut rng = Rng::new(0xd1ff_e9e5);
    let (mut shapes, mut owned, mut shared, mut verdicts) = ([0u32; 3], 0, 0, [0u32; 2]);
    for round in 0..18 {
        // Rounds of three shapes: every rule one key's (the filter's owned entries),
        // keys mixed, and one-length /32s (the hashed filter); a fifth of the rounds add
        // a rule without a destination (no filter).
        let one_key = round % 3 == 0;
        let hashed = round % 3 == 2;
        let count = 8 + rng.below(30) as usize;
        let mut rules: Vec<RefRule> = (0..count)
            .map(|_| {
                let pick = rng.below(8);
                let (uid, comm, exe) = if one_key {
                    (Some(0), None, None)
                } else {
                    match pick {
                        0 | 1 => (Some([0, 1000][rng.below(2) as usize]), None, None),
                        2 => (
                            None,
                            Some(["client-a", "worker"][rng.below(2) as usize]),
                            None,
                        ),
                        3 => (None, None, Some(rng.below(2) as usize)),
                        4 => (Some(1000), Some("worker"), None),
                        5 => (None, None, None),
                        _ => (Some(0), None, None),
                    }
                };
                let within = pool[rng.below(pool.len() as u64) as usize];
                let dst = if hashed {
                    // A host of the pool's IPv4 prefixes (10.0.0.0/8 for an IPv6 one).
                    let within = if within.is_ipv4() {
                        within
                    } else {
                        net("10.0.0.0/8")
                    };
                    let host = random_in(&mut rng, within).to_ipv4_mapped().expect("IPv4");
                    IpNetwork::V4(Ipv4Network::new(host, 32).expect("/32"))
                } else {
                    within
                };
                RefRule {
                    uid,
                    comm,
                    exe,
                    tcp: [None, Some(true), Some(false)][rng.below(3) as usize],
                    dst: Some(dst),
                    ports: port_lists[rng.below(port_lists.len() as u64) as usize].to_vec(),
                    action: ["allow", "deny", "deny", "log"][rng.below(4) as usize],
                }
            })
            .collect();
        if round % 5 == 4 {
            let at = rng.below(rules.len() as u64) as usize;
            rules[at].dst = None;
        }
        let default = ["allow", "deny"][rng.below(2) as usize];
        let mut yaml = format!("egress:\n  default: {default}\n  rules:\n");
        for rule in &rules {
            yaml.push_str(&rule.yaml(&clients));
        }
        lab.apply(&yaml);
        let (flags, _, _) = destination_filter(&lab._pins);
        let shape = match flags {
            f if f == EGRESS_F_DST_FILTER | EGRESS_F_DST_HASH => 0,
            f if f == EGRESS_F_DST_FILTER => 1,
            _ => 2,
        };
        shapes[shape] += 1;
        let (one, several) = filter_owners(&lab._pins);
        owned += one;
        shared += several;

        for caller in callers {
            // Destinations: inside a rule's prefix (most), inside the pool, or outside.
            let mut probes: Vec<(bool, Ipv6Addr, u16, String)> = Vec::new();
            for _ in 0..48 {
                let addr = match rng.below(6) {
                    0 => random_in(&mut rng, net("203.0.113.0/24")),
                    1 => {
                        let within = pool[rng.below(pool.len() as u64) as usize];
                        random_in(&mut rng, within)
                    }
                    _ => {
                        let rule = &rules[rng.below(rules.len() as u64) as usize];
                        // (A rule without a destination: one of the pool's.)
                        let within = rule.dst.unwrap_or_else(|| net("10.0.0.0/8"));
                        if within.prefix() == 32 || within.prefix() == 128 || rng.below(3) == 0 {
                            match within {
                                IpNetwork::V4(n) => n.network().to_ipv6_mapped(),
                                IpNetwork::V6(n) => n.network(),
                            }
                        } else {
                            random_in(&mut rng, within)
                        }
                    }
                };
                let tcp = rng.below(2) == 0;
                let port = probe_ports[rng.below(probe_ports.len() as u64) as usize];
                let mode = match (addr.to_ipv4_mapped(), tcp, rng.below(3) == 0) {
                    (Some(v4), _, false) => {
                        format!("{} {v4} {port}", if tcp { "tcp4" } else { "uconn4" })
                    }
                    (_, _, _) => format!("{} {addr} {port}", if tcp { "tcp6" } else { "uconn6" }),
                };
                probes.push((tcp, addr, port, mode));
            }
            let (exe, uid, comm) = caller;
            let mut child = lab
                .cgroup
                .command("unshare")
                .args(["-n", "setpriv"])
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(&clients[exe])
                .args(["batch", comm])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("client");
            let input: String = probes.iter().map(|p| format!("{}\n", p.3)).collect();
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write probes");
            let out = child.wait_with_output().expect("client output");
            assert!(out.status.success(), "{out:?}");
            let results: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(results.len(), probes.len(), "{out:?}");
            for ((tcp, addr, port, mode), got) in probes.iter().zip(&results) {
                let action = rules
                    .iter()
                    .find(|r| r.matches(caller, *tcp, *addr, *port))
                    .map_or(default, |r| r.action);
                let denied = action == "deny";
                assert!(
                    got == "eperm" || got == "other",
                    "{mode}: {got} (in a namespace without a route nothing connects)"
                );
                assert_eq!(
                    got == "eperm",
                    denied,
                    "round {round}, caller {caller:?}, `{mode}`: the reference says {action}, the kernel {got}\n{yaml}"
                );
                verdicts[usize::from(denied)] += 1;
            }
        }
    }
    // Every shape of the filter ran, with owned and shared entries, and both verdicts.
    assert!(
        shapes.iter().all(|n| *n > 0),
        "filter shapes (hash, trie, none): {shapes:?}"
    );
    assert!(
        owned > 0 && shared > 0,
        "owned entries {owned}, shared {shared}"
    );
    assert!(
        verdicts.iter().all(|n| *n > 100),
        "allowed, denied: {verdicts:?}"
    );
}
