//! Channel behaviour under real concurrency (multi-threaded tokio, OS threads) and on tokio's
//! paused clock. Exhaustive interleavings are loom's job (`loom.rs`); these check the same
//! guarantees at scale and through the public API only.
#![cfg(not(veltrix_loom))]

use std::future::Future;
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

/// What users read off the handles: the accessors on both sides and the `Debug` output.
#[test]
fn accessors_and_debug_output_describe_the_channel() {
    let config = classes([ClassSpec::new("a", 3), ClassSpec::new("b", 5)]);
    let (tx, rx) = veltrix_engine::channel::<u32>(&config);
    let (a, b) = (ClassId::new(0), ClassId::new(1));
    assert_eq!((tx.capacity(a), tx.capacity(b)), (3, 5));
    assert_eq!((rx.capacity(a), rx.capacity(b)), (3, 5));
    assert!(tx.is_empty() && rx.is_empty());
    assert!(!tx.is_closed() && !rx.is_closed());
    assert_eq!(format!("{tx:?}"), "Sender { .. }");
    assert_eq!(format!("{rx:?}"), "Receiver { .. }");

    let permit = tx.try_reserve(b).unwrap();
    assert_eq!(format!("{permit:?}"), "Permit { class: ClassId(1), .. }");
    permit.send(7);
    assert!(!tx.is_empty() && !rx.is_empty());
    assert_eq!((tx.len(a), tx.len(b), rx.len(b)), (0, 1, 1));

    let mut ticket = veltrix_engine::ReserveTicket::default();
    assert_eq!(format!("{ticket:?}"), "ReserveTicket { waiting: false }");
    let owned = poll_once_reserve(&tx, a, &mut ticket).expect("class a has room");
    assert_eq!(format!("{owned:?}"), "OwnedPermit { class: ClassId(0), .. }");
    drop(owned);

    tx.close();
    assert!(tx.is_closed() && rx.is_closed());
    assert_eq!(rx.try_recv().unwrap().event, 7, "close lets the backlog drain");
}

fn poll_once_reserve<E>(
    tx: &veltrix_engine::Sender<E>,
    class: ClassId,
    ticket: &mut veltrix_engine::ReserveTicket<E>,
) -> Option<veltrix_engine::OwnedPermit<E>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match tx.poll_reserve_owned(&mut cx, class, ticket) {
        std::task::Poll::Ready(result) => Some(result.unwrap()),
        std::task::Poll::Pending => None,
    }
}

/// A reservation that is dropped unused gives its slot back, and a ticket dropped while it
/// waited passes its place in line on: the next waiter is woken by the freed slot.
#[tokio::test(start_paused = true)]
async fn unused_permits_and_dropped_tickets_give_back_what_they_held() {
    let config = classes([ClassSpec::new("c", 1)]);
    let (tx, rx) = veltrix_engine::channel::<u32>(&config);
    let c = ClassId::new(0);
    let mut ticket = veltrix_engine::ReserveTicket::default();
    let owned = poll_once_reserve(&tx, c, &mut ticket).unwrap();
    assert!(matches!(tx.try_send(0, c), Err(TrySendError::Full(0))), "the permit holds the only slot");
    drop(owned);
    tx.try_send(1, c).expect("the dropped permit gave its slot back");
    assert_eq!(rx.recv().await.unwrap().event, 1);

    // A sender waiting for the slot a permit holds is woken when the permit is dropped.
    let owned = poll_once_reserve(&tx, c, &mut ticket).unwrap();
    let sender = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(1, c).await }
    });
    tokio::task::yield_now().await;
    assert!(!sender.is_finished(), "the permit holds the only slot");
    drop(owned);
    tokio::time::timeout(Duration::from_secs(1), sender)
        .await
        .expect("the dropped permit woke the waiting sender")
        .unwrap()
        .unwrap();

    // The class is full: a ticket queues, then a send queues behind it.
    let mut waiting = veltrix_engine::ReserveTicket::default();
    assert!(poll_once_reserve(&tx, c, &mut waiting).is_none());
    assert_eq!(format!("{waiting:?}"), "ReserveTicket { waiting: true }");
    let sender = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(2, c).await }
    });
    tokio::task::yield_now().await;
    drop(waiting);
    assert_eq!(rx.recv().await.unwrap().event, 1);
    tokio::time::timeout(Duration::from_secs(1), sender)
        .await
        .expect("the send behind the dropped ticket was woken")
        .unwrap()
        .unwrap();
    assert_eq!(rx.try_recv().unwrap().event, 2);
}

struct WakeCount(std::sync::atomic::AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A receiver sleeping on an empty channel is not woken when a reservation is given back
/// unused (there is nothing for it), and is woken when that was the last one of a closed
/// channel: then it sees the end.
#[test]
fn a_returned_reservation_wakes_a_receiver_only_when_the_channel_ends() {
    let (tx, rx) = veltrix_engine::channel::<u32>(&classes([ClassSpec::new("c", 2)]));
    let c = ClassId::new(0);
    let count = Arc::new(WakeCount(std::sync::atomic::AtomicUsize::new(0)));
    let waker = std::task::Waker::from(count.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let woken = || count.0.load(std::sync::atomic::Ordering::SeqCst);
    let mut recv = std::pin::pin!(rx.recv());
    assert!(recv.as_mut().poll(&mut cx).is_pending());

    drop(tx.try_reserve(c).unwrap());
    assert_eq!(woken(), 0, "an unused reservation of an open channel is nothing to receive");

    let permit = tx.try_reserve(c).unwrap();
    tx.close();
    let after_close = woken();
    assert!(recv.as_mut().poll(&mut cx).is_pending(), "an open reservation may still be filled");
    drop(permit);
    assert!(woken() > after_close, "the last reservation's return ends the channel");
    assert!(matches!(recv.as_mut().poll(&mut cx), std::task::Poll::Ready(None)));
}

/// A reservation given back unused wakes the sender waiting for its slot — also when a
/// receiver sleeps at the same time (the class is full of reservations, nothing is queued):
/// senders and receivers wait in separate lists, so the wake-up reaches the sender.
#[test]
fn a_returned_reservation_wakes_the_sender_waiting_for_its_slot() {
    let (tx, rx) = veltrix_engine::channel::<u32>(&classes([ClassSpec::new("a", 4), ClassSpec::new("b", 1)]));
    let b = ClassId::new(1);
    let counter = || Arc::new(WakeCount(std::sync::atomic::AtomicUsize::new(0)));
    let (receiver_wakes, sender_wakes) = (counter(), counter());
    let receiver_waker = std::task::Waker::from(receiver_wakes.clone());
    let sender_waker = std::task::Waker::from(sender_wakes.clone());
    let mut recv = std::pin::pin!(rx.recv());
    assert!(recv.as_mut().poll(&mut std::task::Context::from_waker(&receiver_waker)).is_pending());

    let permit = tx.try_reserve(b).unwrap();
    let mut send = std::pin::pin!(tx.send(7, b));
    let mut send_cx = std::task::Context::from_waker(&sender_waker);
    assert!(send.as_mut().poll(&mut send_cx).is_pending(), "b is full of the reservation");
    drop(permit);
    assert_eq!(sender_wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1, "the sender is woken");
    assert!(matches!(send.as_mut().poll(&mut send_cx), std::task::Poll::Ready(Ok(()))));
    let got = recv.as_mut().poll(&mut std::task::Context::from_waker(&receiver_waker));
    assert!(matches!(got, std::task::Poll::Ready(Some(d)) if d.event == 7));
}

/// A shedding sender that found its class full of reservations only (nothing queued to shed)
/// waits, and is woken when a permit is filled: now there is an event to shed.
#[test]
fn a_filled_permit_wakes_a_shedding_sender_that_had_nothing_to_shed() {
    let config = classes([ClassSpec::new("c", 1).with_policy(OverloadPolicy::ShedOldest)]);
    let (dead, sink) = sink::<u32>();
    let (tx, rx) = channel_with_sink(&config, sink);
    let c = ClassId::new(0);
    let permit = tx.try_reserve(c).unwrap();
    let wakes = Arc::new(WakeCount(std::sync::atomic::AtomicUsize::new(0)));
    let waker = std::task::Waker::from(wakes.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let mut send = std::pin::pin!(tx.send(2, c));
    assert!(send.as_mut().poll(&mut cx).is_pending(), "a reservation cannot be shed");
    permit.send(1);
    assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1, "the filled permit woke the sender");
    assert!(matches!(send.as_mut().poll(&mut cx), std::task::Poll::Ready(Ok(()))));
    assert_eq!(
        dead.lock().unwrap().iter().map(|d| (d.event, d.reason)).collect::<Vec<_>>(),
        [(1, DeadLetterReason::Shed)]
    );
    assert_eq!(rx.try_recv().unwrap().event, 2);
}

fn wake_counter() -> (Arc<WakeCount>, std::task::Waker) {
    let count = Arc::new(WakeCount(std::sync::atomic::AtomicUsize::new(0)));
    let waker = std::task::Waker::from(count.clone());
    (count, waker)
}

fn wakes(count: &WakeCount) -> usize {
    count.0.load(std::sync::atomic::Ordering::SeqCst)
}

/// A receive dropped after it was woken passes the wake-up on to the next sleeping receiver.
#[test]
fn a_woken_receive_that_is_dropped_passes_its_wake_up_on() {
    let (tx, rx) = veltrix_engine::channel::<u32>(&classes([ClassSpec::new("c", 4)]));
    let ((first, first_waker), (second, second_waker)) = (wake_counter(), wake_counter());
    let mut a = Box::pin(rx.recv());
    let mut b = std::pin::pin!(rx.recv());
    assert!(a.as_mut().poll(&mut std::task::Context::from_waker(&first_waker)).is_pending());
    assert!(b.as_mut().poll(&mut std::task::Context::from_waker(&second_waker)).is_pending());
    tx.try_send(1, ClassId::new(0)).unwrap();
    assert_eq!((wakes(&first), wakes(&second)), (1, 0), "one event wakes one receiver");
    drop(a);
    assert_eq!(wakes(&second), 1, "the dropped receive passed its wake-up on");
    let got = b.as_mut().poll(&mut std::task::Context::from_waker(&second_waker));
    assert!(matches!(got, std::task::Poll::Ready(Some(d)) if d.event == 1));
}

/// A send dropped after it was woken passes the wake-up on to the next waiting sender; a send
/// that used its wake-up wakes nobody else.
#[test]
fn a_woken_send_passes_its_wake_up_on_only_if_it_does_not_use_it() {
    let (tx, rx) = veltrix_engine::channel::<u32>(&classes([ClassSpec::new("c", 1)]));
    let c = ClassId::new(0);
    tx.try_send(0, c).unwrap();
    let counters = [wake_counter(), wake_counter(), wake_counter()];
    let cx = |i: usize| std::task::Context::from_waker(&counters[i].1);
    let mut s0 = std::pin::pin!(tx.send(10, c));
    let mut s1 = Box::pin(tx.send(11, c));
    let mut s2 = std::pin::pin!(tx.send(12, c));
    assert!(s0.as_mut().poll(&mut cx(0)).is_pending());
    assert!(s1.as_mut().poll(&mut cx(1)).is_pending());
    assert!(s2.as_mut().poll(&mut cx(2)).is_pending());
    let count = |i: usize| wakes(&counters[i].0);

    assert_eq!(rx.try_recv().unwrap().event, 0);
    assert_eq!((count(0), count(1), count(2)), (1, 0, 0), "one free slot wakes one sender");
    assert!(matches!(s0.as_mut().poll(&mut cx(0)), std::task::Poll::Ready(Ok(()))));
    assert_eq!((count(1), count(2)), (0, 0), "the woken send used its wake-up: the class is full again");

    assert_eq!(rx.try_recv().unwrap().event, 10);
    assert_eq!((count(1), count(2)), (1, 0));
    drop(s1);
    assert_eq!(count(2), 1, "the dropped send passed its wake-up on");
    assert!(matches!(s2.as_mut().poll(&mut cx(2)), std::task::Poll::Ready(Ok(()))));
    assert_eq!(rx.try_recv().unwrap().event, 12);
    assert_eq!(rx.stats().class(c).cancelled, 1);
}

/// `dead_letter_backlog` hands everything queued to the sink, most critical class first, and
/// says how many.
#[test]
fn dead_lettering_the_backlog_counts_what_it_hands_over() {
    let (dead, sink) = sink::<u32>();
    let config = classes([ClassSpec::new("a", 4), ClassSpec::new("b", 4)]);
    let (tx, rx) = channel_with_sink(&config, sink);
    for (event, class) in [(1, 1), (2, 0), (3, 1)] {
        tx.try_send(event, ClassId::new(class)).unwrap();
    }
    assert_eq!(rx.dead_letter_backlog(DeadLetterReason::Shutdown), 3);
    let letters: Vec<_> = dead.lock().unwrap().iter().map(|d| (d.event, d.reason)).collect();
    assert_eq!(
        letters,
        [(2, DeadLetterReason::Shutdown), (1, DeadLetterReason::Shutdown), (3, DeadLetterReason::Shutdown)]
    );
    assert!(rx.is_empty());
    assert_eq!(rx.dead_letter_backlog(DeadLetterReason::Shutdown), 0);
}

/// A receive that frees several slots at once wakes as many waiting senders; while senders
/// still wait, a reservation given back wakes the next one.
#[test]
fn freed_slots_wake_as_many_senders_and_the_rest_stay_reachable() {
    let (tx, rx) = veltrix_engine::channel::<u32>(&classes([ClassSpec::new("c", 3)]));
    let c = ClassId::new(0);
    tx.try_send(0, c).unwrap();
    tx.try_send(1, c).unwrap();
    let permit = tx.try_reserve(c).unwrap();
    let counters = [wake_counter(), wake_counter(), wake_counter()];
    let cx = |i: usize| std::task::Context::from_waker(&counters[i].1);
    let count = |i: usize| wakes(&counters[i].0);
    let mut sends: Vec<_> = (0..3).map(|i| Box::pin(tx.send(10 + i, c))).collect();
    for (i, send) in sends.iter_mut().enumerate() {
        assert!(send.as_mut().poll(&mut cx(i)).is_pending());
    }
    let mut got = Vec::new();
    let mut noop = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(matches!(std::pin::pin!(rx.recv_many(&mut got, 8)).poll(&mut noop), std::task::Poll::Ready(2)));
    assert_eq!((count(0), count(1), count(2)), (1, 1, 0), "two slots freed, two senders woken");
    drop(permit);
    assert_eq!(count(2), 1, "the third sender still waits and the returned reservation wakes it");
}

/// A receive that finds nothing more queued after its own event wakes no other receiver.
#[test]
fn a_receive_passes_the_baton_only_when_more_is_queued() {
    let (tx, rx) = veltrix_engine::channel::<u32>(&classes([ClassSpec::new("c", 4)]));
    let ((first, first_waker), (second, second_waker)) = (wake_counter(), wake_counter());
    let mut a = std::pin::pin!(rx.recv());
    let mut b = std::pin::pin!(rx.recv());
    assert!(a.as_mut().poll(&mut std::task::Context::from_waker(&first_waker)).is_pending());
    assert!(b.as_mut().poll(&mut std::task::Context::from_waker(&second_waker)).is_pending());
    tx.try_send(1, ClassId::new(0)).unwrap();
    assert_eq!((wakes(&first), wakes(&second)), (1, 0));
    let got = a.as_mut().poll(&mut std::task::Context::from_waker(&first_waker));
    assert!(matches!(got, std::task::Poll::Ready(Some(d)) if d.event == 1));
    assert_eq!(wakes(&second), 0, "nothing is left for the second receiver");
}

/// A sender woken for room in its class that then finds a more critical class full waits on
/// that class instead. The room it was woken for is announced to the next sender of its class,
/// so dropping it loses no wake-up: the other sender still gets through once both classes have
/// room.
#[test]
fn a_woken_sender_blocked_by_another_class_passes_the_room_it_was_woken_for() {
    use std::task::{Context, Poll};
    let (tx, rx) = channel::<u32>(&classes([ClassSpec::new("a", 1), ClassSpec::new("b", 1)]));
    let (a, b) = (ClassId::new(0), ClassId::new(1));
    tx.try_send(1, b).unwrap();
    let ((s_wakes, s_waker), (t_wakes, t_waker)) = (wake_counter(), wake_counter());
    let mut s = Box::pin(tx.send(10, b));
    let mut t = std::pin::pin!(tx.send(11, b));
    assert!(s.as_mut().poll(&mut Context::from_waker(&s_waker)).is_pending());
    assert!(t.as_mut().poll(&mut Context::from_waker(&t_waker)).is_pending());
    assert_eq!(rx.try_recv().unwrap().event, 1, "frees b's slot");
    assert_eq!((wakes(&s_wakes), wakes(&t_wakes)), (1, 0), "one slot, one sender woken");
    tx.try_send(2, a).unwrap();
    assert!(s.as_mut().poll(&mut Context::from_waker(&s_waker)).is_pending(), "a, more critical, is full");
    assert_eq!(wakes(&t_wakes), 1, "b's free slot is announced to b's next sender");
    drop(s);
    assert!(t.as_mut().poll(&mut Context::from_waker(&t_waker)).is_pending(), "a is still full");
    assert_eq!(rx.try_recv().unwrap().event, 2);
    assert_eq!(wakes(&t_wakes), 2, "a drained: the senders it blocked are woken");
    assert!(matches!(t.as_mut().poll(&mut Context::from_waker(&t_waker)), Poll::Ready(Ok(()))));
    assert_eq!(rx.try_recv().unwrap().event, 11);
}

/// A closed channel that still has an open reservation has not ended: taking its (empty)
/// backlog wakes no receiver; giving the reservation back ends it and wakes the receiver.
#[test]
fn a_closed_channel_wakes_its_receiver_only_once_it_has_ended() {
    use std::task::Context;
    let (tx, rx) = channel::<u32>(&classes([ClassSpec::new("c", 2)]));
    let permit = tx.try_reserve(ClassId::new(0)).unwrap();
    tx.close();
    let (count, waker) = wake_counter();
    let mut recv = std::pin::pin!(rx.recv());
    assert!(recv.as_mut().poll(&mut Context::from_waker(&waker)).is_pending(), "a reservation is open");
    assert_eq!(rx.dead_letter_backlog(DeadLetterReason::Shutdown), 0);
    assert_eq!(wakes(&count), 0, "nothing queued and not ended: no wake-up");
    drop(permit);
    assert_eq!(wakes(&count), 1, "the last reservation is gone: the end");
    assert!(matches!(recv.as_mut().poll(&mut Context::from_waker(&waker)), std::task::Poll::Ready(None)));
}

/// The invariants count every way a queued event leaves: delivered, or dead-lettered from the
/// backlog with any reason.
#[test]
fn invariants_hold_whatever_reason_emptied_the_queue() {
    let (tx, rx) = channel::<u32>(&classes([ClassSpec::new("c", 8)]));
    let c = ClassId::new(0);
    let mut id = 0;
    for reason in [DeadLetterReason::Closed, DeadLetterReason::Shutdown, DeadLetterReason::Expired] {
        for _ in 0..2 {
            tx.try_send(id, c).unwrap();
            id += 1;
        }
        assert_eq!(rx.try_recv().unwrap().event, id - 2);
        assert_eq!(rx.dead_letter_backlog(reason), 1);
        rx.check_invariants();
    }
    let t = rx.stats().total();
    assert_eq!((t.delivered, t.dead_lettered(), t.queued), (3, 3, 0));
}
