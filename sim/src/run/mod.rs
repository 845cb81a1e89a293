//! One system under one scenario, on turmoil: a client host offers the drawn schedule over TCP,
//! with timeouts and retries; a server host puts each request into the system under test (the
//! real Veltrix engine, or a naive FIFO queue behind the same front end) and a service model
//! works through them on the simulated clock.
//!
//! Time: turmoil steps in whole milliseconds (`tick_ms`, default 1) and tokio's timers have 1 ms
//! resolution, so the service model keeps exact (nanosecond) time itself: each worker has a
//! virtual `free_at`, a job starts at `max(ready, free_at)` and ends its service time later, and
//! the task sleeps until that instant rounded up to a step. The order is exact too: the `gate`
//! hands requests to the system so that each choice of the next event is made among exactly the
//! events the continuous-time system would hold at that instant. Results therefore do not depend
//! on the step (`tests/fidelity.rs` runs one scenario at two steps and compares every
//! completion), and service times well below a step are simulated faithfully.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::scenario::{Scenario, SystemDef};
use crate::workload::Arrival;

mod client;
mod custom;
pub use custom::EventSpec;
mod gate;
mod server;
mod system;

use client::{ClientPlan, client_main};
use server::{ServerShared, server_main};

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
    /// Refused, by why.
    pub rejected: Refused,
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

/// Why the front end refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The class was full (backpressure: the front end never waits).
    Full,
    /// The class's overload policy rejected it.
    Policy,
    /// The system was shut down, restarting or crashed.
    Closed,
}

/// Refused requests of one class, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    /// [`Refusal::Full`].
    pub full: u64,
    /// [`Refusal::Policy`].
    pub policy: u64,
    /// [`Refusal::Closed`].
    pub closed: u64,
}

impl Refused {
    fn count(&mut self, why: Refusal) {
        match why {
            Refusal::Full => self.full += 1,
            Refusal::Policy => self.policy += 1,
            Refusal::Closed => self.closed += 1,
        }
    }

    /// Every refusal.
    pub fn total(&self) -> u64 {
        self.full + self.policy + self.closed
    }

    /// The counts under the names the report uses.
    pub fn by_name(&self) -> [(&'static str, u64); 3] {
        [("full", self.full), ("policy", self.policy), ("closed", self.closed)]
    }
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
    run_with(scenario, system, schedule, seed, None, &mut |_, _| {})
}

/// [`run_system`], telling `progress` the simulated seconds so far and in all, at the start and
/// then about once per simulated second.
///
/// # Errors
///
/// A message if the simulation itself fails (a host errored).
pub fn run_system_reporting(
    scenario: &Scenario,
    system: &SystemDef,
    schedule: &[Arrival],
    seed: u64,
    progress: &mut dyn FnMut(f64, f64),
) -> Result<SystemRun, String> {
    run_with(scenario, system, schedule, seed, None, progress)
}

/// Runs the user's engine (their `Config`, `handler`, events made by `make`) as the system
/// `name` of `scenario`, on its drawn `schedule`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_custom<E, H, F>(
    scenario: &Scenario,
    schedule: &[Arrival],
    seed: u64,
    name: &str,
    config: veltrix_engine::Config,
    handler: Arc<H>,
    make: Arc<F>,
    retry: veltrix_engine::runtime::RetryPolicy,
    deadlines: bool,
) -> Result<SystemRun, String>
where
    E: Send + Sync + 'static,
    H: veltrix_engine::runtime::Handler<E>,
    F: Fn(EventSpec) -> E + Send + Sync + 'static,
{
    let system = SystemDef::Custom { name: toml::Spanned::new(0..0, name.to_string()), deadlines };
    let workers = scenario.workers as usize;
    let engine = custom::Custom { config, handler, make, retry, workers, event: std::marker::PhantomData };
    run_with(scenario, &system, schedule, seed, Some(Arc::new(engine)), &mut |_, _| {})
}

fn run_with(
    scenario: &Scenario,
    system: &SystemDef,
    schedule: &[Arrival],
    seed: u64,
    custom: Option<Arc<dyn custom::StartEngine>>,
    progress: &mut dyn FnMut(f64, f64),
) -> Result<SystemRun, String> {
    let classes = scenario.classes.get_ref().len();
    let latency = Duration::from_nanos((scenario.faults.latency_ms.0 * 1e6) as u64);
    let jitter = Duration::from_nanos((scenario.faults.jitter_ms.0 * 1e6) as u64);
    let end_ns = (scenario.duration_s.0 * 1e9) as u64;
    let tick_ns = u64::from(scenario.tick_ms) * MS;
    // Answers still on their way at the end, and the decisions behind the clock (see `gate`).
    let grace_ns = 2 * (latency + jitter).as_nanos() as u64 + 50 * MS + (gate::LOOKAHEAD_STEPS + 2) * tick_ns;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_nanos(end_ns + grace_ns + SEC))
        .tick_duration(Duration::from_nanos(tick_ns))
        .epoch(epoch())
        .min_message_latency(latency)
        .max_message_latency(latency + jitter)
        .tcp_capacity(1 << 20)
        .rng_seed(seed)
        .build();

    let mut server = ServerShared::new(scenario, system, classes);
    server.custom = custom;
    let server = Arc::new(server);
    let client = Arc::new(Mutex::new(vec![ClientClass::default(); classes]));
    {
        let server = server.clone();
        sim.host("server", move || server_main(server.clone()));
    }
    let plan = ClientPlan::new(scenario, schedule, end_ns + grace_ns);
    sim.client("client", client_main(plan, client.clone()));

    let mut faults = FaultScript::new(scenario);
    let total_s = (end_ns + grace_ns) as f64 / 1e9;
    let mut next_report = 0.0;
    loop {
        let simulated_s = sim.elapsed().as_secs_f64();
        if simulated_s >= next_report {
            progress(simulated_s.min(total_s), total_s);
            next_report = simulated_s.floor() + 1.0;
        }
        faults.apply_due(&mut sim, &server);
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
            SystemDef::Custom { .. } => "custom",
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

/// The scenario's partitions and crashes, as the driver applies them between steps.
struct FaultScript {
    /// `(when, crash = true / come back = false)`, in time order.
    crashes: std::iter::Peekable<std::vec::IntoIter<(u64, bool)>>,
    /// `(when, hold = true / release = false)`, in time order.
    holds: std::iter::Peekable<std::vec::IntoIter<(u64, bool)>>,
    down: bool,
}

impl FaultScript {
    fn new(scenario: &Scenario) -> FaultScript {
        let ns = |s: f64| (s * 1e9) as u64;
        let f = &scenario.faults;
        let mut crashes: Vec<(u64, bool)> =
            f.crash.iter().flat_map(|c| [(ns(c.at_s.0), true), (ns(c.at_s.0 + c.down_s.0), false)]).collect();
        let mut holds: Vec<(u64, bool)> =
            f.partition.iter().flat_map(|w| [(ns(w.from_s.0), true), (ns(w.to_s.0), false)]).collect();
        crashes.sort();
        holds.sort();
        FaultScript { crashes: crashes.into_iter().peekable(), holds: holds.into_iter().peekable(), down: false }
    }

    /// Applies what is due by the simulation's current time: crashes and returns first, then
    /// partitions and their ends.
    fn apply_due(&mut self, sim: &mut turmoil::Sim<'_>, server: &ServerShared) {
        let now = sim.elapsed().as_nanos() as u64;
        while let Some((_, crash)) = self.crashes.next_if(|&(at, _)| at <= now) {
            if crash && !self.down {
                server.crash_begins(now);
                sim.crash("server");
                server.crash_ends();
                self.down = true;
            } else if !crash && self.down {
                sim.bounce("server");
                self.down = false;
            }
        }
        while let Some((_, hold)) = self.holds.next_if(|&(at, _)| at <= now) {
            if hold {
                sim.hold("client", "server");
            } else {
                sim.release("client", "server");
            }
        }
    }
}
