//! The worker loop: a long-lived task per worker that takes events from its lane in scheduler
//! order, runs the handler with bounded retries, contains panics, and reports every completion.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::task::Poll;

use tokio::time::Instant;

use super::handler::{Handler, HandlerContext, Outcome, RetryPolicy};
use super::telemetry::RouteTelemetry;
use super::{Routed, Sink};
use crate::chan::Receiver;
use crate::core::{DeadLetter, Delivery};
use crate::latch::Latch;
use crate::ledger::{Completion, DeadLetterReason};
use std::sync::Arc;

/// Everything a worker needs; one per worker task.
pub(crate) struct Worker<E, H> {
    pub(crate) rx: Receiver<Routed<E>>,
    pub(crate) handler: Arc<H>,
    pub(crate) retry: RetryPolicy,
    pub(crate) stop: Arc<Latch>,
    pub(crate) sink: Sink<E>,
    pub(crate) telemetry: Arc<RouteTelemetry>,
}

impl<E: Send + Sync + 'static, H: Handler<E>> Worker<E, H> {
    pub(crate) async fn run(self) {
        while let Some(delivery) = self.rx.recv().await {
            let dequeued_at = Instant::now();
            let mut job = InFlight { worker: &self, delivery: Some(delivery) };
            let (completion, retries) = if self.stop.is_set() {
                (Completion::DeadLettered(DeadLetterReason::Shutdown), 0)
            } else {
                self.attempts(job.delivery()).await
            };
            job.finish(completion, retries, dequeued_at);
        }
    }

    /// Runs attempts until one succeeds, fails for good, the retries or the deadline run out, or
    /// the engine stops. Returns the completion and the number of retries.
    async fn attempts(&self, d: &Delivery<Routed<E>>) -> (Completion, u32) {
        let mut attempt = 1;
        loop {
            let cx = HandlerContext {
                class: d.class,
                key: d.event.key,
                attempt,
                enqueued_at: d.enqueued_at,
                deadline: d.deadline,
            };
            let retries = attempt - 1;
            let failed = (Completion::DeadLettered(DeadLetterReason::HandlerFailed), retries);
            // `handle` itself runs inside `catch_panics` (lazily, in the async block), so a panic
            // in its synchronous body is contained as well as one in the future it returns.
            let attempt_fut = catch_panics(async { self.handler.handle(&d.event.event, cx).await });
            let outcome = match first(attempt_fut, self.stop.wait()).await {
                First::A(Ok(outcome)) => outcome,
                First::A(Err(())) => return (Completion::DeadLettered(DeadLetterReason::Panicked), retries),
                First::B(()) => return (Completion::DeadLettered(DeadLetterReason::Shutdown), retries),
            };
            match outcome {
                Outcome::Ok => return (Completion::Handled, retries),
                Outcome::Fatal => return failed,
                Outcome::Retry if attempt >= self.retry.max_attempts => return failed,
                Outcome::Retry => {}
            }
            let resume = Instant::now() + self.retry.backoff(attempt);
            if d.deadline.is_some_and(|deadline| resume >= deadline) {
                return failed;
            }
            if let First::B(()) = first(tokio::time::sleep_until(resume), self.stop.wait()).await {
                return (Completion::DeadLettered(DeadLetterReason::Shutdown), retries);
            }
            // The timer rounds up to its tick: never start a retry at or past the deadline.
            if d.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return failed;
            }
            attempt += 1;
        }
    }
}

/// A delivered event until its completion is reported. Dropped unfinished (the worker task was
/// aborted, or its runtime shut down), it dead-letters the event with reason `shutdown`, so an
/// event in flight is never lost silently.
struct InFlight<'w, E, H> {
    worker: &'w Worker<E, H>,
    delivery: Option<Delivery<Routed<E>>>,
}

impl<E, H> InFlight<'_, E, H> {
    fn delivery(&self) -> &Delivery<Routed<E>> {
        self.delivery.as_ref().expect("in flight")
    }

    fn finish(&mut self, completion: Completion, retries: u32, dequeued_at: Instant) {
        let d = self.delivery.take().expect("finished once");
        let w = self.worker;
        let now = Instant::now();
        w.rx.complete(d.class, completion, retries);
        w.telemetry.completed(d.class.index(), dequeued_at - d.enqueued_at, now - d.enqueued_at, completion, retries);
        #[cfg(feature = "metrics")]
        w.telemetry.depth(d.class.index(), w.rx.len(d.class));
        if let Completion::DeadLettered(reason) = completion {
            tracing::debug!(class = d.class.index(), %reason, retries, "event dead-lettered after delivery");
            w.sink.dead_letter(DeadLetter { event: d.event, class: d.class, reason, enqueued_at: d.enqueued_at });
        }
    }
}

impl<E, H> Drop for InFlight<'_, E, H> {
    fn drop(&mut self) {
        if self.delivery.is_some() {
            self.finish(Completion::DeadLettered(DeadLetterReason::Shutdown), 0, Instant::now());
        }
    }
}

/// Which of two futures finished first.
enum First<A, B> {
    A(A),
    B(B),
}

/// Polls `a` then `b`, in that order every time (deterministic, like `select!` with `biased;`),
/// and returns the first to finish. Allocates nothing.
async fn first<A: Future, B: Future>(a: A, b: B) -> First<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(First::A(x));
        }
        if let Poll::Ready(y) = b.as_mut().poll(cx) {
            return Poll::Ready(First::B(y));
        }
        Poll::Pending
    })
    .await
}

/// Runs `f`, turning a panic in any of its polls into `Err(())`. The panic's message still
/// reaches the panic hook (stderr by default).
async fn catch_panics<F: Future>(f: F) -> Result<F::Output, ()> {
    let mut f = pin!(f);
    poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(cx))) {
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(_) => Poll::Ready(Err(())),
    })
    .await
}
