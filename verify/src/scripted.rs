//! A handler whose behaviour each event scripts, and a log of every attempt it made: the engine
//! tests and the engine state machine submit [`Scripted`] events and check the log.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veltrix_engine::runtime::{Handler, HandlerContext, Outcome};
use veltrix_engine::{ClassId, Instant};

/// What the handler does with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Succeeds after `work` of (virtual) time.
    Ok {
        /// Time the attempt takes.
        work: Duration,
    },
    /// Fails `failures` times (asking for a retry), then succeeds; each attempt takes `work`.
    FlakyThenOk {
        /// Failed attempts before the success.
        failures: u32,
        /// Time each attempt takes.
        work: Duration,
    },
    /// Fails for good.
    Fatal,
    /// Panics.
    Panic,
}

/// A test event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scripted {
    /// Unique id.
    pub id: u64,
    /// What the handler does with it.
    pub behaviour: Behaviour,
}

/// One handler attempt, as logged when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The event.
    pub id: u64,
    /// Its class.
    pub class: ClassId,
    /// Its key.
    pub key: Option<u64>,
    /// 1-based attempt number.
    pub attempt: u32,
    /// When the attempt started.
    pub started: Instant,
    /// When it ended (`None` if it never did: panicked or was cancelled).
    pub ended: Option<Instant>,
    /// The event's deadline.
    pub deadline: Option<Instant>,
}

/// Shared attempt log.
pub type Log = Arc<Mutex<Vec<Attempt>>>;

/// The handler: follows each event's [`Behaviour`] and logs every attempt.
#[derive(Debug, Clone, Default)]
pub struct ScriptedHandler {
    /// Every attempt, in start order.
    pub log: Log,
}

impl Handler<Scripted> for ScriptedHandler {
    fn handle(&self, e: &Scripted, cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let log = self.log.clone();
        let e = *e;
        async move {
            let entry = Attempt {
                id: e.id,
                class: cx.class,
                key: cx.key,
                attempt: cx.attempt,
                started: Instant::now(),
                ended: None,
                deadline: cx.deadline,
            };
            let index = {
                let mut l = log.lock().unwrap();
                l.push(entry);
                l.len() - 1
            };
            let (outcome, work) = match e.behaviour {
                Behaviour::Ok { work } => (Outcome::Ok, work),
                Behaviour::FlakyThenOk { failures, work } if cx.attempt <= failures => (Outcome::Retry, work),
                Behaviour::FlakyThenOk { work, .. } => (Outcome::Ok, work),
                Behaviour::Fatal => (Outcome::Fatal, Duration::ZERO),
                Behaviour::Panic => panic!("scripted panic for event {}", e.id),
            };
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            log.lock().unwrap()[index].ended = Some(Instant::now());
            outcome
        }
    }
}
