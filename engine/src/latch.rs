//! A set-once flag that async tasks can wait on: the engine's "stop now" signal at the drain
//! deadline. Built on the sync shim and the channel's allocation-free wait lists, so loom models
//! it like the rest.

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::task::Poll;

use crate::chan::waiters::{Ticket, Waiters};
use crate::sync::{AtomicBool, Mutex, lock};

#[derive(Debug)]
pub(crate) struct Latch {
    /// Fast path for `is_set`; written under the lock, before the wakeups.
    set: AtomicBool,
    waiters: Mutex<Waiters>,
}

impl Latch {
    pub(crate) fn new() -> Latch {
        Latch { set: AtomicBool::new(false), waiters: Mutex::new(Waiters::new(1)) }
    }

    /// Sets the flag and wakes every waiter. Idempotent.
    pub(crate) fn set(&self) {
        let mut w = lock(&self.waiters);
        self.set.store(true, Ordering::Release);
        w.notify_all(0);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Completes once the flag is set. Cancel safe: dropping it gives its wait slot back.
    pub(crate) async fn wait(&self) {
        struct Guard<'a>(&'a Latch, Ticket);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                if self.1.is_registered() {
                    lock(&self.0.waiters).release(&mut self.1);
                }
            }
        }
        let mut guard = Guard(self, Ticket::default());
        poll_fn(|cx| {
            if self.is_set() {
                return Poll::Ready(());
            }
            let mut w = lock(&self.waiters);
            // Re-check under the lock: `set` stores before notifying, under this lock.
            if self.is_set() {
                w.release(&mut guard.1);
                return Poll::Ready(());
            }
            let moved = w.wait(&mut guard.1, 0, cx.waker());
            debug_assert_eq!(moved, None, "the latch has one wait list");
            Poll::Pending
        })
        .await
    }
}

#[cfg(all(test, veltrix_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    /// A task waiting on the latch is woken by `set` from another thread, whatever the order.
    #[test]
    fn loom_set_wakes_a_waiter() {
        loom::model(|| {
            let latch = Arc::new(Latch::new());
            let l2 = latch.clone();
            let waiter = loom::thread::spawn(move || loom::future::block_on(l2.wait()));
            latch.set();
            waiter.join().unwrap();
            assert!(latch.is_set());
        });
    }

    /// A cancelled wait gives its slot back; a later wait still completes.
    #[test]
    fn loom_cancelled_wait_then_set() {
        loom::model(|| {
            let latch = Arc::new(Latch::new());
            {
                let mut w = Box::pin(latch.wait());
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                let _ = std::future::Future::poll(w.as_mut(), &mut cx);
            }
            let l2 = latch.clone();
            let setter = loom::thread::spawn(move || l2.set());
            loom::future::block_on(latch.wait());
            setter.join().unwrap();
        });
    }
}

#[cfg(all(test, not(veltrix_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_wait_leaves_no_waiter_behind() {
        let latch = Latch::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        {
            let mut w = Box::pin(latch.wait());
            assert!(std::future::Future::poll(w.as_mut(), &mut cx).is_pending());
            assert!(lock(&latch.waiters).has_waiters(0), "the pending wait is registered");
        }
        assert!(!lock(&latch.waiters).has_waiters(0), "dropping the wait gave its slot back");
        latch.set();
        let mut w = Box::pin(latch.wait());
        assert!(std::future::Future::poll(w.as_mut(), &mut cx).is_ready());
    }
}
