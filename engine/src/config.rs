//! Class configuration, validated once by [`ConfigBuilder::build`].

use std::fmt;
use std::time::Duration;

use crate::adaptive::Adaptive;
use crate::error::BuildError;

/// The most classes one channel may have.
pub const MAX_CLASSES: usize = 16;

/// The largest capacity of one class (2^30 − 1 events: a ring counts its reservations in 30
/// bits). The slots are allocated up front, so a real bound is far smaller.
pub const MAX_CAPACITY: usize = (1 << 30) - 1;

/// Identifies a priority class: its index in the configuration, 0 being the most critical.
///
/// The default configuration's classes have constants ([`ClassId::CRITICAL_PLUS`] …); for a custom
/// configuration use [`Config::class`] to look a class up by name, or [`ClassId::new`] with its index.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassId(u8);

impl ClassId {
    /// The most critical class of the default configuration.
    pub const CRITICAL_PLUS: ClassId = ClassId(0);
    /// The second class of the default configuration.
    pub const CRITICAL: ClassId = ClassId(1);
    /// The third class of the default configuration.
    pub const SHEDDABLE_PLUS: ClassId = ClassId(2);
    /// The least critical class of the default configuration.
    pub const SHEDDABLE: ClassId = ClassId(3);

    /// The class with this index (0 = most critical).
    ///
    /// # Panics
    ///
    /// If `index >= MAX_CLASSES`.
    pub const fn new(index: usize) -> ClassId {
        assert!(index < MAX_CLASSES, "class index out of range");
        ClassId(index as u8)
    }

    /// `ClassId::new` for an index already known to be in range (a bit of a class mask).
    pub(crate) const fn from_index(index: usize) -> ClassId {
        debug_assert!(index < MAX_CLASSES);
        ClassId(index as u8)
    }

    /// This class's index (0 = most critical).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for ClassId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClassId({})", self.0)
    }
}

/// What happens to an event offered to a class that cannot admit it.
///
/// A class cannot admit when its own queue is full, or when any more critical class is full
/// (admission in criticality order: a class is refused only while every less critical one is too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverloadPolicy {
    /// `send` waits until the class can admit; `try_send` hands the event back as `Full`.
    Backpressure,
    /// The event is handed back at once as `Rejected`.
    Reject,
    /// The oldest queued event of the class goes to the dead letter (reason `Shed`) to make room.
    /// While a more critical class is full, the class keeps shedding its oldest for each new
    /// event, so it does not grow (from empty it takes one). If every slot is held by an
    /// unused reservation there is nothing to shed: `send` waits and `try_send` says `Full`.
    ShedOldest,
}

/// How the dequeue side picks the next class to serve.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum SchedulerMode {
    /// Always the most critical non-empty class. The textbook reference: lower classes can starve.
    Strict,
    /// Weighted deficit round robin over all classes; each class's quantum is its weight (in events).
    Drr,
    /// Class 0 is a strict tier while it has taken fewer than its quota of the services in the
    /// current window of `window` services; the other classes share the rest by weighted DRR.
    /// The quota is `max(1, floor(cap × window))`: choose `window ≥ 1 / cap` for the cap to be
    /// exact (a quota equal to the window makes the tier fully strict). When the other classes
    /// are empty the tier is served regardless (work conserving).
    CappedStrict {
        /// The tier's share cap, in (0, 1]. `1.0` makes the tier fully strict.
        cap: f64,
        /// The window, in services, over which the cap is enforced (≥ 1).
        window: u32,
    },
}

impl Default for SchedulerMode {
    fn default() -> Self {
        SchedulerMode::CappedStrict { cap: 0.5, window: 16 }
    }
}

/// CoDel parameters of a class (folly's rule: while the minimum sojourn of the last interval
/// exceeded `target`, events that waited more than `2 × target` are shed at dequeue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codel {
    /// The acceptable standing sojourn time.
    pub target: Duration,
    /// The window over which the minimum sojourn is measured.
    pub interval: Duration,
}

/// One class's settings; create with [`ClassSpec::new`] and adjust with the `with_*` methods.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ClassSpec {
    /// Unique name, e.g. `"CRITICAL"`.
    pub name: String,
    /// Queue bound in events (≥ 1); storage is allocated when the channel is built.
    pub capacity: usize,
    /// What happens when the class cannot admit.
    pub policy: OverloadPolicy,
    /// Deadline applied to events sent without one, measured from enqueue.
    pub deadline: Option<Duration>,
    /// DRR weight: events served per round (≥ 1).
    pub weight: u32,
    /// Optional CoDel shedding at dequeue.
    pub codel: Option<Codel>,
    /// This class's target queueing delay under [adaptive admission](crate::adaptive); `None`
    /// takes [`Adaptive::target`]. Ignored by a static configuration.
    pub target_delay: Option<Duration>,
}

impl ClassSpec {
    /// A class with the given name and capacity, `Backpressure`, weight 1, no deadline, no CoDel.
    pub fn new(name: impl Into<String>, capacity: usize) -> ClassSpec {
        ClassSpec {
            name: name.into(),
            capacity,
            policy: OverloadPolicy::Backpressure,
            deadline: None,
            weight: 1,
            codel: None,
            target_delay: None,
        }
    }

    /// Sets the overload policy.
    pub fn with_policy(mut self, policy: OverloadPolicy) -> ClassSpec {
        self.policy = policy;
        self
    }

    /// Sets the default deadline (from enqueue).
    pub fn with_deadline(mut self, deadline: Duration) -> ClassSpec {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the DRR weight.
    pub fn with_weight(mut self, weight: u32) -> ClassSpec {
        self.weight = weight;
        self
    }

    /// Enables CoDel shedding.
    pub fn with_codel(mut self, target: Duration, interval: Duration) -> ClassSpec {
        self.codel = Some(Codel { target, interval });
        self
    }
}

/// A validated configuration. Build one with [`Config::builder`], or take [`Config::default`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use veltrix_engine::{ClassSpec, Config, OverloadPolicy, SchedulerMode};
///
/// let config = Config::builder()
///     .class(ClassSpec::new("interactive", 64).with_deadline(Duration::from_millis(50)))
///     .class(ClassSpec::new("batch", 1024).with_policy(OverloadPolicy::ShedOldest).with_weight(1))
///     .scheduler(SchedulerMode::Drr)
///     .build()?;
/// assert_eq!(config.class("batch").map(|c| c.index()), Some(1));
/// # Ok::<(), veltrix_engine::BuildError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    classes: Vec<ClassSpec>,
    scheduler: SchedulerMode,
    record_enqueue_times: bool,
    adaptive: Option<Adaptive>,
}

impl Default for Config {
    /// The four SRE criticality levels, 1024 events each: CRITICAL_PLUS (strict tier capped at
    /// 50% of every 16 services, backpressure), CRITICAL (weight 16, backpressure),
    /// SHEDDABLE_PLUS (weight 4, shed oldest) and SHEDDABLE (weight 1, shed oldest).
    fn default() -> Self {
        Config::builder().build().expect("the default configuration is valid")
    }
}

impl Config {
    /// A builder with no classes: adding none gives the default four.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            classes: Vec::new(),
            scheduler: SchedulerMode::default(),
            record_enqueue_times: false,
            adaptive: None,
        }
    }

    /// The classes, most critical first.
    pub fn classes(&self) -> &[ClassSpec] {
        &self.classes
    }

    /// The scheduler mode.
    pub fn scheduler(&self) -> SchedulerMode {
        self.scheduler
    }

    /// Whether every send reads the clock to record its enqueue time (see
    /// [`ConfigBuilder::record_enqueue_times`]).
    pub fn records_enqueue_times(&self) -> bool {
        self.record_enqueue_times
    }

    /// Whether sends to `class` read the clock: to record the enqueue time, for a default
    /// deadline, or for CoDel's sojourn.
    pub(crate) fn stamps(&self, class: &ClassSpec) -> bool {
        self.record_enqueue_times || class.deadline.is_some() || class.codel.is_some() || self.adaptive.is_some()
    }

    /// The adaptive admission settings, if admission is adaptive.
    pub fn adaptive(&self) -> Option<&Adaptive> {
        self.adaptive.as_ref()
    }

    /// The target queueing delay of `class` under adaptive admission (its own, or the
    /// configuration's); `None` for a static configuration or an unknown class.
    pub fn target_delay(&self, class: ClassId) -> Option<Duration> {
        let adaptive = self.adaptive.as_ref()?;
        self.classes.get(class.index()).map(|c| c.target_delay.unwrap_or(adaptive.target))
    }

    /// This configuration with enqueue times recorded (the engine's queues: latency histograms).
    pub(crate) fn recording_enqueue_times(mut self) -> Config {
        self.record_enqueue_times = true;
        self
    }

    /// Looks a class up by name.
    pub fn class(&self, name: &str) -> Option<ClassId> {
        self.classes.iter().position(|c| c.name == name).map(ClassId::new)
    }

    /// The number of classes.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Always false: a valid configuration has at least one class.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The tier quota: how many of every `window` services the strict tier may take while other
    /// classes are backlogged, or `None` outside [`SchedulerMode::CappedStrict`].
    pub(crate) fn tier_quota(&self) -> Option<(u32, u32)> {
        match self.scheduler {
            SchedulerMode::CappedStrict { cap, window } => {
                let quota = ((cap * f64::from(window)).floor() as u32).clamp(1, window);
                Some((quota, window))
            }
            _ => None,
        }
    }

    /// The starvation bound of `class`: while it stays backlogged, at most this many events of
    /// other classes are delivered between two deliveries of it. `None` means unbounded (a
    /// non-top class under [`SchedulerMode::Strict`], or any class below a tier whose quota is
    /// the whole window).
    ///
    /// Derivation: DRR alone gives `Σ_{j≠i} weight_j` (every other class serves at most its quantum
    /// between two turns of `i`). A capped tier adds at most `quota` services per window; a span
    /// with `G` DRR services touches at most `G / (window − quota) + 2` windows.
    ///
    /// # Panics
    ///
    /// If `class` is not a class of this configuration.
    pub fn starvation_bound(&self, class: ClassId) -> Option<u64> {
        let i = class.index();
        assert!(i < self.classes.len(), "{class:?} is not configured");
        let weights = |skip: usize, from: usize| -> u64 {
            self.classes
                .iter()
                .enumerate()
                .skip(from)
                .filter(|(j, _)| *j != skip)
                .map(|(_, c)| u64::from(c.weight))
                .sum()
        };
        match self.scheduler {
            SchedulerMode::Strict => (i == 0).then_some(0),
            SchedulerMode::Drr => Some(weights(i, 0)),
            SchedulerMode::CappedStrict { .. } => {
                let (quota, window) = self.tier_quota().expect("capped mode has a quota");
                let others = u64::from(window - quota);
                if i == 0 {
                    return Some(others);
                }
                if others == 0 {
                    return None;
                }
                let g = weights(i, 1);
                Some(g + u64::from(quota) * (g / others + 2))
            }
        }
    }
}

/// Builds a [`Config`]; see [`Config::builder`].
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    classes: Vec<ClassSpec>,
    scheduler: SchedulerMode,
    record_enqueue_times: bool,
    adaptive: Option<Adaptive>,
}

impl ConfigBuilder {
    /// Appends a class (less critical than those added before it).
    pub fn class(mut self, spec: ClassSpec) -> ConfigBuilder {
        self.classes.push(spec);
        self
    }

    /// Sets the scheduler mode (default: capped strict tier at 0.5 over windows of 16, then DRR).
    pub fn scheduler(mut self, mode: SchedulerMode) -> ConfigBuilder {
        self.scheduler = mode;
        self
    }

    /// Makes every send record its enqueue time ([`Delivery::enqueued_at`](crate::Delivery)),
    /// at the cost of a clock read per send. Off by default: then only classes that need the
    /// time (a default deadline, CoDel) read the clock. The engine's queues always record it.
    pub fn record_enqueue_times(mut self, record: bool) -> ConfigBuilder {
        self.record_enqueue_times = record;
        self
    }

    /// Makes admission adaptive: each class's capacity becomes an upper bound, and the limit in
    /// force is sized by a [`Controller`](crate::adaptive::Controller) so that admitted events
    /// wait about `adaptive.target` (see [`adaptive`](crate::adaptive)). Every send then reads
    /// the clock.
    pub fn adaptive(mut self, adaptive: Adaptive) -> ConfigBuilder {
        self.adaptive = Some(adaptive);
        self
    }

    /// Validates the configuration.
    ///
    /// With no class added, the default four criticality levels are used.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first problem found.
    pub fn build(self) -> Result<Config, BuildError> {
        let classes = if self.classes.is_empty() { default_classes() } else { self.classes };
        validate(&classes, self.scheduler, self.adaptive)?;
        let (scheduler, record_enqueue_times, adaptive) = (self.scheduler, self.record_enqueue_times, self.adaptive);
        Ok(Config { classes, scheduler, record_enqueue_times, adaptive })
    }

    /// Validates exactly the classes given, without substituting the defaults for an empty list.
    ///
    /// # Errors
    ///
    /// As [`ConfigBuilder::build`], plus [`BuildError::NoClasses`] for an empty list.
    pub fn build_exact(self) -> Result<Config, BuildError> {
        validate(&self.classes, self.scheduler, self.adaptive)?;
        let (scheduler, record_enqueue_times, adaptive) = (self.scheduler, self.record_enqueue_times, self.adaptive);
        Ok(Config { classes: self.classes, scheduler, record_enqueue_times, adaptive })
    }
}

fn default_classes() -> Vec<ClassSpec> {
    vec![
        ClassSpec::new("CRITICAL_PLUS", 1024),
        ClassSpec::new("CRITICAL", 1024).with_weight(16),
        ClassSpec::new("SHEDDABLE_PLUS", 1024).with_weight(4).with_policy(OverloadPolicy::ShedOldest),
        ClassSpec::new("SHEDDABLE", 1024).with_weight(1).with_policy(OverloadPolicy::ShedOldest),
    ]
}

fn validate(classes: &[ClassSpec], scheduler: SchedulerMode, adaptive: Option<Adaptive>) -> Result<(), BuildError> {
    if classes.is_empty() {
        return Err(BuildError::NoClasses);
    }
    if classes.len() > MAX_CLASSES {
        return Err(BuildError::TooManyClasses { count: classes.len(), max: MAX_CLASSES });
    }
    for (i, c) in classes.iter().enumerate() {
        if c.name.is_empty() {
            return Err(BuildError::EmptyName { index: i });
        }
        if classes[..i].iter().any(|o| o.name == c.name) {
            return Err(BuildError::DuplicateName { name: c.name.clone() });
        }
        if c.capacity == 0 {
            return Err(BuildError::ZeroCapacity { class: c.name.clone() });
        }
        if c.capacity > MAX_CAPACITY {
            return Err(BuildError::CapacityTooLarge {
                class: c.name.clone(),
                capacity: c.capacity,
                max: MAX_CAPACITY,
            });
        }
        if c.weight == 0 {
            return Err(BuildError::ZeroWeight { class: c.name.clone() });
        }
        if let Some(codel) = c.codel {
            if codel.target.is_zero() || codel.interval.is_zero() {
                return Err(BuildError::ZeroCodelParameter { class: c.name.clone() });
            }
        }
    }
    if let Some(a) = adaptive {
        if a.target.is_zero() || a.interval.is_zero() {
            return Err(BuildError::ZeroAdaptiveParameter { class: None });
        }
        if let Some(c) = classes.iter().find(|c| c.target_delay.is_some_and(|t| t.is_zero())) {
            return Err(BuildError::ZeroAdaptiveParameter { class: Some(c.name.clone()) });
        }
    }
    if let SchedulerMode::CappedStrict { cap, window } = scheduler {
        if !(cap > 0.0 && cap <= 1.0) {
            return Err(BuildError::CapOutOfRange { cap });
        }
        if window == 0 {
            return Err(BuildError::ZeroWindow);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_targets_are_the_classs_own_or_the_configurations_and_never_zero() {
        let ms = Duration::from_millis;
        let build = |a: Adaptive, own: Duration| {
            Config::builder()
                .class(ClassSpec::new("a", 4))
                .class(ClassSpec::new("b", 4).with_target_delay(own))
                .adaptive(a)
                .build()
        };
        let config = build(Adaptive::new(ms(20)), ms(300)).unwrap();
        let targets: Vec<_> = (0..3).map(|k| config.target_delay(ClassId::new(k))).collect();
        assert_eq!(targets, [Some(ms(20)), Some(ms(300)), None], "a class's own, else the configuration's");
        assert_eq!(config.adaptive().map(|a| a.interval), Some(ms(20)), "the interval defaults to the target");
        assert!(config.classes().iter().all(|c| config.stamps(c)), "every adaptive send reads the clock");
        assert_eq!(Config::default().target_delay(ClassId::new(0)), None, "static");
        assert!(!Config::default().stamps(&Config::default().classes()[0]));

        let zero = BuildError::ZeroAdaptiveParameter { class: None };
        assert_eq!(build(Adaptive::new(Duration::ZERO), ms(1)).err(), Some(zero.clone()));
        assert_eq!(build(Adaptive::new(ms(1)).with_interval(Duration::ZERO), ms(1)).err(), Some(zero.clone()));
        let e = build(Adaptive::new(ms(1)), Duration::ZERO).unwrap_err();
        assert_eq!(e, BuildError::ZeroAdaptiveParameter { class: Some("b".into()) });
        assert_eq!(e.to_string(), "class `b` has a zero target delay");
        assert_eq!(zero.to_string(), "adaptive admission has a zero target delay or interval");
        // A zero target on a static configuration is ignored, as the field says.
        let b = Config::builder().class(ClassSpec::new("a", 4).with_target_delay(Duration::ZERO));
        assert!(b.clone().build().is_ok() && b.build_exact().is_ok());
    }

    #[test]
    fn a_capacity_past_30_bits_is_refused_before_anything_is_allocated() {
        let with = |capacity| Config::builder().class(ClassSpec::new("c", capacity)).build();
        assert_eq!(with(MAX_CAPACITY).map(|c| c.classes()[0].capacity), Ok(MAX_CAPACITY));
        let too_large = with(1 << 30).unwrap_err();
        assert_eq!(
            too_large,
            BuildError::CapacityTooLarge { class: "c".into(), capacity: 1 << 30, max: (1 << 30) - 1 }
        );
        assert_eq!(too_large.to_string(), "class `c` has capacity 1073741824, at most 1073741823 is allowed");
        assert!(matches!(with(usize::MAX), Err(BuildError::CapacityTooLarge { .. })));
    }

    #[test]
    fn exactly_max_classes_build_one_more_does_not() {
        let n = |count: usize| (0..count).fold(Config::builder(), |b, k| b.class(ClassSpec::new(format!("c{k}"), 1)));
        let full = n(MAX_CLASSES).build().expect("MAX_CLASSES classes are allowed");
        assert_eq!((full.len(), full.is_empty()), (MAX_CLASSES, false));
        assert_eq!(
            n(MAX_CLASSES + 1).build().unwrap_err(),
            BuildError::TooManyClasses { count: MAX_CLASSES + 1, max: MAX_CLASSES }
        );
        assert_eq!(format!("{:?}", ClassId::new(MAX_CLASSES - 1)), "ClassId(15)");
    }

    #[test]
    fn default_is_the_four_criticality_levels() {
        let c = Config::default();
        let names: Vec<_> = c.classes().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["CRITICAL_PLUS", "CRITICAL", "SHEDDABLE_PLUS", "SHEDDABLE"]);
        assert_eq!(c.class("SHEDDABLE"), Some(ClassId::SHEDDABLE));
        // quota 8 of 16; C: others' DRR weights 4+1 = 5 → 5 + 8 × (5/8 + 2) = 21.
        assert_eq!(c.starvation_bound(ClassId::CRITICAL_PLUS), Some(8));
        assert_eq!(c.starvation_bound(ClassId::CRITICAL), Some(21));
        assert_eq!(c.starvation_bound(ClassId::SHEDDABLE), Some(20 + 8 * (20 / 8 + 2)));
    }

    #[test]
    fn each_error_has_its_variant() {
        let one = |spec: ClassSpec| Config::builder().class(spec).build();
        assert_eq!(Config::builder().build_exact(), Err(BuildError::NoClasses));
        assert!(matches!(one(ClassSpec::new("a", 0)), Err(BuildError::ZeroCapacity { .. })));
        assert!(matches!(one(ClassSpec::new("a", 1).with_weight(0)), Err(BuildError::ZeroWeight { .. })));
        assert!(matches!(one(ClassSpec::new("", 1)), Err(BuildError::EmptyName { index: 0 })));
        assert!(matches!(
            one(ClassSpec::new("a", 1).with_codel(Duration::ZERO, Duration::from_secs(1))),
            Err(BuildError::ZeroCodelParameter { .. })
        ));
        let dup = Config::builder().class(ClassSpec::new("a", 1)).class(ClassSpec::new("a", 1)).build();
        assert_eq!(dup, Err(BuildError::DuplicateName { name: "a".into() }));
        for cap in [0.0, -0.1, 1.01, f64::NAN] {
            let r = Config::builder()
                .class(ClassSpec::new("a", 1))
                .scheduler(SchedulerMode::CappedStrict { cap, window: 4 })
                .build();
            assert!(matches!(r, Err(BuildError::CapOutOfRange { .. })), "{cap}");
        }
        let r = Config::builder()
            .class(ClassSpec::new("a", 1))
            .scheduler(SchedulerMode::CappedStrict { cap: 1.0, window: 0 })
            .build();
        assert_eq!(r, Err(BuildError::ZeroWindow));
        let many = (0..17).fold(Config::builder(), |b, i| b.class(ClassSpec::new(format!("c{i}"), 1)));
        assert_eq!(many.build(), Err(BuildError::TooManyClasses { count: 17, max: 16 }));
    }

    #[test]
    fn strict_and_full_cap_bounds_are_unbounded_below_the_top() {
        let b = |mode| {
            Config::builder()
                .class(ClassSpec::new("a", 1))
                .class(ClassSpec::new("b", 1))
                .scheduler(mode)
                .build()
                .unwrap()
        };
        assert_eq!(b(SchedulerMode::Strict).starvation_bound(ClassId::new(1)), None);
        assert_eq!(b(SchedulerMode::Strict).starvation_bound(ClassId::new(0)), Some(0));
        assert_eq!(b(SchedulerMode::CappedStrict { cap: 1.0, window: 4 }).starvation_bound(ClassId::new(1)), None);
        assert_eq!(b(SchedulerMode::Drr).starvation_bound(ClassId::new(1)), Some(1));
    }
}
