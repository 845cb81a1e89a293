//! The worker loop: a long-lived task per worker that takes events from its lane in scheduler
//! order, runs the handler with bounded retries, contains panics, and reports every completion.
//!
//! # Batches
//!
//! A worker reports a batch's completions under the lock of its next receive, and a worker that
//! has its lane to itself (one worker per route, or a keyed route) takes events in batches, so a
//! busy worker takes the consumer lock once per batch instead of twice per event. (Workers that
//! share a lane take one event at a time: an event in one's batch would wait behind its handler
//! while another sat idle.) A batch already taken is the worker's: a critical event that arrives meanwhile waits
//! for it. So the batch size adapts: it starts at 1, doubles (up to [`MAX_BATCH`]) while a whole
//! batch takes less than [`BATCH_BUDGET`], and falls back to 1 as soon as one takes longer. Fast
//! handlers get batches; slow ones take one event at a time, and priority is never held back by
//! more than about [`BATCH_BUDGET`] of work already taken. The clock is read once per batch at
//! each end: an event's end-to-end latency is taken at its batch's end, which for a batch of
//! more than one event is within about [`BATCH_BUDGET`] of its own completion.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::handler::{Handler, HandlerContext, Outcome, RetryPolicy};
use super::telemetry::{RouteTelemetry, Sample};
use super::{RouteId, RouteSink, Routed};
use crate::chan::{Completed, Receiver};
use crate::contain::{self, Panic};
use crate::core::Delivery;
use crate::dead::{DeadLetter, DeadLetterReason};
use crate::latch::Latch;
use crate::ledger::Completion;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest batch a worker takes by default.
pub(crate) const MAX_BATCH: usize = 32;
/// A batch that took less than this lets the next one be twice as large.
pub(crate) const BATCH_BUDGET: Duration = Duration::from_micros(50);

/// Watches the workers of one lane, so that a lane nobody serves any more is noticed.
#[derive(Debug)]
pub(crate) struct LaneWatch {
    route: RouteId,
    lane: usize,
    /// Workers of the lane still running.
    live: AtomicUsize,
    /// The engine's count of lost workers.
    lost: Arc<AtomicUsize>,
}

impl LaneWatch {
    pub(crate) fn new(route: RouteId, lane: usize, workers: usize, lost: Arc<AtomicUsize>) -> LaneWatch {
        LaneWatch { route, lane, live: AtomicUsize::new(workers), lost }
    }
}

/// Everything a worker needs; one per worker task.
pub(crate) struct Worker<E, H> {
    pub(crate) rx: Receiver<Routed<E>>,
    pub(crate) lane: Arc<LaneWatch>,
    pub(crate) handler: Arc<H>,
    pub(crate) retry: RetryPolicy,
    pub(crate) stop: Arc<Latch>,
    pub(crate) sink: Arc<RouteSink<E>>,
    pub(crate) telemetry: Arc<RouteTelemetry>,
    /// This worker's index in the route (its row of latency histograms).
    pub(crate) index: usize,
    /// The most events it takes at once.
    pub(crate) max_batch: usize,
}

/// A worker is dropped when it returns, when its task is aborted or its runtime drops it —
/// polled or not: an unstarted task drops its captured worker too — or when it unwinds; always
/// after its batch has reported every completion (the batch is a local of `run`, dropped before
/// `run`'s argument). It counts itself lost unless shutdown stopped it or its lane is closed with
/// nothing queued — which covers a worker that finished (it saw the lane closed and drained)
/// and one whose runtime stopped after the engine was dropped, before it woke to see the end. The lane's last worker closes the lane for good,
/// dead-lettering whatever is queued (`closed`, or `shutdown` past the drain deadline) and every
/// permit filled later.
impl<E, H> Drop for Worker<E, H> {
    fn drop(&mut self) {
        let stopped = self.stop.is_set();
        let done = self.rx.is_closed() && self.rx.is_empty();
        let watch = &self.lane;
        if !stopped && !done {
            watch.lost.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                route = watch.route.index(),
                lane = watch.lane,
                worker = self.index,
                "worker ended before its lane was drained (its runtime shut down, or it panicked)"
            );
        }
        if watch.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            let reason = if stopped { DeadLetterReason::Shutdown } else { DeadLetterReason::Closed };
            self.rx.abandon(reason);
        }
    }
}

impl<E: Send + Sync + 'static, H: Handler<E>> Worker<E, H> {
    pub(crate) async fn run(self) {
        // Dropped before `self`: the batch reports its completions before the lane can be
        // closed for good (see `Drop for Worker`).
        let mut batch = Batch {
            worker: &self,
            queue: VecDeque::with_capacity(self.max_batch),
            taken: Vec::with_capacity(self.max_batch),
            settle: Vec::with_capacity(self.max_batch),
            samples: Vec::with_capacity(self.max_batch),
        };
        let mut limit = 1;
        loop {
            let got = self.rx.recv_settling(&mut batch.taken, limit, &mut batch.settle).await;
            if got == 0 {
                break;
            }
            let dequeued_at = Instant::now();
            batch.queue.extend(batch.taken.drain(..));
            while let Some(delivery) = batch.queue.front() {
                let (completion, retries) = if self.stop.is_set() {
                    (Completion::DeadLettered(DeadLetterReason::Shutdown), 0)
                } else {
                    self.attempts(delivery, dequeued_at).await
                };
                let delivery = batch.queue.pop_front().expect("front exists");
                batch.finish(delivery, completion, retries, dequeued_at);
            }
            // One clock read per batch: a batch of more than one event took less than
            // BATCH_BUDGET last time, so its events' end-to-end times are taken at its end.
            let done_at = Instant::now();
            batch.record(done_at);
            limit = if done_at - dequeued_at < BATCH_BUDGET { (limit * 2).min(self.max_batch) } else { 1 };
        }
    }

    /// Runs attempts until one succeeds, fails for good, the retries or the deadline run out, or
    /// the engine stops. Returns the completion and the number of retries.
    async fn attempts(&self, d: &Delivery<Routed<E>>, dequeued_at: Instant) -> (Completion, u32) {
        // It may have waited behind the rest of its batch: no first attempt at or past the deadline.
        if d.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return (Completion::DeadLettered(DeadLetterReason::Expired), 0);
        }
        let mut attempt = 1;
        loop {
            let cx = HandlerContext {
                class: d.class,
                key: d.event.key,
                attempt,
                enqueued_at: enqueued_at(d, dequeued_at),
                dequeued_at,
                deadline: d.deadline,
            };
            let retries = attempt - 1;
            let failed = (Completion::DeadLettered(DeadLetterReason::HandlerFailed), retries);
            // `handle` itself runs inside `catch_panics` (lazily, in the async block), so a panic
            // in its synchronous body is contained as well as one in the future it returns.
            let attempt_fut = catch_panics(async { self.handler.handle(&d.event.event, cx).await });
            let outcome = match first(attempt_fut, self.stop.wait()).await {
                First::A(Ok(outcome)) => outcome,
                First::A(Err(panic)) => {
                    tracing::warn!(class = d.class.index(), attempt, %panic, "handler panicked; contained");
                    return (Completion::DeadLettered(DeadLetterReason::Panicked), retries);
                }
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

/// A worker's events from dequeue to reported completion. Dropped unfinished (the worker task
/// was aborted, or its runtime shut down), it dead-letters every event it still holds with
/// reason `shutdown` and reports every completion, so an event in flight is never lost silently.
struct Batch<'w, E, H> {
    worker: &'w Worker<E, H>,
    /// Taken, not yet completed, in scheduler order.
    queue: VecDeque<Delivery<Routed<E>>>,
    /// Filled by the receive, moved to `queue` at once.
    taken: Vec<Delivery<Routed<E>>>,
    /// Completions not yet reported: the next receive reports them under its lock.
    settle: Vec<Completed>,
    /// Latencies not yet recorded: recorded once per batch.
    samples: Vec<Sample>,
}

impl<E, H> Batch<'_, E, H> {
    fn finish(&mut self, d: Delivery<Routed<E>>, completion: Completion, retries: u32, dequeued_at: Instant) {
        let w = self.worker;
        self.settle.push(Completed { class: d.class, completion, retries });
        self.samples.push(Sample {
            class: d.class.index(),
            enqueued_at: enqueued_at(&d, dequeued_at),
            dequeued_at,
            completion,
            retries,
        });
        #[cfg(feature = "metrics")]
        w.telemetry.depth(d.class.index(), w.rx.len(d.class));
        if let Completion::DeadLettered(reason) = completion {
            tracing::debug!(class = d.class.index(), %reason, retries, "event dead-lettered after delivery");
            w.sink.dead_letter(DeadLetter { event: d.event, class: d.class, reason, enqueued_at: d.enqueued_at });
        }
    }

    fn record(&mut self, done_at: Instant) {
        self.worker.telemetry.record(self.worker.index, &mut self.samples, done_at);
    }
}

impl<E, H> Drop for Batch<'_, E, H> {
    fn drop(&mut self) {
        let now = Instant::now();
        let shutdown = Completion::DeadLettered(DeadLetterReason::Shutdown);
        let left: Vec<_> = self.queue.drain(..).chain(self.taken.drain(..)).collect();
        for d in left {
            self.finish(d, shutdown, 0, now);
        }
        for done in self.settle.drain(..) {
            self.worker.rx.complete(done.class, done.completion, done.retries);
        }
        self.record(now);
    }
}

/// The engine's queues record every enqueue time; the dequeue time stands in should one lack it.
fn enqueued_at<E>(d: &Delivery<E>, dequeued_at: Instant) -> Instant {
    d.enqueued_at.unwrap_or(dequeued_at)
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

/// Runs `f`, turning a panic in any of its polls into `Err`. The panic is contained: the
/// default panic hook stays silent for it (see [`contain`](crate::contain)); the caller logs it.
async fn catch_panics<F: Future>(f: F) -> Result<F::Output, Panic> {
    let mut f = pin!(f);
    poll_fn(|cx| match contain::call(AssertUnwindSafe(|| f.as_mut().poll(cx))) {
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(panic) => Poll::Ready(Err(panic)),
    })
    .await
}
