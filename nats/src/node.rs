//! A Veltrix engine fed by JetStream pull consumers: the fetch loops (credit), the acking
//! handler wrapper, the dead-letter mapping, and the node's lifecycle.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use veltrix_engine::runtime::{
    Engine, Handler, HandlerContext, Outcome, RouteId, RouteSpec, Routed, ShutdownReport, Submission,
};
use veltrix_engine::{DeadLetter, DeadLetterReason, OverloadPolicy, SubmitError};

use crate::config::{ClassPolicy, NodeConfig, NodeError, check_name};
use crate::event::{Arrival, Counters, Lane, NatsEvent, NodeShared, Seen};

/// Builds a [`Node`]; see [`Node::builder`].
pub struct NodeBuilder {
    js: jetstream::Context,
    config: NodeConfig,
    engine: veltrix_engine::runtime::EngineBuilder<NatsEvent>,
    routes: Vec<(String, RouteSpec)>,
    policies: Vec<(String, String, ClassPolicy)>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("config", &self.config)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// A Veltrix engine whose events come from JetStream: one durable pull consumer per route and
/// class (`<subject_prefix>.<route>.<class>`), fetching exactly the class's free credit, acking
/// after the handler finished. Several nodes with the same config share the consumers.
pub struct Node {
    engine: Arc<Engine<NatsEvent>>,
    lanes: Vec<Arc<Lane>>,
    fetchers: Vec<JoinHandle<()>>,
    shared: Arc<NodeShared>,
    stop: watch::Sender<bool>,
    client: async_nats::Client,
    fetch_wait: Duration,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("lanes", &self.lanes.len())
            .field("live", &self.shared.live())
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// Registers `route` with its classes and workers; `handler` sees each [`NatsEvent`] and
    /// the event is acked when it returns [`Outcome::Ok`].
    pub fn route<H: Handler<NatsEvent>>(mut self, name: impl Into<String>, spec: RouteSpec, handler: H) -> Self {
        let name = name.into();
        let progress_every = self.config.progress_every;
        self.engine = self.engine.route(name.clone(), spec.clone(), Acking { inner: handler, progress_every });
        self.routes.push((name, spec));
        self
    }

    /// Overrides the default [`ClassPolicy`] of one route and class.
    pub fn policy(mut self, route: &str, class: &str, policy: ClassPolicy) -> Self {
        self.policies.push((route.to_string(), class.to_string(), policy));
        self
    }

    /// Checks the settings, creates (or finds) the durable consumers and starts the fetch loops
    /// and the engine's workers on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`NodeError`] naming the first problem; nothing is left running.
    pub async fn start(self) -> Result<Node, NodeError> {
        let NodeBuilder { js, config, engine, routes, policies } = self;
        config.validate()?;
        for (route, class, _) in &policies {
            let known = routes.iter().any(|(r, spec)| r == route && spec.classes.class(class).is_some());
            if !known {
                return Err(NodeError::UnknownClass { route: route.clone(), class: class.clone() });
            }
        }
        let shared = Arc::new(NodeShared::default());
        let mut plan = Vec::new();
        for (route, spec) in &routes {
            check_name("route", route)?;
            for (k, class) in spec.classes.classes().iter().enumerate() {
                check_name("class", &class.name)?;
                let policy = policies
                    .iter()
                    .rev()
                    .find(|(r, c, _)| r == route && *c == class.name)
                    .map_or_else(ClassPolicy::default, |(.., p)| *p);
                let credit = policy.credit.unwrap_or(class.capacity);
                if credit == 0 || credit > Semaphore::MAX_PERMITS {
                    return Err(NodeError::InvalidSetting {
                        setting: "credit",
                        reason: format!(
                            "{credit} for {route}/{}: must be in 1..={}",
                            class.name,
                            Semaphore::MAX_PERMITS
                        ),
                    });
                }
                plan.push((
                    Lane {
                        route: route.clone(),
                        class_name: class.name.clone(),
                        class: veltrix_engine::ClassId::new(k),
                        credit,
                        on_shed: policy.on_shed,
                        backpressure: class.policy == OverloadPolicy::Backpressure,
                        max_deliver: config.max_deliver,
                        node: shared.clone(),
                        counters: Counters::default(),
                        seen: std::sync::Mutex::new(Seen::default()),
                    },
                    class.deadline,
                ));
            }
        }
        let credit = plan.iter().fold(0usize, |sum, (l, _)| sum.saturating_add(l.credit));
        match config.service_rate {
            Some(rate) if credit > config.credit_bound(rate) => {
                return Err(NodeError::CreditExceedsAckWait { credit, bound: config.credit_bound(rate) });
            }
            Some(_) => {}
            None => tracing::info!(credit, "no service_rate configured: credit not checked against ack_wait"),
        }

        let client = js.client();
        let info = client.server_info();
        tracing::info!(server = %info.server_name, version = %info.version, jetstream = info.jetstream, "connected to nats-server");
        let stream = js.get_stream(&config.stream).await.map_err(|e| NodeError::Nats(e.into()))?;
        let mut consumers = Vec::with_capacity(plan.len());
        for (lane, _) in &plan {
            let durable = config.durable(&lane.route, &lane.class_name);
            let consumer: PullConsumer = stream
                .get_or_create_consumer(
                    &durable,
                    pull::Config {
                        durable_name: Some(durable.clone()),
                        filter_subject: config.subject(&lane.route, &lane.class_name),
                        deliver_policy: DeliverPolicy::All,
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: config.ack_wait,
                        max_deliver: config.max_deliver,
                        max_ack_pending: config.max_ack_pending.unwrap_or_default(),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| NodeError::Nats(e.into()))?;
            check_consumer(&durable, &consumer.cached_info().config, &config, &lane.route, &lane.class_name)?;
            consumers.push(consumer);
        }

        let engine = Arc::new(engine.dead_letter_sink(DeadLetters).build()?);
        let (stop, stopped) = watch::channel(false);
        let mut lanes = Vec::with_capacity(plan.len());
        let mut fetchers = Vec::with_capacity(plan.len());
        for ((lane, deadline), consumer) in plan.into_iter().zip(consumers) {
            let lane = Arc::new(lane);
            let route = engine.route_id(&lane.route).expect("the node registered every route");
            let spec =
                routes.iter().find(|(r, _)| *r == lane.route).map(|(_, spec)| spec).expect("planned from routes");
            // Enough for every worker's batch and as much again queued behind: the controller
            // measures a class only while it has a backlog.
            let probe = 2 * spec.workers * spec.max_batch;
            let engine_lanes = if spec.keyed { spec.workers } else { 1 };
            let capacity = spec.classes.classes()[lane.class.index()].capacity * engine_lanes;
            let adaptive = spec.classes.adaptive().is_some().then_some((route, probe, capacity));
            let fetch = Fetch {
                consumer,
                lane: lane.clone(),
                engine: engine.clone(),
                adaptive,
                credit: Arc::new(Semaphore::new(lane.credit)),
                deadline,
                fetch_wait: config.fetch_wait,
                stopped: stopped.clone(),
            };
            fetchers.push(tokio::spawn(fetch.run()));
            lanes.push(lane);
        }
        Ok(Node { engine, lanes, fetchers, shared, stop, client, fetch_wait: config.fetch_wait })
    }
}

impl Node {
    /// A node consuming `config.stream` through `js`. The stream must exist
    /// ([`ensure_stream`](crate::ensure_stream) creates it).
    pub fn builder(js: jetstream::Context, config: NodeConfig) -> NodeBuilder {
        NodeBuilder { js, config, engine: Engine::builder(), routes: Vec::new(), policies: Vec::new() }
    }

    /// The engine inside (for its stats).
    pub fn engine(&self) -> &Engine<NatsEvent> {
        &self.engine
    }

    /// Every lane's counters now.
    pub fn report(&self) -> Vec<ClassReport> {
        self.lanes.iter().map(|l| ClassReport::of(l)).collect()
    }

    /// Events held now (fetched, not yet settled and dropped), and the most ever held.
    pub fn held(&self) -> (usize, usize) {
        (self.shared.live(), self.shared.max_live())
    }

    /// The credit over all lanes: the most events the node can hold.
    pub fn credit(&self) -> usize {
        self.lanes.iter().map(|l| l.credit).sum()
    }

    /// Stops fetching and drains the engine for up to `drain`, acking what finishes. Intake
    /// closes at once, so a pull still in progress hands its events back (nak'ed at once,
    /// counted `refused`), as does everything left at the drain deadline: another node takes
    /// them without waiting for `ack_wait`. Then the acks are flushed to the server.
    pub async fn shutdown(mut self, drain: Duration) -> NodeReport {
        let _ = self.stop.send(true);
        let fetchers = std::mem::take(&mut self.fetchers);
        // A fetch loop ends within one pull (fetch_wait plus the give-up margin); one stuck
        // longer (the server unreachable) is aborted, and its pull is left to ack_wait.
        let grace = drain.saturating_add(self.fetch_wait).saturating_add(PULL_GIVE_UP + SETTLE_GRACE);
        let (engine, ()) = tokio::join!(self.engine.shutdown(drain), join_or_abort(fetchers, grace));
        // Dead-letter naks run as tasks: let them go out before the flush.
        let settled = tokio::time::timeout(SETTLE_GRACE, async {
            while self.shared.live() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        if settled.await.is_err() {
            tracing::warn!(held = self.shared.live(), "events still unsettled at shutdown: left to ack_wait");
        }
        match tokio::time::timeout(SETTLE_GRACE, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flush at shutdown failed: unsettled events will be redelivered"),
            Err(_) => tracing::warn!(
                "flush at shutdown timed out (server unreachable?): unsettled events will be redelivered"
            ),
        }
        self.final_report(engine)
    }

    /// Simulates a crash: from now on nothing is acked, nak'ed or termed; fetching stops and
    /// the engine's workers are dropped with their events. The server redelivers everything this
    /// node held once `ack_wait` passes.
    pub async fn kill(mut self) -> NodeReport {
        self.shared.kill();
        let _ = self.stop.send(true);
        for f in std::mem::take(&mut self.fetchers) {
            f.abort();
        }
        let engine = self.engine.shutdown(Duration::ZERO).await;
        self.final_report(engine)
    }

    fn final_report(&self, engine: ShutdownReport) -> NodeReport {
        NodeReport { classes: self.report(), engine, max_held: self.shared.max_live() }
    }
}

/// Under adaptive admission, how long a fetch loop waits before it looks again at a class that
/// is queued to its limit.
const ROOM_POLL: Duration = Duration::from_millis(1);

/// How long after a pull's `fetch_wait` the node stops waiting for the server to end it.
const PULL_GIVE_UP: Duration = Duration::from_secs(1);
/// How long shutdown waits for the last naks to be sent and flushed.
const SETTLE_GRACE: Duration = Duration::from_secs(2);
/// Waits between failed pulls, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

async fn join_or_abort(tasks: Vec<JoinHandle<()>>, grace: Duration) {
    let deadline = Instant::now() + grace;
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            tracing::warn!(
                "a fetch loop did not stop in time (server unreachable?): aborted, its pull is left to ack_wait"
            );
            abort.abort();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for f in &self.fetchers {
            f.abort();
        }
    }
}

/// One lane's numbers. Every delivery fetched ends in exactly one of: `submitted` (then acked,
/// or shed / failed → nak'ed or termed), `stale`, `duplicates`, `expired_on_arrival`, `refused`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassReport {
    /// The route.
    pub route: String,
    /// The class.
    pub class: String,
    /// The credit: the most events this lane holds at once.
    pub credit: usize,
    /// Deliveries fetched.
    pub fetched: u64,
    /// Of those, redeliveries (delivery count above 1).
    pub redelivered: u64,
    /// Submitted to the engine.
    pub submitted: u64,
    /// `+ACK` sent for a handled event (re-acks of duplicates are `reacked`).
    pub acked: u64,
    /// `-NAK` sent (shed, refused, failed with deliveries left, or left at shutdown).
    pub naked: u64,
    /// `+TERM` sent: shed or refused under a `Term` policy, past the deadline, or exhausted.
    pub termed: u64,
    /// `+WPI` sent for long handlers, and through stale copies for the held one.
    pub progress: u64,
    /// Redelivered copies of an event this node still held (queued or running): answered with
    /// progress and dropped, the held copy settles it.
    pub stale: u64,
    /// Redelivered copies of an event this node had already acked or termed: not handled again.
    pub duplicates: u64,
    /// Of those, `+ACK`s sent again.
    pub reacked: u64,
    /// Past the class's deadline (counted from publication) when fetched: termed without a handler.
    pub expired_on_arrival: u64,
    /// Refused by the engine: shed if a more critical class or a `Reject` class was full, nak'ed
    /// at once if the engine was shutting down.
    pub refused: u64,
    /// Dead-lettered inside the engine: by ShedOldest or CoDel (the class's [`ShedAction`](crate::ShedAction)), or
    /// past the deadline while queued (termed).
    pub shed: u64,
    /// Nak'ed (failed, shed, refused or left at shutdown) on their last allowed delivery
    /// (`max_deliver`, counting stale copies): termed instead, the dead letter.
    pub exhausted: u64,
    /// Acks, naks or terms that could not be sent (the server redelivers those).
    pub settle_failed: u64,
    /// Pull requests that failed (server unreachable, …) and were retried.
    pub fetch_errors: u64,
}

impl ClassReport {
    fn of(l: &Lane) -> ClassReport {
        let c = &l.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        ClassReport {
            route: l.route.clone(),
            class: l.class_name.clone(),
            credit: l.credit,
            fetched: get(&c.fetched),
            redelivered: get(&c.redelivered),
            submitted: get(&c.submitted),
            acked: get(&c.acked),
            naked: get(&c.naked),
            termed: get(&c.termed),
            progress: get(&c.progress),
            stale: get(&c.stale),
            duplicates: get(&c.duplicates),
            reacked: get(&c.reacked),
            expired_on_arrival: get(&c.expired_on_arrival),
            refused: get(&c.refused),
            shed: get(&c.shed),
            exhausted: get(&c.exhausted),
            settle_failed: get(&c.settle_failed),
            fetch_errors: get(&c.fetch_errors),
        }
    }
}

/// What a node did, at shutdown (or kill).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeReport {
    /// Per route and class.
    pub classes: Vec<ClassReport>,
    /// The engine's own report (its ledger).
    pub engine: ShutdownReport,
    /// The most events held at once.
    pub max_held: usize,
}

impl NodeReport {
    /// The sum of one counter over every lane.
    pub fn sum(&self, counter: impl Fn(&ClassReport) -> u64) -> u64 {
        self.classes.iter().map(counter).sum()
    }
}

/// A durable that already existed keeps its own settings (`get_or_create_consumer` does not
/// update it): refuse to run against settings other than the node's.
fn check_consumer(
    durable: &str,
    server: &async_nats::jetstream::consumer::Config,
    config: &NodeConfig,
    route: &str,
    class: &str,
) -> Result<(), NodeError> {
    let subject = config.subject(route, class);
    let mismatch = [
        ("filter_subject", server.filter_subject != subject, format!("{:?} vs {subject:?}", server.filter_subject)),
        ("ack_policy", server.ack_policy != AckPolicy::Explicit, format!("{:?} vs Explicit", server.ack_policy)),
        ("ack_wait", server.ack_wait != config.ack_wait, format!("{:?} vs {:?}", server.ack_wait, config.ack_wait)),
        (
            "max_deliver",
            server.max_deliver != config.max_deliver,
            format!("{} vs {}", server.max_deliver, config.max_deliver),
        ),
    ];
    match mismatch.into_iter().find(|(_, differs, _)| *differs) {
        Some((setting, _, values)) => {
            Err(NodeError::ConsumerMismatch { durable: durable.to_string(), setting, values })
        }
        None => Ok(()),
    }
}

/// One lane's fetch loop.
struct Fetch {
    consumer: PullConsumer,
    lane: Arc<Lane>,
    engine: Arc<Engine<NatsEvent>>,
    /// Under adaptive admission: the route, whose room for the class caps every pull; the most
    /// queued before the controller has measured the class (two batches per worker); and the
    /// class's capacity over the route's lanes.
    adaptive: Option<(RouteId, usize, usize)>,
    credit: Arc<Semaphore>,
    deadline: Option<Duration>,
    fetch_wait: Duration,
    stopped: watch::Receiver<bool>,
}

impl Fetch {
    async fn run(self) {
        let mut stopped = self.stopped.clone();
        let mut backoff = BACKOFF.0;
        loop {
            // Wait for one unit of credit, then take every free one: the pull asks for exactly
            // what the node can hold, so the backlog stays in the stream.
            let mut credit = tokio::select! {
                biased;
                // Stopped, or the node dropped.
                _ = stopped.wait_for(|stop| *stop) => break,
                p = self.credit.clone().acquire_owned() => p.expect("never closed"),
            };
            if let Ok(more) = self.credit.clone().try_acquire_many_owned(self.credit.available_permits() as u32) {
                credit.merge(more);
            }
            // Adaptive admission: ask for no more than the class admits now, and before its
            // first measurement for no more than keeps the workers busy with as much again
            // queued (its limit is still the capacity, which says nothing about how fast it
            // drains). The rest of the credit goes back. With no room, the class is queued to
            // its limit: look again shortly (it drains at the measured rate).
            if let Some((route, probe, capacity)) = self.adaptive {
                let class = self.lane.class;
                let mut room = self.engine.room(route, class);
                if self.engine.measured_rate(route, class).is_none() {
                    // The limit is still the capacity: what is queued is `capacity − room`.
                    room = probe.saturating_sub(capacity.saturating_sub(room));
                }
                if room == 0 {
                    drop(credit);
                    tokio::select! {
                        biased;
                        _ = stopped.wait_for(|stop| *stop) => break,
                        () = tokio::time::sleep(ROOM_POLL) => continue,
                    }
                }
                if credit.num_permits() > room {
                    drop(credit.split(credit.num_permits() - room));
                }
            }
            let want = credit.num_permits();
            let mut failed = false;
            match self.consumer.batch().max_messages(want).expires(self.fetch_wait).messages().await {
                Ok(mut batch) => {
                    // The server ends the pull at fetch_wait; if that answer is lost (a
                    // reconnect), the pull is abandoned a little later than that.
                    let give_up = Instant::now() + self.fetch_wait + PULL_GIVE_UP;
                    while let Ok(Some(message)) = tokio::time::timeout_at(give_up, batch.next()).await {
                        match message {
                            Ok(m) => {
                                backoff = BACKOFF.0;
                                let unit = credit.split(1).expect("the server sends at most what was asked");
                                self.arrive(m, unit).await;
                            }
                            Err(e) => {
                                self.fetch_failed(&e);
                                failed = true;
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    self.fetch_failed(&e);
                    failed = true;
                }
            }
            if failed {
                // A deleted consumer or a server still recovering answers every pull at once:
                // do not spin.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }

    fn fetch_failed(&self, e: &dyn std::fmt::Display) {
        self.lane.counters.fetch_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(route = %self.lane.route, class = %self.lane.class_name, error = %e, "pull failed; retrying");
    }

    async fn arrive(&self, message: jetstream::Message, unit: tokio::sync::OwnedSemaphorePermit) {
        let counters = &self.lane.counters;
        let (seq, delivered, age) = match message.info() {
            Ok(info) => {
                // Assumes the node's clock agrees with the server's to well within a deadline.
                let age = async_nats::datetime::now() - info.published;
                (info.stream_sequence, info.delivered.max(1) as u64, age.whole_nanoseconds().max(0) as u64)
            }
            Err(e) => {
                // Not a JetStream delivery (cannot happen on a pull consumer): leave it to ack_wait.
                tracing::warn!(error = %e, "message without JetStream metadata ignored");
                return;
            }
        };
        counters.fetched.fetch_add(1, Ordering::Relaxed);
        if delivered > 1 {
            counters.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let arrival = self.lane.seen().arrive(seq, delivered);
        let dead = self.lane.node.is_dead();
        match arrival {
            Arrival::Stale => {
                // The held copy settles it; progress through this copy keeps the server from
                // sending yet another while the held one waits.
                counters.stale.fetch_add(1, Ordering::Relaxed);
                if !dead && message.ack_with(AckKind::Progress).await.is_err() {
                    counters.settle_failed.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Arrival::Done => {
                counters.duplicates.fetch_add(1, Ordering::Relaxed);
                if dead {
                    return;
                }
                let counter = if message.ack().await.is_ok() { &counters.reacked } else { &counters.settle_failed };
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Arrival::New => {}
        }
        let event = NatsEvent::new(message, seq, delivered, self.lane.clone(), unit);
        let mut deadline = None;
        if let Some(d) = self.deadline {
            // The deadline counts from publication: time spent in the stream is time spent.
            let left = d.saturating_sub(Duration::from_nanos(age));
            if left.is_zero() {
                // No later delivery can meet the deadline either.
                counters.expired_on_arrival.fetch_add(1, Ordering::Relaxed);
                event.settle(AckKind::Term).await;
                return;
            }
            deadline = Instant::now().checked_add(left);
        }
        let mut submission = Submission::new(&self.lane.route, self.lane.class, event);
        if let Some(deadline) = deadline {
            submission = submission.deadline(deadline);
        }
        // A backpressure class waits for room (the credit already bounds what is held, and the
        // rest of the backlog stays in the stream); the others shed or refuse at once.
        let submitted = if self.lane.backpressure {
            self.engine.submit(submission).await
        } else {
            self.engine.try_submit(submission)
        };
        match submitted {
            Ok(()) => {
                counters.submitted.fetch_add(1, Ordering::Relaxed);
            }
            // Refused by the class's overload policy: settled as its policy says.
            Err(SubmitError::Full(event) | SubmitError::Rejected(event)) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                event.settle(event.shed_action()).await;
            }
            // Closed (the node is stopping), or a refusal this node does not know: the stream
            // keeps the message and delivers it again, here or to another node.
            Err(e) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                e.into_inner().settle(AckKind::Nak(None)).await;
            }
        }
    }
}

/// Wraps the user's handler: progress while it runs, `+ACK` when it returns `Ok`.
struct Acking<H> {
    inner: H,
    progress_every: Duration,
}

impl<H: Handler<NatsEvent>> Handler<NatsEvent> for Acking<H> {
    fn handle(&self, event: &NatsEvent, cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let work = self.inner.handle(event, cx);
        let every = self.progress_every;
        async move {
            let mut work = pin!(work);
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            let outcome = loop {
                tokio::select! {
                    o = &mut work => break o,
                    _ = tick.tick() => event.settle(AckKind::Progress).await,
                }
            };
            if outcome == Outcome::Ok {
                event.settle(AckKind::Ack).await;
            }
            outcome
        }
    }
}

/// How long the server waits before redelivering an event whose handler failed.
const FAILED_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Maps the engine's dead letters onto the server (a nak on the last allowed delivery becomes
/// a term, counted `exhausted`: see [`NatsEvent::settle`]).
struct DeadLetters;

impl veltrix_engine::DeadLetterSink<Routed<NatsEvent>> for DeadLetters {
    fn dead_letter(&self, letter: DeadLetter<Routed<NatsEvent>>) {
        let event = letter.event.event;
        if event.lane.node.is_dead() {
            return;
        }
        let kind = match letter.reason {
            DeadLetterReason::Shed | DeadLetterReason::Codel | DeadLetterReason::Expired => {
                event.lane.counters.shed.fetch_add(1, Ordering::Relaxed);
                match letter.reason {
                    // Past its deadline: no redelivery can meet it.
                    DeadLetterReason::Expired => AckKind::Term,
                    _ => event.shed_action(),
                }
            }
            DeadLetterReason::HandlerFailed | DeadLetterReason::Panicked => AckKind::Nak(Some(FAILED_RETRY_DELAY)),
            // Shutting down (or the receivers gone): another node should take it at once.
            _ => AckKind::Nak(None),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { event.settle(kind).await });
            }
            // Outside a runtime nothing can be sent: ack_wait redelivers it.
            Err(_) => tracing::warn!(seq = event.stream_sequence(), "dead letter outside a runtime: left to ack_wait"),
        }
    }
}
