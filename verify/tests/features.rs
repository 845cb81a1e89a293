//! The optional features: `metrics` (facade counters, gauges, histograms per route and class)
//! and `tower` (a `Service` whose readiness is the class's capacity).
#![cfg(not(veltrix_loom))]

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::Service;
use veltrix_engine::runtime::{Engine, RouteSpec, Submission};
use veltrix_engine::{ClassId, ClassSpec, Config, OverloadPolicy, SubmitError};
use veltrix_verify::scripted::{Behaviour, Scripted, ScriptedHandler};

fn ok(id: u64) -> Scripted {
    Scripted { id, behaviour: Behaviour::Ok { work: Duration::from_millis(1) } }
}

#[test]
fn metrics_count_outcomes_per_route_and_class_with_units_in_names() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let classes = Config::builder()
                .class(ClassSpec::new("CRITICAL", 8))
                .class(ClassSpec::new("SHEDDABLE", 1).with_policy(OverloadPolicy::Reject))
                .build()
                .unwrap();
            let engine =
                Engine::builder().route("pay", RouteSpec::new(classes), ScriptedHandler::default()).build().unwrap();
            for id in 0..3 {
                engine.submit(Submission::new("pay", ClassId::new(0), ok(id))).await.unwrap();
            }
            engine
                .submit(Submission::new("pay", ClassId::new(0), Scripted { id: 3, behaviour: Behaviour::Fatal }))
                .await
                .unwrap();
            engine.try_submit(Submission::new("pay", ClassId::new(1), ok(4))).unwrap();
            // The class holds one: the next is rejected and handed back.
            assert!(engine.try_submit(Submission::new("pay", ClassId::new(1), ok(5))).is_err());
            engine.shutdown(Duration::from_secs(1)).await;
        });
    });
    let found = read(&snapshotter);
    let get = |k: &str| found.get(k).copied().unwrap_or_else(|| panic!("{k} missing from {found:#?}"));
    assert_eq!(get("veltrix_events_handled_total{route=pay,class=CRITICAL}"), 3.0);
    assert_eq!(get("veltrix_events_handled_total{route=pay,class=SHEDDABLE}"), 1.0);
    assert_eq!(get("veltrix_events_dead_lettered_total{route=pay,class=CRITICAL,reason=handler_failed}"), 1.0);
    assert_eq!(get("veltrix_events_returned_total{route=pay,class=SHEDDABLE}"), 1.0);
    assert_eq!(get("veltrix_sojourn_seconds{route=pay,class=CRITICAL}"), 4.0, "one sample per completion");
    assert_eq!(get("veltrix_end_to_end_seconds{route=pay,class=CRITICAL}"), 4.0);
    assert_eq!(get("veltrix_queue_depth_events{route=pay,class=CRITICAL}"), 0.0);
}

/// Every metric by `name{label=value,…}`: counters and gauges by value, histograms by samples.
fn read(snapshotter: &metrics_util::debugging::Snapshotter) -> std::collections::BTreeMap<String, f64> {
    let mut found = std::collections::BTreeMap::new();
    for (key, _unit, _desc, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let v = match value {
            DebugValue::Counter(c) => c as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(h) => h.len() as f64,
        };
        found.insert(format!("{}{{{}}}", key.key().name(), labels.join(",")), v);
    }
    found
}

/// Dead letters from the queue are counted too, and the depth gauge follows the queue. (A
/// snapshot of the debugging recorder drains its counters: each read sees what came since.)
#[test]
fn metrics_count_shed_events_and_show_the_queue_depth() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let key = |name: &str| format!("veltrix_{name}{{route=r,class=only}}");
    let mid = metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let classes = Config::builder()
                .class(ClassSpec::new("only", 2).with_policy(OverloadPolicy::ShedOldest))
                .build()
                .unwrap();
            let spec = RouteSpec::new(classes).max_batch(1);
            let engine = Engine::builder().route("r", spec, ScriptedHandler::default()).build().unwrap();
            // Before the worker runs: 0 and 1 are queued, 2 and 3 shed them.
            for id in 0..4 {
                engine.try_submit(Submission::new("r", ClassId::new(0), ok(id))).unwrap();
            }
            // 2 is handled (1 ms) and 3 is in flight: the worker saw 1 queued when 2 ended.
            tokio::time::sleep(Duration::from_micros(1500)).await;
            let mid = read(&snapshotter);
            engine.shutdown(Duration::from_secs(1)).await;
            mid
        })
    });
    assert_eq!(mid[&key("queue_depth_events")], 1.0);
    assert_eq!(mid["veltrix_events_dead_lettered_total{route=r,class=only,reason=shed}"], 2.0, "{mid:#?}");
    assert_eq!(mid[&key("events_handled_total")], 1.0);
    let end = read(&snapshotter);
    assert_eq!((end[&key("events_handled_total")], end[&key("queue_depth_events")]), (1.0, 0.0), "3 handled since");
}

#[tokio::test(start_paused = true)]
async fn tower_service_is_ready_only_with_room_and_hands_refusals_back() {
    let classes = Config::builder().class(ClassSpec::new("only", 1)).build().unwrap();
    let engine = Engine::builder().route("r", RouteSpec::new(classes), ScriptedHandler::default()).build().unwrap();
    let mut svc = engine.service("r", ClassId::new(0)).expect("unkeyed route, known class");
    assert!(format!("{svc:?}").starts_with("SubmitService { route: "), "{svc:?}");
    assert!(engine.service("r", ClassId::new(1)).is_none());
    assert!(engine.service("nope", ClassId::new(0)).is_none());

    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    svc.call(Scripted { id: 1, behaviour: Behaviour::Ok { work: Duration::from_millis(50) } }).await.unwrap();
    // The worker takes 1 at once; 2 fills the queue; the service is not ready for 3 until 2 leaves.
    tokio::task::yield_now().await;
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    svc.call(ok(2)).await.unwrap();
    let pending = poll_fn(|cx| Poll::Ready(svc.poll_ready(cx).is_pending())).await;
    assert!(pending, "no room: not ready");
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    svc.call(ok(3)).await.unwrap();

    engine.shutdown(Duration::from_secs(1)).await;
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let refused = svc.call(ok(4)).await.unwrap_err();
    assert_eq!(refused, SubmitError::Closed(ok(4)), "the request comes back");
    // The handed-back request counts as an offered, refused event (its refused reservation is
    // counted apart): offered matches the requests called.
    let t = engine.stats().total();
    assert_eq!((t.offered, t.accepted, t.rejected_closed, t.reservations_refused), (4, 3, 1, 1));
    assert!(t.conserved());
}

/// Dropping the engine closes intake, also for a service that outlives it: the service hands
/// requests back as closed, and the workers end (dropping their handler).
#[tokio::test(start_paused = true)]
async fn a_dropped_engine_closes_the_services_it_gave_out() {
    let handler = ScriptedHandler::default();
    let engine = Engine::builder().route("r", RouteSpec::new(Config::default()), handler.clone()).build().unwrap();
    let mut svc = engine.service("r", ClassId::CRITICAL).expect("unkeyed route, known class");
    drop(engine);
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    assert_eq!(svc.call(ok(1)).await.unwrap_err(), SubmitError::Closed(ok(1)), "intake is closed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(Arc::strong_count(&handler.log), 1, "the workers ended and dropped their handler");
}
