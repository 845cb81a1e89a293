//! The dequeue scheduler: strict priority, weighted deficit round robin, or a capped strict tier
//! over DRR. Pure state: it sees a bitmask of non-empty classes and is told what was served.
//! Dead-lettering at dequeue (expiry, CoDel) is not a service and does not touch this state.

use crate::config::{Config, SchedulerMode};

#[derive(Debug)]
pub(crate) struct Scheduler {
    mode: Mode,
    classes: usize,
}

#[derive(Debug)]
enum Mode {
    Strict,
    Drr(Drr),
    Capped { drr: Drr, quota: u32, window: u32, pos: u32, used: u32 },
}

/// Deficit round robin with unit cost over classes `first..weights.len()`, in fixed cyclic order.
#[derive(Debug)]
struct Drr {
    weights: Box<[u32]>,
    first: usize,
    current: usize,
    /// Services left in `current`'s turn; 0 means its turn has not started.
    deficit: u32,
}

impl Drr {
    fn new(weights: Box<[u32]>, first: usize) -> Drr {
        Drr { current: first, first, weights, deficit: 0 }
    }

    /// The class DRR would serve next among the non-empty ones: the first at or after `current`
    /// in cyclic order over `first..n`. Asks `ready` in that order and stops at the first yes.
    fn pick(&self, ready: &mut impl FnMut(usize) -> bool) -> Option<usize> {
        let n = self.weights.len();
        (self.current..n).chain(self.first..self.current).find(|&k| ready(k))
    }

    fn served(&mut self, class: usize) {
        if class != self.current || self.deficit == 0 {
            self.current = class;
            self.deficit = self.weights[class];
        }
        self.deficit -= 1;
        if self.deficit == 0 {
            let span = self.weights.len() - self.first;
            self.current = self.first + (class - self.first + 1) % span;
        }
    }
}

impl Scheduler {
    pub(crate) fn new(config: &Config) -> Scheduler {
        let weights: Box<[u32]> = config.classes().iter().map(|c| c.weight).collect();
        let mode = match config.scheduler() {
            SchedulerMode::Strict => Mode::Strict,
            SchedulerMode::Drr => Mode::Drr(Drr::new(weights, 0)),
            SchedulerMode::CappedStrict { .. } => {
                let (quota, window) = config.tier_quota().expect("capped mode has a quota");
                Mode::Capped { drr: Drr::new(weights, 1), quota, window, pos: 0, used: 0 }
            }
        };
        Scheduler { mode, classes: config.len() }
    }

    /// The class to serve next, given the non-empty classes as a bitmask; `None` if `mask == 0`.
    pub(crate) fn pick(&self, mask: u32) -> Option<usize> {
        self.pick_by(|k| mask & (1 << k) != 0)
    }

    /// The class to serve next, asking `ready(k)` whether class `k` has an event, in the
    /// scheduler's order of preference and only until one answers yes (the channel's receiver
    /// then reads one slot stamp per pick instead of one per class).
    #[inline]
    pub(crate) fn pick_by(&self, mut ready: impl FnMut(usize) -> bool) -> Option<usize> {
        match &self.mode {
            Mode::Strict => (0..self.classes).find(|&k| ready(k)),
            Mode::Drr(drr) => drr.pick(&mut ready),
            Mode::Capped { drr, quota, used, .. } => {
                // The tier first while under its quota; past it, only when nobody else waits.
                if used < quota && ready(0) {
                    return Some(0);
                }
                drr.pick(&mut ready).or_else(|| (used >= quota && ready(0)).then_some(0))
            }
        }
    }

    /// Records that `class` was served (an event delivered).
    pub(crate) fn served(&mut self, class: usize) {
        match &mut self.mode {
            Mode::Strict => {}
            Mode::Drr(drr) => drr.served(class),
            Mode::Capped { drr, window, pos, used, .. } => {
                if class == 0 {
                    *used += 1;
                } else {
                    drr.served(class);
                }
                *pos += 1;
                if *pos == *window {
                    *pos = 0;
                    *used = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClassId, ClassSpec};

    fn sched(weights: &[u32], mode: SchedulerMode) -> Scheduler {
        let b = weights
            .iter()
            .enumerate()
            .fold(Config::builder(), |b, (i, w)| b.class(ClassSpec::new(format!("c{i}"), 1).with_weight(*w)));
        Scheduler::new(&b.scheduler(mode).build().unwrap())
    }

    fn run(s: &mut Scheduler, mask: u32, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let c = s.pick(mask).unwrap();
                s.served(c);
                c
            })
            .collect()
    }

    #[test]
    fn drr_serves_weights_per_round() {
        let mut s = sched(&[3, 1, 2], SchedulerMode::Drr);
        assert_eq!(run(&mut s, 0b111, 12), [0, 0, 0, 1, 2, 2, 0, 0, 0, 1, 2, 2]);
        assert_eq!(s.pick(0), None);
    }

    #[test]
    fn strict_serves_the_top_non_empty_class() {
        let s = sched(&[1, 1, 1], SchedulerMode::Strict);
        assert_eq!(s.pick(0b110), Some(1));
        assert_eq!(s.pick(0b111), Some(0));
    }

    #[test]
    fn capped_tier_takes_its_quota_then_yields() {
        let mut s = sched(&[1, 2, 1], SchedulerMode::CappedStrict { cap: 0.5, window: 4 });
        assert_eq!(run(&mut s, 0b111, 8), [0, 0, 1, 1, 0, 0, 2, 1]);
        // Alone, the tier is served regardless of its quota.
        assert_eq!(run(&mut s, 0b001, 5), [0; 5]);
    }

    #[test]
    fn starvation_bound_is_reached_when_the_tier_straddles_a_window() {
        let mode = SchedulerMode::CappedStrict { cap: 0.5, window: 4 };
        let config = Config::builder().class(ClassSpec::new("t", 1)).class(ClassSpec::new("a", 1)).scheduler(mode);
        let config = config.build().unwrap();
        let mut s = Scheduler::new(&config);
        // Class 1 alone for half a window, then the tier arrives: it takes the rest of this
        // window and its quota in the next one before class 1 is served again.
        assert_eq!(run(&mut s, 0b10, 2), [1, 1]);
        assert_eq!(run(&mut s, 0b11, 5), [0, 0, 0, 0, 1]);
        assert_eq!(config.starvation_bound(ClassId::new(1)), Some(4), "the bound is tight here");
    }
}
