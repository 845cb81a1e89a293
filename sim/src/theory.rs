//! Queueing theory the simulator must reproduce: M/G/1 FIFO (Pollaczek–Khinchine: M/M/1 and
//! M/D/1), non-preemptive strict priority (Cobham), the M/M/1 sojourn quantile, and Little's
//! law per class — each compared with the measurement's batch-means 95% confidence interval.
//! The predictions are computed from the scenario's parameters, so any eligible scenario is
//! checked, not only the shipped one.

use serde::Serialize;

use crate::run::SystemRun;
use crate::scenario::{ArrivalKind, Scenario, SchedulerDef, Service, SystemDef};

/// Batches for batch means.
pub const BATCHES: usize = 20;
/// Student's t, 97.5% quantile, 19 degrees of freedom: the 95% interval's factor.
pub const T_19: f64 = 2.093;
/// Student's t, 99.95% quantile, 19 degrees of freedom: the 99.9% interval's factor.
pub const T_19_999: f64 = 3.883;

/// A measured mean with its 95% confidence half-width.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Estimate {
    /// The mean of the batch means.
    pub mean: f64,
    /// Half-width of the 95% interval.
    pub half_width: f64,
}

impl Estimate {
    /// Batch means over `samples` (in time order).
    pub fn batch_means(samples: &[f64], stat: impl Fn(&[f64]) -> f64) -> Option<Estimate> {
        let per = samples.len() / BATCHES;
        if per < 10 {
            return None;
        }
        let means: Vec<f64> = samples.chunks_exact(per).take(BATCHES).map(&stat).collect();
        Estimate::of_windows(&means)
    }

    /// Sectioning, for a statistic that is not a mean (a quantile): the point estimate from
    /// all samples, the interval from the spread of the per-batch values. The mean of batch
    /// quantiles is biased (low, for an upper quantile of correlated waits); this is not.
    pub fn sectioning(samples: &[f64], stat: impl Fn(&[f64]) -> f64) -> Option<Estimate> {
        let batches = Estimate::batch_means(samples, &stat)?;
        Some(Estimate { mean: stat(samples), half_width: batches.half_width })
    }

    /// The mean and interval of `BATCHES` window means (`None` without them).
    pub fn of_windows(means: &[f64]) -> Option<Estimate> {
        if means.len() != BATCHES {
            return None;
        }
        let mean = means.iter().sum::<f64>() / BATCHES as f64;
        let var = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (BATCHES - 1) as f64;
        Some(Estimate { mean, half_width: T_19 * (var / BATCHES as f64).sqrt() })
    }

    /// Whether `x` lies inside the interval.
    pub fn contains(&self, x: f64) -> bool {
        (self.mean - x).abs() <= self.half_width
    }
}

/// One theory-versus-measurement line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TheoryCheck {
    /// The system.
    pub system: String,
    /// The class (or `all`).
    pub class: String,
    /// What is compared, e.g. `mean sojourn (M/M/1)`.
    pub quantity: String,
    /// Theory, in units of S̄ (or events, for Little's law).
    pub theory: f64,
    /// Measured, same unit.
    pub measured: Estimate,
    /// Theory inside the interval.
    pub holds: bool,
}

/// Why a scenario's system is not eligible, or the checks.
pub fn check(scenario: &Scenario, runs: &[SystemRun]) -> Vec<TheoryCheck> {
    let mut out = Vec::new();
    if !eligible(scenario) {
        return out;
    }
    let sbar_ns = scenario.mean_service_ms() * 1e6;
    let second_moment = match scenario.service {
        Service::Exponential { mean_ms } => 2.0 * (mean_ms.0 * 1e6).powi(2),
        Service::Deterministic { mean_ms } => (mean_ms.0 * 1e6).powi(2),
        _ => return out,
    };
    let rates: Vec<f64> = scenario.classes.get_ref().iter().map(|c| c.arrivals.rate_per_s.0 / 1e9).collect();
    let lambda: f64 = rates.iter().sum();
    let rho = lambda * sbar_ns;
    if rho >= 1.0 {
        return out;
    }
    let warmup_ns = (scenario.warmup_s.0 * 1e9) as u64;
    let names = scenario.class_names();
    for (run, def) in runs.iter().zip(&scenario.systems) {
        let sojourn = |class: Option<u8>| -> Vec<f64> {
            run.completions
                .iter()
                .filter(|c| c.arrival_ns >= warmup_ns && class.is_none_or(|k| c.class == k))
                .map(|c| (c.done_ns - c.arrival_ns) as f64 / sbar_ns)
                .collect()
        };
        let mut push = |class: &str, quantity: &str, theory: f64, measured: Option<Estimate>| {
            if let Some(m) = measured {
                out.push(TheoryCheck {
                    system: run.name.clone(),
                    class: class.to_string(),
                    quantity: quantity.to_string(),
                    theory,
                    holds: m.contains(theory),
                    measured: m,
                });
            }
        };
        let fifo = matches!(def, SystemDef::NaiveFifo { .. })
            || matches!(def, SystemDef::Fifo { capacity, .. } if f64::from(*capacity) > 50.0 / (1.0 - rho));
        let strict = matches!(def, SystemDef::Veltrix { scheduler: SchedulerDef::Strict, deadlines: false, .. });
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
        // Pollaczek–Khinchine: W = S̄ + λ E[S²] / (2 (1 − ρ)).
        let w_fifo = 1.0 + lambda * second_moment / (2.0 * (1.0 - rho)) / sbar_ns;
        let model = if matches!(scenario.service, Service::Exponential { .. }) { "M/M/1" } else { "M/D/1" };
        if fifo {
            let all = sojourn(None);
            push("all", &format!("mean sojourn ({model})"), w_fifo, Estimate::batch_means(&all, mean));
            if model == "M/M/1" {
                // Sojourn is exponential with rate μ − λ: the p-quantile is −ln(1 − p) S̄ / (1 − ρ).
                let p99 = -(0.01f64).ln() / (1.0 - rho);
                push("all", "p99 sojourn (M/M/1)", p99, Estimate::sectioning(&all, |b| quantile(b, 0.99)));
            }
        }
        if strict {
            // Cobham: W_k = W0 / ((1 − σ_{k−1})(1 − σ_k)) + S̄, W0 = λ E[S²] / 2.
            let w0 = lambda * second_moment / 2.0 / sbar_ns;
            let mut sigma_prev = 0.0;
            for (k, rate) in rates.iter().enumerate() {
                let sigma = sigma_prev + rate * sbar_ns;
                let w = w0 / ((1.0 - sigma_prev) * (1.0 - sigma)) + 1.0;
                push(&names[k], "mean sojourn (Cobham)", w, Estimate::batch_means(&sojourn(Some(k as u8)), mean));
                sigma_prev = sigma;
            }
        }
        if fifo || strict {
            // Little's law for the queue of each class: mean queued = λ_k × mean wait. The queue
            // is counted where the wait is: an event is queued from its arrival to its start.
            let end_ns = (scenario.duration_s.0 * 1e9) as u64;
            for (k, rate) in rates.iter().enumerate() {
                let waits: Vec<(u64, u64)> =
                    run.completions.iter().filter(|c| c.class == k as u8).map(|c| (c.arrival_ns, c.start_ns)).collect();
                let after_warmup: Vec<f64> =
                    waits.iter().filter(|w| w.0 >= warmup_ns).map(|w| (w.1 - w.0) as f64).collect();
                if after_warmup.is_empty() {
                    continue;
                }
                let lw = rate * mean(&after_warmup);
                let queued = Estimate::of_windows(&time_average_per_window(&waits, warmup_ns, end_ns));
                push(&names[k], "Little: queued = λ × wait (events)", lw, queued);
            }
        }
    }
    out
}

/// Poisson arrivals at constant rates, one worker, no faults (no network latency either:
/// sojourns are measured from the client's send), no client retries.
fn eligible(s: &Scenario) -> bool {
    s.workers == 1
        && s.client.max_attempts == 1
        && s.faults.partition.is_empty()
        && s.faults.capacity_drop.is_empty()
        && s.faults.service_drift.is_empty()
        && s.faults.restart.is_empty()
        && s.faults.crash.is_empty()
        && s.faults.jitter_ms.0 == 0.0
        && s.faults.latency_ms.0 == 0.0
        && s.classes.get_ref().iter().all(|c| c.arrivals.kind == ArrivalKind::Poisson && c.arrivals.steps.is_empty())
}

/// The time-average number of intervals `[from, to)` open in each of `BATCHES` equal windows
/// of `[start, end)`: Σ overlap / window length.
pub fn time_average_per_window(intervals: &[(u64, u64)], start: u64, end: u64) -> Vec<f64> {
    if end <= start + BATCHES as u64 {
        return Vec::new();
    }
    let width = (end - start) / BATCHES as u64;
    let mut open_ns = vec![0u128; BATCHES];
    for &(from, to) in intervals {
        let (from, to) = (from.max(start), to.min(start + width * BATCHES as u64));
        if from >= to {
            continue;
        }
        let (first, last) = (((from - start) / width) as usize, ((to - 1 - start) / width) as usize);
        for (w, open) in open_ns.iter_mut().enumerate().take(last + 1).skip(first) {
            let (w_from, w_to) = (start + w as u64 * width, start + (w as u64 + 1) * width);
            *open += u128::from(to.min(w_to) - from.max(w_from));
        }
    }
    open_ns.into_iter().map(|ns| ns as f64 / width as f64).collect()
}

/// Nearest-rank quantile of an unsorted slice.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_averages_count_each_interval_where_it_is_open() {
        // Windows of 10 over [0, 200): one interval spanning windows 0-2 partly, one inside 5.
        let v = time_average_per_window(&[(5, 25), (52, 57), (300, 400)], 0, 200);
        assert_eq!(v.len(), BATCHES);
        assert_eq!(&v[..6], &[0.5, 1.0, 0.5, 0.0, 0.0, 0.5]);
        assert!(v[6..].iter().all(|x| *x == 0.0));
        assert!(time_average_per_window(&[(0, 1)], 0, 10).is_empty(), "too short to split");
    }

    #[test]
    fn batch_means_interval_covers_a_known_mean() {
        let xs: Vec<f64> = (0..2000).map(|i| (i % 10) as f64).collect();
        let e = Estimate::batch_means(&xs, |b| b.iter().sum::<f64>() / b.len() as f64).unwrap();
        assert!(e.contains(4.5) && e.half_width < 1e-9);
        assert!(Estimate::batch_means(&xs[..100], |b| b[0]).is_none(), "too few per batch");
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.5), 2.0);
    }
}
