//! Reading a BPF ring buffer into typed events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironclad_events::{decode, Event, Fanout};
use libbpf_rs::MapHandle;

use crate::error::{BpfError, Result};

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

/// A step applied to every decoded event before it is published (e.g. resolving the
/// executable path of a pid in user space).
pub type Enricher = Box<dyn FnMut(&mut Event) + Send>;

/// Reads one ring buffer, decodes every record with [`ironclad_events::decode`] and
/// publishes the events to a [`Fanout`]. `poll` waits with epoll (no busy loop).
pub struct EventReader {
    ring: libbpf_rs::RingBuffer<'static>,
    stats: Arc<EventStats>,
    map: String,
    _handle: MapHandle,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("map", &self.map)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn ring_error(op: &'static str, map: &str) -> impl FnOnce(libbpf_rs::Error) -> BpfError {
    let map = map.to_string();
    move |source| BpfError::Map { op, map, source }
}

impl EventReader {
    pub(crate) fn new(
        handle: MapHandle,
        name: &str,
        fanout: Arc<Fanout<Event>>,
        mut enrich: Option<Enricher>,
    ) -> Result<Self> {
        let stats = Arc::new(EventStats::default());
        let counters = stats.clone();
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        builder
            .add(&handle, move |record: &[u8]| {
                match decode(record) {
                    Ok(mut event) => {
                        if let Some(enrich) = enrich.as_mut() {
                            enrich(&mut event);
                        }
                        counters.decoded.fetch_add(1, Ordering::Relaxed);
                        fanout.publish(&event);
                    }
                    Err(_) => {
                        counters.undecodable.fetch_add(1, Ordering::Relaxed);
                    }
                }
                0
            })
            .map_err(ring_error("ring buffer", name))?;
        let ring = builder.build().map_err(ring_error("ring buffer", name))?;
        Ok(Self {
            ring,
            stats,
            map: name.to_string(),
            _handle: handle,
        })
    }

    /// Waits up to `timeout` for records and publishes every one available.
    pub fn poll(&self, timeout: Duration) -> Result<()> {
        self.ring
            .poll(timeout)
            .map_err(ring_error("poll", &self.map))
    }

    /// Publishes every record available now, without waiting.
    pub fn drain(&self) -> Result<()> {
        self.ring
            .consume()
            .map_err(ring_error("consume", &self.map))
    }

    /// Decoding counters.
    pub fn stats(&self) -> &EventStats {
        &self.stats
    }
}
