//! The event a handler sees, and the per-(route, class) lane state behind it: credit, counters
//! and the record of stream sequences in flight and done.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::message::Acker;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use veltrix_engine::ClassId;

use crate::config::ShedAction;

/// How many acked stream sequences a lane remembers to recognise late redeliveries.
const DONE_MEMORY: usize = 65_536;

/// One JetStream message inside the engine. Dropping it returns its credit.
pub struct NatsEvent {
    subject: Subject,
    payload: Bytes,
    headers: Option<HeaderMap>,
    stream_sequence: u64,
    delivered: u64,
    acker: Acker,
    /// Whether its stream sequence was already released from the lane's held set (before a
    /// nak, so a quick redelivery to this lane is taken as new rather than as a stale copy).
    released: AtomicBool,
    pub(crate) lane: Arc<Lane>,
    _credit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for NatsEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEvent")
            .field("subject", &self.subject.as_str())
            .field("stream_sequence", &self.stream_sequence)
            .field("delivered", &self.delivered)
            .field("bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl NatsEvent {
    pub(crate) fn new(
        message: async_nats::jetstream::Message,
        stream_sequence: u64,
        delivered: u64,
        lane: Arc<Lane>,
        credit: OwnedSemaphorePermit,
    ) -> NatsEvent {
        let (message, acker) = message.split();
        lane.node.live_add();
        NatsEvent {
            subject: message.subject,
            payload: message.payload,
            headers: message.headers,
            stream_sequence,
            delivered,
            acker,
            released: AtomicBool::new(false),
            lane,
            _credit: credit,
        }
    }

    /// The subject it was published on.
    pub fn subject(&self) -> &str {
        self.subject.as_str()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers it was published with (`Nats-Msg-Id` among them).
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.headers.as_ref()
    }

    /// Its sequence in the stream: the same for every delivery of one published event.
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    /// Which delivery this is (1 for the first).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The engine class it was submitted to.
    pub fn class(&self) -> ClassId {
        self.lane.class
    }

    /// Tells the server; nothing once the node was killed (a dead process acks nothing). A nak
    /// on the event's last allowed delivery would let the server drop it silently, so it becomes
    /// a term, counted `exhausted`: the dead letter of `max_deliver`.
    pub(crate) async fn settle(&self, kind: AckKind) {
        if self.lane.node.is_dead() {
            return;
        }
        let kind = match kind {
            AckKind::Nak(_) if self.last_delivery() => {
                self.lane.counters.exhausted.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = self.subject(), seq = self.stream_sequence, "max_deliver exhausted: termed");
                AckKind::Term
            }
            kind => kind,
        };
        if matches!(kind, AckKind::Nak(_)) {
            self.release();
        }
        let counter = match kind {
            AckKind::Ack => &self.lane.counters.acked,
            AckKind::Nak(_) => &self.lane.counters.naked,
            AckKind::Term => &self.lane.counters.termed,
            _ => &self.lane.counters.progress,
        };
        if let Err(e) = self.acker.ack_with(kind).await {
            // The server redelivers after ack_wait: at least once still holds.
            self.lane.counters.settle_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(seq = self.stream_sequence, error = %e, "ack/nak not sent");
            return;
        }
        counter.fetch_add(1, Ordering::Relaxed);
        if matches!(kind, AckKind::Ack | AckKind::Term) {
            self.lane.seen().done(self.stream_sequence);
        }
    }

    /// Whether the server will not deliver it again: this delivery, or a stale copy of it seen
    /// since, reached `max_deliver`.
    fn last_delivery(&self) -> bool {
        let seen = self.lane.seen().delivered(self.stream_sequence);
        self.lane.max_deliver > 0 && self.delivered.max(seen) >= self.lane.max_deliver as u64
    }

    /// The class's answer to a shed or refused event.
    pub(crate) fn shed_action(&self) -> AckKind {
        match self.lane.on_shed {
            ShedAction::Nak(delay) => AckKind::Nak(Some(delay)),
            ShedAction::Term => AckKind::Term,
        }
    }

    /// This node no longer holds it (once).
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.lane.seen().release(self.stream_sequence);
        }
    }
}

impl Drop for NatsEvent {
    fn drop(&mut self) {
        self.release();
        self.lane.node.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// State shared by the whole node.
#[derive(Debug, Default)]
pub(crate) struct NodeShared {
    dead: AtomicBool,
    live: AtomicUsize,
    max_live: AtomicUsize,
}

impl NodeShared {
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    pub(crate) fn kill(&self) {
        self.dead.store(true, Ordering::Release);
    }

    fn live_add(&self) {
        let now = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_live.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub(crate) fn max_live(&self) -> usize {
        self.max_live.load(Ordering::Relaxed)
    }
}

/// One route and class of one node: its consumer's local state.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) route: String,
    pub(crate) class_name: String,
    pub(crate) class: ClassId,
    pub(crate) credit: usize,
    pub(crate) on_shed: ShedAction,
    /// A backpressure class: the fetch loop waits for room instead of shedding.
    pub(crate) backpressure: bool,
    pub(crate) max_deliver: i64,
    pub(crate) node: Arc<NodeShared>,
    pub(crate) counters: Counters,
    pub(crate) seen: Mutex<Seen>,
}

impl Lane {
    /// The held and settled sequences (poison ignored: every update leaves them consistent).
    pub(crate) fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Stream sequences this lane holds now (with the highest delivery count the server has
/// reported for each), and the ones it settled lately.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    in_flight: BTreeMap<u64, u64>,
    done: BTreeSet<u64>,
    done_order: VecDeque<u64>,
}

/// What a newly fetched delivery is, judged by its stream sequence.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Not held here: take it.
    New,
    /// A redelivery of an event this node still holds (queued or running): that copy will settle it.
    Stale,
    /// A redelivery of an event this node already acked or termed (the settle was lost or late).
    Done,
}

impl Seen {
    /// Records delivery number `delivered` of `seq`.
    pub(crate) fn arrive(&mut self, seq: u64, delivered: u64) -> Arrival {
        if self.done.contains(&seq) {
            return Arrival::Done;
        }
        match self.in_flight.entry(seq) {
            std::collections::btree_map::Entry::Occupied(mut held) => {
                *held.get_mut() = (*held.get()).max(delivered);
                Arrival::Stale
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(delivered);
                Arrival::New
            }
        }
    }

    /// The highest delivery count seen for `seq` while held (0 if not held).
    fn delivered(&self, seq: u64) -> u64 {
        self.in_flight.get(&seq).copied().unwrap_or(0)
    }

    fn release(&mut self, seq: u64) {
        self.in_flight.remove(&seq);
    }

    fn done(&mut self, seq: u64) {
        if self.done.insert(seq) {
            self.done_order.push_back(seq);
            if self.done_order.len() > DONE_MEMORY {
                let old = self.done_order.pop_front().expect("non-empty");
                self.done.remove(&old);
            }
        }
    }
}

/// A lane's counters; see [`ClassReport`](crate::ClassReport) for their meaning.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) fetched: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) submitted: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) naked: AtomicU64,
    pub(crate) termed: AtomicU64,
    pub(crate) progress: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) reacked: AtomicU64,
    pub(crate) expired_on_arrival: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) shed: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) settle_failed: AtomicU64,
    pub(crate) fetch_errors: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_tells_new_stale_and_done_apart() {
        let mut s = Seen::default();
        assert_eq!(s.arrive(7, 1), Arrival::New);
        assert_eq!(s.delivered(7), 1);
        assert_eq!(s.arrive(7, 3), Arrival::Stale);
        assert_eq!(s.arrive(7, 2), Arrival::Stale);
        assert_eq!(s.delivered(7), 3, "the highest delivery count the server reported");
        s.done(7);
        s.release(7);
        assert_eq!(s.arrive(7, 4), Arrival::Done);
        s.release(8);
        assert_eq!(s.arrive(8, 1), Arrival::New);
    }

    #[test]
    fn seen_forgets_the_oldest_done_beyond_its_memory() {
        let mut s = Seen::default();
        for seq in 0..(DONE_MEMORY as u64 + 10) {
            s.done(seq);
        }
        assert_eq!(s.done.len(), DONE_MEMORY);
        assert_eq!(s.arrive(0, 2), Arrival::New, "forgotten");
        assert_eq!(s.arrive(DONE_MEMORY as u64 + 9, 2), Arrival::Done);
    }
}
