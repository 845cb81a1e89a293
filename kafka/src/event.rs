//! The event a handler sees, and the per-(route, class) lane state behind it: credit, counters,
//! and the commit tracker of every partition the lane owns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use veltrix_engine::ClassId;

use crate::offsets::{CommitTracker, Take};

/// One Kafka message inside the engine. Its offset is committed once it is handled or its dead
/// letter is written; dropped before that (left at shutdown), it is read again by the
/// partition's next owner. Dropping it returns its credit.
pub struct KafkaEvent {
    message: OwnedMessage,
    generation: u64,
    finished: AtomicBool,
    pub(crate) lane: Arc<Lane>,
}

impl std::fmt::Debug for KafkaEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaEvent")
            .field("topic", &self.message.topic())
            .field("partition", &self.message.partition())
            .field("offset", &self.message.offset())
            .field("bytes", &self.message.payload().map_or(0, <[u8]>::len))
            .finish_non_exhaustive()
    }
}

impl KafkaEvent {
    pub(crate) fn new(message: OwnedMessage, generation: u64, lane: Arc<Lane>) -> KafkaEvent {
        lane.node.live_add();
        KafkaEvent { message, generation, finished: AtomicBool::new(false), lane }
    }

    /// The message as read from Kafka (key, payload, headers, timestamp).
    pub fn message(&self) -> &OwnedMessage {
        &self.message
    }

    /// The topic it was read from.
    pub fn topic(&self) -> &str {
        self.message.topic()
    }

    /// Its partition.
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }

    /// Its offset in the partition: the same for every delivery of one published event.
    pub fn offset(&self) -> i64 {
        self.message.offset()
    }

    /// Its key, if published with one.
    pub fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }

    /// Its payload (empty for a null payload).
    pub fn payload(&self) -> &[u8] {
        self.message.payload().unwrap_or_default()
    }

    /// Its timestamp (the producer's create time unless the topic says otherwise), in
    /// milliseconds since the Unix epoch.
    pub fn timestamp_millis(&self) -> Option<i64> {
        self.message.timestamp().to_millis()
    }

    /// The engine class it was submitted to.
    pub fn class(&self) -> ClassId {
        self.lane.class
    }

    /// Marks its offset done (once): handled, or its dead letter written. Returns `false` if
    /// its partition was handed to another node meanwhile (that node reads it again).
    pub(crate) fn finish(&self) -> bool {
        if self.finished.swap(true, Ordering::AcqRel) {
            return true;
        }
        let owned = self.lane.partitions().finish(self.partition(), self.generation, self.offset());
        if !owned {
            self.lane.counters.late.fetch_add(1, Ordering::Relaxed);
        }
        owned
    }
}

impl Drop for KafkaEvent {
    fn drop(&mut self) {
        if !*self.finished.get_mut() {
            // Not handled and no dead letter written: its partition's commit point stays below
            // it, and the partition's next owner reads it again.
            self.lane.counters.left.fetch_add(1, Ordering::Relaxed);
            self.lane.partitions().abandon(self.partition(), self.generation);
        }
        // It stops counting as held before its credit goes back: intake takes that credit (an
        // acquire that sees this release) and counts its next event after this decrement, so
        // the node never counts more events held than its credit.
        self.lane.node.live.fetch_sub(1, Ordering::Relaxed);
        self.lane.give_credit();
        self.lane.node.wake();
    }
}

/// State shared by the whole node.
#[derive(Debug, Default)]
pub(crate) struct NodeShared {
    live: AtomicUsize,
    max_live: AtomicUsize,
    generation: AtomicU64,
    /// The intake thread, woken when credit comes back.
    pub(crate) intake: OnceLock<std::thread::Thread>,
}

impl NodeShared {
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

    pub(crate) fn wake(&self) {
        if let Some(t) = self.intake.get() {
            t.unpark();
        }
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// One route and class of one node: its topic, credit, counters, and the partitions it owns.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) route: String,
    pub(crate) class_name: String,
    pub(crate) class: ClassId,
    pub(crate) topic: String,
    pub(crate) credit: usize,
    /// Credit not held by an event.
    pub(crate) free: AtomicUsize,
    pub(crate) deadline: Option<Duration>,
    /// A backpressure class: intake waits for room instead of dead-lettering a refusal.
    pub(crate) backpressure: bool,
    /// A keyed route: the message key picks the engine lane (per-key order).
    pub(crate) keyed: bool,
    pub(crate) window: usize,
    pub(crate) node: Arc<NodeShared>,
    pub(crate) counters: Counters,
    partitions: Mutex<Partitions>,
    /// Messages read that the lane could not take yet (no credit, or the partition's commit
    /// window full), in order per partition: one per partition read from its own queue
    /// (which is not read further meanwhile), and those the main queue delivers.
    pending: Mutex<BTreeMap<i32, VecDeque<OwnedMessage>>>,
}

impl Lane {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        route: String,
        class_name: String,
        class: ClassId,
        topic: String,
        credit: usize,
        deadline: Option<Duration>,
        backpressure: bool,
        keyed: bool,
        node: Arc<NodeShared>,
    ) -> Lane {
        Lane {
            route,
            class_name,
            class,
            topic,
            credit,
            free: AtomicUsize::new(credit),
            deadline,
            backpressure,
            keyed,
            // Room for the whole credit many times over before a slow head event holds a
            // partition back.
            window: (credit * 8).clamp(1024, 1 << 20),
            node,
            counters: Counters::default(),
            partitions: Mutex::new(Partitions::default()),
            pending: Mutex::new(BTreeMap::new()),
        }
    }

    /// The owned partitions (poison ignored: every update leaves them consistent).
    pub(crate) fn partitions(&self) -> MutexGuard<'_, Partitions> {
        self.partitions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn pending(&self) -> MutexGuard<'_, BTreeMap<i32, VecDeque<OwnedMessage>>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one unit of credit, if any is free.
    pub(crate) fn take_credit(&self) -> bool {
        self.free.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| f.checked_sub(1)).is_ok()
    }

    pub(crate) fn give_credit(&self) {
        self.free.fetch_add(1, Ordering::AcqRel);
    }

    /// Starts owning `partitions` (a new assignment).
    pub(crate) fn assign(&self, partitions: &[i32]) {
        let mut owned = self.partitions();
        for &p in partitions {
            let generation = self.node.next_generation();
            owned.map.insert(p, Owned::new(generation, self.window));
        }
        drop(owned);
        let mut pending = self.pending();
        for p in partitions {
            pending.remove(p);
        }
    }
}

/// The partitions a lane owns.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    map: HashMap<i32, Owned>,
}

#[derive(Debug)]
struct Owned {
    generation: u64,
    tracker: CommitTracker,
    /// The last commit point the broker confirmed.
    committed: Option<i64>,
    /// Revocation started: nothing more is taken.
    revoked: bool,
    /// Events taken and dropped unfinished: still below the commit point's reach, but no
    /// longer running (a revocation does not wait for them).
    abandoned: usize,
}

impl Owned {
    fn new(generation: u64, window: usize) -> Owned {
        Owned { generation, tracker: CommitTracker::new(window), committed: None, revoked: false, abandoned: 0 }
    }

    /// Events of this partition still running (or waiting for their dead letter).
    fn running(&self) -> usize {
        self.tracker.in_flight() - self.abandoned
    }
}

/// What intake may do with a message, by its partition's state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Taken under this assignment generation, after this many offsets Kafka skipped.
    Taken(u64, u64),
    /// Beyond the partition's commit window: hold the partition.
    Full,
    /// Already taken: a copy.
    Again,
    /// Not owned (revoked, or not yet assigned): drop it.
    NotOwned,
}

impl Partitions {
    pub(crate) fn take(&mut self, partition: i32, offset: i64) -> Admit {
        match self.map.get_mut(&partition) {
            Some(o) if !o.revoked => match (o.tracker.gaps(), o.tracker.take(offset)) {
                (before, Take::Taken) => Admit::Taken(o.generation, o.tracker.gaps() - before),
                (_, Take::Full) => Admit::Full,
                (_, Take::Again) => Admit::Again,
            },
            _ => Admit::NotOwned,
        }
    }

    /// Whether `partition` is owned (revoked or not).
    pub(crate) fn owns(&self, partition: i32) -> bool {
        self.map.contains_key(&partition)
    }

    /// Partitions owned and not being revoked.
    pub(crate) fn owned(&self) -> usize {
        self.map.values().filter(|o| !o.revoked).count()
    }

    fn finish(&mut self, partition: i32, generation: u64, offset: i64) -> bool {
        match self.map.get_mut(&partition) {
            Some(o) if o.generation == generation => o.tracker.finish(offset),
            _ => false,
        }
    }

    fn abandon(&mut self, partition: i32, generation: u64) {
        if let Some(o) = self.map.get_mut(&partition).filter(|o| o.generation == generation) {
            o.abandoned += 1;
        }
    }

    /// Commit points that moved past what the broker confirmed, for `partitions` (all if `None`).
    pub(crate) fn to_commit(&self, partitions: Option<&[i32]>) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .map
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|ps| ps.contains(p)))
            .filter_map(|(&p, o)| o.tracker.commit_point().filter(|&c| o.committed < Some(c)).map(|c| (p, c)))
            .collect();
        out.sort_unstable();
        out
    }

    pub(crate) fn confirm(&mut self, partition: i32, offset: i64) {
        if let Some(o) = self.map.get_mut(&partition) {
            o.committed = o.committed.max(Some(offset));
        }
    }

    pub(crate) fn revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            if let Some(o) = self.map.get_mut(p) {
                o.revoked = true;
            }
        }
    }

    /// Events of `partitions` still running.
    pub(crate) fn running(&self, partitions: &[i32]) -> usize {
        partitions.iter().filter_map(|p| self.map.get(p)).map(Owned::running).sum()
    }

    /// Forgets `partitions`; returns their events still running (handed back unfinished) and
    /// the offsets Kafka skipped in them.
    pub(crate) fn release(&mut self, partitions: &[i32]) -> (usize, u64) {
        let mut running = 0;
        let mut gaps = 0;
        for p in partitions {
            if let Some(o) = self.map.remove(p) {
                running += o.running();
                gaps += o.tracker.gaps();
            }
        }
        (running, gaps)
    }

    pub(crate) fn gaps(&self) -> u64 {
        self.map.values().map(|o| o.tracker.gaps()).sum()
    }
}

/// A lane's counters; see [`ClassReport`](crate::ClassReport) for their meaning.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) taken: AtomicU64,
    pub(crate) handled: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) dlq_retries: AtomicU64,
    pub(crate) expired_on_arrival: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) held_back: AtomicU64,
    pub(crate) again: AtomicU64,
    pub(crate) left: AtomicU64,
    pub(crate) handed_back: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) revoked: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failed: AtomicU64,
    pub(crate) fetch_errors: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn lane(credit: usize) -> Arc<Lane> {
        let node = Arc::new(NodeShared::default());
        let lane = Lane::new("r".into(), "c".into(), ClassId::CRITICAL, "t".into(), credit, None, false, false, node);
        lane.assign(&[0]);
        Arc::new(lane)
    }

    fn message(offset: i64) -> OwnedMessage {
        OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, offset, None)
    }

    /// One thread takes credit and events while another drops them: the node never counts more
    /// events held than the credit allows. Credit given back before the event stops counting as
    /// held let the taker count one more (a two-node broker run saw 1,025 of 1,024).
    #[test]
    fn events_held_never_exceed_the_credit_while_another_thread_drops_them() {
        const CREDIT: usize = 1;
        const EVENTS: i64 = 200_000;
        let lane = lane(CREDIT);
        let (tx, rx) = std::sync::mpsc::sync_channel::<KafkaEvent>(CREDIT);
        let dropper = std::thread::spawn(move || rx.into_iter().for_each(drop));
        for offset in 0..EVENTS {
            while !lane.take_credit() {
                std::hint::spin_loop();
            }
            let generation = match lane.partitions().take(0, offset) {
                Admit::Taken(generation, _) => generation,
                other => panic!("offset {offset} not taken: {other:?}"),
            };
            let event = KafkaEvent::new(message(offset), generation, lane.clone());
            assert!(event.finish(), "offset {offset}: its partition is owned");
            tx.send(event).unwrap();
        }
        drop(tx);
        dropper.join().unwrap();
        assert_eq!(lane.node.live(), 0, "every event dropped");
        assert_eq!(lane.free.load(Ordering::Relaxed), CREDIT, "all credit back");
        assert!(lane.node.max_live() <= CREDIT, "held {} with credit {CREDIT}", lane.node.max_live());
        assert_eq!(lane.partitions().to_commit(None), vec![(0, EVENTS)], "every offset finished");
    }
}
