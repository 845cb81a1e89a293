//! `veltrix-sim`: reproducible overload experiments on turmoil. A scenario (TOML) names classes,
//! arrivals, service times, client behaviour, faults and the systems to compare; every system
//! runs the same drawn workload behind the same TCP front end; the report says, per system and
//! class, where every event went and how long it took, and checks queueing theory and the
//! scenario's `[expect]` lines.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod alloc;
pub mod converge;
pub mod expect;
pub mod experiment;
pub mod grid;
mod html;
pub mod pitfalls;
pub mod plot;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
mod suggest;
pub mod sweep;
pub mod theory;
pub mod wire;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use alloc::{CountingAllocator, thread_allocations};
pub use experiment::{Experiment, ExperimentError, ExperimentReport, Slo, Workload};
use plot::{Chart, Scale};
use report::{Deterministic, HostPart, Report};
pub use run::EventSpec;
use scenario::{Scenario, ScenarioError};

/// Heap allocations seen by [`CountingAllocator`] (stays 0 where it is not installed).
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Set by [`CountingAllocator`] at its first allocation: the count means something.
pub static ALLOCATIONS_COUNTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The shipped scenarios: `(name, file name, source)`.
pub const SCENARIOS: [(&str, &str, &str); 12] = [
    ("S1", "s1-validation.toml", include_str!("../scenarios/s1-validation.toml")),
    ("S1-MD1", "s1-md1.toml", include_str!("../scenarios/s1-md1.toml")),
    ("S2", "s2-overload.toml", include_str!("../scenarios/s2-overload.toml")),
    ("S3", "s3-batch-flood.toml", include_str!("../scenarios/s3-batch-flood.toml")),
    ("S4", "s4-retry-storm.toml", include_str!("../scenarios/s4-retry-storm.toml")),
    ("S5", "s5-redelivery-storm.toml", include_str!("../scenarios/s5-redelivery-storm.toml")),
    ("S6", "s6-runaway-top-class.toml", include_str!("../scenarios/s6-runaway-top-class.toml")),
    ("A1", "a1-spike-1_4x.toml", include_str!("../scenarios/a1-spike-1_4x.toml")),
    ("A2", "a2-spike-3x.toml", include_str!("../scenarios/a2-spike-3x.toml")),
    ("A3", "a3-capacity-halved.toml", include_str!("../scenarios/a3-capacity-halved.toml")),
    ("A4", "a4-service-drift.toml", include_str!("../scenarios/a4-service-drift.toml")),
    ("A5", "a5-retry-storm.toml", include_str!("../scenarios/a5-retry-storm.toml")),
];

/// The default scenario: S2, sustained 2× overload, naive FIFO vs enlarged FIFO vs Veltrix.
pub const DEFAULT_SCENARIO: &str = "S2";

/// A scenario by shipped name (`S2`) or file path, with its source and display path.
///
/// # Errors
///
/// A located [`ScenarioError`], or one at 1:1 if the file cannot be read.
pub fn load(name_or_path: &str) -> Result<(Scenario, String, String), ScenarioError> {
    if let Some((_, file, src)) =
        SCENARIOS.iter().find(|(n, f, _)| n.eq_ignore_ascii_case(name_or_path) || *f == name_or_path)
    {
        let label = format!("<built-in {file}>");
        return Scenario::parse(src, &label).map(|s| (s, src.to_string(), label));
    }
    let src = std::fs::read_to_string(Path::new(name_or_path)).map_err(|e| ScenarioError {
        file: name_or_path.to_string(),
        line: 1,
        column: 1,
        field: "-".into(),
        message: format!("cannot read: {e}"),
    })?;
    Scenario::parse(&src, name_or_path).map(|s| (s, src, name_or_path.to_string()))
}

/// How far a run has come, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress<'a> {
    /// The system being simulated.
    pub system: &'a str,
    /// Its position among the scenario's systems (from 0), and their number.
    pub index: usize,
    /// How many systems the scenario compares.
    pub count: usize,
    /// Simulated seconds of this system's run so far.
    pub simulated_s: f64,
    /// Simulated seconds it will take (the scenario's duration and the final drain).
    pub total_s: f64,
}

/// Runs every system of `scenario` with `seed`; `progress` hears each system's start and then
/// its simulated time, every simulated second or so.
///
/// # Errors
///
/// A message if a simulation fails.
pub fn run_scenario(
    scenario: &Scenario,
    source: &str,
    seed: u64,
    argv: Vec<String>,
    mut progress: impl FnMut(&Progress<'_>),
) -> Result<Report, String> {
    let started = std::time::Instant::now();
    let allocs_before = ALLOCATIONS.load(Ordering::Relaxed);
    let schedule = workload::schedule(scenario, seed);
    let systems = &scenario.systems;
    let mut runs = Vec::with_capacity(systems.len());
    for (i, system) in systems.iter().enumerate() {
        let count = systems.len();
        let mut report = |simulated_s: f64, total_s: f64| {
            progress(&Progress { system: system.name(), index: i, count, simulated_s, total_s });
        };
        runs.push(run::run_system_reporting(scenario, system, &schedule, seed, &mut report)?);
    }
    let deterministic: Deterministic = report::build(scenario, source, seed, &schedule, &runs);
    let wall = started.elapsed().as_secs_f64();
    let sim: f64 = runs.iter().map(|r| r.sim_seconds).sum();
    let offered: u64 = runs.iter().flat_map(|r| r.client.iter()).map(|c| c.fresh + c.retries).sum();
    let allocs = ALLOCATIONS.load(Ordering::Relaxed) - allocs_before;
    Ok(Report {
        deterministic,
        host: HostPart {
            argv,
            wall_seconds: wall,
            sim_seconds_per_wall_second: if wall > 0.0 { sim / wall } else { 0.0 },
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            allocations_per_event: (ALLOCATIONS_COUNTED.load(Ordering::Relaxed) && offered > 0)
                .then(|| allocs as f64 / offered as f64),
        },
    })
}

/// Writes `report.json`, `deterministic.json`, `report.md`, the plots (`latency.svg`,
/// `depth.svg`) and `report.html` (tables and plots on one page) into `dir`; returns the paths.
///
/// # Errors
///
/// The I/O error.
pub fn write_outputs(report: &Report, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let d = &report.deterministic;
    let latency = time_chart(d, "p99 end-to-end latency per second", "p99 latency (ms)", Scale::Log, &|s, k| {
        // A second without completions has no latency: a gap in the line, not a zero.
        let seconds = s.series.t_s.iter().zip(&s.series.p99_ms).zip(&s.series.handled);
        seconds.map(|((t, v), n)| (*t as f64, if n[k] > 0 { v[k] } else { f64::NAN })).collect()
    });
    let depth = time_chart(d, "queued events", "queued (events)", Scale::Linear, &|s, k| {
        s.series.t_s.iter().zip(&s.series.depth).map(|(t, v)| (*t as f64, v[k] as f64)).collect()
    });
    let (latency, depth) = (latency.svg(), depth.svg());
    let html = html::page(d, &[("p99 end-to-end latency per second", &latency), ("queued events", &depth)]);
    let files = [
        ("report.json", serde_json::to_string_pretty(report).expect("serializable")),
        ("deterministic.json", deterministic_json(d)),
        ("report.md", report::markdown(d)),
        ("latency.svg", latency),
        ("depth.svg", depth),
        ("report.html", html),
    ];
    let mut written = Vec::with_capacity(files.len());
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content)?;
        written.push(path);
    }
    Ok(written)
}

/// One panel per system, one line per class over the run's seconds; the latency plot also
/// draws each class's deadline, and every plot shades the scenario's disturbances (fault
/// windows, arrival steps), read back from the scenario the report carries.
fn time_chart(d: &Deterministic, what: &str, y_label: &str, scale: Scale, points: &PointsOf) -> Chart {
    let panels = d
        .systems
        .iter()
        .map(|s| plot::Panel {
            title: s.name.clone(),
            lines: s.classes.iter().enumerate().map(|(k, c)| (c.class.clone(), points(s, k))).collect(),
        })
        .collect();
    let scenario = Scenario::parse(&d.stamp.scenario_source, &d.scenario).ok();
    let rules = match (&scenario, scale) {
        (Some(sc), Scale::Log) => sc
            .classes
            .get_ref()
            .iter()
            .enumerate()
            .filter_map(|(k, c)| {
                let deadline = c.deadline_ms?.0;
                Some(plot::Rule { y: deadline, label: format!("{} deadline", c.name.get_ref()), series: k })
            })
            .collect(),
        _ => Vec::new(),
    };
    let bands = scenario.as_ref().map_or_else(Vec::new, disturbances);
    Chart {
        title: format!("{}: {what}", d.scenario),
        x_label: "time (s)".into(),
        y_label: y_label.into(),
        scale,
        panels,
        rules,
        bands,
        markers: false,
    }
}

/// The scenario's fault windows and arrival steps, as shaded ranges.
fn disturbances(sc: &Scenario) -> Vec<plot::Band> {
    let band = |from: f64, to: f64, label: &str| plot::Band { from, to, label: label.to_string() };
    let f = &sc.faults;
    let mut bands: Vec<plot::Band> = Vec::new();
    bands.extend(f.partition.iter().map(|w| band(w.from_s.0, w.to_s.0, "partition")));
    bands.extend(f.capacity_drop.iter().map(|w| band(w.from_s.0, w.to_s.0, "capacity drop")));
    bands.extend(f.crash.iter().map(|c| band(c.at_s.0, c.at_s.0 + c.down_s.0, "crash (host down)")));
    bands.extend(f.service_drift.iter().map(|d| band(d.from_s.0, d.to_s.0, "service time drifting")));
    bands.extend(f.restart.iter().map(|r| band(r.at_s.0, r.at_s.0, "restart")));
    for c in sc.classes.get_ref() {
        let label = format!("{} arrival step", c.name.get_ref());
        bands.extend(c.arrivals.steps.iter().map(|s| band(s.from_s.0, s.to_s.0, &label)));
    }
    bands
}

/// The points of one class's line in a system's panel.
type PointsOf = dyn Fn(&report::SystemReport, usize) -> Vec<(f64, f64)>;

/// The deterministic part as canonical JSON (what reruns must reproduce byte for byte).
pub fn deterministic_json(d: &Deterministic) -> String {
    serde_json::to_string_pretty(d).expect("serializable")
}
