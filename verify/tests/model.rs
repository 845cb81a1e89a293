//! Proptest state machine: random configurations and random operation sequences run against the
//! real channel (through its non-blocking API, on tokio's paused clock) and the plain reference
//! model in `veltrix_verify::reference`. After every step: identical answers, the channel's
//! ledger equal to the model's own counts, conservation as the model's arithmetic, FIFO per class, no expired event delivered, the starvation bound.
//!
//! Cases: `VELTRIX_PROPTEST_CASES` (default 1024).
#![cfg(not(veltrix_loom))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, FileFailurePersistence};
use tokio::time::Instant;
use veltrix_engine::{
    ClassId, ClassSpec, Config, DeadLetter, DeadLetterReason, OverloadPolicy, Permit, ReserveError, SchedulerMode,
    SendError, TryRecvError, TrySendError, channel_with_sink,
};
use veltrix_verify::reference::{Offer, Reference, Step};

#[derive(Debug, Clone)]
enum Op {
    TrySend(usize),
    /// One poll of the async `send`; a pending send is dropped (cancelled).
    Send(usize),
    Reserve(usize),
    Commit {
        permit: usize,
        deadline_ms: Option<u64>,
    },
    DropPermit(usize),
    TryRecv,
    Recv,
    RecvMany(usize),
    Advance(u64),
    Close,
    DropReceiver,
}

fn spec_strategy() -> impl Strategy<Value = ClassSpec> {
    let policy =
        prop_oneof![Just(OverloadPolicy::Backpressure), Just(OverloadPolicy::Reject), Just(OverloadPolicy::ShedOldest)];
    let codel = proptest::option::weighted(0.3, (1u64..10, 5u64..50));
    (1usize..=8, policy, proptest::option::weighted(0.4, 1u64..50), 1u32..=5, codel).prop_map(
        |(capacity, policy, deadline, weight, codel)| {
            let mut s = ClassSpec::new("", capacity).with_policy(policy).with_weight(weight);
            if let Some(d) = deadline {
                s = s.with_deadline(Duration::from_millis(d));
            }
            if let Some((t, i)) = codel {
                s = s.with_codel(Duration::from_millis(t), Duration::from_millis(i));
            }
            s
        },
    )
}

fn config_strategy() -> impl Strategy<Value = Config> {
    let mode = prop_oneof![
        Just(SchedulerMode::Strict),
        Just(SchedulerMode::Drr),
        (prop_oneof![Just(0.25), Just(0.5), Just(0.75), Just(1.0)], 1u32..=8)
            .prop_map(|(cap, window)| SchedulerMode::CappedStrict { cap, window }),
    ];
    (proptest::collection::vec(spec_strategy(), 1..=6), mode).prop_map(|(specs, mode)| {
        let b = specs.into_iter().enumerate().fold(Config::builder(), |b, (i, mut s)| {
            s.name = format!("c{i}");
            b.class(s)
        });
        b.scheduler(mode).build().expect("generated configs are valid")
    })
}

fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (0usize..6).prop_map(Op::TrySend),
        3 => (0usize..6).prop_map(Op::Send),
        2 => (0usize..6).prop_map(Op::Reserve),
        2 => (0usize..4, proptest::option::weighted(0.5, 0u64..40)).prop_map(|(permit, deadline_ms)| Op::Commit { permit, deadline_ms }),
        1 => (0usize..4).prop_map(Op::DropPermit),
        4 => Just(Op::TryRecv),
        3 => Just(Op::Recv),
        2 => (1usize..6).prop_map(Op::RecvMany),
        3 => (0u64..20).prop_map(Op::Advance),
        1 => Just(Op::Close),
        1 => Just(Op::DropReceiver),
    ];
    proptest::collection::vec(op, 1..120)
}

type Dead = Arc<Mutex<Vec<DeadLetter<u64>>>>;

/// Tracks, per class, events of other classes delivered since it last delivered while backlogged.
struct Starvation {
    since: Vec<u64>,
    bound: Vec<Option<u64>>,
}

impl Starvation {
    fn delivered(&mut self, class: usize, model: &Reference) {
        for (k, since) in self.since.iter_mut().enumerate() {
            if k == class {
                *since = 0;
            } else if model.backlogged(k) {
                *since += 1;
                if let Some(bound) = self.bound[k] {
                    assert!(*since <= bound, "class {k} waited {since} deliveries, bound {bound}");
                }
            }
        }
    }

    fn settle(&mut self, model: &Reference) {
        for (k, since) in self.since.iter_mut().enumerate() {
            if !model.backlogged(k) {
                *since = 0;
            }
        }
    }
}

fn run_case(config: Config, ops: Vec<Op>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async move {
        let dead: Dead = Arc::default();
        let sink = dead.clone();
        let (tx, rx) = channel_with_sink(&config, move |d| sink.lock().unwrap().push(d));
        let mut rx = Some(rx);
        let mut model = Reference::new(&config);
        let start = Instant::now();
        let n = config.len();
        let mut next_id = 0u64;
        let mut permits: Vec<(Permit<'_, u64>, usize)> = Vec::new();
        let mut last_delivered = vec![None::<u64>; n];
        let mut starvation =
            Starvation { since: vec![0; n], bound: (0..n).map(|k| config.starvation_bound(ClassId::new(k))).collect() };
        let mut expect_dead: Vec<(u64, usize, DeadLetterReason)> = Vec::new();

        for op in ops {
            let now = Instant::now() - start;
            match op {
                Op::TrySend(k) => {
                    let k = k % n;
                    let id = next_id;
                    next_id += 1;
                    let got = tx.try_send(id, ClassId::new(k));
                    match model.reserve(k) {
                        Offer::Reserved { shed } => {
                            assert_eq!(got, Ok(()));
                            if let Some(s) = shed {
                                expect_dead.push((s, k, DeadLetterReason::Shed));
                            }
                            if model.commit(k, id, None, now) {
                                expect_dead.push((id, k, DeadLetterReason::Closed));
                            }
                        }
                        refused => {
                            let want = match refused {
                                Offer::Full => TrySendError::Full(id),
                                Offer::Rejected => TrySendError::Rejected(id),
                                _ => TrySendError::Closed(id),
                            };
                            assert_eq!(got, Err(want));
                            model.refuse_send(k, refused);
                        }
                    }
                }
                Op::Send(k) => {
                    let k = k % n;
                    let id = next_id;
                    next_id += 1;
                    let got = poll_once(tx.send(id, ClassId::new(k))).await;
                    match model.reserve(k) {
                        Offer::Reserved { shed } => {
                            assert_eq!(got, Some(Ok(())));
                            if let Some(s) = shed {
                                expect_dead.push((s, k, DeadLetterReason::Shed));
                            }
                            if model.commit(k, id, None, now) {
                                expect_dead.push((id, k, DeadLetterReason::Closed));
                            }
                        }
                        // The send waited and was dropped with its event: counted as cancelled.
                        Offer::Full => {
                            assert_eq!(got, None, "send must wait");
                            model.cancel_send(k);
                        }
                        refused => {
                            let want = match refused {
                                Offer::Rejected => SendError::Rejected(id),
                                _ => SendError::Closed(id),
                            };
                            assert_eq!(got, Some(Err(want)));
                            model.refuse_send(k, refused);
                        }
                    }
                }
                Op::Reserve(k) => {
                    let k = k % n;
                    let got = tx.try_reserve(ClassId::new(k));
                    match (model.reserve(k), got) {
                        (Offer::Reserved { shed }, Ok(p)) => {
                            if let Some(s) = shed {
                                expect_dead.push((s, k, DeadLetterReason::Shed));
                            }
                            permits.push((p, k));
                        }
                        (Offer::Full, Err(ReserveError::Full))
                        | (Offer::Rejected, Err(ReserveError::Rejected))
                        | (Offer::Closed, Err(ReserveError::Closed)) => model.refuse_reservation(k),
                        (want, got) => panic!("reserve: model {want:?}, channel {got:?}"),
                    }
                }
                Op::Commit { permit, deadline_ms } => {
                    if permits.is_empty() {
                        continue;
                    }
                    let (p, k) = permits.remove(permit % permits.len());
                    let id = next_id;
                    next_id += 1;
                    let deadline = deadline_ms.map(Duration::from_millis);
                    match deadline {
                        Some(d) => p.send_with_deadline(id, start + now + d),
                        None => p.send(id),
                    }
                    if model.commit(k, id, deadline.map(|d| now + d), now) {
                        expect_dead.push((id, k, DeadLetterReason::Closed));
                    }
                }
                Op::DropPermit(i) => {
                    if permits.is_empty() {
                        continue;
                    }
                    let (p, k) = permits.remove(i % permits.len());
                    drop(p);
                    model.cancel(k);
                }
                Op::TryRecv | Op::Recv | Op::RecvMany(_) => {
                    let Some(rx) = &rx else { continue };
                    // `closed`: the channel said it is closed and drained (checked after the replay).
                    let (limit, got, closed) = match op {
                        Op::TryRecv => match rx.try_recv() {
                            Ok(d) => (1, vec![d], false),
                            Err(TryRecvError::Empty) => (1, vec![], false),
                            Err(e) => {
                                assert_eq!(e, TryRecvError::Closed);
                                (1, vec![], true)
                            }
                        },
                        // One poll of the async paths; a pending future is dropped (cancellation).
                        Op::Recv => match poll_once(rx.recv()).await {
                            Some(Some(d)) => (1, vec![d], false),
                            Some(None) => (1, vec![], true),
                            None => (1, vec![], false),
                        },
                        Op::RecvMany(limit) => {
                            let mut buf = Vec::new();
                            let n = poll_once(rx.recv_many(&mut buf, limit)).await;
                            (limit, buf, n == Some(0))
                        }
                        _ => unreachable!(),
                    };
                    // Replay on the model: each delivery after the dead heads before it; if the
                    // channel stopped short of the limit it had exhausted the queue.
                    for (i, d) in got.iter().enumerate() {
                        loop {
                            // Once a receive holds a delivery it stops at a head that would be
                            // dead-lettered: only the first delivery may follow dead heads.
                            let step = if i == 0 { model.pop(now) } else { model.pop_deliverable(now) };
                            match step {
                                Some(Step::Deliver { id, class }) => {
                                    assert_eq!((d.event, d.class.index()), (id, class), "scheduler order");
                                    assert!(d.deadline.is_none_or(|dl| dl > start + now), "expired event delivered");
                                    assert!(last_delivered[class] < Some(id), "FIFO broken in class {class}");
                                    last_delivered[class] = Some(id);
                                    starvation.delivered(class, &model);
                                    break;
                                }
                                Some(Step::Dead { id, class, reason }) => expect_dead.push((id, class, reason)),
                                None => panic!("channel delivered more than the model holds"),
                            }
                        }
                    }
                    if got.is_empty() {
                        // It found nothing: every head it met was dead-lettered.
                        while let Some(step) = model.pop(now) {
                            match step {
                                Step::Dead { id, class, reason } => expect_dead.push((id, class, reason)),
                                Step::Deliver { id, .. } => panic!("model delivers {id}, channel found nothing"),
                            }
                        }
                    } else if got.len() < limit {
                        // It stopped short: nothing queued, or a head it left for the next receive.
                        if let Some(Step::Deliver { id, .. }) = model.pop_deliverable(now) {
                            panic!("model delivers {id}, channel stopped short of its limit");
                        }
                    }
                    assert_eq!(closed, got.is_empty() && model.drained(), "closed-and-drained answer");
                }
                Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                Op::Close => {
                    tx.close();
                    model.close();
                }
                Op::DropReceiver => {
                    if rx.take().is_some() {
                        for (id, class) in model.abandon() {
                            expect_dead.push((id, class, DeadLetterReason::Closed));
                        }
                    }
                }
            }
            starvation.settle(&model);
            // Dead letters: same events, same reasons, same order.
            let got: Vec<_> = dead.lock().unwrap().drain(..).map(|d| (d.event, d.class.index(), d.reason)).collect();
            assert_eq!(got, std::mem::take(&mut expect_dead), "dead letters");
            // Ledgers: the model's own arithmetic holds, and the channel's says the same.
            let stats = tx.stats();
            for k in 0..n {
                model.assert_ledger(k, stats.class(ClassId::new(k)));
            }
            if let Some(rx) = &rx {
                rx.check_invariants();
            }
        }
        drop(permits);
    });
}

/// Polls a future once and drops it: `None` if it was pending.
async fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

fn cases() -> u32 {
    veltrix_verify::proptest_cases(1024)
}

proptest! {
    #![proptest_config(PtConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/model.txt"))),
        ..PtConfig::default()
    })]

    #[test]
    fn channel_matches_the_reference_model(config in config_strategy(), ops in ops_strategy()) {
        run_case(config, ops);
    }

    /// The same machine where the overload rules decide most steps: every class has CoDel and
    /// standing queues form and drain, so CoDel's interval verdicts and its `2 × target`
    /// threshold, the tier's cap and deadlines are exercised in most cases.
    #[test]
    fn overload_rules_match_their_definitions(config in overload_config_strategy(), ops in overload_ops_strategy()) {
        run_case(config, ops);
    }
}

fn overload_config_strategy() -> impl Strategy<Value = Config> {
    let spec = (2usize..=16, 1u64..6, 4u64..30, proptest::option::weighted(0.3, 5u64..60)).prop_map(
        |(capacity, target, interval, deadline)| {
            let mut s = ClassSpec::new("", capacity)
                .with_policy(OverloadPolicy::ShedOldest)
                .with_codel(Duration::from_millis(target), Duration::from_millis(interval));
            if let Some(d) = deadline {
                s = s.with_deadline(Duration::from_millis(d));
            }
            s
        },
    );
    let mode = prop_oneof![
        Just(SchedulerMode::Strict),
        (prop_oneof![Just(0.25), Just(0.5), Just(0.75)], 1u32..=8)
            .prop_map(|(cap, window)| SchedulerMode::CappedStrict { cap, window }),
    ];
    (proptest::collection::vec(spec, 1..=3), mode).prop_map(|(specs, mode)| {
        let b = specs.into_iter().enumerate().fold(Config::builder(), |b, (i, mut s)| {
            s.name = format!("c{i}");
            b.class(s)
        });
        b.scheduler(mode).build().expect("generated configs are valid")
    })
}

fn overload_ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (0usize..3).prop_map(Op::TrySend),
        4 => Just(Op::TryRecv),
        4 => (0u64..4).prop_map(Op::Advance),
    ];
    proptest::collection::vec(op, 20..200)
}
