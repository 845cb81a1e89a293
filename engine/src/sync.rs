//! The synchronization shim: `std` normally, loom under `--cfg veltrix_loom`. Every atomic,
//! lock, shared pointer, cell and blocking wait of the concurrent layer goes through here, so the
//! loom models in `veltrix-verify` explore exactly the code that ships.

#[cfg(veltrix_loom)]
pub(crate) use loom::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize},
};
#[cfg(not(veltrix_loom))]
pub(crate) use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize},
};

use std::future::Future;

/// Locks, ignoring poison: the state is only mutated through methods that leave it consistent
/// before anything that could panic (user code — sinks, handlers — runs outside every lock).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Tells the scheduler this thread waits for another one that is a few instructions away from
/// publishing (a slot being written). Under loom a yield, so the model lets the other thread run.
pub(crate) fn spin_wait() {
    #[cfg(veltrix_loom)]
    loom::thread::yield_now();
    #[cfg(not(veltrix_loom))]
    std::thread::yield_now();
}

/// `UnsafeCell` with loom's closure API, so loom checks every access to a ring slot.
#[cfg(veltrix_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `UnsafeCell` with loom's closure API, so loom checks every access to a ring slot.
#[cfg(not(veltrix_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(veltrix_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Keeps a value on its own cache line (128 bytes: two lines on x86, whose adjacent-line
/// prefetcher would otherwise pair them), so producer-written and consumer-written words do not
/// share one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
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

#[cfg(all(test, not(veltrix_loom)))]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    /// Pending once; its waker is woken by value from another thread after the waiter parked.
    struct WokenLater(bool);

    impl Future for WokenLater {
        type Output = &'static str;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
            if self.0 {
                return Poll::Ready("woken");
            }
            self.0 = true;
            let waker = cx.waker().clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                waker.wake();
            });
            Poll::Pending
        }
    }

    #[test]
    fn block_on_parks_until_woken_by_value() {
        assert_eq!(super::block_on(WokenLater(false)), "woken");
    }
}
