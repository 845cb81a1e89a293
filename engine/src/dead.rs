//! Dead letters, in one place: the event with its class and reason ([`DeadLetter`]), the
//! reasons ([`DeadLetterReason`]), and where they go ([`DeadLetterSink`]). The channel, the
//! sans-IO core and the engine all produce them; the ledger counts them by reason.

use std::fmt;

use crate::config::ClassId;

/// Why an event went to the dead letter instead of a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// Pushed out by a newer event of a [`ShedOldest`](crate::OverloadPolicy::ShedOldest) class.
    Shed,
    /// Dropped at dequeue by CoDel: it waited more than twice the target while the class was overloaded.
    Codel,
    /// Its deadline passed before a handler could start on it: at dequeue, or (engine) while it
    /// waited behind other events its worker had taken; no handler ran.
    Expired,
    /// Every receiver was gone, so nothing could ever take it.
    Closed,
    /// Its handler failed fatally, or kept failing until its retries (or its deadline) ran out.
    HandlerFailed,
    /// Its handler panicked; the worker carried on.
    Panicked,
    /// The engine shut down before it was handled (queued at the drain deadline, or in flight then).
    Shutdown,
}

impl DeadLetterReason {
    /// Every reason, in the order events meet them (queue, then handler, then shutdown).
    pub const ALL: [DeadLetterReason; 7] = [
        DeadLetterReason::Shed,
        DeadLetterReason::Codel,
        DeadLetterReason::Expired,
        DeadLetterReason::Closed,
        DeadLetterReason::HandlerFailed,
        DeadLetterReason::Panicked,
        DeadLetterReason::Shutdown,
    ];
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeadLetterReason::Shed => "shed",
            DeadLetterReason::Codel => "codel",
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::Closed => "closed",
            DeadLetterReason::HandlerFailed => "handler_failed",
            DeadLetterReason::Panicked => "panicked",
            DeadLetterReason::Shutdown => "shutdown",
        })
    }
}

/// An accepted event that will never reach a receiver, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter<E, T = tokio::time::Instant> {
    /// The event.
    pub event: E,
    /// Its class.
    pub class: ClassId,
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// When it had been enqueued, if recorded (see [`Delivery::enqueued_at`](crate::Delivery::enqueued_at)).
    pub enqueued_at: Option<T>,
}

/// Where dead letters go. Called outside every lock of the channel, on the thread whose operation
/// produced the dead letter: a sender for `Shed`, and for `Closed` when it commits after every
/// receiver is gone; a receiver for `Expired`/`Codel`; the last receiver's drop for the
/// backlog (`Closed`).
///
/// The call cannot refuse: once the engine has handed the event over, the event and its reason are
/// the sink's. A sink backed by a bounded buffer decides itself what to do when it is full
/// (block, spill, or count and drop) — the channel's ledger has already counted the dead letter.
/// Any `Fn(DeadLetter<E>) + Send + Sync` closure is a sink.
///
/// A sink that panics is contained: the operation that produced the dead letter completes, the
/// ledger has counted the dead letter with its reason, the panic is counted
/// ([`Stats::sink_panics`](crate::Stats::sink_panics)) and logged once through `tracing` (the default panic hook stays
/// silent for it).
pub trait DeadLetterSink<E>: Send + Sync {
    /// Takes one dead letter.
    fn dead_letter(&self, letter: DeadLetter<E>);
}

impl<E, F> DeadLetterSink<E> for F
where
    F: Fn(DeadLetter<E>) + Send + Sync,
{
    fn dead_letter(&self, letter: DeadLetter<E>) {
        self(letter)
    }
}
