//! `check-config`: the classic pitfalls of a static Veltrix configuration, flagged before they
//! bite, each with the numbers behind it.
//!
//! The check takes an engine [`Config`], the load it should carry (each class's offered rate,
//! the mean service time and the number of workers) and, optionally, a memory budget. It works
//! out the service rate each class gets when the server is saturated — the allocation the
//! scheduler converges to: under `Strict` each class in order takes what it asks for; under `Drr`
//! a class asking for less than its weighted share gets what it asks for and the rest is shared
//! again by weight (max-min fairness); under `CappedStrict` the tier gets up to its cap first,
//! the other classes share the rest by DRR, and the tier takes whatever they leave — and flags:
//!
//! | pitfall | when | what happens (shown by `sim/tests/pitfalls.rs`) |
//! |---|---|---|
//! | [`Pitfall::QueueOutlivesDeadline`] | a full queue takes longer to drain at the class's saturated rate than its deadline: `capacity / rate > deadline` | the tail of the queue expires unserved |
//! | [`Pitfall::ShareBelowLoad`] | the class offers more than its saturated rate | the excess is refused or shed |
//! | [`Pitfall::UncappedStrictTier`] | `Strict` scheduling with more than one class | the top class, once it asks for the whole server, starves every other class |
//! | [`Pitfall::CodelBelowService`] | a CoDel target below the mean service time | CoDel sheds at loads with no overload at all |
//! | [`Pitfall::MemoryOverBudget`] | Σ capacity × bytes per event above the stated budget | a full engine holds more than the budget |

use std::fmt;
use std::time::Duration;

use veltrix_engine::{Config, SchedulerMode};

use crate::scenario::{Scenario, SystemDef};

/// The load a configuration should carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// Offered events per second, per class (most critical first).
    pub rates_per_s: Vec<f64>,
    /// The handlers' mean service time.
    pub service_mean: Duration,
    /// Concurrent handlers.
    pub workers: u32,
    /// Each class's deadline where the configuration gives none (a client's timeout, say).
    pub deadlines: Vec<Option<Duration>>,
}

/// A memory budget for the queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The most bytes the queues may hold.
    pub bytes: u64,
    /// Bytes one queued event takes (the event and its entry).
    pub event_bytes: u64,
}

/// A pitfall found, with its numbers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Pitfall {
    /// A full queue takes longer to drain than the class's deadline.
    QueueOutlivesDeadline {
        /// The class.
        class: String,
        /// Its capacity.
        capacity: usize,
        /// The rate it is served at when saturated (events/s).
        rate_per_s: f64,
        /// How long a full queue takes to drain at that rate.
        drain: Duration,
        /// Its deadline.
        deadline: Duration,
    },
    /// The class offers more than it is served at when the server is saturated.
    ShareBelowLoad {
        /// The class.
        class: String,
        /// Its offered rate (events/s).
        offered_per_s: f64,
        /// The rate it gets (events/s).
        served_per_s: f64,
    },
    /// Strict priority over several classes: the classes below the top have no starvation bound.
    UncappedStrictTier {
        /// The top class.
        class: String,
        /// Its offered load as a fraction of the server.
        load: f64,
    },
    /// A CoDel target below the mean service time.
    CodelBelowService {
        /// The class.
        class: String,
        /// Its CoDel target.
        target: Duration,
        /// The mean service time.
        service_mean: Duration,
    },
    /// The queues, full, hold more than the budget.
    MemoryOverBudget {
        /// Events the queues hold when full.
        events: u64,
        /// Their bytes.
        bytes: u64,
        /// The budget.
        budget: u64,
    },
}

impl fmt::Display for Pitfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pitfall::QueueOutlivesDeadline { class, capacity, rate_per_s, drain, deadline } => write!(
                f,
                "{class}: a full queue of {capacity} drains in {drain:.1?} at the {rate_per_s:.0}/s it gets when \
                 the server is saturated, past its {deadline:?} deadline: its tail expires unserved. A capacity of \
                 {} or less drains in time",
                (rate_per_s * deadline.as_secs_f64()).floor()
            ),
            Pitfall::ShareBelowLoad { class, offered_per_s, served_per_s } => write!(
                f,
                "{class}: offers {offered_per_s:.0}/s but gets {served_per_s:.0}/s when the server is saturated: \
                 {:.0}/s will be refused or shed. Raise its weight, or cut its load",
                offered_per_s - served_per_s
            ),
            Pitfall::UncappedStrictTier { class, load } => write!(
                f,
                "strict priority: {class} (offering {:.0} % of the server) is served whatever the others wait, so \
                 once it asks for the whole server the classes below it get nothing (no starvation bound). Use \
                 CappedStrict",
                load * 100.0
            ),
            Pitfall::CodelBelowService { class, target, service_mean } => write!(
                f,
                "{class}: CoDel target {target:?} is below the mean service time {service_mean:?}: an event behind \
                 a single other one already waits longer, so CoDel sheds without any overload"
            ),
            Pitfall::MemoryOverBudget { events, bytes, budget } => write!(
                f,
                "the queues hold {events} events when full, {bytes} bytes, above the budget of {budget} bytes"
            ),
        }
    }
}

/// Each class's service rate as a fraction of the server when it is saturated, for `demand`
/// (each class's offered load as a fraction of the server; `f64::INFINITY` for "backlogged").
pub fn saturated_shares(config: &Config, demand: &[f64]) -> Vec<f64> {
    let weights: Vec<f64> = config.classes().iter().map(|c| f64::from(c.weight)).collect();
    let mut alloc = vec![0.0; demand.len()];
    match config.scheduler() {
        SchedulerMode::Strict => {
            let mut left = 1.0f64;
            for (a, &d) in alloc.iter_mut().zip(demand) {
                *a = d.min(left);
                left -= *a;
            }
        }
        SchedulerMode::CappedStrict { cap, .. } => {
            let tier = demand[0].min(cap);
            let rest: Vec<usize> = (1..demand.len()).collect();
            let left = fill(&rest, &weights, demand, 1.0 - tier, &mut alloc);
            alloc[0] = demand[0].min(tier + left);
        }
        // `Drr`, and (`SchedulerMode` is non-exhaustive) a mode added later, judged as plain DRR
        // until this learns it.
        _ => {
            let all: Vec<usize> = (0..demand.len()).collect();
            fill(&all, &weights, demand, 1.0, &mut alloc);
        }
    }
    alloc
}

/// Max-min fair (weighted) allocation of `capacity` over `classes`; returns what is left.
fn fill(classes: &[usize], weights: &[f64], demand: &[f64], capacity: f64, alloc: &mut [f64]) -> f64 {
    let mut active: Vec<usize> = classes.to_vec();
    let mut left = capacity;
    loop {
        let total: f64 = active.iter().map(|&k| weights[k]).sum();
        if active.is_empty() || total == 0.0 {
            return left;
        }
        let satisfied: Vec<usize> =
            active.iter().copied().filter(|&k| demand[k] <= left * weights[k] / total).collect();
        if satisfied.is_empty() {
            for &k in &active {
                alloc[k] = left * weights[k] / total;
            }
            return 0.0;
        }
        for &k in &satisfied {
            alloc[k] = demand[k];
            left -= demand[k];
        }
        active.retain(|k| !satisfied.contains(k));
    }
}

/// The pitfalls of `config` under `load` (and `budget`, if given), in the order of the table above.
///
/// # Panics
///
/// If `load` does not give one rate and one deadline per class.
pub fn check(config: &Config, load: &Load, budget: Option<Budget>) -> Vec<Pitfall> {
    let n = config.len();
    assert!(load.rates_per_s.len() == n && load.deadlines.len() == n, "one rate and one deadline per class");
    let service = load.service_mean.as_secs_f64();
    let mu = f64::from(load.workers) / service;
    let demand: Vec<f64> = load.rates_per_s.iter().map(|r| r / mu).collect();
    let served = saturated_shares(config, &demand);
    let mut found = Vec::new();
    for (k, class) in config.classes().iter().enumerate() {
        let Some(deadline) = class.deadline.or(load.deadlines[k]) else { continue };
        // This class backlogged, the others at their offered loads.
        let mut backlogged = demand.clone();
        backlogged[k] = f64::INFINITY;
        let rate = saturated_shares(config, &backlogged)[k] * mu;
        let drain = if rate > 0.0 { class.capacity as f64 / rate } else { f64::INFINITY };
        if drain > deadline.as_secs_f64() {
            found.push(Pitfall::QueueOutlivesDeadline {
                class: class.name.clone(),
                capacity: class.capacity,
                rate_per_s: rate,
                drain: Duration::try_from_secs_f64(drain).unwrap_or(Duration::MAX),
                deadline,
            });
        }
    }
    for (k, class) in config.classes().iter().enumerate() {
        // A hair of slack: a class offered exactly its share is not over it.
        if load.rates_per_s[k] > served[k] * mu * (1.0 + 1e-9) {
            found.push(Pitfall::ShareBelowLoad {
                class: class.name.clone(),
                offered_per_s: load.rates_per_s[k],
                served_per_s: served[k] * mu,
            });
        }
    }
    if config.scheduler() == SchedulerMode::Strict && n > 1 {
        found.push(Pitfall::UncappedStrictTier { class: config.classes()[0].name.clone(), load: demand[0] });
    }
    for class in config.classes() {
        if let Some(codel) = class.codel
            && codel.target < load.service_mean
        {
            found.push(Pitfall::CodelBelowService {
                class: class.name.clone(),
                target: codel.target,
                service_mean: load.service_mean,
            });
        }
    }
    if let Some(b) = budget {
        let events: u64 = config.classes().iter().map(|c| c.capacity as u64).sum();
        let bytes = events.saturating_mul(b.event_bytes);
        if bytes > b.bytes {
            found.push(Pitfall::MemoryOverBudget { events, bytes, budget: b.bytes });
        }
    }
    found
}

/// [`check`] for a scenario: the configuration of its `veltrix` system named `system` (or its
/// only static one), under the scenario's load — each class's highest offered rate (its base
/// rate or a step's), its mean service time and workers, each class's deadline (with the
/// client's timeout) — and `budget` as `(bytes, bytes per event)`.
///
/// # Errors
///
/// A message if the scenario has no such system, or the system is adaptive (the controller sizes
/// its limits itself).
pub fn check_scenario(
    scenario: &Scenario,
    system: Option<&str>,
    budget: Option<(u64, u64)>,
) -> Result<Vec<Pitfall>, String> {
    let veltrix: Vec<&SystemDef> = scenario.systems.iter().filter(|s| matches!(s, SystemDef::Veltrix { .. })).collect();
    let chosen = match system {
        Some(name) => veltrix.iter().find(|s| s.name() == name).copied().ok_or_else(|| {
            let names: Vec<&str> = veltrix.iter().map(|s| s.name()).collect();
            format!("no `veltrix` system `{name}` (there are: {})", names.join(", "))
        })?,
        None => match veltrix.as_slice() {
            [only] => only,
            [] => return Err("the scenario has no `veltrix` system".into()),
            many => {
                let names: Vec<&str> = many.iter().map(|s| s.name()).collect();
                return Err(format!("several `veltrix` systems ({}): name one with --system", names.join(", ")));
            }
        },
    };
    if matches!(chosen, SystemDef::Veltrix { adaptive: Some(_), .. }) {
        return Err(format!(
            "`{}` is adaptive: its controller sizes the limits, there is nothing static to check",
            chosen.name()
        ));
    }
    let config = chosen
        .engine_config(&scenario.class_names())
        .expect("a veltrix system")
        .map_err(|e| format!("`{}`: {e}", chosen.name()))?;
    let classes = scenario.classes.get_ref();
    let rates_per_s = classes
        .iter()
        .map(|c| c.arrivals.steps.iter().map(|s| s.rate_per_s.0).fold(c.arrivals.rate_per_s.0, f64::max))
        .collect();
    let deadlines = scenario.useful_within_ns().into_iter().map(|d| d.map(Duration::from_nanos)).collect();
    let load = Load {
        rates_per_s,
        service_mean: Duration::from_secs_f64(scenario.mean_service_ms() / 1e3),
        workers: scenario.workers,
        deadlines,
    };
    Ok(check(&config, &load, budget.map(|(bytes, event_bytes)| Budget { bytes, event_bytes })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use veltrix_engine::ClassSpec;

    fn config(weights: &[u32], mode: SchedulerMode) -> Config {
        let b = weights
            .iter()
            .enumerate()
            .fold(Config::builder(), |b, (k, &w)| b.class(ClassSpec::new(format!("c{k}"), 10).with_weight(w)));
        b.scheduler(mode).build().unwrap()
    }

    #[test]
    fn saturated_shares_follow_each_scheduler() {
        let inf = f64::INFINITY;
        // DRR 1:4: B asks 0.5 of its 0.8, A gets the rest; both backlogged: 0.2 / 0.8.
        let drr = config(&[1, 4], SchedulerMode::Drr);
        assert_eq!(saturated_shares(&drr, &[0.7, 0.5]), [0.5, 0.5]);
        assert_eq!(saturated_shares(&drr, &[inf, inf]), [0.2, 0.8]);
        // Strict: in order.
        let strict = config(&[1, 1, 1], SchedulerMode::Strict);
        assert_eq!(saturated_shares(&strict, &[0.6, 0.6, 0.1]), [0.6, 0.4, 0.0]);
        // Capped at 0.5: the tier's excess waits; what the others leave goes back to it.
        let capped = config(&[1, 1], SchedulerMode::CappedStrict { cap: 0.5, window: 16 });
        assert_eq!(saturated_shares(&capped, &[inf, 0.2]), [0.8, 0.2]);
        assert_eq!(saturated_shares(&capped, &[inf, inf]), [0.5, 0.5]);
    }
}
