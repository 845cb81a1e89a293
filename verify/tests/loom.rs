//! Loom models of every synchronization path of the channel. Run through `ci/loom`:
//! `RUSTFLAGS="--cfg veltrix_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p veltrix-verify --test loom --profile loom`.
//!
//! Every payload carries a `loom::alloc::Track`, so an event the channel loses (never dropped)
//! fails the model as a leak; ids and final accounting catch double delivery.
#![cfg(veltrix_loom)]

use std::future::Future;

use loom::alloc::Track;
use loom::future::block_on;
use loom::sync::{Arc, Mutex};
use loom::thread;
use veltrix_engine::{
    ClassId, ClassSpec, Config, DeadLetterReason, OverloadPolicy, Receiver, SendError, Sender, TryRecvError,
    channel_with_sink,
};

struct Ev {
    id: u32,
    _track: Track<()>,
}

fn ev(id: u32) -> Ev {
    Ev { id, _track: Track::new(()) }
}

type Dead = Arc<Mutex<Vec<(u32, DeadLetterReason)>>>;

fn chan(classes: &[(usize, OverloadPolicy)]) -> (Sender<Ev>, Receiver<Ev>, Dead) {
    let config = classes
        .iter()
        .enumerate()
        .fold(Config::builder(), |b, (i, &(cap, policy))| {
            b.class(ClassSpec::new(format!("c{i}"), cap).with_policy(policy))
        })
        .build()
        .unwrap();
    let dead: Dead = Arc::new(Mutex::new(Vec::new()));
    let sink = dead.clone();
    let (tx, rx) = channel_with_sink(&config, move |d: veltrix_engine::DeadLetter<Ev>| {
        sink.lock().unwrap().push((d.event.id, d.reason))
    });
    (tx, rx, dead)
}

const C0: ClassId = ClassId::new(0);
const C1: ClassId = ClassId::new(1);
const BP: OverloadPolicy = OverloadPolicy::Backpressure;

/// Everything still queued, in delivery order.
fn drain(rx: &Receiver<Ev>) -> Vec<(u32, ClassId)> {
    let mut out = Vec::new();
    while let Ok(d) = rx.try_recv() {
        out.push((d.event.id, d.class));
    }
    out
}

#[test]
fn two_producers_one_consumer_lose_nothing_and_keep_class_fifo() {
    loom::model(|| {
        // Class 0 never fills, so class 1 is always admissible (see the last model for the other case).
        let (tx, rx, _dead) = chan(&[(3, BP), (1, BP)]);
        let tx2 = tx.clone();
        let a = thread::spawn(move || {
            tx.try_send(ev(1), C0).unwrap();
            tx.try_send(ev(2), C0).unwrap();
        });
        let b = thread::spawn(move || tx2.try_send(ev(10), C1).unwrap());
        let mut got = drain(&rx);
        a.join().unwrap();
        b.join().unwrap();
        got.extend(drain(&rx));
        let class0: Vec<u32> = got.iter().filter(|(_, c)| *c == C0).map(|(id, _)| *id).collect();
        let class1: Vec<u32> = got.iter().filter(|(_, c)| *c == C1).map(|(id, _)| *id).collect();
        assert_eq!(class0, [1, 2], "FIFO within class 0, each exactly once");
        assert_eq!(class1, [10]);
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Closed), "senders gone, drained");
        rx.check_invariants();
    });
}

#[test]
fn blocked_producer_is_woken_by_a_receive() {
    loom::model(|| {
        let (tx, rx, _dead) = chan(&[(1, BP)]);
        tx.try_send(ev(1), C0).unwrap();
        let p = thread::spawn(move || {
            block_on(tx.send(ev(2), C0)).map_err(|_| "closed").unwrap();
        });
        assert_eq!(rx.try_recv().unwrap().event.id, 1);
        // If the receive's wakeup were lost, the producer would never finish: loom reports a deadlock.
        p.join().unwrap();
        assert_eq!(drain(&rx), [(2, C0)]);
    });
}

#[test]
fn close_wakes_a_waiting_sender_and_the_backlog_still_drains() {
    loom::model(|| {
        let (tx, rx, _dead) = chan(&[(1, BP)]);
        tx.try_send(ev(1), C0).unwrap();
        let p = thread::spawn(move || match block_on(tx.send(ev(2), C0)) {
            Err(SendError::Closed(e)) => Some(e.id),
            Err(_) => panic!("rejected"),
            Ok(()) => None,
        });
        rx.close();
        let handed_back = p.join().unwrap();
        // Either the sender got in before the close (then 2 is queued) or it got its event back.
        let mut got = vec![block_on(rx.recv()).unwrap().event.id];
        got.extend(block_on(rx.recv()).map(|d| d.event.id));
        assert!(block_on(rx.recv()).is_none());
        match handed_back {
            Some(2) => assert_eq!(got, [1]),
            None => assert_eq!(got, [1, 2]),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn close_wakes_a_waiting_receiver_after_the_backlog() {
    loom::model(|| {
        let (tx, rx, _dead) = chan(&[(1, BP)]);
        let rx2 = rx.clone();
        let c = thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(d) = block_on(rx2.recv()) {
                got.push(d.event.id);
            }
            got
        });
        tx.try_send(ev(1), C0).unwrap();
        tx.close();
        let mut got = c.join().unwrap();
        got.extend(drain(&rx).into_iter().map(|(id, _)| id));
        assert_eq!(got, [1], "delivered exactly once, after close");
        drop(tx);
    });
}

#[test]
fn permit_dropped_unused_returns_its_slot() {
    loom::model(|| {
        let (tx, rx, _dead) = chan(&[(1, BP)]);
        let tx2 = tx.clone();
        let a = thread::spawn(move || {
            if let Ok(permit) = tx2.try_reserve(C0) {
                drop(permit);
            }
        });
        // May block while the permit holds the only slot: its drop must wake us.
        block_on(tx.send(ev(7), C0)).map_err(|_| "closed").unwrap();
        a.join().unwrap();
        assert!(tx.try_reserve(C0).is_err(), "7 holds the only slot");
        assert_eq!(drain(&rx), [(7, C0)]);
        assert!(tx.try_reserve(C0).is_ok(), "the slot is back");
    });
}

#[test]
fn two_consumers_race_for_the_last_event() {
    loom::model(|| {
        let (tx, rx, _dead) = chan(&[(1, BP)]);
        let rx2 = rx.clone();
        tx.try_send(ev(1), C0).unwrap();
        drop(tx);
        let other = thread::spawn(move || block_on(rx2.recv()).map(|d| d.event.id));
        let mine = block_on(rx.recv()).map(|d| d.event.id);
        let theirs = other.join().unwrap();
        let mut got: Vec<u32> = mine.into_iter().chain(theirs).collect();
        got.sort();
        assert_eq!(got, [1], "exactly one consumer gets it, the other sees the end");
    });
}

#[test]
fn shed_oldest_racing_a_receive_dead_letters_exactly_once() {
    loom::model(|| {
        let (tx, rx, dead) = chan(&[(1, OverloadPolicy::ShedOldest)]);
        tx.try_send(ev(1), C0).unwrap();
        let s = thread::spawn(move || tx.try_send(ev(2), C0).map_err(|_| "refused").unwrap());
        let first = rx.try_recv().ok().map(|d| d.event.id);
        s.join().unwrap();
        let rest = drain(&rx);
        let dead = dead.lock().unwrap().clone();
        let mut seen: Vec<u32> = first.into_iter().chain(rest.iter().map(|(id, _)| *id)).collect();
        seen.extend(dead.iter().map(|(id, _)| *id));
        seen.sort();
        assert_eq!(seen, [1, 2], "each event delivered or dead-lettered, exactly once");
        assert!(dead.iter().all(|(_, r)| *r == DeadLetterReason::Shed));
        let stats = rx.stats();
        assert!(stats.class(C0).conserved());
        assert_eq!(stats.class(C0).dead_shed as usize, dead.len());
    });
}

#[test]
fn lower_class_sender_wakes_when_a_higher_class_drains() {
    loom::model(|| {
        // Class 0 full blocks class 1 (admission in criticality order) although class 1 has room.
        let (tx, rx, _dead) = chan(&[(1, BP), (1, BP)]);
        tx.try_send(ev(1), C0).unwrap();
        let p = thread::spawn(move || block_on(tx.send(ev(2), C1)).map_err(|_| "closed").unwrap());
        assert_eq!(rx.try_recv().unwrap().event.id, 1);
        p.join().unwrap();
        assert_eq!(drain(&rx), [(2, C1)]);
    });
}

#[test]
fn cancelled_waiter_passes_its_wakeup_on() {
    loom::model(|| {
        let (tx, rx, _dead) = chan(&[(1, BP)]);
        let tx2 = tx.clone();
        tx.try_send(ev(1), C0).unwrap();
        // Our send registers as a waiter, then is dropped after the receive may have woken it.
        let mut mine = Box::pin(tx.send(ev(3), C0));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(mine.as_mut().poll(&mut cx).is_pending());
        let other = thread::spawn(move || block_on(tx2.send(ev(2), C0)).map_err(|_| "closed").unwrap());
        assert_eq!(rx.try_recv().unwrap().event.id, 1);
        drop(mine);
        // Had the dropped future swallowed the wakeup, the other sender would sleep forever.
        other.join().unwrap();
        assert_eq!(drain(&rx), [(2, C0)]);
    });
}

#[test]
fn shedding_sender_blocked_by_reservations_wakes_when_a_permit_commits() {
    loom::model(|| {
        // Every slot reserved and nothing queued: a ShedOldest class has nothing to shed, so the
        // sender waits; the commit gives it something to shed.
        let (tx, rx, dead) = chan(&[(1, OverloadPolicy::ShedOldest)]);
        let tx2 = tx.clone();
        let permit = tx.try_reserve(C0).unwrap();
        let b = thread::spawn(move || block_on(tx2.send(ev(2), C0)).map_err(|_| "closed").unwrap());
        permit.send(ev(1));
        b.join().unwrap();
        let rest = drain(&rx);
        let dead = dead.lock().unwrap().clone();
        assert_eq!(rest, [(2, C0)]);
        assert_eq!(dead, [(1, DeadLetterReason::Shed)]);
    });
}

/// The engine's shutdown protocol on the channel: a submitter races `close` + the backlog drain
/// (`dead_letter_backlog(Shutdown)`) and a worker that takes events and reports completions.
/// Every event ends exactly once: returned to the submitter, handled, or dead-lettered; and the
/// ledger read while all this happens is conserved.
#[test]
fn shutdown_races_submissions_and_completions_and_loses_nothing() {
    use veltrix_engine::Completion;
    loom::model(|| {
        let (tx, rx, dead) = chan(&[(2, BP)]);
        let worker_rx = rx.clone();
        let submitter = thread::spawn(move || {
            let mut returned = Vec::new();
            for id in [1, 2] {
                if let Err(e) = tx.try_send(ev(id), C0) {
                    returned.push(e.into_inner().id);
                }
            }
            returned
        });
        let worker = thread::spawn(move || {
            let mut handled = Vec::new();
            for _ in 0..2 {
                if let Ok(d) = worker_rx.try_recv() {
                    worker_rx.complete(d.class, Completion::Handled, 0);
                    handled.push(d.event.id);
                }
            }
            handled
        });
        rx.close();
        assert!(rx.stats().class(C0).conserved());
        rx.dead_letter_backlog(DeadLetterReason::Shutdown);
        let returned = submitter.join().unwrap();
        let handled = worker.join().unwrap();
        // What a worker would still find (a commit that raced the drain) is dead-lettered too.
        rx.dead_letter_backlog(DeadLetterReason::Shutdown);
        let dead: Vec<u32> = dead.lock().unwrap().iter().map(|(id, _)| *id).collect();
        let mut all: Vec<u32> = returned.iter().chain(&handled).chain(&dead).copied().collect();
        all.sort();
        assert_eq!(all, [1, 2], "returned {returned:?} handled {handled:?} dead {dead:?}");
        let s = *rx.stats().class(C0);
        assert!(s.conserved());
        assert_eq!(
            (s.handled, s.dead_shutdown, s.rejected_closed),
            (handled.len() as u64, dead.len() as u64, returned.len() as u64)
        );
        assert_eq!((s.queued, s.in_flight()), (0, 0));
    });
}

/// Two producers race for the only slot of class 1 while the consumer drains the full class 0
/// that blocks it (admission in criticality order): at most one wins, a loser gets its event
/// back as `Full`, nothing is lost, and the published full bits end exact (`check_invariants`).
#[test]
fn two_producers_race_for_the_last_slot_while_a_more_critical_class_drains() {
    loom::model(|| {
        let (tx, rx, _dead) = chan(&[(1, BP), (1, BP)]);
        tx.try_send(ev(1), C0).unwrap();
        let tx2 = tx.clone();
        let a = thread::spawn(move || tx.try_send(ev(3), C1).map_err(|e| e.into_inner().id));
        let b = thread::spawn(move || tx2.try_send(ev(4), C1).map_err(|e| e.into_inner().id));
        let first = rx.try_recv().unwrap();
        assert_eq!((first.event.id, first.class), (1, C0));
        let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
        let refused: Vec<u32> = [ra, rb].into_iter().filter_map(Result::err).collect();
        assert!(!refused.is_empty(), "one slot, two producers: {ra:?} {rb:?}");
        let got = drain(&rx);
        assert_eq!(got.len() + refused.len(), 2, "each event delivered or handed back");
        assert!(got.iter().all(|(id, c)| *c == C1 && !refused.contains(id)));
        let s = *rx.stats().class(C1);
        assert_eq!((s.accepted, s.rejected_full), (got.len() as u64, refused.len() as u64));
        rx.check_invariants();
    });
}

/// A receiver that found the channel empty and went to sleep is woken by a send from another
/// thread, whatever the interleaving (the receivers' handshake: `rx_waiting` and an RMW on
/// the class's tail).
#[test]
fn sleeping_receiver_is_woken_by_a_send() {
    loom::model(|| {
        let (tx, rx, _dead) = chan(&[(1, BP), (1, BP)]);
        let p = thread::spawn(move || {
            tx.try_send(ev(5), C1).unwrap();
        });
        let d = block_on(rx.recv()).expect("an event, then the end");
        assert_eq!(d.event.id, 5);
        p.join().unwrap();
        assert!(block_on(rx.recv()).is_none(), "sender gone: the end");
    });
}

/// One slot, two laps: the producer reuses the slot the consumer just emptied (the release
/// and the head cache must order the consumer's read before the producer's overwrite).
#[test]
fn a_slot_is_reused_only_after_the_consumer_took_it() {
    loom::model(|| {
        let (tx, rx, _dead) = chan(&[(1, BP)]);
        let p = thread::spawn(move || {
            for id in [1, 2] {
                block_on(tx.send(ev(id), C0)).map_err(|_| "closed").unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(d) = block_on(rx.recv()) {
            got.push(d.event.id);
        }
        p.join().unwrap();
        assert_eq!(got, [1, 2]);
    });
}

/// Adaptive admission lowers a class's limit while a producer claims in it: whichever comes
/// first, the class that the claim filled at its new limit is published full, so a less critical
/// class is refused behind it (`check_invariants`). The controller's publication is an RMW on
/// the class's `tail`, ordered against the claim's CAS; the claim reads the limit again after
/// it. (Without that re-read, or with a plain load in place of the RMW, this model fails.)
#[test]
fn a_limit_lowered_while_a_producer_claims_leaves_the_full_bit_right() {
    loom::model(|| {
        let (tx, rx, _dead) = chan(&[(2, BP), (1, BP)]);
        let p = thread::spawn(move || {
            tx.try_send(ev(1), C0).unwrap();
            tx
        });
        rx.publish_admission_limit(C0, 1);
        let tx = p.join().unwrap();
        rx.check_invariants();
        assert!(
            matches!(tx.try_send(ev(2), C1), Err(veltrix_engine::TrySendError::Full(_))),
            "class 1 waits behind the full class 0"
        );
        assert_eq!(drain(&rx).len(), 1);
    });
}
