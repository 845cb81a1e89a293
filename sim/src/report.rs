//! The report: a deterministic part (byte-identical for one seed and scenario) and a host part
//! (wall time, host, argv). Written as JSON, a Markdown table and SVG plots.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use veltrix_engine::DeadLetterReason;

use crate::converge::Convergence;
use crate::expect::{Check, MetricRef};
use crate::run::SystemRun;
use crate::scenario::Scenario;
use crate::theory::{self, TheoryCheck, quantile};
use crate::workload::Arrival;

const NS_PER_MS: f64 = 1e6;

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Same seed and scenario → the same bytes.
    pub deterministic: Deterministic,
    /// Wall time, host, command line: differs between runs.
    pub host: HostPart,
}

/// The part that must not change between reruns.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Deterministic {
    /// Provenance.
    pub stamp: Stamp,
    /// Scenario name and description.
    pub scenario: String,
    /// What it shows.
    pub description: String,
    /// S̄, the mean service time (ms): the unit of docs/scenarios.md's numbers.
    pub mean_service_ms: f64,
    /// Offered-load duration (s).
    pub duration_s: f64,
    /// Excluded from latency statistics (s).
    pub warmup_s: f64,
    /// One per system, in the scenario's order.
    pub systems: Vec<SystemReport>,
    /// Theory versus measurement, where the scenario is eligible.
    pub theory: Vec<TheoryCheck>,
    /// `[expect]` results.
    pub expectations: Vec<ExpectResult>,
}

/// Provenance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stamp {
    /// Simulator version.
    pub version: String,
    /// Git commit the binary was built from (`unknown` outside a checkout).
    pub git_sha: String,
    /// The seed.
    pub seed: u64,
    /// The PRNG.
    pub prng: String,
    /// blake3 of the canonical scenario.
    pub scenario_blake3: String,
    /// The scenario's source (so `replay` needs nothing else).
    pub scenario_source: String,
}

/// Non-deterministic facts about the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostPart {
    /// Command line.
    pub argv: Vec<String>,
    /// Wall-clock seconds for all systems.
    pub wall_seconds: f64,
    /// Simulated seconds per wall-clock second.
    pub sim_seconds_per_wall_second: f64,
    /// Host name.
    pub host: String,
    /// Heap allocations per offered event (counting allocator of the binary; absent in tests).
    pub allocations_per_event: Option<f64>,
}

/// One system.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SystemReport {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Per class.
    pub classes: Vec<ClassReport>,
    /// Sum over classes.
    pub total: ClassReport,
    /// Conservation identities and whether each holds.
    pub identities: Vec<Identity>,
    /// Most events queued at once, all classes together (sampled every 100 ms).
    pub peak_queued_events: u64,
    /// The same in bytes of event state (events × size of a queued event).
    pub peak_queued_bytes: u64,
    /// Seconds after the last disturbance (fault window or arrival step) ends until goodput is
    /// back (≥ 90% of fresh load for 5 s running); `None` without one or if it never comes back.
    pub recovery_s: Option<f64>,
    /// Convergence after each change, with a `[convergence]` section.
    pub convergence: Option<Convergence>,
    /// Per-second series.
    pub series: Series,
}

/// A distribution of times in ms: its mean and percentiles.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// How many times it is made of (0: every figure is 0 and means nothing).
    pub samples: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Max.
    pub max: f64,
}

impl Percentiles {
    fn of(xs: &[f64]) -> Percentiles {
        if xs.is_empty() {
            return Percentiles::default();
        }
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |q: f64| round3(v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]);
        let mean = round3(v.iter().sum::<f64>() / v.len() as f64);
        Percentiles {
            samples: v.len() as u64,
            mean,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: round3(v[v.len() - 1]),
        }
    }
}

/// Three decimals: what every report number keeps, so reruns compare byte for byte.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One class of one system.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ClassReport {
    /// Class name.
    pub class: String,
    /// Fresh requests offered.
    pub offered_fresh: u64,
    /// Retries offered.
    pub offered_retry: u64,
    /// Taken into the system.
    pub accepted: u64,
    /// Refused (full, policy, closed).
    pub rejected: BTreeMap<String, u64>,
    /// Handled.
    pub handled: u64,
    /// Requests answered `handled` within their deadline (and the client's timeout), by any attempt.
    pub goodput: u64,
    /// goodput / fresh requests.
    pub goodput_ratio: f64,
    /// Dead-lettered, by reason.
    pub dead_lettered: BTreeMap<String, u64>,
    /// Received but never answered: tail-dropped, abandoned, or inside the server when it crashed.
    pub lost: u64,
    /// Of `lost`, inside the server when it crashed.
    pub crashed: u64,
    /// Client attempts that never reached the server: written into a connection that a crash
    /// then killed, or not written at all while the server was down.
    pub lost_on_wire: u64,
    /// Client attempts that timed out.
    pub timeouts: u64,
    /// Requests the client gave up on (last attempt refused, dead-lettered or timed out).
    pub client_failed: u64,
    /// Latency of handled events after warm-up, ms: from the client's send to the end of
    /// service — in queueing terms the sojourn (waiting time plus service).
    pub latency_ms: Percentiles,
    /// Waiting time of handled events after warm-up, ms: from the client's send to the start of
    /// service (the queueing delay, service excluded).
    pub wait_ms: Percentiles,
    /// Goodput ratio of fresh requests arriving in the last fifth of the run.
    pub tail_goodput_ratio: f64,
    /// Most of the class inside the system at once.
    pub peak_in_system: u64,
    /// Most of the class queued at a depth sample (every 100 ms).
    pub peak_queued_events: u64,
    /// Their memory: `peak_queued_events` × the bytes one queued event takes.
    pub peak_queued_bytes: u64,
}

/// An identity and whether it holds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Identity {
    /// The identity, spelled out.
    pub identity: String,
    /// Whether it holds.
    pub holds: bool,
}

/// Per-second series, one column per class.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Series {
    /// Second index.
    pub t_s: Vec<u64>,
    /// Handled per second, per class.
    pub handled: Vec<Vec<u64>>,
    /// Goodput per second, per class.
    pub goodput: Vec<Vec<u64>>,
    /// p99 end-to-end latency (ms) of events finishing in that second, per class.
    pub p99_ms: Vec<Vec<f64>>,
    /// Queued events at the end of that second, per class.
    pub depth: Vec<Vec<u64>>,
}

/// An `[expect]` line's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExpectResult {
    /// The line.
    pub check: String,
    /// The measured value (`null` if the metric does not exist).
    pub actual: Option<f64>,
    /// Whether it holds.
    pub holds: bool,
}

/// Builds the report of `runs` (one per system, in the scenario's order).
pub fn build(scenario: &Scenario, source: &str, seed: u64, schedule: &[Arrival], runs: &[SystemRun]) -> Deterministic {
    let names = scenario.class_names();
    let systems: Vec<SystemReport> = runs.iter().map(|r| system_report(scenario, &names, schedule, r)).collect();
    let mut d = Deterministic {
        stamp: Stamp {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_sha: option_env!("VELTRIX_GIT_SHA").unwrap_or("unknown").to_string(),
            seed,
            prng: crate::rng::ALGORITHM.to_string(),
            scenario_blake3: blake3::hash(Scenario::canonical(source).as_bytes()).to_hex().to_string(),
            scenario_source: source.to_string(),
        },
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        mean_service_ms: scenario.mean_service_ms(),
        duration_s: scenario.duration_s.0,
        warmup_s: scenario.warmup_s.0,
        theory: theory::check(scenario, runs),
        systems,
        expectations: Vec::new(),
    };
    d.expectations = scenario
        .expect
        .checks
        .iter()
        .map(|line| {
            let check = Check::parse(line.get_ref()).expect("validated with the scenario");
            let actual = metric(&d, &check.lhs);
            let rhs = match &check.of {
                Some(of) => metric(&d, of).map(|v| v * check.value),
                None => Some(check.value),
            };
            let holds = actual.zip(rhs).is_some_and(|(a, r)| check.holds(a, r));
            ExpectResult { check: check.to_string(), actual, holds }
        })
        .collect();
    d
}

fn system_report(scenario: &Scenario, names: &[String], schedule: &[Arrival], run: &SystemRun) -> SystemReport {
    let warmup_ns = (scenario.warmup_s.0 * 1e9) as u64;
    let end_ns = (scenario.duration_s.0 * 1e9) as u64;
    let tail_from = end_ns - end_ns / 5;
    let good_ids = good_requests(run);
    let mut classes: Vec<ClassReport> = Vec::new();
    let mut identities = Vec::new();
    let peak_queued: Vec<u64> =
        (0..names.len()).map(|k| run.depth.iter().map(|(_, d)| d[k]).max().unwrap_or(0)).collect();
    for (k, name) in names.iter().enumerate() {
        let s = &run.server[k];
        let c = &run.client[k];
        let mine = run.completions.iter().filter(|x| x.class as usize == k && x.arrival_ns >= warmup_ns);
        let e2e: Vec<f64> = mine.clone().map(|x| (x.done_ns - x.arrival_ns) as f64 / NS_PER_MS).collect();
        let soj: Vec<f64> = mine.map(|x| (x.start_ns - x.arrival_ns) as f64 / NS_PER_MS).collect();
        // Goodput in the tail window counts each fresh request once, by its first good attempt.
        let tail_good = count_good(&good_ids, schedule, k, tail_from);
        // Requests (not attempts) answered in time: a late answer and its retry count once.
        let good = count_good(&good_ids, schedule, k, 0);
        let rejected: BTreeMap<String, u64> =
            s.rejected.by_name().into_iter().filter(|(_, n)| *n > 0).map(|(r, n)| (r.to_string(), n)).collect();
        let dead: BTreeMap<String, u64> =
            DeadLetterReason::ALL.iter().zip(s.dead).filter(|(_, n)| *n > 0).map(|(r, n)| (r.to_string(), n)).collect();
        let dead_total: u64 = s.dead.iter().sum();
        let rejected_total = s.rejected.total();
        let unaccounted = s.accepted.saturating_sub(s.handled + dead_total + s.abandoned + s.crashed);
        let lost = s.tail_dropped + s.abandoned + s.crashed + unaccounted;
        identities.push(Identity {
            identity: format!("{name}: received = accepted + rejected + tail-dropped"),
            holds: s.received == s.accepted + rejected_total + s.tail_dropped,
        });
        identities.push(Identity {
            identity: format!("{name}: accepted = handled + dead-lettered + abandoned + crashed"),
            holds: s.accepted == s.handled + dead_total + s.abandoned + s.crashed,
        });
        // Attempts written into a connection whose server then crashed vanish with it; without
        // a crash none may.
        let on_wire = (c.fresh + c.retries).saturating_sub(s.received + c.send_failed);
        identities.push(Identity {
            identity: if scenario.faults.crash.is_empty() {
                format!("{name}: client attempts = server received + attempts the client could not write")
            } else {
                format!("{name}: client attempts = server received + not written + vanished in a crash")
            },
            holds: c.fresh + c.retries == s.received + c.send_failed + on_wire
                && (on_wire == 0 || !scenario.faults.crash.is_empty()),
        });
        if let Some(ledger) = &run.ledger {
            identities.push(Identity {
                identity: format!("{name}: engine ledger = server record (handled, dead letters by reason)"),
                holds: ledger[k].0 == s.handled && ledger[k].1 == s.dead,
            });
        }
        let tail_fresh_count = schedule.iter().filter(|a| a.class as usize == k && a.at_ns >= tail_from).count() as u64;
        classes.push(ClassReport {
            class: name.clone(),
            offered_fresh: c.fresh,
            offered_retry: c.retries,
            accepted: s.accepted,
            rejected,
            handled: s.handled,
            goodput: good,
            goodput_ratio: ratio(good, c.fresh),
            dead_lettered: dead,
            lost,
            crashed: s.crashed,
            lost_on_wire: on_wire + c.send_failed,
            timeouts: c.timeouts,
            client_failed: c.failed,
            latency_ms: Percentiles::of(&e2e),
            wait_ms: Percentiles::of(&soj),
            tail_goodput_ratio: ratio(tail_good, tail_fresh_count),
            peak_in_system: s.peak_in_system,
            peak_queued_events: peak_queued[k],
            peak_queued_bytes: peak_queued[k] * EVENT_BYTES,
        });
    }
    let mut total = total_of(&classes, run, warmup_ns);
    // The system's peak is that of the sum, not the sum of the classes' peaks.
    let peak_queued_events = run.depth.iter().map(|(_, d)| d.iter().sum::<u64>()).max().unwrap_or(0);
    total.peak_queued_events = peak_queued_events;
    total.peak_queued_bytes = peak_queued_events * EVENT_BYTES;
    SystemReport {
        name: run.name.clone(),
        kind: run.kind.to_string(),
        peak_queued_bytes: peak_queued_events * EVENT_BYTES,
        peak_queued_events,
        recovery_s: recovery(scenario, schedule, &good_ids),
        convergence: crate::converge::measure(scenario, schedule, run),
        series: series(scenario, run, names.len()),
        identities,
        total,
        classes,
    }
}

/// Bytes of one queued event in the server (request, reply handle, queue entry).
const EVENT_BYTES: u64 = 96;

/// Requests that got a good answer on some attempt (each counted once, however many attempts).
fn good_requests(run: &SystemRun) -> BTreeSet<u64> {
    run.completions.iter().filter(|x| x.good).map(|x| x.request).collect()
}

/// How many of the `good` requests of `class` arrived (fresh) at or after `from_ns`.
fn count_good(good: &BTreeSet<u64>, schedule: &[Arrival], class: usize, from_ns: u64) -> u64 {
    good.iter().map(|&r| &schedule[r as usize]).filter(|a| a.class as usize == class && a.at_ns >= from_ns).count()
        as u64
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { round3(a as f64 / b as f64) }
}

fn total_of(classes: &[ClassReport], run: &SystemRun, warmup_ns: u64) -> ClassReport {
    let mut t = ClassReport { class: "all".into(), ..ClassReport::default() };
    for c in classes {
        t.offered_fresh += c.offered_fresh;
        t.offered_retry += c.offered_retry;
        t.accepted += c.accepted;
        t.handled += c.handled;
        t.goodput += c.goodput;
        t.lost += c.lost;
        t.crashed += c.crashed;
        t.lost_on_wire += c.lost_on_wire;
        t.timeouts += c.timeouts;
        t.client_failed += c.client_failed;
        t.peak_in_system += c.peak_in_system;
        for (k, v) in &c.rejected {
            *t.rejected.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &c.dead_lettered {
            *t.dead_lettered.entry(k.clone()).or_default() += v;
        }
    }
    t.goodput_ratio = ratio(t.goodput, t.offered_fresh);
    let all = run.completions.iter().filter(|x| x.arrival_ns >= warmup_ns);
    let e2e: Vec<f64> = all.clone().map(|x| (x.done_ns - x.arrival_ns) as f64 / NS_PER_MS).collect();
    let soj: Vec<f64> = all.map(|x| (x.start_ns - x.arrival_ns) as f64 / NS_PER_MS).collect();
    t.latency_ms = Percentiles::of(&e2e);
    t.wait_ms = Percentiles::of(&soj);
    let n = classes.len().max(1) as f64;
    t.tail_goodput_ratio = round3(classes.iter().map(|c| c.tail_goodput_ratio).sum::<f64>() / n);
    t
}

fn seconds(scenario: &Scenario) -> usize {
    scenario.duration_s.0.ceil() as usize
}

fn series(scenario: &Scenario, run: &SystemRun, classes: usize) -> Series {
    let n = seconds(scenario);
    let mut s = Series {
        t_s: (0..n as u64).collect(),
        handled: vec![vec![0; classes]; n],
        goodput: vec![vec![0; classes]; n],
        p99_ms: vec![vec![0.0; classes]; n],
        depth: vec![vec![0; classes]; n],
    };
    let mut lat: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); classes]; n];
    for c in &run.completions {
        let sec = (c.done_ns / 1_000_000_000) as usize;
        if sec < n {
            s.handled[sec][c.class as usize] += 1;
            s.goodput[sec][c.class as usize] += u64::from(c.good);
            lat[sec][c.class as usize].push((c.done_ns - c.arrival_ns) as f64 / NS_PER_MS);
        }
    }
    for (sec, per_class) in lat.iter().enumerate() {
        for (k, xs) in per_class.iter().enumerate() {
            s.p99_ms[sec][k] = round3(quantile(xs, 0.99));
        }
    }
    for (t, d) in &run.depth {
        let sec = (*t / 1_000_000_000) as usize;
        if sec < n {
            s.depth[sec].clone_from(d);
        }
    }
    s
}

/// Seconds after the last disturbance (fault window or arrival step) ends until goodput holds
/// ≥ 90% of the fresh load for 5 s running.
fn recovery(scenario: &Scenario, schedule: &[Arrival], good_ids: &BTreeSet<u64>) -> Option<f64> {
    let f = &scenario.faults;
    let steps = scenario.classes.get_ref().iter().flat_map(|c| c.arrivals.steps.iter().map(|s| s.to_s.0));
    let last_end = f
        .capacity_drop
        .iter()
        .map(|d| d.to_s.0)
        .chain(f.partition.iter().map(|p| p.to_s.0))
        .chain(f.crash.iter().map(|c| c.at_s.0 + c.down_s.0))
        .chain(f.service_drift.iter().map(|d| d.to_s.0))
        .chain(steps)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))?;
    let n = seconds(scenario);
    let from = last_end.ceil() as usize;
    let mut fresh = vec![0u64; n];
    for a in schedule {
        let sec = (a.at_ns / 1_000_000_000) as usize;
        if sec < n {
            fresh[sec] += 1;
        }
    }
    let mut good = vec![0u64; n];
    for &r in good_ids {
        let sec = (schedule[r as usize].at_ns / 1_000_000_000) as usize;
        if sec < n {
            good[sec] += 1;
        }
    }
    let ok = |sec: usize| fresh[sec] == 0 || good[sec] as f64 >= 0.9 * fresh[sec] as f64;
    (from..=n.saturating_sub(5)).find(|&s| (s..s + 5).all(ok)).map(|s| (s as f64 - last_end).max(0.0))
}

/// The value of a metric an `[expect]` line names.
pub fn metric(d: &Deterministic, m: &MetricRef) -> Option<f64> {
    let sys = d.systems.iter().find(|s| s.name == m.system)?;
    metric_of(sys, m.class.as_deref(), &m.metric)
}

/// Metric `m` of class `class` of `sys`, or of the whole system (`None`). The names are
/// [`crate::expect::METRICS`] and [`crate::expect::SYSTEM_METRICS`], which `check` validates.
fn metric_of(sys: &SystemReport, class: Option<&str>, m: &str) -> Option<f64> {
    let c = match class {
        Some(name) => sys.classes.iter().find(|c| c.class == name)?,
        None => &sys.total,
    };
    let pct = |p: &Percentiles, which: &str| -> Option<f64> {
        Some(match which {
            "mean" => p.mean,
            "p50" => p.p50,
            "p90" => p.p90,
            "p99" => p.p99,
            "p999" => p.p999,
            "max" => p.max,
            _ => return None,
        })
    };
    if let Some(which) = m.strip_prefix("latency_ms_") {
        return pct(&c.latency_ms, which);
    }
    if let Some(which) = m.strip_prefix("wait_ms_") {
        return pct(&c.wait_ms, which);
    }
    Some(match m {
        "offered" => (c.offered_fresh + c.offered_retry) as f64,
        "offered_fresh" => c.offered_fresh as f64,
        "offered_retry" => c.offered_retry as f64,
        "accepted" => c.accepted as f64,
        "rejected" => c.rejected.values().sum::<u64>() as f64,
        "handled" => c.handled as f64,
        "goodput" => c.goodput as f64,
        "goodput_ratio" => c.goodput_ratio,
        "tail_goodput_ratio" => c.tail_goodput_ratio,
        "dead_lettered" => c.dead_lettered.values().sum::<u64>() as f64,
        "lost" => c.lost as f64,
        "timeouts" => c.timeouts as f64,
        "client_failed" => c.client_failed as f64,
        "peak_in_system" => c.peak_in_system as f64,
        "peak_queued_events" => c.peak_queued_events as f64,
        "peak_queued_bytes" => c.peak_queued_bytes as f64,
        "recovery_s" if class.is_none() => sys.recovery_s?,
        "convergence_sbar" if class.is_none() => sys.convergence.as_ref()?.worst_sbar(),
        "convergence_cv" if class.is_none() => sys.convergence.as_ref()?.worst_cv(),
        "identities_hold" if class.is_none() => f64::from(u8::from(sys.identities.iter().all(|i| i.holds))),
        _ => return None,
    })
}

/// A table both the Markdown report and `report.html` render: the same headers, cells and number
/// formats in both.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Table {
    /// Column headers; `numeric[i]` right-aligns column `i`.
    pub(crate) headers: &'static [&'static str],
    pub(crate) numeric: &'static [bool],
    pub(crate) rows: Vec<TableRow>,
}

/// One row: its cells, and whether it is a total (bold) or a failed check (marked).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableRow {
    pub(crate) cells: Vec<String>,
    pub(crate) total: bool,
    pub(crate) failed: bool,
}

impl Table {
    /// The table in Markdown.
    fn markdown(&self) -> String {
        let mut s = format!("| {} |\n|", self.headers.join(" | "));
        for &n in self.numeric {
            s.push_str(if n { "---:|" } else { "---|" });
        }
        s.push('\n');
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.cells.join(" | "));
        }
        s
    }
}

/// Where every event went, per system and class, with each system's total.
pub(crate) fn comparison_table(d: &Deterministic) -> Table {
    let sbar = d.mean_service_ms;
    let rows = d
        .systems
        .iter()
        .flat_map(|sys| {
            let classes = sys.classes.iter().map(|c| (c, false));
            classes.chain(std::iter::once((&sys.total, true))).map(move |(c, total)| TableRow {
                cells: vec![
                    sys.name.clone(),
                    c.class.clone(),
                    (c.offered_fresh + c.offered_retry).to_string(),
                    c.handled.to_string(),
                    format!("{:.1}%", 100.0 * c.goodput_ratio),
                    c.rejected.values().sum::<u64>().to_string(),
                    c.dead_lettered.values().sum::<u64>().to_string(),
                    c.lost.to_string(),
                    format!("{:.1}", c.latency_ms.mean),
                    format!("{:.1}", c.latency_ms.p50),
                    format!("{:.1}", c.latency_ms.p99),
                    format!("{:.1}", c.latency_ms.max),
                    format!("{:.1}", c.latency_ms.p99 / sbar),
                ],
                total,
                failed: false,
            })
        })
        .collect();
    Table {
        headers: &[
            "system",
            "class",
            "offered",
            "handled",
            "goodput",
            "rejected",
            "dead-lettered",
            "lost",
            "mean ms",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p99 / S̄",
        ],
        numeric: &[false, false, true, true, true, true, true, true, true, true, true, true, true],
        rows,
    }
}

/// The theory checks: each quantity against its queueing-theory value.
pub(crate) fn theory_table(d: &Deterministic) -> Table {
    let rows = d
        .theory
        .iter()
        .map(|t| TableRow {
            cells: vec![
                t.system.clone(),
                t.class.clone(),
                t.quantity.clone(),
                format!("{:.2}", t.theory),
                format!("{:.2} ± {:.2}", t.measured.mean, t.measured.half_width),
                if t.holds { "yes" } else { "NO" }.to_string(),
            ],
            total: false,
            failed: !t.holds,
        })
        .collect();
    Table {
        headers: &["system", "class", "quantity", "theory", "measured (95% CI)", "holds"],
        numeric: &[false, false, false, true, true, false],
        rows,
    }
}

/// Convergence after each change, per system; empty without `[convergence]`.
pub(crate) fn convergence_table(d: &Deterministic) -> Table {
    let rows = d
        .systems
        .iter()
        .filter_map(|sys| sys.convergence.as_ref().map(|c| (sys, c)))
        .flat_map(|(sys, c)| {
            c.changes.iter().map(move |ch| TableRow {
                cells: vec![
                    sys.name.clone(),
                    format!("{:.1}", ch.at_s),
                    ch.what.clone(),
                    ch.converged_after_sbar.map_or("never".into(), |x| format!("{x:.0}")),
                    ch.cv_after.map_or("–".into(), |x| format!("{x:.3}")),
                ],
                total: false,
                failed: false,
            })
        })
        .collect();
    Table {
        headers: &["system", "at s", "change", "converged after (S̄)", "CV after"],
        numeric: &[false, true, false, true, true],
        rows,
    }
}

/// What the convergence table judges, in words.
pub(crate) fn convergence_caption(d: &Deterministic) -> String {
    let Some(c) = d.systems.iter().find_map(|s| s.convergence.as_ref()) else { return String::new() };
    let own: Vec<String> = c.class_targets_ms.iter().map(|(k, t)| format!("{k} {t} ms")).collect();
    let own = if own.is_empty() { String::new() } else { format!(" ({})", own.join(", ")) };
    format!("Convergence to a p99 queueing delay ≤ 1.25 × {} ms{own} with goodput ≥ 90 %", c.target_delay_ms)
}

/// The comparison table, in Markdown.
pub fn markdown(d: &Deterministic) -> String {
    let mut s = String::new();
    let _ =
        writeln!(s, "### {} — seed {} (S̄ = {} ms, {} s)\n", d.scenario, d.stamp.seed, d.mean_service_ms, d.duration_s);
    s.push_str(&comparison_table(d).markdown());
    if !d.theory.is_empty() {
        s.push('\n');
        s.push_str(&theory_table(d).markdown());
    }
    let convergence = convergence_table(d);
    if !convergence.rows.is_empty() {
        let _ = writeln!(s, "\n{}:\n", convergence_caption(d));
        s.push_str(&convergence.markdown());
    }
    let broken: Vec<&str> =
        d.systems.iter().flat_map(|s| s.identities.iter()).filter(|i| !i.holds).map(|i| i.identity.as_str()).collect();
    let _ = writeln!(
        s,
        "\nConservation identities: {}",
        if broken.is_empty() { "all hold".to_string() } else { format!("BROKEN: {}", broken.join("; ")) }
    );
    for e in &d.expectations {
        let _ = writeln!(
            s,
            "- expect `{}`: {} (actual {})",
            e.check,
            if e.holds { "ok" } else { "FAILED" },
            e.actual.map_or("n/a".into(), |a| format!("{a}"))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expect::{METRICS, SYSTEM_METRICS};

    #[test]
    fn every_metric_check_accepts_is_one_a_report_has() {
        let sys = SystemReport {
            name: "v".into(),
            kind: "veltrix".into(),
            classes: vec![ClassReport { class: "A".into(), ..ClassReport::default() }],
            total: ClassReport::default(),
            identities: Vec::new(),
            peak_queued_events: 0,
            peak_queued_bytes: 0,
            recovery_s: Some(1.0),
            convergence: Some(Convergence { target_delay_ms: 1.0, class_targets_ms: Vec::new(), changes: Vec::new() }),
            series: Series::default(),
        };
        for m in METRICS {
            assert!(metric_of(&sys, Some("A"), m).is_some(), "class metric {m}");
            assert!(metric_of(&sys, None, m).is_some(), "system-wide {m}");
        }
        for m in SYSTEM_METRICS {
            assert!(metric_of(&sys, None, m).is_some(), "system metric {m}");
            assert!(metric_of(&sys, Some("A"), m).is_none(), "{m} has no per-class value");
        }
        assert_eq!(metric_of(&sys, None, "latency_ms_p42"), None);
        assert_eq!(metric_of(&sys, Some("B"), "lost"), None);
    }
}
