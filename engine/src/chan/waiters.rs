//! Wait lists without allocation: a slab of waiter slots threaded into one FIFO list per class
//! (blocked senders) plus one list of blocked receivers. A waiting future owns a slot index; the
//! slab grows only when more futures wait at once than ever before (it starts with room for
//! [`INITIAL_SLOTS`]), so steady-state waiting allocates nothing. Lives behind the channel's wait-list lock, which only the slow paths take (a full class, an
//! empty channel).

use std::task::Waker;

/// Slots allocated when the channel is built.
pub(crate) const INITIAL_SLOTS: usize = 32;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    /// Owned by a future, not in a list.
    Idle,
    /// In its list, waiting.
    Queued,
    /// Taken out of its list and woken; the owner has not re-polled yet.
    Notified,
}

#[derive(Debug)]
struct Slot {
    waker: Option<Waker>,
    state: State,
    list: u16,
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

#[derive(Debug)]
pub(crate) struct Waiters {
    slots: Vec<Slot>,
    free: u32,
    lists: Box<[List]>,
}

/// A waiting future's slot, with the list it waits on.
#[derive(Debug, Default)]
pub(crate) struct Ticket {
    slot: Option<u32>,
}

impl Ticket {
    /// Whether the owner holds a slot.
    pub(crate) fn is_registered(&self) -> bool {
        self.slot.is_some()
    }
}

impl Waiters {
    /// `lists` wait lists, numbered `0..lists`.
    pub(crate) fn new(lists: usize) -> Waiters {
        let mut w = Waiters {
            slots: Vec::with_capacity(INITIAL_SLOTS),
            free: NONE,
            lists: vec![List { head: NONE, tail: NONE }; lists].into(),
        };
        for _ in 0..INITIAL_SLOTS {
            w.grow();
        }
        w
    }

    fn grow(&mut self) {
        let i = self.slots.len() as u32;
        self.slots.push(Slot { waker: None, state: State::Free, list: 0, prev: NONE, next: self.free });
        self.free = i;
    }

    /// Queues `ticket`'s owner at the tail of `list` (or refreshes its waker if already queued).
    /// Returns the list of a wake-up the owner received and now leaves unused: it was notified
    /// from another list and waits on `list` instead. The caller must pass that wake-up on (as
    /// [`Waiters::release`]'s caller does), or a waiter behind it on the old list may sleep on
    /// room that nobody else will announce.
    #[must_use]
    pub(crate) fn wait(&mut self, ticket: &mut Ticket, list: usize, waker: &Waker) -> Option<usize> {
        let i = match ticket.slot {
            Some(i) => i,
            None => {
                if self.free == NONE {
                    self.grow();
                }
                let i = self.free;
                self.free = self.slots[i as usize].next;
                self.slots[i as usize].state = State::Idle;
                ticket.slot = Some(i);
                i
            }
        };
        let slot = &mut self.slots[i as usize];
        match &mut slot.waker {
            Some(w) if w.will_wake(waker) => {}
            w => *w = Some(waker.clone()),
        }
        if slot.state == State::Queued && usize::from(slot.list) != list {
            // Now waiting for something else (another class became the blocker).
            self.unlink(i);
            self.slots[i as usize].state = State::Idle;
        }
        let slot = &self.slots[i as usize];
        let unused =
            (slot.state == State::Notified && usize::from(slot.list) != list).then_some(usize::from(slot.list));
        if slot.state != State::Queued {
            self.link(i, list);
        }
        unused
    }

    fn link(&mut self, i: u32, list: usize) {
        let tail = self.lists[list].tail;
        let slot = &mut self.slots[i as usize];
        slot.state = State::Queued;
        slot.list = list as u16;
        slot.prev = tail;
        slot.next = NONE;
        if tail == NONE {
            self.lists[list].head = i;
        } else {
            self.slots[tail as usize].next = i;
        }
        self.lists[list].tail = i;
    }

    fn unlink(&mut self, i: u32) {
        let Slot { prev, next, list, .. } = self.slots[i as usize];
        let list = list as usize;
        if prev == NONE {
            self.lists[list].head = next
        } else {
            self.slots[prev as usize].next = next
        }
        if next == NONE { self.lists[list].tail = prev } else { self.slots[next as usize].prev = prev }
    }

    /// Whether anyone waits on `list`.
    pub(crate) fn has_waiters(&self, list: usize) -> bool {
        self.lists[list].head != NONE
    }

    /// Wakes the head of `list`; `false` if the list is empty.
    pub(crate) fn notify_one(&mut self, list: usize) -> bool {
        let i = self.lists[list].head;
        if i == NONE {
            return false;
        }
        self.unlink(i);
        let slot = &mut self.slots[i as usize];
        slot.state = State::Notified;
        if let Some(w) = &slot.waker {
            w.wake_by_ref();
        }
        true
    }

    /// Wakes everyone on `list`.
    pub(crate) fn notify_all(&mut self, list: usize) {
        while self.notify_one(list) {}
    }

    /// Gives `ticket`'s slot back. Returns the list if the owner had been notified and had not
    /// used the wakeup: the caller must pass it on, or it is lost.
    pub(crate) fn release(&mut self, ticket: &mut Ticket) -> Option<usize> {
        let i = ticket.slot.take()?;
        let state = self.slots[i as usize].state;
        if state == State::Queued {
            self.unlink(i);
        }
        let slot = &mut self.slots[i as usize];
        let list = slot.list as usize;
        slot.state = State::Free;
        slot.next = self.free;
        self.free = i;
        (state == State::Notified).then_some(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn fifo_per_list_and_release_unlinks() {
        let counts: Vec<_> = (0..3).map(|_| Arc::new(Count(AtomicUsize::new(0)))).collect();
        let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(c.clone())).collect();
        let mut w = Waiters::new(2);
        let mut t: Vec<Ticket> = (0..3).map(|_| Ticket::default()).collect();
        for (i, t) in t.iter_mut().enumerate() {
            assert_eq!(w.wait(t, 0, &wakers[i]), None);
        }
        assert_eq!(w.release(&mut t[1]), None, "queued, not notified");
        assert!(w.notify_one(0));
        assert_eq!(counts[0].0.load(Ordering::SeqCst), 1);
        assert!(w.notify_one(0));
        assert_eq!(counts[2].0.load(Ordering::SeqCst), 1);
        assert!(!w.notify_one(0));
        assert_eq!(w.release(&mut t[0]), Some(0), "notified and unused");
        assert!(!w.has_waiters(1));
    }

    #[test]
    fn a_waiter_that_changes_lists_moves_to_the_new_one() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut w = Waiters::new(2);
        let (mut first, mut moved) = (Ticket::default(), Ticket::default());
        assert_eq!(w.wait(&mut first, 0, Waker::noop()), None);
        assert_eq!(w.wait(&mut moved, 0, &waker), None);
        // Re-waiting on the same list keeps the place in line.
        assert_eq!(w.wait(&mut first, 0, Waker::noop()), None);
        assert_eq!(w.wait(&mut moved, 1, &waker), None, "queued, not notified: no wake-up to leave");
        assert!(w.has_waiters(1));
        assert!(w.notify_one(1));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken through its new list");
        assert!(w.notify_one(0), "the first waiter still heads list 0");
        assert!(!w.notify_one(0), "and the mover is no longer on it");
        assert_eq!(w.release(&mut moved), Some(1));
        assert_eq!(w.release(&mut first), Some(0));
    }

    #[test]
    fn a_notified_waiter_that_waits_on_another_list_leaves_its_wake_up() {
        let mut w = Waiters::new(3);
        let (mut t, waker) = (Ticket::default(), Waker::noop());
        assert_eq!(w.wait(&mut t, 0, waker), None);
        assert!(w.notify_one(0));
        assert_eq!(w.wait(&mut t, 0, waker), None, "back on the list it was woken from: used up");
        assert!(w.notify_one(0));
        assert_eq!(w.wait(&mut t, 2, waker), Some(0), "woken from list 0, now waiting on 2");
        assert!(!w.has_waiters(0) && w.has_waiters(2));
        assert_eq!(w.release(&mut t), None, "queued on list 2");
    }

    #[test]
    fn grows_past_the_initial_slots() {
        let waker = Waker::noop();
        let mut w = Waiters::new(1);
        let mut tickets: Vec<Ticket> = (0..INITIAL_SLOTS + 3).map(|_| Ticket::default()).collect();
        for t in &mut tickets {
            assert_eq!(w.wait(t, 0, waker), None);
        }
        let mut woken = 0;
        while w.notify_one(0) {
            woken += 1;
        }
        assert_eq!(woken, INITIAL_SLOTS + 3);
    }
}
