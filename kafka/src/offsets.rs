//! Which offsets of one partition may be committed when events finish out of order.

/// The commit point of one partition whose events finish out of order: Kafka stores one offset
/// per partition ("everything below this is done"), so a partition may only be committed up to
/// its lowest offset still in flight.
///
/// The tracker holds one bit per offset from the commit point up to the last offset taken, in
/// a ring allocated once (its `window`): taking and finishing events allocates nothing. An
/// offset more than `window` past the commit point is refused ([`Take::Full`]): the caller
/// leaves it in Kafka until the head of the partition finishes.
///
/// Offsets Kafka itself never delivers (a compacted topic, a transaction's markers, records
/// deleted by retention before they were read) show up as a jump in the taken offsets; the
/// offsets jumped over count as done, and as [`gaps`](Self::gaps). A jump past the window waits
/// until every event in flight is finished, then is taken at once.
///
/// # Examples
///
/// ```
/// use veltrix_kafka::{CommitTracker, Take};
///
/// let mut t = CommitTracker::new(1024);
/// for offset in 40..43 {
///     assert_eq!(t.take(offset), Take::Taken);
/// }
/// t.finish(41); // 40 is still running: nothing can be committed
/// assert_eq!(t.commit_point(), Some(40));
/// t.finish(40); // now 40 and 41 are done
/// assert_eq!(t.commit_point(), Some(42));
/// ```
#[derive(Clone, Debug)]
pub struct CommitTracker {
    /// One bit per offset in `[base, next)`, set once it is done; offset `o` is bit `o % bits`.
    done: Box<[u64]>,
    /// The lowest offset not done: what Kafka's commit stores. `None` before the first take.
    base: Option<i64>,
    /// One past the highest offset taken.
    next: i64,
    in_flight: usize,
    gaps: u64,
}

/// What [`CommitTracker::take`] did with an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// Tracked: finish it with [`CommitTracker::finish`].
    Taken,
    /// Too far past the commit point for the window: leave it in Kafka for now.
    Full,
    /// Already taken (a copy delivered again): the copy taken first settles it.
    Again,
}

impl CommitTracker {
    /// A tracker for up to `window` offsets past the commit point (rounded up to a multiple
    /// of 64, at least 64).
    pub fn new(window: usize) -> CommitTracker {
        let words = window.div_ceil(64).max(1);
        CommitTracker { done: vec![0; words].into_boxed_slice(), base: None, next: 0, in_flight: 0, gaps: 0 }
    }

    /// How many offsets past the commit point it tracks.
    pub fn window(&self) -> usize {
        self.done.len() * 64
    }

    /// Takes `offset` (the partition's next message): tracked until [`finish`](Self::finish).
    /// The first offset taken sets the commit point.
    pub fn take(&mut self, offset: i64) -> Take {
        let base = *self.base.get_or_insert(offset);
        if self.next < base {
            self.next = base;
        }
        if offset < self.next {
            return Take::Again;
        }
        if self.in_flight == 0 {
            // Everything taken is done (`base == next`): a jump of any size is committed past
            // at once, without walking the window.
            self.gaps += (offset - self.next) as u64;
            self.base = Some(offset);
            self.next = offset + 1;
            self.in_flight = 1;
            return Take::Taken;
        }
        if offset - base >= self.window() as i64 {
            return Take::Full;
        }
        // Offsets Kafka skipped are done: nothing will ever be delivered for them.
        for skipped in self.next..offset {
            self.set(skipped);
            self.gaps += 1;
        }
        self.next = offset + 1;
        self.in_flight += 1;
        self.advance();
        Take::Taken
    }

    /// Marks a taken `offset` done (handled, or dead-lettered). Returns `false`, changing
    /// nothing, if it is not in flight here (never taken, or finished already).
    pub fn finish(&mut self, offset: i64) -> bool {
        let Some(base) = self.base else { return false };
        if offset < base || offset >= self.next || self.is_set(offset) {
            return false;
        }
        self.set(offset);
        self.in_flight -= 1;
        self.advance();
        true
    }

    /// Whether `offset` would fit the window now.
    pub fn has_room(&self, offset: i64) -> bool {
        self.base.is_none_or(|base| offset - base < self.window() as i64)
    }

    /// The offset to commit: everything below it is done. `None` before the first take.
    pub fn commit_point(&self) -> Option<i64> {
        self.base
    }

    /// Events taken and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Offsets jumped over by [`take`](Self::take) (never delivered by Kafka).
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    fn bit(&self, offset: i64) -> (usize, u64) {
        let i = offset.rem_euclid(self.window() as i64) as usize;
        (i / 64, 1 << (i % 64))
    }

    fn is_set(&self, offset: i64) -> bool {
        let (w, m) = self.bit(offset);
        self.done[w] & m != 0
    }

    fn set(&mut self, offset: i64) {
        let (w, m) = self.bit(offset);
        self.done[w] |= m;
    }

    /// Moves the commit point over every done offset, clearing their bits for reuse.
    fn advance(&mut self) {
        let Some(mut base) = self.base else { return };
        while base < self.next {
            let (w, m) = self.bit(base);
            if self.done[w] & m == 0 {
                break;
            }
            self.done[w] &= !m;
            base += 1;
        }
        self.base = Some(base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_point_waits_for_the_lowest_offset_in_flight() {
        let mut t = CommitTracker::new(64);
        assert_eq!(t.commit_point(), None);
        assert!(!t.finish(5), "nothing taken yet");
        for o in 10..20 {
            assert_eq!(t.take(o), Take::Taken);
        }
        assert_eq!(t.take(12), Take::Again);
        for o in (11..20).rev() {
            assert!(t.finish(o));
            assert_eq!(t.commit_point(), Some(10));
        }
        assert!(!t.finish(15), "finished twice");
        assert_eq!(t.in_flight(), 1);
        assert!(t.finish(10));
        assert_eq!((t.commit_point(), t.in_flight()), (Some(20), 0));
    }

    #[test]
    fn the_window_bounds_how_far_past_the_commit_point_it_takes() {
        let mut t = CommitTracker::new(100);
        assert_eq!(t.window(), 128);
        assert_eq!(t.take(0), Take::Taken);
        for o in 1..128 {
            assert_eq!(t.take(o), Take::Taken);
            assert!(t.finish(o));
        }
        assert!(!t.has_room(128));
        assert_eq!(t.take(128), Take::Full, "offset 0 still runs");
        assert!(t.finish(0));
        assert_eq!(t.commit_point(), Some(128));
        assert_eq!(t.take(128), Take::Taken, "the bits were cleared for reuse");
        assert_eq!(t.take(255), Take::Taken);
        assert_eq!(t.gaps(), 126);
    }

    #[test]
    fn a_jump_past_the_window_waits_for_the_events_in_flight_then_goes_through() {
        let mut t = CommitTracker::new(64);
        assert_eq!(t.take(0), Take::Taken);
        assert_eq!(t.take(10_000), Take::Full, "offset 0 still runs");
        assert!(t.finish(0));
        assert_eq!(t.take(10_000), Take::Taken, "nothing in flight: a compacted stretch");
        assert_eq!((t.commit_point(), t.gaps(), t.in_flight()), (Some(10_000), 9_999, 1));
        assert!(t.finish(10_000));
        assert_eq!(t.commit_point(), Some(10_001));
        assert_eq!(t.take(10_001), Take::Taken, "the ring was left clean");
        assert!(t.finish(10_001));
        assert_eq!(t.commit_point(), Some(10_002));
    }

    #[test]
    fn offsets_kafka_skips_count_as_done_gaps() {
        let mut t = CommitTracker::new(64);
        assert_eq!(t.take(3), Take::Taken);
        assert_eq!(t.take(7), Take::Taken);
        assert_eq!(t.gaps(), 3);
        assert!(t.finish(3));
        assert_eq!(t.commit_point(), Some(7), "4, 5 and 6 were never delivered");
        assert!(!t.finish(5), "a gap is not in flight");
    }
}
