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

/// Runs a future to completion on the current thread (the blocking API). Between polls it
/// spins briefly — on a busy channel the other side usually answers within a few hundred
/// nanoseconds, far sooner than a futex round trip — then parks. The waker is created once per
/// thread, so waiting allocates nothing.
#[cfg(not(veltrix_loom))]
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    /// Spins before parking (each spin is a `spin_loop` hint, a few ns).
    const SPINS: u32 = 200;

    struct Parker {
        thread: std::thread::Thread,
        notified: AtomicBool,
    }
    impl Wake for Parker {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.notified.store(true, Ordering::Release);
            self.thread.unpark();
        }
    }
    thread_local! {
        static PARKER: (std::sync::Arc<Parker>, Waker) = {
            let p = std::sync::Arc::new(Parker { thread: std::thread::current(), notified: AtomicBool::new(false) });
            (p.clone(), Waker::from(p))
        };
    }

    let mut fut = std::pin::pin!(fut);
    PARKER.with(|(parker, waker)| {
        let mut cx = Context::from_waker(waker);
        loop {
            // Cleared before polling: a wake during the poll leaves it set.
            parker.notified.store(false, Ordering::Relaxed);
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            let mut spins = 0;
            while !parker.notified.load(Ordering::Acquire) {
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::park();
                }
            }
        }
    })
}
