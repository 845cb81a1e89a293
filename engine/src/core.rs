//! The sans-IO policy core: per-class queues, admission, scheduling, CoDel, deadlines and the
//! ledger. No clock, no I/O, no synchronization: `now` is an argument. The concurrent channel,
//! the simulator and the proptest state machines all drive this one implementation.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use veltrix_engine::{ClassId, Config, core::{Core, Pop}};
//!
//! let mut core: Core<&str, Duration> = Core::new(&Config::default());
//! let now = Duration::ZERO;
//! core.try_send("bulk", ClassId::SHEDDABLE, None, now).unwrap();
//! core.try_send("page", ClassId::CRITICAL_PLUS, None, now).unwrap();
//! match core.pop(now) {
//!     Some(Pop::Deliver(d)) => assert_eq!(d.event, "page"),
//!     other => panic!("{other:?}"),
//! }
//! core.check_invariants();
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use crate::codel::CodelState;
use crate::config::{ClassId, Config, OverloadPolicy};
use crate::dead::{DeadLetter, DeadLetterReason};
use crate::error::ReserveError;
use crate::ledger::{ClassStats, Completion, Stats};
use crate::sched::Scheduler;
use crate::time::Timestamp;

/// An event handed to a receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery<E, T = tokio::time::Instant> {
    /// The event.
    pub event: E,
    /// Its class.
    pub class: ClassId,
    /// When it was enqueued, if the channel records enqueue times: always for a class with a
    /// default deadline or CoDel, on the engine's queues, and on a channel whose configuration
    /// asks for them ([`ConfigBuilder::record_enqueue_times`](crate::ConfigBuilder::record_enqueue_times)).
    /// Elsewhere sends skip the clock read (a large share of a send's cost) and this is `None`.
    pub enqueued_at: Option<T>,
    /// When it expires, if it has a deadline.
    pub deadline: Option<T>,
}

impl<E, T> Delivery<E, T> {
    /// Takes the event out.
    pub fn into_inner(self) -> E {
        self.event
    }
}

/// What one [`Core::pop`] step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pop<E, T = tokio::time::Instant> {
    /// The scheduler's next event.
    Deliver(Delivery<E, T>),
    /// The head of the scheduled class left to the dead letter (expired or CoDel); call `pop` again.
    Dead(DeadLetter<E, T>),
}

/// A queued event with its times, as the queues (the core's and the channel's rings) hold it.
#[derive(Debug)]
pub(crate) struct Entry<E, T> {
    pub(crate) event: E,
    pub(crate) enqueued_at: Option<T>,
    pub(crate) deadline: Option<T>,
}

impl<E, T: Timestamp> Entry<E, T> {
    /// An event committed at `now` (if the time was read): its deadline is `deadline`, else
    /// `now + class_deadline` (a class with a default deadline always reads the time).
    pub(crate) fn new(event: E, deadline: Option<T>, class_deadline: Option<Duration>, now: Option<T>) -> Entry<E, T> {
        let deadline = deadline.or_else(|| Some(now?.after(class_deadline?)));
        Entry { event, enqueued_at: now, deadline }
    }

    pub(crate) fn deliver(self, class: ClassId) -> Delivery<E, T> {
        Delivery { event: self.event, class, enqueued_at: self.enqueued_at, deadline: self.deadline }
    }

    pub(crate) fn dead(self, class: ClassId, reason: DeadLetterReason) -> DeadLetter<E, T> {
        DeadLetter { event: self.event, class, reason, enqueued_at: self.enqueued_at }
    }
}

/// What admission does with an offer to a class, the one rule the core and the channel share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Take a slot.
    Admit,
    /// Shed the class's oldest queued event (if any) to make room, then take a slot; `Full` if
    /// there is nothing to shed and no room.
    ShedThenAdmit,
    /// Refuse with this error.
    Refuse(ReserveError),
}

/// Admission in criticality order: `admissible` is "neither the class nor any more critical
/// class is full"; when it is false the class's overload policy decides.
pub(crate) fn admission(closed: bool, admissible: bool, policy: OverloadPolicy) -> Admission {
    if closed {
        return Admission::Refuse(ReserveError::Closed);
    }
    if admissible {
        return Admission::Admit;
    }
    match policy {
        OverloadPolicy::Backpressure => Admission::Refuse(ReserveError::Full),
        OverloadPolicy::Reject => Admission::Refuse(ReserveError::Rejected),
        OverloadPolicy::ShedOldest => Admission::ShedThenAdmit,
    }
}

/// The dequeue step, shared by the core and the channel: judges the head `entry` of `class` —
/// past its deadline it expires, otherwise CoDel (if configured) judges its sojourn — counts the
/// outcome in `stats` and tells the scheduler about a delivery. The time is asked of `now` only
/// when the event has a deadline or the class runs CoDel.
#[inline]
pub(crate) fn dequeue<E, T: Timestamp>(
    entry: Entry<E, T>,
    class: ClassId,
    codel: Option<&mut CodelState<T>>,
    stats: &mut ClassStats,
    sched: &mut Scheduler,
    now: impl FnOnce() -> T,
) -> Pop<E, T> {
    let verdict = if entry.deadline.is_some() || codel.is_some() {
        let now = now();
        if entry.deadline.is_some_and(|d| d <= now) {
            Some(DeadLetterReason::Expired)
        } else if codel.zip(entry.enqueued_at).is_some_and(|(codel, at)| codel.should_shed(now.since(at), now)) {
            Some(DeadLetterReason::Codel)
        } else {
            None
        }
    } else {
        None
    };
    match verdict {
        Some(reason) => {
            stats.count_dead(reason);
            Pop::Dead(entry.dead(class, reason))
        }
        None => {
            stats.delivered += 1;
            sched.served(class.index());
            Pop::Deliver(entry.deliver(class))
        }
    }
}

#[derive(Debug)]
struct Class<E, T> {
    queue: VecDeque<Entry<E, T>>,
    capacity: usize,
    /// Slots held by reservations (permits) not yet committed.
    reserved: usize,
    policy: OverloadPolicy,
    deadline: Option<Duration>,
    codel: Option<CodelState<T>>,
    stats: ClassStats,
}

impl<E, T> Class<E, T> {
    fn is_full(&self) -> bool {
        self.queue.len() + self.reserved >= self.capacity
    }
}

/// The policy core; see the [module docs](self).
#[derive(Debug)]
pub struct Core<E, T> {
    classes: Box<[Class<E, T>]>,
    sched: Scheduler,
    /// Bit k: class k is full (queue + reservations at capacity).
    full: u32,
    /// Bit k: class k has queued events.
    nonempty: u32,
    reserved: usize,
    closed: bool,
    /// Every receiver is gone: commits and the backlog go to the dead letter (`Closed`).
    abandoned: bool,
}

impl<E, T: Timestamp> Core<E, T> {
    /// Allocates every class's queue storage.
    pub fn new(config: &Config) -> Self {
        let classes = config
            .classes()
            .iter()
            .map(|spec| Class {
                queue: VecDeque::with_capacity(spec.capacity),
                capacity: spec.capacity,
                reserved: 0,
                policy: spec.policy,
                deadline: spec.deadline,
                codel: spec.codel.map(CodelState::new),
                stats: ClassStats::default(),
            })
            .collect();
        Core {
            classes,
            sched: Scheduler::new(config),
            full: 0,
            nonempty: 0,
            reserved: 0,
            closed: false,
            abandoned: false,
        }
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes.len()
    }

    fn class_mut(&mut self, class: ClassId) -> &mut Class<E, T> {
        let n = self.classes.len();
        self.classes.get_mut(class.index()).unwrap_or_else(|| panic!("{class:?} is not configured ({n} classes)"))
    }

    /// Whether `class` can take an event without its overload policy: neither it nor any more
    /// critical class is full, and the core is open.
    pub fn admissible(&self, class: ClassId) -> bool {
        let upto = (2u32 << class.index()) - 1;
        !self.closed && self.full & upto == 0
    }

    fn update_masks(&mut self, k: usize) {
        let c = &self.classes[k];
        let bit = 1 << k;
        if c.is_full() {
            self.full |= bit
        } else {
            self.full &= !bit
        }
        if c.queue.is_empty() { self.nonempty &= !bit } else { self.nonempty |= bit }
    }

    /// Reserves a slot in `class`, applying its overload policy when it cannot admit. A
    /// `ShedOldest` class may push its oldest event out, returned as a dead letter.
    ///
    /// A reservation is not an event: a refusal is counted in `reservations_refused` (`Full`
    /// included: a caller that waits and retries calls again), and the event is counted as
    /// offered when [`Core::commit`] fills the slot.
    ///
    /// # Errors
    ///
    /// [`ReserveError`] as above.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn try_reserve(&mut self, class: ClassId) -> Result<Option<DeadLetter<E, T>>, ReserveError> {
        let reserved = self.reserve(class);
        if reserved.is_err() {
            self.class_mut(class).stats.reservations_refused += 1;
        }
        reserved
    }

    /// [`Core::try_reserve`] without counting a refusal.
    fn reserve(&mut self, class: ClassId) -> Result<Option<DeadLetter<E, T>>, ReserveError> {
        let decision = admission(self.closed, self.admissible(class), self.class_mut(class).policy);
        let k = class.index();
        let c = &mut self.classes[k];
        let mut shed = None;
        match decision {
            Admission::Admit => {}
            Admission::Refuse(e) => return Err(e),
            Admission::ShedThenAdmit => {
                if let Some(old) = c.queue.pop_front() {
                    c.stats.count_dead(DeadLetterReason::Shed);
                    shed = Some(old.dead(class, DeadLetterReason::Shed));
                }
                if c.is_full() {
                    // Every slot is held by a reservation: nothing to shed.
                    return Err(ReserveError::Full);
                }
            }
        }
        c.reserved += 1;
        self.reserved += 1;
        self.update_masks(k);
        Ok(shed)
    }

    /// Counts an offered event that a caller finally gave up on after [`ReserveError::Full`]
    /// from [`Core::try_send`] (a `try_send` that does not wait).
    pub fn refuse_full(&mut self, class: ClassId) {
        let c = self.class_mut(class);
        c.stats.offered += 1;
        c.stats.rejected_full += 1;
    }

    /// Releases a reservation without sending.
    ///
    /// # Panics
    ///
    /// If `class` holds no reservation.
    pub fn cancel(&mut self, class: ClassId) {
        let c = self.class_mut(class);
        assert!(c.reserved > 0, "cancel without a reservation in {class:?}");
        c.reserved -= 1;
        self.reserved -= 1;
        self.update_masks(class.index());
    }

    /// Fills a reservation: the event is accepted and queued, with `deadline` or else the class's
    /// default deadline from `now`. If every receiver is gone, it is dead-lettered (`Closed`) and
    /// returned.
    ///
    /// # Panics
    ///
    /// If `class` holds no reservation.
    pub fn commit(&mut self, class: ClassId, event: E, deadline: Option<T>, now: T) -> Option<DeadLetter<E, T>> {
        let abandoned = self.abandoned;
        let c = self.class_mut(class);
        assert!(c.reserved > 0, "commit without a reservation in {class:?}");
        c.reserved -= 1;
        self.reserved -= 1;
        let c = &mut self.classes[class.index()];
        c.stats.offered += 1;
        c.stats.accepted += 1;
        let entry = Entry::new(event, deadline, c.deadline, Some(now));
        let out = if abandoned {
            c.stats.count_dead(DeadLetterReason::Closed);
            Some(entry.dead(class, DeadLetterReason::Closed))
        } else {
            c.queue.push_back(entry);
            None
        };
        self.update_masks(class.index());
        out
    }

    /// Reserve and commit in one step. On refusal the event comes back with the reason;
    /// `Rejected` and `Closed` are final and counted as offered and rejected, `Full` is not
    /// counted, since a caller may wait and retry: call [`Core::refuse_full`] if it gives up.
    /// On success, a dead letter may come back: the event this one displaced, or this one if
    /// every receiver is gone.
    ///
    /// # Errors
    ///
    /// The event and a [`ReserveError`].
    pub fn try_send(
        &mut self,
        event: E,
        class: ClassId,
        deadline: Option<T>,
        now: T,
    ) -> Result<Option<DeadLetter<E, T>>, (E, ReserveError)> {
        match self.reserve(class) {
            Ok(shed) => {
                let closed = self.commit(class, event, deadline, now);
                debug_assert!(shed.is_none() || closed.is_none(), "receivers gone while shedding");
                Ok(shed.or(closed))
            }
            Err(ReserveError::Full) => Err((event, ReserveError::Full)),
            Err(e) => {
                let stats = &mut self.classes[class.index()].stats;
                stats.offered += 1;
                match e {
                    ReserveError::Closed => stats.rejected_closed += 1,
                    _ => stats.rejected_policy += 1,
                }
                Err((event, e))
            }
        }
    }

    /// One scheduler step: the next event to deliver, or the next head to dead-letter (expired
    /// at `now`, or shed by CoDel), or `None` when nothing is queued.
    pub fn pop(&mut self, now: T) -> Option<Pop<E, T>> {
        let k = self.sched.pick(self.nonempty)?;
        let class = ClassId::new(k);
        let c = &mut self.classes[k];
        let head = c.queue.pop_front().expect("scheduler picked an empty class");
        let out = dequeue(head, class, c.codel.as_mut(), &mut c.stats, &mut self.sched, || now);
        self.update_masks(k);
        Some(out)
    }

    /// Stops admission: every later offer is refused as `Closed`. Queued events and open
    /// reservations still drain.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Every receiver is gone: closes, and from now on commits are dead-lettered (`Closed`);
    /// drain the backlog with [`Core::pop_dead`].
    pub fn abandon(&mut self) {
        self.closed = true;
        self.abandoned = true;
    }

    /// The next queued event (most critical class first, FIFO within it), dead-lettered with
    /// `reason` — for a backlog nobody will take (`Closed`, `Shutdown`).
    pub fn pop_dead(&mut self, reason: DeadLetterReason) -> Option<DeadLetter<E, T>> {
        let k = self.nonempty.trailing_zeros() as usize;
        let c = self.classes.get_mut(k)?;
        let head = c.queue.pop_front()?;
        c.stats.count_dead(reason);
        self.update_masks(k);
        Some(head.dead(ClassId::new(k), reason))
    }

    /// Records how a delivered event of `class` ended, and how many retries it took.
    ///
    /// # Panics
    ///
    /// If `class` has no delivered event awaiting completion, or `Completion::DeadLettered` names
    /// a reason that happens before delivery.
    pub fn complete(&mut self, class: ClassId, completion: Completion, retries: u32) {
        let c = self.class_mut(class);
        assert!(c.stats.in_flight() > 0, "completion without a delivery in flight in {class:?}");
        c.stats.count_completion(completion);
        c.stats.retries += u64::from(retries);
    }

    /// Whether an offer to `class` would be answered `Full` now (a waiting sender should stay asleep).
    pub fn would_wait(&self, class: ClassId) -> bool {
        if self.closed || self.admissible(class) {
            return false;
        }
        let c = &self.classes[class.index()];
        match c.policy {
            OverloadPolicy::Backpressure => true,
            OverloadPolicy::Reject => false,
            OverloadPolicy::ShedOldest => c.queue.is_empty() && c.is_full(),
        }
    }

    /// Whether admission is closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Closed with nothing queued and no reservation open: receivers will get nothing more.
    pub fn is_drained(&self) -> bool {
        self.closed && self.nonempty == 0 && self.reserved == 0
    }

    /// Whether any event is queued.
    pub fn has_queued(&self) -> bool {
        self.nonempty != 0
    }

    /// Events queued in `class`.
    pub fn len(&self, class: ClassId) -> usize {
        self.classes[class.index()].queue.len()
    }

    /// Events queued in all classes.
    pub fn total_len(&self) -> usize {
        self.classes.iter().map(|c| c.queue.len()).sum()
    }

    /// `class`'s capacity.
    pub fn capacity(&self, class: ClassId) -> usize {
        self.classes[class.index()].capacity
    }

    /// The ledger snapshot.
    pub fn stats(&self) -> Stats {
        let classes = self.classes.iter().map(|c| ClassStats { queued: c.queue.len() as u64, ..c.stats }).collect();
        Stats { classes, sink_panics: 0 }
    }

    /// Asserts the conservation law and the core's structural invariants.
    ///
    /// # Panics
    ///
    /// With a message naming the class and the broken identity.
    pub fn check_invariants(&self) {
        let mut reserved = 0;
        for (k, c) in self.classes.iter().enumerate() {
            let s = ClassStats { queued: c.queue.len() as u64, ..c.stats };
            assert!(s.conserved(), "conservation broken in class {k}: {s:?}");
            assert!(
                c.queue.len() + c.reserved <= c.capacity,
                "class {k} over capacity: {} queued + {} reserved > {}",
                c.queue.len(),
                c.reserved,
                c.capacity
            );
            assert!(c.queue.capacity() >= c.capacity, "class {k} storage shrank");
            assert_eq!(self.full & (1 << k) != 0, c.is_full(), "class {k} full bit stale");
            assert_eq!(self.nonempty & (1 << k) != 0, !c.queue.is_empty(), "class {k} non-empty bit stale");
            reserved += c.reserved;
        }
        assert_eq!(reserved, self.reserved, "reservation total stale");
        assert!(!self.abandoned || self.closed, "abandoned but open");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClassSpec;

    type C = Core<u32, Duration>;
    const T0: Duration = Duration::ZERO;

    fn two(policy_low: OverloadPolicy) -> C {
        let config = Config::builder()
            .class(ClassSpec::new("hi", 2))
            .class(ClassSpec::new("lo", 2).with_policy(policy_low))
            .build()
            .unwrap();
        Core::new(&config)
    }

    const HI: ClassId = ClassId::new(0);
    const LO: ClassId = ClassId::new(1);

    #[test]
    fn admission_follows_criticality() {
        let mut core = two(OverloadPolicy::Reject);
        core.try_send(1, LO, None, T0).unwrap();
        core.try_send(2, HI, None, T0).unwrap();
        core.try_send(3, HI, None, T0).unwrap();
        // HI is full, so LO refuses although it has room.
        assert_eq!(core.try_send(4, LO, None, T0), Err((4, ReserveError::Rejected)));
        assert_eq!(core.try_send(5, HI, None, T0), Err((5, ReserveError::Full)));
        core.refuse_full(HI);
        core.check_invariants();
        let s = core.stats();
        assert_eq!((s.class(LO).rejected_policy, s.class(HI).rejected_full), (1, 1));
    }

    #[test]
    fn shed_oldest_dead_letters_the_oldest() {
        let mut core = two(OverloadPolicy::ShedOldest);
        for e in [1, 2] {
            assert_eq!(core.try_send(e, LO, None, T0), Ok(None));
        }
        let shed = core.try_send(3, LO, None, T0).unwrap().unwrap();
        assert_eq!((shed.event, shed.reason), (1, DeadLetterReason::Shed));
        core.check_invariants();
        assert_eq!(core.len(LO), 2);
    }

    #[test]
    fn expired_events_never_deliver() {
        let mut core = two(OverloadPolicy::Backpressure);
        core.try_send(1, HI, Some(Duration::from_millis(5)), T0).unwrap();
        core.try_send(2, HI, None, T0).unwrap();
        let now = Duration::from_millis(5);
        assert!(matches!(
            core.pop(now),
            Some(Pop::Dead(DeadLetter { event: 1, reason: DeadLetterReason::Expired, .. }))
        ));
        assert!(matches!(core.pop(now), Some(Pop::Deliver(Delivery { event: 2, .. }))));
        assert_eq!(core.pop(now), None);
        core.check_invariants();
    }

    #[test]
    fn reservations_hold_slots_and_close_drains_them() {
        let mut core = two(OverloadPolicy::Backpressure);
        core.try_reserve(HI).unwrap();
        core.try_reserve(HI).unwrap();
        assert_eq!(core.try_reserve(HI), Err(ReserveError::Full));
        core.cancel(HI);
        core.close();
        assert!(!core.is_drained(), "one reservation still open");
        assert_eq!(core.commit(HI, 9, None, T0), None);
        assert_eq!(core.try_send(8, LO, None, T0), Err((8, ReserveError::Closed)));
        assert!(matches!(core.pop(T0), Some(Pop::Deliver(Delivery { event: 9, .. }))));
        assert!(core.is_drained());
        core.check_invariants();
        // The refused reservation was no event; the filled one and the refused send were.
        let (hi, lo) = (*core.stats().class(HI), *core.stats().class(LO));
        assert_eq!((hi.reservations_refused, hi.offered, hi.accepted), (1, 1, 1));
        assert_eq!((lo.offered, lo.rejected_closed), (1, 1));
    }

    #[test]
    fn accessors_say_what_is_queued_open_and_configured() {
        let mut core = two(OverloadPolicy::Backpressure);
        assert_eq!((core.capacity(HI), core.capacity(LO)), (2, 2));
        assert_eq!((core.total_len(), core.has_queued(), core.is_closed()), (0, false, false));
        core.try_send(1, HI, None, T0).unwrap();
        core.try_send(2, LO, None, T0).unwrap();
        core.try_send(3, LO, None, T0).unwrap();
        assert_eq!((core.len(HI), core.len(LO), core.total_len(), core.has_queued()), (1, 2, 3, true));
        // LO is full under backpressure: a sender of LO waits; HI still has room.
        assert!(core.would_wait(LO) && !core.would_wait(HI));
        core.try_send(4, HI, None, T0).unwrap();
        // HI full: both wait (LO also because a more critical class is full).
        assert!(core.would_wait(HI) && core.would_wait(LO));
        core.close();
        assert!(core.is_closed() && !core.would_wait(HI), "closed: nobody waits, they get Closed");
    }

    #[test]
    fn stats_count_the_queue_and_invariants_hold_with_reservations_open() {
        let mut core = two(OverloadPolicy::Backpressure);
        assert_eq!(core.classes(), 2);
        core.try_send(1, HI, None, T0).unwrap();
        core.try_reserve(LO).unwrap();
        core.try_reserve(HI).unwrap();
        core.check_invariants();
        assert_eq!((core.stats().class(HI).queued, core.stats().class(LO).queued), (1, 0));
    }

    #[test]
    #[should_panic(expected = "conservation broken in class 0")]
    fn check_invariants_sees_a_broken_ledger() {
        let mut core = two(OverloadPolicy::Backpressure);
        core.try_send(1, HI, None, T0).unwrap();
        core.classes[0].stats.accepted += 1;
        core.check_invariants();
    }

    #[test]
    #[should_panic(expected = "reservation total stale")]
    fn check_invariants_sees_a_stale_reservation_total() {
        let mut core = two(OverloadPolicy::Backpressure);
        core.try_reserve(HI).unwrap();
        core.reserved += 1;
        core.check_invariants();
    }

    #[test]
    fn a_shedding_class_waits_only_while_every_slot_is_reserved() {
        let mut core = two(OverloadPolicy::ShedOldest);
        core.try_reserve(LO).unwrap();
        core.try_reserve(LO).unwrap();
        assert!(core.would_wait(LO), "nothing queued to shed: wait");
        assert_eq!(core.commit(LO, 1, None, T0), None);
        assert!(!core.would_wait(LO), "an event to shed: no wait");
    }

    #[test]
    fn completions_settle_in_flight_deliveries() {
        let mut core = two(OverloadPolicy::Backpressure);
        core.try_send(1, HI, None, T0).unwrap();
        core.try_send(2, HI, None, T0).unwrap();
        core.pop(T0).unwrap();
        core.pop(T0).unwrap();
        assert_eq!(core.stats().class(HI).in_flight(), 2);
        core.complete(HI, Completion::Handled, 2);
        core.complete(HI, Completion::DeadLettered(DeadLetterReason::Panicked), 0);
        let s = *core.stats().class(HI);
        assert_eq!((s.in_flight(), s.handled, s.dead_panicked, s.retries), (0, 1, 1, 2));
        core.check_invariants();
    }

    #[test]
    #[should_panic(expected = "completion without a delivery")]
    fn completing_more_than_delivered_panics() {
        let mut core = two(OverloadPolicy::Backpressure);
        core.complete(HI, Completion::Handled, 0);
    }

    #[test]
    fn abandon_dead_letters_backlog_and_late_commits() {
        let mut core = two(OverloadPolicy::Backpressure);
        core.try_send(1, LO, None, T0).unwrap();
        core.try_reserve(HI).unwrap();
        core.abandon();
        assert_eq!(
            core.pop_dead(DeadLetterReason::Closed).map(|d| (d.event, d.reason)),
            Some((1, DeadLetterReason::Closed))
        );
        assert_eq!(core.pop_dead(DeadLetterReason::Closed), None);
        assert_eq!(core.commit(HI, 2, None, T0).map(|d| d.event), Some(2));
        core.check_invariants();
        assert_eq!(core.stats().total().dead_closed, 2);
    }
}
