//! A Veltrix engine fed by Kafka consumers: the intake thread (each partition's queue read
//! only while its class has credit, critical classes first), the commit of finished offsets, rebalances, the dead-letter topic,
//! and the node's lifecycle.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::VecDeque;
use veltrix_engine::runtime::{
    Engine, EngineBuilder, Handler, HandlerContext, Outcome, RouteId, RouteSpec, Routed, ShutdownReport, Submission,
};
use veltrix_engine::{DeadLetter, DeadLetterReason, DeadLetterSink, OverloadPolicy, SubmitError};

use crate::config::{ClassPolicy, NodeConfig, NodeError, check_name};
use crate::event::{Admit, KafkaEvent, Lane, NodeShared};

/// Builds a [`Node`]; see [`Node::builder`].
pub struct NodeBuilder {
    config: NodeConfig,
    engine: EngineBuilder<KafkaEvent>,
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

/// A Veltrix engine whose events come from Kafka: one consumer per route and class (topic
/// `<prefix>.<route>.<class>`), all in the config's group, so several nodes share the
/// partitions. A class's partitions are read only while it has credit, offsets are
/// committed only below the lowest event not yet handled or dead-lettered, and dead letters go
/// to the dead-letter topic with their reason.
pub struct Node {
    engine: Arc<Engine<KafkaEvent>>,
    lanes: Vec<Arc<Lane>>,
    shared: Arc<NodeShared>,
    control: Arc<AtomicU8>,
    intake: Option<std::thread::JoinHandle<()>>,
    dlq: Arc<Dlq>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("lanes", &self.lanes.len())
            .field("held", &self.shared.live())
            .finish_non_exhaustive()
    }
}

/// Intake takes and submits events.
const RUNNING: u8 = 0;
/// Intake takes nothing more (shutting down); it keeps polling so the group sees it alive.
const STOPPING: u8 = 1;
/// Intake commits what is done and closes its consumers.
const FINISH: u8 = 2;

/// The most messages one class's consumer hands over per turn, so a busy class cannot keep
/// intake from the others.
const TURN: usize = 256;
/// How long intake sleeps with nothing to do (credit coming back wakes it sooner).
const IDLE: Duration = Duration::from_millis(1);

impl NodeBuilder {
    /// Registers `route` with its classes and workers; `handler` sees each [`KafkaEvent`] and
    /// its offset may be committed once the handler returns [`Outcome::Ok`] (failures are retried
    /// as the route's retry policy says, then dead-lettered).
    pub fn route<H: Handler<KafkaEvent>>(mut self, name: impl Into<String>, spec: RouteSpec, handler: H) -> Self {
        let name = name.into();
        self.engine = self.engine.route(name.clone(), spec.clone(), Finishing { inner: handler });
        self.routes.push((name, spec));
        self
    }

    /// Overrides the default [`ClassPolicy`] of one route and class.
    pub fn policy(mut self, route: &str, class: &str, policy: ClassPolicy) -> Self {
        self.policies.push((route.to_string(), class.to_string(), policy));
        self
    }

    /// Checks the settings and that every topic exists, then starts the engine's workers (on
    /// the current tokio runtime) and the intake thread, which joins the consumer group.
    ///
    /// # Errors
    ///
    /// A [`NodeError`] naming the first problem; nothing is left running.
    pub async fn start(self) -> Result<Node, NodeError> {
        let NodeBuilder { config, engine, routes, policies } = self;
        config.validate()?;
        for (route, class, _) in &policies {
            if !routes.iter().any(|(r, spec)| r == route && spec.classes.class(class).is_some()) {
                return Err(NodeError::UnknownClass { route: route.clone(), class: class.clone() });
            }
        }
        let shared = Arc::new(NodeShared::default());
        let mut lanes = Vec::new();
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
                let backpressure = class.policy == OverloadPolicy::Backpressure;
                // Intake waits for room in a backpressure class: with more credit than room
                // it would stop every class's intake while this one is full.
                let most = if backpressure { class.capacity } else { 1 << 20 };
                if credit == 0 || credit > most {
                    return Err(NodeError::InvalidSetting {
                        setting: "credit",
                        reason: format!("{credit} for {route}/{}: must be in 1..={most}", class.name),
                    });
                }
                lanes.push(Arc::new(Lane::new(
                    route.clone(),
                    class.name.clone(),
                    veltrix_engine::ClassId::new(k),
                    config.topic(route, &class.name),
                    credit,
                    class.deadline,
                    backpressure,
                    spec.keyed,
                    shared.clone(),
                )));
            }
        }
        check_topics(&config, &lanes).await?;
        let dlq = Arc::new(Dlq::new(&config)?);
        let engine = Arc::new(engine.dead_letter_sink(DeadLetters { dlq: dlq.clone() }).build()?);

        let mut intakes = Vec::with_capacity(lanes.len());
        for lane in &lanes {
            let client_id = format!("veltrix-{}-{}-{}", config.group, lane.route, lane.class_name);
            let context = LaneContext {
                lane: lane.clone(),
                drain: config.revoke_drain,
                dlq: dlq.clone(),
                consumer: OnceLock::new(),
                handoff: Mutex::new(Vec::new()),
            };
            let consumer: Arc<BaseConsumer<LaneContext>> =
                Arc::new(config.consumer_config(&client_id).create_with_context(context)?);
            let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
            consumer.subscribe(&[&lane.topic])?;
            let route = engine.route_id(&lane.route).expect("the node registered every route");
            intakes.push(LaneIntake {
                consumer,
                lane: lane.clone(),
                route,
                queues: Default::default(),
                next: Default::default(),
            });
        }
        // Critical classes first, across routes.
        intakes.sort_by_key(|l| l.lane.class.index());
        let control = Arc::new(AtomicU8::new(RUNNING));
        let intake = Intake {
            lanes: intakes,
            engine: engine.clone(),
            dlq: dlq.clone(),
            control: control.clone(),
            commit_every: config.commit_every,
        };
        let thread = std::thread::Builder::new()
            .name("veltrix-kafka-intake".into())
            .spawn(move || intake.run())
            .map_err(|e| NodeError::InvalidSetting { setting: "intake thread", reason: e.to_string() })?;
        let _ = shared.intake.set(thread.thread().clone());
        Ok(Node { engine, lanes, shared, control, intake: Some(thread), dlq })
    }
}

/// Fails with [`NodeError::MissingTopic`] unless every class topic and the dead-letter topic
/// exist: a consumer of a missing topic would wait silently.
async fn check_topics(config: &NodeConfig, lanes: &[Arc<Lane>]) -> Result<(), NodeError> {
    let probe: BaseConsumer = config.client_config().create()?;
    let mut wanted: Vec<String> = lanes.iter().map(|l| l.topic.clone()).collect();
    wanted.push(config.dlq_topic());
    tokio::task::spawn_blocking(move || {
        let metadata = probe.fetch_metadata(None, Duration::from_secs(10))?;
        let present = |t: &str| metadata.topics().iter().any(|m| m.name() == t && m.error().is_none());
        match wanted.into_iter().find(|t| !present(t)) {
            Some(topic) => Err(NodeError::MissingTopic { topic }),
            None => Ok(()),
        }
    })
    .await
    .expect("metadata probe does not panic")
}

impl Node {
    /// A node reading the topics of the routes it is given, in `config`'s group.
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder { config, engine: Engine::builder(), routes: Vec::new(), policies: Vec::new() }
    }

    /// The engine inside (for its stats).
    pub fn engine(&self) -> &Engine<KafkaEvent> {
        &self.engine
    }

    /// Every lane's counters now.
    pub fn report(&self) -> Vec<ClassReport> {
        self.lanes.iter().map(|l| ClassReport::of(l)).collect()
    }

    /// Events held now (taken, not yet finished and dropped), and the most ever held.
    pub fn held(&self) -> (usize, usize) {
        (self.shared.live(), self.shared.max_live())
    }

    /// The partitions the group has assigned to this node now, over all lanes (a node starts
    /// with none: joining the group takes a rebalance, and the first fetch of a partition comes
    /// up to a second after its assignment).
    pub fn assigned(&self) -> usize {
        self.lanes.iter().map(|l| l.partitions().owned()).sum()
    }

    /// The credit over all lanes: the most events the node holds.
    pub fn credit(&self) -> usize {
        self.lanes.iter().map(|l| l.credit).sum()
    }

    /// Stops taking events, lets the engine drain for up to `drain`, waits up to 10 s for the
    /// dead letters to be written, commits every finished offset and leaves the group. Events
    /// still unfinished at the drain deadline, and dead letters not yet written, are not
    /// committed: the partition's next owner reads them again.
    pub async fn shutdown(mut self, drain: Duration) -> NodeReport {
        self.control.store(STOPPING, Ordering::Release);
        self.shared.wake();
        let engine = self.engine.shutdown(drain).await;
        let dlq = self.dlq.clone();
        let flushed = tokio::task::spawn_blocking(move || dlq.producer.flush(DLQ_FLUSH)).await;
        let waiting = self.dlq.producer.context().waiting();
        if !matches!(flushed, Ok(Ok(()))) || waiting > 0 {
            tracing::warn!(waiting, "dead letters not all written at shutdown: their offsets stay uncommitted");
        }
        self.control.store(FINISH, Ordering::Release);
        self.shared.wake();
        if let Some(thread) = self.intake.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        NodeReport { classes: self.report(), engine, max_held: self.shared.max_live() }
    }
}

/// How long shutdown waits for the dead-letter topic to confirm its writes.
const DLQ_FLUSH: Duration = Duration::from_secs(10);

impl Drop for Node {
    fn drop(&mut self) {
        // Without a shutdown: the intake thread commits what is done and leaves the group.
        self.control.store(FINISH, Ordering::Release);
        self.shared.wake();
    }
}

/// One lane's numbers. Every message taken ends as `handled`, `dead_lettered` (through
/// `expired_on_arrival`, `refused`, or the engine's dead letters), or `left` (not committed:
/// read again by the partition's next owner).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassReport {
    /// The route.
    pub route: String,
    /// The class.
    pub class: String,
    /// Its topic.
    pub topic: String,
    /// The credit: the most events this lane holds at once.
    pub credit: usize,
    /// Messages taken into the node.
    pub taken: u64,
    /// Handled: the handler returned `Ok`.
    pub handled: u64,
    /// Written to the dead-letter topic (then committed).
    pub dead_lettered: u64,
    /// Dead-letter writes that failed and were sent again.
    pub dlq_retries: u64,
    /// Past the class's deadline (counted from the message's timestamp) when read: dead-lettered
    /// as `expired` without a handler.
    pub expired_on_arrival: u64,
    /// Refused by the engine (the class full under `Reject`): dead-lettered as `refused`.
    pub refused: u64,
    /// Messages read that had to wait because their partition's commit window was full (a slow
    /// event at its head): kept in order and taken when the window has room; the partition's
    /// queue is not read meanwhile.
    pub held_back: u64,
    /// Copies of a message already taken (not handled again).
    pub again: u64,
    /// Dropped unfinished (left at shutdown): not committed, read again by the next owner.
    pub left: u64,
    /// Still in flight when their partition was handed to another node (revoke_drain passed):
    /// the new owner reads them again, so they may be handled twice.
    pub handed_back: u64,
    /// Finished after their partition was handed over (not committed by this node).
    pub late: u64,
    /// Offsets Kafka never delivered (compaction, transaction markers): committed past.
    pub gaps: u64,
    /// Partitions revoked from this lane.
    pub revoked: u64,
    /// Commits the broker confirmed.
    pub commits: u64,
    /// Commits that failed (retried with the next one).
    pub commit_failed: u64,
    /// Errors reported while polling (retried).
    pub fetch_errors: u64,
}

impl ClassReport {
    fn of(l: &Lane) -> ClassReport {
        let c = &l.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        ClassReport {
            route: l.route.clone(),
            class: l.class_name.clone(),
            topic: l.topic.clone(),
            credit: l.credit,
            taken: get(&c.taken),
            handled: get(&c.handled),
            dead_lettered: get(&c.dead_lettered),
            dlq_retries: get(&c.dlq_retries),
            expired_on_arrival: get(&c.expired_on_arrival),
            refused: get(&c.refused),
            held_back: get(&c.held_back),
            again: get(&c.again),
            left: get(&c.left),
            handed_back: get(&c.handed_back),
            late: get(&c.late),
            gaps: get(&c.gaps) + l.partitions().gaps(),
            revoked: get(&c.revoked),
            commits: get(&c.commits),
            commit_failed: get(&c.commit_failed),
            fetch_errors: get(&c.fetch_errors),
        }
    }
}

/// What a node did, at shutdown.
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

/// The intake thread: polls every class's consumer, most critical first, takes what credit
/// allows, and commits.
struct Intake {
    lanes: Vec<LaneIntake>,
    engine: Arc<Engine<KafkaEvent>>,
    dlq: Arc<Dlq>,
    control: Arc<AtomicU8>,
    commit_every: Duration,
}

impl Intake {
    fn run(self) {
        let mut next_commit = Instant::now() + self.commit_every;
        let mut stopping = false;
        loop {
            let state = self.control.load(Ordering::Acquire);
            if state == FINISH {
                break;
            }
            let taking = state == RUNNING;
            if !taking && !stopping {
                stopping = true;
                tracing::info!("intake stopped: no partition queue is read any more");
            }
            let mut busy = false;
            for lane in &self.lanes {
                busy |= lane.pump(&self.engine, &self.dlq, taking);
            }
            if Instant::now() >= next_commit {
                for lane in &self.lanes {
                    lane.commit(CommitMode::Async);
                }
                self.dlq.retry_failed();
                next_commit = Instant::now() + self.commit_every;
            }
            if !busy {
                std::thread::park_timeout(IDLE);
            }
        }
        for lane in &self.lanes {
            lane.commit(CommitMode::Sync);
            // The queues hold the consumer: let it go, so dropping it below closes it.
            lane.queues.borrow_mut().clear();
            lane.consumer.context().handoff.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        // Dropping the consumers closes them: each leaves the group (its partitions go to the
        // other nodes at once) after the revocation commits what is left.
    }
}

/// One class's consumer, driven by the intake thread.
struct LaneIntake {
    consumer: Arc<BaseConsumer<LaneContext>>,
    lane: Arc<Lane>,
    route: RouteId,
    /// Each owned partition's own queue: read only while the lane has credit, so the client
    /// stops fetching a partition once its queue holds its prefetch (no pause needed).
    queues: std::cell::RefCell<Vec<(i32, PartitionQueue<LaneContext>)>>,
    /// Where the next turn starts among `queues` (every partition gets the first turn in turn).
    next: std::cell::Cell<usize>,
}

impl LaneIntake {
    /// One turn: serve the consumer's callbacks (and any message fetched before its
    /// partition's queue was split off), then read the partition queues while the lane has
    /// credit, at most [`TURN`] messages. Returns whether anything moved.
    ///
    /// Credit is checked before a partition queue is read, so what the lane cannot take stays
    /// in the client's prefetch, which stops fetching at `queued.max.messages.kbytes`: the
    /// backlog stays in Kafka without pausing anything.
    fn pump(&self, engine: &Engine<KafkaEvent>, dlq: &Dlq, taking: bool) -> bool {
        let lane = &*self.lane;
        let mut moved = 0;
        while moved < TURN {
            let Some(polled) = self.consumer.poll(Duration::ZERO) else { break };
            moved += 1;
            match polled {
                Ok(m) => self.arrive(m.detach(), engine, dlq, taking),
                Err(e) => {
                    lane.counters.fetch_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %lane.topic, error = %e, "poll failed; retrying");
                    break;
                }
            }
        }
        self.reconcile_queues();
        if taking {
            moved += usize::from(self.take_pending(engine, dlq));
            let queues = self.queues.borrow();
            let count = queues.len();
            let start = self.next.get();
            self.next.set(start.wrapping_add(1));
            let mut budget = TURN;
            for i in 0..count {
                let (partition, queue) = &queues[(start + i) % count];
                if lane.pending().contains_key(partition) {
                    continue;
                }
                while budget > 0 && lane.free.load(Ordering::Acquire) > 0 {
                    let Some(polled) = queue.poll(Duration::ZERO) else { break };
                    budget -= 1;
                    moved += 1;
                    match polled {
                        Ok(m) => self.arrive(m.detach(), engine, dlq, true),
                        Err(e) => {
                            lane.counters.fetch_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(topic = %lane.topic, partition, error = %e, "poll failed; retrying");
                            break;
                        }
                    }
                    if lane.pending().contains_key(partition) {
                        // Its commit window is full: the rest waits in its queue.
                        break;
                    }
                }
            }
        }
        moved > 0
    }

    /// Takes the queues split off at the last assignment, and drops those of partitions the
    /// lane no longer owns (revoked: their next owner reads what was left in them).
    fn reconcile_queues(&self) {
        let new = std::mem::take(&mut *self.consumer.context().handoff.lock().unwrap_or_else(|p| p.into_inner()));
        let mut queues = self.queues.borrow_mut();
        for (partition, queue) in new {
            queues.retain(|(p, _)| *p != partition);
            queues.push((partition, queue));
        }
        let owned = self.lane.partitions();
        queues.retain(|(p, _)| owned.owns(*p));
    }

    /// A message fetched: behind its partition's pending ones if it has any, else taken if
    /// there is room, else the first pending one of its partition.
    fn arrive(&self, m: OwnedMessage, engine: &Engine<KafkaEvent>, dlq: &Dlq, taking: bool) {
        let partition = m.partition();
        if let Some(queue) = self.lane.pending().get_mut(&partition) {
            queue.push_back(m);
            self.lane.counters.held_back.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(m) = self.take(m, engine, dlq, taking) {
            self.lane.pending().entry(partition).or_default().push_back(m);
            self.lane.counters.held_back.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes pending messages, in order per partition, while there is room.
    fn take_pending(&self, engine: &Engine<KafkaEvent>, dlq: &Dlq) -> bool {
        let partitions: Vec<i32> = {
            let pending = self.lane.pending();
            if pending.is_empty() {
                return false;
            }
            pending.keys().copied().collect()
        };
        let mut took = false;
        for partition in partitions {
            loop {
                let next = self.lane.pending().get_mut(&partition).and_then(VecDeque::pop_front);
                let Some(m) = next else { break };
                match self.take(m, engine, dlq, true) {
                    Ok(()) => took = true,
                    Err(m) => {
                        if let Some(queue) = self.lane.pending().get_mut(&partition) {
                            queue.push_front(m);
                        }
                        break;
                    }
                }
            }
            let mut pending = self.lane.pending();
            if pending.get(&partition).is_some_and(VecDeque::is_empty) {
                pending.remove(&partition);
            }
        }
        took
    }

    /// Takes `m` into the engine (or the dead-letter topic); gives it back if the lane has no
    /// credit or its partition no commit window to spare.
    fn take(&self, m: OwnedMessage, engine: &Engine<KafkaEvent>, dlq: &Dlq, taking: bool) -> Result<(), OwnedMessage> {
        let lane = &self.lane;
        if !taking || !lane.take_credit() {
            return Err(m);
        }
        let generation = match lane.partitions().take(m.partition(), m.offset()) {
            Admit::Taken(generation, 0) => generation,
            Admit::Taken(generation, skipped) => {
                // Compaction and transaction markers skip offsets; so does retention deleting
                // records before they were read, which loses them: say so.
                tracing::warn!(
                    topic = %lane.topic,
                    partition = m.partition(),
                    offset = m.offset(),
                    skipped,
                    "offsets skipped by Kafka (compaction, transaction markers, or records deleted by retention before they were read)"
                );
                generation
            }
            Admit::Full => {
                lane.give_credit();
                return Err(m);
            }
            Admit::Again => {
                lane.give_credit();
                lane.counters.again.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            // Revoked meanwhile: its next owner reads it.
            Admit::NotOwned => {
                lane.give_credit();
                return Ok(());
            }
        };
        lane.counters.taken.fetch_add(1, Ordering::Relaxed);
        let key = lane.keyed.then(|| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            m.key().hash(&mut h);
            h.finish()
        });
        let age = m.timestamp().to_millis().map(|ts| {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            // Assumes the node's clock agrees with the producer's to well within a deadline.
            now.saturating_sub(Duration::from_millis(ts.max(0) as u64))
        });
        let event = KafkaEvent::new(m, generation, lane.clone());
        let mut deadline = None;
        if let Some(d) = lane.deadline {
            // The deadline counts from the message's timestamp: time spent in Kafka is spent.
            let left = d.saturating_sub(age.unwrap_or_default());
            if left.is_zero() {
                lane.counters.expired_on_arrival.fetch_add(1, Ordering::Relaxed);
                dlq.send(Letter { event, reason: "expired", without_payload: false });
                return Ok(());
            }
            deadline = Some(tokio::time::Instant::now() + left);
        }
        let mut submission = Submission::to(self.route, lane.class, event);
        if let Some(deadline) = deadline {
            submission = submission.deadline(deadline);
        }
        if let Some(key) = key {
            submission = submission.key(key);
        }
        let submitted =
            if lane.backpressure { engine.submit_blocking(submission) } else { engine.try_submit(submission) };
        match submitted {
            Ok(()) => {}
            Err(SubmitError::Full(event) | SubmitError::Rejected(event)) => {
                lane.counters.refused.fetch_add(1, Ordering::Relaxed);
                dlq.send(Letter { event, reason: "refused", without_payload: false });
            }
            // Closed: not committed, read again by the partition's next owner. Expected while
            // stopping; while running it means the engine lost its workers.
            Err(e) => {
                if taking {
                    tracing::error!(topic = %lane.topic, error = ?e, "the engine refused an event while running: left uncommitted");
                }
                drop(e.into_inner());
            }
        }
        Ok(())
    }

    /// Commits every partition whose commit point moved past what the broker confirmed.
    fn commit(&self, mode: CommitMode) {
        let points = self.lane.partitions().to_commit(None);
        commit_points(&self.consumer, &self.lane, &points, mode);
    }
}

fn commit_points(consumer: &BaseConsumer<LaneContext>, lane: &Lane, points: &[(i32, i64)], mode: CommitMode) {
    if points.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in points {
        if let Err(e) = tpl.add_partition_offset(&lane.topic, p, Offset::Offset(o)) {
            tracing::warn!(error = %e, "bad commit offset");
        }
    }
    match consumer.commit(&tpl, mode) {
        // An async commit is confirmed in the commit callback.
        Ok(()) if matches!(mode, CommitMode::Sync) => {
            lane.counters.commits.fetch_add(1, Ordering::Relaxed);
            let mut owned = lane.partitions();
            for &(p, o) in points {
                owned.confirm(p, o);
            }
        }
        Ok(()) => {}
        Err(e) => {
            lane.counters.commit_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(topic = %lane.topic, error = %e, "commit failed; retried with the next one");
        }
    }
}

/// A lane consumer's callbacks (run on the intake thread, inside `poll`).
struct LaneContext {
    lane: Arc<Lane>,
    drain: Duration,
    /// Dead letters whose write failed are sent again while a revocation waits for them.
    dlq: Arc<Dlq>,
    /// The consumer itself, to split a partition's queue off before it is assigned.
    consumer: OnceLock<Weak<BaseConsumer<LaneContext>>>,
    /// Queues split off at an assignment, for intake to take after the poll that ran it.
    handoff: Mutex<Vec<(i32, PartitionQueue<LaneContext>)>>,
}

impl ClientContext for LaneContext {}

impl ConsumerContext for LaneContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl),
            // Before the client starts fetching them: every message of these partitions
            // arrives in their own queue, none ahead of it in the main one.
            Rebalance::Assign(tpl) => {
                let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return };
                let mut handoff = self.handoff.lock().unwrap_or_else(|p| p.into_inner());
                for partition in partitions_of(tpl, &self.lane.topic) {
                    match consumer.split_partition_queue(&self.lane.topic, partition) {
                        Some(queue) => handoff.push((partition, queue)),
                        None => {
                            tracing::warn!(topic = %self.lane.topic, partition, "partition queue not split: read from the main queue")
                        }
                    }
                }
            }
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions = partitions_of(tpl, &self.lane.topic);
            tracing::info!(topic = %self.lane.topic, ?partitions, "partitions assigned");
            self.lane.assign(&partitions);
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        let counters = &self.lane.counters;
        match result {
            Ok(()) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                let mut owned = self.lane.partitions();
                for e in offsets.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        owned.confirm(e.partition(), o);
                    }
                }
            }
            Err(e) => {
                counters.commit_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %self.lane.topic, error = %e, "commit failed; retried with the next one");
            }
        }
    }
}

impl LaneContext {
    /// Stops taking from the revoked partitions, lets their events in flight finish for up to
    /// `drain`, commits what is done, and forgets them. What is still in flight then is
    /// handed back: the new owner reads it again.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let lane = &self.lane;
        let partitions = partitions_of(tpl, &lane.topic);
        lane.partitions().revoke(&partitions);
        {
            // Fetched, never taken: the next owner reads them.
            let mut pending = lane.pending();
            for p in &partitions {
                pending.remove(p);
            }
        }
        let lost = consumer.assignment_lost();
        if !lost {
            let deadline = Instant::now() + self.drain;
            while lane.partitions().running(&partitions) > 0 && Instant::now() < deadline {
                self.dlq.retry_failed();
                std::thread::sleep(Duration::from_millis(2));
            }
            let points = lane.partitions().to_commit(Some(&partitions));
            commit_points(consumer, lane, &points, CommitMode::Sync);
        }
        let (left, gaps) = lane.partitions().release(&partitions);
        let counters = &lane.counters;
        counters.handed_back.fetch_add(left as u64, Ordering::Relaxed);
        counters.gaps.fetch_add(gaps, Ordering::Relaxed);
        counters.revoked.fetch_add(partitions.len() as u64, Ordering::Relaxed);
        tracing::info!(topic = %lane.topic, ?partitions, handed_back = left, lost, "partitions revoked");
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect()
}

/// Wraps the user's handler: the event's offset is done when it returns `Ok`.
struct Finishing<H> {
    inner: H,
}

impl<H: Handler<KafkaEvent>> Handler<KafkaEvent> for Finishing<H> {
    fn handle(&self, event: &KafkaEvent, cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let work = self.inner.handle(event, cx);
        async move {
            let outcome = work.await;
            if outcome == Outcome::Ok {
                event.lane.counters.handled.fetch_add(1, Ordering::Relaxed);
                event.finish();
            }
            outcome
        }
    }
}

/// Maps the engine's dead letters onto the dead-letter topic; an event the engine gave up on
/// at shutdown is dropped instead (not committed: read again by the next owner).
struct DeadLetters {
    dlq: Arc<Dlq>,
}

impl DeadLetterSink<Routed<KafkaEvent>> for DeadLetters {
    fn dead_letter(&self, letter: DeadLetter<Routed<KafkaEvent>>) {
        let reason = match letter.reason {
            DeadLetterReason::Shed => "shed",
            DeadLetterReason::Codel => "codel",
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::HandlerFailed => "handler_failed",
            DeadLetterReason::Panicked => "panicked",
            // Shutdown, Closed: another node takes it.
            _ => return,
        };
        self.dlq.send(Letter { event: letter.event.event, reason, without_payload: false });
    }
}

/// An event on its way to the dead-letter topic.
pub(crate) struct Letter {
    event: KafkaEvent,
    reason: &'static str,
    /// Too large for the dead-letter topic with its headers: written without the payload,
    /// its length in `veltrix-payload-dropped`.
    without_payload: bool,
}

/// The dead-letter topic's idempotent producer. A write that fails is sent again (from the
/// intake thread) until it succeeds: the event's offset is committed only after.
pub(crate) struct Dlq {
    producer: ThreadedProducer<DlqContext>,
    topic: String,
    group: String,
}

impl Dlq {
    fn new(config: &NodeConfig) -> Result<Dlq, NodeError> {
        let producer = config
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create_with_context(DlqContext::default())?;
        Ok(Dlq { producer, topic: config.dlq_topic(), group: config.group.clone() })
    }

    /// Writes `letter` with its reason and origin in headers (`veltrix-reason`, `veltrix-topic`,
    /// `veltrix-partition`, `veltrix-offset`, `veltrix-route`, `veltrix-class`, `veltrix-group`,
    /// `veltrix-timestamp`), after the original headers; key and payload as they were.
    fn send(&self, letter: Letter) {
        let letter = Box::new(letter);
        let m = letter.event.message();
        let mut headers = m.headers().cloned().unwrap_or_default();
        let lane = &letter.event.lane;
        let numbers =
            [m.partition().to_string(), m.offset().to_string(), m.timestamp().to_millis().unwrap_or(-1).to_string()];
        for (key, value) in [
            ("veltrix-reason", letter.reason),
            ("veltrix-topic", m.topic()),
            ("veltrix-partition", &numbers[0]),
            ("veltrix-offset", &numbers[1]),
            ("veltrix-timestamp", &numbers[2]),
            ("veltrix-route", &lane.route),
            ("veltrix-class", &lane.class_name),
            ("veltrix-group", &self.group),
        ] {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        if letter.without_payload {
            let bytes = m.payload().map_or(0, <[u8]>::len).to_string();
            headers = headers.insert(Header { key: "veltrix-payload-dropped", value: Some(&bytes) });
        }
        // The record borrows key and payload; the event itself rides along as the opaque.
        let key = m.key().map(<[u8]>::to_vec);
        let payload = m.payload().filter(|_| !letter.without_payload).map(<[u8]>::to_vec);
        let mut record = BaseRecord::with_opaque_to(&self.topic, letter).headers(headers);
        if let Some(key) = &key {
            record = record.key(key);
        }
        if let Some(payload) = &payload {
            record = record.payload(payload);
        }
        if let Err((e, record)) = self.producer.send(record) {
            // Never wait here (the caller may be an engine worker or the intake thread): the
            // intake thread sends it again at its next commit.
            self.producer.context().failed(e, *record.delivery_opaque);
        }
    }

    /// Sends again the letters whose write failed.
    fn retry_failed(&self) {
        let failed = std::mem::take(&mut *self.producer.context().failed.lock().unwrap_or_else(|p| p.into_inner()));
        for letter in failed {
            self.send(letter);
        }
    }
}

#[derive(Default)]
struct DlqContext {
    failed: std::sync::Mutex<Vec<Letter>>,
}

impl ClientContext for DlqContext {}

impl ProducerContext for DlqContext {
    type DeliveryOpaque = Box<Letter>;

    fn delivery(&self, result: &DeliveryResult<'_>, letter: Box<Letter>) {
        match result {
            Ok(_) => {
                letter.event.lane.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                letter.event.finish();
            }
            Err((e, _)) => self.failed(e.clone(), *letter),
        }
    }
}

impl DlqContext {
    /// A write that failed, kept to be sent again: without its payload if it was too large.
    fn failed(&self, e: KafkaError, mut letter: Letter) {
        let counters = &letter.event.lane.counters;
        counters.dlq_retries.fetch_add(1, Ordering::Relaxed);
        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
            letter.without_payload = true;
        }
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
            tracing::warn!(error = %e, offset = letter.event.offset(), "dead letter not written; sending again");
        }
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).push(letter);
    }

    fn waiting(&self) -> usize {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
