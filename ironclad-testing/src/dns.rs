//! A DNS lab: a real resolver (`dnsmasq`) in a network namespace behind a veth pair,
//! answering from a hosts file the test rewrites (short TTLs, changing addresses), with
//! HTTP servers on the addresses it hands out; and clients on the host that use it as
//! their resolver through a private `/etc/resolv.conf` (a mount namespace of their own:
//! the host's resolver configuration is never touched), in a test cgroup.
//!
//! Subnet `n` of a lab: the resolver at `10.218.n.2` and `fd18:n::2` (the host end
//! `.1`), servers at `10.218.n.10..=19` and `fd18:n::10..=19`, and every address of
//! `10.219.n.0/24` local to the namespace (a listener on port 8080 answers them all).

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{run, NetNs, TestCgroup, VethPair};

/// The port every server of the lab listens on.
pub const HTTP_PORT: u16 = 8080;

/// Whether a DNS server at `addr` answers (a query for `ready.invalid` gets a reply).
fn answers(addr: &str) -> bool {
    Command::new("dig")
        .args([
            "+short",
            "+time=1",
            "+tries=1",
            &format!("@{addr}"),
            "ready.invalid",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A resolver and servers in a namespace.
#[derive(Debug)]
pub struct DnsLab {
    /// The namespace.
    pub ns: NetNs,
    _veth: VethPair,
    dir: tempfile::TempDir,
    dnsmasq: Child,
    http: Child,
    subnet: u8,
}

impl DnsLab {
    /// Starts the lab on subnet `n` (unique per test that runs at the same time), with
    /// `ttl` seconds on every answer.
    pub fn start(tag: &str, n: u8, ttl: u32) -> io::Result<Self> {
        let ns = NetNs::new(tag)?;
        let mut peer: Vec<String> = vec![format!("10.218.{n}.2/24"), format!("fd18:{n}::2/64")];
        for i in 10..20 {
            peer.push(format!("10.218.{n}.{i}/24"));
            peer.push(format!("fd18:{n}::{i}/64"));
        }
        let peer_refs: Vec<&str> = peer.iter().map(String::as_str).collect();
        let host = [format!("10.218.{n}.1/24"), format!("fd18:{n}::1/64")];
        let host_refs: Vec<&str> = host.iter().map(String::as_str).collect();
        let veth = VethPair::new(&ns, &host_refs, &peer_refs)?;
        ns.exec(&[
            "ip",
            "route",
            "add",
            "local",
            &format!("10.219.{n}.0/24"),
            "dev",
            "lo",
        ])?;
        run(
            "ip",
            &[
                "route",
                "replace",
                &format!("10.219.{n}.0/24"),
                "via",
                &format!("10.218.{n}.2"),
            ],
        )?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("hosts"), "")?;
        std::fs::write(
            dir.path().join("resolv.conf"),
            format!("nameserver 10.218.{n}.2\noptions timeout:2 attempts:2\n"),
        )?;
        // The client wrapper: into the cgroup, then a mount namespace whose
        // /etc/resolv.conf names the lab's resolver, then the program itself.
        let wrapper = dir.path().join("in-lab");
        std::fs::write(
            &wrapper,
            "#!/bin/sh\nprocs=$1; resolv=$2; shift 2\necho $$ > \"$procs\" || exit 125\n\
             exec unshare -m sh -c 'mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"' \"$resolv\" \"$@\"\n",
        )?;
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let dnsmasq = ns
            .command("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--bind-interfaces",
                "--log-facility=-",
                "--pid-file=",
            ])
            .arg(format!("--listen-address=10.218.{n}.2,fd18:{n}::2"))
            .arg(format!(
                "--addn-hosts={}",
                dir.path().join("hosts").display()
            ))
            .arg(format!("--local-ttl={ttl}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let http = ns
            .command("python3")
            .args(["-m", "http.server", "--bind", "::", &HTTP_PORT.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let lab = Self {
            ns,
            _veth: veth,
            dir,
            dnsmasq,
            http,
            subnet: n,
        };
        lab.wait_ready()?;
        Ok(lab)
    }

    fn wait_ready(&self) -> io::Result<()> {
        let n = self.subnet;
        crate::wait_for_server("the lab's dnsmasq or http.server", || {
            answers(&format!("10.218.{n}.2"))
                && std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([10, 218, n, 10], HTTP_PORT)),
                    std::time::Duration::from_millis(200),
                )
                .is_ok()
        })
    }

    /// The resolver's IPv4 address.
    pub fn resolver(&self) -> String {
        format!("10.218.{}.2", self.subnet)
    }

    /// The resolver's IPv6 address.
    pub fn resolver6(&self) -> String {
        format!("fd18:{}::2", self.subnet)
    }

    /// Server address `i` (0..10), IPv4.
    pub fn server(&self, i: u8) -> IpAddr {
        IpAddr::from([10, 218, self.subnet, 10 + i])
    }

    /// Server address `i` (0..10), IPv6.
    pub fn server6(&self, i: u8) -> IpAddr {
        format!("fd18:{}::{}", self.subnet, 10 + i)
            .parse()
            .unwrap_or(IpAddr::from([0u8; 16]))
    }

    /// Address `i` of the namespace's local /24 (`10.219.n.i`).
    pub fn local(&self, i: u8) -> IpAddr {
        IpAddr::from([10, 219, self.subnet, i])
    }

    /// The lab's directory (scratch files of the test may go there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces what the resolver answers: each name with its addresses. Takes effect
    /// at once (dnsmasq rereads the file on SIGHUP; the call waits until it answers
    /// from the new one).
    pub fn set_hosts(&self, entries: &[(&str, &[IpAddr])]) -> io::Result<()> {
        let mut text = String::new();
        for (name, addrs) in entries {
            for a in *addrs {
                text.push_str(&format!("{a} {name}\n"));
            }
        }
        let path = self.dir.path().join("hosts");
        let tmp = self.dir.path().join("hosts.new");
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, &path)?;
        run("kill", &["-HUP", &self.dnsmasq.id().to_string()])?;
        // Answered from the new file: the first entry's first address shows.
        if let Some((name, addrs)) = entries.first() {
            if let Some(first) = addrs.first() {
                let qtype = if first.is_ipv4() { "A" } else { "AAAA" };
                for _ in 0..50 {
                    let out = Command::new("dig")
                        .args([
                            "+short",
                            "+time=1",
                            "+tries=1",
                            &format!("@{}", self.resolver()),
                            name,
                            qtype,
                        ])
                        .output()?;
                    if String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .any(|l| l.trim() == first.to_string())
                    {
                        return Ok(());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                return Err(io::Error::other(format!(
                    "dnsmasq does not answer {name} from the new file"
                )));
            }
        }
        Ok(())
    }

    /// A command that runs `program` in `cgroup`, with the lab's resolver as its
    /// `/etc/resolv.conf`, in the host's network namespace.
    pub fn client(&self, cgroup: &TestCgroup, program: &str) -> Command {
        self.client_with(cgroup, &self.dir.path().join("resolv.conf"), program)
    }

    /// [`client`](Self::client) with another `/etc/resolv.conf` (e.g. naming a local
    /// stub resolver).
    pub fn client_with(&self, cgroup: &TestCgroup, resolv: &Path, program: &str) -> Command {
        let mut cmd = Command::new(self.dir.path().join("in-lab"));
        cmd.arg(cgroup.path().join("cgroup.procs"))
            .arg(resolv)
            .arg(program)
            .stdin(Stdio::null());
        cmd
    }

    /// A local stub resolver on the host at `addr` (a loopback address, as
    /// systemd-resolved's 127.0.0.53) forwarding to the lab's resolver, without a
    /// cache, and a resolv.conf naming it. The caller kills the child.
    pub fn stub(&self, addr: &str) -> io::Result<(Child, PathBuf)> {
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--bind-interfaces",
                "--pid-file=",
                "--cache-size=0",
            ])
            .arg(format!("--listen-address={addr}"))
            .arg(format!("--server={}", self.resolver()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let resolv = self.dir.path().join("resolv-stub.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {addr}\noptions timeout:2 attempts:2\n"),
        )?;
        for _ in 0..100 {
            let ok = answers(addr);
            if ok {
                return Ok((child, resolv));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(io::Error::other("the stub resolver did not start"))
    }

    /// `curl` (the installed binary) fetching `url` through the lab's resolver in
    /// `cgroup`; its exit code (0: fetched; 6: not resolved; 7: could not connect, e.g.
    /// EPERM from the identity firewall).
    pub fn curl(&self, cgroup: &TestCgroup, extra: &[&str], url: &str) -> io::Result<i32> {
        let out = self
            .client(cgroup, "/usr/bin/curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "5"])
            .args(extra)
            .arg(url)
            .output()?;
        Ok(out.status.code().unwrap_or(-1))
    }

    /// The path of a file in the lab's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A process resolving many names, as a crawler or an attacker filling tables
    /// does: `python` (a Python interpreter, or a copy of one: each copy is its own
    /// executable) run as user `uid` in `cgroup` asks the lab's resolver for the A
    /// records of `<label><i>.<domain>`, `i` in `0..count`, eight in flight on one
    /// UDP socket (what the kernel remembers per socket). Returns how many were
    /// answered.
    pub fn resolve_many(
        &self,
        cgroup: &TestCgroup,
        python: &Path,
        uid: u32,
        label: &str,
        domain: &str,
        count: u32,
    ) -> io::Result<u32> {
        let out = self
            .client(cgroup, "/usr/bin/setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .arg(python)
            .args([
                "-c",
                &many_names_script(&self.resolver(), label, domain, count),
            ])
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("{}: {out:?}", python.display())))
    }
}

/// A python script that asks `resolver` for the A records of `<label><i>.<domain>`, `i`
/// in `0..count`, eight queries in flight on one UDP socket (what the kernel remembers
/// per socket), and prints how many were answered.
fn many_names_script(resolver: &str, label: &str, domain: &str, count: u32) -> String {
    format!(
        r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('{resolver}', 53))
s.settimeout(2)
answered = 0
def query(txid, name):
    q = struct.pack('>HHHHHH', txid, 0x0100, 1, 0, 0, 0)
    for part in name.split('.'):
        q += bytes([len(part)]) + part.encode()
    return q + b'\0' + struct.pack('>HH', 1, 1)
for start in range(0, {count}, 8):
    batch = range(start, min(start + 8, {count}))
    for i in batch:
        s.send(query(i & 0xffff, '{label}%d.{domain}' % i))
    for i in batch:
        try:
            s.recv(512)
            answered += 1
        except OSError:
            pass
print(answered)
"#
    )
}

impl Drop for DnsLab {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = self.http.kill();
        let _ = self.http.wait();
        let n = self.subnet;
        let _ = run("ip", &["route", "del", &format!("10.219.{n}.0/24")]);
    }
}
