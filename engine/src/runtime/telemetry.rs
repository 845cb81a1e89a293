//! What a route records as events pass: latency histograms for `stats()` always
//! (hdrhistogram, microseconds, 2 significant digits — values within 1% — up to one hour), and
//! with the `metrics` feature the same numbers through the `metrics` facade. Handles are
//! registered once per route and class when the engine is built, so recording allocates nothing.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::config::Config;
use crate::dead::DeadLetterReason;
use crate::ledger::Completion;

const MAX_MICROS: u64 = 3_600_000_000;

/// Sojourn (enqueue → dequeue) and end-to-end (enqueue → completion) histograms of one class.
#[derive(Debug)]
pub(crate) struct Latencies {
    sojourn: Histogram<u64>,
    end_to_end: Histogram<u64>,
}

impl Latencies {
    fn new() -> Latencies {
        let h = || Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("valid histogram bounds");
        Latencies { sojourn: h(), end_to_end: h() }
    }

    fn record(&mut self, sojourn: Duration, end_to_end: Duration) {
        let micros = |d: Duration| (d.as_micros() as u64).clamp(1, MAX_MICROS);
        self.sojourn.saturating_record(micros(sojourn));
        self.end_to_end.saturating_record(micros(end_to_end));
    }

    fn add(&mut self, other: &Latencies) {
        // Same bounds on both sides: adding cannot fail.
        self.sojourn.add(&other.sojourn).expect("same histogram bounds");
        self.end_to_end.add(&other.end_to_end).expect("same histogram bounds");
    }

    /// Enqueue → dequeue, in microseconds.
    pub(crate) fn sojourn(&self) -> &Histogram<u64> {
        &self.sojourn
    }

    /// Enqueue → completion, in microseconds.
    pub(crate) fn end_to_end(&self) -> &Histogram<u64> {
        &self.end_to_end
    }
}

/// One completed event's numbers, buffered by its worker and recorded once per batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) class: usize,
    pub(crate) enqueued_at: Instant,
    pub(crate) dequeued_at: Instant,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) completion: Completion,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) retries: u32,
}

/// One route's recorders.
#[derive(Debug)]
pub(crate) struct RouteTelemetry {
    /// One row per worker, one histogram pair per class in a row. A worker locks only its own
    /// row, once per batch; `stats()` merges the rows.
    latencies: Box<[Mutex<Box<[Latencies]>>]>,
    #[cfg(feature = "metrics")]
    metrics: Box<[metrics_impl::ClassMetrics]>,
}

impl RouteTelemetry {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(route: &str, classes: &Config, workers: usize) -> RouteTelemetry {
        RouteTelemetry {
            latencies: (0..workers)
                .map(|_| Mutex::new((0..classes.len()).map(|_| Latencies::new()).collect()))
                .collect(),
            #[cfg(feature = "metrics")]
            metrics: classes.classes().iter().map(|c| metrics_impl::ClassMetrics::new(route, &c.name)).collect(),
        }
    }

    /// A worker's batch of completed events, done at `done_at`: latencies, outcomes, retries.
    /// Empties `samples`.
    pub(crate) fn record(&self, worker: usize, samples: &mut Vec<Sample>, done_at: Instant) {
        if samples.is_empty() {
            return;
        }
        let mut row = self.latencies[worker].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in samples.drain(..) {
            let sojourn = s.dequeued_at.saturating_duration_since(s.enqueued_at);
            let end_to_end = done_at.saturating_duration_since(s.enqueued_at);
            row[s.class].record(sojourn, end_to_end);
            #[cfg(feature = "metrics")]
            self.metrics[s.class].completed(sojourn, end_to_end, s.completion, s.retries);
        }
    }

    /// A dead letter of this route, whatever produced it: called by `RouteSink` only.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn dead_lettered(&self, class: usize, reason: DeadLetterReason) {
        #[cfg(feature = "metrics")]
        self.metrics[class].dead_lettered(reason);
    }

    /// A submission handed back to its caller.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn returned(&self, class: usize) {
        #[cfg(feature = "metrics")]
        self.metrics[class].returned.increment(1);
    }

    /// The class's queue depth, observed by a worker.
    #[cfg(feature = "metrics")]
    pub(crate) fn depth(&self, class: usize, depth: usize) {
        self.metrics[class].queue_depth.set(depth as f64);
    }

    /// `class`'s latencies over every worker.
    pub(crate) fn latencies(&self, class: usize) -> Latencies {
        let mut total = Latencies::new();
        for row in self.latencies.iter() {
            total.add(&row.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[class]);
        }
        total
    }
}

#[cfg(feature = "metrics")]
mod metrics_impl {
    use std::time::Duration;

    use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

    use crate::dead::DeadLetterReason;
    use crate::ledger::Completion;

    #[derive(Debug)]
    pub(super) struct ClassMetrics {
        handled: Counter,
        dead: [Counter; 7],
        retries: Counter,
        pub(super) returned: Counter,
        sojourn: Histogram,
        end_to_end: Histogram,
        pub(super) queue_depth: Gauge,
    }

    impl ClassMetrics {
        pub(super) fn new(route: &str, class: &str) -> ClassMetrics {
            let labels = [("route", route.to_string()), ("class", class.to_string())];
            ClassMetrics {
                handled: counter!("veltrix_events_handled_total", &labels),
                dead: DeadLetterReason::ALL.map(|r| {
                    let mut l = labels.to_vec();
                    l.push(("reason", r.to_string()));
                    counter!("veltrix_events_dead_lettered_total", &l)
                }),
                retries: counter!("veltrix_retries_total", &labels),
                returned: counter!("veltrix_events_returned_total", &labels),
                sojourn: histogram!("veltrix_sojourn_seconds", &labels),
                end_to_end: histogram!("veltrix_end_to_end_seconds", &labels),
                queue_depth: gauge!("veltrix_queue_depth_events", &labels),
            }
        }

        pub(super) fn dead_lettered(&self, reason: DeadLetterReason) {
            if let Some(i) = DeadLetterReason::ALL.iter().position(|r| *r == reason) {
                self.dead[i].increment(1);
            }
        }

        pub(super) fn completed(&self, sojourn: Duration, end_to_end: Duration, completion: Completion, retries: u32) {
            self.sojourn.record(sojourn.as_secs_f64());
            self.end_to_end.record(end_to_end.as_secs_f64());
            self.retries.increment(u64::from(retries));
            match completion {
                Completion::Handled => self.handled.increment(1),
                // Counted when the worker hands the letter to the route's sink (`RouteSink`).
                Completion::DeadLettered(_) => {}
            }
        }
    }
}
