//! The systems under test behind the front end: the Veltrix engine with the service model as
//! its handler, or a naive FIFO queue with workers.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use veltrix_engine::runtime::{
    Engine, Handler, HandlerContext, Outcome as HandlerOutcome, RetryPolicy, RouteSpec, Routed, Submission,
};
use veltrix_engine::{ClassId, DeadLetter, DeadLetterReason, SubmitError};

use crate::scenario::SystemDef;
use crate::wire::Outcome;

use super::Refusal;
use super::server::{Job, ServerShared};

/// The system under test, as the front end sees it.
#[derive(Debug)]
pub(super) enum System {
    Veltrix(Arc<Engine<Job>>),
    Fifo { tx: Option<FifoTx>, depth: Arc<Mutex<Vec<u64>>>, workers: Vec<tokio::task::JoinHandle<()>> },
}

#[derive(Debug)]
pub(super) enum FifoTx {
    Unbounded(mpsc::UnboundedSender<Job>),
    Bounded(mpsc::Sender<Job>),
}

pub(super) struct ServiceModel {
    pub(super) server: Arc<ServerShared>,
    pub(super) t0: Instant,
}

impl Handler<Job> for ServiceModel {
    // The trait spells the `Send` future out; clippy's `manual_async_fn` would hide it.
    #[allow(clippy::manual_async_fn)]
    fn handle(&self, job: &Job, _cx: HandlerContext) -> impl Future<Output = HandlerOutcome> + Send {
        async move {
            self.server.serve(job, self.t0).await;
            HandlerOutcome::Ok
        }
    }
}

pub(super) fn start_system(server: &Arc<ServerShared>, t0: Instant) -> System {
    match &server.system {
        SystemDef::Veltrix { .. } => {
            let sink = server.clone();
            // One event per service start, as the queueing models assume: the service model
            // finishes a job whose exact end has already passed without advancing the clock,
            // which a worker would take for a fast handler and batch behind.
            let config = server.system.engine_config(&server.class_names).expect("a veltrix system");
            // The scenario was parsed with this very function: its errors were reported then.
            let config = config.expect("checked when the scenario was parsed");
            let spec = RouteSpec::new(config).max_batch(1).workers(server.workers).retry(RetryPolicy::none());
            let engine = Engine::builder()
                .route("sim", spec, ServiceModel { server: server.clone(), t0 })
                .dead_letter_sink(move |d: DeadLetter<Routed<Job>>| sink.dead_letter(&d.event.event, d.reason))
                .build()
                .expect("inside the host runtime");
            System::Veltrix(Arc::new(engine))
        }
        SystemDef::Custom { .. } => {
            let starter = server.custom.as_ref().expect("a custom system runs with its engine");
            System::Veltrix(Arc::new(starter.start(server)))
        }
        SystemDef::NaiveFifo { .. } | SystemDef::Fifo { .. } => {
            let depth = Arc::new(Mutex::new(vec![0u64; server.classes]));
            let (tx, rx): (FifoTx, Arc<tokio::sync::Mutex<FifoRx>>) = match &server.system {
                SystemDef::Fifo { capacity, .. } => {
                    let (tx, rx) = mpsc::channel(*capacity as usize);
                    (FifoTx::Bounded(tx), Arc::new(tokio::sync::Mutex::new(FifoRx::Bounded(rx))))
                }
                _ => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    (FifoTx::Unbounded(tx), Arc::new(tokio::sync::Mutex::new(FifoRx::Unbounded(rx))))
                }
            };
            let workers = (0..server.workers)
                .map(|_| {
                    let (rx, server, depth) = (rx.clone(), server.clone(), depth.clone());
                    tokio::spawn(async move {
                        loop {
                            let job = {
                                let mut rx = rx.lock().await;
                                match &mut *rx {
                                    FifoRx::Unbounded(r) => r.recv().await,
                                    FifoRx::Bounded(r) => r.recv().await,
                                }
                            };
                            let Some(job) = job else { break };
                            depth.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[job.req.class as usize] -=
                                1;
                            server.serve(&job, t0).await;
                        }
                    })
                })
                .collect();
            System::Fifo { tx: Some(tx), depth, workers }
        }
    }
}

pub(super) enum FifoRx {
    Unbounded(mpsc::UnboundedReceiver<Job>),
    Bounded(mpsc::Receiver<Job>),
}

impl System {
    /// Takes a job in or answers it at once.
    pub(super) fn offer(&self, server: &ServerShared, job: Job, t0: Instant) {
        let class = job.req.class as usize;
        match self {
            System::Veltrix(engine) => {
                let mut sub = Submission::new("sim", ClassId::new(class), job.clone());
                if server.engine_deadlines && job.req.deadline_ns > 0 {
                    // The engine checks it on the simulated clock, which runs the look-ahead
                    // ahead of the decisions (see `gate`; a user's engine has no gate).
                    let lag = if server.custom.is_some() { 0 } else { server.lookahead_ns };
                    let at = job.req.arrival_ns.saturating_add(job.req.deadline_ns) + lag;
                    sub = sub.deadline(t0 + Duration::from_nanos(at));
                }
                // Nothing runs between the submit and its return (one thread), so counting
                // the acceptance afterwards cannot miss the event's completion.
                match engine.try_submit(sub) {
                    Ok(()) => server.accepted(class),
                    Err(e) => {
                        let (why, outcome) = match &e {
                            SubmitError::Full(_) => (Refusal::Full, Outcome::RejectedFull),
                            SubmitError::Closed(_) => (Refusal::Closed, Outcome::RejectedClosed),
                            SubmitError::Rejected(_) => (Refusal::Policy, Outcome::RejectedPolicy),
                            // The simulator submits to its one route and the scenario's classes.
                            SubmitError::UnknownRoute(_) | SubmitError::UnknownClass(_) => {
                                unreachable!("a submit to a route and class that exist: {e}")
                            }
                            // The type is non-exhaustive: a refusal added later must be mapped
                            // here, and a run must not count it as something else meanwhile.
                            _ => unimplemented!("a refusal the simulator does not map yet: {e}"),
                        };
                        server.rejected(class, why);
                        e.into_inner().respond(outcome);
                    }
                }
            }
            System::Fifo { tx, depth, .. } => {
                let Some(tx) = tx else {
                    server.rejected(class, Refusal::Closed);
                    job.respond(Outcome::RejectedClosed);
                    return;
                };
                server.accepted(class);
                depth.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[class] += 1;
                let sent = match tx {
                    FifoTx::Unbounded(tx) => tx.send(job).is_ok(),
                    FifoTx::Bounded(tx) => tx.try_send(job).is_ok(),
                };
                if !sent {
                    // A naive bounded queue drops its tail: nobody is told.
                    depth.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[class] -= 1;
                    server.tail_dropped(class);
                }
            }
        }
    }

    pub(super) fn depth(&self) -> Vec<u64> {
        match self {
            System::Veltrix(engine) => {
                let stats = engine.stats();
                stats.routes[0].classes.iter().map(|c| c.ledger.queued).collect()
            }
            System::Fifo { depth, .. } => depth.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
        }
    }

    /// Stops: Veltrix dead-letters its backlog (`shutdown`); a naive queue abandons its own.
    pub(super) async fn stop(self, server: &ServerShared) {
        // Work in progress is cancelled: its workers are free from now on.
        let now = turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64;
        server
            .free_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter_mut()
            .for_each(|f| *f = (*f).min(now));
        // Workers that finished their job and wait for their next decision return now, so the
        // stop does not take them for work in progress.
        server.stopping();
        server.finished_workers_returned().await;
        match self {
            System::Veltrix(engine) => {
                engine.shutdown(Duration::ZERO).await;
                let stats = engine.stats();
                let ledger = stats.routes[0]
                    .classes
                    .iter()
                    .map(|c| (c.ledger.handled, DeadLetterReason::ALL.map(|r| c.ledger.dead(r))))
                    .collect::<Vec<_>>();
                let mut rec = server.rec();
                match &mut rec.ledger {
                    // After a restart the ledgers of every engine incarnation add up.
                    Some(total) => {
                        for (t, l) in total.iter_mut().zip(ledger) {
                            t.0 += l.0;
                            for (a, b) in t.1.iter_mut().zip(l.1) {
                                *a += b;
                            }
                        }
                    }
                    None => rec.ledger = Some(ledger),
                }
            }
            System::Fifo { tx, workers, .. } => {
                drop(tx);
                for w in workers {
                    w.abort();
                    let _ = w.await;
                }
                // What was queued or in service is gone without a record.
                let mut rec = server.rec();
                for c in rec.classes.iter_mut() {
                    c.abandoned += c.in_system;
                    c.in_system = 0;
                }
            }
        }
    }
}
