//! Convergence after a change: how long a system takes to hold a queueing-delay target again
//! once the load or the capacity moves, and how steady it is afterwards.
//!
//! A scenario with `[convergence]` names the target `T` (and optionally a target of their own
//! for some classes; each wait is then judged against its class's target, so the p99 below is
//! that of `wait / T_class`, against 1.25). Its *changes* are the instants where
//! the offered load or the capacity moves: the start and end of each arrival step and capacity
//! drop, and the start of a service-time drift. For each change `c`, up to the next change (or
//! the end of the offered load), the segment is cut into steps of 10 S̄ from `c` on, and the
//! system has **converged** at the first step `i` from which
//! - every run of 500 consecutive service starts (sliding by 50) from step `i` on has a p99
//!   queueing delay (send to start of service) of at most 1.25 × `T`, and
//! - over the steps `j ≥ i` together, goodput (answers within the class deadline, by the time
//!   they were sent) is at least 90 % of the lesser of the fresh load and the capacity
//!   (workers × step / S̄ × the capacity factor at the step's middle), summed per step,
//!
//! with at least one run left to judge (a segment with fewer than 500 starts is one run of all of
//! them, if it has at least 100; with fewer it never converges). The p99 is taken over runs of a
//! fixed count, not
//! a fixed time, so that it is the fifth-largest wait however slow the service has become (the
//! p99 of a few dozen waits is their maximum, which the natural bursts of a stable queue
//! exceed). The **convergence time** is `i × 10` S̄; none if no such step exists. The
//! **coefficient of variation** after convergence is that of the handled events per window of
//! 200 S̄ divided by that window's reference (the lesser of load and capacity): normalised, so a
//! drifting capacity is not counted as oscillation, and long enough that the counting noise of
//! exponential service (1/√n) stays near 0.05.

use serde::Serialize;

use crate::report::round3;
use crate::run::SystemRun;
use crate::scenario::Scenario;
use crate::theory::quantile;
use crate::workload::Arrival;

/// The step, in S̄.
const STEP_SBAR: f64 = 10.0;
/// Service starts per run judged for the p99.
const RUN: usize = 500;
/// The fewest starts a segment needs to be judged at all.
const MIN_RUN: usize = 100;
/// Steps per window of the coefficient of variation (200 S̄).
const CV_STEPS: usize = 20;

/// Convergence of one system after each change of its scenario.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Convergence {
    /// The queueing delay judged (ms).
    pub target_delay_ms: f64,
    /// Classes judged against a target of their own: `(class, ms)`.
    pub class_targets_ms: Vec<(String, f64)>,
    /// One per change, in time order.
    pub changes: Vec<Change>,
}

/// One change and how the system met it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    /// When (s).
    pub at_s: f64,
    /// What changed.
    pub what: String,
    /// Time from the change until converged, in units of S̄; `None`: never in this segment.
    pub converged_after_sbar: Option<f64>,
    /// Coefficient of variation of the handled rate after convergence; `None` if never
    /// converged or fewer than two blocks were left.
    pub cv_after: Option<f64>,
}

impl Convergence {
    /// The longest convergence time over the changes (S̄); infinite if one never converged.
    pub fn worst_sbar(&self) -> f64 {
        self.changes.iter().map(|c| c.converged_after_sbar.unwrap_or(f64::INFINITY)).fold(0.0, f64::max)
    }

    /// The largest coefficient of variation after convergence; infinite if a change never
    /// converged with enough of its segment left to measure it.
    pub fn worst_cv(&self) -> f64 {
        self.changes.iter().map(|c| c.cv_after.unwrap_or(f64::INFINITY)).fold(0.0, f64::max)
    }
}

/// The changes of `scenario` in time order: `(at_s, what)`.
pub fn changes(scenario: &Scenario) -> Vec<(f64, String)> {
    let f = &scenario.faults;
    let mut all: Vec<(f64, String)> = Vec::new();
    for c in scenario.classes.get_ref() {
        for s in &c.arrivals.steps {
            let name = c.name.get_ref();
            all.push((s.from_s.0, format!("{name} to {} /s", s.rate_per_s.0)));
            all.push((s.to_s.0, format!("{name} back to {} /s", c.arrivals.rate_per_s.0)));
        }
    }
    for d in &f.capacity_drop {
        all.push((d.from_s.0, format!("capacity × {}", d.factor.0)));
        all.push((d.to_s.0, "capacity restored".into()));
    }
    for d in &f.service_drift {
        all.push((d.from_s.0, format!("service time drifting to × {} by {} s", d.factor.0, d.to_s.0)));
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Two changes at one instant are one change.
    all.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1 = format!("{}; {}", a.1, b.1);
            true
        } else {
            false
        }
    });
    all.retain(|(at, _)| *at < scenario.duration_s.0);
    all
}

/// The convergence of `run`, or `None` when the scenario has no `[convergence]`.
pub fn measure(scenario: &Scenario, schedule: &[Arrival], run: &SystemRun) -> Option<Convergence> {
    let def = scenario.convergence.as_ref()?;
    let targets_ns: Vec<f64> = def.targets_ms(&scenario.class_names()).iter().map(|t| t * 1e6).collect();
    let sbar_ns = scenario.mean_service_ms() * 1e6;
    let step_ns = STEP_SBAR * sbar_ns;
    let end_ns = scenario.duration_s.0 * 1e9;
    let list = changes(scenario);
    let changes = list
        .iter()
        .enumerate()
        .map(|(i, (at, what))| {
            let from = at * 1e9;
            let to = list.get(i + 1).map_or(end_ns, |n| n.0 * 1e9);
            let steps = ((to - from) / step_ns).floor() as usize;
            let step_of = |t: u64| {
                let t = t as f64;
                (t >= from && t < from + steps as f64 * step_ns).then(|| ((t - from) / step_ns) as usize)
            };
            let (mut good, mut handled, mut fresh) = (vec![0u64; steps], vec![0u64; steps], vec![0u64; steps]);
            // (time, step, wait / class target) of every service start in the segment, in start order.
            let mut starts: Vec<(u64, usize, f64)> = Vec::new();
            for c in &run.completions {
                if let Some(j) = step_of(c.start_ns) {
                    starts.push((c.start_ns, j, (c.start_ns - c.arrival_ns) as f64 / targets_ns[c.class as usize]));
                }
                if let Some(j) = step_of(c.done_ns) {
                    handled[j] += 1;
                }
                if c.good
                    && let Some(j) = step_of(c.arrival_ns)
                {
                    good[j] += 1;
                }
            }
            starts.sort_by_key(|s| s.0);
            for a in schedule {
                if let Some(j) = step_of(a.at_ns) {
                    fresh[j] += 1;
                }
            }
            let reference: Vec<f64> = (0..steps)
                .map(|j| {
                    let mid_s = (from + (j as f64 + 0.5) * step_ns) / 1e9;
                    let capacity =
                        f64::from(scenario.workers) * step_ns / sbar_ns * scenario.faults.capacity_factor(mid_s);
                    capacity.min(fresh[j] as f64)
                })
                .collect();
            // The runs of RUN starts (sliding by a tenth, and the last one), each with the step
            // of its first start and whether it holds the delay.
            let mut runs: Vec<(usize, bool)> = Vec::new();
            // A short segment is judged as one run of all its starts (at least MIN_RUN).
            let run_len = RUN.min(starts.len());
            if run_len >= MIN_RUN {
                let last = starts.len() - run_len;
                let firsts = (0..=last).step_by(run_len / 10).chain(std::iter::once(last));
                for e in firsts {
                    let waits: Vec<f64> = starts[e..e + run_len].iter().map(|s| s.2).collect();
                    runs.push((starts[e].1, quantile(&waits, 0.99) <= 1.25));
                }
            }
            let converged = (0..steps).find(|&i| {
                let mut judged = runs.iter().filter(|r| r.0 >= i).peekable();
                judged.peek().is_some()
                    && judged.all(|r| r.1)
                    && good[i..].iter().sum::<u64>() as f64 >= 0.9 * reference[i..].iter().sum::<f64>()
            });
            let cv_after = converged.and_then(|i| {
                let ratios: Vec<f64> = handled[i..]
                    .chunks_exact(CV_STEPS)
                    .zip(reference[i..].chunks_exact(CV_STEPS))
                    .map(|(h, r)| h.iter().sum::<u64>() as f64 / r.iter().sum::<f64>().max(1.0))
                    .collect();
                (ratios.len() >= 2).then(|| round3(cv(&ratios)))
            });
            Change {
                at_s: *at,
                what: what.clone(),
                converged_after_sbar: converged.map(|i| round3(i as f64 * step_ns / sbar_ns)),
                cv_after,
            }
        })
        .collect();
    let class_targets_ms = def.class.iter().map(|c| (c.name.get_ref().clone(), c.target_delay_ms.0)).collect();
    Some(Convergence { target_delay_ms: def.target_delay_ms.0, class_targets_ms, changes })
}

fn cv(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if mean == 0.0 {
        return 0.0;
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    var.sqrt() / mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_in_time_order_and_one_instant_is_one_change() {
        let src = r#"
schema = 1
name = "t"
duration_s = 30
service = { kind = "exponential", mean_ms = 10 }
[faults]
capacity_drop = [{ from_s = 10, to_s = 20, factor = 0.5 }]
service_drift = [{ from_s = 25, to_s = 29, factor = 2 }]
[[class]]
name = "A"
arrivals = { kind = "poisson", rate_per_s = 10, steps = [{ from_s = 5, to_s = 20, rate_per_s = 30 }] }
"#;
        let s = Scenario::parse_experiment(src, "t.toml").unwrap();
        let got: Vec<(f64, String)> = changes(&s);
        let want = [
            (5.0, "A to 30 /s"),
            (10.0, "capacity × 0.5"),
            (20.0, "A back to 10 /s; capacity restored"),
            (25.0, "service time drifting to × 2 by 29 s"),
        ];
        assert_eq!(got, want.map(|(t, w)| (t, w.to_string())));
    }

    #[test]
    fn the_coefficient_of_variation_is_the_sample_one() {
        assert_eq!(cv(&[10.0, 10.0, 10.0]), 0.0);
        // mean 10, sample σ = √((4 + 4) / 1) = 2.83.
        assert!((cv(&[8.0, 12.0]) - 0.2828).abs() < 1e-3);
    }
}
