//! Scenario files: TOML, `schema = 1`, unknown fields rejected, units in key names. Every
//! problem is a [`ScenarioError`] with the file, line, column and field.

use std::fmt;
use std::ops::Range;

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};
use toml::Spanned;
use veltrix_engine::{Adaptive, BuildError, ClassSpec, Config, OverloadPolicy, SchedulerMode};

/// A number that must be finite and > 0.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Positive(pub f64);
/// A number that must be finite and ≥ 0.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct NonNegative(pub f64);
/// A number in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Fraction(pub f64);

fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Number;
    impl de::Visitor<'_> for Number {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
    }
    d.deserialize_any(Number)
}

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = number(d)?;
        if v.is_finite() && v > 0.0 { Ok(Positive(v)) } else { Err(de::Error::custom(format!("must be > 0, got {v}"))) }
    }
}

impl<'de> Deserialize<'de> for NonNegative {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = number(d)?;
        if v.is_finite() && v >= 0.0 {
            Ok(NonNegative(v))
        } else {
            Err(de::Error::custom(format!("must be ≥ 0, got {v}")))
        }
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = number(d)?;
        if v > 0.0 && v <= 1.0 {
            Ok(Fraction(v))
        } else {
            Err(de::Error::custom(format!("must be in (0, 1], got {v}")))
        }
    }
}

/// The schema version this simulator reads.
pub const SCHEMA: u32 = 1;

/// A parsed, validated scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Must be 1.
    pub schema: Spanned<u32>,
    /// Short name (S1 … S6).
    pub name: String,
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// Seed used when the command line gives none.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Simulated time during which clients offer load.
    pub duration_s: Positive,
    /// Leading time excluded from latency statistics.
    #[serde(default)]
    pub warmup_s: NonNegative,
    /// How long a handler works on an event.
    pub service: Service,
    /// Worker concurrency of the server.
    #[serde(default = "one")]
    pub workers: u32,
    /// The simulation's step in whole milliseconds (default 1). Results do not depend on it (the
    /// service model decides in exact time, see `run`); a longer step runs long service times
    /// faster.
    #[serde(default = "one")]
    pub tick_ms: u32,
    /// The classes, most critical first.
    #[serde(rename = "class")]
    pub classes: Spanned<Vec<ClassDef>>,
    /// Client behaviour.
    #[serde(default)]
    pub client: Client,
    /// Injected faults.
    #[serde(default)]
    pub faults: Faults,
    /// How to judge convergence after each change (see `report::convergence`); off without it.
    #[serde(default)]
    pub convergence: Option<ConvergenceDef>,
    /// The systems as written (validated into `systems`).
    #[serde(rename = "system", default)]
    raw_systems: Option<Spanned<Vec<RawSystem>>>,
    /// The systems compared, each behind the same server front end.
    #[serde(skip)]
    pub systems: Vec<SystemDef>,
    /// Expectations checked after the run.
    #[serde(default)]
    pub expect: Expect,
}

fn one() -> u32 {
    1
}

/// Service-time distribution.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Service {
    /// Exponential (M).
    Exponential {
        /// Mean.
        mean_ms: Positive,
    },
    /// Constant (D).
    Deterministic {
        /// The time.
        mean_ms: Positive,
    },
    /// `slow_ms` with probability `slow_fraction`, else `fast_ms`.
    Bimodal {
        /// Fast mode.
        fast_ms: Positive,
        /// Slow mode.
        slow_ms: Positive,
        /// Probability of the slow mode.
        slow_fraction: Fraction,
    },
    /// Lognormal with the given mean and shape.
    Lognormal {
        /// Mean.
        mean_ms: Positive,
        /// σ of the underlying normal.
        sigma: NonNegative,
    },
}

impl Service {
    /// The mean, in ms.
    pub fn mean_ms(&self) -> f64 {
        match *self {
            Service::Exponential { mean_ms }
            | Service::Deterministic { mean_ms }
            | Service::Lognormal { mean_ms, .. } => mean_ms.0,
            Service::Bimodal { fast_ms, slow_ms, slow_fraction } => {
                fast_ms.0 * (1.0 - slow_fraction.0) + slow_ms.0 * slow_fraction.0
            }
        }
    }
}

/// One class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassDef {
    /// Unique name.
    pub name: Spanned<String>,
    /// Time after arrival past which a result is useless (goodput counts only results before it).
    #[serde(default)]
    pub deadline_ms: Option<Positive>,
    /// Arrival process.
    pub arrivals: Arrivals,
}

/// Arrival process of a class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrivals {
    /// Poisson or evenly spaced.
    pub kind: ArrivalKind,
    /// Base rate.
    pub rate_per_s: NonNegative,
    /// Windows with another rate (bursts, steps).
    #[serde(default)]
    pub steps: Vec<RateStep>,
}

impl Arrivals {
    /// The rate at `t` seconds: that of the first step window holding `t`, else the base rate.
    pub fn rate_at(&self, t: f64) -> f64 {
        self.steps.iter().find(|s| s.from_s.0 <= t && t < s.to_s.0).map_or(self.rate_per_s.0, |s| s.rate_per_s.0)
    }

    /// Where the rate may change inside `(0, end)`, then `end`: the ends of the constant pieces.
    pub fn piece_ends(&self, end: f64) -> Vec<f64> {
        let mut ends: Vec<f64> =
            self.steps.iter().flat_map(|s| [s.from_s.0, s.to_s.0]).filter(|&b| b > 0.0 && b < end).collect();
        ends.push(end);
        ends.sort_by(f64::total_cmp);
        ends.dedup();
        ends
    }

    /// The expected number of arrivals in `[0, end)` seconds.
    pub fn expected(&self, end: f64) -> f64 {
        let mut from = 0.0;
        let mut total = 0.0;
        for to in self.piece_ends(end) {
            total += self.rate_at(from) * (to - from);
            from = to;
        }
        total
    }
}

/// Arrival kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArrivalKind {
    /// Exponential inter-arrival times.
    Poisson,
    /// Evenly spaced.
    Constant,
}

/// A window `[from_s, to_s)` with its own rate.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateStep {
    /// Start.
    pub from_s: NonNegative,
    /// End.
    pub to_s: Positive,
    /// Rate inside the window.
    pub rate_per_s: NonNegative,
}

/// Client behaviour.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Give up waiting after this long (and retry, if attempts remain).
    #[serde(default)]
    pub timeout_ms: Option<Positive>,
    /// Attempts per request, the first included.
    #[serde(default = "one")]
    pub max_attempts: u32,
    /// Wait before a retry.
    #[serde(default)]
    pub backoff_ms: NonNegative,
    /// Retries allowed as a fraction of fresh requests (a token bucket); none if absent.
    #[serde(default)]
    pub retry_budget: Option<Fraction>,
}

impl Default for Client {
    fn default() -> Self {
        Client { timeout_ms: None, max_attempts: 1, backoff_ms: NonNegative(0.0), retry_budget: None }
    }
}

/// Faults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Base one-way network latency.
    #[serde(default)]
    pub latency_ms: NonNegative,
    /// Extra random latency, up to this.
    #[serde(default)]
    pub jitter_ms: NonNegative,
    /// Windows where client and server cannot talk.
    #[serde(default)]
    pub partition: Vec<Window>,
    /// Windows where every service time is divided by `factor` (capacity × factor).
    #[serde(default)]
    pub capacity_drop: Vec<CapacityDrop>,
    /// Graceful server restarts: the engine shuts down (backlog dead-lettered) and starts afresh.
    #[serde(default)]
    pub restart: Vec<Restart>,
    /// Hard crashes of the server host: its memory is gone (queued and in-flight events are
    /// lost, counted as `crashed`); it comes back `down_s` later.
    #[serde(default)]
    pub crash: Vec<Crash>,
    /// Service times that drift (at most one).
    #[serde(default)]
    pub service_drift: Vec<Drift>,
}

impl Faults {
    /// How much of its full speed the server has at `t_s`: the smallest capacity-drop factor in
    /// force, divided by the drift's service-time multiplier.
    pub fn capacity_factor(&self, t_s: f64) -> f64 {
        let drop = self
            .capacity_drop
            .iter()
            .filter(|d| d.from_s.0 <= t_s && t_s < d.to_s.0)
            .map(|d| d.factor.0)
            .fold(1.0, f64::min);
        let drift = self.service_drift.first().map_or(1.0, |d| {
            let x = ((t_s - d.from_s.0) / (d.to_s.0 - d.from_s.0)).clamp(0.0, 1.0);
            1.0 + (d.factor.0 - 1.0) * x
        });
        drop / drift
    }
}

/// `[convergence]`: after each change (an arrival step's start or end, a capacity drop's start or
/// end, a drift's start), a system has converged once, until the next change, its p99 queueing
/// delay stays within 1.25 × `target_delay_ms` and its goodput within 10 % of what it could be
/// (the lesser of the fresh load and the capacity); see `converge`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvergenceDef {
    /// The queueing delay a system should hold.
    pub target_delay_ms: Positive,
    /// Classes held to a target of their own.
    #[serde(default)]
    pub class: Vec<ConvergenceClass>,
}

/// A class's own target in `[convergence]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvergenceClass {
    /// Which class.
    pub name: Spanned<String>,
    /// Its target queueing delay.
    pub target_delay_ms: Positive,
}

impl ConvergenceDef {
    /// The target of each class of `names` (ms), most critical first.
    pub fn targets_ms(&self, names: &[String]) -> Vec<f64> {
        names
            .iter()
            .map(|n| {
                self.class
                    .iter()
                    .find(|c| c.name.get_ref() == n)
                    .map_or(self.target_delay_ms.0, |c| c.target_delay_ms.0)
            })
            .collect()
    }
}

/// A slow change of the service time: its multiplier moves linearly from 1 at `from_s` to
/// `factor` at `to_s`, and stays there.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    /// Start.
    pub from_s: NonNegative,
    /// End.
    pub to_s: Positive,
    /// The service time's multiplier from `to_s` on.
    pub factor: Positive,
}

/// A hard crash.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crash {
    /// When.
    pub at_s: Positive,
    /// How long the host stays down.
    pub down_s: Positive,
}

/// A time window.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start.
    pub from_s: NonNegative,
    /// End.
    pub to_s: Positive,
}

/// Capacity drop.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityDrop {
    /// Start.
    pub from_s: NonNegative,
    /// End.
    pub to_s: Positive,
    /// Remaining capacity, in (0, 1].
    pub factor: Fraction,
}

/// A restart.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// When.
    pub at_s: Positive,
}

/// A `[[system]]` table as written: flat, because spans do not survive serde's internally
/// tagged enums. Validation turns it into a [`SystemDef`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    kind: Spanned<String>,
    name: Spanned<String>,
    #[serde(default)]
    capacity: Option<u32>,
    #[serde(default)]
    scheduler: Option<SchedulerDef>,
    #[serde(default)]
    cap: Option<f64>,
    #[serde(default)]
    window: Option<u32>,
    #[serde(default)]
    deadlines: Option<bool>,
    #[serde(default)]
    target_delay_ms: Option<Positive>,
    #[serde(default)]
    adaptive_interval_ms: Option<Positive>,
    #[serde(default)]
    class: Vec<VeltrixClass>,
}

/// A system under test.
#[derive(Debug, Clone)]
pub enum SystemDef {
    /// One unbounded FIFO queue.
    NaiveFifo {
        /// Name in the report.
        name: Spanned<String>,
    },
    /// One FIFO queue of `capacity`; overflow is dropped silently (tail drop).
    Fifo {
        /// Name in the report.
        name: Spanned<String>,
        /// Bound.
        capacity: u32,
    },
    /// The Veltrix engine.
    Veltrix {
        /// Name in the report.
        name: Spanned<String>,
        /// `strict`, `drr` or `capped` (default).
        scheduler: SchedulerDef,
        /// Capped tier's share (default 0.5).
        cap: f64,
        /// Capped tier's window (default 16).
        window: u32,
        /// Queue bound of every class unless overridden (default 100).
        capacity: u32,
        /// Give each event its class deadline (and the client timeout) as its engine deadline
        /// (default true).
        deadlines: bool,
        /// Adaptive admission: the target queueing delay (ms) and the control interval (ms,
        /// default the target); `None` for static capacities.
        adaptive: Option<(f64, Option<f64>)>,
        /// Per-class settings.
        classes: Vec<VeltrixClass>,
    },
    /// The Veltrix engine with a user's own `Config` and handler (the `Experiment` API; not
    /// written in scenario files).
    Custom {
        /// Name in the report.
        name: Spanned<String>,
        /// Give each event its class deadline (and the client timeout) as its engine deadline.
        deadlines: bool,
    },
}

impl SystemDef {
    /// The engine's `Config` of a `veltrix` system over the scenario's classes (most critical
    /// first), with the defaults of docs/scenarios.md for what the system leaves out; `None` for
    /// the other systems. The engine's own rules decide what is valid: the scenario's checks and
    /// the run build it the same way.
    pub fn engine_config(&self, scenario_classes: &[String]) -> Option<Result<Config, BuildError>> {
        let SystemDef::Veltrix { scheduler, cap, window, capacity, classes, adaptive, .. } = self else {
            return None;
        };
        let n = scenario_classes.len();
        let b = scenario_classes.iter().enumerate().fold(Config::builder(), |b, (k, name)| {
            let o = classes.iter().find(|o| o.name.get_ref() == name);
            // The defaults of docs/scenarios.md: weights ×4 per step of criticality, the lower
            // half of the classes shed their oldest, the upper half reject.
            let default_weight = 1u32 << (2 * (n - 1 - k).min(8)).min(16);
            let default_policy = if k < n.div_ceil(2) { OverloadPolicy::Reject } else { OverloadPolicy::ShedOldest };
            let mut spec = ClassSpec::new(name.clone(), o.and_then(|o| o.capacity).unwrap_or(*capacity) as usize)
                .with_weight(o.and_then(|o| o.weight).unwrap_or(default_weight))
                .with_policy(match o.and_then(|o| o.policy) {
                    Some(PolicyDef::Backpressure) => OverloadPolicy::Backpressure,
                    Some(PolicyDef::Reject) => OverloadPolicy::Reject,
                    Some(PolicyDef::ShedOldest) => OverloadPolicy::ShedOldest,
                    None => default_policy,
                });
            if let Some(o) = o
                && let Some(t) = o.codel_target_ms
            {
                let interval = o.codel_interval_ms.map_or(100.0, |i| i.0);
                spec = spec.with_codel(Duration::from_secs_f64(t.0 / 1e3), Duration::from_secs_f64(interval / 1e3));
            }
            if let Some(t) = o.and_then(|o| o.target_delay_ms) {
                spec = spec.with_target_delay(Duration::from_secs_f64(t.0 / 1e3));
            }
            b.class(spec)
        });
        let b = match adaptive {
            Some((target, interval)) => {
                let a = Adaptive::new(Duration::from_secs_f64(target / 1e3));
                b.adaptive(interval.map_or(a, |i| a.with_interval(Duration::from_secs_f64(i / 1e3))))
            }
            None => b,
        };
        let mode = match scheduler {
            SchedulerDef::Strict => SchedulerMode::Strict,
            SchedulerDef::Drr => SchedulerMode::Drr,
            SchedulerDef::Capped => SchedulerMode::CappedStrict { cap: *cap, window: *window },
        };
        Some(b.scheduler(mode).build())
    }

    /// The system's name.
    pub fn name(&self) -> &str {
        match self {
            SystemDef::NaiveFifo { name }
            | SystemDef::Fifo { name, .. }
            | SystemDef::Veltrix { name, .. }
            | SystemDef::Custom { name, .. } => name.get_ref(),
        }
    }
}

impl RawSystem {
    /// The validated system.
    fn into_def(self, i: usize) -> Result<SystemDef, Invalid> {
        let field = |f: &str| format!("system[{i}].{f}");
        let kind = self.kind.get_ref().as_str();
        // The keys only some kinds read, and whether this system sets each.
        let set = [
            ("capacity", self.capacity.is_some(), kind == "naive-fifo"),
            ("scheduler", self.scheduler.is_some(), kind != "veltrix"),
            ("cap", self.cap.is_some(), kind != "veltrix"),
            ("window", self.window.is_some(), kind != "veltrix"),
            ("deadlines", self.deadlines.is_some(), kind != "veltrix"),
            ("target_delay_ms", self.target_delay_ms.is_some(), kind != "veltrix"),
            ("adaptive_interval_ms", self.adaptive_interval_ms.is_some(), kind != "veltrix"),
            ("class", !self.class.is_empty(), kind != "veltrix"),
        ];
        if KINDS.contains(&kind)
            && let Some((key, ..)) = set.iter().find(|(_, is_set, misplaced)| *is_set && *misplaced)
        {
            let readers = if *key == "capacity" { "`fifo` and `veltrix` systems" } else { "`veltrix` systems" };
            return Err((
                Some(self.kind.span()),
                field(key),
                format!("`{key}` does not apply to a `{kind}` system (only {readers} read it)"),
            ));
        }
        match kind {
            "naive-fifo" => Ok(SystemDef::NaiveFifo { name: self.name }),
            "fifo" => match self.capacity {
                Some(c) if c > 0 => Ok(SystemDef::Fifo { name: self.name, capacity: c }),
                _ => Err((Some(self.name.span()), field("capacity"), "a `fifo` system needs capacity ≥ 1".into())),
            },
            "veltrix" => {
                let adaptive = self.target_delay_ms.map(|t| (t.0, self.adaptive_interval_ms.map(|i| i.0)));
                // Keys of adaptive admission on a static system.
                let stray = if self.adaptive_interval_ms.is_some() {
                    Some((self.name.span(), "adaptive_interval_ms".to_string()))
                } else {
                    let mut targets = self.class.iter().enumerate().filter(|(_, c)| c.target_delay_ms.is_some());
                    targets.next().map(|(j, c)| (c.name.span(), format!("class[{j}].target_delay_ms")))
                };
                if let (None, Some((span, key))) = (adaptive, stray) {
                    let message = "applies to adaptive admission only: set the system's `target_delay_ms` too";
                    return Err((Some(span), field(&key), message.into()));
                }
                Ok(SystemDef::Veltrix {
                    name: self.name,
                    scheduler: self.scheduler.unwrap_or_default(),
                    cap: self.cap.unwrap_or(0.5),
                    window: self.window.unwrap_or(16),
                    // Under adaptive admission the capacity only bounds memory: generous.
                    capacity: self.capacity.unwrap_or(if adaptive.is_some() { 10_000 } else { 100 }),
                    deadlines: self.deadlines.unwrap_or(true),
                    adaptive,
                    classes: self.class,
                })
            }
            other => Err((
                Some(self.kind.span()),
                field("kind"),
                format!(
                    "unknown system kind `{other}` ({}){}",
                    KINDS.join(", "),
                    crate::suggest::hint(other, KINDS.into_iter())
                ),
            )),
        }
    }
}

/// The kinds of system a scenario can compare.
const KINDS: [&str; 3] = ["naive-fifo", "fifo", "veltrix"];

impl SystemDef {
    fn name_span(&self) -> Range<usize> {
        match self {
            SystemDef::NaiveFifo { name }
            | SystemDef::Fifo { name, .. }
            | SystemDef::Veltrix { name, .. }
            | SystemDef::Custom { name, .. } => name.span(),
        }
    }
}

/// Scheduler choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerDef {
    /// Strict priority.
    Strict,
    /// Weighted DRR.
    Drr,
    /// Capped strict tier + DRR.
    #[default]
    Capped,
}

/// Veltrix settings of one class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VeltrixClass {
    /// Which class.
    pub name: Spanned<String>,
    /// Queue bound.
    #[serde(default)]
    pub capacity: Option<u32>,
    /// `backpressure`, `reject` or `shed-oldest`.
    #[serde(default)]
    pub policy: Option<PolicyDef>,
    /// DRR weight.
    #[serde(default)]
    pub weight: Option<u32>,
    /// CoDel target.
    #[serde(default)]
    pub codel_target_ms: Option<Positive>,
    /// CoDel interval.
    #[serde(default)]
    pub codel_interval_ms: Option<Positive>,
    /// The class's own target queueing delay under adaptive admission.
    #[serde(default)]
    pub target_delay_ms: Option<Positive>,
}

/// Overload policy choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyDef {
    /// Refuse with `Full` (the front end never waits).
    Backpressure,
    /// Refuse with `Rejected`.
    Reject,
    /// Shed the oldest.
    ShedOldest,
}

/// `[expect]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Lines like `veltrix.CRITICAL.latency_ms_p99 < 10`.
    #[serde(default)]
    pub checks: Vec<Spanned<String>>,
}

/// A problem with a scenario file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file (or `<built-in NAME>`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field, as a dotted path where known.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: field `{}`: {}", self.file, self.line, self.column, self.field, self.message)
    }
}

impl std::error::Error for ScenarioError {}

fn locate(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

impl Scenario {
    /// Parses and validates `src`, read from `file`.
    ///
    /// # Errors
    ///
    /// A located [`ScenarioError`] for a syntax error, a type error, an unknown field, a value
    /// out of range, or a cross-field problem (duplicate names, an expectation naming an
    /// unknown system or class, a window that ends before it starts, …).
    pub fn parse(src: &str, file: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse_as(src, file, false)
    }

    /// Parses and validates the workload of an [`Experiment`](crate::Experiment): a scenario
    /// without `[[system]]` tables (the system is the experiment's own engine).
    ///
    /// # Errors
    ///
    /// As [`Scenario::parse`], and one for a `[[system]]` table.
    pub fn parse_experiment(src: &str, file: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse_as(src, file, true)
    }

    fn parse_as(src: &str, file: &str, experiment: bool) -> Result<Scenario, ScenarioError> {
        let err = |span: Option<Range<usize>>, field: &str, message: String| {
            let (line, column) = span.map_or((1, 1), |s| locate(src, s.start));
            ScenarioError { file: file.to_string(), line, column, field: field.to_string(), message }
        };
        let mut scenario: Scenario = toml::from_str(src).map_err(|e| {
            let message = with_hint(e.message());
            let field = field_of(&message)
                .or_else(|| e.span().and_then(|sp| key_at(src, sp.start)))
                .unwrap_or_else(|| "-".to_string());
            err(e.span(), &field, message)
        })?;
        // A check that knows the field but not where it is written points at the class list;
        // the field's own place in the file is better, when the file spells it out.
        let systems = scenario.raw_systems.as_ref().map(|r| (r.span(), r.get_ref().len()));
        match (experiment, systems) {
            (true, Some((span, _))) => {
                let message = "an experiment runs your engine: its workload has no [[system]] tables".to_string();
                return Err(err(Some(span), "system", message));
            }
            (false, None | Some((_, 0))) => {
                return Err(err(None, "system", "at least one [[system]] is needed".to_string()));
            }
            _ => {}
        }
        scenario.validate().map_err(|(span, field, message)| err(span_of(src, &field).or(span), &field, message))?;
        Ok(scenario)
    }

    /// Every rule a parsed file must meet, section by section; the first broken one is returned
    /// with the field it concerns.
    fn validate(&mut self) -> Result<(), Invalid> {
        self.systems = self
            .raw_systems
            .as_ref()
            .map_or(&[][..], |r| r.get_ref())
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, r)| r.into_def(i))
            .collect::<Result<_, _>>()?;
        if *self.schema.get_ref() != SCHEMA {
            return bad(
                self.schema.span(),
                "schema",
                format!("schema {} is not supported (this simulator reads {SCHEMA})", self.schema.get_ref()),
            );
        }
        self.validate_classes()?;
        self.validate_limits()?;
        self.validate_faults()?;
        self.validate_systems()?;
        self.validate_convergence()?;
        self.validate_expect()
    }

    fn validate_classes(&self) -> Result<(), Invalid> {
        let classes = self.classes.get_ref();
        if classes.is_empty() || classes.len() > veltrix_engine::MAX_CLASSES {
            return bad(
                self.classes.span(),
                "class",
                format!("1 to {} classes are needed, got {}", veltrix_engine::MAX_CLASSES, classes.len()),
            );
        }
        for (i, c) in classes.iter().enumerate() {
            if c.name.get_ref().is_empty() || classes[..i].iter().any(|o| o.name.get_ref() == c.name.get_ref()) {
                return bad(
                    c.name.span(),
                    &format!("class[{i}].name"),
                    format!("class name `{}` is empty or repeated", c.name.get_ref()),
                );
            }
            for (j, step) in c.arrivals.steps.iter().enumerate() {
                if step.to_s.0 <= step.from_s.0 {
                    let field = format!("class[{i}].arrivals.steps[{j}].to_s");
                    return bad(c.name.span(), &field, "to_s must be after from_s".into());
                }
            }
            if c.deadline_ms.is_some_and(|d| d.0 > 8.64e7) {
                return bad(c.name.span(), &format!("class[{i}].deadline_ms"), "at most one day".into());
            }
        }
        // Every arrival is drawn before the run and held in memory: bound them all.
        let expected: Vec<f64> = classes.iter().map(|c| c.arrivals.expected(self.duration_s.0)).collect();
        let total: f64 = expected.iter().sum();
        if total > MAX_ARRIVALS as f64 {
            let (k, _) = expected.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).expect("at least one class");
            let field = format!("class[{k}].arrivals.{}", busiest_rate(&classes[k].arrivals, self.duration_s.0));
            return bad(
                classes[k].name.span(),
                &field,
                format!(
                    "the rates and duration_s give about {total:.3e} arrivals (class `{}` the most); at most \
                     {MAX_ARRIVALS} are simulated",
                    classes[k].name.get_ref()
                ),
            );
        }
        Ok(())
    }

    /// Ranges that keep every time in nanoseconds well inside u64, and the host and client sane.
    fn validate_limits(&self) -> Result<(), Invalid> {
        let limits: [(&str, f64, f64); 6] = [
            ("duration_s", self.duration_s.0, 1e6),
            ("warmup_s", self.warmup_s.0, self.duration_s.0),
            ("service.mean_ms", self.service.mean_ms(), 3.6e6),
            ("faults.latency_ms", self.faults.latency_ms.0, 6e4),
            ("faults.jitter_ms", self.faults.jitter_ms.0, 6e4),
            ("client.timeout_ms", self.client.timeout_ms.map_or(0.0, |t| t.0), 8.64e7),
        ];
        for (field, value, max) in limits {
            if value > max {
                return bad(self.classes.span(), field, format!("{value} is above the maximum {max}"));
            }
        }
        let rules: [(bool, &str, &str); 7] = [
            (self.tick_ms == 0, "tick_ms", "the step is at least 1 ms (tokio's timer resolution)"),
            (self.tick_ms > 1000, "tick_ms", "the step is at most 1000 ms"),
            (self.workers == 0, "workers", "at least 1 worker is needed"),
            (self.workers > 1024, "workers", "at most 1024 workers"),
            (self.client.max_attempts == 0, "client.max_attempts", "at least 1 attempt is needed"),
            (
                self.client.max_attempts > 255,
                "client.max_attempts",
                "at most 255 attempts (the attempt travels in one byte)",
            ),
            (
                self.client.max_attempts > 1 && self.client.timeout_ms.is_none(),
                "client.max_attempts",
                "retries need a timeout (client.timeout_ms)",
            ),
        ];
        match rules.into_iter().find(|r| r.0) {
            Some((_, field, message)) => bad(self.classes.span(), field, message.into()),
            None => Ok(()),
        }
    }

    /// Each window ends after it starts and before the run does; windows of one kind do not
    /// overlap (a release would end the other window early).
    fn validate_faults(&self) -> Result<(), Invalid> {
        let end = self.duration_s.0;
        let f = &self.faults;
        if f.service_drift.len() > 1 {
            return bad(self.classes.span(), "faults.service_drift[1]", "at most one drift".into());
        }
        let kinds: [(&str, Vec<Span>, &str); 5] = [
            ("faults.partition", f.partition.iter().map(|w| (w.from_s.0, w.to_s.0)).collect(), "to_s"),
            ("faults.capacity_drop", f.capacity_drop.iter().map(|w| (w.from_s.0, w.to_s.0)).collect(), "to_s"),
            ("faults.crash", f.crash.iter().map(|c| (c.at_s.0, c.at_s.0 + c.down_s.0)).collect(), "down_s"),
            ("faults.restart", f.restart.iter().map(|r| (r.at_s.0, r.at_s.0)).collect(), "at_s"),
            ("faults.service_drift", f.service_drift.iter().map(|w| (w.from_s.0, w.to_s.0)).collect(), "to_s"),
        ];
        for (name, windows, end_field) in kinds {
            for (j, &(from, to)) in windows.iter().enumerate() {
                let field = format!("{name}[{j}].{end_field}");
                if to < from || (to == from && end_field == "to_s") {
                    return bad(self.classes.span(), &field, "to_s must be after from_s".into());
                }
                if to >= end {
                    return bad(self.classes.span(), &field, format!("must end before duration_s ({end} s)"));
                }
            }
            if name == "faults.capacity_drop" || name == "faults.restart" {
                // Capacity drops combine (the smallest factor applies); restarts are instants.
                continue;
            }
            for (j, &(from, to)) in windows.iter().enumerate() {
                let overlaps = |&(k, &(f2, t2)): &(usize, &Span)| k != j && f2 < to && from < t2;
                if let Some((k, _)) = windows.iter().enumerate().find(overlaps) {
                    let field = format!("{name}[{j}]");
                    return bad(self.classes.span(), &field, format!("overlaps {name}[{k}]"));
                }
            }
        }
        Ok(())
    }

    fn validate_systems(&self) -> Result<(), Invalid> {
        let (systems, classes) = (&self.systems, self.classes.get_ref());
        for (i, s) in systems.iter().enumerate() {
            if s.name().is_empty() || s.name().contains('.') || systems[..i].iter().any(|o| o.name() == s.name()) {
                return bad(
                    s.name_span(),
                    &format!("system[{i}].name"),
                    format!("system name `{}` is empty, has a dot, or is repeated", s.name()),
                );
            }
            let SystemDef::Veltrix { classes: overrides, capacity, name, .. } = s else { continue };
            // The simulator's own limits; the engine's rules come next, from the engine.
            const MAX_CAPACITY: &str = "at most 1,000,000 events per class (allocated up front)";
            if *capacity > 1_000_000 {
                return bad(name.span(), &format!("system[{i}].capacity"), MAX_CAPACITY.into());
            }
            for (j, o) in overrides.iter().enumerate() {
                let field = |key: &str| format!("system[{i}].class[{j}].{key}");
                if !classes.iter().any(|c| c.name.get_ref() == o.name.get_ref()) {
                    let hint =
                        crate::suggest::hint(o.name.get_ref(), classes.iter().map(|c| c.name.get_ref().as_str()));
                    return bad(o.name.span(), &field("name"), format!("no class `{}`{hint}", o.name.get_ref()));
                }
                if o.capacity.is_some_and(|c| c > 1_000_000) {
                    return bad(o.name.span(), &field("capacity"), MAX_CAPACITY.into());
                }
                let codel_ok = |v: Option<Positive>| v.is_none_or(|v| (0.001..=3.6e6).contains(&v.0));
                for (key, value) in [("codel_target_ms", o.codel_target_ms), ("codel_interval_ms", o.codel_interval_ms)]
                {
                    if !codel_ok(value) {
                        return bad(o.name.span(), &field(key), "codel times must be in [0.001, 3600000] ms".into());
                    }
                }
            }
            if let Some(Err(e)) = s.engine_config(&self.class_names()) {
                // At the class's override when it sets the field, else at the system.
                let at = |class: &str, key: &str, set: fn(&VeltrixClass) -> bool| match overrides
                    .iter()
                    .position(|o| o.name.get_ref() == class && set(o))
                {
                    Some(j) => (overrides[j].name.span(), format!("system[{i}].class[{j}].{key}")),
                    None => (name.span(), format!("system[{i}].{key}")),
                };
                let (span, field) = match &e {
                    BuildError::ZeroCapacity { class } | BuildError::CapacityTooLarge { class, .. } => {
                        at(class, "capacity", |o| o.capacity.is_some())
                    }
                    BuildError::ZeroWeight { class } => at(class, "weight", |o| o.weight.is_some()),
                    BuildError::ZeroCodelParameter { class } => {
                        at(class, "codel_target_ms", |o| o.codel_target_ms.is_some())
                    }
                    BuildError::CapOutOfRange { .. } => (name.span(), format!("system[{i}].cap")),
                    BuildError::ZeroWindow => (name.span(), format!("system[{i}].window")),
                    BuildError::ZeroAdaptiveParameter { class: Some(class) } => {
                        at(class, "target_delay_ms", |o| o.target_delay_ms.is_some())
                    }
                    BuildError::ZeroAdaptiveParameter { class: None } => {
                        (name.span(), format!("system[{i}].target_delay_ms"))
                    }
                    // The scenario's classes were checked above; a rule the engine adds later
                    // is still reported, at the system.
                    _ => (name.span(), format!("system[{i}]")),
                };
                return bad(span, &field, e.to_string());
            }
        }
        Ok(())
    }

    /// `[convergence]` names classes of this file.
    fn validate_convergence(&self) -> Result<(), Invalid> {
        let Some(def) = &self.convergence else { return Ok(()) };
        let classes = self.classes.get_ref();
        for (j, c) in def.class.iter().enumerate() {
            if !classes.iter().any(|k| k.name.get_ref() == c.name.get_ref()) {
                let hint = crate::suggest::hint(c.name.get_ref(), classes.iter().map(|k| k.name.get_ref().as_str()));
                return bad(
                    c.name.span(),
                    &format!("convergence.class[{j}].name"),
                    format!("no class `{}`{hint}", c.name.get_ref()),
                );
            }
        }
        Ok(())
    }

    /// Each `[expect]` line parses, names a metric that exists, and a system and class of this
    /// file.
    fn validate_expect(&self) -> Result<(), Invalid> {
        let (systems, classes) = (&self.systems, self.classes.get_ref());
        for (i, line) in self.expect.checks.iter().enumerate() {
            let field = format!("expect.checks[{i}]");
            let check = crate::expect::Check::parse(line.get_ref())
                .and_then(|c| c.check_metric().map(|()| c))
                .map_err(|e| (Some(line.span()), field.clone(), e))?;
            for m in check.metrics() {
                if !systems.iter().any(|s| s.name() == m.system) {
                    let hint = crate::suggest::hint(&m.system, systems.iter().map(SystemDef::name));
                    return bad(line.span(), &field, format!("no system `{}`{hint}", m.system));
                }
                if let Some(class) = &m.class
                    && !classes.iter().any(|c| c.name.get_ref() == class)
                {
                    let hint = crate::suggest::hint(class, classes.iter().map(|c| c.name.get_ref().as_str()));
                    return bad(line.span(), &field, format!("no class `{class}`{hint}"));
                }
            }
        }
        Ok(())
    }

    /// The canonical form hashed into report stamps: the file's meaning, not its spelling.
    pub fn canonical(src: &str) -> String {
        match src.parse::<toml::Table>() {
            Ok(t) => toml::to_string(&t).unwrap_or_else(|_| src.to_string()),
            Err(_) => src.to_string(),
        }
    }

    /// Class names, most critical first.
    pub fn class_names(&self) -> Vec<String> {
        self.classes.get_ref().iter().map(|c| c.name.get_ref().clone()).collect()
    }

    /// Per class: the time after arrival past which an answer is useless — the class deadline or
    /// the client's timeout, whichever is sooner (ns); `None` if neither is set.
    pub fn useful_within_ns(&self) -> Vec<Option<u64>> {
        let ns = |ms: f64| (ms * 1e6) as u64;
        let timeout = self.client.timeout_ms.map(|t| ns(t.0));
        self.classes
            .get_ref()
            .iter()
            .map(|c| match (c.deadline_ms.map(|d| ns(d.0)), timeout) {
                (Some(d), Some(t)) => Some(d.min(t)),
                (d, t) => d.or(t),
            })
            .collect()
    }

    /// Mean service time S̄ in ms.
    pub fn mean_service_ms(&self) -> f64 {
        self.service.mean_ms()
    }
}

/// A time window `(from, to)` in seconds.
type Span = (f64, f64);

/// A broken rule: where (if known), the field's dotted path, and what is wrong.
type Invalid = (Option<Range<usize>>, String, String);

fn bad<T>(span: Range<usize>, field: &str, message: String) -> Result<T, Invalid> {
    Err((Some(span), field.to_string(), message))
}

/// Which rate of `arrivals` brings the most arrivals in `[0, end)`: `rate_per_s` or
/// `steps[j].rate_per_s`.
fn busiest_rate(arrivals: &Arrivals, end: f64) -> String {
    let in_run = |from: f64, to: f64| (to.min(end) - from.min(end)).max(0.0);
    let steps: Vec<f64> = arrivals.steps.iter().map(|s| s.rate_per_s.0 * in_run(s.from_s.0, s.to_s.0)).collect();
    let base = arrivals.expected(end) - steps.iter().sum::<f64>();
    match steps.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) {
        Some((j, &most)) if most > base => format!("steps[{j}].rate_per_s"),
        _ => "rate_per_s".to_string(),
    }
}

/// Where the value at `path` (`workers`, `client.timeout_ms`, `class[2].arrivals.rate_per_s`)
/// is written, or its nearest written ancestor (a default has no place in the file).
fn span_of(src: &str, path: &str) -> Option<Range<usize>> {
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    let mut found = None;
    let mut at: Option<&toml_edit::Item> = None;
    for segment in path.split('.') {
        let (key, index) = match segment.split_once('[') {
            Some((key, rest)) => (key, rest.strip_suffix(']').and_then(|i| i.parse::<usize>().ok())),
            None => (segment, None),
        };
        let Some(mut item) = (match at {
            None => doc.get(key),
            Some(parent) => parent.get(key),
        }) else {
            break;
        };
        found = item.span().or(found);
        if let Some(i) = index {
            match item.get(i) {
                Some(element) => item = element,
                None => break,
            }
            found = item.span().or(found);
        }
        at = Some(item);
    }
    found
}

/// The dotted key of the `key = value` line holding `offset`, under its nearest table header.
fn key_at(src: &str, offset: usize) -> Option<String> {
    let before = &src[..offset.min(src.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = src[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let header = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match header {
        Some(h) => format!("{h}.{key}"),
        None => key.to_string(),
    })
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`"), with the closest
/// expected name if one is close.
fn with_hint(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else { return message.to_string() };
    let Some((field, expected)) = rest.split_once('`') else { return message.to_string() };
    let names = expected.split('`').skip(1).step_by(2);
    format!("{message}{}", crate::suggest::hint(field, names))
}

/// The field a serde message names (`unknown field `x``, `missing field `y``), if any.
fn field_of(message: &str) -> Option<String> {
    if !(message.starts_with("unknown field") || message.starts_with("missing field")) {
        return None;
    }
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

/// The most arrivals a run draws (all classes together): each is held in memory from the start.
pub const MAX_ARRIVALS: u64 = 20_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
schema = 1
name = "t"
duration_s = 10
service = { kind = "exponential", mean_ms = 10 }
[[class]]
name = "A"
arrivals = { kind = "poisson", rate_per_s = 10 }
[[system]]
kind = "naive-fifo"
name = "naive"
"#;

    #[test]
    fn a_minimal_scenario_parses() {
        let s = Scenario::parse(OK, "t.toml").unwrap();
        assert_eq!(s.class_names(), ["A"]);
        assert_eq!(s.mean_service_ms(), 10.0);
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let e = Scenario::parse(&OK.replace("duration_s = 10", "duration_s = 10\nbogus = 1"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "bogus"), "{e}");
        let e = Scenario::parse(&OK.replace("rate_per_s = 10", "rate_per_s = -1"), "t.toml").unwrap_err();
        assert!(e.message.contains("≥ 0"), "{e}");
        assert_eq!(e.line, 8, "{e}");
        let e = Scenario::parse(&OK.replace("schema = 1", "schema = 2"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.column, e.field.as_str()), (2, 10, "schema"), "{e}");
    }

    #[test]
    fn checks_point_at_the_field_they_concern() {
        let e = Scenario::parse(&OK.replace("duration_s = 10", "duration_s = 10\nworkers = 0"), "t.toml").unwrap_err();
        assert_eq!((e.field.as_str(), e.line, e.column), ("workers", 5, 11), "{e}");
        let e = Scenario::parse(&(OK.to_string() + "[client]\nmax_attempts = 3\n"), "t.toml").unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("client.max_attempts", 13), "retries need a timeout: {e}");
        let e =
            Scenario::parse(&OK.replace("duration_s = 10", "duration_s = 10\nwarmup_s = 20"), "t.toml").unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("warmup_s", 5), "{e}");
    }

    #[test]
    fn unknown_names_get_the_closest_known_one() {
        let e = Scenario::parse(&OK.replace("duration_s = 10", "duration_s = 10\nwarmpu_s = 1"), "t.toml").unwrap_err();
        assert!(e.message.ends_with(". Did you mean `warmup_s`?"), "{e}");
        let expect = |line: &str| OK.to_string() + "[expect]\nchecks = [\"" + line + "\"]\n";
        let e = Scenario::parse(&expect("naive.A.goodptu > 1"), "t.toml").unwrap_err();
        assert_eq!(e.field, "expect.checks[0]", "{e}");
        assert!(e.message.ends_with("Did you mean `goodput`?"), "checked by `check`, not at the end of a run: {e}");
        let e = Scenario::parse(&expect("naiv.A.goodput > 1"), "t.toml").unwrap_err();
        assert!(e.message.ends_with("Did you mean `naive`?"), "{e}");
    }

    #[test]
    fn too_many_arrivals_are_refused_before_anything_is_drawn() {
        let e = Scenario::parse(&OK.replace("rate_per_s = 10", "rate_per_s = 1e12"), "t.toml").unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("class[0].arrivals.rate_per_s", 8), "at the rate: {e}");
        assert!(e.message.contains("1.000e13 arrivals"), "{e}");
        // 10 s at 10/s, then a step to 1000/s for the last 2 s: 80 + 2000.
        let steps = "rate_per_s = 10, steps = [{ from_s = 8, to_s = 20, rate_per_s = 1000 }]";
        let s = Scenario::parse(&OK.replace("rate_per_s = 10", steps), "t.toml").unwrap();
        assert_eq!(s.classes.get_ref()[0].arrivals.expected(10.0), 2080.0);
    }

    #[test]
    fn adaptive_systems_and_convergence_are_checked_where_they_are_written() {
        let system = |lines: &str| OK.to_string() + "[[system]]\n" + lines;
        let cases = [
            (
                system("kind = \"fifo\"\nname = \"f\"\ncapacity = 5\ntarget_delay_ms = 5\n"),
                "system[1].target_delay_ms",
                "does not apply",
            ),
            (
                system("kind = \"veltrix\"\nname = \"v\"\nadaptive_interval_ms = 5\n"),
                "system[1].adaptive_interval_ms",
                "adaptive admission only",
            ),
            (
                system("kind = \"veltrix\"\nname = \"v\"\n[[system.class]]\nname = \"A\"\ntarget_delay_ms = 5\n"),
                "system[1].class[0].target_delay_ms",
                "set the system's `target_delay_ms` too",
            ),
            (
                OK.to_string()
                    + "[convergence]\ntarget_delay_ms = 5\nclass = [{ name = \"B\", target_delay_ms = 1 }]\n",
                "convergence.class[0].name",
                "no class `B`. Did you mean `A`?",
            ),
            (
                OK.to_string()
                    + "[faults]\nservice_drift = [{ from_s = 1, to_s = 2, factor = 2 }, { from_s = 3, to_s = 4, factor = 2 }]\n",
                "faults.service_drift[1]",
                "at most one drift",
            ),
            (
                OK.to_string() + "[expect]\nchecks = [\"naive.lost <= 2 * naiv.lost\"]\n",
                "expect.checks[0]",
                "no system `naiv`",
            ),
        ];
        for (src, field, message) in cases {
            let e = Scenario::parse(&src, "t.toml").unwrap_err();
            assert_eq!(e.field, field, "{e}\n{src}");
            assert!(e.message.contains(message), "{e}");
        }
        let s = Scenario::parse(&system("kind = \"veltrix\"\nname = \"v\"\ntarget_delay_ms = 50\n"), "t.toml").unwrap();
        let config = s.systems[1].engine_config(&s.class_names()).unwrap().unwrap();
        assert_eq!(
            config.adaptive().map(|a| (a.target, a.interval)),
            Some((Duration::from_millis(50), Duration::from_millis(50)))
        );
        assert_eq!(config.classes()[0].capacity, 10_000, "adaptive: the capacity only bounds memory");
    }

    #[test]
    fn the_capacity_factor_combines_drops_and_a_linear_drift() {
        let src = OK.to_string()
            + "[faults]\ncapacity_drop = [{ from_s = 2, to_s = 4, factor = 0.5 }]\n"
            + "service_drift = [{ from_s = 1, to_s = 5, factor = 3 }]\n";
        let f = Scenario::parse(&src, "t.toml").unwrap().faults;
        // Before the drift; a quarter of it (service × 1.5) inside the drop; all of it after.
        assert_eq!(
            [f.capacity_factor(0.5), f.capacity_factor(2.0), f.capacity_factor(9.0)],
            [1.0, 0.5 / 1.5, 1.0 / 3.0]
        );
    }

    #[test]
    fn a_veltrix_system_is_checked_by_the_engines_own_rules_at_its_field() {
        let veltrix = "[[system]]\nkind = \"veltrix\"\nname = \"v\"\n";
        let with = |extra: &str| OK.to_string() + veltrix + extra;
        assert!(Scenario::parse(&with(""), "t.toml").is_ok());
        let e = Scenario::parse(&with("cap = 1.5\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "system[1].cap", "{e}");
        assert!(e.message.contains("(0, 1]"), "the engine's message: {e}");
        let e = Scenario::parse(&with("window = 0\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "system[1].window", "{e}");
        let e = Scenario::parse(&with("capacity = 0\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "system[1].capacity", "{e}");
        let e = Scenario::parse(&with("[[system.class]]\nname = \"A\"\nweight = 0\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "system[1].class[0].weight", "{e}");
        assert_eq!(e.line, 17, "at the override's weight: {e}");
    }

    #[test]
    fn each_error_names_the_key_it_is_about_and_its_line() {
        let parse = |src: &str| Scenario::parse(src, "t.toml").unwrap_err();
        let system = |lines: &str| OK.to_string() + "[[system]]\n" + lines;
        // (file, field, line, part of the message)
        let cases = [
            (
                system("kind = \"fifo\"\nname = \"f\"\ncapacity = 5\nscheduler = \"strict\"\n"),
                "system[1].scheduler",
                16,
                "`scheduler` does not apply to a `fifo` system",
            ),
            (
                system("kind = \"naive-fifo\"\nname = \"f\"\ncapacity = 5\n"),
                "system[1].capacity",
                15,
                "only `fifo` and `veltrix` systems",
            ),
            (system("kind = \"veltirx\"\nname = \"v\"\n"), "system[1].kind", 13, "Did you mean `veltrix`?"),
            (
                system("kind = \"veltrix\"\nname = \"v\"\n[[system.class]]\nname = \"A\"\ncodel_interval_ms = 1e9\n"),
                "system[1].class[0].codel_interval_ms",
                17,
                "codel times",
            ),
            (
                system("kind = \"veltrix\"\nname = \"v\"\n[[system.class]]\nname = \"A\"\ncapacity = 2000000\n"),
                "system[1].class[0].capacity",
                17,
                "at most 1,000,000",
            ),
            (
                system("kind = \"veltrix\"\nname = \"v\"\n[[system.class]]\nname = \"B\"\n"),
                "system[1].class[0].name",
                16,
                "no class `B`",
            ),
            // The zero capacity is the system's: the override does not set one.
            (
                system("kind = \"veltrix\"\nname = \"v\"\ncapacity = 0\n[[system.class]]\nname = \"A\"\nweight = 2\n"),
                "system[1].capacity",
                15,
                "capacity",
            ),
            (
                OK.to_string() + "[faults]\npartition = [{ from_s = 1, to_s = 3 },\n  { from_s = 2, to_s = 4 }]\n",
                "faults.partition[0]",
                13,
                "overlaps faults.partition[1]",
            ),
            (
                OK.to_string() + "[faults]\npartition = [{ from_s = 1, to_s = 3 },\n  { from_s = 5, to_s = 4 }]\n",
                "faults.partition[1].to_s",
                14,
                "to_s must be after from_s",
            ),
            (
                OK.to_string() + "[faults]\nrestart = [{ at_s = 12 }]\n",
                "faults.restart[0].at_s",
                13,
                "before duration_s",
            ),
            (
                OK.to_string() + "[faults]\ncrash = [{ at_s = 8, down_s = 5 }]\n",
                "faults.crash[0].down_s",
                13,
                "before duration_s",
            ),
            (
                OK.replace("rate_per_s = 10", "rate_per_s = 10, steps = [{ from_s = 1, to_s = 9, rate_per_s = 1e10 }]"),
                "class[0].arrivals.steps[0].rate_per_s",
                8,
                "arrivals",
            ),
        ];
        for (src, field, line, message) in cases {
            let e = parse(&src);
            assert_eq!((e.field.as_str(), e.line), (field, line), "{e}\n{src}");
            assert!(e.message.contains(message), "{e}");
        }
    }
}
