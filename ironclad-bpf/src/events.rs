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
#[non_exhaustive]
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

/// Turns one raw record of a source into any number of events (each given to the
/// callback), for sources whose records are not events themselves (the IDS's payload
/// snippets become alerts). Returns whether the record was understood.
pub type RecordHandler = Box<dyn FnMut(&[u8], &mut dyn FnMut(Event)) -> bool + Send>;

/// One ring buffer to read: from [`Shield::event_source`](crate::Shield::event_source),
/// [`TlsMonitor::event_source`](crate::TlsMonitor::event_source) or
/// [`EgressFirewall::event_source`](crate::EgressFirewall::event_source).
pub struct EventSource {
    pub(crate) handle: MapHandle,
    pub(crate) name: String,
    pub(crate) enrich: Option<Enricher>,
    pub(crate) handler: Option<RecordHandler>,
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
            handler: None,
        }
    }

    /// A source whose records `handler` turns into events (instead of
    /// [`ironclad_events::decode()`]).
    pub(crate) fn with_handler(handle: MapHandle, name: &str, handler: RecordHandler) -> Self {
        Self {
            handle,
            name: name.to_string(),
            enrich: None,
            handler: Some(handler),
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
    move |source| BpfError::Map {
        op,
        map,
        source: crate::error::KernelError::from_libbpf(source),
    }
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
            let mut handler = source.handler;
            let processes = processes.clone();
            callbacks.push(move |record: &[u8]| {
                if let Some(handler) = handler.as_mut() {
                    let mut publish = |mut event: Event| {
                        event.set_wall_time(offset);
                        if let Some(processes) = &processes {
                            processes.enrich(&mut event);
                        }
                        fanout.publish(&event);
                    };
                    let counter = if handler(record, &mut publish) {
                        &counters.decoded
                    } else {
                        &counters.undecodable
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    return 0;
                }
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

    /// The ring buffers this reader reads, comma-separated (for messages).
    pub fn sources(&self) -> String {
        self.names.join(",")
    }
}

/// The reader's epoll descriptor: readable when a source has records and woke its
/// reader. An agent with its own event loop (mio, tokio, a `poll(2)` loop) waits on it
/// and then calls [`EventReader::drain`]. Some sources wake only when much is waiting
/// (TLS capture), so such a loop also drains on a timer; [`EventStream`] does both.
impl std::os::fd::AsFd for EventReader {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: libbpf owns this epoll descriptor for as long as the ring buffer
        // manager lives, and the manager lives as long as `self`, which the returned
        // borrow cannot outlive.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.ring.epoll_fd()) }
    }
}

impl std::os::fd::AsRawFd for EventReader {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.epoll_fd()
    }
}

#[cfg(feature = "tokio")]
pub use stream::EventStream;

#[cfg(feature = "tokio")]
mod stream {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use ironclad_events::{Event, Subscription};
    use tokio::io::unix::AsyncFd;
    use tokio::time::{Interval, MissedTickBehavior};

    use super::EventReader;
    use crate::error::{BpfError, Result};

    /// The events of an [`EventReader`] as a [`futures_core::Stream`], for agents on
    /// tokio (feature `tokio`): no thread of its own. It waits on the reader's epoll
    /// descriptor in the runtime's reactor and also drains every `drain_every`, as some
    /// sources wake their reader only when much is waiting (TLS capture), so a record
    /// waits at most that long.
    ///
    /// It yields what `events`, a subscription of the reader's
    /// [`Fanout`](ironclad_events::Fanout), receives: other subscribers of the same fanout get
    /// their copies as before.
    ///
    /// ```no_run
    /// # async fn agent(tls: ironclad_bpf::TlsMonitor) -> ironclad_bpf::Result<()> {
    /// use std::{sync::Arc, time::Duration};
    /// use ironclad_bpf::{EventReader, EventStream};
    /// use ironclad_events::{Fanout, Overflow};
    /// use futures_util::StreamExt;
    ///
    /// let fanout = Arc::new(Fanout::new());
    /// let events = fanout.subscribe("agent", 4096, Overflow::DropOldest);
    /// let reader = EventReader::new(vec![tls.event_source()?], fanout)?;
    /// let mut stream = EventStream::new(reader, events, Duration::from_millis(100))?;
    /// while let Some(event) = stream.next().await {
    ///     println!("{}", event?.to_json());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct EventStream {
        reader: AsyncFd<EventReader>,
        events: Subscription<Event>,
        tick: Interval,
    }

    impl EventStream {
        /// A stream of what `events` receives from `reader`, drained at least every
        /// `drain_every`. Must be called inside a tokio runtime with I/O and time
        /// enabled (outside any runtime it is an [`BpfError::EventWait`]).
        pub fn new(
            reader: EventReader,
            events: Subscription<Event>,
            drain_every: Duration,
        ) -> Result<Self> {
            let sources = reader.sources();
            // AsyncFd panics outside a runtime: say so as an error instead.
            if let Err(e) = tokio::runtime::Handle::try_current() {
                return Err(BpfError::EventWait {
                    sources,
                    source: std::io::Error::other(e),
                });
            }
            // SAFETY: the descriptor is the epoll fd of the reader's libbpf ring buffer
            // manager, which the reader owns: it stays open and the same until the reader
            // is dropped or handed back by `into_inner`, and `as_raw_fd` always returns it.
            let reader =
                unsafe { AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE) }
                    .map_err(|e| BpfError::EventWait {
                    sources,
                    source: e.into(),
                })?;
            let mut tick = tokio::time::interval(drain_every.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Ok(Self {
                reader,
                events,
                tick,
            })
        }

        /// The reader (its counters, its sources).
        pub fn reader(&self) -> &EventReader {
            self.reader.get_ref()
        }

        /// The reader back, and the subscription.
        pub fn into_inner(self) -> (EventReader, Subscription<Event>) {
            (self.reader.into_inner(), self.events)
        }
    }

    impl futures_core::Stream for EventStream {
        type Item = Result<Event>;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let this = self.get_mut();
            loop {
                if let Ok(event) = this.events.receiver().try_recv() {
                    return Poll::Ready(Some(Ok(event)));
                }
                // Wait for a wakeup from a ring or for the drain timer; both register
                // this task's waker, so neither is missed.
                let mut due = false;
                match this.reader.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        guard.clear_ready();
                        due = true;
                    }
                    Poll::Ready(Err(source)) => {
                        let sources = this.reader.get_ref().sources();
                        return Poll::Ready(Some(Err(BpfError::EventWait { sources, source })));
                    }
                    Poll::Pending => {}
                }
                if this.tick.poll_tick(cx).is_ready() {
                    due = true;
                }
                if !due {
                    return Poll::Pending;
                }
                if let Err(e) = this.reader.get_ref().drain() {
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}
