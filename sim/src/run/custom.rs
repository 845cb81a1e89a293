//! A system under test built from a user's own handler and engine `Config` (the
//! [`Experiment`](crate::experiment::Experiment) API): the real engine, its route fed by the same
//! front end, the user's handler doing the work on the simulated clock.
//!
//! The service model's exact-time machinery does not apply here: the user's handler takes the
//! time it takes on the simulated clock, whose timers fire on whole steps. So requests go
//! straight into the engine as they arrive (no gate), and a handler's start and end are read from
//! the clock.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use veltrix_engine::runtime::{
    Engine, Handler, HandlerContext, Outcome as HandlerOutcome, RetryPolicy, RouteSpec, Routed,
};
use veltrix_engine::{ClassId, Config, DeadLetter};

use super::server::{Job, ServerShared};

/// What a user's event is made from: the drawn arrival it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    /// The request (dense, in arrival order), the same for every attempt of it.
    pub request: u64,
    /// The attempt (1 for the first send, 2 for the first client retry, …).
    pub attempt: u32,
    /// Its class.
    pub class: ClassId,
    /// The service time the scenario's service model drew for it: a synthetic handler can
    /// sleep that long; a real one ignores it.
    pub service: Duration,
}

/// Builds the engine of each incarnation of the server (a restart or crash builds a new one).
pub(crate) trait StartEngine: Send + Sync {
    fn start(&self, server: &Arc<ServerShared>) -> Engine<Job>;
}

impl std::fmt::Debug for dyn StartEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<the user's engine>")
    }
}

/// The user's engine: their `Config`, handler, event maker and retry policy.
pub(crate) struct Custom<E, H, F> {
    pub(crate) config: Config,
    pub(crate) handler: Arc<H>,
    pub(crate) make: Arc<F>,
    pub(crate) retry: RetryPolicy,
    pub(crate) workers: usize,
    pub(crate) event: PhantomData<fn() -> E>,
}

impl<E, H, F> StartEngine for Custom<E, H, F>
where
    E: Send + Sync + 'static,
    H: Handler<E>,
    F: Fn(EventSpec) -> E + Send + Sync + 'static,
{
    fn start(&self, server: &Arc<ServerShared>) -> Engine<Job> {
        let sink = server.clone();
        let model = UserModel {
            server: server.clone(),
            handler: self.handler.clone(),
            make: self.make.clone(),
            event: PhantomData,
        };
        let spec = RouteSpec::new(self.config.clone()).workers(self.workers).retry(self.retry);
        Engine::builder()
            .route("sim", spec, model)
            .dead_letter_sink(move |d: DeadLetter<Routed<Job>>| sink.dead_letter(&d.event.event, d.reason))
            .build()
            .expect("one route with workers and attempts, inside the host runtime")
    }
}

/// The engine's handler: makes the user's event from the request, runs the user's handler on
/// it, and records the exact start and end the clock shows.
struct UserModel<E, H, F> {
    server: Arc<ServerShared>,
    handler: Arc<H>,
    make: Arc<F>,
    event: PhantomData<fn() -> E>,
}

impl<E, H, F> Handler<Job> for UserModel<E, H, F>
where
    E: Send + Sync + 'static,
    H: Handler<E>,
    F: Fn(EventSpec) -> E + Send + Sync + 'static,
{
    fn handle(&self, job: &Job, cx: HandlerContext) -> impl Future<Output = HandlerOutcome> + Send {
        let (request, attempt) = crate::wire::split_wire_id(job.req.id);
        let event = (self.make)(EventSpec {
            request,
            attempt,
            class: cx.class,
            service: Duration::from_nanos(job.req.service_ns),
        });
        let (server, handler, job) = (self.server.clone(), self.handler.clone(), job.clone());
        async move {
            let start = server.now_ns();
            let outcome = handler.handle(&event, cx).await;
            if outcome == HandlerOutcome::Ok {
                server.handled(&job, start, server.now_ns());
            }
            outcome
        }
    }
}
