//! Experiments on your own handler: run your `Handler` and your engine `Config` under a workload
//! (arrivals, client behaviour, faults) on the simulated clock, deterministically per seed, and
//! assert your service-level objectives from a `#[test]`.
//!
//! ```no_run
//! use std::future::Future;
//! use veltrix_engine::Config;
//! use veltrix_engine::runtime::{Handler, HandlerContext, Outcome};
//! use veltrix_sim::{EventSpec, Experiment, Slo, Workload};
//!
//! struct Resize;
//! impl Handler<u64> for Resize {
//!     fn handle(&self, _image: &u64, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
//!         async {
//!             // Simulated service time: sleeping on tokio's clock costs no wall time here.
//!             tokio::time::sleep(std::time::Duration::from_millis(2)).await;
//!             Outcome::Ok
//!         }
//!     }
//! }
//!
//! let workload = Workload::new(60.0)
//!     .class("CRITICAL_PLUS", 50.0)
//!     .class("CRITICAL", 100.0)
//!     .class("SHEDDABLE_PLUS", 100.0)
//!     .class("SHEDDABLE", 100.0)
//!     .step("SHEDDABLE", 20.0, 30.0, 300.0) // a 3× burst
//!     .client_timeout_ms(500.0);
//! let report = Experiment::new(&workload.toml().unwrap(), Config::default(), Resize, |e: EventSpec| e.request)
//!     .unwrap()
//!     .seed(7)
//!     .run()
//!     .unwrap();
//! report.assert(&[Slo::goodput_at_least("CRITICAL_PLUS", 0.99), Slo::lost_at_most(None, 0)]);
//! ```
//!
//! Run it from a plain `#[test]` or `main`, not inside a tokio runtime (`#[tokio::test]`): the
//! simulation brings its own. `VELTRIX_SIM_SEED` overrides every experiment's seed in the process
//! (that is how a failure's reproduce line replays it).
//!
//! **Time.** Your handler's `tokio::time::sleep` is service time on the simulated clock; so is
//! anything else that waits on tokio's timers. CPU work takes no simulated time. The clock moves
//! in steps (`tick_ms`, default 1 ms) and timers fire on them, so a handler sleeping 0.2 ms takes
//! one step; the built-in service model (`veltrix-sim run`) is exact at any service time, a
//! user's handler is as exact as its timers.
//!
//! **The workload** is a scenario file without `[[system]]` tables (see `docs/scenarios.md` and
//! the shipped files in `sim/scenarios/`), written by hand or by [`Workload`]. Its classes are
//! your `Config`'s, most critical first, by position; each arrival becomes one of your events
//! through the function you give, which sees the request, attempt, class and the service time the
//! workload's service model drew.
//!
//! **Allocation budgets.** [`Experiment::allocations_per_event`] measures the allocations per
//! handled event on the engine path (submit, queue, your handler), outside the simulator, with
//! [`CountingAllocator`](crate::CountingAllocator) installed in the test binary.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use veltrix_engine::runtime::EngineBuildError;
use veltrix_engine::runtime::{Engine, Handler, HandlerContext, Outcome, RetryPolicy, RouteSpec, Submission};
use veltrix_engine::{ClassId, Config, DeadLetterReason};

use crate::report::{ClassReport, Report};
use crate::run::EventSpec;
use crate::scenario::{Scenario, ScenarioError};
use crate::{ALLOCATIONS_COUNTED, report, run, workload};

/// The environment variable that overrides an experiment's seed (what a failure's reproduce
/// line sets).
pub const SEED_VAR: &str = "VELTRIX_SIM_SEED";

/// Why an experiment could not run or a budget was exceeded.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExperimentError {
    /// The workload is not a valid scenario (file, line, column, field).
    Workload(ScenarioError),
    /// The workload's classes are not the `Config`'s.
    Classes {
        /// The workload's class names.
        workload: Vec<String>,
        /// The `Config`'s.
        config: Vec<String>,
    },
    /// The seed in the environment variable is not a number.
    Seed(String),
    /// A [`Workload`] method named a class that was not added before it.
    UnknownClass(String),
    /// The engine refuses the route (a retry policy of zero attempts).
    Engine(EngineBuildError),
    /// The simulation itself failed.
    Simulation(String),
    /// [`CountingAllocator`](crate::CountingAllocator) is not installed, so nothing can be
    /// counted.
    NoCountingAllocator,
    /// More allocations per event than the budget.
    AllocationBudget {
        /// Measured, per handled event.
        measured: f64,
        /// Allowed.
        budget: f64,
        /// Events measured.
        events: usize,
    },
}

impl std::fmt::Display for ExperimentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExperimentError::Workload(e) => write!(f, "workload: {e}"),
            ExperimentError::Classes { workload, config } => write!(
                f,
                "the workload's classes {workload:?} are not the Config's {config:?} (the same names, most \
                 critical first)"
            ),
            ExperimentError::Seed(v) => write!(f, "{SEED_VAR}={v:?} is not a number"),
            ExperimentError::UnknownClass(c) => {
                write!(f, "the workload has no class `{c}` (add it with `class` first)")
            }
            ExperimentError::Engine(e) => write!(f, "engine: {e}"),
            ExperimentError::Simulation(e) => write!(f, "simulation failed: {e}"),
            ExperimentError::NoCountingAllocator => f.write_str(
                "no allocations counted: install the counting allocator in the test binary with \
                 `#[global_allocator] static ALLOC: veltrix_sim::CountingAllocator = veltrix_sim::CountingAllocator;`",
            ),
            ExperimentError::AllocationBudget { measured, budget, events } => write!(
                f,
                "{measured:.3} allocations per handled event on the engine path (over {events} events), above \
                 the budget of {budget}"
            ),
        }
    }
}

impl std::error::Error for ExperimentError {}

/// Your handler and engine under a workload. See the [module docs](self).
pub struct Experiment<E, H, F> {
    scenario: Scenario,
    source: String,
    config: Config,
    handler: Arc<H>,
    make: Arc<F>,
    seed: u64,
    retry: RetryPolicy,
    deadlines: bool,
    event: PhantomData<fn() -> E>,
}

impl<E, H, F> std::fmt::Debug for Experiment<E, H, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Experiment").field("workload", &self.scenario.name).field("seed", &self.seed).finish()
    }
}

impl<E, H, F> Experiment<E, H, F>
where
    E: Send + Sync + 'static,
    H: Handler<E>,
    F: Fn(EventSpec) -> E + Send + Sync + 'static,
{
    /// An experiment of `handler` behind an engine of `config`, under `workload` (a scenario
    /// without `[[system]]`), each arrival made into an event by `make`. The seed is the
    /// workload's, else 1, unless `VELTRIX_SIM_SEED` says otherwise.
    ///
    /// # Errors
    ///
    /// [`ExperimentError::Workload`] for a bad workload, [`ExperimentError::Classes`] if its
    /// classes are not `config`'s, [`ExperimentError::Seed`] for a bad `VELTRIX_SIM_SEED`.
    pub fn new(workload: &str, config: Config, handler: H, make: F) -> Result<Self, ExperimentError> {
        let scenario = Scenario::parse_experiment(workload, "<experiment>").map_err(ExperimentError::Workload)?;
        let names: Vec<String> = config.classes().iter().map(|c| c.name.clone()).collect();
        if names != scenario.class_names() {
            return Err(ExperimentError::Classes { workload: scenario.class_names(), config: names });
        }
        let seed = match std::env::var(SEED_VAR) {
            Ok(v) => v.trim().parse().map_err(|_| ExperimentError::Seed(v))?,
            Err(_) => scenario.seed.unwrap_or(1),
        };
        Ok(Experiment {
            scenario,
            source: workload.to_string(),
            config,
            handler: Arc::new(handler),
            make: Arc::new(make),
            seed,
            retry: RetryPolicy::none(),
            deadlines: false,
            event: PhantomData,
        })
    }

    /// Runs with `seed` (unless `VELTRIX_SIM_SEED` is set: a reproduce line wins).
    pub fn seed(mut self, seed: u64) -> Self {
        if std::env::var(SEED_VAR).is_err() {
            self.seed = seed;
        }
        self
    }

    /// The engine's retry policy for your handler (default: no retry).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Give each event the workload's class deadline (or the client's timeout, if sooner) as
    /// its engine deadline, as a front end that knows when an answer stops being useful would
    /// (default: off — your `Config`'s own class deadlines apply either way).
    pub fn engine_deadlines(mut self, on: bool) -> Self {
        self.deadlines = on;
        self
    }

    /// The engine's own rules for the route, before anything runs.
    fn check_route(&self) -> Result<(), ExperimentError> {
        if self.retry.max_attempts == 0 {
            return Err(ExperimentError::Engine(EngineBuildError::ZeroAttempts("yours".into())));
        }
        Ok(())
    }

    /// Runs the workload against your engine on turmoil: deterministic for one seed.
    ///
    /// # Errors
    ///
    /// [`ExperimentError::Engine`] for a retry policy of zero attempts,
    /// [`ExperimentError::Simulation`] if the simulation fails.
    pub fn run(&self) -> Result<ExperimentReport, ExperimentError> {
        self.check_route()?;
        let started = std::time::Instant::now();
        let schedule = workload::schedule(&self.scenario, self.seed);
        let system = run::run_custom(
            &self.scenario,
            &schedule,
            self.seed,
            "yours",
            self.config.clone(),
            self.handler.clone(),
            self.make.clone(),
            self.retry,
            self.deadlines,
        )
        .map_err(ExperimentError::Simulation)?;
        let deterministic = report::build(&self.scenario, &self.source, self.seed, &schedule, &[system]);
        let wall = started.elapsed().as_secs_f64();
        Ok(ExperimentReport {
            report: Report {
                host: report::HostPart {
                    argv: std::env::args().collect(),
                    wall_seconds: wall,
                    sim_seconds_per_wall_second: self.scenario.duration_s.0 / wall.max(1e-9),
                    host: String::new(),
                    allocations_per_event: None,
                },
                deterministic,
            },
            seed: self.seed,
        })
    }

    /// Allocations per handled event on the engine path — submit, queue, dead letters, your
    /// handler — over `events` events submitted after a warm-up,
    /// measured on a paused tokio clock outside the simulator, so the simulator's own
    /// allocations do not count and your events are made beforehand. It counts the calling
    /// thread, which runs the engine, its workers and your handler: work your handler sends to
    /// other threads (`spawn_blocking`, its own pool) is not counted.
    ///
    /// # Errors
    ///
    /// [`ExperimentError::NoCountingAllocator`] without [`CountingAllocator`](crate::CountingAllocator)
    /// installed; [`ExperimentError::Engine`] for a retry policy of zero attempts;
    /// [`ExperimentError::Simulation`] if the events do not finish within a simulated hour.
    pub fn allocations_per_event(&self, events: usize) -> Result<f64, ExperimentError> {
        self.check_route()?;
        let warm_up = events.clamp(100, 10_000);
        let mut rates: Vec<f64> = self.scenario.classes.get_ref().iter().map(|c| c.arrivals.rate_per_s.0).collect();
        if rates.iter().all(|r| *r <= 0.0) {
            rates.iter_mut().for_each(|r| *r = 1.0);
        }
        // Classes in proportion to their base rates, interleaved (largest remainder).
        let total: f64 = rates.iter().sum();
        let mut credit = vec![0.0; rates.len()];
        let mut made: Vec<(ClassId, E)> = Vec::with_capacity(warm_up + events);
        for i in 0..warm_up + events {
            credit.iter_mut().zip(&rates).for_each(|(c, r)| *c += r / total);
            let k = (0..rates.len()).max_by(|&a, &b| credit[a].total_cmp(&credit[b])).expect("a class");
            credit[k] -= 1.0;
            let spec = EventSpec { request: i as u64, attempt: 1, class: ClassId::new(k), service: Duration::ZERO };
            made.push((spec.class, (self.make)(spec)));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(|e| ExperimentError::Simulation(e.to_string()))?;
        // Events handled (`Ok`), and dead-lettered (after any retries, or shed).
        let (handled, dead) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let counted = Counted { inner: self.handler.clone(), handled: handled.clone(), event: PhantomData };
        let spec = RouteSpec::new(self.config.clone()).workers(self.scenario.workers as usize).retry(self.retry);
        let mut made = made.into_iter();
        let warm: Vec<(ClassId, E)> = made.by_ref().take(warm_up).collect();
        let measured_batch: Vec<(ClassId, E)> = made.collect();
        let sink_dead = dead.clone();
        let measured = runtime.block_on(async move {
            let engine = Engine::builder()
                .route("measured", spec, counted)
                .dead_letter_sink(move |_| {
                    sink_dead.fetch_add(1, Ordering::Relaxed);
                })
                .build()
                .expect("one route with workers and attempts, in a runtime");
            // Submits a batch (waiting while a class is full) and waits, on the paused clock,
            // until every accepted event has finished.
            let finished = || handled.load(Ordering::Relaxed) + dead.load(Ordering::Relaxed);
            let run = |batch: Vec<(ClassId, E)>| {
                let engine = &engine;
                async move {
                    let mut accepted = 0u64;
                    let start = finished();
                    for (class, event) in batch {
                        accepted += u64::from(engine.submit(Submission::new("measured", class, event)).await.is_ok());
                    }
                    // A simulated hour at most: a handler that never returns is not measured.
                    for _ in 0..3_600_000 {
                        if finished() >= start + accepted {
                            return Ok(accepted);
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(ExperimentError::Simulation("the events did not finish within a simulated hour".into()))
                }
            };
            run(warm).await?;
            // This thread runs the engine, its workers and the handler (a current-thread
            // runtime): its count is the engine path's alone.
            let (before, handled_before) = (crate::thread_allocations(), handled.load(Ordering::Relaxed));
            run(measured_batch).await?;
            let (after, handled_after) = (crate::thread_allocations(), handled.load(Ordering::Relaxed));
            engine.shutdown(Duration::ZERO).await;
            Ok::<f64, ExperimentError>((after - before) as f64 / (handled_after - handled_before).max(1) as f64)
        })?;
        if !ALLOCATIONS_COUNTED.load(Ordering::Relaxed) {
            return Err(ExperimentError::NoCountingAllocator);
        }
        Ok(measured)
    }

    /// [`Experiment::allocations_per_event`], failing above `budget`.
    ///
    /// # Errors
    ///
    /// [`ExperimentError::AllocationBudget`] above the budget, or what measuring returns.
    pub fn check_allocations(&self, budget: f64, events: usize) -> Result<f64, ExperimentError> {
        let measured = self.allocations_per_event(events)?;
        if measured > budget {
            return Err(ExperimentError::AllocationBudget { measured, budget, events });
        }
        Ok(measured)
    }
}

/// Counts handled events (for the allocation measurement's wait); allocates nothing.
struct Counted<E, H> {
    inner: Arc<H>,
    handled: Arc<AtomicU64>,
    event: PhantomData<fn() -> E>,
}

impl<E: Send + Sync + 'static, H: Handler<E>> Handler<E> for Counted<E, H> {
    fn handle(&self, event: &E, cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let work = self.inner.handle(event, cx);
        let handled = self.handled.clone();
        async move {
            let outcome = work.await;
            if outcome == Outcome::Ok {
                handled.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        }
    }
}

/// A service-level objective an experiment's report is checked against.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Slo {
    /// At least this share of the class's fresh requests answered in time (class deadline and
    /// client timeout).
    GoodputAtLeast {
        /// The class.
        class: String,
        /// The share, 0 to 1.
        ratio: f64,
    },
    /// The class's p99 latency (send to end of service) at most this, ms.
    P99LatencyAtMost {
        /// The class.
        class: String,
        /// Milliseconds.
        ms: f64,
    },
    /// The class's mean latency at most this, ms.
    MeanLatencyAtMost {
        /// The class.
        class: String,
        /// Milliseconds.
        ms: f64,
    },
    /// At most this many events lost without a trace (of a class, or of all).
    LostAtMost {
        /// The class, or every class.
        class: Option<String>,
        /// Events.
        events: u64,
    },
    /// At most this many dead letters (of a class or all, for one reason or any).
    DeadLetteredAtMost {
        /// The class, or every class.
        class: Option<String>,
        /// The reason, or any.
        reason: Option<DeadLetterReason>,
        /// Events.
        events: u64,
    },
}

impl Slo {
    /// [`Slo::GoodputAtLeast`].
    pub fn goodput_at_least(class: &str, ratio: f64) -> Slo {
        Slo::GoodputAtLeast { class: class.into(), ratio }
    }
    /// [`Slo::P99LatencyAtMost`].
    pub fn p99_latency_at_most(class: &str, ms: f64) -> Slo {
        Slo::P99LatencyAtMost { class: class.into(), ms }
    }
    /// [`Slo::MeanLatencyAtMost`].
    pub fn mean_latency_at_most(class: &str, ms: f64) -> Slo {
        Slo::MeanLatencyAtMost { class: class.into(), ms }
    }
    /// [`Slo::LostAtMost`].
    pub fn lost_at_most(class: Option<&str>, events: u64) -> Slo {
        Slo::LostAtMost { class: class.map(str::to_string), events }
    }
    /// [`Slo::DeadLetteredAtMost`].
    pub fn dead_lettered_at_most(class: Option<&str>, reason: Option<DeadLetterReason>, events: u64) -> Slo {
        Slo::DeadLetteredAtMost { class: class.map(str::to_string), reason, events }
    }
}

impl std::fmt::Display for Slo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let of = |c: &Option<String>| c.as_deref().unwrap_or("all").to_string();
        match self {
            Slo::GoodputAtLeast { class, ratio } => write!(f, "{class} goodput ≥ {ratio}"),
            Slo::P99LatencyAtMost { class, ms } => write!(f, "{class} p99 latency ≤ {ms} ms"),
            Slo::MeanLatencyAtMost { class, ms } => write!(f, "{class} mean latency ≤ {ms} ms"),
            Slo::LostAtMost { class, events } => write!(f, "{} lost ≤ {events}", of(class)),
            Slo::DeadLetteredAtMost { class, reason, events } => match reason {
                Some(r) => write!(f, "{} dead-lettered ({r}) ≤ {events}", of(class)),
                None => write!(f, "{} dead-lettered ≤ {events}", of(class)),
            },
        }
    }
}

/// Objectives that did not hold, with what was measured and how to reproduce the run.
#[derive(Debug, Clone, PartialEq)]
pub struct SloFailure {
    /// Each failed objective and the measured value (`None`: its class does not exist, or a
    /// latency objective's class handled nothing).
    pub failed: Vec<(Slo, Option<f64>)>,
    /// The command that reruns the experiment with the same seed.
    pub reproduce: String,
}

impl std::fmt::Display for SloFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (slo, actual) in &self.failed {
            match actual {
                Some(a) => writeln!(f, "SLO failed: {slo} (measured {a})")?,
                None => writeln!(f, "SLO failed: {slo} (nothing to measure: no such class, or nothing handled)")?,
            }
        }
        write!(f, "reproduce: {}", self.reproduce)
    }
}

impl std::error::Error for SloFailure {}

/// What an experiment measured: the simulator's report for your engine (system `yours`), and
/// the seed.
#[derive(Debug, Clone)]
pub struct ExperimentReport {
    /// The full report (the same as `veltrix-sim run` writes).
    pub report: Report,
    /// The seed it ran with.
    pub seed: u64,
}

impl ExperimentReport {
    /// One class's figures, by name.
    pub fn class(&self, name: &str) -> Option<&ClassReport> {
        self.report.deterministic.systems[0].classes.iter().find(|c| c.class == name)
    }

    /// Every class together.
    pub fn total(&self) -> &ClassReport {
        &self.report.deterministic.systems[0].total
    }

    /// The measured value of `slo`'s figure: `None` if its class does not exist, or for a
    /// latency if the class handled nothing after the warm-up (no latency to speak of).
    pub fn measured(&self, slo: &Slo) -> Option<f64> {
        let of = |c: &Option<String>| match c {
            Some(name) => self.class(name),
            None => Some(self.total()),
        };
        let latency = |class: &str| Some(self.class(class)?.latency_ms).filter(|l| l.samples > 0);
        Some(match slo {
            // From the counts, not the report's rounded ratio.
            Slo::GoodputAtLeast { class, .. } => {
                let c = self.class(class)?;
                if c.offered_fresh == 0 { 1.0 } else { c.goodput as f64 / c.offered_fresh as f64 }
            }
            Slo::P99LatencyAtMost { class, .. } => latency(class)?.p99,
            Slo::MeanLatencyAtMost { class, .. } => latency(class)?.mean,
            Slo::LostAtMost { class, .. } => of(class)?.lost as f64,
            Slo::DeadLetteredAtMost { class, reason, .. } => {
                let dead = &of(class)?.dead_lettered;
                match reason {
                    Some(r) => dead.get(&r.to_string()).copied().unwrap_or(0) as f64,
                    None => dead.values().sum::<u64>() as f64,
                }
            }
        })
    }

    /// Checks every objective.
    ///
    /// # Errors
    ///
    /// The ones that failed, what was measured, and the command that reproduces the run.
    pub fn check(&self, slos: &[Slo]) -> Result<(), SloFailure> {
        let failed: Vec<(Slo, Option<f64>)> = slos
            .iter()
            .filter_map(|slo| {
                let actual = self.measured(slo);
                let holds = actual.is_some_and(|a| match slo {
                    Slo::GoodputAtLeast { ratio, .. } => a >= *ratio,
                    Slo::P99LatencyAtMost { ms, .. } | Slo::MeanLatencyAtMost { ms, .. } => a <= *ms,
                    Slo::LostAtMost { events, .. } | Slo::DeadLetteredAtMost { events, .. } => a <= *events as f64,
                });
                (!holds).then(|| (slo.clone(), actual))
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(SloFailure { failed, reproduce: self.reproduce() })
    }

    /// [`ExperimentReport::check`], panicking with its message (for `#[test]`s).
    ///
    /// # Panics
    ///
    /// If an objective does not hold.
    #[track_caller]
    pub fn assert(&self, slos: &[Slo]) {
        if let Err(e) = self.check(slos) {
            panic!("{e}");
        }
    }

    /// The command that reruns this experiment: the seed in `VELTRIX_SIM_SEED`, and the test
    /// it ran in (the thread's name, as the test harness sets it).
    pub fn reproduce(&self) -> String {
        // A test binary is named `<target>-<hash>`.
        let binary = std::env::args()
            .next()
            .and_then(|a| std::path::Path::new(&a).file_stem().map(|s| s.to_string_lossy().into_owned()))
            .map(|stem| stem.rsplit_once('-').map_or(stem.clone(), |(name, _)| name.to_string()));
        match (std::thread::current().name().filter(|n| *n != "main"), binary) {
            (Some(test), Some(binary)) => {
                format!("{SEED_VAR}={} cargo test -- --exact {test}   (test binary `{binary}`)", self.seed)
            }
            (Some(test), None) => format!("{SEED_VAR}={} cargo test -- --exact {test}", self.seed),
            (None, _) => format!("{SEED_VAR}={} <the same command>", self.seed),
        }
    }
}

/// One class of a [`Workload`].
#[derive(Debug, Clone, PartialEq)]
struct WorkloadClass {
    name: String,
    rate_per_s: f64,
    deadline_ms: Option<f64>,
    /// `(from_s, to_s, rate_per_s)`.
    steps: Vec<(f64, f64, f64)>,
}

/// A workload written in code rather than TOML: [`Workload::toml`] gives the scenario text
/// [`Experiment::new`] reads (checked there like a file).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    duration_s: f64,
    warmup_s: f64,
    service: (&'static str, f64),
    workers: u32,
    classes: Vec<WorkloadClass>,
    client: Vec<String>,
    latency_ms: Option<f64>,
    partitions: Vec<(f64, f64)>,
    crashes: Vec<(f64, f64)>,
    seed: Option<u64>,
    /// Classes named by `deadline_ms` or `step` before they were added.
    unknown: Vec<String>,
}

impl Workload {
    /// `duration_s` seconds of offered load; exponential service of 1 ms mean for the event
    /// maker's hint; one worker; no warm-up.
    pub fn new(duration_s: f64) -> Workload {
        Workload {
            duration_s,
            warmup_s: 0.0,
            service: ("exponential", 1.0),
            workers: 1,
            classes: Vec::new(),
            client: Vec::new(),
            latency_ms: None,
            partitions: Vec::new(),
            crashes: Vec::new(),
            seed: None,
            unknown: Vec::new(),
        }
    }

    /// Leading seconds left out of the latency figures.
    pub fn warmup_s(mut self, s: f64) -> Workload {
        self.warmup_s = s;
        self
    }

    /// The seed (the experiment's default, before `VELTRIX_SIM_SEED`).
    pub fn seed(mut self, seed: u64) -> Workload {
        self.seed = Some(seed);
        self
    }

    /// The service model whose draws reach the event maker ([`EventSpec::service`]):
    /// `exponential` or `deterministic`, mean in ms.
    pub fn service(mut self, kind: &'static str, mean_ms: f64) -> Workload {
        self.service = (kind, mean_ms);
        self
    }

    /// Worker tasks of the engine's route.
    pub fn workers(mut self, workers: u32) -> Workload {
        self.workers = workers;
        self
    }

    /// The next class (most critical first), with Poisson arrivals at `rate_per_s`.
    pub fn class(mut self, name: &str, rate_per_s: f64) -> Workload {
        self.classes.push(WorkloadClass { name: name.to_string(), rate_per_s, deadline_ms: None, steps: Vec::new() });
        self
    }

    /// A deadline for `class` (what goodput counts as in time).
    pub fn deadline_ms(mut self, class: &str, ms: f64) -> Workload {
        match self.classes.iter_mut().find(|c| c.name == class) {
            Some(c) => c.deadline_ms = Some(ms),
            None => self.unknown.push(class.to_string()),
        }
        self
    }

    /// `class` arrives at `rate_per_s` from `from_s` to `to_s` (a burst or a drop).
    pub fn step(mut self, class: &str, from_s: f64, to_s: f64, rate_per_s: f64) -> Workload {
        match self.classes.iter_mut().find(|c| c.name == class) {
            Some(c) => c.steps.push((from_s, to_s, rate_per_s)),
            None => self.unknown.push(class.to_string()),
        }
        self
    }

    /// The client gives up on an attempt after `ms`.
    pub fn client_timeout_ms(mut self, ms: f64) -> Workload {
        self.client.push(format!("timeout_ms = {ms}"));
        self
    }

    /// The client makes up to `attempts` attempts, `backoff_ms` apart (needs a timeout).
    pub fn retries(mut self, attempts: u32, backoff_ms: f64) -> Workload {
        self.client.push(format!("max_attempts = {attempts}"));
        self.client.push(format!("backoff_ms = {backoff_ms}"));
        self
    }

    /// The network between client and server is cut from `from_s` to `to_s`.
    pub fn partition(mut self, from_s: f64, to_s: f64) -> Workload {
        self.partitions.push((from_s, to_s));
        self
    }

    /// The server host crashes at `at_s` and is down for `down_s` (what is inside is lost).
    pub fn crash(mut self, at_s: f64, down_s: f64) -> Workload {
        self.crashes.push((at_s, down_s));
        self
    }

    /// One-way network latency.
    pub fn latency_ms(mut self, ms: f64) -> Workload {
        self.latency_ms = Some(ms);
        self
    }

    /// The workload as scenario text.
    ///
    /// # Errors
    ///
    /// [`ExperimentError::UnknownClass`] if `deadline_ms` or `step` named a class not added
    /// before it.
    pub fn toml(&self) -> Result<String, ExperimentError> {
        if let Some(class) = self.unknown.first() {
            return Err(ExperimentError::UnknownClass(class.clone()));
        }
        let mut s = format!(
            "schema = 1\nname = \"experiment\"\nduration_s = {}\nwarmup_s = {}\nworkers = {}\n\
             service = {{ kind = \"{}\", mean_ms = {} }}\n",
            self.duration_s, self.warmup_s, self.workers, self.service.0, self.service.1
        );
        if let Some(seed) = self.seed {
            s += &format!("seed = {seed}\n");
        }
        for WorkloadClass { name, rate_per_s: rate, deadline_ms: deadline, steps } in &self.classes {
            s += &format!("[[class]]\nname = \"{name}\"\n");
            if let Some(d) = deadline {
                s += &format!("deadline_ms = {d}\n");
            }
            let steps: Vec<String> =
                steps.iter().map(|(f, t, r)| format!("{{ from_s = {f}, to_s = {t}, rate_per_s = {r} }}")).collect();
            s += &format!("arrivals = {{ kind = \"poisson\", rate_per_s = {rate}, steps = [{}] }}\n", steps.join(", "));
        }
        if !self.client.is_empty() {
            s += &format!("[client]\n{}\n", self.client.join("\n"));
        }
        let windows = |v: &[(f64, f64)], a: &str, b: &str| {
            let v: Vec<String> = v.iter().map(|(x, y)| format!("{{ {a} = {x}, {b} = {y} }}")).collect();
            v.join(", ")
        };
        if self.latency_ms.is_some() || !self.partitions.is_empty() || !self.crashes.is_empty() {
            s += "[faults]\n";
            if let Some(ms) = self.latency_ms {
                s += &format!("latency_ms = {ms}\n");
            }
            s += &format!("partition = [{}]\n", windows(&self.partitions, "from_s", "to_s"));
            s += &format!("crash = [{}]\n", windows(&self.crashes, "at_s", "down_s"));
        }
        Ok(s)
    }
}
