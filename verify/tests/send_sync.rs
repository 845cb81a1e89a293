//! Compile-time checks: every public type and future is `Send`/`Sync`/`Unpin` as a user embedding
//! the channel in a multi-threaded runtime expects (tokio's `tests/async_send_sync.rs` idea).
#![cfg(not(veltrix_loom))]
#![allow(dead_code)]

use std::marker::PhantomData;

use veltrix_engine::{
    BuildError, ClassId, ClassStats, Config, DeadLetter, Delivery, Permit, Receiver, ReserveError, SendError, Sender,
    Stats, TryRecvError, TrySendError,
};

/// An event type that is `Send` but neither `Sync` nor `Unpin`.
struct Payload(std::cell::Cell<u8>, std::marker::PhantomPinned);

fn send<T: Send>(_: &T) {}
fn sync<T: Sync>(_: &T) {}
fn unpin<T: Unpin>(_: &T) {}
fn all<T: Send + Sync + Unpin>(_: PhantomData<T>) {}

#[test]
fn handles_and_values_are_send_sync_unpin() {
    all::<Sender<Payload>>(PhantomData);
    all::<Receiver<Payload>>(PhantomData);
    all::<Permit<'static, Payload>>(PhantomData);
    all::<Config>(PhantomData);
    all::<ClassId>(PhantomData);
    all::<Stats>(PhantomData);
    all::<ClassStats>(PhantomData);
    all::<BuildError>(PhantomData);
    all::<ReserveError>(PhantomData);
    all::<TryRecvError>(PhantomData);
    all::<TrySendError<u8>>(PhantomData);
    all::<SendError<u8>>(PhantomData);
    all::<Delivery<u8>>(PhantomData);
    all::<DeadLetter<u8>>(PhantomData);
    all::<veltrix_engine::OwnedPermit<Payload>>(PhantomData);
    all::<veltrix_engine::ReserveTicket<Payload>>(PhantomData);
    all::<veltrix_engine::runtime::Engine<u8>>(PhantomData);
    all::<veltrix_engine::runtime::SubmitService<u8>>(PhantomData);
    all::<veltrix_engine::runtime::EngineStats>(PhantomData);
    all::<veltrix_engine::runtime::ShutdownReport>(PhantomData);
    all::<veltrix_engine::runtime::Routed<u8>>(PhantomData);
    all::<veltrix_engine::SubmitError<u8>>(PhantomData);
}

#[tokio::test]
async fn engine_futures_are_send_so_they_can_be_spawned() {
    use veltrix_engine::runtime::{Engine, Handler, HandlerContext, Outcome, RouteSpec, Submission};
    struct Nop;
    impl Handler<u8> for Nop {
        fn handle(&self, _e: &u8, _cx: HandlerContext) -> impl std::future::Future<Output = Outcome> + Send {
            std::future::ready(Outcome::Ok)
        }
    }
    let engine = Engine::builder().route("r", RouteSpec::new(Config::default()), Nop).build().unwrap();
    let submit = engine.submit(Submission::new("r", ClassId::CRITICAL, 1));
    send(&submit);
    sync(&submit);
    drop(submit);
    let shutdown = engine.shutdown(std::time::Duration::ZERO);
    send(&shutdown);
    shutdown.await;
}

#[test]
fn futures_are_send_so_they_can_be_spawned() {
    let (tx, rx) = veltrix_engine::channel::<Payload>(&Config::default());
    let s = tx.send(Payload(Default::default(), std::marker::PhantomPinned), ClassId::CRITICAL);
    send(&s);
    let r = tx.reserve(ClassId::CRITICAL);
    send(&r);
    sync(&r);
    let v = rx.recv();
    send(&v);
    let mut buf = Vec::new();
    let m = rx.recv_many(&mut buf, 4);
    send(&m);
    unpin(&tx);
}

#[test]
fn receive_futures_are_sync_when_the_event_is() {
    let (_tx, rx) = veltrix_engine::channel::<u8>(&Config::default());
    let v = rx.recv();
    sync(&v);
    let mut buf = Vec::new();
    let m = rx.recv_many(&mut buf, 4);
    sync(&m);
}
