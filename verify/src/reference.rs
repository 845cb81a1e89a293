//! A plain reference model of the channel's semantics, written for clarity rather than speed:
//! vectors and loops, no bitmasks, no reservations table tricks. The proptest state machine runs
//! the real channel and this model side by side and demands identical answers.

use std::collections::VecDeque;
use std::time::Duration;

use veltrix_engine::{ClassStats, Config, DeadLetterReason, OverloadPolicy, SchedulerMode};

/// An event id with its class, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// The event's id.
    pub id: u64,
    enqueued_at: Duration,
    deadline: Option<Duration>,
}

/// The model's answer to an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// A slot was taken; `shed` is the id pushed out to make room, if any.
    Reserved {
        /// The displaced event.
        shed: Option<u64>,
    },
    /// Full under backpressure.
    Full,
    /// Rejected by policy.
    Rejected,
    /// Closed.
    Closed,
}

/// One dequeue step of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Delivered `id` of `class`.
    Deliver {
        /// Event id.
        id: u64,
        /// Class index.
        class: usize,
    },
    /// Dead-lettered `id` of `class`.
    Dead {
        /// Event id.
        id: u64,
        /// Class index.
        class: usize,
        /// Why.
        reason: DeadLetterReason,
    },
}

#[derive(Debug)]
struct Class {
    queue: VecDeque<Queued>,
    capacity: usize,
    reserved: usize,
    policy: OverloadPolicy,
    deadline: Option<Duration>,
    weight: u32,
    codel: Option<CodelModel>,
    stats: ClassStats,
}

#[derive(Debug)]
struct CodelModel {
    target: Duration,
    interval: Duration,
    interval_end: Option<Duration>,
    min_sojourn: Duration,
    overloaded: bool,
    first_of_interval: bool,
}

/// The reference model.
#[derive(Debug)]
pub struct Reference {
    classes: Vec<Class>,
    mode: SchedulerMode,
    /// DRR: the class whose turn it is and how many it has served in this turn.
    turn: usize,
    served_in_turn: u32,
    /// Capped tier: services in the current window, and the tier's share of them.
    window_pos: u32,
    tier_in_window: u32,
    tier_quota: u32,
    window: u32,
    closed: bool,
    abandoned: bool,
}

impl Reference {
    /// The model of a channel built from `config`.
    pub fn new(config: &Config) -> Reference {
        let classes = config
            .classes()
            .iter()
            .map(|c| Class {
                queue: VecDeque::new(),
                capacity: c.capacity,
                reserved: 0,
                policy: c.policy,
                deadline: c.deadline,
                weight: c.weight,
                codel: c.codel.map(|p| CodelModel {
                    target: p.target,
                    interval: p.interval,
                    interval_end: None,
                    min_sojourn: Duration::ZERO,
                    overloaded: false,
                    first_of_interval: true,
                }),
                stats: ClassStats::default(),
            })
            .collect();
        let (tier_quota, window) = match config.scheduler() {
            SchedulerMode::CappedStrict { cap, window } => {
                let q = (cap * f64::from(window)).floor() as u32;
                (q.max(1).min(window), window)
            }
            _ => (0, 0),
        };
        let turn = if matches!(config.scheduler(), SchedulerMode::CappedStrict { .. }) { 1 } else { 0 };
        Reference {
            classes,
            mode: config.scheduler(),
            turn,
            served_in_turn: 0,
            window_pos: 0,
            tier_in_window: 0,
            tier_quota,
            window,
            closed: false,
            abandoned: false,
        }
    }

    fn full(&self, k: usize) -> bool {
        let c = &self.classes[k];
        c.queue.len() + c.reserved >= c.capacity
    }

    /// Offers to class `k` (a reservation: [`Reference::commit`] fills it). `Full` is not counted
    /// here; call [`Reference::give_up`] when the caller does not wait.
    pub fn reserve(&mut self, k: usize) -> Offer {
        if self.closed {
            self.classes[k].stats.offered += 1;
            self.classes[k].stats.rejected_closed += 1;
            return Offer::Closed;
        }
        let admissible = (0..=k).all(|j| !self.full(j));
        let mut shed = None;
        if !admissible {
            match self.classes[k].policy {
                OverloadPolicy::Backpressure => return Offer::Full,
                OverloadPolicy::Reject => {
                    self.classes[k].stats.offered += 1;
                    self.classes[k].stats.rejected_policy += 1;
                    return Offer::Rejected;
                }
                _ => {
                    if let Some(old) = self.classes[k].queue.pop_front() {
                        self.classes[k].stats.dead_shed += 1;
                        shed = Some(old.id);
                    }
                    if self.full(k) {
                        return Offer::Full;
                    }
                }
            }
        }
        self.classes[k].reserved += 1;
        Offer::Reserved { shed }
    }

    /// Counts an offer refused as `Full` that the caller gave up on.
    pub fn give_up(&mut self, k: usize) {
        self.classes[k].stats.offered += 1;
        self.classes[k].stats.rejected_full += 1;
    }

    /// Drops a reservation of class `k`.
    pub fn cancel(&mut self, k: usize) {
        assert!(self.classes[k].reserved > 0);
        self.classes[k].reserved -= 1;
    }

    /// Fills a reservation of class `k` with `id` at `now`; returns true if it went straight to
    /// the dead letter (`Closed`) because the receivers are gone.
    pub fn commit(&mut self, k: usize, id: u64, deadline: Option<Duration>, now: Duration) -> bool {
        let c = &mut self.classes[k];
        assert!(c.reserved > 0);
        c.reserved -= 1;
        c.stats.offered += 1;
        c.stats.accepted += 1;
        if self.abandoned {
            c.stats.dead_closed += 1;
            return true;
        }
        let deadline = deadline.or(c.deadline.map(|d| now + d));
        c.queue.push_back(Queued { id, enqueued_at: now, deadline });
        false
    }

    fn pick(&self) -> Option<usize> {
        let nonempty: Vec<usize> = (0..self.classes.len()).filter(|&k| !self.classes[k].queue.is_empty()).collect();
        let first = *nonempty.first()?;
        match self.mode {
            SchedulerMode::Strict => Some(first),
            SchedulerMode::Drr => Some(self.drr_pick(0, &nonempty)),
            _ => {
                let others = nonempty.iter().any(|&k| k > 0);
                if first == 0 && (self.tier_in_window < self.tier_quota || !others) {
                    Some(0)
                } else {
                    Some(self.drr_pick(1, &nonempty))
                }
            }
        }
    }

    /// DRR over `from..`: the first non-empty class at or after the one whose turn it is.
    fn drr_pick(&self, from: usize, nonempty: &[usize]) -> usize {
        let n = self.classes.len();
        let order = (self.turn..n).chain(from..self.turn);
        order.into_iter().find(|k| nonempty.contains(k)).expect("a DRR class is non-empty")
    }

    fn served(&mut self, k: usize) {
        let drr_from = match self.mode {
            SchedulerMode::Strict => return,
            SchedulerMode::Drr => 0,
            _ => {
                self.window_pos += 1;
                if k == 0 {
                    self.tier_in_window += 1;
                }
                if self.window_pos == self.window {
                    self.window_pos = 0;
                    self.tier_in_window = 0;
                }
                if k == 0 {
                    return;
                }
                1
            }
        };
        if k != self.turn {
            self.turn = k;
            self.served_in_turn = 0;
        }
        self.served_in_turn += 1;
        if self.served_in_turn == self.classes[k].weight {
            self.turn = if k + 1 == self.classes.len() { drr_from } else { k + 1 };
            self.served_in_turn = 0;
        }
    }

    /// One dequeue step at `now`, or `None` if nothing is queued.
    pub fn pop(&mut self, now: Duration) -> Option<Step> {
        let k = self.pick()?;
        let head = self.classes[k].queue.pop_front().expect("picked a non-empty class");
        let sojourn = now.saturating_sub(head.enqueued_at);
        let c = &mut self.classes[k];
        if head.deadline.is_some_and(|d| d <= now) {
            c.stats.dead_expired += 1;
            return Some(Step::Dead { id: head.id, class: k, reason: DeadLetterReason::Expired });
        }
        if let Some(codel) = &mut c.codel {
            if codel.interval_end.is_none_or(|end| now > end) {
                codel.interval_end = Some(now + codel.interval);
                codel.overloaded = codel.min_sojourn > codel.target;
                codel.first_of_interval = true;
            }
            let shed = if codel.first_of_interval {
                codel.first_of_interval = false;
                codel.min_sojourn = sojourn;
                false
            } else {
                codel.min_sojourn = codel.min_sojourn.min(sojourn);
                codel.overloaded && sojourn > 2 * codel.target
            };
            if shed {
                c.stats.dead_codel += 1;
                return Some(Step::Dead { id: head.id, class: k, reason: DeadLetterReason::Codel });
            }
        }
        c.stats.delivered += 1;
        self.served(k);
        Some(Step::Deliver { id: head.id, class: k })
    }

    /// Stops admission.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// The receivers are gone: every queued event is dead-lettered (`Closed`), most critical
    /// class first, FIFO within a class. Returns their ids in that order.
    pub fn abandon(&mut self) -> Vec<(u64, usize)> {
        self.closed = true;
        self.abandoned = true;
        let mut out = Vec::new();
        for (k, c) in self.classes.iter_mut().enumerate() {
            while let Some(q) = c.queue.pop_front() {
                c.stats.dead_closed += 1;
                out.push((q.id, k));
            }
        }
        out
    }

    /// Closed, nothing queued, no reservation open.
    pub fn drained(&self) -> bool {
        self.closed && self.classes.iter().all(|c| c.queue.is_empty() && c.reserved == 0)
    }

    /// Whether class `k` has queued events.
    pub fn backlogged(&self, k: usize) -> bool {
        !self.classes[k].queue.is_empty()
    }

    /// The ledger of class `k`.
    pub fn stats(&self, k: usize) -> ClassStats {
        let c = &self.classes[k];
        let mut s = c.stats;
        s.queued = c.queue.len() as u64;
        s
    }
}
