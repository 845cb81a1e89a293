//! One system under one scenario, on turmoil: a client host offers the drawn schedule over TCP,
//! with timeouts and retries; a server host puts each request into the system under test (the
//! real Veltrix engine, or a naive FIFO queue behind the same front end) and a service model
//! works through them on the simulated clock.
//!
//! Time: turmoil ticks in whole milliseconds and tokio's timers have 1 ms resolution, so the
//! service model keeps exact (nanosecond) time itself: each worker has a virtual `free_at`, a
//! job starts at `max(arrival, free_at)` and ends `service` later, and the task only sleeps until
//! that instant rounded up. Latencies are computed from the exact times, so the 1 ms grid does
//! not bias them; only the choice of which queued event runs next is made on the grid.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use veltrix_engine::runtime::{
    Engine, Handler, HandlerContext, Outcome as HandlerOutcome, RetryPolicy, RouteSpec, Routed, Submission,
};
use veltrix_engine::{
    ClassId, ClassSpec, Config, DeadLetter, DeadLetterReason, OverloadPolicy, SchedulerMode, SubmitError,
};

use crate::scenario::{PolicyDef, Scenario, SchedulerDef, SystemDef};
use crate::wire::{Outcome, REQUEST_LEN, RESPONSE_LEN, Request, Response};
use crate::workload::Arrival;

const PORT: u16 = 7000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// Depth is sampled this often.
const DEPTH_EVERY_NS: u64 = 100 * MS;

/// What the server saw of one class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerClass {
    /// Requests that reached the front end (attempts, retries included).
    pub received: u64,
    /// Taken into the system.
    pub accepted: u64,
    /// Refused: full / policy / closed.
    pub rejected: [u64; 3],
    /// Handled.
    pub handled: u64,
    /// Dead-lettered, by `DeadLetterReason::ALL` index.
    pub dead: [u64; 7],
    /// Dropped without a trace by a full naive queue (tail drop): never accepted.
    pub tail_dropped: u64,
    /// Accepted by a naive queue, then abandoned with its backlog at a restart or the end.
    pub abandoned: u64,
    /// Inside the server when it crashed: lost with its memory.
    pub crashed: u64,
    /// Most events of the class inside the system at once.
    pub peak_in_system: u64,
    in_system: u64,
}

/// One handled event's exact times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Class index.
    pub class: u8,
    /// Arrival (ns).
    pub arrival_ns: u64,
    /// Service start (ns).
    pub start_ns: u64,
    /// Service end (ns).
    pub done_ns: u64,
    /// Within deadline.
    pub good: bool,
    /// A retry, not a fresh request.
    pub retry: bool,
    /// The request it belongs to (the id in the schedule).
    pub request: u64,
}

/// What the client saw of one class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientClass {
    /// Fresh requests.
    pub fresh: u64,
    /// Retries sent.
    pub retries: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Retries the budget refused.
    pub budget_denied: u64,
    /// Requests answered `handled`.
    pub succeeded: u64,
    /// Requests that ended without success (refused, dead-lettered or timed out on the last attempt).
    pub failed: u64,
    /// Requests still waiting when the client stopped.
    pub unanswered: u64,
    /// Attempts that could not be written (no connection: the server was down).
    pub send_failed: u64,
}

/// The outcome of one system's run.
#[derive(Debug, Clone)]
pub struct SystemRun {
    /// The system's name.
    pub name: String,
    /// `naive-fifo`, `fifo` or `veltrix`.
    pub kind: &'static str,
    /// Server side, per class.
    pub server: Vec<ServerClass>,
    /// Client side, per class.
    pub client: Vec<ClientClass>,
    /// Every handled event, in completion order.
    pub completions: Vec<Completion>,
    /// `(time, queued per class)` every 100 ms.
    pub depth: Vec<(u64, Vec<u64>)>,
    /// The engine's own ledger totals per class (Veltrix only): handled and dead per reason.
    pub ledger: Option<Vec<(u64, [u64; 7])>>,
    /// Simulated seconds run.
    pub sim_seconds: f64,
}

/// The fixed simulation epoch (never the wall clock).
fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// Runs `system` on the `schedule` drawn for `scenario`.
///
/// # Errors
///
/// A message if the simulation itself fails (a host errored).
pub fn run_system(
    scenario: &Scenario,
    system: &SystemDef,
    schedule: &[Arrival],
    seed: u64,
) -> Result<SystemRun, String> {
    let classes = scenario.classes.get_ref().len();
    let latency = Duration::from_nanos((scenario.faults.latency_ms.0 * 1e6) as u64);
    let jitter = Duration::from_nanos((scenario.faults.jitter_ms.0 * 1e6) as u64);
    let end_ns = (scenario.duration_s.0 * 1e9) as u64;
    let grace_ns = 2 * (latency + jitter).as_nanos() as u64 + 50 * MS;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_nanos(end_ns + grace_ns + SEC))
        .tick_duration(Duration::from_millis(1))
        .epoch(epoch())
        .min_message_latency(latency)
        .max_message_latency(latency + jitter)
        .tcp_capacity(1 << 20)
        .rng_seed(seed)
        .build();

    let server = Arc::new(ServerShared::new(scenario, system, classes));
    let client = Arc::new(Mutex::new(vec![ClientClass::default(); classes]));
    {
        let server = server.clone();
        sim.host("server", move || server_main(server.clone()));
    }
    let plan = ClientPlan::new(scenario, schedule, end_ns + grace_ns);
    sim.client("client", client_main(plan, client.clone()));

    let mut holds: Vec<(u64, bool)> = scenario
        .faults
        .partition
        .iter()
        .flat_map(|w| [((w.from_s.0 * 1e9) as u64, true), ((w.to_s.0 * 1e9) as u64, false)])
        .collect();
    holds.sort();
    let mut holds = holds.into_iter().peekable();
    // (time, crash = true / come back = false)
    let mut crashes: Vec<(u64, bool)> = scenario
        .faults
        .crash
        .iter()
        .flat_map(|c| [((c.at_s.0 * 1e9) as u64, true), (((c.at_s.0 + c.down_s.0) * 1e9) as u64, false)])
        .collect();
    crashes.sort();
    let mut crashes = crashes.into_iter().peekable();
    let mut down = false;
    loop {
        let now = sim.elapsed().as_nanos() as u64;
        while let Some(&(at, crash)) = crashes.peek() {
            if at > now {
                break;
            }
            crashes.next();
            if crash && !down {
                server.crash_begins(now);
                sim.crash("server");
                server.crash_ends();
                down = true;
            } else if !crash && down {
                sim.bounce("server");
                down = false;
            }
        }
        while let Some(&(at, hold)) = holds.peek() {
            if at > now {
                break;
            }
            if hold {
                sim.hold("client", "server")
            } else {
                sim.release("client", "server")
            }
            holds.next();
        }
        if sim.step().map_err(|e| format!("simulation failed: {e}"))? {
            break;
        }
    }
    let sim_seconds = sim.elapsed().as_secs_f64();
    drop(sim);
    let state = Arc::try_unwrap(server).map_err(|_| "server state still shared".to_string())?;
    let crashed = state.crashed_once.load(std::sync::atomic::Ordering::SeqCst);
    let rec = state.rec.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let client = client.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Ok(SystemRun {
        name: system.name().to_string(),
        kind: match system {
            SystemDef::NaiveFifo { .. } => "naive-fifo",
            SystemDef::Fifo { .. } => "fifo",
            SystemDef::Veltrix { .. } => "veltrix",
        },
        server: rec.classes,
        client,
        completions: rec.completions,
        depth: rec.depth,
        // A crashed engine's ledger died with it: there is nothing whole to compare.
        ledger: if crashed { None } else { rec.ledger },
        sim_seconds,
    })
}

// ---------------------------------------------------------------- server

#[derive(Debug, Default)]
struct Recorder {
    classes: Vec<ServerClass>,
    completions: Vec<Completion>,
    depth: Vec<(u64, Vec<u64>)>,
    ledger: Option<Vec<(u64, [u64; 7])>>,
}

/// A request inside the server, with where to answer it.
#[derive(Debug, Clone)]
struct Job {
    req: Request,
    /// When the front end received it (ns, on the 1 ms grid).
    received_ns: u64,
    reply: mpsc::UnboundedSender<Response>,
}

impl Job {
    fn respond(&self, outcome: Outcome) {
        // The connection may be gone (client finished): the outcome is recorded regardless.
        let _ = self.reply.send(Response { id: self.req.id, outcome });
    }
}

#[derive(Debug)]
struct ServerShared {
    system: SystemDef,
    /// Veltrix gives each event its deadline (`deadlines = true`).
    engine_deadlines: bool,
    classes: usize,
    class_names: Vec<String>,
    workers: usize,
    /// Class deadline (ns) for goodput, combined with the client's timeout.
    good_within_ns: Vec<u64>,
    latency_ns: u64,
    jitter_ns: u64,
    capacity_drops: Vec<(u64, u64, f64)>,
    restarts: Vec<u64>,
    end_ns: u64,
    rec: Mutex<Recorder>,
    free_at: Mutex<Vec<u64>>,
    /// Set while the host is being torn down by a crash: what the teardown reports is lost.
    crashing: std::sync::atomic::AtomicBool,
    /// Any crash happened (the engine's ledger then dies with it and cannot be compared).
    crashed_once: std::sync::atomic::AtomicBool,
}

impl ServerShared {
    fn crash_begins(&self, now: u64) {
        self.crashing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.crashed_once.store(true, std::sync::atomic::Ordering::SeqCst);
        // Work in progress dies with the host: the workers are free when it comes back.
        self.free_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter_mut().for_each(|f| *f = now);
    }

    fn crash_ends(&self) {
        let mut rec = self.rec();
        for c in rec.classes.iter_mut() {
            c.crashed += c.in_system;
            c.in_system = 0;
        }
        drop(rec);
        self.crashing.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_crashing(&self) -> bool {
        self.crashing.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn new(scenario: &Scenario, system: &SystemDef, classes: usize) -> ServerShared {
        let good_within_ns = scenario.useful_within_ns().into_iter().map(|d| d.unwrap_or(u64::MAX)).collect();
        let ns = |s: f64| (s * 1e9) as u64;
        ServerShared {
            engine_deadlines: matches!(system, SystemDef::Veltrix { deadlines: true, .. }),
            system: system.clone(),
            classes,
            class_names: scenario.class_names(),
            workers: scenario.workers as usize,
            good_within_ns,
            latency_ns: (scenario.faults.latency_ms.0 * 1e6) as u64,
            jitter_ns: (scenario.faults.jitter_ms.0 * 1e6) as u64,
            capacity_drops: scenario
                .faults
                .capacity_drop
                .iter()
                .map(|d| (ns(d.from_s.0), ns(d.to_s.0), d.factor.0))
                .collect(),
            restarts: scenario.faults.restart.iter().map(|r| ns(r.at_s.0)).collect(),
            end_ns: ns(scenario.duration_s.0),
            rec: Mutex::new(Recorder { classes: vec![ServerClass::default(); classes], ..Recorder::default() }),
            free_at: Mutex::new(vec![0; scenario.workers as usize]),
            crashing: std::sync::atomic::AtomicBool::new(false),
            crashed_once: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn rec(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.rec.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn capacity_factor(&self, at_ns: u64) -> f64 {
        self.capacity_drops
            .iter()
            .filter(|(from, to, _)| *from <= at_ns && at_ns < *to)
            .map(|d| d.2)
            .fold(1.0, f64::min)
    }

    /// Works on a job: exact start and end on the worker that frees first, sleep until the end.
    async fn serve(&self, job: &Job, t0: Instant) {
        let req = job.req;
        // Without network trouble a request is ready at its exact arrival (+ base latency); one
        // held back by a partition is ready when the front end got it.
        let normal = req.arrival_ns + self.latency_ns;
        let ready = if job.received_ns > normal + self.jitter_ns + 2 * MS { job.received_ns } else { normal };
        let (start, done) = {
            let mut free = self.free_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let slot = (0..free.len()).min_by_key(|&i| (free[i], i)).expect("at least one worker");
            let start = ready.max(free[slot]);
            let done = start + (req.service_ns as f64 / self.capacity_factor(start)) as u64;
            free[slot] = done;
            (start, done)
        };
        tokio::time::sleep_until(t0 + Duration::from_nanos(done)).await;
        let class = req.class as usize;
        // Good if the answer is back at the client in time (it travels the base latency back).
        let good = (done + self.latency_ns).saturating_sub(req.arrival_ns) <= self.good_within_ns[class];
        {
            let mut rec = self.rec();
            let c = &mut rec.classes[class];
            c.handled += 1;
            c.in_system -= 1;
            rec.completions.push(Completion {
                class: req.class,
                arrival_ns: req.arrival_ns,
                start_ns: start,
                done_ns: done,
                good,
                retry: req.id & 0xff > 1,
                request: req.id >> 8,
            });
        }
        job.respond(Outcome::Handled);
    }

    fn dead_letter(&self, job: &Job, reason: DeadLetterReason) {
        if self.is_crashing() {
            // Destructors running as the crashed host's runtime is dropped: a real crash runs
            // none, so the event is lost, not dead-lettered (`crash_ends` counts it).
            return;
        }
        let i = DeadLetterReason::ALL.iter().position(|r| *r == reason).expect("a known reason");
        {
            let mut rec = self.rec();
            let c = &mut rec.classes[job.req.class as usize];
            c.dead[i] += 1;
            c.in_system -= 1;
        }
        job.respond(Outcome::DeadLettered(i as u8));
    }
}

/// The system under test, as the front end sees it.
enum System {
    Veltrix(Arc<Engine<Job>>),
    Fifo { tx: Option<FifoTx>, depth: Arc<Mutex<Vec<u64>>>, workers: Vec<tokio::task::JoinHandle<()>> },
}

enum FifoTx {
    Unbounded(mpsc::UnboundedSender<Job>),
    Bounded(mpsc::Sender<Job>),
}

struct ServiceModel {
    server: Arc<ServerShared>,
    t0: Instant,
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

fn veltrix_config(system: &SystemDef, scenario_classes: &[String]) -> Config {
    let SystemDef::Veltrix { scheduler, cap, window, capacity, classes, .. } = system else {
        unreachable!("a veltrix system")
    };
    let n = scenario_classes.len();
    let b = scenario_classes.iter().enumerate().fold(Config::builder(), |b, (k, name)| {
        let o = classes.iter().find(|o| o.name.get_ref() == name);
        // Defaults follow DESIGN: weights 16:4:1… for the classes below the tier, the lower
        // half of the classes shed their oldest, the upper half reject.
        let default_weight = 1u32 << (2 * (n - 1 - k).min(8)).min(16);
        let default_policy = if k < n.div_ceil(2) { OverloadPolicy::Reject } else { OverloadPolicy::ShedOldest };
        let mut spec = ClassSpec::new(name.clone(), o.and_then(|o| o.capacity).unwrap_or(*capacity) as usize)
            .with_weight(o.and_then(|o| o.weight).unwrap_or(default_weight))
            .with_policy(match o.and_then(|o| o.policy) {
                Some(PolicyDef::Backpressure) => OverloadPolicy::Backpressure,
                Some(PolicyDef::Reject) => OverloadPolicy::Reject,
                Some(PolicyDef::ShedOldest) => OverloadPolicy::ShedOldest,
                None => default_policy,
            });
        if let Some(o) = o {
            if let Some(t) = o.codel_target_ms {
                let interval = o.codel_interval_ms.map_or(100.0, |i| i.0);
                spec = spec.with_codel(Duration::from_secs_f64(t.0 / 1e3), Duration::from_secs_f64(interval / 1e3));
            }
        }
        b.class(spec)
    });
    let mode = match scheduler {
        SchedulerDef::Strict => SchedulerMode::Strict,
        SchedulerDef::Drr => SchedulerMode::Drr,
        SchedulerDef::Capped => SchedulerMode::CappedStrict { cap: *cap, window: *window },
    };
    b.scheduler(mode).build().expect("validated with the scenario")
}

fn start_system(server: &Arc<ServerShared>, t0: Instant, class_names: &[String]) -> System {
    match &server.system {
        SystemDef::Veltrix { .. } => {
            let sink = server.clone();
            // One event per service start, as the queueing models assume: the service model
            // finishes a job whose exact end has already passed without advancing the clock,
            // which a worker would take for a fast handler and batch behind.
            let spec = RouteSpec::new(veltrix_config(&server.system, class_names))
                .max_batch(1)
                .workers(server.workers)
                .retry(RetryPolicy::none());
            let engine = Engine::builder()
                .route("sim", spec, ServiceModel { server: server.clone(), t0 })
                .dead_letter_sink(move |d: DeadLetter<Routed<Job>>| sink.dead_letter(&d.event.event, d.reason))
                .build()
                .expect("inside the host runtime");
            System::Veltrix(Arc::new(engine))
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

enum FifoRx {
    Unbounded(mpsc::UnboundedReceiver<Job>),
    Bounded(mpsc::Receiver<Job>),
}

impl System {
    /// Takes a job in or answers it at once.
    fn offer(&self, server: &ServerShared, job: Job, t0: Instant) {
        let class = job.req.class as usize;
        match self {
            System::Veltrix(engine) => {
                let mut sub = Submission::new("sim", ClassId::new(class), job.clone());
                if server.engine_deadlines && job.req.deadline_ns > 0 {
                    sub =
                        sub.deadline(t0 + Duration::from_nanos(job.req.arrival_ns.saturating_add(job.req.deadline_ns)));
                }
                // Nothing runs between the submit and its return (one thread), so counting
                // the acceptance afterwards cannot miss the event's completion.
                match engine.try_submit(sub) {
                    Ok(()) => server.accepted(class),
                    Err(e) => {
                        let (why, outcome) = match &e {
                            SubmitError::Full(_) => (0, Outcome::RejectedFull),
                            SubmitError::Closed(_) => (2, Outcome::RejectedClosed),
                            _ => (1, Outcome::RejectedPolicy),
                        };
                        server.rejected(class, why);
                        e.into_inner().respond(outcome);
                    }
                }
            }
            System::Fifo { tx, depth, .. } => {
                let Some(tx) = tx else {
                    server.rejected(class, 2);
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

    fn depth(&self) -> Vec<u64> {
        match self {
            System::Veltrix(engine) => {
                let stats = engine.stats();
                stats.routes[0].classes.iter().map(|c| c.ledger.queued).collect()
            }
            System::Fifo { depth, .. } => depth.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
        }
    }

    /// Stops: Veltrix dead-letters its backlog (`shutdown`); a naive queue abandons its own.
    async fn stop(self, server: &ServerShared) {
        // Work in progress is cancelled: its workers are free from now on.
        let now = turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64;
        server
            .free_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter_mut()
            .for_each(|f| *f = (*f).min(now));
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

impl ServerShared {
    fn accepted(&self, class: usize) {
        let mut rec = self.rec();
        let c = &mut rec.classes[class];
        c.accepted += 1;
        c.in_system += 1;
        c.peak_in_system = c.peak_in_system.max(c.in_system);
    }

    fn rejected(&self, class: usize, why: usize) {
        self.rec().classes[class].rejected[why] += 1;
    }

    fn tail_dropped(&self, class: usize) {
        let mut rec = self.rec();
        let c = &mut rec.classes[class];
        c.tail_dropped += 1;
        c.accepted -= 1;
        c.in_system -= 1;
    }
}

async fn server_main(server: Arc<ServerShared>) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let t0 = Instant::now() - turmoil::sim_elapsed().unwrap_or_default();
    let class_names = server.class_names.clone();
    let system = Arc::new(tokio::sync::RwLock::new(Some(start_system(&server, t0, &class_names))));

    // Lifecycle: restarts, the final stop, and depth samples.
    {
        let (server, system) = (server.clone(), system.clone());
        tokio::spawn(async move {
            let mut restarts = server.restarts.clone();
            restarts.sort_unstable();
            // After a crash the host starts again mid-run: only restarts still to come.
            let started = turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64;
            let mut restarts = restarts.into_iter().filter(|&r| r >= started && r < server.end_ns).peekable();
            // After a crash the host starts again mid-run: sample from now on.
            let now = turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64;
            let mut next_sample = now.div_ceil(DEPTH_EVERY_NS) * DEPTH_EVERY_NS;
            loop {
                let next_restart = restarts.peek().copied().unwrap_or(u64::MAX);
                let wake = next_sample.min(next_restart).min(server.end_ns);
                tokio::time::sleep_until(t0 + Duration::from_nanos(wake)).await;
                if wake == next_sample {
                    if let Some(s) = &*system.read().await {
                        let d = s.depth();
                        server.rec().depth.push((wake, d));
                    }
                    next_sample += DEPTH_EVERY_NS;
                }
                if wake == next_restart {
                    restarts.next();
                    let old = system.write().await.take();
                    if let Some(old) = old {
                        old.stop(&server).await;
                    }
                    *system.write().await = Some(start_system(&server, t0, &class_names));
                }
                if wake >= server.end_ns {
                    let last = system.write().await.take();
                    if let Some(last) = last {
                        last.stop(&server).await;
                    }
                    break;
                }
            }
        });
    }

    loop {
        let (stream, _) = listener.accept().await?;
        let (server, system) = (server.clone(), system.clone());
        tokio::spawn(async move {
            let (mut rd, mut wr) = stream.into_split();
            let (reply, mut replies) = mpsc::unbounded_channel::<Response>();
            tokio::spawn(async move {
                while let Some(r) = replies.recv().await {
                    if wr.write_all(&r.encode()).await.is_err() {
                        break;
                    }
                }
            });
            let mut buf = [0u8; REQUEST_LEN];
            while rd.read_exact(&mut buf).await.is_ok() {
                let now = turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64;
                let req = match Request::decode(&buf) {
                    // Plausible: a known class, sent no later than now, a deadline under a day.
                    Ok(r)
                        if (r.class as usize) < server.classes
                            && r.arrival_ns <= now
                            && r.deadline_ns < 86_400 * SEC =>
                    {
                        r
                    }
                    // A malformed frame from a peer: drop the connection, count nothing.
                    _ => break,
                };
                server.rec().classes[req.class as usize].received += 1;
                let job = Job { req, received_ns: now, reply: reply.clone() };
                match &*system.read().await {
                    Some(s) => s.offer(&server, job, t0),
                    None => {
                        server.rejected(req.class as usize, 2);
                        job.respond(Outcome::RejectedClosed);
                    }
                }
            }
        });
    }
}

// ---------------------------------------------------------------- client

/// The client's script: the schedule, and the retry rules.
struct ClientPlan {
    arrivals: Vec<Arrival>,
    deadline_ns: Vec<u64>,
    timeout_ns: Option<u64>,
    max_attempts: u32,
    backoff_ns: u64,
    retry_budget: Option<f64>,
    /// When the server stops; no retry is sent from then on.
    end_ns: u64,
    stop_ns: u64,
}

impl ClientPlan {
    fn new(scenario: &Scenario, schedule: &[Arrival], stop_ns: u64) -> ClientPlan {
        let timeout_ns = scenario.client.timeout_ms.map(|t| (t.0 * 1e6) as u64);
        // On the wire, 0 means no deadline.
        let deadline_ns = scenario.useful_within_ns().into_iter().map(|d| d.unwrap_or(0)).collect();
        ClientPlan {
            arrivals: schedule.to_vec(),
            deadline_ns,
            timeout_ns,
            max_attempts: scenario.client.max_attempts,
            backoff_ns: (scenario.client.backoff_ms.0 * 1e6) as u64,
            retry_budget: scenario.client.retry_budget.map(|b| b.0),
            end_ns: (scenario.duration_s.0 * 1e9) as u64,
            stop_ns,
        }
    }
}

struct Pending {
    arrival: Arrival,
    /// The latest attempt sent.
    attempt: u32,
    /// Whether that attempt still awaits an answer.
    waiting: bool,
    done: bool,
}

/// Connects and starts a reader that forwards decoded responses to `tx`.
async fn connect(tx: &mpsc::UnboundedSender<Response>) -> Option<turmoil::net::tcp::OwnedWriteHalf> {
    let stream = turmoil::net::TcpStream::connect(("server", PORT)).await.ok()?;
    let (mut rd, wr) = stream.into_split();
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; RESPONSE_LEN];
        while rd.read_exact(&mut buf).await.is_ok() {
            match Response::decode(&buf) {
                Ok(r) if tx.send(r).is_ok() => {}
                // A malformed frame or a finished client: stop reading this connection.
                _ => break,
            }
        }
    });
    Some(wr)
}

async fn client_main(plan: ClientPlan, stats: Arc<Mutex<Vec<ClientClass>>>) -> turmoil::Result {
    let t0 = Instant::now() - turmoil::sim_elapsed().unwrap_or_default();
    let (tx, mut responses) = mpsc::unbounded_channel::<Response>();
    // The server binds on its first poll: retry until it listens.
    let mut wr = loop {
        if let Some(w) = connect(&tx).await {
            break Some(w);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    // Classes of the frames in `out`, to count the ones that cannot be written.
    let mut out_classes: Vec<u8> = Vec::new();

    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut timeouts: BinaryHeap<Reverse<(u64, u64, u32)>> = BinaryHeap::new();
    let mut retries: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut tokens = 0.0f64;
    let mut next = 0;
    let mut out = Vec::with_capacity(64 * REQUEST_LEN);
    loop {
        let now = turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64;
        if now >= plan.stop_ns {
            break;
        }
        {
            let mut stats = stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Fresh arrivals due now.
            while let Some(a) = plan.arrivals.get(next).filter(|a| a.at_ns <= now) {
                next += 1;
                stats[a.class as usize].fresh += 1;
                tokens = (tokens + plan.retry_budget.unwrap_or(0.0)).min(100.0);
                pending.insert(a.id, Pending { arrival: *a, attempt: 1, waiting: true, done: false });
                send(&mut out, &plan, a, 1, a.at_ns, &mut timeouts);
                out_classes.push(a.class);
            }
            // Retries due now.
            while let Some(&Reverse((at, id))) = retries.peek().filter(|r| r.0.0 <= now) {
                retries.pop();
                let p = pending.get_mut(&id).expect("pending");
                if at >= plan.end_ns {
                    // The server has stopped: the request ends unanswered rather than with an
                    // attempt that could still be on the wire when the simulation ends.
                    continue;
                }
                p.attempt += 1;
                p.waiting = true;
                stats[p.arrival.class as usize].retries += 1;
                send(&mut out, &plan, &p.arrival, p.attempt, at, &mut timeouts);
                out_classes.push(p.arrival.class);
            }
            // Timeouts due now.
            while let Some(&Reverse((at, id, attempt))) = timeouts.peek().filter(|t| t.0.0 <= now) {
                let _ = at;
                timeouts.pop();
                let p = pending.get_mut(&id).expect("pending");
                if p.done || !p.waiting || p.attempt != attempt {
                    continue;
                }
                stats[p.arrival.class as usize].timeouts += 1;
                retry_or_fail(p, &plan, now, &mut tokens, &mut retries, &mut stats);
            }
        }
        if !out.is_empty() {
            if wr.is_none() {
                wr = connect(&tx).await;
            }
            let written = match &mut wr {
                Some(w) => w.write_all(&out).await.is_ok(),
                None => false,
            };
            if !written {
                // The server is down (crashed): these attempts fail; timeouts will retry them.
                wr = None;
                let mut stats = stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for &class in &out_classes {
                    stats[class as usize].send_failed += 1;
                }
            }
            out.clear();
            out_classes.clear();
        }
        let wake = [
            plan.arrivals.get(next).map(|a| a.at_ns),
            timeouts.peek().map(|t| t.0.0),
            retries.peek().map(|r| r.0.0),
            Some(plan.stop_ns),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("stop is always there");
        tokio::select! {
            biased;
            Some(r) = responses.recv() => {
                let now = turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64;
                let (id, attempt) = (r.id >> 8, (r.id & 0xff) as u32);
                let mut stats = stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(p) = pending.get_mut(&id).filter(|p| !p.done && p.waiting && p.attempt == attempt) {
                    if r.outcome == Outcome::Handled {
                        p.done = true;
                        stats[p.arrival.class as usize].succeeded += 1;
                    } else {
                        retry_or_fail(p, &plan, now, &mut tokens, &mut retries, &mut stats);
                    }
                }
            }
            _ = tokio::time::sleep_until(t0 + Duration::from_nanos(wake)) => {}
        }
    }
    let mut stats = stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for p in pending.values().filter(|p| !p.done) {
        stats[p.arrival.class as usize].unanswered += 1;
    }
    Ok(())
}

fn send(
    out: &mut Vec<u8>,
    plan: &ClientPlan,
    a: &Arrival,
    attempt: u32,
    at_ns: u64,
    timeouts: &mut BinaryHeap<Reverse<(u64, u64, u32)>>,
) {
    let req = Request {
        id: a.id << 8 | u64::from(attempt.min(255)),
        class: a.class,
        arrival_ns: at_ns,
        service_ns: a.service_ns,
        deadline_ns: plan.deadline_ns[a.class as usize],
    };
    out.extend_from_slice(&req.encode());
    if let Some(t) = plan.timeout_ns {
        timeouts.push(Reverse((at_ns + t, a.id, attempt)));
    }
}

fn retry_or_fail(
    p: &mut Pending,
    plan: &ClientPlan,
    now: u64,
    tokens: &mut f64,
    retries: &mut BinaryHeap<Reverse<(u64, u64)>>,
    stats: &mut [ClientClass],
) {
    let class = p.arrival.class as usize;
    // The attempt is over either way: a late answer to it no longer matches.
    p.waiting = false;
    if p.attempt >= plan.max_attempts {
        p.done = true;
        stats[class].failed += 1;
        return;
    }
    if plan.retry_budget.is_some() {
        if *tokens < 1.0 {
            p.done = true;
            stats[class].budget_denied += 1;
            stats[class].failed += 1;
            return;
        }
        *tokens -= 1.0;
    }
    retries.push(Reverse((now + plan.backoff_ns, p.arrival.id)));
}
