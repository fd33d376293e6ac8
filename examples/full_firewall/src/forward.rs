//! `--forward-tcp HOST:PORT`: every event pushed to a collector as JSON lines over TCP
//! (Vector's, Fluent Bit's or Logstash's `tcp` input, `socat`, `nc -lk`).
//!
//! Enforcement never waits for the collector: the forwarder is one more subscriber of
//! the event fan-out, with its own queue ([`QUEUE`] events). While the collector is
//! away or slower than the events, the queue fills and new events are lost for it
//! (counted: `status`'s losses and `ironclad_records_lost_total{sink="forward-tcp"}`),
//! as a TCP write that blocks longer than [`WRITE_TIMEOUT`] drops the connection and the
//! lines it held. The forwarder reconnects by itself, waiting longer after each failure
//! (up to [`MAX_BACKOFF`]).

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironclad_events::{Event, Fanout, Overflow, Subscription};
use tracing::{info, warn};

/// Events queued for the collector at most.
pub(crate) const QUEUE: usize = 16384;
/// A write that blocks longer than this drops the connection.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two connection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The running forwarder.
pub(crate) struct Forwarder {
    addr: String,
    sent: Arc<AtomicU64>,
    lost_writing: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    dropped: Arc<dyn Fn() -> u64 + Send + Sync>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    /// Subscribes to `fanout` and forwards to `addr` from a thread of its own.
    pub(crate) fn start(addr: &str, fanout: &Fanout<Event>) -> anyhow::Result<Self> {
        // Checked at start: an address that does not resolve is a mistake to report.
        addr.to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("--forward-tcp {addr}: {e}"))?;
        let sub = Arc::new(fanout.subscribe("forward-tcp", QUEUE, Overflow::DropNewest));
        let sent = Arc::new(AtomicU64::new(0));
        let lost_writing = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = sub.clone();
        let thread = {
            let (addr, sent, lost, stop) = (
                addr.to_string(),
                sent.clone(),
                lost_writing.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name("ironclad-forward".to_string())
                .spawn(move || run(&addr, &sub, &sent, &lost, &stop))?
        };
        info!("forwarding events to {addr} (JSON lines over TCP)");
        Ok(Self {
            addr: addr.to_string(),
            sent,
            lost_writing,
            stop,
            dropped: Arc::new(move || counters.stats().dropped),
            thread: Some(thread),
        })
    }

    /// Events lost for the collector so far: its queue was full, or they were in a
    /// connection that failed.
    pub(crate) fn lost(&self) -> u64 {
        (self.dropped)() + self.lost_writing.load(Ordering::Relaxed)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        info!(
            "forwarded {} events to {} ({} lost)",
            self.sent.load(Ordering::Relaxed),
            self.addr,
            self.lost()
        );
    }
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("no address");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn run(
    addr: &str,
    sub: &Subscription<Event>,
    sent: &AtomicU64,
    lost: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut backoff = Duration::from_millis(250);
    let mut failing = false;
    // A line taken from the queue that no connection took yet.
    let mut carry: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let stream = match connect(addr) {
            Ok(stream) => stream,
            Err(e) => {
                if !failing {
                    warn!("forwarding to {addr}: {e}; retrying (events are queued, then lost and counted)");
                    failing = true;
                }
                sleep_unless_stopped(backoff, stop);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        info!("forwarding events to {addr}: connected");
        failing = false;
        backoff = Duration::from_millis(250);
        let mut out = std::io::BufWriter::with_capacity(64 << 10, stream);
        let mut pending = 0u64;
        if let Some(line) = carry.take() {
            match out.write_all(line.as_bytes()) {
                Ok(()) => pending += 1,
                Err(_) => {
                    carry = Some(line);
                    continue;
                }
            }
        }
        let failed = loop {
            if stop.load(Ordering::Relaxed) {
                break out.flush().err();
            }
            match sub.receiver().recv_timeout(Duration::from_millis(100)) {
                Ok(event) => {
                    let mut line = event.to_json();
                    line.push('\n');
                    // Before a new batch: a collector that closed its end (its FIN
                    // arrived) would take the next write without complaint and lose
                    // it; the line waits for the next connection instead.
                    if pending == 0 && out.buffer().is_empty() && peer_closed(out.get_ref()) {
                        carry = Some(line);
                        break Some(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the collector closed the connection",
                        ));
                    }
                    if let Err(e) = out.write_all(line.as_bytes()) {
                        break Some(e);
                    }
                    pending += 1;
                    // More waiting: keep filling the buffer; otherwise send now.
                    if sub.receiver().is_empty() {
                        if let Err(e) = out.flush() {
                            break Some(e);
                        }
                        sent.fetch_add(pending, Ordering::Relaxed);
                        pending = 0;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if let Err(e) = out.flush() {
                        break Some(e);
                    }
                    sent.fetch_add(pending, Ordering::Relaxed);
                    pending = 0;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    break out.flush().err();
                }
            }
        };
        match failed {
            Some(e) => {
                // What the buffer held may or may not have reached the collector:
                // counted as lost.
                lost.fetch_add(pending, Ordering::Relaxed);
                warn!("forwarding to {addr}: {e}; reconnecting ({pending} events lost)");
                sleep_unless_stopped(backoff, stop);
            }
            None => {
                sent.fetch_add(pending, Ordering::Relaxed);
            }
        }
    }
}

/// Whether the collector closed its end: a read would return end-of-file now.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let closed = matches!(stream.peek(&mut byte), Ok(0));
    let _ = stream.set_nonblocking(false);
    closed
}

fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let until = std::time::Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}
