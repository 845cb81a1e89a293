//! Proptest over the engine runtime: random routes (classes, policies, workers, keyed lanes,
//! retry policies) and random submissions whose handler behaviours are scripted (ok, slow,
//! flaky, fatal, panicking), on tokio's paused clock, then a shutdown with a random drain
//! deadline. Checked: every submitted event is returned, handled or dead-lettered exactly once;
//! the conservation law per route and class; per-key order; retries bounded; no attempt started
//! at or after its deadline; the shutdown report equals the ledger and the sink.
//!
//! Cases: `VELTRIX_PROPTEST_CASES` (default 1024, a quarter of that here: each case runs a runtime).
#![cfg(not(veltrix_loom))]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, FileFailurePersistence};
use veltrix_engine::runtime::{Engine, RetryPolicy, RouteSpec, Routed, Submission};
use veltrix_engine::{ClassId, ClassSpec, Config, DeadLetter, DeadLetterReason, Instant, OverloadPolicy};
use veltrix_verify::scripted::{Behaviour, Scripted, ScriptedHandler};

const MS: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
struct RouteCase {
    classes: Vec<(usize, OverloadPolicy, Option<u64>)>,
    workers: usize,
    keyed: bool,
    attempts: u32,
    backoff_ms: u64,
}

#[derive(Debug, Clone)]
struct Sub {
    route: usize,
    class: usize,
    key: Option<u64>,
    deadline_ms: Option<u64>,
    behaviour: Behaviour,
    /// Virtual time to wait after this submission.
    pause_ms: u64,
    /// Wait for room (`submit`) or not (`try_submit`).
    wait: bool,
}

fn route_strategy() -> impl Strategy<Value = RouteCase> {
    let policy =
        prop_oneof![Just(OverloadPolicy::Backpressure), Just(OverloadPolicy::Reject), Just(OverloadPolicy::ShedOldest)];
    let class = (1usize..=6, policy, proptest::option::weighted(0.3, 5u64..80));
    (proptest::collection::vec(class, 1..=3), 1usize..=3, any::<bool>(), 1u32..=4, 1u64..=10).prop_map(
        |(classes, workers, keyed, attempts, backoff_ms)| RouteCase { classes, workers, keyed, attempts, backoff_ms },
    )
}

fn behaviour_strategy() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        6 => (0u64..6).prop_map(|w| Behaviour::Ok { work: MS * w as u32 }),
        2 => (0u32..5, 0u64..4).prop_map(|(failures, w)| Behaviour::FlakyThenOk { failures, work: MS * w as u32 }),
        1 => Just(Behaviour::Fatal),
        1 => Just(Behaviour::Panic),
    ]
}

fn sub_strategy() -> impl Strategy<Value = Sub> {
    (
        0usize..3,
        0usize..3,
        proptest::option::weighted(0.6, 0u64..4),
        proptest::option::weighted(0.3, 1u64..60),
        behaviour_strategy(),
        prop_oneof![3 => Just(0u64), 1 => 1u64..5],
        any::<bool>(),
    )
        .prop_map(|(route, class, key, deadline_ms, behaviour, pause_ms, wait)| Sub {
            route,
            class,
            key,
            deadline_ms,
            behaviour,
            pause_ms,
            wait,
        })
}

fn quiet_scripted_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.to_string().contains("scripted panic") {
                default(info);
            }
        }));
    });
}

fn run_case(routes: Vec<RouteCase>, subs: Vec<Sub>, drain_ms: u64) {
    quiet_scripted_panics();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async move {
        let dead: Arc<Mutex<Vec<DeadLetter<Routed<Scripted>>>>> = Arc::default();
        let sink = dead.clone();
        let handlers: Vec<ScriptedHandler> = routes.iter().map(|_| ScriptedHandler::default()).collect();
        let mut builder = Engine::builder().dead_letter_sink(move |d| sink.lock().unwrap().push(d));
        for (r, case) in routes.iter().enumerate() {
            let classes = case
                .classes
                .iter()
                .enumerate()
                .fold(Config::builder(), |b, (k, &(cap, policy, deadline))| {
                    let mut c = ClassSpec::new(format!("c{k}"), cap).with_policy(policy);
                    if let Some(d) = deadline {
                        c = c.with_deadline(MS * d as u32);
                    }
                    b.class(c)
                })
                .build()
                .unwrap();
            let mut spec = RouteSpec::new(classes).workers(case.workers).retry(RetryPolicy::new(
                case.attempts,
                MS * case.backoff_ms as u32,
                20 * MS,
            ));
            if case.keyed {
                spec = spec.keyed();
            }
            builder = builder.route(format!("r{r}"), spec, handlers[r].clone());
        }
        let engine = builder.build().unwrap();
        let names: Vec<String> = (0..routes.len()).map(|r| format!("r{r}")).collect();

        let mut returned = 0u64;
        let mut accepted: BTreeMap<u64, (usize, usize, Option<u64>, Option<Instant>)> = BTreeMap::new();
        for (id, s) in subs.iter().enumerate() {
            let id = id as u64;
            let r = s.route % routes.len();
            let class = s.class % routes[r].classes.len();
            let deadline = s.deadline_ms.map(|d| Instant::now() + MS * d as u32);
            let mut sub = Submission::new(&names[r], ClassId::new(class), Scripted { id, behaviour: s.behaviour });
            if let Some(k) = s.key {
                sub = sub.key(k);
            }
            if let Some(d) = deadline {
                sub = sub.deadline(d);
            }
            let res = if s.wait { engine.submit(sub).await } else { engine.try_submit(sub) };
            match res {
                Ok(()) => {
                    accepted.insert(id, (r, class, s.key, deadline));
                }
                Err(e) => {
                    assert_eq!(e.into_inner().id, id, "the refused event comes back");
                    returned += 1;
                }
            }
            if s.pause_ms > 0 {
                tokio::time::sleep(MS * s.pause_ms as u32).await;
            }
        }
        let report = engine.shutdown(MS * drain_ms as u32).await;

        // Ledger: conserved per route and class, nothing left queued or in flight.
        for route in &report.stats.routes {
            for c in &route.classes {
                assert!(c.ledger.conserved(), "{} {}: {:?}", route.name, c.class, c.ledger);
                assert_eq!((c.ledger.queued, c.ledger.in_flight()), (0, 0), "{} {}", route.name, c.class);
            }
        }
        let total = report.stats.total();
        assert_eq!(report.returned, returned);
        assert_eq!(total.offered, subs.len() as u64);

        // Dead letters: each once, and the report and ledger agree with the sink, reason by reason.
        let dead = dead.lock().unwrap();
        let mut dead_ids: Vec<u64> = dead.iter().map(|d| d.event.event.id).collect();
        dead_ids.sort_unstable();
        assert!(dead_ids.windows(2).all(|w| w[0] != w[1]), "an event dead-lettered twice");
        for reason in DeadLetterReason::ALL {
            let in_sink = dead.iter().filter(|d| d.reason == reason).count() as u64;
            assert_eq!(report.dead(reason), in_sink, "{reason}");
            assert_eq!(total.dead(reason), in_sink, "{reason}");
        }
        assert_eq!(report.handled + dead.len() as u64, accepted.len() as u64, "accepted = handled + dead");
        assert!(dead_ids.iter().all(|id| accepted.contains_key(id)), "dead-lettered an event never accepted");

        // Attempts: bounded, never at or after the deadline, and per-key order on keyed routes.
        for (r, handler) in handlers.iter().enumerate() {
            let log = handler.log.lock().unwrap();
            let mut per_event: BTreeMap<u64, Vec<_>> = BTreeMap::new();
            for a in log.iter() {
                per_event.entry(a.id).or_default().push(*a);
            }
            for (id, attempts) in &per_event {
                let (route, _, _, deadline) = accepted[id];
                assert_eq!(route, r);
                assert!(attempts.len() as u32 <= routes[r].attempts, "event {id}: {} attempts", attempts.len());
                if let Some(d) = deadline {
                    assert!(attempts.iter().all(|a| a.started < d), "event {id} attempted past its deadline");
                }
            }
            if routes[r].keyed {
                let mut lanes: BTreeMap<(usize, u64), Vec<Run>> = BTreeMap::new();
                for (id, attempts) in &per_event {
                    let (_, class, key, _) = accepted[id];
                    if let Some(key) = key {
                        let last = attempts.last().unwrap();
                        lanes.entry((class, key)).or_default().push((*id, attempts[0].started, last.ended));
                    }
                }
                for ((class, key), runs) in lanes {
                    let mut by_start = runs.clone();
                    by_start.sort_by_key(|(id, start, _)| (*start, *id));
                    assert!(by_start.windows(2).all(|w| w[0].0 < w[1].0), "class {class} key {key} out of order");
                    for w in by_start.windows(2) {
                        if let Some(end) = w[0].2 {
                            assert!(end <= w[1].1, "class {class} key {key}: overlapping runs");
                        }
                    }
                }
            }
        }
    });
}

/// One event's handling on a key: id, first attempt's start, last attempt's end.
type Run = (u64, Instant, Option<Instant>);

fn cases() -> u32 {
    // Each case builds a runtime and an engine: a quarter of the channel model's count.
    (veltrix_verify::proptest_cases(1024) / 4).max(1)
}

proptest! {
    #![proptest_config(PtConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/engine_model.txt"))),
        ..PtConfig::default()
    })]

    #[test]
    fn engine_accounts_for_every_event(
        routes in proptest::collection::vec(route_strategy(), 1..=3),
        subs in proptest::collection::vec(sub_strategy(), 1..80),
        drain_ms in 0u64..150,
    ) {
        run_case(routes, subs, drain_ms);
    }
}
