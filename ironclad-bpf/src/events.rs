//! Reading BPF ring buffers into typed events: one epoll-based poller for any number of
//! ring buffers, total decoding, enrichment, fan-out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironclad_events::{decode, Event, Fanout};
use libbpf_rs::MapHandle;

use crate::error::{BpfError, Result};
use crate::process::ProcessMonitor;

/// Counters of an [`EventReader`].
#[derive(Debug, Default)]
pub struct EventStats {
    decoded: AtomicU64,
    undecodable: AtomicU64,
}

impl EventStats {
    /// Records decoded and published.
    pub fn decoded(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
    }

    /// Records that could not be decoded (counted, never misparsed).
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }
}

/// A step applied to every decoded event of one source before it is published (e.g.
/// resolving the executable path of a pid in user space).
pub type Enricher = Box<dyn FnMut(&mut Event) + Send>;

/// One ring buffer to read: from [`Shield::event_source`](crate::Shield::event_source),
/// [`TlsMonitor::event_source`](crate::TlsMonitor::event_source) or
/// [`EgressFirewall::event_source`](crate::EgressFirewall::event_source).
pub struct EventSource {
    pub(crate) handle: MapHandle,
    pub(crate) name: String,
    pub(crate) enrich: Option<Enricher>,
}

impl std::fmt::Debug for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl EventSource {
    pub(crate) fn new(handle: MapHandle, name: &str, enrich: Option<Enricher>) -> Self {
        Self {
            handle,
            name: name.to_string(),
            enrich,
        }
    }
}

/// The offset from the kernel's `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock
/// nanoseconds since the Unix epoch, measured now.
pub fn monotonic_to_wall_offset() -> i128 {
    let mono = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let real = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let ns =
        |t: rustix::time::Timespec| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
    ns(real) - ns(mono)
}

/// Reads one or more ring buffers with a single epoll-based poller, decodes every
/// record with [`ironclad_events::decode()`], stamps it with wall-clock time, enriches it
/// and publishes it to a [`Fanout`]. `poll` sleeps in `epoll_wait` (no busy loop).
pub struct EventReader {
    ring: libbpf_rs::RingBuffer<'static>,
    stats: Arc<EventStats>,
    names: Vec<String>,
    _handles: Vec<MapHandle>,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("sources", &self.names)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn ring_error(op: &'static str, map: &str) -> impl FnOnce(libbpf_rs::Error) -> BpfError {
    let map = map.to_string();
    move |source| BpfError::Map { op, map, source }
}

impl EventReader {
    /// A reader of every source in `sources`, publishing to `fanout`.
    pub fn new(sources: Vec<EventSource>, fanout: Arc<Fanout<Event>>) -> Result<Self> {
        Self::build(sources, fanout, None)
    }

    /// A reader of every source in `sources` whose events are also given their
    /// `process` block by `processes` (after each source's own enrichment).
    pub fn with_processes(
        sources: Vec<EventSource>,
        fanout: Arc<Fanout<Event>>,
        processes: Arc<ProcessMonitor>,
    ) -> Result<Self> {
        Self::build(sources, fanout, Some(processes))
    }

    fn build(
        sources: Vec<EventSource>,
        fanout: Arc<Fanout<Event>>,
        processes: Option<Arc<ProcessMonitor>>,
    ) -> Result<Self> {
        let stats = Arc::new(EventStats::default());
        let offset = monotonic_to_wall_offset();
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        let mut handles = Vec::new();
        let mut names = Vec::new();
        let mut callbacks = Vec::new();
        for source in sources {
            let counters = stats.clone();
            let fanout = fanout.clone();
            let mut enrich = source.enrich;
            let processes = processes.clone();
            callbacks.push(move |record: &[u8]| {
                match decode(record) {
                    Ok(mut event) => {
                        event.set_wall_time(offset);
                        if let Some(enrich) = enrich.as_mut() {
                            enrich(&mut event);
                        }
                        if let Some(processes) = &processes {
                            processes.enrich(&mut event);
                        }
                        counters.decoded.fetch_add(1, Ordering::Relaxed);
                        fanout.publish(&event);
                    }
                    Err(_) => {
                        counters.undecodable.fetch_add(1, Ordering::Relaxed);
                    }
                }
                0
            });
            names.push(source.name);
            handles.push(source.handle);
        }
        for ((handle, name), callback) in handles.iter().zip(&names).zip(callbacks) {
            builder
                .add(handle, callback)
                .map_err(ring_error("ring buffer", name))?;
        }
        let ring = builder
            .build()
            .map_err(ring_error("ring buffer", &names.join(",")))?;
        Ok(Self {
            ring,
            stats,
            names,
            _handles: handles,
        })
    }

    /// Waits up to `timeout` for records on any source and publishes every one
    /// available.
    ///
    /// Some sources wake their reader only when much is waiting (TLS capture: a
    /// wakeup per record would cost the traced program more than the capture), so
    /// every record written before the wait ended is published too, woken or not: a
    /// record waits at most `timeout`.
    ///
    /// A signal arriving while it waits (`EINTR`: SIGHUP for a reload) ends the wait
    /// early and is not an error.
    pub fn poll(&self, timeout: Duration) -> Result<()> {
        match self.ring.poll(timeout) {
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            other => other.map_err(ring_error("poll", &self.names.join(",")))?,
        }
        self.drain()
    }

    /// Publishes every record available now, without waiting.
    pub fn drain(&self) -> Result<()> {
        match self.ring.consume() {
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => Ok(()),
            other => other.map_err(ring_error("consume", &self.names.join(","))),
        }
    }

    /// Decoding counters.
    pub fn stats(&self) -> &EventStats {
        &self.stats
    }
}
