//! CoDel per class, folly's variant: measure sojourn at dequeue; at each interval boundary the
//! class is *overloaded* if the minimum sojourn of the interval just ended exceeded `target`;
//! while overloaded, events that waited more than `2 × target` are shed. (RFC 8289's control law,
//! which spaces drops by `interval / √count`, is not implemented: folly reports the simple rule
//! behaves better for request queues, and it is easy to reason about.)

use std::time::Duration;

use crate::config::Codel;
use crate::time::Timestamp;

#[derive(Debug)]
pub(crate) struct CodelState<T> {
    params: Codel,
    interval_end: Option<T>,
    min_sojourn: Duration,
    overloaded: bool,
    /// The first dequeue of an interval only seeds the minimum.
    reset: bool,
}

impl<T: Timestamp> CodelState<T> {
    pub(crate) fn new(params: Codel) -> Self {
        CodelState { params, interval_end: None, min_sojourn: Duration::ZERO, overloaded: false, reset: true }
    }

    /// What [`CodelState::should_shed`] would answer, without changing anything.
    pub(crate) fn would_shed(&self, sojourn: Duration, now: T) -> bool {
        let starts_interval = self.interval_end.is_none_or(|end| now > end);
        !starts_interval && !self.reset && self.overloaded && sojourn > self.params.target * 2
    }

    /// Called for each head event at dequeue; `true` means shed it.
    pub(crate) fn should_shed(&mut self, sojourn: Duration, now: T) -> bool {
        if self.interval_end.is_none_or(|end| now > end) {
            self.interval_end = Some(now.after(self.params.interval));
            self.overloaded = self.min_sojourn > self.params.target;
            self.reset = true;
        }
        if self.reset {
            self.reset = false;
            self.min_sojourn = sojourn;
            return false;
        }
        self.min_sojourn = self.min_sojourn.min(sojourn);
        self.overloaded && sojourn > self.params.target * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn sheds_only_after_a_standing_queue_and_only_long_waits() {
        let mut c = CodelState::new(Codel { target: 5 * MS, interval: 100 * MS });
        // Interval 1: standing queue of 20 ms, but not yet known to be overloaded.
        for t in 0..10 {
            assert!(!c.should_shed(20 * MS, t * 10 * MS));
        }
        // Interval 2 begins: overloaded; the seeding dequeue is never shed.
        assert!(!c.should_shed(20 * MS, 101 * MS));
        assert!(c.should_shed(11 * MS, 102 * MS));
        assert!(!c.should_shed(10 * MS, 103 * MS), "exactly 2 × target is kept");
        // A short sojourn this interval clears the overload at the next boundary.
        assert!(!c.should_shed(MS, 104 * MS));
        assert!(!c.should_shed(30 * MS, 210 * MS));
        assert!(!c.should_shed(30 * MS, 211 * MS));
    }

    /// An overloaded state: interval 1 (seeded at 0 ms, ends at 100 ms) saw only 20 ms
    /// sojourns; interval 2 is seeded at 101 ms and ends at 201 ms.
    fn overloaded() -> CodelState<Duration> {
        let mut c = CodelState::new(Codel { target: 5 * MS, interval: 100 * MS });
        assert!(!c.should_shed(20 * MS, Duration::ZERO));
        assert!(!c.should_shed(20 * MS, 50 * MS));
        assert!(!c.should_shed(20 * MS, 101 * MS), "seeds interval 2");
        c
    }

    #[test]
    fn the_threshold_is_strictly_more_than_twice_the_target() {
        let mut c = overloaded();
        assert!(!c.would_shed(10 * MS, 102 * MS));
        assert!(!c.should_shed(10 * MS, 102 * MS), "exactly 2 × target is kept");
        let just_over = 10 * MS + Duration::from_nanos(1);
        assert!(c.would_shed(just_over, 103 * MS));
        assert!(c.should_shed(just_over, 103 * MS), "a nanosecond more is shed");
    }

    #[test]
    fn a_minimum_sojourn_of_exactly_the_target_is_not_overload() {
        let mut c = CodelState::new(Codel { target: 5 * MS, interval: 100 * MS });
        assert!(!c.should_shed(20 * MS, Duration::ZERO));
        assert!(!c.should_shed(5 * MS, 50 * MS), "the interval's minimum: exactly the target");
        assert!(!c.should_shed(20 * MS, 101 * MS), "seeds interval 2");
        assert!(!c.should_shed(30 * MS, 102 * MS), "not overloaded: a long wait is kept");
    }

    #[test]
    fn a_dequeue_exactly_at_the_interval_end_is_still_in_the_interval() {
        let mut c = overloaded();
        // 201 ms is the end of interval 2, not past it: still overloaded, a long wait is shed.
        assert!(c.would_shed(30 * MS, 201 * MS));
        assert!(c.should_shed(30 * MS, 201 * MS));
        // Past it, a new interval starts: its first dequeue seeds and is kept, whatever it waited.
        let past = 201 * MS + Duration::from_nanos(1);
        assert!(!c.would_shed(30 * MS, past));
        assert!(!c.should_shed(30 * MS, past));
    }
}
