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
            w.wait(&mut guard.1, 0, cx.waker());
            Poll::Pending
        })
        .await
    }
}
