//! The theory grid: the simulator against queueing theory over mean service times from 0.1 to
//! 100 ms, loads from 0.3 to 0.9 and six models (FIFO M/M/1 and M/D/1; strict priority over two
//! and three classes with exponential and deterministic service).
//!
//! Each cell is an ordinary scenario (one worker, Poisson arrivals split evenly over the
//! classes, no faults) run through the whole simulator — client, network, gate, engine — and
//! checked by [`theory::check`]: the mean sojourn (Pollaczek–Khinchine or Cobham) and Little's
//! law per class. A cell passes when every check is within [`TOLERANCE`] of theory *and* theory
//! lies inside the measurement's batch-means interval at 99.9%. The grid makes 72 distinct
//! checks (the cells of one load and model differ only in S̄); at 95% each, a correct simulator
//! would fail three or four of them by chance on every run, while at 99.9% it fails any with a
//! probability of about 7%. The 95% interval is reported too.
//!
//! The step is chosen per cell (`tick_ms` about one mean service time, at least 1 ms): results do
//! not depend on it, and a step near the service time keeps the 100 ms cells as cheap as the
//! 0.1 ms ones. Every cell of one load and model uses the same seed, so the grid also shows
//! that, in units of S̄, the measurement does not depend on S̄ at all.

use serde::Serialize;

use crate::scenario::Scenario;
use crate::theory::{self, Estimate};
use crate::workload;

/// How far a measured mean may be from theory: 5 %.
pub const TOLERANCE: f64 = 0.05;
/// Mean service times, ms.
pub const SERVICE_MS: [f64; 5] = [0.1, 0.5, 2.0, 10.0, 100.0];
/// Loads.
pub const RHO: [f64; 3] = [0.3, 0.6, 0.9];
/// The seed of the whole grid.
pub const SEED: u64 = 1;

/// A queueing model of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Model {
    /// FIFO, exponential service.
    FifoMM1,
    /// FIFO, deterministic service.
    FifoMD1,
    /// Non-preemptive strict priority over `classes` classes; deterministic service if `det`.
    Strict {
        /// Two or three.
        classes: u8,
        /// Deterministic service (else exponential).
        det: bool,
    },
}

impl Model {
    /// Every model of the grid.
    pub const ALL: [Model; 6] = [
        Model::FifoMM1,
        Model::FifoMD1,
        Model::Strict { classes: 2, det: false },
        Model::Strict { classes: 2, det: true },
        Model::Strict { classes: 3, det: false },
        Model::Strict { classes: 3, det: true },
    ];

    /// A short name: `M/M/1`, `M/D/1`, `strict-2 M`, `strict-3 D`.
    pub fn name(self) -> String {
        match self {
            Model::FifoMM1 => "FIFO M/M/1".into(),
            Model::FifoMD1 => "FIFO M/D/1".into(),
            Model::Strict { classes, det } => format!("strict-{classes} {}", if det { "M/D/1" } else { "M/M/1" }),
        }
    }
}

/// One cell: a model at a load and mean service time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cell {
    /// The model.
    pub model: Model,
    /// Offered load ρ.
    pub rho: f64,
    /// Mean service time S̄, ms.
    pub service_ms: f64,
}

/// How many arrivals a cell draws: enough for its means to settle within the tolerance at its
/// load (the variance of a queue's mean grows like 1 / (1 − ρ)⁴). `thorough` draws four times as
/// many.
pub fn arrivals(rho: f64, thorough: bool) -> f64 {
    let base = if rho <= 0.3 {
        200_000.0
    } else if rho <= 0.6 {
        300_000.0
    } else {
        1_000_000.0
    };
    if thorough { 4.0 * base } else { base }
}

impl Cell {
    /// Every cell, ordered by model, load, then service time.
    pub fn all() -> Vec<Cell> {
        let mut cells = Vec::new();
        for model in Model::ALL {
            for rho in RHO {
                for service_ms in SERVICE_MS {
                    cells.push(Cell { model, rho, service_ms });
                }
            }
        }
        cells
    }

    /// The cell as a scenario file.
    pub fn scenario(&self, thorough: bool) -> String {
        let (classes, det, system) = match self.model {
            Model::FifoMM1 => (1, false, "kind = \"naive-fifo\"\nname = \"fifo\""),
            Model::FifoMD1 => (1, true, "kind = \"naive-fifo\"\nname = \"fifo\""),
            Model::Strict { classes, det } => (
                classes,
                det,
                "kind = \"veltrix\"\nname = \"strict\"\nscheduler = \"strict\"\ncapacity = 1000000\ndeadlines = false",
            ),
        };
        let lambda = self.rho / (self.service_ms / 1e3);
        let duration_s = arrivals(self.rho, thorough) / lambda;
        let mut s = format!(
            "schema = 1\nname = \"grid\"\ndescription = \"{} at rho {} and S = {} ms\"\nduration_s = {duration_s}\n\
             warmup_s = {}\ntick_ms = {}\nservice = {{ kind = \"{}\", mean_ms = {} }}\n",
            self.model.name(),
            self.rho,
            self.service_ms,
            duration_s / 20.0,
            (self.service_ms.floor() as u32).max(1),
            if det { "deterministic" } else { "exponential" },
            self.service_ms,
        );
        for k in 0..classes {
            s += &format!(
                "[[class]]\nname = \"C{k}\"\narrivals = {{ kind = \"poisson\", rate_per_s = {} }}\n",
                lambda / f64::from(classes)
            );
        }
        s + "[[system]]\n" + system + "\n"
    }
}

/// One check of one cell.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// The cell.
    pub cell: Cell,
    /// The class (or `all`).
    pub class: String,
    /// What is compared.
    pub quantity: String,
    /// Theory (units of S̄, or events for Little's law).
    pub theory: f64,
    /// Measured, with its 95% interval.
    pub measured: Estimate,
    /// The half-width of the 99.9% interval.
    pub half_width_999: f64,
    /// `(measured − theory) / theory`, %.
    pub error_pct: f64,
    /// Within the tolerance and theory inside the 99.9% interval.
    pub holds: bool,
}

impl std::fmt::Display for Row {
    /// `FIFO M/M/1 ρ=0.9 S̄=2 ms all mean sojourn (M/M/1): theory 10.000, measured 9.871 ± 0.412
    /// at 99.9% (-1.29%)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ρ={} S̄={} ms {} {}: theory {:.3}, measured {:.3} ± {:.3} at 99.9% ({:+.2}%)",
            self.cell.model.name(),
            self.cell.rho,
            self.cell.service_ms,
            self.class,
            self.quantity,
            self.theory,
            self.measured.mean,
            self.half_width_999,
            self.error_pct
        )
    }
}

/// Runs `cell` and checks it.
///
/// # Errors
///
/// A message if the scenario is refused or the simulation fails.
pub fn run_cell(cell: Cell, thorough: bool) -> Result<Vec<Row>, String> {
    let src = cell.scenario(thorough);
    let scenario = Scenario::parse(&src, "<grid>").map_err(|e| e.to_string())?;
    let schedule = workload::schedule(&scenario, SEED);
    let run = crate::run::run_system(&scenario, &scenario.systems[0], &schedule, SEED)?;
    let checks = theory::check(&scenario, std::slice::from_ref(&run));
    let rows = checks
        .into_iter()
        .filter(|c| !c.quantity.starts_with("p99"))
        .map(|c| {
            let error = (c.measured.mean - c.theory) / c.theory;
            let half_width_999 = c.measured.half_width * theory::T_19_999 / theory::T_19;
            let inside = (c.measured.mean - c.theory).abs() <= half_width_999;
            Row {
                cell,
                class: c.class,
                quantity: c.quantity,
                theory: c.theory,
                measured: c.measured,
                half_width_999,
                error_pct: 100.0 * error,
                holds: inside && error.abs() <= TOLERANCE,
            }
        })
        .collect::<Vec<_>>();
    if rows.is_empty() {
        return Err(format!("{}: no theory checks ran", cell.model.name()));
    }
    Ok(rows)
}

/// Runs `cells` on `threads` threads (each simulation is single-threaded and seeded, so the
/// result does not depend on the count); `progress` hears each finished cell.
///
/// # Errors
///
/// The first cell's failure to run.
pub fn run(
    cells: &[Cell],
    thorough: bool,
    threads: usize,
    progress: impl Fn(&Cell) + Sync,
) -> Result<Vec<Row>, String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Slot = std::sync::Mutex<Option<Result<Vec<Row>, String>>>;
    let results: Vec<Slot> = cells.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(cell) = cells.get(i) else { break };
                    let result = run_cell(*cell, thorough);
                    progress(cell);
                    *results[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(result);
                }
            });
        }
    });
    let mut rows = Vec::new();
    for r in results {
        rows.extend(r.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).expect("every cell ran")?);
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| model | ρ | S̄ ms | class | quantity | theory | measured ± 95% (99.9%) | error | holds |\n\
         |---|---:|---:|---|---|---:|---:|---:|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.3} ± {:.3} ({:.3}) | {:+.2}% | {} |\n",
            r.cell.model.name(),
            r.cell.rho,
            r.cell.service_ms,
            r.class,
            r.quantity,
            r.theory,
            r.measured.mean,
            r.measured.half_width,
            r.half_width_999,
            r.error_pct,
            if r.holds { "yes" } else { "NO" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_is_a_valid_scenario_with_the_intended_load() {
        let cells = Cell::all();
        assert_eq!(cells.len(), SERVICE_MS.len() * RHO.len() * Model::ALL.len());
        for cell in cells {
            let s = Scenario::parse(&cell.scenario(false), "<grid>").unwrap_or_else(|e| panic!("{cell:?}: {e}"));
            let lambda: f64 = s.classes.get_ref().iter().map(|c| c.arrivals.rate_per_s.0).sum();
            assert!((lambda * s.mean_service_ms() / 1e3 - cell.rho).abs() < 1e-9, "{cell:?}");
            assert!(s.tick_ms >= 1 && f64::from(s.tick_ms) <= cell.service_ms.max(1.0));
        }
    }
}
