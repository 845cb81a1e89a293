//! The synchronization shim: `std` normally, loom under `--cfg veltrix_loom`. Every lock, shared
//! pointer and blocking wait of the concurrent layer goes through here, so the loom models in
//! `veltrix-verify` explore exactly the code that ships.

#[cfg(veltrix_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard, atomic::AtomicBool};
#[cfg(not(veltrix_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard, atomic::AtomicBool};

use std::future::Future;

/// Locks, ignoring poison: the state is only mutated through the core's methods, which leave it
/// consistent before anything that could panic (the dead-letter sink runs outside the lock).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a future to completion on the current thread (the blocking API).
#[cfg(veltrix_loom)]
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    loom::future::block_on(fut)
}

/// Runs a future to completion on the current thread (the blocking API), parking between polls.
/// The waker is created once per thread, so waiting allocates nothing.
#[cfg(not(veltrix_loom))]
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};

    struct Parker(std::thread::Thread);
    impl Wake for Parker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    thread_local! {
        static WAKER: Waker = Waker::from(std::sync::Arc::new(Parker(std::thread::current())));
    }

    let mut fut = std::pin::pin!(fut);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    })
}
