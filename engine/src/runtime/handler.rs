//! What a route runs for each event: the [`Handler`] trait, its [`HandlerContext`] and
//! [`Outcome`], and the [`RetryPolicy`] that bounds retries.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ClassId;

/// How one handler attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Done.
    Ok,
    /// Failed, worth another attempt (bounded by the route's [`RetryPolicy`] and the deadline).
    Retry,
    /// Failed for good: the event goes to the dead letter (`handler_failed`) without retries.
    Fatal,
}

/// Context of one handler attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandlerContext {
    /// The event's class.
    pub class: ClassId,
    /// The event's ordering key, if it was submitted with one.
    pub key: Option<u64>,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// When the event was accepted.
    pub enqueued_at: Instant,
    /// When its worker took it from the queue (the same for every attempt): `dequeued_at -
    /// enqueued_at` is the time it waited.
    pub dequeued_at: Instant,
    /// When the event expires, if it has a deadline.
    pub deadline: Option<Instant>,
}

impl HandlerContext {
    /// Time left before the deadline (zero once past it), or `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// Handles the events of a route. The returned future must be `Send`: workers are tokio tasks
/// on a possibly multi-threaded runtime.
///
/// The handler borrows the event, so a retry gets the same event again; after the last attempt
/// the engine keeps or dead-letters it. A panic inside `handle` is caught: the event is
/// dead-lettered with reason `panicked` and the worker carries on.
///
/// # Examples
///
/// ```
/// use std::future::Future;
/// use veltrix_engine::runtime::{Handler, HandlerContext, Outcome};
///
/// struct Charge;
///
/// impl Handler<u64> for Charge {
///     fn handle(&self, amount: &u64, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
///         let amount = *amount;
///         async move { if amount > 0 { Outcome::Ok } else { Outcome::Fatal } }
///     }
/// }
/// ```
pub trait Handler<E>: Send + Sync + 'static {
    /// Handles one attempt for `event`.
    fn handle(&self, event: &E, cx: HandlerContext) -> impl Future<Output = Outcome> + Send;
}

/// Bounded retries with exponential backoff. A retry never starts past the event's deadline:
/// if the backoff would end at or after it, the event is dead-lettered (`handler_failed`) instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included (≥ 1; 1 means no retry).
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Each later wait is twice the previous one, capped at this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, 10 ms then 20 ms, capped at 1 s.
    fn default() -> Self {
        RetryPolicy { max_attempts: 3, initial_backoff: Duration::from_millis(10), max_backoff: Duration::from_secs(1) }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub fn none() -> RetryPolicy {
        RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }
    }

    /// `attempts` attempts in all, with the given first backoff, doubling up to `max_backoff`.
    pub fn new(attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> RetryPolicy {
        RetryPolicy { max_attempts: attempts, initial_backoff, max_backoff }
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = RetryPolicy::new(10, Duration::from_millis(10), Duration::from_millis(50));
        let waits: Vec<u64> = (1..=5).map(|a| r.backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
        assert_eq!(r.backoff(u32::MAX), Duration::from_millis(50));
    }

    #[test]
    fn none_makes_one_attempt_and_default_three() {
        assert_eq!(RetryPolicy::none().max_attempts, 1);
        assert_eq!(RetryPolicy::default().max_attempts, 3);
        assert_eq!(RetryPolicy::default().backoff(2), Duration::from_millis(20));
    }
}
