//! Fan-out of events to any number of subscribers over bounded channels.
//!
//! Publishing never blocks: each subscriber has its own bounded queue and its own
//! [`Overflow`] policy, so a slow subscriber loses (and counts) its own events without
//! stalling the publisher or the other subscribers. For every subscriber,
//! `published = delivered + dropped` holds exactly (see [`SubscriberStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// What to do when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the event being published (the queue keeps the oldest events).
    DropNewest,
    /// Drop the oldest queued event to make room (the queue keeps the newest events).
    DropOldest,
}

/// Counters of one subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberStats {
    /// Events offered to this subscriber.
    pub published: u64,
    /// Events that ended in its queue (and will be, or were, received).
    pub delivered: u64,
    /// Events dropped for it because its queue was full or it had gone away.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SubscriberStats {
        SubscriberStats {
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct Slot<T> {
    name: String,
    /// An unbounded channel held to `capacity` by `publish`: its memory is what is
    /// queued, not the capacity (a bounded channel writes every slot of its buffer up
    /// front: 8,192 events of 632 bytes are 5 MiB resident for an idle subscriber).
    sender: Sender<T>,
    capacity: usize,
    /// Kept to pop the oldest event under [`Overflow::DropOldest`].
    stealer: Receiver<T>,
    overflow: Overflow,
    counters: Arc<Counters>,
}

/// A subscriber's end: receive events and read its own counters.
#[derive(Debug)]
pub struct Subscription<T> {
    receiver: Receiver<T>,
    counters: Arc<Counters>,
}

impl<T> Subscription<T> {
    /// The channel to receive from.
    pub fn receiver(&self) -> &Receiver<T> {
        &self.receiver
    }

    /// This subscriber's counters.
    pub fn stats(&self) -> SubscriberStats {
        self.counters.snapshot()
    }
}

/// Delivers each published event to every subscriber.
#[derive(Debug)]
pub struct Fanout<T> {
    slots: Mutex<Vec<Slot<T>>>,
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone> Fanout<T> {
    /// A fan-out with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a subscriber named `name` with a queue of `capacity` events (at least 1).
    pub fn subscribe(&self, name: &str, capacity: usize, overflow: Overflow) -> Subscription<T> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let counters = Arc::new(Counters::default());
        if let Ok(mut slots) = self.slots.lock() {
            slots.push(Slot {
                name: name.to_string(),
                sender,
                capacity: capacity.max(1),
                stealer: receiver.clone(),
                overflow,
                counters: counters.clone(),
            });
        }
        Subscription { receiver, counters }
    }

    /// Offers `event` to every subscriber; never blocks. Subscribers whose
    /// [`Subscription`] was dropped are removed first.
    pub fn publish(&self, event: &T) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        // The slot holds one reference to the counters, the Subscription the other.
        slots.retain(|slot| Arc::strong_count(&slot.counters) > 1);
        for slot in slots.iter() {
            slot.counters.published.fetch_add(1, Ordering::Relaxed);
            // Full: the oldest goes (DropOldest) or this one does (DropNewest). Only
            // publishers add to the queue, one at a time under the lock: its length
            // cannot grow between the check and the send.
            if slot.sender.len() >= slot.capacity {
                if slot.overflow == Overflow::DropNewest {
                    slot.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if slot.stealer.try_recv().is_ok() {
                    // The stolen event was counted as delivered; it is now dropped.
                    slot.counters.delivered.fetch_sub(1, Ordering::Relaxed);
                    slot.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            match slot.sender.try_send(event.clone()) {
                Ok(()) => {
                    slot.counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    slot.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Counters of every subscriber, by name.
    pub fn stats(&self) -> Vec<(String, SubscriberStats)> {
        self.slots
            .lock()
            .map(|slots| {
                slots
                    .iter()
                    .map(|s| (s.name.clone(), s.counters.snapshot()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_subscriber_loses_only_its_own_events_and_counts_them() {
        let fanout = Fanout::new();
        let fast = fanout.subscribe("fast", 1_000, Overflow::DropNewest);
        let slow_new = fanout.subscribe("slow-newest", 10, Overflow::DropNewest);
        let slow_old = fanout.subscribe("slow-oldest", 10, Overflow::DropOldest);
        for i in 0..500u32 {
            fanout.publish(&i);
        }
        let got: Vec<u32> = fast.receiver().try_iter().collect();
        assert_eq!(got, (0..500).collect::<Vec<_>>());

        let kept_new: Vec<u32> = slow_new.receiver().try_iter().collect();
        assert_eq!(kept_new, (0..10).collect::<Vec<_>>());
        let kept_old: Vec<u32> = slow_old.receiver().try_iter().collect();
        assert_eq!(kept_old, (490..500).collect::<Vec<_>>());

        for sub in [&fast, &slow_new, &slow_old] {
            let s = sub.stats();
            assert_eq!(s.published, 500);
            assert_eq!(s.published, s.delivered + s.dropped, "{s:?}");
        }
        assert_eq!(slow_new.stats().dropped, 490);
        assert_eq!(slow_old.stats().dropped, 490);
        assert_eq!(fast.stats().dropped, 0);
    }

    #[test]
    fn a_departed_subscriber_is_removed_and_costs_nothing() {
        let fanout = Fanout::new();
        let gone = fanout.subscribe("gone", 4, Overflow::DropNewest);
        let stay = fanout.subscribe("stay", 4, Overflow::DropNewest);
        drop(gone);
        fanout.publish(&1u8);
        assert_eq!(stay.receiver().try_recv(), Ok(1));
        let names: Vec<String> = fanout.stats().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["stay".to_string()]);
    }
}
