//! One class's bounded ring: many producers claim slots without a lock, one consumer at a time
//! (the holder of the channel's consumer lock) takes them in FIFO order. The only `unsafe` of the
//! crate lives here.
//!
//! # Two words, one per side
//!
//! - **`tail`** (written by producers): the count of positions taken (low 32 bits, wrapping), the
//!   count of open reservations (bits 32..62), and the `CLOSED` and `ABANDONED` flags (bits 62,
//!   63). Every change is one compare-and-swap, so a claim, a commit, a cancel, the close and the
//!   abandonment are totally ordered, and a claim can never slip past a close.
//! - **`head`** (written by the consumer): the count of positions released (bits 1..), and the
//!   `WAITING` flag (bit 0) that a sender sets before it sleeps on this class.
//!
//! The class's *occupancy* is `reserved + (taken − released)`: queued events (including ones
//! being written) plus open reservations. A producer admits itself only while the occupancy it
//! computes is below the capacity (or the lower admission limit of adaptive admission, which
//! never exceeds the capacity, so the argument below holds for any limit read). It computes it from a *cached* copy of `head` and re-reads the
//! consumer's word only when the cache says full, so in the steady state producers never touch
//! the consumer's cache line and the consumer never touches theirs: the only line that moves
//! per event is the slot itself.
//!
//! # Why a slot is free when a producer writes it
//!
//! A position is taken only together with a unit of occupancy, and that unit is returned (the
//! consumer's `release`) only after the consumer moved the slot's value out. So when position
//! `p` is taken, at most `capacity − 1` earlier positions are unreleased, hence position
//! `p − size` (`size ≥ capacity`) was released, and the producer saw that release (it read
//! `head`, or a cache filled from it, with `Acquire`): the slot is empty and the consumer's read
//! of it happened before the producer's write. The ring's size is the capacity rounded up to a
//! power of two, so the wrapping 32-bit positions map to slots consistently.
//!
//! # Publishing a value
//!
//! Each slot has a `stamp`: a producer writes the value, then stores `stamp = p + 1` with
//! `Release`; the consumer at position `r` takes the slot only when it loads `stamp == r + 1`
//! with `Acquire`. A taken-but-unwritten position therefore looks empty to the consumer for the
//! few instructions between the claim and the stamp.

use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::config::MAX_CAPACITY;
use crate::sync::{AtomicU32, AtomicU64, CachePadded, UnsafeCell, spin_wait};

const POS_MASK: u64 = (1 << 32) - 1;
const RESERVED_ONE: u64 = 1 << 32;
const RESERVED_MASK: u64 = ((1 << 30) - 1) << 32;
const CLOSED: u64 = 1 << 62;
const ABANDONED: u64 = 1 << 63;

const WAITING: u64 = 1;
const HEAD_ONE: u64 = 2;

fn pos(tail: u64) -> u32 {
    (tail & POS_MASK) as u32
}

fn reserved(tail: u64) -> u32 {
    ((tail & RESERVED_MASK) >> 32) as u32
}

fn released(head: u64) -> u32 {
    (head >> 1) as u32
}

/// Whether this tail word says closed, no reservation open, and nothing taken past `next`.
pub(crate) fn drained_at(tail: u64, next: u64) -> bool {
    tail & CLOSED != 0 && reserved(tail) == 0 && pos(tail) == next as u32
}

/// Whether this tail word has positions taken past `next`.
pub(crate) fn taken_beyond(tail: u64, next: u64) -> bool {
    pos(tail) != next as u32
}

/// What a producer may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// A position, to be written at once.
    Position,
    /// A reservation, filled later by [`Ring::commit`] or given back by [`Ring::cancel`].
    Reservation,
}

/// Why a claim failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The class's occupancy is at its capacity.
    Full,
    /// The ring is closed.
    Closed,
}

/// A successful claim.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Claimed {
    /// The position taken (meaningless for a reservation).
    pub(crate) pos: u32,
    /// This claim made the class full.
    pub(crate) filled: bool,
}

#[derive(Debug)]
struct Slot<T> {
    stamp: AtomicU32,
    value: UnsafeCell<MaybeUninit<T>>,
}

#[derive(Debug)]
struct ProducerSide {
    tail: AtomicU64,
    /// A recent value of `released(head)`: never ahead of it, so it can only overstate occupancy.
    head_cache: AtomicU32,
    /// The admission limit in force (adaptive admission; the capacity otherwise). Any value
    /// read is safe: claims are bounded by `min(limit, capacity)`, so it publishes nothing and
    /// is read and written `Relaxed`. It shares the producers' line: it changes at most once
    /// per control interval.
    limit: AtomicU32,
}

/// One class's ring; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Ring<T> {
    producer: CachePadded<ProducerSide>,
    head: CachePadded<AtomicU64>,
    slots: Box<[Slot<T>]>,
    mask: u32,
    capacity: u32,
}

// SAFETY: the ring moves `T` values between threads (so `T: Send`) and never hands out shared
// references to them; slot access is exclusive by the claim/stamp protocol in the module docs.
#[allow(unsafe_code)]
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; `&Ring` only lets a thread move a `T` in (after a claim) or out (the
// consumer, after the stamp), never share one.
#[allow(unsafe_code)]
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring for `capacity` events (`1..=MAX_CAPACITY`, checked by the configuration).
    pub(crate) fn new(capacity: usize) -> Ring<T> {
        assert!((1..=MAX_CAPACITY).contains(&capacity), "ring capacity {capacity} out of range");
        let size = capacity.next_power_of_two();
        let slots = (0..size)
            .map(|i| Slot { stamp: AtomicU32::new(i as u32), value: UnsafeCell::new(MaybeUninit::uninit()) })
            .collect();
        Ring {
            producer: CachePadded(ProducerSide {
                tail: AtomicU64::new(0),
                head_cache: AtomicU32::new(0),
                limit: AtomicU32::new(capacity as u32),
            }),
            head: CachePadded(AtomicU64::new(0)),
            slots,
            mask: (size - 1) as u32,
            capacity: capacity as u32,
        }
    }

    /// The configured capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The occupancy at which the class counts as full: the admission limit (`set_limit` keeps
    /// it within `1..=capacity`).
    #[inline]
    fn bound(&self) -> u32 {
        self.producer.limit.load(Relaxed)
    }

    /// The admission limit in force.
    pub(crate) fn limit(&self) -> usize {
        self.bound() as usize
    }

    /// Sets the admission limit, clamped to `1..=capacity`.
    pub(crate) fn set_limit(&self, limit: u32) {
        self.producer.limit.store(limit.clamp(1, self.capacity), Relaxed);
    }

    /// Occupancy from `tail` and a released count; `None` when the released count is ahead of
    /// this tail word (the tail was read first, and others took and released positions since):
    /// the caller must read `tail` again.
    fn occupancy(&self, tail: u64, released: u32) -> Option<u32> {
        let queued = pos(tail).wrapping_sub(released);
        // At most `capacity + 1` positions are ever unreleased; a released count ahead of the
        // tail wraps to at least 2^31.
        (queued <= MAX_CAPACITY as u32 + 1).then(|| reserved(tail) + queued)
    }

    /// Occupancy with `head` read before `tail`, so the tail is never behind it.
    fn occupancy_now(&self, head: u32, tail: u64) -> u32 {
        self.occupancy(tail, head).expect("a tail read after the head is not behind it")
    }

    /// Takes a position or a reservation if the class has room; exact under races (one CAS).
    /// `slack` extra units are allowed: a shedding producer holding the consumer lock has moved
    /// the oldest event out of its slot but not released it yet.
    pub(crate) fn claim(&self, take: Take, slack: u32) -> Result<Claimed, Refused> {
        let limit = self.bound() + slack;
        let p = &*self.producer;
        let mut tail = p.tail.load(Acquire);
        loop {
            if tail & CLOSED != 0 {
                return Err(Refused::Closed);
            }
            let Some(mut occ) = self.occupancy(tail, p.head_cache.load(Acquire)) else {
                tail = p.tail.load(Acquire);
                continue;
            };
            if occ >= limit {
                // The cache says full: read the consumer's word (Acquire: its slot reads
                // happened before, so the freed slots are ours to overwrite).
                let head = released(self.head.load(Acquire));
                p.head_cache.store(head, Release);
                let Some(fresh) = self.occupancy(tail, head) else {
                    tail = p.tail.load(Acquire);
                    continue;
                };
                occ = fresh;
                if occ >= limit {
                    return Err(Refused::Full);
                }
            }
            let next = match take {
                Take::Position => (tail & !POS_MASK) | u64::from(pos(tail).wrapping_add(1)),
                Take::Reservation => tail + RESERVED_ONE,
            };
            match p.tail.compare_exchange_weak(tail, next, AcqRel, Acquire) {
                // The bound read again after the CAS: a limit lowered meanwhile may have made
                // this claim the one that filled the class (see `Shared::adapt`).
                Ok(_) => return Ok(Claimed { pos: pos(tail), filled: occ + 1 >= self.bound() + slack }),
                Err(now) => tail = now,
            }
        }
    }

    /// Turns a reservation into a position. `None` if the ring was abandoned: the reservation is
    /// released without a position, and the caller dead-letters the event.
    pub(crate) fn commit(&self) -> Option<u32> {
        let p = &*self.producer;
        let mut tail = p.tail.load(Acquire);
        loop {
            debug_assert!(reserved(tail) > 0, "commit without a reservation");
            let abandoned = tail & ABANDONED != 0;
            let next = if abandoned {
                tail - RESERVED_ONE
            } else {
                ((tail - RESERVED_ONE) & !POS_MASK) | u64::from(pos(tail).wrapping_add(1))
            };
            match p.tail.compare_exchange_weak(tail, next, AcqRel, Acquire) {
                Ok(_) => return (!abandoned).then_some(pos(tail)),
                Err(now) => tail = now,
            }
        }
    }

    /// Gives a reservation back. Returns whether the ring is closed.
    pub(crate) fn cancel(&self) -> bool {
        let prev = self.producer.tail.fetch_sub(RESERVED_ONE, AcqRel);
        debug_assert!(reserved(prev) > 0, "cancel without a reservation");
        prev & CLOSED != 0
    }

    /// Writes the value of a taken position and publishes it.
    pub(crate) fn write(&self, pos: u32, value: T) {
        let slot = &self.slots[(pos & self.mask) as usize];
        // SAFETY: `pos` was taken by this thread alone (one CAS), and the slot's previous value
        // was moved out before its release, which this producer observed (module docs); nobody
        // reads the slot until the stamp below says `pos` is written.
        #[allow(unsafe_code)]
        slot.value.with_mut(|p| unsafe { p.write(MaybeUninit::new(value)) });
        slot.stamp.store(pos.wrapping_add(1), Release);
    }

    /// Whether position `r` holds a published value (consumer side).
    pub(crate) fn ready(&self, r: u64) -> bool {
        let r = r as u32;
        self.slots[(r & self.mask) as usize].stamp.load(Acquire) == r.wrapping_add(1)
    }

    /// Moves the value at position `r` out. The caller holds the consumer lock, `r` is its next
    /// position, and [`Ring::ready`] returned true for it; the slot stays unavailable to
    /// producers until [`Ring::release`].
    pub(crate) fn take(&self, r: u64) -> T {
        debug_assert!(self.ready(r));
        let slot = &self.slots[(r as u32 & self.mask) as usize];
        // SAFETY: the stamp (loaded with Acquire in `ready`) says the producer's write of
        // position `r` is complete and visible; the consumer lock makes this the only reader,
        // and the position is not released yet, so no producer writes the slot meanwhile. The
        // value is read exactly once: the consumer moves on to `r + 1`.
        #[allow(unsafe_code)]
        slot.value.with(|p| unsafe { p.read().assume_init() })
    }

    /// Lets `f` look at the value at position `r` without taking it. As for [`Ring::take`]: the
    /// caller holds the consumer lock, `r` is its next position and [`Ring::ready`] returned
    /// true for it.
    pub(crate) fn peek<R>(&self, r: u64, f: impl FnOnce(&T) -> R) -> R {
        debug_assert!(self.ready(r));
        let slot = &self.slots[(r as u32 & self.mask) as usize];
        // SAFETY: as in `take`, the value at `r` is completely written and visible (the stamp,
        // loaded with Acquire in `ready`), the consumer lock excludes other readers, and no
        // producer writes the slot before it is released; a shared borrow for the duration of
        // `f` moves nothing out, so the later `take` still reads it exactly once.
        #[allow(unsafe_code)]
        slot.value.with(|p| f(unsafe { (*p).assume_init_ref() }))
    }

    /// Waits (a few instructions at most) until position `r`, already taken, is published, then
    /// takes it. For draining a ring whose taken positions are known.
    pub(crate) fn take_when_ready(&self, r: u64) -> T {
        while !self.ready(r) {
            spin_wait();
        }
        self.take(r)
    }

    /// Returns `n` taken positions' units to the producers (after their values were moved out).
    /// Returns whether a sender is waiting on this class.
    pub(crate) fn release(&self, n: u64) -> bool {
        // AcqRel: Release publishes the slot reads to the producers that reuse the slots; as an
        // RMW it orders against `set_waiting` (the wake-up handshake, see `Shared`).
        self.head.fetch_add(n * HEAD_ONE, AcqRel) & WAITING != 0
    }

    /// Marks a sender as waiting on this class and returns whether it should sleep: the class
    /// is open and still full — for a `shedding` sender, full of reservations only, with nothing
    /// queued to shed — judged from the freshest `head` (the RMW reads the latest value).
    pub(crate) fn set_waiting(&self, shedding: bool) -> bool {
        let head = released(self.head.fetch_or(WAITING, AcqRel));
        self.producer.head_cache.store(head, Release);
        let tail = self.producer.tail.load(Acquire);
        let queued = pos(tail).wrapping_sub(head);
        tail & CLOSED == 0 && self.occupancy_now(head, tail) >= self.bound() && !(shedding && queued > 0)
    }

    /// Whether a sender is waiting, read with an RMW so it orders against `set_waiting` (for
    /// producers that free room: a cancel, or a commit in a shedding class).
    pub(crate) fn waiting(&self) -> bool {
        self.head.fetch_or(0, AcqRel) & WAITING != 0
    }

    /// Clears the waiting flag (under the wait-list lock, when no sender waits on this class).
    pub(crate) fn clear_waiting(&self) {
        self.head.fetch_and(!WAITING, AcqRel);
    }

    /// The count of taken positions, read with an RMW so it orders against a producer's claim
    /// (a receiver's handshake before it sleeps).
    pub(crate) fn taken_rmw(&self) -> u64 {
        self.producer.tail.fetch_or(0, AcqRel)
    }

    /// Whether the ring is closed, drained up to `next` and has no open reservation.
    pub(crate) fn drained(&self, next: u64) -> bool {
        drained_at(self.producer.tail.load(Acquire), next)
    }

    /// Closes the ring (and, with `abandon`, marks it abandoned: commits of open reservations
    /// then return `None`, so no position is taken after this).
    pub(crate) fn close(&self, abandon: bool) {
        let flags = if abandon { CLOSED | ABANDONED } else { CLOSED };
        self.producer.tail.fetch_or(flags, AcqRel);
    }

    /// Whether closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.producer.tail.load(Acquire) & CLOSED != 0
    }

    /// Whether the class is full now, at its admission limit (exact at the instant of the reads).
    pub(crate) fn is_full(&self) -> bool {
        let head = released(self.head.load(Acquire));
        self.occupancy_now(head, self.producer.tail.load(Acquire)) >= self.bound()
    }

    /// Events taken and not released (queued, or being written).
    pub(crate) fn len(&self) -> usize {
        let head = released(self.head.load(Acquire));
        pos(self.producer.tail.load(Acquire)).wrapping_sub(head) as usize
    }

    /// Taken positions since position `next` (the consumer's next read), wrapping.
    pub(crate) fn queued_since(&self, next: u64) -> u64 {
        u64::from(pos(self.producer.tail.load(Acquire)).wrapping_sub(next as u32))
    }

    /// Open reservations.
    pub(crate) fn reserved(&self) -> usize {
        reserved(self.producer.tail.load(Acquire)) as usize
    }

    /// Positions released by the consumer so far (not wrapping).
    pub(crate) fn released(&self) -> u64 {
        self.head.load(Acquire) >> 1
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Nobody else holds the ring: drop whatever was published and never taken.
        let head = self.released();
        let taken = self.queued_since(head);
        for r in head..head + taken {
            if self.ready(r) {
                drop(self.take(r));
            }
        }
    }
}

#[cfg(all(test, not(veltrix_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn claims_stop_at_capacity_and_release_frees_slots() {
        let ring = Ring::<u32>::new(3);
        for i in 0..3 {
            let c = ring.claim(Take::Position, 0).unwrap();
            assert_eq!((c.pos, c.filled), (i, i == 2));
            ring.write(c.pos, i * 10);
        }
        assert_eq!(ring.claim(Take::Position, 0).unwrap_err(), Refused::Full);
        assert_eq!(ring.claim(Take::Reservation, 0).unwrap_err(), Refused::Full);
        assert!(ring.is_full());
        assert_eq!(ring.take(0), 0);
        assert!(!ring.release(1));
        let c = ring.claim(Take::Reservation, 0).unwrap();
        assert!(c.filled);
        assert_eq!((ring.len(), ring.reserved()), (2, 1));
        assert_eq!(ring.commit(), Some(3));
        ring.write(3, 30);
        assert_eq!([1, 2, 3].map(|r| ring.take_when_ready(r)), [10, 20, 30]);
        ring.release(3);
        assert_eq!(ring.len(), 0);
    }

    #[test]
    fn a_released_count_ahead_of_a_stale_tail_is_not_taken_for_a_huge_occupancy() {
        let ring = Ring::<u8>::new(4);
        let stale_tail = 10u64;
        assert_eq!(ring.occupancy(stale_tail, 8), Some(2));
        assert_eq!(ring.occupancy(stale_tail, 12), None, "released 12 while this tail says 10 taken");
        assert_eq!(ring.occupancy(stale_tail | (3 << 32), 10), Some(3), "reservations count");
    }

    #[test]
    fn positions_wrap_around_u32() {
        let ring = Ring::<u64>::new(2);
        // Start near the wrap: both words at u32::MAX - 1 positions taken and released.
        let start = u64::from(u32::MAX - 1);
        ring.producer.tail.store(start, Relaxed);
        ring.producer.head_cache.store(start as u32, Relaxed);
        ring.head.store(start << 1, Relaxed);
        for i in 0..2 {
            ring.slots[((start + i) as u32 & ring.mask) as usize].stamp.store((start + i) as u32, Relaxed);
        }
        for (next, v) in (start..).zip(0..10u64) {
            let c = ring.claim(Take::Position, 0).unwrap();
            ring.write(c.pos, v);
            assert!(ring.ready(next));
            assert_eq!(ring.take(next), v);
            ring.release(1);
        }
        assert_eq!(ring.len(), 0);
    }

    #[test]
    fn close_refuses_claims_and_abandon_refuses_commits() {
        let ring = Ring::<u8>::new(2);
        ring.claim(Take::Reservation, 0).unwrap();
        ring.claim(Take::Reservation, 0).unwrap();
        ring.close(false);
        assert_eq!(ring.claim(Take::Position, 0).unwrap_err(), Refused::Closed);
        assert_eq!(ring.commit(), Some(0), "a reservation made before the close still commits");
        ring.close(true);
        assert_eq!(ring.commit(), None, "after abandonment the commit gets no position");
        assert!(!ring.drained(0), "position 0 is not taken by the consumer yet");
        ring.write(0, 7);
        assert_eq!(ring.take(0), 7);
        ring.release(1);
        assert!(ring.drained(1));
    }

    #[test]
    fn values_left_in_the_ring_are_dropped_with_it() {
        let value = std::sync::Arc::new(());
        let ring = Ring::new(4);
        for _ in 0..3 {
            let c = ring.claim(Take::Position, 0).unwrap();
            ring.write(c.pos, value.clone());
        }
        drop(ring.take(0));
        ring.release(1);
        assert_eq!(std::sync::Arc::strong_count(&value), 3);
        drop(ring);
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    }
}
