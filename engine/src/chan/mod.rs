//! The concurrent channel over the [policy core](crate::core): cloneable senders and receivers,
//! one mutex around the core and its wait lists, wakeups without allocation.

pub(crate) mod waiters;

use std::fmt;
use std::future::poll_fn;
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::config::{ClassId, Config};
use crate::core::{Core, DeadLetter, Delivery, Pop};
use crate::error::{ReserveError, SendError, TryRecvError, TrySendError};
use crate::ledger::{Completion, DeadLetterReason, Stats};
use crate::sync::{Arc, Mutex, MutexGuard, block_on, lock};
use waiters::{Ticket, Waiters};

/// Where dead letters go. Called outside the channel's lock, on the thread whose operation
/// produced the dead letter: a sender for `Shed`, and for `Closed` when it commits after every
/// receiver is gone; a receiver for `Expired`/`Codel`; the last receiver's drop for the
/// backlog (`Closed`).
///
/// The call cannot refuse: once the engine has handed the event over, the event and its reason are
/// the sink's. A sink backed by a bounded buffer decides itself what to do when it is full
/// (block, spill, or count and drop) — the channel's ledger has already counted the dead letter.
/// Any `Fn(DeadLetter<E>) + Send + Sync` closure is a sink.
pub trait DeadLetterSink<E>: Send + Sync {
    /// Takes one dead letter.
    fn dead_letter(&self, letter: DeadLetter<E>);
}

impl<E, F> DeadLetterSink<E> for F
where
    F: Fn(DeadLetter<E>) + Send + Sync,
{
    fn dead_letter(&self, letter: DeadLetter<E>) {
        self(letter)
    }
}

/// Creates a channel whose dead letters are counted in the ledger and then dropped (a `debug`
/// trace says so). Use [`channel_with_sink`] to receive them.
///
/// # Examples
///
/// ```
/// use veltrix_engine::{channel, ClassId, Config};
///
/// let (tx, rx) = channel::<u64>(&Config::default());
/// tx.try_send(7, ClassId::SHEDDABLE).unwrap();
/// tx.try_send(1, ClassId::CRITICAL_PLUS).unwrap();
/// assert_eq!(rx.try_recv().unwrap().event, 1, "the critical event goes first");
/// ```
pub fn channel<E: Send + 'static>(config: &Config) -> (Sender<E>, Receiver<E>) {
    build(config, None)
}

/// Creates a channel that hands every dead letter to `sink`.
pub fn channel_with_sink<E: Send + 'static>(
    config: &Config,
    sink: impl DeadLetterSink<E> + 'static,
) -> (Sender<E>, Receiver<E>) {
    build(config, Some(Box::new(sink)))
}

fn build<E: Send + 'static>(config: &Config, sink: Option<Box<dyn DeadLetterSink<E>>>) -> (Sender<E>, Receiver<E>) {
    let classes = config.len();
    let state = State {
        core: Core::new(config),
        waiters: Waiters::new(classes + 1),
        senders: 1,
        receivers: 1,
        recv_list: classes,
    };
    let shared = Arc::new(Shared { state: Mutex::new(state), sink });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

struct Shared<E> {
    state: Mutex<State<E>>,
    sink: Option<Box<dyn DeadLetterSink<E>>>,
}

struct State<E> {
    core: Core<E, Instant>,
    /// Lists `0..classes` hold senders blocked on that class; list `recv_list` holds receivers.
    waiters: Waiters,
    senders: usize,
    receivers: usize,
    recv_list: usize,
}

impl<E> State<E> {
    /// After class `k` lost an event or a reservation: wake one blocked sender of `k` and of each
    /// less critical class whose offer can now make progress (admission is in criticality order,
    /// so a slot freed in `k` may unblock them all). A woken sender that succeeds chains this.
    fn kick_senders(&mut self, k: usize) {
        if !self.waiters.any() {
            return;
        }
        for j in k..self.recv_list {
            let class = ClassId::new(j);
            if self.waiters.has_waiters(j) && !self.core.would_wait(class) {
                self.waiters.notify_one(j);
            }
        }
    }

    /// After an event was queued or taken: wake one receiver if there is something for it.
    fn kick_receivers(&mut self) {
        if self.waiters.has_waiters(self.recv_list) && (self.core.has_queued() || self.core.is_drained()) {
            self.waiters.notify_one(self.recv_list);
        }
    }

    /// Passes on a wakeup that a dropped or failed future did not use.
    fn forward(&mut self, list: Option<usize>) {
        match list {
            Some(l) if l == self.recv_list => self.kick_receivers(),
            Some(k) => self.kick_senders(k),
            None => {}
        }
    }
}

impl<E> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, State<E>> {
        lock(&self.state)
    }

    fn dead_letter(&self, letter: Option<DeadLetter<E>>) {
        let Some(letter) = letter else { return };
        match &self.sink {
            Some(sink) => sink.dead_letter(letter),
            None => {
                tracing::debug!(class = letter.class.index(), reason = %letter.reason, "dead letter dropped: no sink configured")
            }
        }
    }

    /// Reserves a slot, then runs `fill` under the same lock (a commit, or nothing for a permit);
    /// registers `ticket` if the class is full and `cx` is given. Returns the event the
    /// reservation shed, if any, for the caller to hand to the sink once its own state is safe
    /// (a permit must exist first, so a panicking sink cannot leak the reservation).
    fn poll_reserve(
        &self,
        cx: Option<&mut Context<'_>>,
        class: ClassId,
        ticket: &mut Ticket,
        fill: impl FnOnce(&mut State<E>) -> Option<DeadLetter<E>>,
    ) -> Poll<Result<Option<DeadLetter<E>>, ReserveError>> {
        let mut st = self.lock();
        match st.core.try_reserve(class) {
            Ok(shed) => {
                st.waiters.release(ticket);
                let closed = fill(&mut st);
                st.kick_senders(class.index());
                drop(st);
                self.dead_letter(closed);
                Poll::Ready(Ok(shed))
            }
            Err(ReserveError::Full) => match cx {
                Some(cx) => {
                    st.waiters.wait(ticket, class.index(), cx.waker());
                    Poll::Pending
                }
                None => {
                    st.core.refuse_full(class);
                    Poll::Ready(Err(ReserveError::Full))
                }
            },
            Err(e) => {
                let unused = st.waiters.release(ticket);
                st.forward(unused);
                Poll::Ready(Err(e))
            }
        }
    }

    /// Commits under the lock; `now` is read before taking it, to keep the critical section short.
    fn commit(
        &self,
        st: &mut State<E>,
        class: ClassId,
        event: E,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Option<DeadLetter<E>> {
        let closed = st.core.commit(class, event, deadline, now);
        st.kick_receivers();
        closed
    }

    /// Pops up to `limit` deliveries into `out` (dead letters at the head go to the sink);
    /// registers `ticket` if there is nothing and `cx` is given.
    fn poll_pop(
        &self,
        cx: Option<&mut Context<'_>>,
        ticket: &mut Ticket,
        limit: usize,
        mut out: impl FnMut(Delivery<E>),
    ) -> Poll<usize> {
        let now = Instant::now();
        let mut st = self.lock();
        let mut got = 0;
        while got < limit {
            match st.core.pop(now) {
                Some(Pop::Deliver(d)) => {
                    st.kick_senders(d.class.index());
                    out(d);
                    got += 1;
                }
                Some(Pop::Dead(dead)) => {
                    st.kick_senders(dead.class.index());
                    drop(st);
                    self.dead_letter(Some(dead));
                    st = self.lock();
                }
                None => break,
            }
        }
        if got > 0 || st.core.is_drained() {
            st.waiters.release(ticket);
            st.kick_receivers();
            return Poll::Ready(got);
        }
        if let Some(cx) = cx {
            let list = st.recv_list;
            st.waiters.wait(ticket, list, cx.waker());
        }
        Poll::Pending
    }

    /// Fills a reservation and hands a `Closed` dead letter to the sink if the receivers are gone.
    fn fill(&self, class: ClassId, event: E, deadline: Option<Instant>) {
        let closed = {
            let now = Instant::now();
            let mut st = self.lock();
            let closed = self.commit(&mut st, class, event, deadline, now);
            // A shedding class whose every slot was reserved can shed again now that one is
            // filled. (The send paths commit inside `poll_reserve`, which kicks once itself.)
            st.kick_senders(class.index());
            closed
        };
        self.dead_letter(closed);
    }

    /// Gives an unused reservation back.
    fn unreserve(&self, class: ClassId) {
        let mut st = self.lock();
        st.core.cancel(class);
        st.kick_senders(class.index());
        st.kick_receivers();
    }

    /// A future dropped before completion gives its slot back (and any unused wakeup).
    fn cancel_wait(&self, ticket: &mut Ticket) {
        if ticket.is_registered() {
            let mut st = self.lock();
            let unused = st.waiters.release(ticket);
            st.forward(unused);
        }
    }
}

/// Releases a waiting future's ticket when the future is dropped (cancel safety).
struct WaitGuard<'a, E> {
    shared: &'a Shared<E>,
    ticket: Ticket,
}

impl<E> Drop for WaitGuard<'_, E> {
    fn drop(&mut self) {
        self.shared.cancel_wait(&mut self.ticket);
    }
}

/// The sending half; clone it for more producers. Dropping the last sender closes the channel
/// (receivers drain what is queued, then get `None`).
pub struct Sender<E> {
    shared: Arc<Shared<E>>,
}

impl<E> fmt::Debug for Sender<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<E> Clone for Sender<E> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender { shared: self.shared.clone() }
    }
}

impl<E> Drop for Sender<E> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.senders -= 1;
        if st.senders == 0 {
            st.core.close();
            let list = st.recv_list;
            st.waiters.notify_all(list);
        }
    }
}

/// A reserved slot in one class: [`Permit::send`] cannot fail (if every receiver is gone by then,
/// the event goes to the dead letter with reason `Closed`). Dropping it unused gives the slot back.
pub struct Permit<'a, E> {
    shared: &'a Shared<E>,
    class: ClassId,
}

impl<E> fmt::Debug for Permit<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("class", &self.class).finish_non_exhaustive()
    }
}

impl<E> Permit<'_, E> {
    /// Sends into the reserved slot with the class's default deadline.
    pub fn send(self, event: E) {
        std::mem::ManuallyDrop::new(self).fill(event, None);
    }

    /// Sends into the reserved slot with an explicit deadline: if it is still queued at
    /// `deadline`, it goes to the dead letter (`Expired`) and no receiver sees it.
    pub fn send_with_deadline(self, event: E, deadline: Instant) {
        std::mem::ManuallyDrop::new(self).fill(event, Some(deadline));
    }

    fn fill(&self, event: E, deadline: Option<Instant>) {
        self.shared.fill(self.class, event, deadline);
    }
}

impl<E> Drop for Permit<'_, E> {
    fn drop(&mut self) {
        self.shared.unreserve(self.class);
    }
}

/// A [`Permit`] that owns a handle on the channel instead of borrowing a sender, for code that
/// must hold a reservation across calls (a `tower::Service` between `poll_ready` and `call`).
pub struct OwnedPermit<E> {
    shared: Option<Arc<Shared<E>>>,
    class: ClassId,
}

impl<E> fmt::Debug for OwnedPermit<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit").field("class", &self.class).finish_non_exhaustive()
    }
}

impl<E> OwnedPermit<E> {
    /// The class the slot is in.
    pub fn class(&self) -> ClassId {
        self.class
    }

    /// Sends into the reserved slot, with the class's default deadline or `deadline`.
    pub fn send(mut self, event: E, deadline: Option<Instant>) {
        let shared = self.shared.take().expect("a permit is filled once");
        shared.fill(self.class, event, deadline);
    }
}

impl<E> Drop for OwnedPermit<E> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.unreserve(self.class);
        }
    }
}

/// Keeps a task's place in a class's wait list between polls of [`Sender::poll_reserve_owned`];
/// dropping it leaves the list (passing on any wakeup it had received).
pub struct ReserveTicket<E> {
    shared: Option<Arc<Shared<E>>>,
    ticket: Ticket,
}

impl<E> Default for ReserveTicket<E> {
    fn default() -> Self {
        ReserveTicket { shared: None, ticket: Ticket::default() }
    }
}

impl<E> fmt::Debug for ReserveTicket<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReserveTicket").field("waiting", &self.ticket.is_registered()).finish()
    }
}

impl<E> Drop for ReserveTicket<E> {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.cancel_wait(&mut self.ticket);
        }
    }
}

impl<E> Sender<E> {
    /// Sends `event` in `class`, waiting while the class (or a more critical one) is full under
    /// [`Backpressure`](crate::OverloadPolicy::Backpressure). Waiting senders of a class are
    /// woken in FIFO order; a sender that arrives as a slot frees may take it first (no
    /// hand-off), and a woken sender that loses the race waits again at the back.
    ///
    /// # Errors
    ///
    /// The event comes back in [`SendError::Closed`] or [`SendError::Rejected`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes sends nothing, gives up its place in the wait
    /// list, and passes on any wakeup it had received.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub async fn send(&self, event: E, class: ClassId) -> Result<(), SendError<E>> {
        self.send_with_deadline(event, class, None).await
    }

    /// [`Sender::send`] with an explicit deadline (`None`: the class's default): if still
    /// queued at `deadline`, the event goes to the dead letter (`Expired`) and no receiver sees it.
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    ///
    /// # Cancel safety
    ///
    /// As [`Sender::send`].
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub async fn send_with_deadline(
        &self,
        event: E,
        class: ClassId,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<E>> {
        // Reserve and commit under one lock acquisition: no permit round trip.
        let mut guard = WaitGuard { shared: &self.shared, ticket: Ticket::default() };
        let mut event = Some(event);
        let shared = &*self.shared;
        let result = poll_fn(|cx| {
            let now = Instant::now();
            shared.poll_reserve(Some(cx), class, &mut guard.ticket, |st| {
                shared.commit(st, class, event.take().expect("committed once"), deadline, now)
            })
        })
        .await;
        match result {
            Ok(shed) => {
                shared.dead_letter(shed);
                Ok(())
            }
            Err(ReserveError::Closed) => Err(SendError::Closed(event.take().expect("not sent"))),
            Err(_) => Err(SendError::Rejected(event.take().expect("not sent"))),
        }
    }

    /// Sends without waiting.
    ///
    /// # Errors
    ///
    /// The event comes back in [`TrySendError::Full`], [`TrySendError::Closed`] or
    /// [`TrySendError::Rejected`].
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn try_send(&self, event: E, class: ClassId) -> Result<(), TrySendError<E>> {
        self.try_send_with_deadline(event, class, None)
    }

    /// [`Sender::try_send`] with an explicit deadline (`None`: the class's default).
    ///
    /// # Errors
    ///
    /// As [`Sender::try_send`].
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn try_send_with_deadline(
        &self,
        event: E,
        class: ClassId,
        deadline: Option<Instant>,
    ) -> Result<(), TrySendError<E>> {
        let mut ticket = Ticket::default();
        let mut event = Some(event);
        let shared = &self.shared;
        let now = Instant::now();
        let fill = |st: &mut State<E>| shared.commit(st, class, event.take().expect("filled once"), deadline, now);
        match shared.poll_reserve(None, class, &mut ticket, fill) {
            Poll::Ready(Ok(shed)) => {
                shared.dead_letter(shed);
                Ok(())
            }
            Poll::Ready(Err(e)) => Err(e.with(event.take().expect("not sent"))),
            Poll::Pending => unreachable!("no context, no wait"),
        }
    }

    /// Blocking [`Sender::send`], for threads outside an async runtime.
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    ///
    /// It blocks the thread: do not call it from an async task.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn send_blocking(&self, event: E, class: ClassId) -> Result<(), SendError<E>> {
        block_on(self.send(event, class))
    }

    /// Reserves a slot in `class`, waiting as [`Sender::send`] does. In a
    /// [`ShedOldest`](crate::OverloadPolicy::ShedOldest) class the reservation itself makes room:
    /// the oldest event is shed now, even if the permit is later dropped unused.
    ///
    /// # Errors
    ///
    /// [`ReserveError::Closed`] or [`ReserveError::Rejected`].
    ///
    /// # Cancel safety
    ///
    /// As [`Sender::send`].
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub async fn reserve(&self, class: ClassId) -> Result<Permit<'_, E>, ReserveError> {
        let mut guard = WaitGuard { shared: &self.shared, ticket: Ticket::default() };
        let shed = poll_fn(|cx| guard.shared.poll_reserve(Some(cx), class, &mut guard.ticket, |_| None)).await?;
        let permit = Permit { shared: &self.shared, class };
        self.shared.dead_letter(shed);
        Ok(permit)
    }

    /// Reserves a slot without waiting.
    ///
    /// # Errors
    ///
    /// [`ReserveError::Full`], [`ReserveError::Closed`] or [`ReserveError::Rejected`].
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn try_reserve(&self, class: ClassId) -> Result<Permit<'_, E>, ReserveError> {
        match self.shared.poll_reserve(None, class, &mut Ticket::default(), |_| None) {
            Poll::Ready(r) => r.map(|shed| {
                let permit = Permit { shared: &self.shared, class };
                self.shared.dead_letter(shed);
                permit
            }),
            Poll::Pending => unreachable!("no context, no wait"),
        }
    }

    /// Polls for a slot in `class` without a future: `Ready(Ok(permit))` once one is reserved,
    /// `Pending` (with `cx` registered, its place kept by `ticket`) while the class is full under
    /// backpressure. For hand-written futures and `tower::Service::poll_ready`; allocates nothing.
    ///
    /// # Errors
    ///
    /// [`ReserveError::Closed`] or [`ReserveError::Rejected`].
    ///
    /// # Panics
    ///
    /// If `class` is not configured, or `ticket` was used with another channel.
    pub fn poll_reserve_owned(
        &self,
        cx: &mut Context<'_>,
        class: ClassId,
        ticket: &mut ReserveTicket<E>,
    ) -> Poll<Result<OwnedPermit<E>, ReserveError>> {
        let shared = ticket.shared.get_or_insert_with(|| self.shared.clone());
        assert!(Arc::ptr_eq(shared, &self.shared), "a ReserveTicket serves one channel");
        match self.shared.poll_reserve(Some(cx), class, &mut ticket.ticket, |_| None) {
            Poll::Ready(Ok(shed)) => {
                let permit = OwnedPermit { shared: Some(self.shared.clone()), class };
                self.shared.dead_letter(shed);
                Poll::Ready(Ok(permit))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Stops admission; see [`Receiver::close`].
    pub fn close(&self) {
        close(&self.shared);
    }

    /// Whether the channel is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().core.is_closed()
    }

    /// Events queued in `class`.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn len(&self, class: ClassId) -> usize {
        self.shared.lock().core.len(class)
    }

    /// Whether nothing is queued in any class.
    pub fn is_empty(&self) -> bool {
        !self.shared.lock().core.has_queued()
    }

    /// `class`'s capacity.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn capacity(&self, class: ClassId) -> usize {
        self.shared.lock().core.capacity(class)
    }

    /// The ledger snapshot (taken under the lock, so the conservation law holds exactly).
    pub fn stats(&self) -> Stats {
        self.shared.lock().core.stats()
    }
}

fn close<E>(shared: &Shared<E>) {
    let mut st = shared.lock();
    st.core.close();
    for list in 0..=st.recv_list {
        st.waiters.notify_all(list);
    }
}

/// The receiving half; clone it to share the work among several consumers (each event goes to
/// exactly one). Dropping the last receiver closes the channel and dead-letters the backlog
/// (reason `Closed`).
pub struct Receiver<E> {
    shared: Arc<Shared<E>>,
}

impl<E> fmt::Debug for Receiver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl<E> Clone for Receiver<E> {
    fn clone(&self) -> Self {
        self.shared.lock().receivers += 1;
        Receiver { shared: self.shared.clone() }
    }
}

impl<E> Drop for Receiver<E> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.receivers -= 1;
        if st.receivers > 0 {
            return;
        }
        st.core.abandon();
        for list in 0..st.recv_list {
            st.waiters.notify_all(list);
        }
        while let Some(dead) = st.core.pop_dead(DeadLetterReason::Closed) {
            drop(st);
            self.shared.dead_letter(Some(dead));
            st = self.shared.lock();
        }
    }
}

impl<E> Receiver<E> {
    /// Receives the scheduler's next event, waiting if none is queued. Expired events and those
    /// CoDel sheds go to the dead letter on the way.
    ///
    /// Returns `None` once the channel is closed (or every sender is gone) and drained.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future loses no event and passes on any wakeup it had received.
    pub async fn recv(&self) -> Option<Delivery<E>> {
        let mut guard = WaitGuard { shared: &self.shared, ticket: Ticket::default() };
        let mut slot = None;
        poll_fn(|cx| guard.shared.poll_pop(Some(cx), &mut guard.ticket, 1, |d| slot = Some(d))).await;
        slot
    }

    /// Receives without waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] or, once closed and drained, [`TryRecvError::Closed`].
    pub fn try_recv(&self) -> Result<Delivery<E>, TryRecvError> {
        let mut slot = None;
        match self.shared.poll_pop(None, &mut Ticket::default(), 1, |d| slot = Some(d)) {
            Poll::Ready(_) => slot.ok_or(TryRecvError::Closed),
            Poll::Pending => Err(TryRecvError::Empty),
        }
    }

    /// Waits for at least one event, then appends up to `limit` in scheduler order to `buf`
    /// under one lock acquisition. Returns how many were appended; 0 means closed and drained
    /// (or `limit == 0`).
    ///
    /// # Cancel safety
    ///
    /// As [`Receiver::recv`].
    pub async fn recv_many(&self, buf: &mut Vec<Delivery<E>>, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        let mut guard = WaitGuard { shared: &self.shared, ticket: Ticket::default() };
        poll_fn(|cx| guard.shared.poll_pop(Some(cx), &mut guard.ticket, limit, |d| buf.push(d))).await
    }

    /// Blocking [`Receiver::recv`], for threads outside an async runtime. It blocks the thread:
    /// do not call it from an async task.
    pub fn recv_blocking(&self) -> Option<Delivery<E>> {
        block_on(self.recv())
    }

    /// Stops admission: later sends get their event back as `Closed`; blocked senders wake and
    /// do too. Queued events and open permits still drain to the receivers, which then get `None`.
    pub fn close(&self) {
        close(&self.shared);
    }

    /// Events queued in `class`.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn len(&self, class: ClassId) -> usize {
        self.shared.lock().core.len(class)
    }

    /// Whether nothing is queued in any class.
    pub fn is_empty(&self) -> bool {
        !self.shared.lock().core.has_queued()
    }

    /// `class`'s capacity.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn capacity(&self, class: ClassId) -> usize {
        self.shared.lock().core.capacity(class)
    }

    /// The ledger snapshot (taken under the lock, so the conservation law holds exactly).
    pub fn stats(&self) -> Stats {
        self.shared.lock().core.stats()
    }

    /// Reports how the processing of a delivered event of `class` ended (and how many retries it
    /// took), so the ledger can tell handled, dead-lettered and in-flight events apart. The caller
    /// hands dead-lettered events to its own sink; this only counts.
    ///
    /// # Panics
    ///
    /// If `class` has no delivered event awaiting completion.
    pub fn complete(&self, class: ClassId, completion: Completion, retries: u32) {
        self.shared.lock().core.complete(class, completion, retries);
    }

    /// Dead-letters everything queued now with `reason` (through the sink), most critical class
    /// first; returns how many. For a consumer that gives up on the backlog (shutdown).
    pub fn dead_letter_backlog(&self, reason: DeadLetterReason) -> usize {
        let mut n = 0;
        let mut st = self.shared.lock();
        while let Some(dead) = st.core.pop_dead(reason) {
            st.kick_senders(dead.class.index());
            drop(st);
            self.shared.dead_letter(Some(dead));
            n += 1;
            st = self.shared.lock();
        }
        st.kick_receivers();
        n
    }

    /// Asserts the core's invariants (conservation, capacities, internal bookkeeping).
    ///
    /// # Panics
    ///
    /// If one is broken.
    pub fn check_invariants(&self) {
        self.shared.lock().core.check_invariants();
    }
}
