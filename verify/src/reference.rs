//! A plain reference model of the channel's semantics, written for clarity rather than speed:
//! vectors and loops, no bitmasks, no reservations table tricks. The proptest state machine runs
//! the real channel and this model side by side and demands identical answers.
//!
//! The model is written from the definitions, not from the engine's code, so that a wrong rule
//! in the engine cannot pass because both sides share it:
//! - **CoDel** (folly's rule, as `docs/verification.md` states it): time is cut into intervals;
//!   an interval starts at the first dequeue after the previous one ended and lasts `interval`.
//!   The model keeps every sojourn seen in the current interval; when an interval ends, the class
//!   is overloaded for the next one iff the *smallest* of those sojourns exceeded `target`. The
//!   first dequeue of an interval is never shed; later ones are shed iff the class is overloaded
//!   and the event waited more than `2 × target`.
//! - **The tier's cap** (`CappedStrict { cap, window }`): counted service by service — the tier
//!   may take a service while doing so keeps its share of the current window within
//!   `cap × window` (its first service of a window is always allowed), checked in real numbers.
//! - **The ledger**: the model's own [`Tally`] per class, counted as events move, with
//!   conservation checked as arithmetic on those counters. The engine's `ClassStats` appears only
//!   as the thing compared against, never as the model's bookkeeping.

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
    tally: Tally,
}

/// CoDel as defined (see the module docs): the sojourns of the current interval are all kept.
#[derive(Debug)]
struct CodelModel {
    target: Duration,
    interval: Duration,
    /// When the current interval ends; `None` before the first dequeue.
    ends: Option<Duration>,
    /// Every sojourn dequeued in the current interval.
    sojourns: Vec<Duration>,
    /// The verdict on the interval that ended last.
    overloaded: bool,
}

impl CodelModel {
    /// What [`CodelModel::sheds`] would answer, changing nothing: a dequeue that starts an
    /// interval is never shed.
    fn would_shed(&self, sojourn: Duration, now: Duration) -> bool {
        let starts_interval = self.ends.is_none_or(|end| now > end);
        !starts_interval && self.overloaded && sojourn > self.target * 2
    }

    /// Whether the head event, which waited `sojourn`, is shed at `now`.
    fn sheds(&mut self, sojourn: Duration, now: Duration) -> bool {
        let starts_interval = match self.ends {
            None => true,
            Some(end) => now > end,
        };
        if starts_interval {
            // The interval just ended (none before the first dequeue) decides the overload.
            self.overloaded = self.ends.is_some() && self.sojourns.iter().min().is_some_and(|m| *m > self.target);
            self.ends = Some(now + self.interval);
            self.sojourns.clear();
            self.sojourns.push(sojourn);
            return false;
        }
        self.sojourns.push(sojourn);
        self.overloaded && sojourn > self.target * 2
    }
}

/// The model's own ledger of one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Final answers to sends (every outcome below but reservations).
    pub offered: u64,
    /// Taken in.
    pub accepted: u64,
    /// `try_send` refused: full.
    pub refused_full: u64,
    /// Refused by the `Reject` policy.
    pub refused_policy: u64,
    /// Refused: closed.
    pub refused_closed: u64,
    /// Send futures dropped while they waited.
    pub cancelled: u64,
    /// Reservations refused (no event).
    pub reservations_refused: u64,
    /// Handed to a receiver.
    pub delivered: u64,
    /// Pushed out by a newer event.
    pub shed: u64,
    /// Dropped by CoDel.
    pub codel: u64,
    /// Expired in the queue.
    pub expired: u64,
    /// Dead-lettered because the receivers were gone.
    pub closed: u64,
}

impl Tally {
    /// Conservation, as arithmetic on the model's counters: every offered event was answered
    /// once, and every accepted one is delivered, dead-lettered or still `queued`.
    ///
    /// # Panics
    ///
    /// If either identity fails.
    pub fn check(&self, queued: u64) {
        let answered = self.accepted + self.refused_full + self.refused_policy + self.refused_closed + self.cancelled;
        assert_eq!(self.offered, answered, "model: offered != answered: {self:?}");
        let ended = self.delivered + self.shed + self.codel + self.expired + self.closed;
        assert_eq!(self.accepted, ended + queued, "model: accepted != ended + queued {queued}: {self:?}");
    }

    /// Asserts that the channel's ledger `s` of a class says what the model counted, field by
    /// field, and that its identities hold when recomputed from its fields (a plain channel
    /// reports no completions, so every delivered event is in the consumer's hands).
    ///
    /// # Panics
    ///
    /// Naming the first field that differs.
    pub fn assert_matches(&self, class: usize, queued: u64, s: &ClassStats) {
        let pairs = [
            ("offered", self.offered, s.offered),
            ("accepted", self.accepted, s.accepted),
            ("rejected_full", self.refused_full, s.rejected_full),
            ("rejected_policy", self.refused_policy, s.rejected_policy),
            ("rejected_closed", self.refused_closed, s.rejected_closed),
            ("cancelled", self.cancelled, s.cancelled),
            ("reservations_refused", self.reservations_refused, s.reservations_refused),
            ("delivered", self.delivered, s.delivered),
            ("dead_shed", self.shed, s.dead_shed),
            ("dead_codel", self.codel, s.dead_codel),
            ("dead_expired", self.expired, s.dead_expired),
            ("dead_closed", self.closed, s.dead_closed),
            ("queued", queued, s.queued),
            ("in_flight", self.delivered, s.in_flight()),
            ("dead_lettered", self.shed + self.codel + self.expired + self.closed, s.dead_lettered()),
            ("rejected", self.refused_full + self.refused_policy + self.refused_closed, s.rejected()),
        ];
        for (field, model, channel) in pairs {
            assert_eq!(channel, model, "class {class}: channel's {field} {channel}, the model counted {model}");
        }
        let after_delivery = s.handled
            + s.dead_handler_failed
            + s.dead_panicked
            + s.dead_shutdown_in_flight
            + s.dead_expired_in_flight
            + s.dead_shutdown;
        assert_eq!(after_delivery, 0, "class {class}: a plain channel reports no completions: {s:?}");
        assert!(s.conserved(), "class {class}: ClassStats::conserved() disagrees with the arithmetic: {s:?}");
    }
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
    cap: f64,
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
                    ends: None,
                    sojourns: Vec::new(),
                    overloaded: false,
                }),
                tally: Tally::default(),
            })
            .collect();
        let (cap, window) = match config.scheduler() {
            SchedulerMode::CappedStrict { cap, window } => (cap, window),
            _ => (0.0, 0),
        };
        let turn = if matches!(config.scheduler(), SchedulerMode::CappedStrict { .. }) { 1 } else { 0 };
        Reference {
            classes,
            mode: config.scheduler(),
            turn,
            served_in_turn: 0,
            window_pos: 0,
            tier_in_window: 0,
            cap,
            window,
            closed: false,
            abandoned: false,
        }
    }

    fn full(&self, k: usize) -> bool {
        let c = &self.classes[k];
        c.queue.len() + c.reserved >= c.capacity
    }

    /// Asks class `k` for a slot (a send takes one and [`Reference::commit`]s at once; a
    /// reservation commits later). Counts nothing but a shed event: the caller reports how the
    /// answer ended — [`Reference::refuse_send`], [`Reference::refuse_reservation`], or
    /// [`Reference::cancel_send`] for a send that waited and was dropped.
    pub fn reserve(&mut self, k: usize) -> Offer {
        if self.closed {
            return Offer::Closed;
        }
        let admissible = (0..=k).all(|j| !self.full(j));
        let mut shed = None;
        if !admissible {
            match self.classes[k].policy {
                OverloadPolicy::Backpressure => return Offer::Full,
                OverloadPolicy::Reject => return Offer::Rejected,
                _ => {
                    if let Some(old) = self.classes[k].queue.pop_front() {
                        self.classes[k].tally.shed += 1;
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

    /// A send to class `k` got `answer` (a refusal) and its event back.
    ///
    /// # Panics
    ///
    /// If `answer` is not a refusal.
    pub fn refuse_send(&mut self, k: usize, answer: Offer) {
        let t = &mut self.classes[k].tally;
        t.offered += 1;
        match answer {
            Offer::Full => t.refused_full += 1,
            Offer::Rejected => t.refused_policy += 1,
            Offer::Closed => t.refused_closed += 1,
            Offer::Reserved { .. } => panic!("not a refusal"),
        }
    }

    /// A reservation of class `k` was refused.
    pub fn refuse_reservation(&mut self, k: usize) {
        self.classes[k].tally.reservations_refused += 1;
    }

    /// A send to class `k` waited for room and was dropped.
    pub fn cancel_send(&mut self, k: usize) {
        let t = &mut self.classes[k].tally;
        t.offered += 1;
        t.cancelled += 1;
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
        c.tally.offered += 1;
        c.tally.accepted += 1;
        if self.abandoned {
            c.tally.closed += 1;
            return true;
        }
        let deadline = deadline.or(c.deadline.map(|d| now + d));
        c.queue.push_back(Queued { id, enqueued_at: now, deadline });
        false
    }

    /// Whether the tier (class 0) may take the next service under its cap: its first of a
    /// window always, later ones while its share stays within `cap × window`.
    fn tier_within_cap(&self) -> bool {
        self.tier_in_window == 0 || f64::from(self.tier_in_window + 1) <= self.cap * f64::from(self.window)
    }

    fn pick(&self) -> Option<usize> {
        let nonempty: Vec<usize> = (0..self.classes.len()).filter(|&k| !self.classes[k].queue.is_empty()).collect();
        let first = *nonempty.first()?;
        match self.mode {
            SchedulerMode::Strict => Some(first),
            SchedulerMode::Drr => Some(self.drr_pick(0, &nonempty)),
            _ => {
                let others = nonempty.iter().any(|&k| k > 0);
                if first == 0 && (self.tier_within_cap() || !others) {
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

    /// A dequeue step at `now` for a receive that already holds deliveries: the channel hands
    /// those out before any dead letter could delay them, so it takes the next head only if it
    /// is delivered. `None` if nothing is queued or the head would be dead-lettered (left queued).
    pub fn pop_deliverable(&mut self, now: Duration) -> Option<Step> {
        let k = self.pick()?;
        let c = &self.classes[k];
        let head = c.queue.front().expect("picked a non-empty class");
        let expired = head.deadline.is_some_and(|d| d <= now);
        let shed = c.codel.as_ref().is_some_and(|codel| codel.would_shed(now.saturating_sub(head.enqueued_at), now));
        if expired || shed {
            return None;
        }
        self.pop(now)
    }

    /// One dequeue step at `now`, or `None` if nothing is queued.
    pub fn pop(&mut self, now: Duration) -> Option<Step> {
        let k = self.pick()?;
        let head = self.classes[k].queue.pop_front().expect("picked a non-empty class");
        let sojourn = now.saturating_sub(head.enqueued_at);
        let c = &mut self.classes[k];
        if head.deadline.is_some_and(|d| d <= now) {
            c.tally.expired += 1;
            return Some(Step::Dead { id: head.id, class: k, reason: DeadLetterReason::Expired });
        }
        if c.codel.as_mut().is_some_and(|codel| codel.sheds(sojourn, now)) {
            c.tally.codel += 1;
            return Some(Step::Dead { id: head.id, class: k, reason: DeadLetterReason::Codel });
        }
        c.tally.delivered += 1;
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
                c.tally.closed += 1;
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

    /// Checks the model's own conservation, then that the channel's ledger `s` of class `k`
    /// says the same (see [`Tally::assert_matches`]).
    ///
    /// # Panics
    ///
    /// On the first difference.
    pub fn assert_ledger(&self, k: usize, s: &ClassStats) {
        let c = &self.classes[k];
        let queued = c.queue.len() as u64;
        c.tally.check(queued);
        c.tally.assert_matches(k, queued, s);
    }
}
