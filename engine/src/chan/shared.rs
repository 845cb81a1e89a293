//! The state every handle of one channel shares, and the protocol between its sides.
//!
//! # Who touches what
//!
//! | state | written by | lock |
//! |---|---|---|
//! | each class's ring ([`Ring`]): `tail` word, slots | producers | none (one CAS per claim) |
//! | each ring's `head` word | the consumer (and a sender setting `WAITING`) | none |
//! | `full` (bit k: class k published full) | a producer that fills a class; one that finds the bit stale | none |
//! | [`Consumer`]: scheduler, CoDel, next positions, receiver-side ledger | receivers | consumer lock |
//! | refusal counters | producers, only when refusing | none |
//! | wait lists | whoever sleeps or wakes | wait-list lock, slow path only |
//!
//! A `send` on a class with room is: one load of `full`, one CAS on the class's `tail`, the slot
//! write and its stamp, one load of `rx_waiting`. A `recv` is: the consumer lock, one stamp load
//! per class, the slot read, one `fetch_add` on `head` (once per batch and class), one load of
//! `full`.
//!
//! # What "full" means when producers race
//!
//! A class's own capacity is exact: its occupancy (queued + being written + reserved) changes
//! only by CAS, so of two producers racing for its last slot exactly one wins and the other sees
//! it full. Admission in criticality order reads the *published* `full` mask: a set bit is only
//! a hint — before refusing, the producer re-reads that class's occupancy and clears the bit if
//! it is stale (receivers never clear it: that would cost every receive a write to a shared line
//! while a class runs full) — so no offer is ever refused because of a class that was not full
//! when checked. A clear bit can lag: the producer that takes a class's last slot publishes the
//! bit right after its CAS, so an offer to a less critical class that reads the mask in between
//! is admitted as if it came first. At quiescence every full class's bit is set, and in a
//! sequential run (the proptest model) admission answers exactly as with exact fill levels.
//!
//! # Sleeping without lost wake-ups
//!
//! Both handshakes pair two read-modify-writes on one atomic word, so their order is total and
//! no `SeqCst` reasoning is needed:
//! - A **sender** that finds class `j` full joins `j`'s wait list, then sets `j`'s `WAITING` bit
//!   with a `fetch_or` that also returns the freshest `head`; if `j` has room after all it
//!   retries. Whoever frees room in `j` does an RMW on the same `head` word (the consumer's
//!   `release`, a cancel's check) and, seeing `WAITING`, wakes. Either the freeing RMW comes
//!   first (the sender's `fetch_or` sees the room) or the sender's does (the freer sees the bit).
//! - A **receiver** that finds nothing joins the receivers' list, sets `rx_waiting`, then reads
//!   every class's `tail` with an RMW. A producer loads `rx_waiting` after its claim CAS on
//!   `tail`. Either the receiver's RMW comes after the claim (it sees the position and does not
//!   sleep) or before it (the claim synchronizes with it, so the producer sees `rx_waiting`).

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::consumer::{Consumer, LazyNow, Next};
use super::ring::{self, Refused, Ring, Take};
use super::waiters::{Ticket, Waiters};
use crate::config::{ClassId, Config, OverloadPolicy};
use crate::core::{Admission, Delivery, Entry, Pop, admission};
use crate::dead::{DeadLetter, DeadLetterReason, DeadLetterSink};
use crate::error::ReserveError;
use crate::ledger::{ClassStats, Completion, Stats};
use crate::sync::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, CachePadded, Mutex, lock, spin_wait};

/// How many times an idle receiver looks at the next slots before it sleeps.
#[cfg(not(veltrix_loom))]
const RECV_SPINS: u32 = 64;

/// A completion reported by the engine's worker, applied under the consumer lock of its next
/// receive (one lock for both).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Completed {
    pub(crate) class: ClassId,
    pub(crate) completion: Completion,
    pub(crate) retries: u32,
}

/// A class's rate before the controller measured it.
const NO_RATE: u64 = u64::MAX;

/// Counted only when refusing or dead-lettering at commit: rare, so one shared line is fine.
#[derive(Debug)]
struct Refusals {
    full: AtomicU64,
    policy: AtomicU64,
    closed: AtomicU64,
    /// Reservations filled after every receiver was gone (dead-lettered `Closed`).
    closed_commits: AtomicU64,
    /// Send futures dropped while they waited for room.
    cancelled: AtomicU64,
    /// Reservations refused for any reason (not events: outside `offered`).
    reservations: AtomicU64,
}

impl Refusals {
    fn new() -> Refusals {
        Refusals {
            full: AtomicU64::new(0),
            policy: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            closed_commits: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            reservations: AtomicU64::new(0),
        }
    }
}

/// What an offer took: the position (meaningless for a reservation) and the event shed to make
/// room, if any (for the caller to hand to the sink once its own state is safe).
pub(crate) type Taken<E> = (u32, Option<DeadLetter<E>>);

/// Why an offer did not take a slot, and the class to wait on if it may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blocked {
    pub(crate) error: ReserveError,
    pub(crate) on: usize,
}

pub(crate) struct Shared<E> {
    rings: Box<[Ring<Entry<E, Instant>>]>,
    policies: Box<[OverloadPolicy]>,
    deadlines: Box<[Option<Duration>]>,
    /// Whether sends to class k read the clock ([`Config::stamps`]).
    stamps: Box<[bool]>,
    full: CachePadded<AtomicU32>,
    rx_waiting: CachePadded<AtomicBool>,
    /// Set (after every ring's `CLOSED` flag) by a close: lets an idle receiver learn the
    /// channel is open without reading the producers' `tail` words.
    closed: AtomicBool,
    consumer: Mutex<Consumer>,
    /// Lists `0..n`: senders waiting for class j itself; `n..2n`: senders of less critical
    /// classes waiting for class j to stop being full; `2n`: receivers.
    waiters: Mutex<Waiters>,
    refused: Box<[Refusals]>,
    /// Adaptive admission: each class's measured service rate (`f64` bits, [`NO_RATE`] before
    /// the first measurement), published with the limits. A statistic: `Relaxed`.
    rates: Box<[AtomicU64]>,
    pub(crate) senders: AtomicUsize,
    pub(crate) receivers: AtomicUsize,
    sink: Option<Box<dyn DeadLetterSink<E>>>,
    /// Sink calls that panicked (contained).
    sink_panics: AtomicU64,
}

impl<E> Shared<E> {
    pub(crate) fn new(config: &Config, sink: Option<Box<dyn DeadLetterSink<E>>>) -> Shared<E> {
        let n = config.len();
        Shared {
            rings: config.classes().iter().map(|c| Ring::new(c.capacity)).collect(),
            policies: config.classes().iter().map(|c| c.policy).collect(),
            deadlines: config.classes().iter().map(|c| c.deadline).collect(),
            stamps: config.classes().iter().map(|c| config.stamps(c)).collect(),
            full: CachePadded(AtomicU32::new(0)),
            rx_waiting: CachePadded(AtomicBool::new(false)),
            closed: AtomicBool::new(false),
            consumer: Mutex::new(Consumer::new(config)),
            waiters: Mutex::new(Waiters::new(2 * n + 1)),
            refused: (0..n).map(|_| Refusals::new()).collect(),
            rates: (0..n).map(|_| AtomicU64::new(NO_RATE)).collect(),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
            sink,
            sink_panics: AtomicU64::new(0),
        }
    }

    fn classes(&self) -> usize {
        self.rings.len()
    }

    fn recv_list(&self) -> usize {
        2 * self.classes()
    }

    /// `class`'s index, or a panic naming it.
    pub(crate) fn index(&self, class: ClassId) -> usize {
        let n = self.classes();
        assert!(class.index() < n, "{class:?} is not configured ({n} classes)");
        class.index()
    }

    /// Hands a dead letter (already counted) to the sink. A panicking sink is contained: the
    /// panic is counted and logged, and the operation that produced the dead letter carries on
    /// with the channel's state intact (every caller is outside the channel's locks here).
    #[inline]
    pub(crate) fn dead_letter(&self, letter: Option<DeadLetter<E>>) {
        if let Some(letter) = letter {
            self.hand_to_sink(letter);
        }
    }

    /// [`Shared::dead_letter`]'s work, out of the senders' and receivers' fast path.
    #[cold]
    #[inline(never)]
    fn hand_to_sink(&self, letter: DeadLetter<E>) {
        let (class, reason) = (letter.class.index(), letter.reason);
        match &self.sink {
            Some(sink) => {
                let call = std::panic::AssertUnwindSafe(|| sink.dead_letter(letter));
                if let Err(panic) = crate::contain::call(call) {
                    self.sink_panics.fetch_add(1, Relaxed);
                    tracing::error!(class, %reason, %panic, "dead-letter sink panicked; contained");
                }
            }
            None => tracing::debug!(class, %reason, "dead letter dropped: no sink configured"),
        }
    }

    // ---- admission ----

    /// Brings bit `j` of the published mask in line with class `j`'s occupancy. Every change it
    /// makes is followed by a fresh read, so the last writer leaves the bit right.
    fn reconcile(&self, j: usize) {
        let bit = 1u32 << j;
        loop {
            let full = self.rings[j].is_full();
            if (self.full.load(Acquire) & bit != 0) == full {
                return;
            }
            if full {
                self.full.fetch_or(bit, AcqRel);
            } else {
                self.full.fetch_and(!bit, AcqRel);
            }
        }
    }

    /// After a claim in class `k`: if it took the last unit, publish the class as full — when a
    /// less critical class exists to read the bit.
    fn filled(&self, k: usize, filled: bool) {
        if filled && k + 1 < self.classes() {
            self.reconcile(k);
        }
    }

    /// The most critical class above `k` that is full, verified against its occupancy (stale
    /// bits are cleared on the way).
    fn blocked_above(&self, k: usize) -> Option<usize> {
        let mut mask = self.full.load(Acquire) & ((1u32 << k) - 1);
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            if self.rings[j].is_full() {
                return Some(j);
            }
            self.reconcile(j);
            mask &= mask - 1;
        }
        None
    }

    /// One offer to class `k` without waiting: the position taken (meaningless for a
    /// reservation) and the event shed to make room, or why not and where to wait.
    pub(crate) fn offer(&self, k: usize, take: Take) -> Result<Taken<E>, Blocked> {
        let ring = &self.rings[k];
        let blocker = match self.blocked_above(k) {
            Some(j) => j,
            None => match ring.claim(take, 0) {
                Ok(c) => {
                    self.filled(k, c.filled);
                    return Ok((c.pos, None));
                }
                Err(Refused::Closed) => return Err(Blocked { error: ReserveError::Closed, on: k }),
                Err(Refused::Full) => k,
            },
        };
        match admission(ring.is_closed(), false, self.policies[k]) {
            Admission::Refuse(error) => Err(Blocked { error, on: blocker }),
            Admission::ShedThenAdmit => self.shed_then_claim(k, take),
            Admission::Admit => unreachable!("not admissible"),
        }
    }

    /// `ShedOldest` when class `k` cannot admit: under the consumer lock, take `k`'s oldest event
    /// out (if any) and claim in its place before releasing it, so no other producer can take
    /// the room made for this one. If the class is still full after one went (its admission
    /// limit was lowered below its occupancy), the next oldest goes too, until there is room.
    fn shed_then_claim(&self, k: usize, take: Take) -> Result<Taken<E>, Blocked> {
        let ring = &self.rings[k];
        loop {
            let mut c = lock(&self.consumer);
            let shed = if self.blocked_above(k).is_some() || ring.is_full() {
                c.pop_dead(&self.rings, k, DeadLetterReason::Shed)
            } else {
                None
            };
            // The shed event's slot is empty but not released yet: one extra unit of room.
            let claimed = ring.claim(take, u32::from(shed.is_some()));
            self.flush(&mut c);
            drop(c);
            match claimed {
                Ok(cl) => {
                    self.filled(k, cl.filled);
                    return Ok((cl.pos, shed));
                }
                Err(Refused::Full) if shed.is_some() => self.dead_letter(shed),
                Err(refused) => {
                    self.dead_letter(shed);
                    let error = if refused == Refused::Closed { ReserveError::Closed } else { ReserveError::Full };
                    return Err(Blocked { error, on: k });
                }
            }
        }
    }

    /// Counts a final refusal (a `Full` only when the caller does not wait): of an event, or of
    /// a reservation (no event).
    pub(crate) fn count_refusal(&self, k: usize, take: Take, error: ReserveError) {
        let r = &self.refused[k];
        let counter = match (take, error) {
            (Take::Reservation, _) => &r.reservations,
            (Take::Position, ReserveError::Full) => &r.full,
            (Take::Position, ReserveError::Closed) => &r.closed,
            (Take::Position, ReserveError::Rejected) => &r.policy,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Counts a send of class `k` given up by its caller while it waited.
    pub(crate) fn count_cancelled(&self, k: usize) {
        self.refused[k].cancelled.fetch_add(1, Relaxed);
    }

    /// Offers until a slot is taken or the offer fails for good; with `cx`, registers `ticket`
    /// and returns `Pending` while the class (or a more critical one) is full.
    pub(crate) fn poll_offer(
        &self,
        cx: Option<&mut Context<'_>>,
        k: usize,
        take: Take,
        ticket: &mut Ticket,
    ) -> Poll<Result<Taken<E>, ReserveError>> {
        let waker = cx.map(|cx| cx.waker());
        loop {
            match self.offer(k, take) {
                Ok(taken) => {
                    self.leave(ticket, false);
                    return Poll::Ready(Ok(taken));
                }
                Err(Blocked { error: ReserveError::Full, on }) if waker.is_some() => {
                    let list = if on == k { on } else { self.classes() + on };
                    let mut w = lock(&self.waiters);
                    if let Some(old) = w.wait(ticket, list, waker.expect("checked")) {
                        // Woken for room in class `old`, now blocked by another class: that
                        // room is still there, and the next sender of `old` must hear of it
                        // (this one may be dropped before it comes back for it).
                        if old < self.classes() {
                            w.notify_one(old);
                        }
                    }
                    // Set under the wait-list lock, so a waker cannot clear it in between.
                    let shedding = on == k && self.policies[k] == OverloadPolicy::ShedOldest;
                    if self.rings[on].set_waiting(shedding) {
                        return Poll::Pending;
                    }
                    // Room appeared (or the channel closed) since the offer: try again.
                }
                Err(Blocked { error, .. }) => {
                    self.count_refusal(k, take, error);
                    self.leave(ticket, true);
                    return Poll::Ready(Err(error));
                }
            }
        }
    }

    // ---- producing ----

    /// The time for an event of class `k`, if that class reads the clock.
    fn now(&self, k: usize) -> Option<Instant> {
        self.stamps[k].then(Instant::now)
    }

    /// Writes a claimed position of class `k` and wakes a receiver if one sleeps.
    pub(crate) fn write(&self, k: usize, pos: u32, event: E, deadline: Option<Instant>) {
        let entry = Entry::new(event, deadline, self.deadlines[k], self.now(k));
        self.rings[k].write(pos, entry);
        if self.rx_waiting.load(Acquire) {
            self.wake_receiver();
        }
    }

    /// Fills a reservation of class `k`. If every receiver is gone the event is dead-lettered
    /// (`Closed`).
    pub(crate) fn fill(&self, k: usize, event: E, deadline: Option<Instant>) {
        let ring = &self.rings[k];
        match ring.commit() {
            Some(pos) => {
                self.write(k, pos, event, deadline);
                // A shedding sender whose class was all reservations now has something to shed.
                if self.policies[k] == OverloadPolicy::ShedOldest && ring.waiting() {
                    self.wake_senders(k, 1);
                }
            }
            None => {
                self.refused[k].closed_commits.fetch_add(1, Relaxed);
                let entry = Entry::new(event, deadline, self.deadlines[k], self.now(k));
                self.dead_letter(Some(entry.dead(ClassId::new(k), DeadLetterReason::Closed)));
            }
        }
    }

    /// Gives an unused reservation of class `k` back.
    pub(crate) fn unreserve(&self, k: usize) {
        let ring = &self.rings[k];
        let closed = ring.cancel();
        if ring.waiting() {
            self.wake_senders(k, 1);
        }
        if closed {
            // The last reservation may have been what kept receivers from seeing the end.
            self.wake_all_receivers();
        }
    }

    // ---- consuming ----

    /// Returns the positions taken since the last flush to the producers, waking senders that
    /// wait on those classes. (A `full` bit that no longer holds is left for the next less
    /// critical offer to clear: the receiver never touches the mask.)
    fn flush(&self, c: &mut Consumer) {
        for (k, n) in c.flush() {
            if self.rings[k].release(n) {
                self.wake_senders(k, n);
            }
        }
    }

    /// Adaptive admission, under the consumer lock: at the end of a control interval, publishes
    /// the controller's new limits and measured rates; wakes senders waiting on a class whose
    /// limit rose; then brings each class's `full` bit in line with its new limit (a lowered
    /// limit can leave a class full with its bit clear). The read of each class's `tail` is an
    /// RMW, so a producer's claim is ordered against it: either the claim comes first and the
    /// `reconcile` sees it, or it comes after and the producer sees the new limit when it
    /// computes whether its claim filled the class.
    #[inline(never)]
    fn adapt(&self, c: &mut Consumer, now: &mut LazyNow) {
        let Some(controller) = c.adapt(now) else { return };
        for (k, &limit) in controller.limits().iter().enumerate() {
            self.rates[k].store(controller.rate(k).map_or(NO_RATE, f64::to_bits), Relaxed);
            self.publish_limit(k, limit);
        }
        self.settle_full_bits();
    }

    /// Publishes class `k`'s new admission limit; wakes senders waiting on it if it rose.
    pub(crate) fn publish_limit(&self, k: usize, limit: u32) {
        let ring = &self.rings[k];
        let before = ring.limit() as u32;
        ring.set_limit(limit);
        if limit > before && ring.waiting() {
            self.wake_senders(k, u64::from(limit - before));
        }
    }

    /// After limits changed: brings every read class's `full` bit in line with its limit, each
    /// after an RMW on its `tail` (see [`Shared::adapt`]).
    pub(crate) fn settle_full_bits(&self) {
        for k in 0..self.classes().saturating_sub(1) {
            self.rings[k].taken_rmw();
            self.reconcile(k);
        }
    }

    /// How many offers class `k` has refused so far (full, or by its policy). A rarely written
    /// line, read per delivery under adaptive admission only.
    fn held_back(&self, k: usize) -> u64 {
        let r = &self.refused[k];
        r.full.load(Relaxed) + r.policy.load(Relaxed)
    }

    fn drained(&self, c: &Consumer) -> bool {
        self.closed.load(Acquire) && self.rings.iter().zip(c.classes.iter()).all(|(r, c)| r.drained(c.next))
    }

    /// Applies `settle`'s completions, then pops up to `limit` deliveries into `out` (dead
    /// letters at the head go to the sink, outside the lock, and the clock is read again after
    /// each); with `cx`, registers `ticket` and returns `Pending` if there is nothing. `Ready(0)`
    /// means closed and drained.
    pub(crate) fn poll_pop(
        &self,
        cx: Option<&mut Context<'_>>,
        ticket: &mut Ticket,
        limit: usize,
        settle: &mut Vec<Completed>,
        mut out: impl FnMut(Delivery<E>),
    ) -> Poll<usize> {
        let waker = cx.map(|cx| cx.waker());
        let mut got = 0;
        let mut spun = false;
        loop {
            let mut c = lock(&self.consumer);
            for done in settle.drain(..) {
                c.complete(done.class, done.completion, done.retries);
            }
            let mut now = LazyNow::default();
            let mut dead = None;
            // Once it holds deliveries, a receive stops at a head that would be dead-lettered:
            // the sink (user code, maybe slow) runs only before anything is handed out, so no
            // delivery waits behind it past its deadline. The held head goes first next time.
            let adaptive = c.is_adaptive();
            while got < limit {
                match c.pop(&self.rings, &mut now, got > 0) {
                    Next::Pop(Pop::Deliver(d)) => {
                        if adaptive {
                            c.delivered(d.class, d.enqueued_at, &mut now, &self.rings, self.held_back(d.class.index()));
                        }
                        out(d);
                        got += 1;
                    }
                    Next::Pop(Pop::Dead(d)) => {
                        dead = Some(d);
                        break;
                    }
                    Next::Empty | Next::Held => break,
                }
            }
            self.flush(&mut c);
            if adaptive {
                self.adapt(&mut c, &mut now);
            }
            if dead.is_some() {
                drop(c);
                self.dead_letter(dead);
                continue;
            }
            if got > 0 || self.drained(&c) {
                drop(c);
                self.leave_recv(ticket);
                return Poll::Ready(got);
            }
            let Some(waker) = waker else { return Poll::Pending };
            let mut nexts = [0u64; crate::config::MAX_CLASSES];
            for (next, class) in nexts.iter_mut().zip(c.classes.iter()) {
                *next = class.next;
            }
            drop(c);
            if !spun && self.publishes_soon(&nexts) {
                spun = true;
                continue;
            }
            {
                let mut w = lock(&self.waiters);
                let moved = w.wait(ticket, self.recv_list(), waker);
                debug_assert_eq!(moved, None, "receivers wait on one list only");
                self.rx_waiting.store(true, Release);
            }
            let (mut taken, mut drained) = (false, true);
            for (ring, next) in self.rings.iter().zip(nexts) {
                let tail = ring.taken_rmw();
                taken |= ring::taken_beyond(tail, next);
                drained &= ring::drained_at(tail, next);
            }
            let changed = taken || drained;
            if !changed {
                return Poll::Pending;
            }
            // A position was taken (its value is a few instructions from published), or the
            // channel just drained: look again rather than sleep.
            spin_wait();
        }
    }

    /// Before a receiver goes to sleep: watches the next slot of every class for a moment
    /// (a few hundred nanoseconds of `spin_loop`), since on a busy channel the next event is
    /// usually that close and a sleep costs both sides a trip through the wait list. Only reads
    /// slot stamps, never the producers' words. Whether one was published.
    fn publishes_soon(&self, nexts: &[u64]) -> bool {
        #[cfg(not(veltrix_loom))]
        for _ in 0..RECV_SPINS {
            if self.rings.iter().zip(nexts).any(|(ring, next)| ring.ready(*next)) {
                return true;
            }
            std::hint::spin_loop();
        }
        let _ = nexts;
        false
    }

    /// Takes everything queued now (most critical class first, FIFO within a class) to the
    /// sink with `reason`; returns how many.
    pub(crate) fn drain_backlog(&self, reason: DeadLetterReason) -> usize {
        let mut n = 0;
        loop {
            let dead = {
                let mut c = lock(&self.consumer);
                let dead = (0..self.classes()).find_map(|k| c.pop_dead(&self.rings, k, reason));
                self.flush(&mut c);
                dead
            };
            if dead.is_none() {
                break;
            }
            self.dead_letter(dead);
            n += 1;
        }
        self.wake_receivers_if_ready();
        n
    }

    /// Records a completion outside a receive.
    pub(crate) fn complete(&self, class: ClassId, completion: Completion, retries: u32) {
        lock(&self.consumer).complete(class, completion, retries);
    }

    // ---- waking ----

    fn wake_senders(&self, j: usize, n: u64) {
        let mut w = lock(&self.waiters);
        for _ in 0..n {
            if !w.notify_one(j) {
                break;
            }
        }
        w.notify_all(self.classes() + j);
        // The cascade list is empty now: the flag goes once no sender of class j waits either.
        if !w.has_waiters(j) {
            self.rings[j].clear_waiting();
        }
    }

    fn wake_receiver(&self) {
        let mut w = lock(&self.waiters);
        let list = self.recv_list();
        w.notify_one(list);
        self.rx_waiting.store(w.has_waiters(list), Release);
    }

    /// Wakes one more receiver if one sleeps and there is something for it (an event, or the end).
    fn wake_receivers_if_ready(&self) {
        if !self.rx_waiting.load(Acquire) {
            return;
        }
        let closed = self.closed.load(Acquire);
        let ready = self.rings.iter().any(|r| r.len() > 0 || (closed && r.drained(r.released())));
        if ready {
            self.wake_receiver();
        }
    }

    fn wake_all_receivers(&self) {
        let mut w = lock(&self.waiters);
        w.notify_all(self.recv_list());
        self.rx_waiting.store(false, Release);
    }

    /// A sender's wait ends: gives `ticket`'s slot back; with `forward`, passes on a wake-up it
    /// received but did not use.
    pub(crate) fn leave(&self, ticket: &mut Ticket, forward: bool) {
        if !ticket.is_registered() {
            return;
        }
        let unused = lock(&self.waiters).release(ticket);
        if forward {
            self.forward(unused);
        }
    }

    /// A receive ends with something: gives `ticket`'s slot back and passes the baton to the
    /// next sleeping receiver if more is queued.
    fn leave_recv(&self, ticket: &mut Ticket) {
        if ticket.is_registered() {
            let mut w = lock(&self.waiters);
            w.release(ticket);
            self.rx_waiting.store(w.has_waiters(self.recv_list()), Release);
        }
        self.wake_receivers_if_ready();
    }

    /// A future dropped while waiting: gives its slot back and any wake-up it had received.
    pub(crate) fn cancel_wait(&self, ticket: &mut Ticket) {
        if ticket.is_registered() {
            let unused = {
                let mut w = lock(&self.waiters);
                let unused = w.release(ticket);
                self.rx_waiting.store(w.has_waiters(self.recv_list()), Release);
                unused
            };
            self.forward(unused);
        }
    }

    fn forward(&self, list: Option<usize>) {
        match list {
            Some(l) if l == self.recv_list() => self.wake_receivers_if_ready(),
            Some(l) if l < self.classes() => self.wake_senders(l, 1),
            // Cascade lists are woken whole: nobody else waits for this wake-up.
            _ => {}
        }
    }

    // ---- lifecycle ----

    /// Stops admission on every class and wakes everyone: senders to get `Closed`, receivers to
    /// drain and see the end.
    pub(crate) fn close(&self) {
        for ring in self.rings.iter() {
            ring.close(false);
        }
        self.closed.store(true, Release);
        self.wake_everyone();
    }

    fn wake_everyone(&self) {
        let mut w = lock(&self.waiters);
        for list in 0..=self.recv_list() {
            w.notify_all(list);
        }
        self.rx_waiting.store(false, Release);
    }

    /// Every receiver is gone: closes, dead-letters the backlog (`Closed`), and from now on
    /// reservations filled are dead-lettered too.
    pub(crate) fn abandon(&self) {
        self.abandon_with(DeadLetterReason::Closed);
    }

    /// [`Shared::abandon`], dead-letting the backlog with `reason`.
    pub(crate) fn abandon_with(&self, reason: DeadLetterReason) {
        for ring in self.rings.iter() {
            ring.close(true);
        }
        self.closed.store(true, Release);
        self.wake_everyone();
        self.drain_backlog(reason);
    }

    // ---- observation ----

    pub(crate) fn admission_limit(&self, class: ClassId) -> usize {
        self.rings[self.index(class)].limit()
    }

    pub(crate) fn measured_rate(&self, class: ClassId) -> Option<f64> {
        let bits = self.rates[self.index(class)].load(Relaxed);
        (bits != NO_RATE).then(|| f64::from_bits(bits))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.rings[0].is_closed()
    }

    pub(crate) fn len(&self, class: ClassId) -> usize {
        self.rings[self.index(class)].len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rings.iter().all(|r| r.len() == 0)
    }

    pub(crate) fn capacity(&self, class: ClassId) -> usize {
        self.rings[self.index(class)].capacity()
    }

    /// The ledger: the receiving side's counters under the consumer lock, then the producers'
    /// positions. `accepted` is read off the positions (taken ones plus reservations filled
    /// after abandonment), so conservation holds in every snapshot, also mid-flight.
    pub(crate) fn stats(&self) -> Stats {
        let c = lock(&self.consumer);
        let classes = (0..self.classes()).map(|k| self.class_stats(&c, k)).collect();
        Stats { classes, sink_panics: self.sink_panics.load(Relaxed) }
    }

    fn class_stats(&self, c: &Consumer, k: usize) -> ClassStats {
        let (cc, refused) = (&c.classes[k], &self.refused[k]);
        let mut s = cc.stats;
        let closed_commits = refused.closed_commits.load(Acquire);
        s.queued = self.rings[k].queued_since(cc.next);
        s.accepted = cc.next + s.queued + closed_commits;
        s.dead_closed += closed_commits;
        s.rejected_full = refused.full.load(Acquire);
        s.rejected_policy = refused.policy.load(Acquire);
        s.rejected_closed = refused.closed.load(Acquire);
        s.cancelled = refused.cancelled.load(Acquire);
        s.reservations_refused = refused.reservations.load(Acquire);
        s.offered = s.accepted + s.rejected() + s.cancelled;
        s
    }

    /// Asserts the invariants; see [`Receiver::check_invariants`](super::Receiver::check_invariants).
    pub(crate) fn check_invariants(&self) {
        let c = lock(&self.consumer);
        for (k, (cc, ring)) in c.classes.iter().zip(self.rings.iter()).enumerate() {
            let s = &cc.stats;
            let taken = s.delivered + s.dead_shed + s.dead_codel + s.dead_expired + s.dead_closed + s.dead_shutdown;
            assert_eq!(cc.next, taken, "class {k}: positions taken {} != deliveries + dead letters {taken}", cc.next);
            let released = ring.released();
            assert_eq!(released, cc.next, "class {k}: released {released} != taken {}", cc.next);
            let (queued, reserved) = (ring.len(), ring.reserved());
            assert!(
                queued + reserved <= ring.capacity(),
                "class {k} over capacity: {queued} queued + {reserved} reserved > {}",
                ring.capacity()
            );
            let bit = self.full.load(Acquire) & (1 << k) != 0;
            let read = k + 1 < self.classes();
            assert!(bit || !read || !ring.is_full(), "class {k} is full but not published full");
            let s = self.class_stats(&c, k);
            assert!(s.conserved(), "conservation broken in class {k}: {s:?}");
        }
    }
}
