//! The control API's event streams: one subscriber of the daemon's fan-out for all of
//! them (the hub), so that the event reader pays one copy and one JSON encoding per
//! event however many clients stream, and each stream's bounded share of what its
//! client has not read yet.
//!
//! The hub takes each event once, encodes it once, and offers the shared text to every
//! stream whose filter wants it. A stream holds at most its `queue` events and
//! [`STREAM_BYTES`] of them for its client; past either, new events are lost for that
//! stream alone (counted, and reported in the stream). At most [`MAX_STREAMS`] streams
//! are open at once. The hub runs while a stream is open and unsubscribes with the last.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use ironclad_api::v1::{
    stream_events_response, Event as ApiEvent, Lost, StreamEventsRequest, StreamEventsResponse,
};
use ironclad_events::{Event, Fanout, Overflow};
use tonic::Status;

/// The bytes of events (their JSON) a stream holds for its client at most, whatever its
/// `queue`.
pub(crate) const STREAM_BYTES: usize = 1 << 20;
/// Event streams open at once at most, all clients together.
pub(crate) const MAX_STREAMS: usize = 16;
/// Events the hub's own queue holds while it encodes: a burst beyond it is lost for
/// every stream (and counted in each).
const HUB_QUEUE: usize = 8192;

/// One event as the streams send it, encoded once and shared.
struct Encoded {
    kind: String,
    json: String,
}

impl Encoded {
    fn size(&self) -> usize {
        self.kind.len() + self.json.len()
    }
}

/// What the hub knows of one stream.
struct Slot {
    filter: StreamEventsRequest,
    wanted: fn(&StreamEventsRequest, &Event, &serde_json::Value) -> bool,
    sender: Sender<Arc<Encoded>>,
    limit: usize,
    bytes: Arc<AtomicUsize>,
    lost: Arc<AtomicU64>,
    gone: Arc<AtomicBool>,
}

/// The streams and the hub that feeds them.
pub(crate) struct Streams {
    fanout: Arc<Fanout<Event>>,
    slots: Mutex<Vec<Slot>>,
    /// Whether the hub's thread runs (changed with `slots` locked).
    hub_running: AtomicBool,
    /// Events the hub's queue lost, since the daemon started.
    hub_lost: AtomicU64,
    next: AtomicU64,
}

/// One stream's end: what the hub queued for it, and its counters.
pub(crate) struct StreamFeed {
    receiver: Receiver<Arc<Encoded>>,
    bytes: Arc<AtomicUsize>,
    lost: Arc<AtomicU64>,
    gone: Arc<AtomicBool>,
    hub_lost_at_start: u64,
    streams: Arc<Streams>,
}

impl Drop for StreamFeed {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Release);
        let mut slots = self
            .streams
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slots.retain(|s| !s.gone.load(Ordering::Acquire));
    }
}

impl Streams {
    pub(crate) fn new(fanout: Arc<Fanout<Event>>) -> Arc<Self> {
        Arc::new(Self {
            fanout,
            slots: Mutex::new(Vec::new()),
            hub_running: AtomicBool::new(false),
            hub_lost: AtomicU64::new(0),
            next: AtomicU64::new(0),
        })
    }

    /// Opens a stream for `filter` holding at most `limit` events: `RESOURCE_EXHAUSTED`
    /// when [`MAX_STREAMS`] are open. The stream's thread sends to `tx` until its client
    /// goes away.
    pub(crate) fn open(
        self: &Arc<Self>,
        filter: StreamEventsRequest,
        limit: usize,
        wanted: fn(&StreamEventsRequest, &Event, &serde_json::Value) -> bool,
        tx: tokio::sync::mpsc::Sender<Result<StreamEventsResponse, Status>>,
    ) -> Result<(), Status> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let (bytes, lost, gone) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots.retain(|s| !s.gone.load(Ordering::Acquire));
            if slots.len() >= MAX_STREAMS {
                return Err(Status::resource_exhausted(format!(
                    "{MAX_STREAMS} event streams are open: close one first"
                )));
            }
            slots.push(Slot {
                filter,
                wanted,
                sender,
                limit: limit.max(1),
                bytes: bytes.clone(),
                lost: lost.clone(),
                gone: gone.clone(),
            });
            if !self.hub_running.swap(true, Ordering::AcqRel) {
                // Subscribed here, under the lock: no event published after this
                // stream opened is missed.
                let sub = self
                    .fanout
                    .subscribe("api-streams", HUB_QUEUE, Overflow::DropNewest);
                let streams = self.clone();
                std::thread::Builder::new()
                    .name("ironclad-api-streams".to_string())
                    .spawn(move || streams.hub(&sub))
                    .map_err(|e| {
                        self.hub_running.store(false, Ordering::Release);
                        Status::internal(format!("starting the event streams: {e}"))
                    })?;
            }
        }
        let feed = StreamFeed {
            receiver,
            bytes,
            lost,
            gone,
            hub_lost_at_start: self.hub_lost.load(Ordering::Acquire),
            streams: self.clone(),
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        std::thread::Builder::new()
            .name(format!("ironclad-api-stream-{n}"))
            .spawn(move || feed.run(&tx))
            .map(|_| ())
            .map_err(|e| Status::internal(format!("starting the stream: {e}")))
    }

    /// The hub: takes each event once, encodes it once, offers it to every stream
    /// that wants it, within that stream's bounds. Ends with the last stream.
    fn hub(&self, sub: &ironclad_events::Subscription<Event>) {
        let mut counted = 0u64;
        loop {
            let dropped = sub.stats().dropped;
            if dropped > counted {
                self.hub_lost.fetch_add(dropped - counted, Ordering::AcqRel);
                counted = dropped;
            }
            let event = match sub.receiver().recv_timeout(Duration::from_millis(200)) {
                Ok(event) => Some(event),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            };
            // Encoded before the streams are locked: opening one never waits on it.
            let encoded = event.map(|event| {
                let json = event.to_json();
                let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
                let encoded = Arc::new(Encoded {
                    kind: value["kind"].as_str().unwrap_or_default().to_string(),
                    json,
                });
                (event, value, encoded)
            });
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots.retain(|s| !s.gone.load(Ordering::Acquire));
            if slots.is_empty() {
                self.hub_running.store(false, Ordering::Release);
                return;
            }
            let Some((event, value, encoded)) = encoded else {
                continue;
            };
            let size = encoded.size();
            for slot in slots.iter() {
                if !(slot.wanted)(&slot.filter, &event, &value) {
                    continue;
                }
                let full = slot.sender.len() >= slot.limit
                    || slot.bytes.load(Ordering::Acquire) + size > STREAM_BYTES;
                if full {
                    slot.lost.fetch_add(1, Ordering::AcqRel);
                    continue;
                }
                slot.bytes.fetch_add(size, Ordering::AcqRel);
                if slot.sender.send(encoded.clone()).is_err() {
                    slot.bytes.fetch_sub(size, Ordering::AcqRel);
                }
            }
        }
    }
}

impl StreamFeed {
    /// Sends what the hub queued to the client, and the losses when it has caught up;
    /// ends when the client goes away.
    fn run(self, tx: &tokio::sync::mpsc::Sender<Result<StreamEventsResponse, Status>>) {
        let mut reported = 0u64;
        loop {
            let lost = self.lost.load(Ordering::Acquire)
                + self
                    .streams
                    .hub_lost
                    .load(Ordering::Acquire)
                    .saturating_sub(self.hub_lost_at_start);
            if lost > reported && self.receiver.is_empty() {
                reported = lost;
                let item = StreamEventsResponse {
                    item: Some(stream_events_response::Item::Lost(Lost { total: lost })),
                };
                if tx.blocking_send(Ok(item)).is_err() {
                    return;
                }
            }
            match self.receiver.recv_timeout(Duration::from_millis(200)) {
                Ok(encoded) => {
                    let item = StreamEventsResponse {
                        item: Some(stream_events_response::Item::Event(ApiEvent {
                            kind: encoded.kind.clone(),
                            json: encoded.json.clone(),
                        })),
                    };
                    // Counted out of the stream's share once it leaves its queue (the
                    // client's channel holds a few more, then HTTP/2's buffers).
                    self.bytes.fetch_sub(encoded.size(), Ordering::AcqRel);
                    drop(encoded);
                    if tx.blocking_send(Ok(item)).is_err() {
                        return;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if tx.is_closed() {
                        return;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}
