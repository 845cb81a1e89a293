//! The outcome ledger: where every offered event went, per class.

use std::fmt;
use std::time::Duration;

use crate::config::ClassId;

/// Why an event went to the dead letter instead of a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// Pushed out by a newer event of a [`ShedOldest`](crate::OverloadPolicy::ShedOldest) class.
    Shed,
    /// Dropped at dequeue by CoDel: it waited more than twice the target while the class was overloaded.
    Codel,
    /// Its deadline passed before it was dequeued; no handler ran.
    Expired,
    /// Every receiver was gone, so nothing could ever take it.
    Closed,
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeadLetterReason::Shed => "shed",
            DeadLetterReason::Codel => "codel",
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::Closed => "closed",
        })
    }
}

/// One class's ledger. Conservation, exact at every snapshot:
/// `offered = accepted + rejected()` and `accepted = delivered + dead_lettered() + queued`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassStats {
    /// Events offered (every `send`/`try_send`/reservation that reached a final answer).
    pub offered: u64,
    /// Events taken in.
    pub accepted: u64,
    /// Handed back because the class was full under backpressure (`try_send`/`try_reserve` only).
    pub rejected_full: u64,
    /// Handed back by the `Reject` policy.
    pub rejected_policy: u64,
    /// Handed back because the channel was closed.
    pub rejected_closed: u64,
    /// Handed to a receiver.
    pub delivered: u64,
    /// Dead-lettered with reason [`Shed`](DeadLetterReason::Shed).
    pub dead_shed: u64,
    /// Dead-lettered with reason [`Codel`](DeadLetterReason::Codel).
    pub dead_codel: u64,
    /// Dead-lettered with reason [`Expired`](DeadLetterReason::Expired).
    pub dead_expired: u64,
    /// Dead-lettered with reason [`Closed`](DeadLetterReason::Closed).
    pub dead_closed: u64,
    /// Queued now.
    pub queued: u64,
}

impl ClassStats {
    /// All rejections.
    pub fn rejected(&self) -> u64 {
        self.rejected_full + self.rejected_policy + self.rejected_closed
    }

    /// All dead letters.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_shed + self.dead_codel + self.dead_expired + self.dead_closed
    }

    /// Whether both conservation identities hold.
    pub fn conserved(&self) -> bool {
        self.offered == self.accepted + self.rejected()
            && self.accepted == self.delivered + self.dead_lettered() + self.queued
    }

    pub(crate) fn count_dead(&mut self, reason: DeadLetterReason) {
        match reason {
            DeadLetterReason::Shed => self.dead_shed += 1,
            DeadLetterReason::Codel => self.dead_codel += 1,
            DeadLetterReason::Expired => self.dead_expired += 1,
            DeadLetterReason::Closed => self.dead_closed += 1,
        }
    }
}

/// A snapshot of every class's ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub(crate) classes: Vec<ClassStats>,
}

impl Stats {
    /// One class's ledger.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn class(&self, class: ClassId) -> &ClassStats {
        &self.classes[class.index()]
    }

    /// Every class's ledger, most critical first.
    pub fn classes(&self) -> &[ClassStats] {
        &self.classes
    }

    /// The sum over classes.
    pub fn total(&self) -> ClassStats {
        self.classes.iter().fold(ClassStats::default(), |mut t, c| {
            t.offered += c.offered;
            t.accepted += c.accepted;
            t.rejected_full += c.rejected_full;
            t.rejected_policy += c.rejected_policy;
            t.rejected_closed += c.rejected_closed;
            t.delivered += c.delivered;
            t.dead_shed += c.dead_shed;
            t.dead_codel += c.dead_codel;
            t.dead_expired += c.dead_expired;
            t.dead_closed += c.dead_closed;
            t.queued += c.queued;
            t
        })
    }
}

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
