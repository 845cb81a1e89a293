//! The engine a service embeds: routes bound to handler groups, long-lived workers on tokio,
//! per-key order, bounded retries, contained panics, graceful shutdown and per-route numbers.
//!
//! Each route is a bulkhead: its own classes and bounded queues (one channel per lane), its own
//! workers. A flood on one route fills only that route's queues.
//!
//! # Examples
//!
//! ```
//! use std::future::Future;
//! use std::time::Duration;
//! use veltrix_engine::{ClassId, Config};
//! use veltrix_engine::runtime::{Engine, Handler, HandlerContext, Outcome, RouteSpec, Submission};
//!
//! struct Print;
//! impl Handler<String> for Print {
//!     fn handle(&self, e: &String, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
//!         println!("{e}");
//!         std::future::ready(Outcome::Ok)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder().route("log", RouteSpec::new(Config::default()), Print).build()?;
//! engine.submit(Submission::new("log", ClassId::CRITICAL, "hello".to_string())).await?;
//! let report = engine.shutdown(Duration::from_secs(1)).await;
//! assert_eq!(report.handled, 1);
//! # Ok(()) }
//! ```

mod handler;
#[cfg(feature = "tower")]
mod service;
mod stats;
mod telemetry;
mod worker;

use std::fmt;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use handler::{Handler, HandlerContext, Outcome, RetryPolicy};
#[cfg(feature = "tower")]
pub use service::SubmitService;
pub use stats::{EngineStats, LatencySummary, RouteClassStats, RouteStats, ShutdownReport};

use crate::chan::{Receiver, Sender, channel_with_sink};
use crate::config::{ClassId, Config};
use crate::dead::{DeadLetter, DeadLetterSink};
pub use crate::error::EngineBuildError;
use crate::error::{SendError, SubmitError, TrySendError};
use crate::latch::Latch;
use crate::ledger::ClassStats;
use crate::sync::block_on;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use telemetry::RouteTelemetry;
use worker::{LaneWatch, Worker};

/// Identifies a route: its index in registration order. [`Engine::route_name`] gives its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteId(pub(crate) u16);

/// The most routes an engine has: every [`RouteId`] fits in 16 bits.
pub(crate) const MAX_ROUTES: usize = 1 << 16;

impl RouteId {
    /// The route's index in registration order.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// An event as it travels through a route's queues, and as the dead-letter sink receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Routed<E> {
    /// The route it was submitted to.
    pub route: RouteId,
    /// Its ordering key, if any.
    pub key: Option<u64>,
    /// The event.
    pub event: E,
}

// The engine hands back the user's event, not the route's envelope. Exhaustive matches: a new
// variant must say what it becomes.
impl<E> From<SendError<Routed<E>>> for SubmitError<E> {
    fn from(e: SendError<Routed<E>>) -> Self {
        match e {
            SendError::Closed(r) => SubmitError::Closed(r.event),
            SendError::Rejected(r) => SubmitError::Rejected(r.event),
        }
    }
}

impl<E> From<TrySendError<Routed<E>>> for SubmitError<E> {
    fn from(e: TrySendError<Routed<E>>) -> Self {
        match e {
            TrySendError::Full(r) => SubmitError::Full(r.event),
            TrySendError::Closed(r) => SubmitError::Closed(r.event),
            TrySendError::Rejected(r) => SubmitError::Rejected(r.event),
        }
    }
}

/// The engine's dead-letter sink: the user's (if any), with its panics contained and counted.
pub(crate) struct GuardedSink<E> {
    inner: Option<Box<dyn DeadLetterSink<Routed<E>>>>,
    panics: AtomicU64,
}

impl<E> GuardedSink<E> {
    /// Hands `letter` (already counted in the ledger) to the user's sink; a panic there is
    /// contained, counted and logged.
    pub(crate) fn dead_letter(&self, letter: DeadLetter<Routed<E>>) {
        let Some(sink) = &self.inner else { return };
        let (class, reason) = (letter.class.index(), letter.reason);
        if let Err(panic) = crate::contain::call(AssertUnwindSafe(|| sink.dead_letter(letter))) {
            self.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(class, %reason, %panic, "dead-letter sink panicked; contained");
        }
    }
}

type Sink<E> = Arc<GuardedSink<E>>;

/// Where a route's dead letters go, whoever produced them (its channels, at admission and
/// dequeue; its workers, after delivery): counted in the route's telemetry, then handed to the
/// engine's sink. The one path, so telemetry and the sink see the same letters.
pub(crate) struct RouteSink<E> {
    telemetry: Arc<RouteTelemetry>,
    sink: Sink<E>,
}

impl<E> RouteSink<E> {
    pub(crate) fn dead_letter(&self, letter: DeadLetter<Routed<E>>) {
        self.telemetry.dead_lettered(letter.class.index(), letter.reason);
        self.sink.dead_letter(letter);
    }
}

/// Builds the error that hands a refused event back.
type HandBack<E> = fn(E) -> SubmitError<E>;

/// Where a submission goes: a route's name, or its [`RouteId`] resolved once with
/// [`Engine::route_id`] (no lookup per event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target<'r> {
    Name(&'r str),
    Id(RouteId),
}

/// One event to submit: route, class, optional key and deadline.
#[derive(Debug)]
pub struct Submission<'r, E> {
    route: Target<'r>,
    class: ClassId,
    key: Option<u64>,
    deadline: Option<Instant>,
    event: E,
}

impl<'r, E> Submission<'r, E> {
    /// `event` for the route named `route` in `class`, without key or deadline (the class's
    /// default deadline applies).
    pub fn new(route: &'r str, class: ClassId, event: E) -> Self {
        Submission { route: Target::Name(route), class, key: None, deadline: None, event }
    }
}

impl<E> Submission<'static, E> {
    /// `event` for the route `route` (from [`Engine::route_id`]) in `class`: the hot-path form,
    /// with no name lookup per event.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::future::Future;
    /// # use veltrix_engine::{ClassId, Config};
    /// # use veltrix_engine::runtime::{Engine, Handler, HandlerContext, Outcome, RouteSpec, Submission};
    /// # struct Noop;
    /// # impl Handler<u64> for Noop {
    /// #     fn handle(&self, _: &u64, _: HandlerContext) -> impl Future<Output = Outcome> + Send {
    /// #         std::future::ready(Outcome::Ok)
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder().route("orders", RouteSpec::new(Config::default()), Noop).build()?;
    /// let orders = engine.route_id("orders").expect("registered");
    /// for i in 0..3 {
    ///     engine.submit(Submission::to(orders, ClassId::CRITICAL, i)).await?;
    /// }
    /// assert_eq!(engine.shutdown(std::time::Duration::from_secs(1)).await.handled, 3);
    /// # Ok(()) }
    /// ```
    pub fn to(route: RouteId, class: ClassId, event: E) -> Self {
        Submission { route: Target::Id(route), class, key: None, deadline: None, event }
    }
}

impl<E> Submission<'_, E> {
    /// Events of one route and class with the same key are handled one at a time, in submission
    /// order (on a route built with [`RouteSpec::keyed`]).
    pub fn key(mut self, key: u64) -> Self {
        self.key = Some(key);
        self
    }

    /// If still queued at `deadline`, the event is dead-lettered (`expired`) and no handler runs;
    /// no retry starts at or after it.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

/// How a route is run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RouteSpec {
    /// The route's classes and queues.
    pub classes: Config,
    /// Worker tasks (≥ 1).
    pub workers: usize,
    /// Per-key ordering: one lane (queue set) per worker, keys hashed to lanes. Capacities are
    /// per lane. Keys sharing a lane wait for each other (as partitions do).
    pub keyed: bool,
    /// Retries of a failed attempt.
    pub retry: RetryPolicy,
    /// The most events a worker takes at once (≥ 1; default 32). Batches adapt between 1 and
    /// this: they grow only while a whole batch ran in under 50 µs, and fall back to 1 as soon as
    /// one did not. Only a worker that has its lane to itself (one worker, or a keyed route)
    /// batches: where workers share a lane, an event taken in a batch would wait behind its
    /// taker's handler while another worker sat idle. 1 makes every service start pick the
    /// most urgent event queued, as the queueing models assume (the simulator runs so).
    pub max_batch: usize,
}

impl RouteSpec {
    /// One worker, no per-key lanes, the default retry policy.
    pub fn new(classes: Config) -> RouteSpec {
        RouteSpec { classes, workers: 1, keyed: false, retry: RetryPolicy::default(), max_batch: worker::MAX_BATCH }
    }

    /// Sets the most events a worker takes at once (see [`RouteSpec::max_batch`](Self#structfield.max_batch)).
    pub fn max_batch(mut self, max_batch: usize) -> RouteSpec {
        self.max_batch = max_batch;
        self
    }

    /// Sets the worker count.
    pub fn workers(mut self, workers: usize) -> RouteSpec {
        self.workers = workers;
        self
    }

    /// Enables per-key ordering.
    pub fn keyed(mut self) -> RouteSpec {
        self.keyed = true;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> RouteSpec {
        self.retry = retry;
        self
    }
}

/// What a route's workers share: the lanes (receiver and watch) and the engine's parts.
struct Spawn<'a, E> {
    route: RouteId,
    lanes: &'a [(Receiver<Routed<E>>, Arc<LaneWatch>)],
    stop: &'a Arc<Latch>,
    sink: &'a Arc<RouteSink<E>>,
    telemetry: &'a Arc<RouteTelemetry>,
}

type Spawner<E> = Box<dyn FnOnce(Spawn<'_, E>) -> Vec<JoinHandle<()>>>;

/// Registers routes; see [`Engine::builder`].
pub struct EngineBuilder<E> {
    routes: Vec<(String, RouteSpec, Spawner<E>)>,
    sink: Option<Box<dyn DeadLetterSink<Routed<E>>>>,
}

impl<E> fmt::Debug for EngineBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.routes.iter().map(|(n, ..)| n.as_str()).collect();
        f.debug_struct("EngineBuilder").field("routes", &names).finish_non_exhaustive()
    }
}

impl<E: Send + Sync + 'static> EngineBuilder<E> {
    /// Registers `name`, run by `spec.workers` tasks calling `handler`.
    pub fn route<H: Handler<E>>(mut self, name: impl Into<String>, spec: RouteSpec, handler: H) -> Self {
        let handler = Arc::new(handler);
        let retry = spec.retry;
        let workers = spec.workers;
        let lanes = if spec.keyed { workers } else { 1 };
        // Workers sharing a lane take one event at a time (see `RouteSpec::max_batch`).
        let max_batch = if workers > lanes { 1 } else { spec.max_batch };
        let spawn: Spawner<E> = Box::new(move |s: Spawn<'_, E>| {
            (0..workers)
                .map(|w| {
                    let (rx, lane) = &s.lanes[w % s.lanes.len()];
                    let worker = Worker {
                        rx: rx.clone(),
                        lane: lane.clone(),
                        handler: handler.clone(),
                        retry,
                        stop: s.stop.clone(),
                        sink: s.sink.clone(),
                        telemetry: s.telemetry.clone(),
                        index: w,
                        max_batch,
                    };
                    tracing::trace!(route = s.route.index(), worker = w, "worker spawned");
                    tokio::spawn(worker.run())
                })
                .collect()
        });
        self.routes.push((name.into(), spec, spawn));
        self
    }

    /// Where dead letters go (every route's). Without one they are counted and dropped.
    ///
    /// A sink that panics is contained like a panicking handler: the dead letter is counted
    /// with its reason, the panic in [`EngineStats::sink_panics`], and the worker carries on.
    pub fn dead_letter_sink(mut self, sink: impl DeadLetterSink<Routed<E>> + 'static) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// Validates the routes and spawns the workers on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// An [`EngineBuildError`] naming the first problem found.
    pub fn build(self) -> Result<Engine<E>, EngineBuildError> {
        self.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EngineBuildError::NoRuntime);
        }
        crate::contain::quiet_hook();
        let sink: Sink<E> = Arc::new(GuardedSink { inner: self.sink, panics: AtomicU64::new(0) });
        let stop = Arc::new(Latch::new());
        let lost = Arc::new(AtomicUsize::new(0));
        let mut routes = Vec::with_capacity(self.routes.len());
        let mut workers = Vec::new();
        for (i, (name, spec, spawn)) in self.routes.into_iter().enumerate() {
            let id = RouteId(i as u16);
            let lanes = if spec.keyed { spec.workers } else { 1 };
            let telemetry = Arc::new(RouteTelemetry::new(&name, &spec.classes, spec.workers));
            let route_sink = Arc::new(RouteSink { telemetry: telemetry.clone(), sink: sink.clone() });
            let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes)
                .map(|_| {
                    let route_sink = route_sink.clone();
                    // Latency histograms and handlers' contexts need every enqueue time.
                    let classes = spec.classes.clone().recording_enqueue_times();
                    channel_with_sink(&classes, move |d: DeadLetter<Routed<E>>| route_sink.dead_letter(d))
                })
                .unzip();
            let per_lane = |lane: usize| (lane..spec.workers).step_by(lanes).count();
            let watched: Vec<_> = receivers
                .iter()
                .enumerate()
                .map(|(l, rx)| (rx.clone(), Arc::new(LaneWatch::new(id, l, per_lane(l), lost.clone()))))
                .collect();
            workers.extend(spawn(Spawn {
                route: id,
                lanes: &watched,
                stop: &stop,
                sink: &route_sink,
                telemetry: &telemetry,
            }));
            tracing::info!(route = %name, workers = spec.workers, lanes, "route started");
            routes.push(Route {
                name,
                id,
                classes: spec.classes,
                senders: senders.into(),
                receivers: receivers.into(),
                next_lane: AtomicUsize::new(0),
                telemetry,
            });
        }
        let mut by_name: Vec<(String, usize)> = routes.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect();
        by_name.sort();
        Ok(Engine {
            routes: routes.into(),
            by_name: by_name.into(),
            stop,
            sink,
            lost,
            workers: std::sync::Mutex::new(workers),
        })
    }

    fn validate(&self) -> Result<(), EngineBuildError> {
        if self.routes.is_empty() {
            return Err(EngineBuildError::NoRoutes);
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(EngineBuildError::TooManyRoutes { registered: self.routes.len(), max: MAX_ROUTES });
        }
        let mut names = std::collections::BTreeSet::new();
        for (name, spec, _) in &self.routes {
            if name.is_empty() {
                return Err(EngineBuildError::EmptyRouteName);
            }
            if !names.insert(name.as_str()) {
                return Err(EngineBuildError::DuplicateRoute(name.clone()));
            }
            if spec.workers == 0 {
                return Err(EngineBuildError::ZeroWorkers(name.clone()));
            }
            if spec.retry.max_attempts == 0 {
                return Err(EngineBuildError::ZeroAttempts(name.clone()));
            }
            if spec.max_batch == 0 {
                return Err(EngineBuildError::ZeroBatch(name.clone()));
            }
        }
        Ok(())
    }
}

struct Route<E> {
    name: String,
    id: RouteId,
    classes: Config,
    /// One lane per worker on keyed routes, else one.
    senders: Box<[Sender<Routed<E>>]>,
    /// The engine's own handles on each lane: to dead-letter the backlog at the drain deadline.
    receivers: Box<[Receiver<Routed<E>>]>,
    next_lane: AtomicUsize,
    telemetry: Arc<RouteTelemetry>,
}

impl<E> Route<E> {
    fn lane(&self, key: Option<u64>) -> &Sender<Routed<E>> {
        let n = self.senders.len();
        let i = match (n, key) {
            (1, _) => 0,
            // Fibonacci hashing: spreads sequential keys; deterministic across runs.
            (_, Some(k)) => ((k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % n as u64) as usize,
            (_, None) => self.next_lane.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n,
        };
        &self.senders[i]
    }

    fn stats(&self) -> RouteStats {
        let mut ledgers = vec![ClassStats::default(); self.classes.len()];
        for rx in self.receivers.iter() {
            let s = rx.stats();
            for (total, lane) in ledgers.iter_mut().zip(s.classes()) {
                *total += lane;
            }
        }
        let names: Vec<&str> = self.classes.classes().iter().map(|c| c.name.as_str()).collect();
        RouteStats::new(&self.name, &names, ledgers, &self.telemetry)
    }
}

/// The running engine; see the [module docs](self).
///
/// Dropping it without [`Engine::shutdown`] closes intake (later submits are impossible, there
/// is no handle left) and lets the workers drain the backlog in the background for as long as
/// the runtime runs. If the runtime stops first, every event still queued is dead-lettered
/// (`closed`) and every event in flight (`shutdown`): nothing is dropped silently.
///
/// Workers are watched: when the last worker of a lane ends without having drained it (its
/// runtime was dropped while the engine lives on, or its task panicked outside the contained
/// handler and sink calls), the lane is closed at once — its backlog is dead-lettered
/// (`closed`), later submits to it get their event back as `Closed`, and
/// [`EngineStats::workers_lost`] counts the loss.
pub struct Engine<E> {
    routes: Box<[Route<E>]>,
    by_name: Box<[(String, usize)]>,
    stop: Arc<Latch>,
    sink: Sink<E>,
    /// Workers lost (see [`EngineStats::workers_lost`]).
    lost: Arc<AtomicUsize>,
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl<E> fmt::Debug for Engine<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("Engine").field("routes", &names).finish_non_exhaustive()
    }
}

impl<E: Send + Sync + 'static> Engine<E> {
    /// A builder with no routes.
    pub fn builder() -> EngineBuilder<E> {
        EngineBuilder { routes: Vec::new(), sink: None }
    }
}

impl<E> Engine<E> {
    fn find(&self, name: &str) -> Option<&Route<E>> {
        let i = self.by_name.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok()?;
        Some(&self.routes[self.by_name[i].1])
    }

    /// Looks a route up by name.
    pub fn route_id(&self, name: &str) -> Option<RouteId> {
        self.find(name).map(|r| r.id)
    }

    /// A route's name.
    ///
    /// # Panics
    ///
    /// If `id` is not a route of this engine.
    pub fn route_name(&self, id: RouteId) -> &str {
        &self.routes[id.index()].name
    }

    /// Resolves route, class and lane, or hands the event back.
    fn target(&self, s: &Submission<'_, E>) -> Result<&Route<E>, HandBack<E>> {
        let route = match s.route {
            Target::Name(name) => self.find(name),
            Target::Id(id) => self.routes.get(id.index()),
        };
        let route = route.ok_or(SubmitError::UnknownRoute as HandBack<E>)?;
        if s.class.index() >= route.classes.len() {
            return Err(SubmitError::UnknownClass);
        }
        Ok(route)
    }

    /// Submits an event, waiting while its class is full under backpressure.
    ///
    /// # Errors
    ///
    /// The event comes back in [`SubmitError::Closed`], [`SubmitError::Rejected`],
    /// [`SubmitError::UnknownRoute`] or [`SubmitError::UnknownClass`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes submits nothing. If it had started waiting for
    /// room, the route's ledger counts the event as [`cancelled`](crate::ClassStats::cancelled).
    pub async fn submit(&self, s: Submission<'_, E>) -> Result<(), SubmitError<E>> {
        let route = match self.target(&s) {
            Ok(r) => r,
            Err(hand_back) => return Err(hand_back(s.event)),
        };
        let event = Routed { route: route.id, key: s.key, event: s.event };
        let sent = route.lane(s.key).send_with_deadline(event, s.class, s.deadline).await;
        sent.map_err(|e| {
            route.telemetry.returned(s.class.index());
            e.into()
        })
    }

    /// Submits without waiting.
    ///
    /// # Errors
    ///
    /// As [`Engine::submit`], plus [`SubmitError::Full`].
    pub fn try_submit(&self, s: Submission<'_, E>) -> Result<(), SubmitError<E>> {
        let route = match self.target(&s) {
            Ok(r) => r,
            Err(hand_back) => return Err(hand_back(s.event)),
        };
        let event = Routed { route: route.id, key: s.key, event: s.event };
        route.lane(s.key).try_send_with_deadline(event, s.class, s.deadline).map_err(|e| {
            route.telemetry.returned(s.class.index());
            e.into()
        })
    }

    /// Blocking [`Engine::submit`], for threads outside the runtime.
    ///
    /// # Errors
    ///
    /// As [`Engine::submit`].
    ///
    /// # Panics
    ///
    /// Do not call it from an async task: it blocks the thread.
    pub fn submit_blocking(&self, s: Submission<'_, E>) -> Result<(), SubmitError<E>> {
        block_on(self.submit(s))
    }

    /// How many more events `class` of `route` admits now, over the route's lanes: its
    /// admission limit (the capacity, or under [adaptive admission](crate::adaptive) the limit
    /// the controller set last) less what is queued. A source that pulls from an outside queue
    /// asks for at most this much, so the backlog stays outside.
    ///
    /// # Panics
    ///
    /// If `route` is not a route of this engine or `class` not one of its classes.
    pub fn room(&self, route: RouteId, class: ClassId) -> usize {
        let r = &self.routes[route.index()];
        r.senders.iter().map(|tx| tx.admission_limit(class).saturating_sub(tx.len(class))).sum()
    }

    /// Under [adaptive admission](crate::adaptive), the service rate measured for `class` of
    /// `route`, summed over the route's lanes that have one; `None` while no lane has measured
    /// it, and always for a static configuration.
    ///
    /// # Panics
    ///
    /// If `route` is not a route of this engine or `class` not one of its classes.
    pub fn measured_rate(&self, route: RouteId, class: ClassId) -> Option<f64> {
        let rates = self.routes[route.index()].senders.iter().filter_map(|tx| tx.measured_rate(class));
        rates.fold(None, |sum, r| Some(sum.unwrap_or(0.0) + r))
    }

    /// Every route's numbers.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            routes: self.routes.iter().map(Route::stats).collect(),
            sink_panics: self.sink.panics.load(Ordering::Relaxed),
            workers_lost: self.lost.load(Ordering::Relaxed),
        }
    }

    /// Stops intake (late submits, and submits waiting for room, get `Closed(event)` back), lets
    /// the workers drain the backlog until `drain` has passed, then stops them: handlers still
    /// running are dropped and their events, and everything still queued, are dead-lettered
    /// with reason `shutdown`. A second call finds nothing left to do and reports again (a call
    /// made while another is still draining reports on the ledger as it stands, without waiting
    /// for the first). An [`OwnedPermit`](crate::OwnedPermit) still held after shutdown is
    /// dead-lettered (`closed`) when it is filled: no worker is left to serve it.
    ///
    /// [`ShutdownReport::drained`] says whether the workers finished everything: `false` if
    /// anything was left queued or in flight at the deadline, or a worker was lost before.
    /// Workers still waiting for the close at the deadline with nothing left to do are stopped
    /// without a loss: the report says `drained`.
    pub async fn shutdown(&self, drain: Duration) -> ShutdownReport {
        let deadline = Instant::now() + drain;
        for route in self.routes.iter() {
            for tx in route.senders.iter() {
                tx.close();
            }
        }
        tracing::info!(drain_ms = drain.as_millis() as u64, "engine shutting down");
        let mut workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let in_time = tokio::time::timeout_at(deadline, join_all(&mut workers)).await.is_ok();
        if !in_time {
            // Handlers still running see the stop and dead-letter their event; a worker waiting
            // for a reservation that is never filled (a tower service's permit) would wait
            // forever, so every remaining worker is aborted — an aborted worker's in-flight
            // guard dead-letters its event (`shutdown`). The last worker of each lane to go
            // closes the lane for good, dead-lettering its backlog and any permit filled later
            // (`shutdown`, see `Drop for Worker`): nothing is lost.
            self.stop.set();
            for w in &workers {
                w.abort();
            }
            join_all(&mut workers).await;
        }
        let report = ShutdownReport::new(self.stats());
        let drained = report.drained;
        tracing::info!(drained, handled = report.handled, returned = report.returned, "engine shut down");
        report
    }
}

async fn join_all(workers: &mut Vec<JoinHandle<()>>) {
    while let Some(w) = workers.last_mut() {
        match w.await {
            Err(e) if !e.is_cancelled() => tracing::error!(error = %e, "worker task failed"),
            _ => {}
        }
        workers.pop();
    }
}

impl<E> Drop for Engine<E> {
    fn drop(&mut self) {
        for route in self.routes.iter() {
            for tx in route.senders.iter() {
                tx.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_errors_become_submit_errors_of_the_same_kind_holding_the_users_event() {
        let routed = |event| Routed { route: RouteId(3), key: Some(9), event };
        assert_eq!(SubmitError::from(SendError::Closed(routed(1))), SubmitError::Closed(1));
        assert_eq!(SubmitError::from(SendError::Rejected(routed(2))), SubmitError::Rejected(2));
        assert_eq!(SubmitError::from(TrySendError::Full(routed(3))), SubmitError::Full(3));
        assert_eq!(SubmitError::from(TrySendError::Closed(routed(4))), SubmitError::Closed(4));
        assert_eq!(SubmitError::from(TrySendError::Rejected(routed(5))), SubmitError::Rejected(5));
    }

    struct Idle;
    impl Handler<()> for Idle {
        async fn handle(&self, _: &(), _: HandlerContext) -> Outcome {
            Outcome::Ok
        }
    }

    #[test]
    fn at_most_65536_routes_each_named_once() {
        let spec = RouteSpec::new(Config::default());
        let mut builder = (0..MAX_ROUTES).fold(Engine::builder(), |b, i| b.route(format!("r{i}"), spec.clone(), Idle));
        assert_eq!(builder.validate(), Ok(()), "a RouteId for every one");
        builder = builder.route("one more", spec.clone(), Idle);
        assert_eq!(
            builder.validate(),
            Err(EngineBuildError::TooManyRoutes { registered: MAX_ROUTES + 1, max: MAX_ROUTES })
        );
        let twice =
            Engine::builder().route("a", spec.clone(), Idle).route("b", spec.clone(), Idle).route("a", spec, Idle);
        assert_eq!(twice.validate(), Err(EngineBuildError::DuplicateRoute("a".into())));
    }
}
