//! The outcome ledger: where every offered event went, per class.

use crate::config::ClassId;
use crate::dead::DeadLetterReason;

/// One class's ledger. Conservation, exact at every snapshot:
/// `offered = accepted + rejected() + cancelled` and
/// `accepted = handled + dead_lettered() + queued + in_flight()`.
///
/// **Offered** means one thing everywhere: an event handed to a send (`send`, `try_send`,
/// `send_blocking`, a filled permit; the engine's `submit` family) that reached an answer —
/// taken in (`accepted`), handed back (`rejected_*`), or given up by its caller while it waited
/// for room (`cancelled`: the `send` future was dropped, and the event with it). A send future
/// dropped before its first poll offered nothing. A reservation is not an event: a permit
/// becomes one offered (and accepted) event when it is filled, and a refused reservation is
/// counted in `reservations_refused`, outside the identities.
///
/// A plain channel's consumer never reports completions, so for it `handled` and the handler
/// dead-letter counters stay 0 and `in_flight() = delivered`: every delivered event is in the
/// consumer's hands. The engine's workers report each completion
/// ([`Receiver::complete`](crate::Receiver::complete)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassStats {
    /// Events offered: `accepted + rejected() + cancelled` (see the type's docs).
    pub offered: u64,
    /// Events taken in.
    pub accepted: u64,
    /// Handed back because the class was full under backpressure (`try_send` only: a waiting
    /// send waits instead).
    pub rejected_full: u64,
    /// Handed back by the `Reject` policy.
    pub rejected_policy: u64,
    /// Handed back because the channel was closed.
    pub rejected_closed: u64,
    /// Dropped by their sender while waiting for room: a `send` (or `submit`) future cancelled
    /// after it had started waiting. The event was never accepted; it was dropped with the
    /// future, in the caller's hands.
    pub cancelled: u64,
    /// Reservations refused (full, rejected or closed). Not events, so outside `offered`.
    pub reservations_refused: u64,
    /// Handed to a receiver.
    pub delivered: u64,
    /// Dead-lettered with reason [`Shed`](DeadLetterReason::Shed).
    pub dead_shed: u64,
    /// Dead-lettered with reason [`Codel`](DeadLetterReason::Codel).
    pub dead_codel: u64,
    /// Dead-lettered with reason [`Expired`](DeadLetterReason::Expired) at dequeue: never
    /// delivered.
    pub dead_expired: u64,
    /// Dead-lettered with reason [`Closed`](DeadLetterReason::Closed).
    pub dead_closed: u64,
    /// Dead-lettered with reason [`HandlerFailed`](DeadLetterReason::HandlerFailed).
    pub dead_handler_failed: u64,
    /// Dead-lettered with reason [`Panicked`](DeadLetterReason::Panicked).
    pub dead_panicked: u64,
    /// Dead-lettered with reason [`Shutdown`](DeadLetterReason::Shutdown) from the queue: never
    /// delivered.
    pub dead_shutdown: u64,
    /// Dead-lettered with reason [`Shutdown`](DeadLetterReason::Shutdown) while in flight: its
    /// handler was stopped at the drain deadline (or its worker was dropped).
    pub dead_shutdown_in_flight: u64,
    /// Dead-lettered with reason [`Expired`](DeadLetterReason::Expired) after delivery: its
    /// deadline passed before its worker could start the first attempt (no handler ran).
    pub dead_expired_in_flight: u64,
    /// Delivered events whose handler completed successfully.
    pub handled: u64,
    /// Handler attempts after the first (retries).
    pub retries: u64,
    /// Queued now.
    pub queued: u64,
}

impl ClassStats {
    /// All rejections.
    pub fn rejected(&self) -> u64 {
        self.rejected_full + self.rejected_policy + self.rejected_closed
    }

    /// All dead letters.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_shed
            + self.dead_codel
            + self.dead_expired
            + self.dead_closed
            + self.dead_shutdown
            + self.completed_dead()
    }

    /// Dead letters with `reason`, before and after delivery.
    pub fn dead(&self, reason: DeadLetterReason) -> u64 {
        match reason {
            DeadLetterReason::Shed => self.dead_shed,
            DeadLetterReason::Codel => self.dead_codel,
            DeadLetterReason::Expired => self.dead_expired + self.dead_expired_in_flight,
            DeadLetterReason::Closed => self.dead_closed,
            DeadLetterReason::HandlerFailed => self.dead_handler_failed,
            DeadLetterReason::Panicked => self.dead_panicked,
            DeadLetterReason::Shutdown => self.dead_shutdown + self.dead_shutdown_in_flight,
        }
    }

    /// Dead letters after delivery (the handler's outcome, or shutdown while in flight).
    fn completed_dead(&self) -> u64 {
        self.dead_handler_failed + self.dead_panicked + self.dead_shutdown_in_flight + self.dead_expired_in_flight
    }

    /// Delivered events whose completion has not been reported yet.
    pub fn in_flight(&self) -> u64 {
        self.delivered.saturating_sub(self.handled + self.completed_dead())
    }

    /// Whether both conservation identities hold (and no more completions than deliveries).
    pub fn conserved(&self) -> bool {
        self.offered == self.accepted + self.rejected() + self.cancelled
            && self.handled + self.completed_dead() <= self.delivered
            && self.accepted == self.handled + self.dead_lettered() + self.queued + self.in_flight()
    }

    /// Counts a dead letter taken from the queue (never delivered).
    ///
    /// # Panics
    ///
    /// For a reason that only happens after delivery.
    pub(crate) fn count_dead(&mut self, reason: DeadLetterReason) {
        match reason {
            DeadLetterReason::Shed => self.dead_shed += 1,
            DeadLetterReason::Codel => self.dead_codel += 1,
            DeadLetterReason::Expired => self.dead_expired += 1,
            DeadLetterReason::Closed => self.dead_closed += 1,
            DeadLetterReason::Shutdown => self.dead_shutdown += 1,
            DeadLetterReason::HandlerFailed | DeadLetterReason::Panicked => {
                panic!("{reason} happens after delivery, not in the queue")
            }
        }
    }

    /// Counts a delivered event's completion.
    ///
    /// # Panics
    ///
    /// For a reason that only happens before delivery.
    pub(crate) fn count_completion(&mut self, completion: Completion) {
        match completion {
            Completion::Handled => self.handled += 1,
            Completion::DeadLettered(DeadLetterReason::HandlerFailed) => self.dead_handler_failed += 1,
            Completion::DeadLettered(DeadLetterReason::Panicked) => self.dead_panicked += 1,
            Completion::DeadLettered(DeadLetterReason::Shutdown) => self.dead_shutdown_in_flight += 1,
            Completion::DeadLettered(DeadLetterReason::Expired) => self.dead_expired_in_flight += 1,
            Completion::DeadLettered(reason) => panic!("{reason} happens before delivery, not as a completion"),
        }
    }
}

/// A snapshot of every class's ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub(crate) classes: Vec<ClassStats>,
    pub(crate) sink_panics: u64,
}

impl Stats {
    /// One class's ledger.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn class(&self, class: ClassId) -> &ClassStats {
        &self.classes[class.index()]
    }

    /// Every class's ledger, most critical first.
    pub fn classes(&self) -> &[ClassStats] {
        &self.classes
    }

    /// Calls of the dead-letter sink that panicked. The panic was contained: the operation
    /// that produced the dead letter completed, and the ledger counts the dead letter with its
    /// reason (the sink had taken the event when it panicked).
    pub fn sink_panics(&self) -> u64 {
        self.sink_panics
    }

    /// The sum over classes.
    pub fn total(&self) -> ClassStats {
        self.classes.iter().fold(ClassStats::default(), |mut t, c| {
            t += c;
            t
        })
    }
}

impl std::ops::AddAssign<&ClassStats> for ClassStats {
    fn add_assign(&mut self, c: &ClassStats) {
        self.offered += c.offered;
        self.accepted += c.accepted;
        self.rejected_full += c.rejected_full;
        self.rejected_policy += c.rejected_policy;
        self.rejected_closed += c.rejected_closed;
        self.cancelled += c.cancelled;
        self.reservations_refused += c.reservations_refused;
        self.delivered += c.delivered;
        self.dead_shed += c.dead_shed;
        self.dead_codel += c.dead_codel;
        self.dead_expired += c.dead_expired;
        self.dead_closed += c.dead_closed;
        self.dead_handler_failed += c.dead_handler_failed;
        self.dead_panicked += c.dead_panicked;
        self.dead_shutdown += c.dead_shutdown;
        self.dead_shutdown_in_flight += c.dead_shutdown_in_flight;
        self.dead_expired_in_flight += c.dead_expired_in_flight;
        self.handled += c.handled;
        self.retries += c.retries;
        self.queued += c.queued;
    }
}

/// How a delivered event's processing ended, reported with
/// [`Receiver::complete`](crate::Receiver::complete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completion {
    /// Handled successfully.
    Handled,
    /// Dead-lettered after delivery: `HandlerFailed`, `Panicked`, `Shutdown`, or `Expired` (the
    /// deadline passed before the first attempt could start).
    DeadLettered(DeadLetterReason),
}

#[cfg(all(test, not(veltrix_loom)))]
mod tests {
    use super::*;

    /// A conserved ledger: 10 offered, 8 accepted (2 handled, 1 failed, 1 shed, 1 queued, 3 in
    /// flight), 1 rejected full, 1 cancelled.
    fn conserved() -> ClassStats {
        ClassStats {
            offered: 10,
            accepted: 8,
            rejected_full: 1,
            cancelled: 1,
            delivered: 6,
            handled: 2,
            dead_handler_failed: 1,
            dead_shed: 1,
            queued: 1,
            ..ClassStats::default()
        }
    }

    #[test]
    fn conserved_checks_each_identity() {
        let ok = conserved();
        assert!(ok.conserved());
        assert_eq!((ok.rejected(), ok.dead_lettered(), ok.in_flight()), (1, 2, 3));
        let offered_off = ClassStats { offered: 11, ..ok };
        assert!(!offered_off.conserved(), "offered != accepted + rejected + cancelled");
        let accepted_off = ClassStats { queued: 2, ..ok };
        assert!(!accepted_off.conserved(), "accepted != ended + queued + in flight");
        let too_many_completions = ClassStats { delivered: 2, accepted: 4, offered: 6, queued: 0, ..ok };
        assert!(!too_many_completions.conserved(), "3 completions of 2 deliveries");
    }

    #[test]
    fn dead_letters_count_by_reason_before_and_after_delivery() {
        let s = ClassStats {
            dead_expired: 1,
            dead_expired_in_flight: 2,
            dead_shutdown: 3,
            dead_shutdown_in_flight: 4,
            dead_panicked: 5,
            ..ClassStats::default()
        };
        assert_eq!(s.dead(DeadLetterReason::Expired), 3);
        assert_eq!(s.dead(DeadLetterReason::Shutdown), 7);
        assert_eq!(s.dead_lettered(), 15);
    }
}
