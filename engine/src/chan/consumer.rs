//! The receiving side's state: the scheduler (DRR deficits, the tier quota), CoDel, each class's
//! next ring position and the ledger counters that only receivers change. It lives behind the
//! consumer lock, which producers never take on their fast path (only a `ShedOldest` offer that
//! must push out a queued event, and the ledger snapshot, take it).

use tokio::time::Instant;

use std::time::Duration;

use super::ring::Ring;
use crate::adaptive::{Controller, Window};
use crate::codel::CodelState;
use crate::config::{ClassId, Config};
use crate::core::{Entry, Pop, dequeue};
use crate::dead::{DeadLetter, DeadLetterReason};
use crate::ledger::{ClassStats, Completion};
use crate::sched::Scheduler;

/// The clock, read at most once per critical section and only when a decision needs it (an
/// event with a deadline, or a class with CoDel). Dropped whenever user code runs (a sink), so a
/// decision never uses a time read before it.
#[derive(Debug, Default)]
pub(crate) struct LazyNow(Option<Instant>);

impl LazyNow {
    pub(crate) fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// Whether class `c`'s head (published, at `c.next`) would be dead-lettered now: expired, or
/// shed by CoDel. Changes nothing. Kept out of line so that `Consumer::pop`, which runs once per
/// event, stays small enough for its callees to be inlined into it.
#[inline(never)]
fn head_dies<E>(ring: &Ring<Entry<E, Instant>>, c: &ConsumerClass, now: &mut LazyNow) -> bool {
    ring.peek(c.next, |e| {
        if e.deadline.is_none() && c.codel.is_none() {
            return false;
        }
        let now = now.get();
        e.deadline.is_some_and(|d| d <= now)
            || c.codel
                .as_ref()
                .zip(e.enqueued_at)
                .is_some_and(|(codel, at)| codel.would_shed(now.saturating_duration_since(at), now))
    })
}

/// What [`Consumer::pop`] found.
#[derive(Debug)]
pub(crate) enum Next<E> {
    /// The head was taken: delivered or dead-lettered.
    Pop(Pop<E, Instant>),
    /// No class has a published event.
    Empty,
    /// The head would be dead-lettered and the caller asked to hold it.
    Held,
}

#[derive(Debug)]
pub(crate) struct ConsumerClass {
    /// The next ring position to take (positions taken so far, not wrapping).
    pub(crate) next: u64,
    /// Positions taken but not yet released to the producers (released once per batch).
    unreleased: u64,
    codel: Option<CodelState<Instant>>,
    /// The receiving side's counters: deliveries, dead letters at dequeue, completions. The
    /// producers' fields (offers, acceptances, refusals) stay zero here.
    pub(crate) stats: ClassStats,
}

#[derive(Debug)]
pub(crate) struct Consumer {
    sched: Scheduler,
    pub(crate) classes: Box<[ConsumerClass]>,
    /// Bit k: class k has positions taken since the last flush.
    unreleased: u32,
    /// Adaptive admission's controller and the current window's counts.
    adaptive: Option<Box<Adapting>>,
}

/// The adaptive controller's side of the consumer: it counts each delivery's wait against the
/// class's target and times the class's busy stretches, and once per interval turns the counts
/// into [`Window`]s.
#[derive(Debug)]
struct Adapting {
    controller: Controller,
    interval: Duration,
    /// Per class: its target delay, this window's counts, and its last delivery.
    classes: Box<[AdaptClass]>,
    windows: Box<[Window]>,
    /// When the current window opened; `None` before the first receive.
    opened: Option<Instant>,
}

#[derive(Debug)]
struct AdaptClass {
    target: Duration,
    /// This window's counts (`delivered` is read off the ledger at the window's end).
    late: u64,
    busy: Duration,
    busy_delivered: u64,
    /// Deliveries when the window opened.
    delivered_before: u64,
    /// The last delivery: when, whether the class's next event was already queued then, and
    /// how many offers the class had refused by then.
    last: Option<(Instant, bool, u64)>,
}

impl Adapting {
    /// Accounts one delivery of class `k`: its wait against the target, and the time since the
    /// class's previous delivery as busy time if the class had a backlog all along: its next
    /// event was already queued at that delivery, or since then an offer to it was refused (a
    /// class held at its limit can be emptied by a batch while offers are turned away).
    fn delivered<E>(
        &mut self,
        k: usize,
        enqueued_at: Option<Instant>,
        now: Instant,
        ring: &Ring<Entry<E, Instant>>,
        next: u64,
        held_back: u64,
    ) {
        let ac = &mut self.classes[k];
        // Adaptive classes always stamp the enqueue time.
        let waited = enqueued_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        ac.late += u64::from(waited > ac.target);
        // (No let chain: the engine builds with Rust 1.85.)
        if let Some((last, ready, held)) = ac.last {
            if ready || held_back > held {
                ac.busy += now.saturating_duration_since(last);
                ac.busy_delivered += 1;
            }
        }
        // The next slot's stamp: the line this consumer reads next anyway.
        ac.last = Some((now, ring.ready(next), held_back));
    }
}

impl Consumer {
    pub(crate) fn new(config: &Config) -> Consumer {
        let classes = config
            .classes()
            .iter()
            .map(|spec| ConsumerClass {
                next: 0,
                unreleased: 0,
                codel: spec.codel.map(CodelState::new),
                stats: ClassStats::default(),
            })
            .collect();
        let adaptive = Controller::new(config).map(|controller| {
            let n = config.len();
            let classes = (0..n)
                .map(|k| AdaptClass {
                    target: controller.target(k),
                    late: 0,
                    busy: Duration::ZERO,
                    busy_delivered: 0,
                    delivered_before: 0,
                    last: None,
                })
                .collect();
            let interval = config.adaptive().expect("a controller means adaptive").interval;
            Box::new(Adapting {
                controller,
                interval,
                classes,
                windows: vec![Window::default(); n].into(),
                opened: None,
            })
        });
        Consumer { sched: Scheduler::new(config), classes, unreleased: 0, adaptive }
    }

    /// Adaptive admission: accounts a delivery of `class` just popped (its wait, and the class's
    /// busy time); `held_back` is the class's running count of refused offers. Kept apart from
    /// [`Consumer::pop`], which a static channel runs alone.
    #[inline(never)]
    pub(crate) fn delivered<E>(
        &mut self,
        class: ClassId,
        enqueued_at: Option<Instant>,
        now: &mut LazyNow,
        rings: &[Ring<Entry<E, Instant>>],
        held_back: u64,
    ) {
        let k = class.index();
        if let Some(a) = self.adaptive.as_deref_mut() {
            a.delivered(k, enqueued_at, now.get(), &rings[k], self.classes[k].next, held_back);
        }
    }

    /// Whether admission is adaptive (the receive path checks this before anything else of it).
    #[inline]
    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    /// Adaptive admission: closes the control window if its interval is over, feeds it to the
    /// controller and returns it, for the caller to publish its limits and rates. `None` when
    /// static or mid-window.
    pub(crate) fn adapt(&mut self, now: &mut LazyNow) -> Option<&Controller> {
        let a = self.adaptive.as_deref_mut()?;
        let now = now.get();
        let Some(opened) = a.opened else {
            a.opened = Some(now);
            return None;
        };
        let elapsed = now.saturating_duration_since(opened);
        if elapsed < a.interval {
            return None;
        }
        for ((ac, c), w) in a.classes.iter_mut().zip(self.classes.iter()).zip(a.windows.iter_mut()) {
            *w = Window {
                delivered: c.stats.delivered - std::mem::replace(&mut ac.delivered_before, c.stats.delivered),
                late: std::mem::take(&mut ac.late),
                busy: std::mem::take(&mut ac.busy),
                busy_delivered: std::mem::take(&mut ac.busy_delivered),
            };
        }
        a.opened = Some(now);
        a.controller.update(elapsed, &a.windows);
        Some(&a.controller)
    }

    /// One scheduler step: the next event to deliver, or the next head to dead-letter (expired,
    /// or shed by CoDel), or [`Next::Empty`] when no class has a published event. With
    /// `hold_dead` a head that would be dead-lettered is left where it is ([`Next::Held`]): a
    /// receive that already holds deliveries returns them before any sink call could delay
    /// them past their deadlines. The position taken stays unreleased until [`Consumer::flush`].
    ///
    /// Always inlined into the receive loop: called out of line, its result (a delivery in an
    /// enum) went through the stack and was read back by wider loads than it was written with,
    /// a store-forwarding stall per event that made draining a full class half as fast
    /// (`drain-full` in `benches/`, seen with `perf annotate`).
    #[inline(always)]
    pub(crate) fn pop<E>(&mut self, rings: &[Ring<Entry<E, Instant>>], now: &mut LazyNow, hold_dead: bool) -> Next<E> {
        let classes = &self.classes;
        let Some(k) = self.sched.pick_by(|k| rings[k].ready(classes[k].next)) else { return Next::Empty };
        // `pick_by` returns the index of a configured class.
        let class = ClassId::from_index(k);
        let c = &mut self.classes[k];
        if hold_dead && head_dies(&rings[k], c, now) {
            return Next::Held;
        }
        let entry = rings[k].take(c.next);
        c.next += 1;
        c.unreleased += 1;
        self.unreleased |= 1 << k;
        Next::Pop(dequeue(entry, class, c.codel.as_mut(), &mut c.stats, &mut self.sched, || now.get()))
    }

    /// Takes class `k`'s oldest event out as a dead letter with `reason`, waiting the few
    /// instructions a producer may still need to publish it; `None` if nothing is taken in `k`.
    pub(crate) fn pop_dead<E>(
        &mut self,
        rings: &[Ring<Entry<E, Instant>>],
        k: usize,
        reason: DeadLetterReason,
    ) -> Option<DeadLetter<E, Instant>> {
        let c = &mut self.classes[k];
        if rings[k].queued_since(c.next) == 0 {
            return None;
        }
        let entry = rings[k].take_when_ready(c.next);
        c.next += 1;
        c.unreleased += 1;
        self.unreleased |= 1 << k;
        c.stats.count_dead(reason);
        Some(entry.dead(ClassId::new(k), reason))
    }

    /// Classes with positions taken since the last flush, with how many; resets them.
    pub(crate) fn flush(&mut self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let mut mask = std::mem::take(&mut self.unreleased);
        std::iter::from_fn(move || {
            if mask == 0 {
                return None;
            }
            let k = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            Some((k, std::mem::take(&mut self.classes[k].unreleased)))
        })
    }

    /// Records how a delivered event of `class` ended.
    ///
    /// # Panics
    ///
    /// If `class` has no delivered event awaiting completion.
    pub(crate) fn complete(&mut self, class: ClassId, completion: Completion, retries: u32) {
        let n = self.classes.len();
        let c =
            self.classes.get_mut(class.index()).unwrap_or_else(|| panic!("{class:?} is not configured ({n} classes)"));
        assert!(c.stats.in_flight() > 0, "completion without a delivery in flight in {class:?}");
        c.stats.count_completion(completion);
        c.stats.retries += u64::from(retries);
    }
}
