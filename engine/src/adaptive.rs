//! Adaptive admission: the user states a target queueing delay, and a controller sizes every
//! class's admission limit from what it measures, so nobody has to choose capacities that fit the
//! service's speed.
//!
//! # The law
//!
//! A class served at rate `r` (events per second while it has a backlog) keeps an event that
//! finds `L` events ahead of it waiting about `L / r` (Little's law for one FIFO queue). To keep
//! the wait under the target `T`, admit while fewer than `r × T` events are queued. The
//! controller measures `r` and corrects for the spread of the wait around its mean:
//!
//! ```text
//! every interval Δ, for each class k:
//!   x_k   = busy_delivered_k / busy_k           the service rate while the class had a backlog
//!   r_k  ← x_k                                  the first time the class had one
//!   r_k  ← r_k + (x_k − r_k) · min(1, busy_k / Δ) / 2      afterwards, weighted by busy time
//!   f_k   = late_k / delivered_k                waits over T_k, as a fraction
//!   g_k  ← clamp(g_k · clamp(1 + 10 (q − f_k), 0.7, 1.1), 0.25, 1)    q = 1 %: aims at p99
//!   G_k   = min(g_0, …, g_k)                    no class keeps more than a late class above it
//!   limit_k = clamp(⌈G_k · r_k · T_k⌉, 1, capacity_k)         capacity_k until r_k is known
//! ```
//!
//! The service rate is measured only over *busy* stretches: a delivery of class `k` counts, with
//! the time since `k`'s previous delivery, when `k`'s next event was already queued at that
//! previous delivery, or since then an offer to `k` was refused (so the class waited on the
//! scheduler the whole time, not on its producers; the second case covers a class held at a
//! small limit, which a receiver's batch can empty while offers are turned away). The rate of all deliveries would be the arrival rate of a light class, which says
//! nothing about how fast it is served once it queues; a class that never queues keeps its
//! capacity as its limit, so the Poisson bursts of a light class are not refused for exceeding
//! its average. The gain `g_k`
//! is an integral controller on the fraction of admitted events that waited longer than the
//! target: it backs the limit off while more than 1 % are late and recovers slowly when none are.
//! It moves only in intervals that delivered something. With fewer than about a hundred
//! deliveries per interval one late event is already more than 1 %, so there it aims at a
//! somewhat higher quantile than the 99th, through the balance of its down and up steps.
//! The limit never falls below one event, so a class squeezed to nothing still has an event in
//! its queue to measure its rate with. A class's limit uses the smallest gain at or above it
//! (`G_k`): while a more critical class misses its target, the less critical ones shrink with it
//! and leave it the workers.
//!
//! Limits apply as capacities do: a class at its limit refuses by its overload policy, and a
//! class offered an event while a more critical class is at its limit refuses too (admission is
//! in criticality order, lowest first). Which class gets served stays the scheduler's business,
//! so under overload the least critical classes lose their rate first, their limits shrink with
//! it, and the critical classes keep their share.
//!
//! [`Controller`] is the law alone: time and measurements are passed in, so it is deterministic
//! and testable without a clock. A channel built from a [`Config`] with
//! [`ConfigBuilder::adaptive`](crate::ConfigBuilder::adaptive) runs one under its consumer lock —
//! each delivery compares its wait with the target, and at most once per interval a receive
//! feeds the counts in and publishes the limits (one relaxed store per class, and the `full`
//! bits brought in line) — so the per-event cost is a clock read on each side, a comparison, a
//! load of the next slot's stamp (the line the consumer reads next anyway) and of the class's
//! refusal counters (a line written only when refusing), with no lock and no allocation. The
//! limit is rounded up after subtracting 10⁻⁹, so a product that should be whole is not rounded
//! up by float error.

use std::time::Duration;

use crate::config::{ClassSpec, Config};

/// The fraction of admitted events the controller lets wait longer than the target.
const LATE_QUANTILE: f64 = 0.01;
/// How strongly the gain reacts to the late fraction's distance from [`LATE_QUANTILE`].
const GAIN_RESPONSE: f64 = 10.0;
/// The most a gain changes in one interval, down and up.
const GAIN_STEP: (f64, f64) = (0.7, 1.1);
/// The smallest gain.
const GAIN_MIN: f64 = 0.25;
/// The weight in the moving average of a window's rate, for a window busy throughout.
const RATE_WEIGHT: f64 = 0.5;

/// Settings of adaptive admission; see the [module docs](self) for what the controller does.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use veltrix_engine::{Adaptive, ClassSpec, Config};
///
/// // Keep every admitted event's queueing delay under 20 ms (p99); "bulk" may wait 200 ms.
/// let config = Config::builder()
///     .class(ClassSpec::new("critical", 4096))
///     .class(ClassSpec::new("bulk", 4096).with_target_delay(Duration::from_millis(200)))
///     .adaptive(Adaptive::new(Duration::from_millis(20)))
///     .build()?;
/// assert_eq!(config.target_delay(config.class("bulk").unwrap()), Some(Duration::from_millis(200)));
/// # Ok::<(), veltrix_engine::BuildError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adaptive {
    /// The queueing delay that admitted events should stay under (at the 99th percentile), for
    /// classes without their own [`ClassSpec::target_delay`].
    pub target: Duration,
    /// How often the limits are recomputed. Default: the target itself.
    pub interval: Duration,
}

impl Adaptive {
    /// Adaptive admission aiming at `target`, recomputed once per `target`.
    pub fn new(target: Duration) -> Adaptive {
        Adaptive { target, interval: target }
    }

    /// Recomputes the limits every `interval` instead.
    pub fn with_interval(mut self, interval: Duration) -> Adaptive {
        self.interval = interval;
        self
    }
}

/// What one class did during one control interval, as the controller needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Events delivered.
    pub delivered: u64,
    /// Of those, events that had waited longer than the class's target.
    pub late: u64,
    /// Time the class spent with a backlog: the sum, over deliveries that found the class's next
    /// event already queued at its previous delivery, of the time between the two.
    pub busy: Duration,
    /// The deliveries counted in `busy`.
    pub busy_delivered: u64,
}

#[derive(Clone, Debug)]
struct ClassControl {
    /// The target in seconds, and as given (a `Duration` too large for `f64` seconds to
    /// convert back exactly stays as it was).
    target: f64,
    target_given: Duration,
    capacity: u32,
    rate: Option<f64>,
    gain: f64,
}

/// The adaptive admission law over a configuration's classes: sans-IO, deterministic, no
/// allocation after construction. See the [module docs](self) for its equations.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use veltrix_engine::{Adaptive, ClassSpec, Config};
/// use veltrix_engine::adaptive::{Controller, Window};
///
/// let config = Config::builder()
///     .class(ClassSpec::new("critical", 10_000))
///     .class(ClassSpec::new("bulk", 10_000))
///     .adaptive(Adaptive::new(Duration::from_millis(50)))
///     .build()?;
/// let mut controller = Controller::new(&config).expect("adaptive");
/// assert_eq!(controller.limits(), [10_000, 10_000], "nothing measured yet: the capacities");
///
/// // 50 ms in which "bulk" had a backlog throughout and got 100 events served (2,000 per
/// // second): admitting 2,000/s × 50 ms = 100 keeps its wait near 50 ms.
/// let busy = Duration::from_millis(50);
/// let windows = [Window::default(), Window { delivered: 100, late: 0, busy, busy_delivered: 100 }];
/// controller.update(Duration::from_millis(50), &windows);
/// assert_eq!(controller.limits(), [10_000, 100]);
/// # Ok::<(), veltrix_engine::BuildError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Controller {
    classes: Box<[ClassControl]>,
    limits: Box<[u32]>,
}

impl Controller {
    /// The controller for `config`, or `None` if it is not adaptive.
    pub fn new(config: &Config) -> Option<Controller> {
        let adaptive = config.adaptive()?;
        let classes: Box<[ClassControl]> = config
            .classes()
            .iter()
            .map(|spec| {
                let capacity = spec.capacity as u32;
                let target_given = spec.target_delay.unwrap_or(adaptive.target);
                let target = target_given.as_secs_f64();
                ClassControl { target, target_given, capacity, rate: None, gain: 1.0 }
            })
            .collect();
        let limits = classes.iter().map(|c| c.capacity).collect();
        Some(Controller { classes, limits })
    }

    /// Feeds one interval's measurements in (one [`Window`] per class, most critical first) and
    /// recomputes the limits. An empty interval changes nothing.
    ///
    /// # Panics
    ///
    /// If `windows` does not have one entry per class.
    pub fn update(&mut self, elapsed: Duration, windows: &[Window]) -> &[u32] {
        assert_eq!(windows.len(), self.classes.len(), "one window per class");
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return &self.limits;
        }
        // The smallest gain among the more critical classes: a class never keeps more of its
        // rate than a class above it that is missing its target.
        let mut above = 1.0f64;
        for ((c, w), limit) in self.classes.iter_mut().zip(windows).zip(self.limits.iter_mut()) {
            let busy = w.busy.as_secs_f64();
            if w.busy_delivered > 0 && busy > 0.0 {
                let x = w.busy_delivered as f64 / busy;
                let weight = RATE_WEIGHT * (busy / secs).min(1.0);
                c.rate = Some(c.rate.map_or(x, |r| r + (x - r) * weight));
            }
            if w.delivered > 0 {
                // Only intervals that delivered something move the gain.
                let late = w.late.min(w.delivered) as f64 / w.delivered as f64;
                let step = (1.0 + GAIN_RESPONSE * (LATE_QUANTILE - late)).clamp(GAIN_STEP.0, GAIN_STEP.1);
                c.gain = (c.gain * step).clamp(GAIN_MIN, 1.0);
            }
            let gain = c.gain.min(above);
            above = gain;
            *limit = match c.rate {
                None => c.capacity,
                // Less a hair, so that a product that should be whole is not rounded up by float error.
                Some(r) => (gain * r * c.target - 1e-9).ceil().clamp(1.0, f64::from(c.capacity)) as u32,
            };
        }
        &self.limits
    }

    /// The admission limit of every class, most critical first.
    pub fn limits(&self) -> &[u32] {
        &self.limits
    }

    /// The estimated service rate of class `index` in events per second, once measured.
    pub fn rate(&self, index: usize) -> Option<f64> {
        self.classes.get(index).and_then(|c| c.rate)
    }

    /// The target queueing delay of class `index`, in seconds.
    pub(crate) fn target(&self, index: usize) -> Duration {
        self.classes[index].target_given
    }
}

impl ClassSpec {
    /// Sets this class's own target queueing delay under [adaptive admission](crate::adaptive)
    /// (otherwise [`Adaptive::target`] applies).
    pub fn with_target_delay(mut self, target: Duration) -> ClassSpec {
        self.target_delay = Some(target);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClassSpec;

    fn controller(capacity: usize, target_ms: u64) -> Controller {
        let config = Config::builder()
            .class(ClassSpec::new("a", capacity))
            .class(ClassSpec::new("b", capacity))
            .adaptive(Adaptive::new(Duration::from_millis(target_ms)))
            .build()
            .unwrap();
        Controller::new(&config).unwrap()
    }

    const MS100: Duration = Duration::from_millis(100);
    /// 100 ms with a backlog throughout, 100 served: 1,000 per second.
    const BUSY: Window = Window { delivered: 100, late: 0, busy: MS100, busy_delivered: 100 };
    const IDLE: Window = Window { delivered: 0, late: 0, busy: Duration::ZERO, busy_delivered: 0 };

    #[test]
    fn a_target_too_long_for_float_seconds_is_kept_as_given() {
        let config =
            Config::builder().class(ClassSpec::new("a", 8)).adaptive(Adaptive::new(Duration::MAX)).build().unwrap();
        let mut c = Controller::new(&config).unwrap();
        assert_eq!(c.target(0), Duration::MAX);
        assert_eq!(c.update(MS100, &[BUSY]), [8], "rate × forever: the capacity");
    }

    #[test]
    fn a_static_config_has_no_controller() {
        assert!(Controller::new(&Config::default()).is_none());
    }

    #[test]
    fn the_limit_is_rate_times_target_and_a_window_without_a_backlog_leaves_the_rate_alone() {
        let mut c = controller(10_000, 100);
        // 100 per 100 ms = 1,000/s; 1,000/s × 0.1 s = 100.
        assert_eq!(c.update(MS100, &[IDLE, BUSY]), [10_000, 100]);
        // Without a backlog, neither 10 nor 500 delivered says how fast the class is served.
        for delivered in [10, 500] {
            let quiet = Window { delivered, ..IDLE };
            assert_eq!(c.update(MS100, &[IDLE, quiet]), [10_000, 100]);
        }
        assert_eq!(c.rate(1), Some(1000.0));
        // Busy throughout at half the rate: the average moves half of the way.
        let slow = Window { delivered: 50, busy_delivered: 50, ..BUSY };
        assert_eq!(c.update(MS100, &[IDLE, slow]), [10_000, 75]);
        // Busy for a tenth of the window at 2,000 per second: a twentieth of the way.
        let brief = Window { delivered: 20, late: 0, busy: MS100 / 10, busy_delivered: 20 };
        assert_eq!(c.update(MS100, &[IDLE, brief]), [10_000, 82]);
    }

    #[test]
    fn a_busy_stretch_too_short_to_measure_measures_nothing() {
        // Deliveries in a backlog the clock did not see pass (a coarse or paused clock): no
        // rate (it would be infinite), so the limit stays where it was.
        let mut c = controller(10_000, 100);
        let instant = Window { delivered: 5, late: 0, busy: Duration::ZERO, busy_delivered: 5 };
        assert_eq!(c.update(MS100, &[IDLE, instant]), [10_000, 10_000]);
        assert_eq!(c.rate(1), None);
        c.update(MS100, &[IDLE, BUSY]);
        assert_eq!(c.update(MS100, &[IDLE, instant]), [10_000, 100]);
        assert_eq!(c.rate(1), Some(1000.0));
    }

    #[test]
    fn late_events_lower_the_gain_and_a_clean_run_restores_it() {
        let mut c = controller(10_000, 100);
        let late = Window { late: 30, ..BUSY };
        c.update(MS100, &[IDLE, late]);
        assert_eq!(c.limits()[1], 70, "stepped down by at most 30 %");
        for _ in 0..200 {
            c.update(MS100, &[IDLE, BUSY]);
        }
        assert_eq!(c.limits()[1], 100);
    }

    #[test]
    fn the_gain_moves_with_the_distance_of_the_late_fraction_from_one_percent() {
        let mut c = controller(10_000, 100);
        c.update(MS100, &[IDLE, BUSY]);
        // Exactly 1 % late: the gain holds.
        assert_eq!(c.update(MS100, &[IDLE, Window { late: 1, ..BUSY }]), [10_000, 100]);
        // 2 % late: 1 + 10 × (0.01 − 0.02) = 0.9.
        assert_eq!(c.update(MS100, &[IDLE, Window { late: 2, ..BUSY }]), [10_000, 90]);
    }

    #[test]
    fn deliveries_at_one_instant_leave_the_rate_alone() {
        let mut c = controller(10_000, 100);
        c.update(MS100, &[IDLE, BUSY]);
        // A batch taken at once: busy deliveries but no busy time, no rate to learn.
        let batch = Window { delivered: 5, late: 0, busy: Duration::ZERO, busy_delivered: 5 };
        assert_eq!(c.update(MS100, &[IDLE, batch]), [10_000, 100]);
        assert_eq!(c.rate(1), Some(1000.0));
    }

    #[test]
    fn a_late_class_holds_the_classes_below_it_to_its_gain() {
        let mut c = controller(10_000, 100);
        let late = Window { late: 30, ..BUSY };
        // The top class is late: its gain drops to 0.7, and the other class's with it.
        assert_eq!(c.update(MS100, &[late, BUSY]), [70, 70]);
        // The lower class being late does not touch the top one.
        let mut c = controller(10_000, 100);
        assert_eq!(c.update(MS100, &[BUSY, late]), [100, 70]);
    }

    #[test]
    fn limits_stay_between_one_and_the_capacity() {
        let mut c = controller(50, 100);
        let flood = Window { delivered: 1_000_000, busy_delivered: 1_000_000, ..BUSY };
        // One delivery after waiting the whole window: 10 per second, 1 per target.
        let starved = Window { delivered: 1, busy_delivered: 1, ..BUSY };
        assert_eq!(c.update(MS100, &[flood, starved]), [50, 1]);
        assert_eq!(c.update(Duration::ZERO, &[starved, flood]), [50, 1], "an empty interval changes nothing");
    }
}
