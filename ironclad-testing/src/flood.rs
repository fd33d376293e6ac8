//! A SYN flood from spoofed sources, sent from inside a network namespace as fast as
//! one thread can: raw IPv4/IPv6 sockets with the header included (`IPPROTO_RAW`),
//! batches of 64 segments per `sendmmsg`, every segment from a new random source address
//! of a given prefix and a random port, with the options a Linux client sends (MSS,
//! SACK permitted, timestamps, window scale) and a valid TCP checksum.
//!
//! The sending thread enters the namespace with `setns` before it opens its socket, so
//! the test process itself stays where it is.

use std::fs::File;
use std::io;
use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::net::{
    sendmmsg, socket, AddressFamily, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketType,
};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::rules::Rng;
use crate::NetNs;

/// Segments per `sendmmsg` call.
const BATCH: usize = 64;

/// Moves the calling thread into the `ip netns` namespace named `ns`
/// (`/run/netns/<ns>`); sockets it opens afterwards live there.
pub fn enter(ns: &str) -> io::Result<()> {
    let file = File::open(format!("/run/netns/{ns}"))?;
    move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(io::Error::from)
}

/// A flood running on its own thread until [`stop`](Flood::stop).
#[derive(Debug)]
pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<(u64, Duration)>>>,
}

/// What a flood sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodReport {
    /// Segments the kernel accepted from the sender.
    pub sent: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl FloodReport {
    /// Segments a second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Flood {
    /// Starts flooding `dst:dport` with SYNs from random addresses of `sources` (an
    /// address whose low `host_bits` bits are replaced at random) from inside `ns`.
    pub fn start(
        ns: &NetNs,
        sources: IpAddr,
        host_bits: u32,
        dst: IpAddr,
        dport: u16,
        seed: u64,
    ) -> io::Result<Self> {
        let path = format!("/run/netns/{}", ns.name());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let thread = std::thread::spawn(move || {
            let entered = File::open(&path).and_then(|f| {
                move_into_link_name_space(f.as_fd(), Some(LinkNameSpaceType::Network))
                    .map_err(io::Error::from)
            });
            let opened = entered.and_then(|()| {
                let family = if dst.is_ipv4() {
                    AddressFamily::INET
                } else {
                    AddressFamily::INET6
                };
                socket(family, SocketType::RAW, Some(rustix::net::ipproto::RAW))
                    .map_err(io::Error::from)
            });
            let sock = match opened {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            let mut rng = Rng::new(seed);
            let mut bufs = vec![[0u8; 80]; BATCH];
            let mut lens = [0usize; BATCH];
            let target = rustix::net::SocketAddrAny::from(SocketAddr::new(dst, 0));
            let start = Instant::now();
            let mut sent = 0u64;
            while !flag.load(Ordering::Relaxed) {
                for (buf, len) in bufs.iter_mut().zip(lens.iter_mut()) {
                    let src = random_source(&mut rng, sources, host_bits);
                    *len = syn_segment(buf, src, dst, dport, &mut rng);
                }
                let iovs: Vec<[IoSlice<'_>; 1]> = bufs
                    .iter()
                    .zip(lens.iter())
                    .map(|(b, l)| [IoSlice::new(&b[..*l])])
                    .collect();
                let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
                    (0..BATCH).map(|_| SendAncillaryBuffer::default()).collect();
                let mut msgs: Vec<MMsgHdr<'_>> = iovs
                    .iter()
                    .zip(controls.iter_mut())
                    .map(|(iov, control)| MMsgHdr::new_with_addr(&target, iov, control))
                    .collect();
                match sendmmsg(&sock, &mut msgs, SendFlags::empty()) {
                    Ok(n) => sent += n as u64,
                    // A full queue: the receiver is behind; try again.
                    Err(rustix::io::Errno::NOBUFS | rustix::io::Errno::AGAIN) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((sent, start.elapsed()))
        });
        ready_rx
            .recv()
            .map_err(|e| io::Error::other(format!("flood thread: {e}")))??;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the flood and reports what it sent.
    pub fn stop(mut self) -> io::Result<FloodReport> {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, elapsed) = self
            .thread
            .take()
            .ok_or_else(|| io::Error::other("flood already stopped"))?
            .join()
            .map_err(|_| io::Error::other("flood thread panicked"))??;
        Ok(FloodReport { sent, elapsed })
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn random_source(rng: &mut Rng, base: IpAddr, host_bits: u32) -> IpAddr {
    match base {
        IpAddr::V4(a) => {
            let mask = if host_bits >= 32 {
                u32::MAX
            } else {
                (1u32 << host_bits) - 1
            };
            let host = (rng.next_u64() as u32 & mask).max(1);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & !mask | host))
        }
        IpAddr::V6(a) => {
            let mask = if host_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let host = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) & mask;
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & !mask | host.max(1)))
        }
    }
}

/// Writes an IP header and a TCP SYN (20 bytes of options, as Linux sends them) from
/// `src` to `dst:dport` into `buf`; returns the length.
pub fn syn_segment(
    buf: &mut [u8; 80],
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    rng: &mut Rng,
) -> usize {
    let r = rng.next_u64();
    let sport = 1024 + (r as u16 % 60000);
    let seq = (r >> 16) as u32;
    let tsval = (r >> 40) as u32;
    let mut tcp = [0u8; 40];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 10 << 4; // 40-byte header
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    // MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    tcp[24..26].copy_from_slice(&[4, 2]);
    tcp[26..28].copy_from_slice(&[8, 10]);
    tcp[28..32].copy_from_slice(&tsval.to_be_bytes());
    tcp[36..40].copy_from_slice(&[1, 3, 3, 7]);
    let (ip_len, pseudo_sum) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = &mut buf[..20];
            ip.fill(0);
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&60u16.to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let check = fold(sum(&buf[..20], 0));
            buf[10..12].copy_from_slice(&check.to_be_bytes());
            (20, sum(&s.octets(), sum(&d.octets(), 6 + 40)))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = &mut buf[..40];
            ip.fill(0);
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&40u16.to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            (40, sum(&s.octets(), sum(&d.octets(), 6 + 40)))
        }
        // Mixed families: nothing sensible to send; an empty segment is refused by the
        // kernel and counted as not sent.
        _ => return 0,
    };
    let check = fold(sum(&tcp, pseudo_sum));
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
    buf[ip_len..ip_len + 40].copy_from_slice(&tcp);
    ip_len + 40
}

/// Adds `bytes` (big-endian 16-bit words) to a ones' complement sum.
fn sum(bytes: &[u8], mut acc: u32) -> u32 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        acc = acc.wrapping_add(u32::from(word));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_sums_to_zero_with_its_pseudo_header() {
        let mut rng = Rng::new(7);
        let mut buf = [0u8; 80];
        let src = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let dst = IpAddr::V4(Ipv4Addr::new(10, 4, 5, 6));
        let len = syn_segment(&mut buf, src, dst, 80, &mut rng);
        assert_eq!(len, 60);
        assert_eq!(fold(sum(&buf[..20], 0)), 0, "IPv4 header checksum");
        let pseudo = sum(&buf[12..20], 6 + 40);
        assert_eq!(fold(sum(&buf[20..60], pseudo)), 0, "TCP checksum");
        let v6s = IpAddr::V6("fd00::1".parse().unwrap_or(Ipv6Addr::LOCALHOST));
        let v6d = IpAddr::V6("fd00::2".parse().unwrap_or(Ipv6Addr::LOCALHOST));
        let len = syn_segment(&mut buf, v6s, v6d, 443, &mut rng);
        assert_eq!(len, 80);
        let pseudo = sum(&buf[8..40], 6 + 40);
        assert_eq!(fold(sum(&buf[40..80], pseudo)), 0, "TCPv6 checksum");
        assert_eq!(u16::from_be_bytes([buf[42], buf[43]]), 443);
    }

    #[test]
    fn sources_stay_inside_their_prefix_and_vary() {
        let mut rng = Rng::new(1);
        let base = IpAddr::V4(Ipv4Addr::new(10, 215, 0, 0));
        let a: Vec<IpAddr> = (0..100)
            .map(|_| random_source(&mut rng, base, 16))
            .collect();
        for s in &a {
            let IpAddr::V4(v4) = s else { panic!("family") };
            assert_eq!(&v4.octets()[..2], &[10, 215]);
        }
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert!(distinct.len() > 90, "{} distinct of 100", distinct.len());
    }
}
