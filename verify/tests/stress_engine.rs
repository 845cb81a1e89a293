//! Concurrent stress of the engine through its public API: submitters as tasks on a
//! multi-thread runtime (`submit`, `try_submit`, submits cancelled by a timeout) and as OS
//! threads (`submit_blocking`), random classes, policies, workers, keyed lanes, retries and
//! batches, handlers that are fast, slow, flaky, failing or panicking, a dead-letter sink that
//! is sometimes slow and sometimes panics, random deadlines — and each round ends one of three
//! ways: a patient shutdown after the submitters finish, a shutdown with a short drain while
//! they still submit, or the workers' runtime dropped first and shutdown called from another.
//!
//! Each round is seeded (xoshiro256**) and prints its seed and the command that reproduces it.
//! After each round: every event ends exactly once — handled, dead-lettered with a reason,
//! handed back, or cancelled by its submitter — and the ledger, the sink and the handler agree
//! with what the test saw; nothing is left queued or in flight; `drained` is true exactly when
//! the workers finished everything; no handler attempt starts after its event's deadline;
//! where one worker serves a lane, each submitter's events of a class start in the order
//! submitted. A watchdog turns a hang into a failure naming the seed.
//!
//! Budget: `VELTRIX_STRESS_SECS` seconds (default 8); one round: `VELTRIX_STRESS_SEED=<seed>`.
#![cfg(not(veltrix_loom))]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veltrix_engine::runtime::{
    Engine, Handler, HandlerContext, Outcome, RetryPolicy, RouteSpec, Routed, ShutdownReport, Submission,
};
use veltrix_engine::{ClassId, Config, DeadLetter, DeadLetterReason, Instant, SubmitError};
use veltrix_sim::rng::Xoshiro256;
use veltrix_verify::stress::{GRACE, random_classes, run_rounds};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Handled,
    Dead(DeadLetterReason),
    Returned,
    Cancelled,
}

#[derive(Default)]
struct Seen {
    ends: BTreeMap<u64, Vec<End>>,
    /// Submits started and not yet answered (a task dropped with its runtime leaves them here).
    pending: BTreeMap<u64, ClassId>,
    /// First attempts in start order: (event, class).
    first_attempts: Vec<(u64, ClassId)>,
    /// Attempts the handler saw start after the deadline: (event, how late).
    late: Vec<(u64, Duration)>,
    sink_calls: u64,
    /// Events whose submit began (a task dropped with its runtime never starts the rest).
    started: u64,
}

impl Seen {
    fn end(&mut self, id: u64, end: End) {
        self.ends.entry(id).or_default().push(end);
    }

    fn start(&mut self, id: u64, class: ClassId) {
        self.started += 1;
        self.pending.insert(id, class);
    }
}

type Shared = Arc<Mutex<Seen>>;

fn pick(rng: &mut Xoshiro256, n: u64) -> u64 {
    rng.next_u64() % n
}

/// What the handler does with an event: decided by the event's id, the same for every attempt.
fn behaviour(id: u64) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59 // 0..32
}

#[derive(Clone)]
struct StressHandler {
    seen: Shared,
}

impl Handler<u64> for StressHandler {
    fn handle(&self, id: &u64, cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let (id, seen) = (*id, self.seen.clone());
        let now = Instant::now();
        {
            let mut s = seen.lock().unwrap();
            if cx.attempt == 1 {
                s.first_attempts.push((id, cx.class));
            }
            if let Some(deadline) = cx.deadline.filter(|d| now >= *d) {
                s.late.push((id, now - deadline));
            }
        }
        let b = behaviour(id);
        async move {
            let outcome = match b {
                0 => panic!("stress: handler panics on event {id:#x}"),
                1 => Outcome::Fatal,
                2 | 3 if cx.attempt == 1 => Outcome::Retry,
                4..=6 => {
                    tokio::time::sleep(Duration::from_micros(50 + id % 400)).await;
                    Outcome::Ok
                }
                7 => {
                    tokio::task::yield_now().await;
                    Outcome::Ok
                }
                _ => Outcome::Ok,
            };
            if outcome == Outcome::Ok {
                // Same poll as the return: the engine counts it handled.
                seen.lock().unwrap().end(id, End::Handled);
            }
            outcome
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Submitters finish, then a patient shutdown.
    Patient,
    /// Shutdown with a short drain while the submitters still submit.
    Hasty(Duration),
    /// The workers' runtime is dropped mid-run; shutdown from another runtime.
    RuntimeDropped(Duration),
}

struct Round {
    seed: u64,
    classes: Config,
    spec: RouteSpec,
    tasks: u64,
    threads: u64,
    per_submitter: u64,
    sink_panics_every: Option<u64>,
    slow_sink: bool,
    ending: Ending,
}

impl Round {
    fn new(seed: u64) -> Round {
        let mut rng = Xoshiro256::seed(seed);
        let classes = random_classes(&mut |n| pick(&mut rng, n), 3, 3);
        let mut spec = RouteSpec::new(classes.clone())
            .workers(1 + pick(&mut rng, 3) as usize)
            .max_batch(1 + pick(&mut rng, 8) as usize)
            .retry(RetryPolicy::new(
                1 + pick(&mut rng, 3) as u32,
                Duration::from_micros(pick(&mut rng, 300)),
                Duration::from_millis(1),
            ));
        if pick(&mut rng, 2) == 0 {
            spec = spec.keyed();
        }
        let ending = match pick(&mut rng, 4) {
            0 => Ending::Hasty(Duration::from_micros(pick(&mut rng, 3_000))),
            1 => Ending::RuntimeDropped(Duration::from_micros(500 + pick(&mut rng, 5_000))),
            _ => Ending::Patient,
        };
        Round {
            seed,
            classes,
            spec,
            tasks: 1 + pick(&mut rng, 6),
            threads: pick(&mut rng, 3),
            per_submitter: 100 + pick(&mut rng, 1_500),
            sink_panics_every: (pick(&mut rng, 3) == 0).then(|| 1 + pick(&mut rng, 5)),
            slow_sink: pick(&mut rng, 4) == 0,
            ending,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} tasks + {} threads × {}, {} classes, {} workers{}, max_batch {}, sink panics every {:?}, slow sink {}, {:?}",
            self.tasks,
            self.threads,
            self.per_submitter,
            self.classes.len(),
            self.spec.workers,
            if self.spec.keyed { " keyed" } else { "" },
            self.spec.max_batch,
            self.sink_panics_every,
            self.slow_sink,
            self.ending
        )
    }
}

fn id(submitter: u64, seq: u64) -> u64 {
    submitter << 32 | seq
}

/// What a submit's answer means for the event.
fn answered(seen: &Shared, ev: u64, result: Result<(), SubmitError<u64>>) {
    let mut s = seen.lock().unwrap();
    s.pending.remove(&ev);
    if let Err(e) = result {
        let back = match e {
            SubmitError::Full(e) | SubmitError::Closed(e) | SubmitError::Rejected(e) => e,
            other => panic!("unexpected submit error {other:?}"),
        };
        assert_eq!(back, ev, "the refused event comes back");
        s.end(ev, End::Returned);
    }
}

async fn submit_task(engine: Arc<Engine<u64>>, p: u64, n: u64, classes: usize, seed: u64, seen: Shared) {
    let mut rng = Xoshiro256::seed(seed ^ (p + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let route = engine.route_id("r").expect("registered");
    for seq in 0..n {
        let ev = id(p, seq);
        let class = ClassId::new(pick(&mut rng, classes as u64) as usize);
        let mut s = Submission::to(route, class, ev).key(p);
        if pick(&mut rng, 3) == 0 {
            s = s.deadline(Instant::now() + Duration::from_micros(pick(&mut rng, 3_000)));
        }
        seen.lock().unwrap().start(ev, class);
        match pick(&mut rng, 8) {
            0..=2 => answered(&seen, ev, engine.try_submit(s)),
            3..=6 => answered(&seen, ev, engine.submit(s).await),
            _ => match tokio::time::timeout(Duration::from_micros(pick(&mut rng, 100)), engine.submit(s)).await {
                Ok(result) => answered(&seen, ev, result),
                Err(_) => {
                    // Dropped while waiting for room: the ledger counts it cancelled.
                    let mut s = seen.lock().unwrap();
                    s.pending.remove(&ev);
                    s.end(ev, End::Cancelled);
                }
            },
        }
        if pick(&mut rng, 32) == 0 {
            tokio::task::yield_now().await;
        }
    }
}

fn submit_thread(engine: Arc<Engine<u64>>, p: u64, n: u64, classes: usize, seen: Shared) {
    let route = engine.route_id("r").expect("registered");
    for seq in 0..n {
        let ev = id(p, seq);
        let class = ClassId::new((seq % classes as u64) as usize);
        seen.lock().unwrap().start(ev, class);
        answered(&seen, ev, engine.submit_blocking(Submission::to(route, class, ev).key(p)));
    }
}

fn run_round(round: &Round) {
    let seen: Shared = Arc::default();
    let sink_seen = seen.clone();
    let (panics_every, slow_sink) = (round.sink_panics_every, round.slow_sink);
    let sink = move |d: DeadLetter<Routed<u64>>| {
        let call = {
            let mut s = sink_seen.lock().unwrap();
            s.end(d.event.event, End::Dead(d.reason));
            s.sink_calls += 1;
            s.sink_calls
        };
        if slow_sink && call % 7 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        if panics_every.is_some_and(|n| call % n == 0) {
            panic!("stress: the sink panics on call {call}");
        }
    };
    let classes = round.classes.len();
    let a = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let engine = a.block_on(async {
        Engine::builder()
            .route("r", round.spec.clone(), StressHandler { seen: seen.clone() })
            .dead_letter_sink(sink)
            .build()
            .map(Arc::new)
            .unwrap()
    });
    let tasks: Vec<_> = (0..round.tasks)
        .map(|p| {
            let (engine, seen) = (engine.clone(), seen.clone());
            a.spawn(submit_task(engine, p, round.per_submitter, classes, round.seed, seen))
        })
        .collect();
    let threads: Vec<_> = (0..round.threads)
        .map(|t| {
            let (engine, seen) = (engine.clone(), seen.clone());
            let (p, n) = (round.tasks + t, round.per_submitter);
            std::thread::spawn(move || submit_thread(engine, p, n, classes, seen))
        })
        .collect();
    let report: ShutdownReport = match round.ending {
        Ending::Patient | Ending::Hasty(_) => a.block_on(async {
            if let Ending::Hasty(drain) = round.ending {
                tokio::time::sleep(Duration::from_micros(300)).await;
                let report = engine.shutdown(drain).await;
                for t in tasks {
                    t.await.unwrap();
                }
                report
            } else {
                for t in tasks {
                    t.await.unwrap();
                }
                while threads.iter().any(|t| !t.is_finished()) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                engine.shutdown(Duration::from_secs(30)).await
            }
        }),
        Ending::RuntimeDropped(after) => {
            std::thread::sleep(after);
            drop(a);
            let b = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let report = b.block_on(engine.shutdown(Duration::from_millis(50)));
            assert!(!report.drained, "the workers were lost: {report:?}");
            assert_eq!(report.stats.workers_lost, round.spec.workers, "every worker lost");
            report
        }
    };
    for t in threads {
        t.join().unwrap();
    }
    let after = engine.stats();
    drop(engine);
    check(round, &seen, &report, &after);
}

fn check(round: &Round, seen: &Shared, report: &ShutdownReport, after: &veltrix_engine::runtime::EngineStats) {
    let mut seen = seen.lock().unwrap();
    // Submits dropped with their runtime while waiting for room: cancelled, in the ledger too.
    for (ev, _) in std::mem::take(&mut seen.pending) {
        seen.end(ev, End::Cancelled);
    }
    let total = seen.started;
    if !matches!(round.ending, Ending::RuntimeDropped(_)) {
        assert_eq!(total, round.per_submitter * (round.tasks + round.threads), "every event was submitted");
    }
    assert_eq!(seen.ends.len() as u64, total, "every event submitted has an end");
    for (ev, ends) in &seen.ends {
        assert_eq!(ends.len(), 1, "event {ev:#x} ended {ends:?}");
    }
    let t = after.total();
    // `after` is read once every submitter is done (late submits are handed back as closed).
    assert_eq!(after.workers_lost, report.stats.workers_lost, "no worker lost after shutdown");
    assert!(t.conserved(), "ledger not conserved: {t:?}");
    assert_eq!((t.queued, t.in_flight()), (0, 0), "left queued or in flight: {t:?}");
    let count = |end: End| seen.ends.values().filter(|e| e[0] == end).count() as u64;
    assert_eq!(t.handled, count(End::Handled), "handled: ledger vs handler");
    for r in DeadLetterReason::ALL {
        assert_eq!(t.dead(r), count(End::Dead(r)), "{r}: ledger vs sink");
    }
    assert_eq!(t.rejected(), count(End::Returned), "handed back: ledger vs submitters");
    assert_eq!(t.cancelled, count(End::Cancelled), "cancelled: ledger vs submitters");
    assert_eq!(t.offered, total, "offered: every event, once");
    assert_eq!(after.sink_panics, round.sink_panics_every.map_or(0, |n| seen.sink_calls / n), "sink panics counted");
    let lost = matches!(round.ending, Ending::RuntimeDropped(_));
    let finished_everything = !lost && t.dead(DeadLetterReason::Shutdown) == 0;
    assert_eq!(report.drained, finished_everything, "drained: {report:?}");
    let too_late: Vec<_> = seen.late.iter().filter(|(_, by)| *by > GRACE).collect();
    assert!(too_late.is_empty(), "attempts started after the deadline: {too_late:?}");
    // One worker per lane (a single worker, or keyed lanes keyed by submitter): each
    // submitter's events of a class start in submission order.
    if round.spec.workers == 1 || round.spec.keyed {
        let mut last: BTreeMap<(u64, ClassId), u64> = BTreeMap::new();
        for (ev, class) in &seen.first_attempts {
            let (p, seq) = (ev >> 32, ev & 0xFFFF_FFFF);
            if let Some(prev) = last.insert((p, *class), seq) {
                assert!(prev < seq, "submitter {p} class {class:?}: {seq} started after {prev}");
            }
        }
    }
}

#[test]
fn random_engine_rounds_lose_nothing_and_keep_every_promise() {
    run_rounds("engine stress", |seed| {
        let round = Round::new(seed);
        eprintln!(
            "engine stress: seed {seed} ({}); reproduce: VELTRIX_STRESS_SEED={seed} cargo test -p veltrix-verify --test stress_engine",
            round.describe()
        );
        run_round(&round);
    });
}
