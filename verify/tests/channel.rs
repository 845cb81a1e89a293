//! Channel behaviour under real concurrency (multi-threaded tokio, OS threads) and on tokio's
//! paused clock. Exhaustive interleavings are loom's job (`loom.rs`); these check the same
//! guarantees at scale and through the public API only.
#![cfg(not(veltrix_loom))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use veltrix_engine::{
    ClassId, ClassSpec, Config, DeadLetter, DeadLetterReason, OverloadPolicy, SendError, TrySendError, channel,
    channel_with_sink,
};

fn classes(specs: impl IntoIterator<Item = ClassSpec>) -> Config {
    specs.into_iter().fold(Config::builder(), |b, s| b.class(s)).build().unwrap()
}

type Dead<E> = Arc<Mutex<Vec<DeadLetter<E>>>>;

fn sink<E: Send + 'static>() -> (Dead<E>, impl Fn(DeadLetter<E>) + Send + Sync + 'static) {
    let dead: Dead<E> = Arc::default();
    let d = dead.clone();
    (dead, move |letter| d.lock().unwrap().push(letter))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpmc_under_backpressure_delivers_everything_once_in_producer_order() {
    const PRODUCERS: u64 = 4;
    const PER: u64 = 5_000;
    let config = classes((0..4).map(|k| ClassSpec::new(format!("c{k}"), 4).with_weight(k + 1)));
    let (tx, rx) = channel::<(u64, u64)>(&config);
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let tx = tx.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..PER {
                tx.send((p, i), ClassId::new((p % 4) as usize)).await.unwrap();
            }
        }));
    }
    drop(tx);
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let rx = rx.clone();
        consumers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = Vec::with_capacity(8);
            while rx.recv_many(&mut buf, 8).await > 0 {
                seen.extend(buf.drain(..).map(|d| d.event));
            }
            seen
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let mut all = Vec::new();
    for c in consumers {
        let seen = c.await.unwrap();
        // Each consumer sees every producer's events in send order.
        for p in 0..PRODUCERS {
            let mine: Vec<u64> = seen.iter().filter(|(q, _)| *q == p).map(|(_, i)| *i).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "producer {p} out of order");
        }
        all.extend(seen);
    }
    all.sort_unstable();
    let want: Vec<(u64, u64)> = (0..PRODUCERS).flat_map(|p| (0..PER).map(move |i| (p, i))).collect();
    assert_eq!(all, want, "every event exactly once");
    let stats = rx.stats().total();
    assert!(stats.conserved());
    assert_eq!((stats.delivered, stats.rejected(), stats.dead_lettered()), (PRODUCERS * PER, 0, 0));
}

#[test]
fn blocking_variants_work_across_os_threads() {
    let config = classes([ClassSpec::new("only", 2)]);
    let (tx, rx) = channel::<u32>(&config);
    let producer = std::thread::spawn(move || {
        for i in 0..1_000 {
            tx.send_blocking(i, ClassId::new(0)).unwrap();
        }
    });
    let got: Vec<u32> = std::iter::from_fn(|| rx.recv_blocking().map(|d| d.event)).collect();
    producer.join().unwrap();
    assert_eq!(got, (0..1_000).collect::<Vec<_>>());
}

#[test]
fn shed_oldest_hands_every_displaced_event_to_the_sink() {
    let config = classes([ClassSpec::new("bulk", 3).with_policy(OverloadPolicy::ShedOldest)]);
    let (dead, sink) = sink();
    let (tx, rx) = channel_with_sink::<u32>(&config, sink);
    for i in 0..10 {
        tx.try_send(i, ClassId::new(0)).unwrap();
    }
    let kept: Vec<u32> = std::iter::from_fn(|| rx.try_recv().ok().map(|d| d.event)).collect();
    assert_eq!(kept, [7, 8, 9], "the newest survive");
    let shed: Vec<(u32, DeadLetterReason)> = dead.lock().unwrap().iter().map(|d| (d.event, d.reason)).collect();
    assert_eq!(shed, (0..7).map(|i| (i, DeadLetterReason::Shed)).collect::<Vec<_>>());
    let s = rx.stats().total();
    assert_eq!((s.accepted, s.delivered, s.dead_shed), (10, 3, 7));
}

#[test]
fn reject_policy_hands_the_event_back() {
    let config = classes([ClassSpec::new("strict", 1).with_policy(OverloadPolicy::Reject)]);
    let (tx, _rx) = channel::<String>(&config);
    tx.try_send("first".into(), ClassId::new(0)).unwrap();
    let back = tx.try_send("second".into(), ClassId::new(0)).unwrap_err();
    assert!(matches!(back, TrySendError::Rejected(_)));
    assert_eq!(back.into_inner(), "second");
    let blocked = tokio_test_block_on(tx.send("third".into(), ClassId::new(0)));
    assert_eq!(blocked, Err(SendError::Rejected("third".to_string())));
    assert_eq!(tx.stats().total().rejected_policy, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_receiver_wakes_senders_and_dead_letters_the_backlog() {
    let config = classes([ClassSpec::new("c", 2)]);
    let (dead, sink) = sink();
    let (tx, rx) = channel_with_sink::<u32>(&config, sink);
    tx.try_send(1, ClassId::new(0)).unwrap();
    tx.try_send(2, ClassId::new(0)).unwrap();
    let tx2 = tx.clone();
    let blocked = tokio::spawn(async move { tx2.send(3, ClassId::new(0)).await });
    tokio::task::yield_now().await;
    drop(rx);
    assert_eq!(blocked.await.unwrap(), Err(SendError::Closed(3)), "the blocked sender gets its event back");
    let closed: Vec<(u32, DeadLetterReason)> = dead.lock().unwrap().iter().map(|d| (d.event, d.reason)).collect();
    assert_eq!(closed, [(1, DeadLetterReason::Closed), (2, DeadLetterReason::Closed)]);
    let s = tx.stats().total();
    assert!(s.conserved());
    assert_eq!((s.dead_closed, s.rejected_closed, s.queued), (2, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn expired_events_go_to_the_dead_letter_and_never_reach_a_receiver() {
    let config = classes([ClassSpec::new("c", 8).with_deadline(Duration::from_millis(50))]);
    let (dead, sink) = sink();
    let (tx, rx) = channel_with_sink::<u32>(&config, sink);
    tx.try_send(1, ClassId::new(0)).unwrap();
    let permit = tx.reserve(ClassId::new(0)).await.unwrap();
    permit.send_with_deadline(2, veltrix_engine::Instant::now() + Duration::from_millis(200));
    tokio::time::advance(Duration::from_millis(100)).await;
    let d = rx.recv().await.unwrap();
    assert_eq!(d.event, 2, "1 expired at 50 ms, 2 has until 200 ms");
    let expired: Vec<(u32, DeadLetterReason)> = dead.lock().unwrap().iter().map(|d| (d.event, d.reason)).collect();
    assert_eq!(expired, [(1, DeadLetterReason::Expired)]);
}

#[tokio::test(start_paused = true)]
async fn codel_sheds_a_standing_queue_and_stops_once_it_drains() {
    let ms = Duration::from_millis;
    let config = classes([ClassSpec::new("c", 64).with_codel(ms(5), ms(20))]);
    let (dead, sink) = sink();
    let (tx, rx) = channel_with_sink::<u32>(&config, sink);
    // Arrivals every 1 ms, service every 2 ms: the queue stands and grows.
    let mut delivered = 0;
    for i in 0..200u32 {
        tx.try_send(i, ClassId::new(0)).unwrap();
        tokio::time::advance(ms(1)).await;
        if i % 2 == 1 && rx.try_recv().is_ok() {
            delivered += 1;
        }
    }
    let shed = dead.lock().unwrap().len();
    assert!(shed > 0, "a standing queue above target must be shed");
    assert!(dead.lock().unwrap().iter().all(|d| d.reason == DeadLetterReason::Codel));
    // Drain the rest (CoDel may still shed stale heads): the ledger accounts for all of it.
    while rx.try_recv().is_ok() {
        delivered += 1;
    }
    let s = rx.stats().total();
    assert!(s.conserved());
    assert_eq!(s.delivered, delivered);
    assert_eq!(s.dead_codel as usize, dead.lock().unwrap().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_lets_permits_and_backlog_drain_then_ends() {
    let config = classes([ClassSpec::new("c", 4)]);
    let (tx, rx) = channel::<u32>(&config);
    tx.try_send(1, ClassId::new(0)).unwrap();
    let permit = tx.try_reserve(ClassId::new(0)).unwrap();
    rx.close();
    assert_eq!(tx.try_send(9, ClassId::new(0)), Err(TrySendError::Closed(9)));
    assert_eq!(rx.recv().await.map(|d| d.event), Some(1));
    let consumer = tokio::spawn(async move { rx.recv().await.map(|d| d.event) });
    tokio::task::yield_now().await;
    permit.send(2);
    assert_eq!(consumer.await.unwrap(), Some(2), "a permit taken before close still delivers");
}

fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

/// Sends read the clock only where a decision or the caller needs the time: a class with a
/// default deadline or CoDel, or a configuration that asks for enqueue times.
#[tokio::test(start_paused = true)]
async fn enqueue_times_are_recorded_where_needed() {
    let config = classes([
        ClassSpec::new("plain", 4),
        ClassSpec::new("deadline", 4).with_deadline(Duration::from_millis(50)),
        ClassSpec::new("codel", 4).with_codel(Duration::from_millis(5), Duration::from_millis(100)),
    ]);
    let (tx, rx) = channel::<u32>(&config);
    let sent_at = tokio::time::Instant::now();
    for k in 0..3 {
        tx.try_send(k, ClassId::new(k as usize)).unwrap();
    }
    let mut seen = Vec::new();
    while let Ok(d) = rx.try_recv() {
        seen.push((d.event, d.enqueued_at));
    }
    seen.sort_by_key(|(e, _)| *e);
    assert_eq!(seen, [(0, None), (1, Some(sent_at)), (2, Some(sent_at))]);

    let recording = Config::builder().class(ClassSpec::new("plain", 4)).record_enqueue_times(true).build().unwrap();
    assert!(recording.records_enqueue_times() && !config.records_enqueue_times());
    let (tx, rx) = channel::<u32>(&recording);
    tx.try_send(7, ClassId::new(0)).unwrap();
    tokio::time::advance(Duration::from_millis(3)).await;
    assert_eq!(rx.try_recv().unwrap().enqueued_at, Some(sent_at));
}

/// A dead letter handed to a slow sink during a receive must not make the receive use a time
/// read before the sink ran: the clock is read again after every sink call, so an event whose
/// deadline passed while the sink worked is expired, not delivered late. (With one time read per
/// receive, event 2 came out ~20 ms past its deadline.)
#[test]
fn a_slow_sink_does_not_let_a_later_event_out_past_its_deadline() {
    use std::time::Instant as StdInstant;
    let config = classes([ClassSpec::new("c", 8)]);
    let (dead, record) = sink::<u32>();
    let (tx, rx) = channel_with_sink(&config, move |d: DeadLetter<u32>| {
        std::thread::sleep(Duration::from_millis(30));
        record(d)
    });
    let c = ClassId::new(0);
    let t = tokio::time::Instant::now();
    tx.try_send_with_deadline(1, c, Some(t + Duration::from_millis(1))).unwrap();
    tx.try_send_with_deadline(2, c, Some(t + Duration::from_millis(10))).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    let started = StdInstant::now();
    let got = rx.try_recv();
    assert!(started.elapsed() >= Duration::from_millis(30), "the sink ran during the receive");
    assert_eq!(got.err(), Some(veltrix_engine::TryRecvError::Empty), "2 expired while the sink slept");
    let dead: Vec<_> = dead.lock().unwrap().iter().map(|d| (d.event, d.reason)).collect();
    assert_eq!(dead, [(1, DeadLetterReason::Expired), (2, DeadLetterReason::Expired)]);
}

/// A sink that panics does not unwind into the sender or receiver whose operation produced the
/// dead letter: the operation completes, the dead letter is counted, the panic is counted.
#[test]
fn a_panicking_sink_is_contained_by_the_channel() {
    let config = classes([ClassSpec::new("c", 1).with_policy(OverloadPolicy::ShedOldest)]);
    let (tx, rx) = channel_with_sink(&config, |d: DeadLetter<u32>| panic!("sink refuses {}", d.event));
    let c = ClassId::new(0);
    tx.try_send(1, c).unwrap();
    tx.try_send(2, c).unwrap(); // sheds 1: the sink panics inside try_send
    tx.try_send_with_deadline(3, c, Some(veltrix_engine::Instant::now())).unwrap(); // sheds 2
    assert_eq!(rx.try_recv().unwrap_err(), veltrix_engine::TryRecvError::Empty, "3 expired at dequeue");
    let s = rx.stats();
    assert_eq!((s.class(c).dead_shed, s.class(c).dead_expired), (2, 1));
    assert_eq!(s.sink_panics(), 3);
    rx.check_invariants();
}

/// The blocking variants wait for room (or for events) on plain threads, and the ledger counts
/// a send future dropped while it waited as cancelled.
#[test]
fn blocking_variants_wait_and_cancelled_sends_are_counted() {
    let config = classes([ClassSpec::new("c", 1)]);
    let (tx, rx) = veltrix_engine::channel::<u32>(&config);
    let c = ClassId::new(0);
    tx.try_send(0, c).unwrap();
    let deadline = veltrix_engine::Instant::now() + Duration::from_secs(60);
    let producer = {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let permit = tx.reserve_blocking(c).unwrap(); // waits: the class is full
            permit.send(1);
            tx.send_blocking_with_deadline(2, c, Some(deadline)).unwrap();
        })
    };
    let mut got = Vec::new();
    while got.len() < 3 {
        let mut buf = Vec::new();
        assert!(rx.recv_many_blocking(&mut buf, 8) > 0);
        got.extend(buf.into_iter().map(|d| (d.event, d.deadline)));
    }
    producer.join().unwrap();
    assert_eq!(got, [(0, None), (1, None), (2, Some(deadline))]);
    // A send that waits, then is dropped.
    tx.try_send(3, c).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let waited = tokio::time::timeout(Duration::from_millis(1), tx.send(4, c)).await;
        assert!(waited.is_err(), "the class is full: the send waits");
    });
    let s = *rx.stats().class(c);
    assert_eq!((s.offered, s.accepted, s.cancelled), (5, 4, 1));
    assert!(s.conserved());
}

/// Regression (found by `ci/soak`): a receive that already holds deliveries must not call the
/// sink before handing them out — a slow sink made the events it held late past their
/// deadlines. It stops at the dead head and leaves it for the next receive.
#[test]
fn deliveries_are_not_held_back_behind_a_slow_sink() {
    use veltrix_engine::Instant;
    let config = classes([ClassSpec::new("c", 8)]);
    let (dead, record) = sink::<u32>();
    let (tx, rx) = channel_with_sink(&config, move |d: DeadLetter<u32>| {
        std::thread::sleep(Duration::from_millis(200));
        record(d)
    });
    let (c, t) = (ClassId::new(0), Instant::now());
    tx.try_send_with_deadline(1, c, Some(t + Duration::from_millis(100))).unwrap();
    tx.try_send_with_deadline(2, c, Some(t + Duration::from_millis(1))).unwrap();
    tx.try_send(3, c).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let mut buf = Vec::new();
    assert_eq!(rx.recv_many_blocking(&mut buf, 8), 1, "stops at the expired head");
    let handed_out = Instant::now();
    assert!(handed_out < buf[0].deadline.unwrap(), "event 1 handed out {:?} after t", handed_out - t);
    assert!(dead.lock().unwrap().is_empty(), "the sink has not run yet");
    // The next receive dead-letters the held head first, then delivers what follows.
    buf.clear();
    assert_eq!(rx.recv_many_blocking(&mut buf, 8), 1);
    assert_eq!(buf[0].event, 3);
    let reasons: Vec<_> = dead.lock().unwrap().iter().map(|d| (d.event, d.reason)).collect();
    assert_eq!(reasons, [(2, DeadLetterReason::Expired)]);
}
