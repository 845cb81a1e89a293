//! The server host: the TCP front end that puts each request into the system under test,
//! and what it records.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use veltrix_engine::DeadLetterReason;

use crate::scenario::{Faults, Scenario, SystemDef};
use crate::wire::{Outcome, REQUEST_LEN, Request, Response, split_wire_id};

use super::custom::StartEngine;
use super::gate::{Gate, LOOKAHEAD_STEPS};
use super::system::{System, start_system};
use super::{Completion, DEPTH_EVERY_NS, MS, PORT, Refusal, SEC, ServerClass};

#[derive(Debug, Default)]
pub(super) struct Recorder {
    pub(super) classes: Vec<ServerClass>,
    pub(super) completions: Vec<Completion>,
    pub(super) depth: Vec<(u64, Vec<u64>)>,
    pub(super) ledger: Option<Vec<(u64, [u64; 7])>>,
}

/// A request inside the server, with where to answer it.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) req: Request,
    /// When it is exactly ready for service (ns): its arrival plus the base latency, or its
    /// reception if the network held it back (a partition).
    pub(super) ready_ns: u64,
    pub(super) reply: mpsc::UnboundedSender<Response>,
}

impl Job {
    pub(super) fn respond(&self, outcome: Outcome) {
        // The connection may be gone (client finished): the outcome is recorded regardless.
        let _ = self.reply.send(Response { id: self.req.id, outcome });
    }
}

#[derive(Debug)]
pub(super) struct ServerShared {
    pub(super) system: SystemDef,
    /// Veltrix gives each event its deadline (`deadlines = true`).
    pub(super) engine_deadlines: bool,
    pub(super) classes: usize,
    pub(super) class_names: Vec<String>,
    pub(super) workers: usize,
    /// Class deadline (ns) for goodput, combined with the client's timeout.
    pub(super) good_within_ns: Vec<u64>,
    pub(super) latency_ns: u64,
    pub(super) jitter_ns: u64,
    /// Capacity drops and service drift.
    pub(super) faults: Faults,
    pub(super) restarts: Vec<u64>,
    pub(super) end_ns: u64,
    pub(super) rec: Mutex<Recorder>,
    pub(super) free_at: Mutex<Vec<u64>>,
    /// The simulation's step (ns).
    pub(super) tick_ns: u64,
    /// How far decisions run behind the clock (see `gate`).
    pub(super) lookahead_ns: u64,
    pub(super) gate: Mutex<Gate>,
    /// Wakes the gate's pump: a request arrived, or a worker started or finished.
    pub(super) pump: tokio::sync::Notify,
    /// Set while the system stops: finished workers skip their next decision.
    stopping: std::sync::atomic::AtomicBool,
    stop: tokio::sync::Notify,
    /// The user's engine, for an experiment with their own handler (see `custom`).
    pub(super) custom: Option<Arc<dyn StartEngine>>,
    /// The system under test of the host's current incarnation.
    pub(super) under_test: Mutex<Option<System>>,
    /// Set while the host is being torn down by a crash: what the teardown reports is lost.
    pub(super) crashing: std::sync::atomic::AtomicBool,
    /// Any crash happened (the engine's ledger then dies with it and cannot be compared).
    pub(super) crashed_once: std::sync::atomic::AtomicBool,
}

impl ServerShared {
    pub(super) fn crash_begins(&self, now: u64) {
        self.crashing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.crashed_once.store(true, std::sync::atomic::Ordering::SeqCst);
        // Work in progress dies with the host: the workers are free when it comes back.
        self.free_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter_mut().for_each(|f| *f = now);
        // What the gate held had arrived (its decisions run behind the clock): the crash takes
        // it with the rest of what was inside (`crash_ends` counts it). The system goes with the
        // host (its destructors report nothing: crashing).
        let held = self.gate().crash(self.workers);
        {
            let mut rec = self.rec();
            for job in held {
                let c = &mut rec.classes[job.req.class as usize];
                c.received += 1;
                c.accepted += 1;
                c.in_system += 1;
            }
        }
        drop(self.under_test().take());
    }

    pub(super) fn crash_ends(&self) {
        let mut rec = self.rec();
        for c in rec.classes.iter_mut() {
            c.crashed += c.in_system;
            c.in_system = 0;
        }
        drop(rec);
        self.crashing.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn is_crashing(&self) -> bool {
        self.crashing.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn new(scenario: &Scenario, system: &SystemDef, classes: usize) -> ServerShared {
        let good_within_ns = scenario.useful_within_ns().into_iter().map(|d| d.unwrap_or(u64::MAX)).collect();
        let ns = |s: f64| (s * 1e9) as u64;
        ServerShared {
            engine_deadlines: matches!(
                system,
                SystemDef::Veltrix { deadlines: true, .. } | SystemDef::Custom { deadlines: true, .. }
            ),
            system: system.clone(),
            classes,
            class_names: scenario.class_names(),
            workers: scenario.workers as usize,
            good_within_ns,
            latency_ns: (scenario.faults.latency_ms.0 * 1e6) as u64,
            jitter_ns: (scenario.faults.jitter_ms.0 * 1e6) as u64,
            faults: scenario.faults.clone(),
            restarts: scenario.faults.restart.iter().map(|r| ns(r.at_s.0)).collect(),
            end_ns: ns(scenario.duration_s.0),
            rec: Mutex::new(Recorder { classes: vec![ServerClass::default(); classes], ..Recorder::default() }),
            free_at: Mutex::new(vec![0; scenario.workers as usize]),
            tick_ns: u64::from(scenario.tick_ms) * MS,
            lookahead_ns: (scenario.faults.jitter_ms.0 * 1e6) as u64
                + LOOKAHEAD_STEPS * u64::from(scenario.tick_ms) * MS,
            gate: Mutex::new(Gate::new(scenario.workers as usize)),
            pump: tokio::sync::Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
            under_test: Mutex::new(None),
            custom: None,
            crashing: std::sync::atomic::AtomicBool::new(false),
            crashed_once: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(super) fn rec(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.rec.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn under_test(&self) -> std::sync::MutexGuard<'_, Option<System>> {
        self.under_test.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `system` the one under test, with every worker idle and nothing queued.
    pub(super) fn install(&self, system: System) {
        self.gate().restart(self.workers);
        // Its workers are free now (the old system's cancelled work does not occupy them).
        let now = now_ns();
        self.free_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter_mut().for_each(|f| *f = now);
        *self.under_test() = Some(system);
        self.stopping.store(false, std::sync::atomic::Ordering::SeqCst);
        self.pump.notify_one();
    }

    /// The system is stopping: workers waiting for their next decision return at once.
    pub(super) fn stopping(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    /// A request came in: it waits in the gate for its decision.
    fn receive(&self, req: Request, now: u64, reply: &mpsc::UnboundedSender<Response>) {
        // Without network trouble a request is ready at its exact arrival (+ base latency); one
        // held back by a partition is ready when the front end got it.
        let normal = req.arrival_ns + self.latency_ns;
        let ready_ns = if now > normal + self.jitter_ns + 2 * self.tick_ns { now } else { normal };
        let job = Job { req, ready_ns, reply: reply.clone() };
        if self.custom.is_some() {
            // A user's handler runs on the clock's steps: no exact decisions to keep (see
            // `custom`); the request goes straight in.
            self.offer(vec![job], Instant::now() - Duration::from_nanos(now));
            return;
        }
        if self.under_test().is_none() {
            // Stopped (restarting, or the run is over): refused at once.
            self.rec().classes[req.class as usize].received += 1;
            self.refuse(job);
            return;
        }
        self.gate().hold(job);
        self.pump.notify_one();
    }

    /// Hands released requests to the system (or refuses them if it is down).
    fn offer(&self, jobs: Vec<Job>, t0: Instant) {
        for job in jobs {
            let class = job.req.class as usize;
            self.rec().classes[class].received += 1;
            let system = self.under_test();
            match &*system {
                Some(s) => s.offer(self, job, t0),
                None => {
                    drop(system);
                    self.refuse(job);
                }
            }
        }
    }

    /// Answers a request the stopped system cannot take.
    fn refuse(&self, job: Job) {
        self.rejected(job.req.class as usize, Refusal::Closed);
        job.respond(Outcome::RejectedClosed);
    }

    /// Takes the decisions of idle workers due before `before` (and whose requests must all
    /// have arrived by `now`), one at a time: the earliest held request (with its ties) is
    /// released, and the next only once a worker has taken it.
    async fn idle_decisions(&self, before: u64, now: u64, t0: Instant) {
        loop {
            if self.is_stopping() {
                return;
            }
            let jobs = {
                let mut gate = self.gate();
                match gate.idle_decision() {
                    Some(ready) if ready < before && ready + self.lookahead_ns <= now => gate.release_through(ready),
                    _ => return,
                }
            };
            self.offer(jobs, t0);
            self.idle_workers_take().await;
        }
    }

    /// Lets idle workers (on this thread) take what was released for them. A refused request
    /// leaves nothing queued, so nothing to wait for.
    async fn idle_workers_take(&self) {
        self.yield_while(|gate| gate.queued > 0 && gate.idle > 0).await;
    }

    /// Yields to the other tasks while `busy` holds and the system is not stopping, a bounded
    /// number of times (a stuck state costs exactness, never progress).
    async fn yield_while(&self, busy: impl Fn(&Gate) -> bool) {
        for _ in 0..1024 {
            if self.is_stopping() || !busy(&self.gate()) {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// A worker's decision at `at` (registered as `key`): earlier decisions of other workers
    /// first, then idle workers take what is ready before `at`, then everything ready by `at`
    /// joins the queue it chooses from.
    async fn decide_at(&self, at: u64, key: (u64, u64), t0: Instant) {
        self.yield_while(|gate| !gate.decides_next(key)).await;
        let now = now_ns();
        self.idle_decisions(at, now, t0).await;
        self.idle_workers_take().await;
        if self.is_stopping() {
            return;
        }
        let jobs = self.gate().release_through(at);
        self.offer(jobs, t0);
    }

    /// Releases everything ready by `now` into the system (before it stops: what arrived goes
    /// down with it).
    pub(super) fn flush(&self, t0: Instant) {
        let jobs = self.gate().release_through(now_ns());
        self.offer(jobs, t0);
    }

    pub(super) fn capacity_factor(&self, at_ns: u64) -> f64 {
        self.faults.capacity_factor(at_ns as f64 / 1e9)
    }

    /// Works on a job: exact start and end on the worker that frees first, sleep until the end,
    /// answer, then take the worker's next decision (see `gate`).
    pub(super) async fn serve(&self, job: &Job, t0: Instant) {
        {
            let mut gate = self.gate();
            gate.idle = gate.idle.saturating_sub(1);
            gate.queued = gate.queued.saturating_sub(1);
        }
        self.pump.notify_one();
        let req = job.req;
        let ready = job.ready_ns;
        let (start, done) = {
            let mut free = self.free_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let slot = (0..free.len()).min_by_key(|&i| (free[i], i)).expect("at least one worker");
            let start = ready.max(free[slot]);
            let done = start + (req.service_ns as f64 / self.capacity_factor(start)) as u64;
            free[slot] = done;
            (start, done)
        };
        let key = self.gate().will_decide(done);
        tokio::time::sleep_until(t0 + Duration::from_nanos(done)).await;
        self.handled(job, start, done);
        self.gate().finishing += 1;
        // The next decision is at `done`, once every request ready by then has surely arrived —
        // unless the system stops meanwhile: then the job is over and no decision follows.
        let stop = self.stop.notified();
        if !self.is_stopping() {
            tokio::select! {
                biased;
                _ = stop => {}
                _ = tokio::time::sleep_until(t0 + Duration::from_nanos(done + self.lookahead_ns)) => {
                    self.decide_at(done, key, t0).await;
                }
            }
        }
        {
            let mut gate = self.gate();
            gate.decided(key);
            gate.finishing = gate.finishing.saturating_sub(1);
            gate.idle += 1;
        }
        self.pump.notify_one();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The system stops: waits until every worker that finished its job has returned, so the
    /// stop does not take one for work in progress and count its event twice.
    pub(super) async fn finished_workers_returned(&self) {
        for _ in 0..1024 {
            if self.gate().finishing == 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// `job` was handled, its service from `start` to `done`: recorded and answered.
    pub(super) fn handled(&self, job: &Job, start: u64, done: u64) {
        let req = job.req;
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
                retry: split_wire_id(req.id).1 > 1,
                request: split_wire_id(req.id).0,
            });
        }
        job.respond(Outcome::Handled);
    }

    /// The simulated clock (ns since the start).
    pub(super) fn now_ns(&self) -> u64 {
        now_ns()
    }

    pub(super) fn dead_letter(&self, job: &Job, reason: DeadLetterReason) {
        if self.is_crashing() {
            // Destructors running as the crashed host's runtime is dropped: a real crash runs
            // none, so the event is lost, not dead-lettered (`crash_ends` counts it).
            return;
        }
        let i = DeadLetterReason::ALL.iter().position(|r| *r == reason).expect("a known reason");
        {
            let mut gate = self.gate();
            gate.queued = gate.queued.saturating_sub(1);
        }
        self.pump.notify_one();
        {
            let mut rec = self.rec();
            let c = &mut rec.classes[job.req.class as usize];
            c.dead[i] += 1;
            c.in_system -= 1;
        }
        job.respond(Outcome::DeadLettered(i as u8));
    }
}

impl ServerShared {
    pub(super) fn accepted(&self, class: usize) {
        let mut rec = self.rec();
        let c = &mut rec.classes[class];
        c.accepted += 1;
        c.in_system += 1;
        c.peak_in_system = c.peak_in_system.max(c.in_system);
        drop(rec);
        self.gate().queued += 1;
    }

    pub(super) fn rejected(&self, class: usize, why: Refusal) {
        self.rec().classes[class].rejected.count(why);
    }

    pub(super) fn tail_dropped(&self, class: usize) {
        let mut rec = self.rec();
        let c = &mut rec.classes[class];
        c.tail_dropped += 1;
        c.accepted -= 1;
        c.in_system -= 1;
        drop(rec);
        let mut gate = self.gate();
        gate.queued = gate.queued.saturating_sub(1);
    }
}

fn now_ns() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64
}

/// The gate's pump for idle workers: when one waits and the earliest held request's decision
/// is due, release it (see `gate`). Busy workers take their own decisions as they finish.
async fn pump(server: Arc<ServerShared>, t0: Instant) {
    loop {
        let now = now_ns();
        let due = server.gate().idle_decision().map(|ready| ready + server.lookahead_ns);
        match due {
            Some(at) if at <= now => server.idle_decisions(u64::MAX, now, t0).await,
            Some(at) => {
                tokio::select! {
                    biased;
                    _ = server.pump.notified() => {}
                    _ = tokio::time::sleep_until(t0 + Duration::from_nanos(at)) => {}
                }
            }
            None => server.pump.notified().await,
        }
    }
}

pub(super) async fn server_main(server: Arc<ServerShared>) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let t0 = Instant::now() - turmoil::sim_elapsed().unwrap_or_default();
    server.install(start_system(&server, t0));
    tokio::spawn(pump(server.clone(), t0));

    // Lifecycle: restarts, the final stop, and depth samples.
    {
        let server = server.clone();
        tokio::spawn(async move {
            let mut restarts = server.restarts.clone();
            restarts.sort_unstable();
            // After a crash the host starts again mid-run: only restarts still to come, and
            // samples from now on.
            let now = now_ns();
            let mut restarts = restarts.into_iter().filter(|&r| r >= now && r < server.end_ns).peekable();
            let mut next_sample = now.div_ceil(DEPTH_EVERY_NS) * DEPTH_EVERY_NS;
            loop {
                let next_restart = restarts.peek().copied().unwrap_or(u64::MAX);
                let wake = next_sample.min(next_restart).min(server.end_ns);
                tokio::time::sleep_until(t0 + Duration::from_nanos(wake)).await;
                if wake == next_sample {
                    let depth = server.under_test().as_ref().map(System::depth);
                    if let Some(d) = depth {
                        server.rec().depth.push((wake, d));
                    }
                    next_sample += DEPTH_EVERY_NS;
                }
                if wake == next_restart || wake >= server.end_ns {
                    // What arrived before the stop goes down with the system.
                    server.flush(t0);
                    let old = server.under_test().take();
                    if let Some(old) = old {
                        old.stop(&server).await;
                    }
                }
                if wake >= server.end_ns {
                    break;
                }
                if wake == next_restart {
                    restarts.next();
                    server.install(start_system(&server, t0));
                }
            }
        });
    }

    loop {
        let (stream, _) = listener.accept().await?;
        let server = server.clone();
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
                let now = now_ns();
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
                server.receive(req, now, &reply);
            }
        });
    }
}
