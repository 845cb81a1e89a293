//! The offered load, drawn once per seed before any system runs, so every system sees the same
//! arrivals and the same service times (common random numbers: differences between systems are
//! the systems', not the dice's).

use crate::rng::Xoshiro256;
use crate::scenario::{ArrivalKind, Scenario, Service};

/// One fresh request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Request id (dense, in arrival order).
    pub id: u64,
    /// Class index.
    pub class: u8,
    /// Arrival time, ns since the start.
    pub at_ns: u64,
    /// Work it takes, ns (at full capacity).
    pub service_ns: u64,
}

const NS: f64 = 1e9;

/// Draws the whole schedule: arrivals of every class in time order (ties by class).
pub fn schedule(scenario: &Scenario, seed: u64) -> Vec<Arrival> {
    let mut root = Xoshiro256::seed(seed);
    let end = scenario.duration_s.0;
    let mut all: Vec<(f64, u8)> = Vec::new();
    for (k, class) in scenario.classes.get_ref().iter().enumerate() {
        let mut rng = root.fork();
        let a = &class.arrivals;
        // Piecewise-constant rate: the base rate, overridden inside each step window.
        let mut t = 0.0;
        for seg_end in a.piece_ends(end) {
            let rate = a.rate_at(t);
            if rate > 0.0 {
                match a.kind {
                    ArrivalKind::Poisson => loop {
                        // Memoryless: restarting the draw at a segment boundary is exact.
                        let next = t + rng.exp(1.0 / rate);
                        if next >= seg_end {
                            break;
                        }
                        t = next;
                        all.push((t, k as u8));
                    },
                    ArrivalKind::Constant => {
                        let gap = 1.0 / rate;
                        let mut next = t + gap;
                        while next < seg_end {
                            all.push((next, k as u8));
                            next += gap;
                        }
                    }
                }
            }
            t = seg_end;
        }
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut service_rng = root.fork();
    all.into_iter()
        .enumerate()
        .map(|(i, (t, class))| Arrival {
            id: i as u64,
            class,
            at_ns: (t * NS) as u64,
            service_ns: (draw_service(&scenario.service, &mut service_rng) * 1e6) as u64,
        })
        .collect()
}

/// One service time, in ms.
pub fn draw_service(service: &Service, rng: &mut Xoshiro256) -> f64 {
    match *service {
        Service::Exponential { mean_ms } => rng.exp(mean_ms.0),
        Service::Deterministic { mean_ms } => mean_ms.0,
        Service::Bimodal { fast_ms, slow_ms, slow_fraction } => {
            if rng.uniform() < slow_fraction.0 {
                slow_ms.0
            } else {
                fast_ms.0
            }
        }
        Service::Lognormal { mean_ms, sigma } => {
            // mean = exp(μ + σ²/2) ⇒ μ = ln(mean) − σ²/2.
            let mu = mean_ms.0.ln() - sigma.0 * sigma.0 / 2.0;
            (mu + sigma.0 * rng.normal()).exp()
        }
    }
}
