//! Adaptive admission in the channel, on tokio's paused clock: a consumer that serves one event
//! per millisecond (1,000 per second) and producers offering three times that.
#![cfg(not(veltrix_loom))]

use std::time::Duration;

use veltrix_engine::{Adaptive, ClassId, ClassSpec, Config, OverloadPolicy, SchedulerMode, TrySendError, channel};

const CRITICAL: ClassId = ClassId::new(0);
const BULK: ClassId = ClassId::new(1);
const TARGET: Duration = Duration::from_millis(50);

fn config(adaptive: bool) -> Config {
    let b = Config::builder()
        .class(ClassSpec::new("critical", 10_000))
        .class(ClassSpec::new("bulk", 10_000).with_policy(OverloadPolicy::Reject))
        .scheduler(SchedulerMode::Strict)
        .record_enqueue_times(true);
    let b = if adaptive { b.adaptive(Adaptive::new(TARGET)) } else { b };
    b.build().unwrap()
}

/// What one run measured after its first second.
#[derive(Debug)]
struct Run {
    critical_refused: u64,
    critical_delivered: u64,
    /// Every delivered event's queueing delay, sorted.
    waits: Vec<Duration>,
    /// Bulk's admission limit at the end of each second.
    bulk_limits: Vec<usize>,
    /// Bulk's service rate as the controller measured it, at the end.
    bulk_rate: Option<f64>,
}

impl Run {
    fn p99(&self) -> Duration {
        self.waits[self.waits.len() * 99 / 100]
    }
}

/// `secs` seconds of 200 critical and 3,000 bulk offers a second (`try_send`), served one at a
/// time taking `service(t)` each, `t` the seconds since the start.
async fn run(config: Config, secs: u64, service: impl Fn(f64) -> Duration + Send + 'static) -> Run {
    let (tx, rx) = channel::<u64>(&config);
    let sender_side = tx.clone();
    let start = tokio::time::Instant::now();
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut refused = 0;
        for i in 0..secs * 1000 {
            tick.tick().await;
            if i % 5 == 0 && matches!(tx.try_send(i, CRITICAL), Err(TrySendError::Full(_))) {
                refused += 1;
            }
            for _ in 0..3 {
                let _ = tx.try_send(i, BULK);
            }
        }
        refused
    });
    let consumer = tokio::spawn(async move {
        let (mut waits, mut critical, mut bulk_limits) = (Vec::new(), 0, Vec::new());
        while let Some(d) = rx.recv().await {
            let t = tokio::time::Instant::now().duration_since(start);
            if t >= Duration::from_secs(secs) {
                break;
            }
            if t.as_secs() as usize > bulk_limits.len() {
                bulk_limits.push(rx.admission_limit(BULK));
            }
            if t > Duration::from_secs(1) {
                waits.push(tokio::time::Instant::now().duration_since(d.enqueued_at.expect("both runs stamp")));
                critical += u64::from(d.class == CRITICAL);
            }
            tokio::time::sleep(service(t.as_secs_f64())).await;
        }
        rx.check_invariants();
        (waits, critical, bulk_limits, rx.measured_rate(BULK))
    });
    let critical_refused = producer.await.unwrap();
    let (mut waits, critical_delivered, bulk_limits, bulk_rate) = consumer.await.unwrap();
    assert_eq!(sender_side.measured_rate(BULK), bulk_rate, "both sides read the one published rate");
    waits.sort();
    Run { critical_refused, critical_delivered, waits, bulk_limits, bulk_rate }
}

#[tokio::test(start_paused = true)]
async fn a_threefold_flood_is_held_to_the_target_delay_and_critical_loses_nothing() {
    let adaptive = run(config(true), 10, |_| Duration::from_millis(1)).await;
    println!("adaptive: p99 {:?}, bulk limits {:?}", adaptive.p99(), adaptive.bulk_limits);
    assert_eq!(adaptive.critical_refused, 0);
    assert!(adaptive.critical_delivered >= 1700, "critical delivered {}", adaptive.critical_delivered);
    assert!(adaptive.p99() <= TARGET * 5 / 4, "p99 {:?} over 1.25 × {TARGET:?}", adaptive.p99());
    // Bulk is served at 800 a second: 800/s × 50 ms = 40 events, less the gain's margin.
    let last = *adaptive.bulk_limits.last().unwrap();
    assert!((20..=45).contains(&last), "bulk limit {last}");
    let rate = adaptive.bulk_rate.expect("measured");
    assert!((700.0..=900.0).contains(&rate), "bulk's service rate is 800/s, measured {rate}");

    // The same flood into the same capacities, static: the queue only grows.
    let fixed = run(config(false), 10, |_| Duration::from_millis(1)).await;
    assert!(fixed.p99() > Duration::from_secs(3), "static p99 {:?}", fixed.p99());
    assert_eq!(fixed.bulk_limits, [10_000; 9]);
    assert_eq!(fixed.bulk_rate, None, "a static configuration measures nothing");
}

#[tokio::test(start_paused = true)]
async fn the_limit_follows_the_service_rate_down_and_back_up() {
    // From 4 s to 8 s each event takes 2 ms: 500 a second, 300 of them left for bulk.
    let slow = |t: f64| Duration::from_millis(if (4.0..8.0).contains(&t) { 2 } else { 1 });
    let run = run(config(true), 12, slow).await;
    println!("bulk limit each second: {:?}; p99 {:?}", run.bulk_limits, run.p99());
    let at = |s: usize| run.bulk_limits[s - 1];
    assert!(at(7) * 2 < at(3), "the limit fell with the rate: {:?}", run.bulk_limits);
    assert!(at(11) * 10 >= at(3) * 9, "and came back: {:?}", run.bulk_limits);
    assert!(run.p99() <= TARGET * 3 / 2, "p99 {:?} through the change", run.p99());
    assert_eq!(run.critical_refused, 0);
}

#[tokio::test(start_paused = true)]
async fn a_limit_lowered_below_the_queue_sheds_the_oldest_to_admit_and_refuses_nothing() {
    let config = Config::builder()
        .class(ClassSpec::new("bulk", 1_000).with_policy(OverloadPolicy::ShedOldest))
        .adaptive(Adaptive::new(Duration::from_millis(10)))
        .build()
        .unwrap();
    let (tx, rx) = channel::<u64>(&config);
    let bulk = ClassId::new(0);
    // 500 queued before anything is measured (the limit is still the capacity).
    for i in 0..500 {
        tx.try_send(i, bulk).unwrap();
    }
    // A thousand a second for 50 ms: the limit comes down to about 10.
    for _ in 0..50 {
        rx.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let limit = rx.admission_limit(bulk);
    assert!(limit <= 20 && rx.len(bulk) > 400, "limit {limit}, queued {}", rx.len(bulk));
    tx.try_send(9_999, bulk).expect("shed-oldest admits by shedding, however far over the limit");
    let stats = rx.stats().total();
    assert_eq!(stats.rejected_full, 0);
    assert!(rx.len(bulk) <= limit, "the queue came down to the limit: {} > {limit}", rx.len(bulk));
    assert_eq!(stats.dead_shed as usize + rx.len(bulk) + 50, 501, "every event queued, shed or received");
    rx.check_invariants();
}

#[tokio::test(start_paused = true)]
async fn batched_receives_measure_the_rate_and_a_starved_class_recovers() {
    let config = Config::builder()
        .class(ClassSpec::new("critical", 10_000).with_policy(OverloadPolicy::Reject))
        .class(ClassSpec::new("bulk", 10_000).with_policy(OverloadPolicy::Reject))
        .scheduler(SchedulerMode::Strict)
        .adaptive(Adaptive::new(TARGET))
        .build()
        .unwrap();
    let (tx, rx) = channel::<u64>(&config);
    // Bulk offers 3,000/s throughout; critical twice the capacity from 2 s to 4 s.
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for i in 0..8_000u64 {
            tick.tick().await;
            if (2_000..4_000).contains(&i) {
                let _ = tx.try_send(i, CRITICAL);
                let _ = tx.try_send(i, CRITICAL);
            }
            for _ in 0..3 {
                let _ = tx.try_send(i, BULK);
            }
        }
    });
    // The consumer takes batches of up to 32, then spends 1 ms per event on them.
    let mut limits = Vec::new();
    let mut buf = Vec::new();
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let n = rx.recv_many(&mut buf, 32).await;
        buf.clear();
        tokio::time::sleep(Duration::from_millis(n as u64)).await;
        if start.elapsed().as_secs() as usize > limits.len() {
            limits.push((rx.admission_limit(BULK), rx.measured_rate(BULK).map(|r| r.round())));
        }
    }
    producer.await.unwrap();
    println!("bulk (limit, rate) each second: {limits:?}");
    let (limit, rate) = *limits.last().unwrap();
    let rate = rate.expect("measured through batches");
    assert!((700.0..=1300.0).contains(&rate), "bulk alone is served at 1,000/s: measured {rate}");
    assert!(limits[3].0 <= 5, "starved by critical, bulk's limit came down: {limits:?}");
    assert!(limit >= 25, "and came back up once critical stopped: {limits:?}");
}

#[tokio::test(start_paused = true)]
async fn waits_past_the_target_lower_the_limit_below_rate_times_target() {
    // Served at 1,000/s, but in bursts: 100 events, then a 100 ms pause. The rate says 50
    // events fit in 50 ms; the pauses make most of them late, and the gain cuts the limit.
    let config = Config::builder()
        .class(ClassSpec::new("bulk", 10_000).with_policy(OverloadPolicy::Reject))
        .adaptive(Adaptive::new(TARGET))
        .build()
        .unwrap();
    let (tx, rx) = channel::<u64>(&config);
    let bulk = ClassId::new(0);
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for i in 0..4_000u64 {
            tick.tick().await;
            for _ in 0..3 {
                let _ = tx.try_send(i, bulk);
            }
        }
    });
    let mut served = 0u64;
    while served < 2_000 {
        rx.recv().await.unwrap();
        served += 1;
        let pause = if served.is_multiple_of(100) { 100 } else { 1 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let (limit, rate) = (rx.admission_limit(bulk), rx.measured_rate(bulk).expect("measured"));
    producer.abort();
    assert!(limit as f64 <= 0.6 * rate * TARGET.as_secs_f64(), "limit {limit} at {rate:.0}/s");
}

#[tokio::test(start_paused = true)]
async fn a_class_that_never_queues_is_never_measured_and_keeps_its_capacity() {
    let config = Config::builder().class(ClassSpec::new("light", 500)).adaptive(Adaptive::new(TARGET)).build().unwrap();
    let (tx, rx) = channel::<u64>(&config);
    let light = ClassId::new(0);
    // One event every 10 ms to a receiver that is always waiting for it.
    let consumer = tokio::spawn(async move {
        while rx.recv().await.is_some() {}
        rx
    });
    for i in 0..300 {
        tx.try_send(i, light).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((tx.measured_rate(light), tx.admission_limit(light)), (None, 500));
    drop(tx);
    let rx = consumer.await.unwrap();
    assert_eq!(rx.measured_rate(light), None);
}

#[tokio::test(start_paused = true)]
async fn a_backpressured_class_taken_in_batches_follows_its_service_rate() {
    // Backpressure: the producer waits for room (nothing is refused), and the consumer takes
    // batches of up to 64 from a class held at a limit of about 20.
    let config = Config::builder()
        .class(ClassSpec::new("bulk", 10_000))
        .adaptive(Adaptive::new(Duration::from_millis(20)))
        .build()
        .unwrap();
    let (tx, rx) = channel::<u64>(&config);
    let bulk = ClassId::new(0);
    let producer = tokio::spawn(async move {
        for i in 0.. {
            if tx.send(i, bulk).await.is_err() {
                break;
            }
        }
    });
    // 1 ms per event for 2 s, then 4 ms per event for 2 s.
    let (start, mut buf) = (tokio::time::Instant::now(), Vec::new());
    let mut fast = None;
    while start.elapsed() < Duration::from_secs(4) {
        let n = rx.recv_many(&mut buf, 64).await as u64;
        buf.clear();
        let per_event = if start.elapsed() < Duration::from_secs(2) { 1 } else { 4 };
        tokio::time::sleep(Duration::from_millis(n * per_event)).await;
        if fast.is_none() && start.elapsed() >= Duration::from_secs(2) {
            fast = Some(rx.measured_rate(bulk).expect("measured"));
        }
    }
    let slow = rx.measured_rate(bulk).expect("measured");
    rx.close();
    producer.await.unwrap();
    assert!(fast.unwrap() > 700.0 && slow < 400.0, "the rate followed the service down: {fast:?} then {slow}");
}

mod controller {
    use std::time::Duration;

    use proptest::prelude::*;
    use veltrix_engine::adaptive::{Controller, Window};
    use veltrix_engine::{Adaptive, ClassSpec, Config};

    const INTERVAL: Duration = Duration::from_millis(20);

    fn controller(capacities: &[usize], target_ms: u64) -> Controller {
        let b = capacities
            .iter()
            .enumerate()
            .fold(Config::builder(), |b, (k, &c)| b.class(ClassSpec::new(format!("c{k}"), c)));
        Controller::new(&b.adaptive(Adaptive::new(Duration::from_millis(target_ms))).build().unwrap()).unwrap()
    }

    fn window() -> impl Strategy<Value = Window> {
        (0u64..5_000, 0u64..5_000, 0u64..300, 0u64..5_000).prop_map(|(delivered, late, busy_ms, busy_delivered)| {
            Window {
                delivered,
                late: late.min(delivered),
                busy: Duration::from_millis(busy_ms),
                busy_delivered: busy_delivered.min(delivered),
            }
        })
    }

    /// An interval with a backlog throughout, `delivered` served.
    fn busy(delivered: u64, late: u64) -> Window {
        Window { delivered, late, busy: INTERVAL, busy_delivered: delivered }
    }

    proptest! {
        #[test]
        fn limits_stay_within_one_and_the_capacity(
            capacities in prop::collection::vec(1usize..100_000, 1..5),
            target_ms in 1u64..1_000,
            steps in prop::collection::vec((0u64..200, prop::collection::vec(window(), 5)), 1..60),
        ) {
            let mut c = controller(&capacities, target_ms);
            for (ms, windows) in steps {
                let limits = c.update(Duration::from_millis(ms), &windows[..capacities.len()]);
                for (&limit, &cap) in limits.iter().zip(&capacities) {
                    prop_assert!(limit >= 1 && limit as usize <= cap, "limit {limit} outside 1..={cap}");
                }
            }
        }

        #[test]
        fn sustained_lateness_never_raises_a_limit(
            rate in 100u64..10_000,
            late_pct in 5u64..=100,
            warm in 1usize..20,
            steps in 1usize..50,
        ) {
            let mut c = controller(&[1_000_000], 100);
            let delivered = rate * INTERVAL.as_millis() as u64 / 1000;
            for _ in 0..warm {
                c.update(INTERVAL, &[busy(delivered, 0)]);
            }
            let mut last = c.limits()[0];
            // Overload: the same service rate, but more than 1 % of the events wait too long.
            let late = busy(delivered, delivered * late_pct / 100);
            for _ in 0..steps {
                let limit = c.update(INTERVAL, &[late])[0];
                prop_assert!(limit <= last, "limit rose from {last} to {limit} while events were late");
                last = limit;
            }
        }

        #[test]
        fn once_the_late_events_stop_the_limit_returns_to_rate_times_target(
            rate in 1_000u64..10_000,
            late_steps in 1usize..100,
        ) {
            let mut c = controller(&[1_000_000], 100);
            let delivered = rate * INTERVAL.as_millis() as u64 / 1000;
            for _ in 0..late_steps {
                c.update(INTERVAL, &[busy(delivered, delivered)]);
            }
            // The gain climbs 10 % per interval from its floor of 0.25: 15 intervals at most.
            for _ in 0..70 {
                c.update(INTERVAL, &[busy(delivered, 0)]);
            }
            // `delivered` per 20 ms, times a 100 ms target.
            let expected = (delivered * 5) as u32;
            prop_assert!(c.limits()[0].abs_diff(expected) <= 1, "limit {} vs {expected}", c.limits()[0]);
        }
    }
}
