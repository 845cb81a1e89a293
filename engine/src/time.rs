//! Time as the sans-IO core sees it: any [`Timestamp`], passed in by the caller.

use std::fmt;
use std::time::Duration;

/// A point in time for the sans-IO core: [`Duration`] (time since an epoch, for simulations and
/// tests), `std::time::Instant` or `tokio::time::Instant` (the channel's clock).
pub trait Timestamp: Copy + Ord + fmt::Debug {
    /// `self + d`, saturating at the type's maximum.
    fn after(self, d: Duration) -> Self;
    /// The time from `earlier` to `self`, zero if `earlier` is later.
    fn since(self, earlier: Self) -> Duration;
}

impl Timestamp for Duration {
    fn after(self, d: Duration) -> Self {
        self.saturating_add(d)
    }
    fn since(self, earlier: Self) -> Duration {
        self.saturating_sub(earlier)
    }
}

impl Timestamp for std::time::Instant {
    fn after(self, d: Duration) -> Self {
        self.checked_add(d).unwrap_or(self + Duration::from_secs(86_400 * 365 * 30))
    }
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Timestamp for tokio::time::Instant {
    fn after(self, d: Duration) -> Self {
        self.checked_add(d).unwrap_or(self + Duration::from_secs(86_400 * 365 * 30))
    }
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(all(test, not(veltrix_loom)))]
mod tests {
    use super::*;

    #[test]
    fn timestamps_add_and_subtract_saturating() {
        let ms = Duration::from_millis;
        assert_eq!((ms(5).since(ms(2)), ms(2).since(ms(5))), (ms(3), Duration::ZERO));
        assert_eq!(Duration::MAX.after(ms(1)), Duration::MAX);
        let thirty_years = Duration::from_secs(86_400 * 365 * 30);
        let now = std::time::Instant::now();
        assert_eq!(now.after(ms(7)).since(now), ms(7));
        assert_eq!(now.since(now.after(ms(7))), Duration::ZERO);
        assert_eq!(now.after(Duration::MAX).since(now), thirty_years, "an overflowing deadline is far away");
        let now = tokio::time::Instant::now();
        assert_eq!(now.after(ms(7)).since(now), ms(7));
        assert_eq!(now.since(now.after(ms(7))), Duration::ZERO);
        assert_eq!(now.after(Duration::MAX).since(now), thirty_years);
    }
}
