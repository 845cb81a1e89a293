//! Concurrent stress of the channel through its public API: many producers (tasks on a
//! multi-thread runtime, and OS threads on the blocking API) and consumers, random classes and
//! policies, cancelled sends, dropped and filled permits, a close or a receiver drop mid-flight.
//!
//! Each round is seeded (xoshiro256**) and prints its seed. After each round: every event ends
//! exactly once — delivered, dead-lettered with a reason, handed back, or cancelled by its sender
//! — the ledger (and the count of contained sink panics) agrees with what the test saw and is
//! conserved, no event is delivered after its deadline, with one consumer every producer's
//! events of a class arrive in the order sent, and draining a filled channel keeps every
//! class's starvation bound. A watchdog turns a hang into a failure.
//!
//! Budget: `VELTRIX_STRESS_SECS` seconds (default 8); one round: `VELTRIX_STRESS_SEED=<seed>`.
#![cfg(not(veltrix_loom))]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veltrix_engine::{
    ClassId, Config, DeadLetter, DeadLetterReason, Receiver, SendError, Sender, TrySendError, channel_with_sink,
};
use veltrix_sim::rng::Xoshiro256;
use veltrix_verify::stress::{GRACE, random_classes, run_rounds};

/// How one event ended, as the test saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Delivered,
    Dead(DeadLetterReason),
    Returned,
    Cancelled,
}

#[derive(Default)]
struct Seen {
    ends: BTreeMap<u64, Vec<End>>,
    /// Sends refused: full, closed, rejected.
    returned: [u64; 3],
    /// Reservations refused (not events in the ledger).
    reservations_refused: u64,
    /// Events handed back because their reservation was refused: never offered.
    unoffered: u64,
    /// Deliveries the consumer saw after the deadline: (event, how late).
    late: Vec<(u64, Duration)>,
    sink_calls: u64,
}

impl Seen {
    fn end(&mut self, id: u64, end: End) {
        self.ends.entry(id).or_default().push(end);
    }
}

type Shared = Arc<Mutex<Seen>>;

fn id(producer: u64, seq: u64) -> u64 {
    producer << 32 | seq
}

fn pick(rng: &mut Xoshiro256, n: u64) -> u64 {
    rng.next_u64() % n
}

struct Round {
    seed: u64,
    config: Config,
    producers: u64,
    threads: u64,
    per_producer: u64,
    consumers: usize,
    /// After how many microseconds the controller closes the channel or drops its receivers.
    disrupt: Option<(Duration, bool)>,
    /// The sink panics on every n-th call (after recording the letter).
    sink_panics_every: Option<u64>,
    /// Every 100th sink call sleeps 40 ms (blocking work in the sink).
    slow_sink: bool,
}

impl Round {
    fn new(seed: u64) -> Round {
        let mut rng = Xoshiro256::seed(seed);
        let config = random_classes(&mut |n| pick(&mut rng, n), 4, 4);
        let disrupt = match pick(&mut rng, 4) {
            0 => Some((Duration::from_micros(pick(&mut rng, 3_000)), false)),
            1 => Some((Duration::from_micros(pick(&mut rng, 3_000)), true)),
            _ => None,
        };
        Round {
            seed,
            config,
            producers: 1 + pick(&mut rng, 6),
            threads: pick(&mut rng, 3),
            per_producer: 200 + pick(&mut rng, 2_000),
            consumers: 1 + pick(&mut rng, 3) as usize,
            disrupt,
            sink_panics_every: (pick(&mut rng, 3) == 0).then(|| 1 + pick(&mut rng, 4)),
            slow_sink: pick(&mut rng, 4) == 0,
        }
    }
}

/// One producer's life: random classes and ways of sending; every event's end is recorded.
async fn produce(tx: Sender<u64>, p: u64, n: u64, classes: usize, seed: u64, seen: Shared) {
    let mut rng = Xoshiro256::seed(seed ^ (p + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for seq in 0..n {
        let ev = id(p, seq);
        let class = ClassId::new(pick(&mut rng, classes as u64) as usize);
        let end = match pick(&mut rng, 10) {
            0..=1 => match tx.try_send(ev, class) {
                Ok(()) => None,
                Err(e) => Some((e.into_inner(), refusal(&TrySendErrorKind::from(&e)))),
            },
            2 => {
                let deadline = tokio::time::Instant::now() + Duration::from_micros(pick(&mut rng, 2_000));
                match tx.try_send_with_deadline(ev, class, Some(deadline)) {
                    Ok(()) => None,
                    Err(e) => Some((e.into_inner(), refusal(&TrySendErrorKind::from(&e)))),
                }
            }
            3..=6 => match tx.send(ev, class).await {
                Ok(()) => None,
                Err(e) => Some((e.into_inner(), refusal(&TrySendErrorKind::from(&e)))),
            },
            7 => match tokio::time::timeout(Duration::from_micros(pick(&mut rng, 50)), tx.send(ev, class)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some((e.into_inner(), refusal(&TrySendErrorKind::from(&e)))),
                Err(_) => {
                    seen.lock().unwrap().end(ev, End::Cancelled);
                    continue;
                }
            },
            8 => match tx.reserve(class).await {
                Ok(permit) => {
                    permit.send(ev);
                    None
                }
                Err(_) => {
                    // A refused reservation is no event: the event was never offered.
                    let mut s = seen.lock().unwrap();
                    s.end(ev, End::Returned);
                    s.reservations_refused += 1;
                    s.unoffered += 1;
                    continue;
                }
            },
            _ => {
                // A permit taken and dropped unused, then the event offered without waiting.
                if tx.try_reserve(class).is_err() {
                    seen.lock().unwrap().reservations_refused += 1;
                }
                match tx.try_send(ev, class) {
                    Ok(()) => None,
                    Err(e) => Some((e.into_inner(), refusal(&TrySendErrorKind::from(&e)))),
                }
            }
        };
        if let Some((ev, kind)) = end {
            let mut s = seen.lock().unwrap();
            s.end(ev, End::Returned);
            s.returned[kind] += 1;
        }
        if pick(&mut rng, 64) == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// The refusal kinds the ledger counts apart.
enum TrySendErrorKind {
    Full,
    Closed,
    Rejected,
}

impl<E> From<&TrySendError<E>> for TrySendErrorKind {
    fn from(e: &TrySendError<E>) -> Self {
        match e {
            TrySendError::Full(_) => TrySendErrorKind::Full,
            TrySendError::Closed(_) => TrySendErrorKind::Closed,
            _ => TrySendErrorKind::Rejected,
        }
    }
}

impl<E> From<&SendError<E>> for TrySendErrorKind {
    fn from(e: &SendError<E>) -> Self {
        match e {
            SendError::Closed(_) => TrySendErrorKind::Closed,
            _ => TrySendErrorKind::Rejected,
        }
    }
}

impl From<veltrix_engine::ReserveError> for TrySendErrorKind {
    fn from(e: veltrix_engine::ReserveError) -> Self {
        match e {
            veltrix_engine::ReserveError::Full => TrySendErrorKind::Full,
            veltrix_engine::ReserveError::Closed => TrySendErrorKind::Closed,
            _ => TrySendErrorKind::Rejected,
        }
    }
}

fn refusal(kind: &TrySendErrorKind) -> usize {
    match kind {
        TrySendErrorKind::Full => 0,
        TrySendErrorKind::Closed => 1,
        TrySendErrorKind::Rejected => 2,
    }
}

/// One consumer: receives until the end, in a random mix of ways. Records each delivery at once
/// (it may be aborted at any await) and returns the order it received in.
async fn consume(rx: Receiver<u64>, seed: u64, seen: Shared) -> Vec<(u64, ClassId)> {
    let mut rng = Xoshiro256::seed(seed);
    let mut got = Vec::new();
    let mut buf = Vec::new();
    // `now`: read as soon as the receive returned, before any lock the test takes.
    let record = |got: &mut Vec<(u64, ClassId)>, d: veltrix_engine::Delivery<u64>, now: tokio::time::Instant| {
        let mut s = seen.lock().unwrap();
        if let Some(late) = d.deadline.filter(|dl| now >= *dl).map(|dl| now - dl) {
            s.late.push((d.event, late));
        }
        s.end(d.event, End::Delivered);
        got.push((d.event, d.class));
    };
    loop {
        match pick(&mut rng, 3) {
            0 => match rx.recv().await {
                Some(d) => record(&mut got, d, tokio::time::Instant::now()),
                None => return got,
            },
            1 => {
                if rx.recv_many(&mut buf, 1 + pick(&mut rng, 16) as usize).await == 0 {
                    return got;
                }
                let now = tokio::time::Instant::now();
                for d in buf.drain(..) {
                    record(&mut got, d, now);
                }
            }
            _ => match rx.try_recv() {
                Ok(d) => record(&mut got, d, tokio::time::Instant::now()),
                Err(veltrix_engine::TryRecvError::Closed) => return got,
                Err(_) => tokio::task::yield_now().await,
            },
        }
    }
}

fn run_round(round: &Round) {
    let seen: Shared = Arc::default();
    let sink_seen = seen.clone();
    let (panics_every, slow_sink) = (round.sink_panics_every, round.slow_sink);
    let (tx, rx) = channel_with_sink(&round.config, move |d: DeadLetter<u64>| {
        let call = {
            let mut s = sink_seen.lock().unwrap();
            s.end(d.event, End::Dead(d.reason));
            s.sink_calls += 1;
            s.sink_calls
        };
        if slow_sink && call % 100 == 0 {
            std::thread::sleep(Duration::from_millis(40));
        }
        if panics_every.is_some_and(|n| call % n == 0) {
            panic!("stress: the sink panics on call {call}");
        }
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let classes = round.config.len();
    let single_consumer = round.consumers == 1;
    let logs = rt.block_on(async {
        let watchdog = tokio::time::timeout(Duration::from_secs(60), async {
            let consumers: Vec<_> = (0..round.consumers)
                .map(|c| tokio::spawn(consume(rx.clone(), round.seed ^ c as u64, seen.clone())))
                .collect();
            let observer = tx.clone();
            let mut producers = Vec::new();
            for p in 0..round.producers {
                let (tx, seen) = (tx.clone(), seen.clone());
                producers.push(tokio::spawn(produce(tx, p, round.per_producer, classes, round.seed, seen)));
            }
            let threads: Vec<_> = (0..round.threads)
                .map(|t| {
                    let (tx, seen) = (tx.clone(), seen.clone());
                    let p = round.producers + t;
                    let n = round.per_producer;
                    std::thread::spawn(move || {
                        for seq in 0..n {
                            let ev = id(p, seq);
                            let class = ClassId::new((seq % classes as u64) as usize);
                            if let Err(e) = tx.send_blocking(ev, class) {
                                let kind = refusal(&TrySendErrorKind::from(&e));
                                let mut s = seen.lock().unwrap();
                                s.end(e.into_inner(), End::Returned);
                                s.returned[kind] += 1;
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            let mut keep_rx = Some(rx);
            if let Some((after, drop_receivers)) = round.disrupt {
                tokio::time::sleep(after).await;
                if drop_receivers {
                    for c in &consumers {
                        c.abort();
                    }
                    keep_rx = None;
                } else {
                    observer.close();
                }
            }
            for p in producers {
                p.await.unwrap();
            }
            for t in threads {
                tokio::task::spawn_blocking(move || t.join().unwrap()).await.unwrap();
            }
            observer.close();
            let mut logs = Vec::new();
            for c in consumers {
                match c.await {
                    Ok(log) => logs.push(log),
                    Err(e) => assert!(e.is_cancelled(), "consumer failed: {e}"),
                }
            }
            if let Some(rx) = &keep_rx {
                rx.check_invariants();
            }
            let stats = observer.stats();
            drop(keep_rx);
            (logs, stats, observer)
        });
        watchdog.await.unwrap_or_else(|_| panic!("round with seed {} hung for 60 s (deadlock?)", round.seed))
    });
    let (logs, stats, observer) = logs;
    // An aborted consumer's receiver is dropped with its task: the backlog went to the sink.
    let final_stats = observer.stats();
    drop(observer);

    let seen = seen.lock().unwrap();
    let total = round.per_producer * (round.producers + round.threads);
    let delivered = seen.ends.values().filter(|e| e[0] == End::Delivered).count() as u64;
    assert_eq!(seen.ends.len() as u64, total, "every event has an end");
    for (ev, ends) in &seen.ends {
        assert_eq!(ends.len(), 1, "event {ev:#x} ended {ends:?}");
    }
    let t = final_stats.total();
    assert!(t.conserved(), "ledger not conserved: {t:?}");
    for s in stats.classes() {
        assert!(s.conserved(), "mid-run snapshot not conserved: {s:?}");
    }
    let dead = |r| seen.ends.values().filter(|e| e[0] == End::Dead(r)).count() as u64;
    for r in DeadLetterReason::ALL {
        assert_eq!(t.dead(r), dead(r), "{r}: ledger vs sink");
    }
    assert_eq!(t.delivered, delivered, "delivered: ledger vs consumers");
    assert_eq!([t.rejected_full, t.rejected_closed, t.rejected_policy], seen.returned, "refusals: ledger vs senders");
    let cancelled = seen.ends.values().filter(|e| e[0] == End::Cancelled).count() as u64;
    assert_eq!(t.cancelled, cancelled, "cancelled sends: ledger vs senders");
    assert_eq!(t.reservations_refused, seen.reservations_refused, "refused reservations: ledger vs senders");
    assert_eq!(t.offered, total - seen.unoffered, "offered: every event sent, once");
    let panics = round.sink_panics_every.map_or(0, |n| seen.sink_calls / n);
    assert_eq!(final_stats.sink_panics(), panics, "sink panics: counted vs seen");
    let too_late: Vec<_> = seen.late.iter().filter(|(_, by)| *by > GRACE).collect();
    assert!(too_late.is_empty(), "delivered after the deadline: {too_late:?}");
    assert_eq!(t.queued, 0, "nothing left queued");
    if single_consumer && logs.len() == 1 {
        let mut last: BTreeMap<(u64, ClassId), u64> = BTreeMap::new();
        for (ev, class) in &logs[0] {
            let (p, seq) = (ev >> 32, ev & 0xFFFF_FFFF);
            if let Some(prev) = last.insert((p, *class), seq) {
                assert!(prev < seq, "producer {p} class {class:?}: {seq} after {prev}");
            }
        }
    }
}

/// The starvation bound, where "backlogged" is exact: every class is filled, the channel is
/// closed, and one consumer drains it in random batch sizes. While a class still has events
/// (before its last delivery), no more than its bound of other classes' events may be delivered
/// between two of its own.
fn starvation_drain(round: &Round) {
    let (tx, rx) = veltrix_engine::channel::<u64>(&round.config);
    let n = round.config.len();
    // Least critical first: a class admits only while the classes above it have room.
    for k in (0..n).rev() {
        let class = ClassId::new(k);
        for i in 0..tx.capacity(class) as u64 {
            tx.try_send((k as u64) << 32 | i, class).expect("room");
        }
    }
    tx.close();
    let mut rng = Xoshiro256::seed(round.seed ^ 0x5717);
    let mut order = Vec::new();
    let mut buf = Vec::new();
    while rx.recv_many_blocking(&mut buf, 1 + pick(&mut rng, 8) as usize) > 0 {
        order.extend(buf.drain(..).map(|d| d.class.index()));
    }
    for k in 0..n {
        let Some(bound) = round.config.starvation_bound(ClassId::new(k)) else { continue };
        let last = order.iter().rposition(|c| *c == k).expect("class k was filled");
        let mut others = 0;
        for c in &order[..last] {
            if *c == k {
                others = 0;
            } else {
                others += 1;
                assert!(others <= bound, "class {k} waited {others} deliveries, bound {bound} (seed {})", round.seed);
            }
        }
    }
}

#[test]
fn random_rounds_lose_nothing_and_keep_every_promise() {
    run_rounds("stress", |seed| {
        let round = Round::new(seed);
        eprintln!(
            "stress: seed {seed} ({} producers + {} threads × {}, {} consumers, {} classes, disrupt {:?}, sink panics every {:?}, slow sink {}); \
             reproduce: VELTRIX_STRESS_SEED={seed} cargo test -p veltrix-verify --test stress",
            round.producers,
            round.threads,
            round.per_producer,
            round.consumers,
            round.config.len(),
            round.disrupt,
            round.sink_panics_every,
            round.slow_sink
        );
        starvation_drain(&round);
        run_round(&round);
    });
}
