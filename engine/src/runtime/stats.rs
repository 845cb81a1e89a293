//! Per route and class numbers as the user reads them: the ledger (from the channel, exact),
//! queue depth, in-flight, and latency percentiles summarised from what
//! [`telemetry`](super::telemetry) recorded. Reads telemetry; telemetry knows nothing of it.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::telemetry::RouteTelemetry;
use crate::dead::DeadLetterReason;
use crate::ledger::ClassStats;

/// Percentiles of a latency distribution (zero when `count == 0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let q = |q: f64| Duration::from_micros(h.value_at_quantile(q));
        LatencySummary {
            count: h.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: Duration::from_micros(h.max()),
        }
    }
}

/// One class of one route.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteClassStats {
    /// The class's name.
    pub class: String,
    /// The ledger, summed over the route's lanes (each lane's snapshot is exact, so the sum is
    /// conserved too). Queue depth is `ledger.queued`, in-flight is `ledger.in_flight()`.
    pub ledger: ClassStats,
    /// Enqueue → dequeue, of events that reached a worker.
    pub sojourn: LatencySummary,
    /// Enqueue → completion (handled or failed), of events that reached a worker.
    pub end_to_end: LatencySummary,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteStats {
    /// The route's name.
    pub name: String,
    /// Its classes, most critical first.
    pub classes: Vec<RouteClassStats>,
}

impl RouteStats {
    pub(crate) fn new(
        name: &str,
        class_names: &[&str],
        ledgers: Vec<ClassStats>,
        telemetry: &RouteTelemetry,
    ) -> RouteStats {
        let classes = ledgers
            .into_iter()
            .enumerate()
            .map(|(k, ledger)| {
                let latencies = telemetry.latencies(k);
                let sojourn = LatencySummary::of(latencies.sojourn());
                let end_to_end = LatencySummary::of(latencies.end_to_end());
                RouteClassStats { class: class_names[k].to_string(), ledger, sojourn, end_to_end }
            })
            .collect();
        RouteStats { name: name.to_string(), classes }
    }

    /// The sum over the route's classes.
    pub fn total(&self) -> ClassStats {
        self.classes.iter().fold(ClassStats::default(), |mut t, c| {
            t += &c.ledger;
            t
        })
    }
}

/// Every route, in registration order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// The routes.
    pub routes: Vec<RouteStats>,
    /// Calls of the dead-letter sink that panicked. Each was contained: the dead letter is
    /// counted with its reason, the worker carried on.
    pub sink_panics: u64,
    /// Workers that ended without draining their lane before shutdown stopped them: their
    /// runtime shut down, or their task panicked outside the contained handler and sink calls.
    /// A lane whose last worker is lost is closed at once: its backlog is dead-lettered
    /// (`closed`) and later submits to it get their event back.
    pub workers_lost: usize,
}

impl EngineStats {
    /// One route by name.
    pub fn route(&self, name: &str) -> Option<&RouteStats> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// The sum over every route and class.
    pub fn total(&self) -> ClassStats {
        self.routes.iter().fold(ClassStats::default(), |mut t, r| {
            t += &r.total();
            t
        })
    }
}

/// What [`Engine::shutdown`](super::Engine::shutdown) did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether the workers finished every accepted event: nothing is queued or in flight, no
    /// event was ever dead-lettered by a shutdown's drain deadline (`shutdown`), and no worker
    /// was lost (see [`EngineStats::workers_lost`]). `false` means some events were
    /// dead-lettered instead (`shutdown` at the deadline, `closed` in a lane whose workers were
    /// gone).
    pub drained: bool,
    /// Events handled successfully, over the engine's life.
    pub handled: u64,
    /// Events handed back to their submitter (rejected, full or closed), over the engine's life.
    pub returned: u64,
    /// Dead letters by reason, over the engine's life; reasons with none are left out.
    pub dead_lettered: Vec<(DeadLetterReason, u64)>,
    /// The final numbers.
    pub stats: EngineStats,
}

impl ShutdownReport {
    pub(crate) fn new(stats: EngineStats) -> ShutdownReport {
        let t = stats.total();
        let cut_short = t.dead(DeadLetterReason::Shutdown) > 0;
        let drained = stats.workers_lost == 0 && !cut_short && t.queued == 0 && t.in_flight() == 0;
        let dead_lettered = DeadLetterReason::ALL.into_iter().map(|r| (r, t.dead(r))).filter(|(_, n)| *n > 0).collect();
        ShutdownReport { drained, handled: t.handled, returned: t.rejected(), dead_lettered, stats }
    }

    /// Dead letters with `reason`.
    pub fn dead(&self, reason: DeadLetterReason) -> u64 {
        self.dead_lettered.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
    }
}
