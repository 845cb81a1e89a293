//! The engine runtime: routes, retries, deadlines, panics, per-key order, shutdown, drop, stats,
//! and the bulkhead under a flood. Time is tokio's paused clock (virtual), never wall time.
#![cfg(not(veltrix_loom))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use veltrix_engine::runtime::{
    Engine, EngineBuildError, Handler, HandlerContext, Outcome, RetryPolicy, RouteSpec, Routed, Submission,
};
use veltrix_engine::{
    BuildError, ClassId, ClassSpec, Config, DeadLetter, DeadLetterReason, Instant, OverloadPolicy, SubmitError,
};
use veltrix_verify::scripted::{Behaviour, Scripted, ScriptedHandler};

const MS: Duration = Duration::from_millis(1);

fn ok(id: u64, work_ms: u64) -> Scripted {
    Scripted { id, behaviour: Behaviour::Ok { work: MS * work_ms as u32 } }
}

type Dead = Arc<Mutex<Vec<DeadLetter<Routed<Scripted>>>>>;

fn sink() -> (Dead, impl Fn(DeadLetter<Routed<Scripted>>) + Send + Sync + 'static) {
    let dead: Dead = Arc::default();
    let d = dead.clone();
    (dead, move |l| d.lock().unwrap().push(l))
}

/// One route `r` with `spec`, a scripted handler and a collecting dead-letter sink.
fn one_route(spec: RouteSpec) -> (Engine<Scripted>, ScriptedHandler, Dead) {
    let handler = ScriptedHandler::default();
    let (dead, sink) = sink();
    let engine = Engine::builder().route("r", spec, handler.clone()).dead_letter_sink(sink).build().unwrap();
    (engine, handler, dead)
}

fn dead_reasons(dead: &Dead) -> Vec<(u64, DeadLetterReason)> {
    dead.lock().unwrap().iter().map(|d| (d.event.event.id, d.reason)).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded_and_counted() {
    let retry = RetryPolicy::new(3, 10 * MS, 100 * MS);
    let (engine, handler, dead) = one_route(RouteSpec::new(Config::default()).retry(retry));
    let flaky = |id, failures| Scripted { id, behaviour: Behaviour::FlakyThenOk { failures, work: MS } };
    engine.submit(Submission::new("r", ClassId::CRITICAL, flaky(1, 2))).await.unwrap();
    engine.submit(Submission::new("r", ClassId::CRITICAL, flaky(2, 5))).await.unwrap();
    let report = engine.shutdown(Duration::from_secs(10)).await;
    assert!(report.drained);
    assert_eq!(report.handled, 1);
    assert_eq!(dead_reasons(&dead), [(2, DeadLetterReason::HandlerFailed)]);
    let attempts = |id| handler.log.lock().unwrap().iter().filter(|a| a.id == id).count();
    assert_eq!((attempts(1), attempts(2)), (3, 3), "2 retries each, never more than max_attempts");
    assert_eq!(report.stats.total().retries, 4);
    assert!(report.stats.total().conserved());
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_at_or_after_the_deadline() {
    let retry = RetryPolicy::new(10, 20 * MS, Duration::from_secs(1));
    let (engine, handler, dead) = one_route(RouteSpec::new(Config::default()).retry(retry));
    let always_failing = Scripted { id: 1, behaviour: Behaviour::FlakyThenOk { failures: 100, work: 5 * MS } };
    let deadline = Instant::now() + 100 * MS;
    engine.submit(Submission::new("r", ClassId::CRITICAL, always_failing).deadline(deadline)).await.unwrap();
    let report = engine.shutdown(Duration::from_secs(10)).await;
    let log = handler.log.lock().unwrap().clone();
    // Attempts at 0, 25, 70 ms; the next would start at 75 + 80 = 155 ms > 100 ms.
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().all(|a| a.started < deadline));
    assert_eq!(dead_reasons(&dead), [(1, DeadLetterReason::HandlerFailed)]);
    assert_eq!(report.stats.total().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn expired_events_never_reach_the_handler() {
    let (engine, handler, dead) = one_route(RouteSpec::new(Config::default()));
    // The first takes 50 ms; the second's deadline is 10 ms away, so it expires in the queue.
    engine.submit(Submission::new("r", ClassId::CRITICAL, ok(1, 50))).await.unwrap();
    engine.submit(Submission::new("r", ClassId::CRITICAL, ok(2, 0)).deadline(Instant::now() + 10 * MS)).await.unwrap();
    let report = engine.shutdown(Duration::from_secs(1)).await;
    let ids: Vec<u64> = handler.log.lock().unwrap().iter().map(|a| a.id).collect();
    assert_eq!(ids, [1]);
    assert_eq!(dead_reasons(&dead), [(2, DeadLetterReason::Expired)]);
    assert_eq!(report.dead(DeadLetterReason::Expired), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_contained_and_the_worker_carries_on() {
    let (engine, _handler, dead) = one_route(RouteSpec::new(Config::default()));
    engine
        .submit(Submission::new("r", ClassId::CRITICAL, Scripted { id: 1, behaviour: Behaviour::Panic }))
        .await
        .unwrap();
    engine.submit(Submission::new("r", ClassId::CRITICAL, ok(2, 1))).await.unwrap();
    let report = engine.shutdown(Duration::from_secs(1)).await;
    assert_eq!(dead_reasons(&dead), [(1, DeadLetterReason::Panicked)]);
    assert_eq!((report.handled, report.dead(DeadLetterReason::Panicked)), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn same_key_events_run_one_at_a_time_in_submission_order() {
    let handler = ScriptedHandler::default();
    let engine = Engine::builder()
        .route("orders", RouteSpec::new(Config::default()).workers(4).keyed(), handler.clone())
        .build()
        .unwrap();
    // Varying work so that, without lanes, later events of a key would overtake earlier ones.
    for id in 0..200u64 {
        let work = [7, 1, 4, 2, 9][(id % 5) as usize];
        engine.submit(Submission::new("orders", ClassId::CRITICAL, ok(id, work)).key(id % 10)).await.unwrap();
    }
    let report = engine.shutdown(Duration::from_secs(60)).await;
    assert_eq!(report.handled, 200);
    let log = handler.log.lock().unwrap().clone();
    for key in 0..10 {
        let mine: Vec<_> = log.iter().filter(|a| a.key == Some(key)).collect();
        assert!(mine.windows(2).all(|w| w[0].id < w[1].id), "key {key} out of order");
        assert!(mine.windows(2).all(|w| w[0].ended.unwrap() <= w[1].started), "key {key} overlapped");
    }
    // Different keys did run concurrently.
    let overlapping = log.windows(2).any(|w| w[1].started < w[0].ended.unwrap());
    assert!(overlapping, "keys never ran concurrently");
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_until_the_deadline_then_dead_letters_what_is_left() {
    let handler = ScriptedHandler::default();
    let (dead, sink) = sink();
    let engine = Engine::builder()
        .route("slow", RouteSpec::new(Config::default()), handler.clone())
        .dead_letter_sink(sink)
        .build()
        .unwrap();
    for id in 0..5 {
        engine.submit(Submission::new("slow", ClassId::CRITICAL, ok(id, 40))).await.unwrap();
    }
    let report = engine.shutdown(100 * MS).await;
    assert!(!report.drained);
    // 0 and 1 finish at 40 and 80 ms; 2 is in flight at 100 ms; 3 and 4 are queued.
    assert_eq!(report.handled, 2);
    let mut shutdown: Vec<u64> = dead_reasons(&dead)
        .into_iter()
        .map(|(id, r)| {
            assert_eq!(r, DeadLetterReason::Shutdown);
            id
        })
        .collect();
    shutdown.sort();
    assert_eq!(shutdown, [2, 3, 4]);
    let t = report.stats.total();
    assert!(t.conserved());
    assert_eq!((t.queued, t.in_flight(), report.dead(DeadLetterReason::Shutdown)), (0, 0, 3));
}

#[tokio::test(start_paused = true)]
async fn submits_during_and_after_shutdown_get_their_event_back() {
    let classes = Config::builder().class(ClassSpec::new("only", 1)).build().unwrap();
    let engine =
        Arc::new(Engine::builder().route("r", RouteSpec::new(classes), ScriptedHandler::default()).build().unwrap());
    engine.submit(Submission::new("r", ClassId::new(0), ok(1, 50))).await.unwrap();
    tokio::time::sleep(MS).await;
    engine.submit(Submission::new("r", ClassId::new(0), ok(2, 50))).await.unwrap();
    // The queue is full: this one waits for room, and is still waiting when shutdown starts.
    let e = engine.clone();
    let waiting = tokio::spawn(async move { e.submit(Submission::new("r", ClassId::new(0), ok(3, 0))).await });
    let e = engine.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(10 * MS).await;
        e.try_submit(Submission::new("r", ClassId::new(0), ok(4, 0)))
    });
    tokio::time::sleep(5 * MS).await;
    let report = engine.shutdown(Duration::from_secs(1)).await;
    assert_eq!(waiting.await.unwrap().unwrap_err(), SubmitError::Closed(ok(3, 0)));
    assert_eq!(late.await.unwrap().unwrap_err(), SubmitError::Closed(ok(4, 0)));
    assert!(report.drained);
    assert_eq!(report.handled, 2);
    let again = engine.shutdown(Duration::ZERO).await;
    assert_eq!((again.handled, again.returned), (2, 2), "late submits are counted as returned");
}

#[tokio::test(start_paused = true)]
async fn unknown_route_and_class_hand_the_event_back() {
    let engine =
        Engine::builder().route("r", RouteSpec::new(Config::default()), ScriptedHandler::default()).build().unwrap();
    let e = engine.try_submit(Submission::new("nope", ClassId::CRITICAL, ok(1, 0))).unwrap_err();
    assert!(matches!(e, SubmitError::UnknownRoute(_)));
    assert_eq!(e.into_inner().id, 1);
    let e = engine.try_submit(Submission::new("r", ClassId::new(9), ok(2, 0))).unwrap_err();
    assert!(matches!(e, SubmitError::UnknownClass(_)));
    assert_eq!(engine.route_id("r").map(|r| engine.route_name(r).to_string()), Some("r".into()));
}

#[tokio::test(start_paused = true)]
async fn room_is_the_admission_limit_less_what_is_queued_over_every_lane() {
    // Two keyed lanes of 8 per class; nothing has run yet on this single-threaded runtime.
    let config = Config::builder().class(ClassSpec::new("a", 8)).class(ClassSpec::new("b", 8)).build().unwrap();
    let (engine, _, _) = one_route(RouteSpec::new(config).workers(2).keyed());
    let r = engine.route_id("r").unwrap();
    assert_eq!(engine.room(r, ClassId::new(0)), 16);
    for id in 0..5 {
        engine.try_submit(Submission::new("r", ClassId::new(0), ok(id, 10)).key(id)).unwrap();
    }
    assert_eq!((engine.room(r, ClassId::new(0)), engine.room(r, ClassId::new(1))), (11, 16));
}

#[tokio::test(start_paused = true)]
async fn the_measured_rate_of_a_route_sums_its_lanes() {
    // Two keyed lanes, each one worker at 1 ms per event: 2,000 a second in all.
    let config = Config::builder()
        .class(ClassSpec::new("a", 1_000))
        .adaptive(veltrix_engine::Adaptive::new(Duration::from_millis(20)))
        .build()
        .unwrap();
    let (engine, _, _) = one_route(RouteSpec::new(config).workers(2).keyed());
    let r = engine.route_id("r").unwrap();
    assert_eq!(engine.measured_rate(r, ClassId::new(0)), None, "nothing measured yet");
    for id in 0..600 {
        engine.try_submit(Submission::new("r", ClassId::new(0), ok(id, 1)).key(id)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rate = engine.measured_rate(r, ClassId::new(0)).expect("both lanes measured");
    assert!((1_500.0..=2_500.0).contains(&rate), "two lanes of 1,000/s: {rate}");

    let (fixed, _, _) = one_route(RouteSpec::new(Config::default()).workers(2).keyed());
    let r = fixed.route_id("r").unwrap();
    fixed.try_submit(Submission::new("r", ClassId::CRITICAL, ok(1, 1))).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fixed.measured_rate(r, ClassId::CRITICAL), None, "a static route measures nothing");
}

#[tokio::test]
async fn build_errors_are_typed() {
    let spec = || RouteSpec::new(Config::default());
    let h = ScriptedHandler::default;
    let err = |b: veltrix_engine::runtime::EngineBuilder<Scripted>| b.build().unwrap_err();
    assert_eq!(err(Engine::builder()), EngineBuildError::NoRoutes);
    assert_eq!(err(Engine::builder().route("", spec(), h())), EngineBuildError::EmptyRouteName);
    assert_eq!(
        err(Engine::builder().route("a", spec(), h()).route("a", spec(), h())),
        EngineBuildError::DuplicateRoute("a".into())
    );
    assert_eq!(err(Engine::builder().route("a", spec().workers(0), h())), EngineBuildError::ZeroWorkers("a".into()));
    assert_eq!(
        err(Engine::builder().route("a", spec().retry(RetryPolicy::new(0, MS, MS)), h())),
        EngineBuildError::ZeroAttempts("a".into())
    );
    assert_eq!(err(Engine::builder().route("a", spec().max_batch(0), h())), EngineBuildError::ZeroBatch("a".into()));
    assert!(matches!(Config::builder().class(ClassSpec::new("x", 0)).build(), Err(BuildError::ZeroCapacity { .. })));
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let r = Engine::builder().route("r", RouteSpec::new(Config::default()), ScriptedHandler::default()).build();
    assert_eq!(r.unwrap_err(), EngineBuildError::NoRuntime);
}

#[test]
fn dropping_the_engine_without_shutdown_loses_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let (handler, dead) = rt.block_on(async {
        let (engine, handler, dead) = one_route(RouteSpec::new(Config::default()).workers(2));
        for id in 0..20 {
            engine.submit(Submission::new("r", ClassId::CRITICAL, ok(id, 10))).await.unwrap();
        }
        // Let the workers start, then drop the engine: intake closes, workers keep draining.
        tokio::time::sleep(25 * MS).await;
        drop(engine);
        tokio::time::sleep(15 * MS).await;
        (handler, dead)
    });
    // The runtime stops with work left: in-flight events are dead-lettered (shutdown), queued
    // ones (closed) when the last worker's receiver goes.
    drop(rt);
    let handled = handler.log.lock().unwrap().iter().filter(|a| a.ended.is_some()).count();
    let dead = dead_reasons(&dead);
    assert!(handled > 0 && !dead.is_empty(), "handled {handled}, dead {dead:?}");
    assert!(dead.iter().all(|(_, r)| matches!(r, DeadLetterReason::Shutdown | DeadLetterReason::Closed)));
    assert!(dead.iter().any(|(_, r)| *r == DeadLetterReason::Shutdown), "in-flight events were dead-lettered");
    let mut all: Vec<u64> = handler.log.lock().unwrap().iter().filter(|a| a.ended.is_some()).map(|a| a.id).collect();
    all.extend(dead.iter().map(|(id, _)| *id));
    all.sort();
    assert_eq!(all, (0..20).collect::<Vec<_>>(), "every event handled or dead-lettered, once");
}

#[tokio::test(start_paused = true)]
async fn a_flooded_route_does_not_slow_another_routes_critical_events() {
    async fn run(flood: bool) -> Duration {
        let classes = Config::builder()
            .class(ClassSpec::new("CRITICAL", 16))
            .class(ClassSpec::new("SHEDDABLE", 32).with_policy(OverloadPolicy::ShedOldest))
            .build()
            .unwrap();
        let engine = Engine::builder()
            .route("bulk", RouteSpec::new(classes.clone()).workers(2), ScriptedHandler::default())
            .route("payments", RouteSpec::new(classes).workers(2), ScriptedHandler::default())
            .build()
            .unwrap();
        let engine = Arc::new(engine);
        let flooder = flood.then(|| {
            let engine = engine.clone();
            tokio::spawn(async move {
                // 10× the bulk route's capacity (2 workers × 1 event/ms) for 200 ms, both classes.
                for i in 0..4_000u64 {
                    let class = ClassId::new((i % 2) as usize);
                    let _ = engine.try_submit(Submission::new("bulk", class, ok(i, 1)));
                    if i % 20 == 19 {
                        tokio::time::sleep(MS).await;
                    }
                }
            })
        });
        for i in 0..100u64 {
            engine.submit(Submission::new("payments", ClassId::new(0), ok(100_000 + i, 1))).await.unwrap();
            tokio::time::sleep(2 * MS).await;
        }
        if let Some(f) = flooder {
            f.await.unwrap();
        }
        let stats = engine.stats();
        let payments = &stats.route("payments").unwrap().classes[0];
        assert_eq!(payments.ledger.handled, 100);
        let bulk = stats.route("bulk").unwrap().total();
        if flood {
            assert!(bulk.rejected() + bulk.dead_lettered() > 0, "the flood overflowed its own route: {bulk:?}");
        }
        payments.end_to_end.p99
    }
    let quiet = run(false).await;
    let flooded = run(true).await;
    assert_eq!(flooded, quiet, "payments' p99 moved under a flood on another route");
}

#[tokio::test(start_paused = true)]
async fn stats_report_depth_in_flight_and_latency_per_route_and_class() {
    let engine =
        Engine::builder().route("r", RouteSpec::new(Config::default()), ScriptedHandler::default()).build().unwrap();
    for id in 0..3 {
        engine.submit(Submission::new("r", ClassId::SHEDDABLE, ok(id, 10))).await.unwrap();
    }
    tokio::time::sleep(5 * MS).await;
    let s = engine.stats();
    let c = &s.route("r").unwrap().classes[ClassId::SHEDDABLE.index()];
    assert_eq!(c.class, "SHEDDABLE");
    assert_eq!((c.ledger.queued, c.ledger.in_flight()), (2, 1));
    let report = engine.shutdown(Duration::from_secs(1)).await;
    let c = &report.stats.route("r").unwrap().classes[ClassId::SHEDDABLE.index()];
    assert_eq!(c.end_to_end.count, 3);
    // The third waited for two 10 ms events and took 10 ms itself (histograms keep 2 digits).
    let within_1pct = |d: Duration, want: Duration| d >= want && d <= want * 101 / 100;
    assert!(within_1pct(c.end_to_end.max, 30 * MS), "{:?}", c.end_to_end);
    assert!(within_1pct(c.sojourn.max, 20 * MS), "{:?}", c.sojourn);
}

/// A handler that panics in `handle`'s synchronous body, before it returns a future.
struct PanicsEagerly;

impl veltrix_engine::runtime::Handler<Scripted> for PanicsEagerly {
    fn handle(
        &self,
        e: &Scripted,
        _cx: veltrix_engine::runtime::HandlerContext,
    ) -> impl std::future::Future<Output = veltrix_engine::runtime::Outcome> + Send {
        assert!(e.behaviour != Behaviour::Panic, "scripted panic in the synchronous body");
        std::future::ready(veltrix_engine::runtime::Outcome::Ok)
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_synchronous_body_of_handle_is_contained_too() {
    let (dead, sink) = sink();
    let engine = Engine::builder()
        .route("r", RouteSpec::new(Config::default()).workers(1).keyed(), PanicsEagerly)
        .dead_letter_sink(sink)
        .build()
        .unwrap();
    engine
        .submit(Submission::new("r", ClassId::CRITICAL, Scripted { id: 1, behaviour: Behaviour::Panic }).key(1))
        .await
        .unwrap();
    engine.submit(Submission::new("r", ClassId::CRITICAL, ok(2, 0)).key(1)).await.unwrap();
    let report = engine.shutdown(Duration::from_secs(1)).await;
    assert_eq!(dead_reasons(&dead), [(1, DeadLetterReason::Panicked)]);
    assert_eq!(report.handled, 1, "the worker carried on with the next event of its lane");
}

/// Regression (issue 11): the runtime that ran the workers is dropped while events are queued.
/// The lane has nobody left to serve it: later submits must get their event back, and
/// `shutdown` must not report `drained` while events sit in a queue nobody serves.
#[test]
fn a_dropped_runtime_is_noticed_not_reported_as_drained() {
    let handler = ScriptedHandler::default();
    let (dead, sink) = sink();
    let a = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let engine = a.block_on(async {
        let engine = Engine::builder()
            .route("r", RouteSpec::new(Config::default()), handler.clone())
            .dead_letter_sink(sink)
            .build()
            .unwrap();
        for id in 0..10 {
            engine.try_submit(Submission::new("r", ClassId::CRITICAL, ok(id, 1_000))).unwrap();
        }
        // No yield: the worker task is dropped before it ever ran (the hardest case to notice).
        engine
    });
    drop(a);
    let b = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    b.block_on(async {
        let late = engine.try_submit(Submission::new("r", ClassId::CRITICAL, ok(10, 0)));
        assert_eq!(late.unwrap_err(), SubmitError::Closed(ok(10, 0)), "accepted into a lane nobody serves");
        let report = engine.shutdown(50 * MS).await;
        let t = report.stats.total();
        assert!(!report.drained, "workers died with events queued: {report:?}");
        assert_eq!(report.stats.workers_lost, 1);
        assert_eq!((t.queued, t.in_flight()), (0, 0));
        assert!(t.conserved(), "{t:?}");
    });
    let mut ids: Vec<u64> = dead_reasons(&dead).iter().map(|(id, _)| *id).collect();
    ids.extend(handler.log.lock().unwrap().iter().filter(|a| a.ended.is_some()).map(|a| a.id));
    ids.sort();
    assert_eq!(ids, (0..10).collect::<Vec<_>>(), "every event ends once, before the engine is dropped");
}

/// A worker idle on an empty, open lane when its runtime is dropped is lost too: the lane is
/// closed for good, so a later submit gets its event back rather than waiting for nobody.
#[test]
fn an_idle_worker_whose_runtime_is_dropped_is_counted_lost() {
    let a = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let (engine, _handler, _dead) = a.block_on(async {
        let built = one_route(RouteSpec::new(Config::default()));
        tokio::task::yield_now().await; // the worker starts and finds nothing to do
        built
    });
    drop(a);
    let b = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    b.block_on(async {
        let late = engine.try_submit(Submission::new("r", ClassId::CRITICAL, ok(1, 0)));
        assert_eq!(late.unwrap_err(), SubmitError::Closed(ok(1, 0)), "accepted into a lane nobody serves");
        let report = engine.shutdown(50 * MS).await;
        assert_eq!(report.stats.workers_lost, 1);
        assert!(!report.drained, "{report:?}");
    });
}

/// A handler sees the time its event has left: none without a deadline, all of it when it
/// starts at once.
#[tokio::test(start_paused = true)]
async fn a_handler_sees_the_time_left_before_the_deadline() {
    struct Remaining(Arc<Mutex<Vec<Option<Duration>>>>);
    impl Handler<u32> for Remaining {
        fn handle(&self, _event: &u32, cx: HandlerContext) -> impl std::future::Future<Output = Outcome> + Send {
            self.0.lock().unwrap().push(cx.remaining());
            std::future::ready(Outcome::Ok)
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let classes = Config::builder().class(ClassSpec::new("c", 4)).build().unwrap();
    let engine = Engine::builder().route("r", RouteSpec::new(classes), Remaining(seen.clone())).build().unwrap();
    let c = ClassId::new(0);
    engine.submit(Submission::new("r", c, 1)).await.unwrap();
    engine.submit(Submission::new("r", c, 2).deadline(Instant::now() + Duration::from_secs(5))).await.unwrap();
    engine.shutdown(Duration::from_secs(1)).await;
    assert_eq!(*seen.lock().unwrap(), [None, Some(Duration::from_secs(5))]);
}

/// Regression (issue 11): a dead-letter sink that panics must be contained like a panicking
/// handler — the worker carries on, later events are handled, the panics are counted.
#[tokio::test(start_paused = true)]
async fn a_panicking_dead_letter_sink_is_contained() {
    let handler = ScriptedHandler::default();
    let engine = Engine::builder()
        .route("r", RouteSpec::new(Config::default()), handler.clone())
        .dead_letter_sink(|d: DeadLetter<Routed<Scripted>>| panic!("sink refuses {}", d.event.event.id))
        .build()
        .unwrap();
    let fatal = |id| Scripted { id, behaviour: Behaviour::Fatal };
    engine.submit(Submission::new("r", ClassId::CRITICAL, fatal(1))).await.unwrap();
    tokio::time::sleep(MS).await;
    engine.submit(Submission::new("r", ClassId::CRITICAL, ok(2, 1))).await.unwrap();
    // A dead letter at dequeue goes through the same sink.
    engine.submit(Submission::new("r", ClassId::CRITICAL, ok(3, 1)).deadline(Instant::now())).await.unwrap();
    engine.submit(Submission::new("r", ClassId::CRITICAL, ok(4, 1))).await.unwrap();
    let report = engine.shutdown(Duration::from_secs(1)).await;
    assert!(report.drained, "{report:?}");
    assert_eq!(report.handled, 2);
    assert_eq!(report.stats.workers_lost, 0);
    assert_eq!(report.stats.sink_panics, 2);
    assert_eq!((report.dead(DeadLetterReason::HandlerFailed), report.dead(DeadLetterReason::Expired)), (1, 1));
}

/// The handler's context says when its event left the queue, the same for every attempt.
#[tokio::test(start_paused = true)]
async fn the_handler_context_carries_the_dequeue_instant() {
    use veltrix_engine::runtime::{Handler, HandlerContext, Outcome};
    #[derive(Clone, Default)]
    struct Times(Arc<Mutex<Vec<(u32, Instant, Instant)>>>);
    impl Handler<u64> for Times {
        fn handle(&self, _: &u64, cx: HandlerContext) -> impl std::future::Future<Output = Outcome> + Send {
            self.0.lock().unwrap().push((cx.attempt, cx.enqueued_at, cx.dequeued_at));
            async move {
                tokio::time::sleep(10 * MS).await;
                if cx.attempt < 2 { Outcome::Retry } else { Outcome::Ok }
            }
        }
    }
    let times = Times::default();
    let spec = RouteSpec::new(Config::default()).retry(RetryPolicy::new(2, MS, MS));
    let engine = Engine::builder().route("r", spec, times.clone()).build().unwrap();
    let t0 = Instant::now();
    engine.try_submit(Submission::new("r", ClassId::CRITICAL, 1)).unwrap();
    engine.try_submit(Submission::new("r", ClassId::CRITICAL, 2)).unwrap();
    assert_eq!(engine.shutdown(Duration::from_secs(1)).await.handled, 2);
    let log = times.0.lock().unwrap().clone();
    assert_eq!(log.len(), 4, "{log:?}");
    // The first event waits for nothing; the second for the first's two attempts and backoff.
    assert_eq!((log[0].1, log[0].2), (t0, t0));
    assert_eq!(log[1].2, log[0].2, "a retry keeps its dequeue instant");
    assert_eq!((log[2].1, log[2].2 - t0), (t0, 21 * MS));
    assert_eq!(log[3].2, log[2].2);
}

/// Route ids follow registration order; the builder, the engine and the build errors read well.
#[tokio::test]
async fn route_ids_debug_output_and_error_messages() {
    let spec = || RouteSpec::new(Config::default());
    let builder =
        Engine::builder().route("a", spec(), ScriptedHandler::default()).route("b", spec(), ScriptedHandler::default());
    assert_eq!(format!("{builder:?}"), r#"EngineBuilder { routes: ["a", "b"], .. }"#);
    let engine = builder.build().unwrap();
    assert_eq!(format!("{engine:?}"), r#"Engine { routes: ["a", "b"], .. }"#);
    let b = engine.route_id("b").unwrap();
    assert_eq!((engine.route_id("a").unwrap().index(), b.index()), (0, 1));
    assert_eq!(engine.route_name(b), "b");

    let messages = [
        (EngineBuildError::NoRoutes, "no route registered"),
        (EngineBuildError::EmptyRouteName, "a route has an empty name"),
        (EngineBuildError::DuplicateRoute("a".into()), "route `a` is registered twice"),
        (EngineBuildError::ZeroWorkers("a".into()), "route `a` has 0 workers (at least 1 is needed)"),
        (EngineBuildError::ZeroAttempts("a".into()), "route `a` allows 0 attempts (at least 1 is needed)"),
        (EngineBuildError::ZeroBatch("a".into()), "route `a` has max_batch 0 (at least 1 is needed)"),
        (
            EngineBuildError::TooManyRoutes { registered: 65_537, max: 65_536 },
            "65537 routes registered, at most 65536 are allowed",
        ),
        (EngineBuildError::NoRuntime, "the engine must be built inside a tokio runtime"),
    ];
    for (error, message) in messages {
        assert_eq!(error.to_string(), message);
    }
}

/// Workers that share a lane take one event at a time: a fast event must never sit in one
/// worker's batch behind a slow handler while the other worker is idle (`ci/nats` once saw a
/// redelivered event expire there).
#[tokio::test(start_paused = true)]
async fn workers_sharing_a_lane_hold_no_event_behind_a_slow_handler() {
    const SLOW: u64 = 64;
    let config = Config::builder().class(ClassSpec::new("c", 256)).build().unwrap();
    let (engine, handler, _) = one_route(RouteSpec::new(config).workers(2));
    let start = Instant::now();
    for id in 0..2 * SLOW + 1 {
        let work = if id == SLOW { 1_000 } else { 0 };
        engine.try_submit(Submission::new("r", ClassId::new(0), ok(id, work))).unwrap();
    }
    let report = engine.shutdown(Duration::from_secs(10)).await;
    assert!(report.drained);
    let log = handler.log.lock().unwrap();
    assert_eq!(log.len() as u64, 2 * SLOW + 1);
    let waited: Vec<u64> =
        log.iter().filter(|a| a.id != SLOW && a.started - start >= Duration::from_secs(1)).map(|a| a.id).collect();
    assert!(waited.is_empty(), "events that waited behind the slow handler: {waited:?}");
}

/// `try_submit` to a full class hands the event back as `Full`: the caller may wait and retry,
/// which it may not after `Rejected` or `Closed`.
#[tokio::test(start_paused = true)]
async fn try_submit_to_a_full_class_hands_the_event_back_as_full() {
    let config = Config::builder().class(ClassSpec::new("c", 1)).build().unwrap();
    let (engine, handler, _) = one_route(RouteSpec::new(config));
    let c = ClassId::new(0);
    engine.try_submit(Submission::new("r", c, ok(1, 0))).unwrap();
    let e = engine.try_submit(Submission::new("r", c, ok(2, 0))).unwrap_err();
    assert!(matches!(e, SubmitError::Full(_)), "{e:?}");
    assert_eq!(e.into_inner().id, 2);
    let report = engine.shutdown(Duration::from_secs(1)).await;
    assert!(report.drained);
    assert_eq!((report.handled, report.stats.total().rejected()), (1, 1));
    assert_eq!(handler.log.lock().unwrap().len(), 1);
}

/// Dropping the engine closes intake: the workers drain what is queued, then end (and drop
/// their handler).
#[tokio::test(start_paused = true)]
async fn a_dropped_engine_drains_and_its_workers_end() {
    let (engine, handler, dead) = one_route(RouteSpec::new(Config::default()).workers(2));
    for id in 0..20 {
        engine.try_submit(Submission::new("r", ClassId::CRITICAL, ok(id, 10))).unwrap();
    }
    drop(engine);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let handled = handler.log.lock().unwrap().iter().filter(|a| a.ended.is_some()).count();
    assert_eq!(handled, 20);
    assert!(dead.lock().unwrap().is_empty());
    assert_eq!(Arc::strong_count(&handler.log), 1, "the workers ended and dropped their handler");
}
