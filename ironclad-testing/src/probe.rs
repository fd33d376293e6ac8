//! Probes for address translation and forwarding tests: python servers that tell each
//! client the address they see it from, clients that check payloads byte for byte, a
//! namespace's checksum-error counters, checksum offload turned off.

use std::io::{self, BufRead};
use std::process::{Child, Stdio};

use crate::NetNs;

/// A python server in a namespace, killed on drop.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP echo server and a UDP one on `port` of every address of `ns`, both families:
/// each connection's first line back is the peer's address as the server sees it,
/// then the bytes it was sent; each datagram's answer is the peer's address, a space
/// and the datagram.
pub fn servers(ns: &NetNs, port: u16) -> io::Result<Server> {
    let script = format!(
        r#"
import socket, threading, sys
def tcp(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, {port}))
    s.listen(16)
    while True:
        c, peer = s.accept()
        def serve(c, peer):
            c.sendall((peer[0] + '\n').encode())
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.close()
        threading.Thread(target=serve, args=(c, peer), daemon=True).start()
def udp(family, addr):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, {port}))
    while True:
        d, peer = s.recvfrom(65536)
        s.sendto(peer[0].encode() + b' ' + d, peer)
for f, a in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):
    threading.Thread(target=tcp, args=(f, a), daemon=True).start()
    threading.Thread(target=udp, args=(f, a), daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
"#
    );
    let mut child = ns
        .command("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let server = Server(child);
    let mut line = String::new();
    io::BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(io::Error::other(format!(
            "servers in {}: {line:?}",
            ns.name()
        )));
    }
    Ok(server)
}

/// From `ns`: a TCP connection to `addr:port` sending `bytes` random bytes; prints the
/// address the server saw and whether the echo matched.
pub fn tcp_client(ns: &NetNs, addr: &str, port: u16, bytes: usize) -> io::Result<String> {
    let script = format!(
        r#"
import os, socket
data = os.urandom({bytes})
s = socket.create_connection(('{addr}', {port}), timeout=5)
f = s.makefile('rb')
peer = f.readline().decode().strip()
s.sendall(data)
got = b''
while len(got) < len(data):
    chunk = f.read1(65536)
    if not chunk:
        break
    got += chunk
s.close()
print(peer, 'intact' if got == data else 'damaged %d of %d' % (len(got), len(data)))
"#
    );
    run_python(ns, &script)
}

/// From `ns`: a UDP datagram of `bytes` random bytes to `addr:port` on a connected
/// socket (an answer from any other address or port is not received); prints the
/// address the server saw and whether the answer carried the datagram back.
pub fn udp_client(ns: &NetNs, addr: &str, port: u16, bytes: usize) -> io::Result<String> {
    let family = if addr.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let script = format!(
        r#"
import os, socket
data = os.urandom({bytes})
s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(('{addr}', {port}))
s.send(data)
answer = s.recv(65536)
peer, _, back = answer.partition(b' ')
print(peer.decode(), 'intact' if back == data else 'damaged')
"#
    );
    run_python(ns, &script)
}

fn run_python(ns: &NetNs, script: &str) -> io::Result<String> {
    let out = ns.command("python3").args(["-c", script]).output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// The TCP and UDP checksum errors a namespace's kernel counted (`/proc/net/snmp`,
/// `InCsumErrors`; IPv6's from `/proc/net/snmp6`).
pub fn checksum_errors(ns: &NetNs) -> io::Result<u64> {
    let snmp = String::from_utf8_lossy(&ns.exec(&["cat", "/proc/net/snmp"])?.stdout).into_owned();
    let mut total = 0;
    let lines: Vec<&str> = snmp.lines().collect();
    for pair in lines.chunks(2) {
        if let [names, values] = pair {
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if n == "InCsumErrors" {
                    total += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    let snmp6 = String::from_utf8_lossy(&ns.exec(&["cat", "/proc/net/snmp6"])?.stdout).into_owned();
    for line in snmp6.lines() {
        let mut f = line.split_whitespace();
        if let (Some(name), Some(v)) = (f.next(), f.next()) {
            if name.ends_with("InCsumErrors") {
                total += v.parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// Turns checksum offload off (tx and rx) on `dev`, in `ns` or in the caller's
/// namespace: every checksum is then computed and checked in software.
pub fn offload_off(ns: Option<&NetNs>, dev: &str) -> io::Result<()> {
    let args = ["ethtool", "-K", dev, "tx", "off", "rx", "off"];
    match ns {
        Some(ns) => ns.exec(&args).map(|_| ()),
        None => crate::run(args[0], &args[1..]).map(|_| ()),
    }
}
