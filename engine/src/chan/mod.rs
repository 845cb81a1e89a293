//! The concurrent channel over the policy decisions of [`core`](crate::core): cloneable
//! senders and receivers, per-class lock-free rings on the producer side, the scheduler on the
//! consumer side, wake-ups without allocation. [`shared`] documents the protocol and what "full"
//! means when producers race; [`ring`] holds the crate's only `unsafe`.

mod consumer;
pub(crate) mod ring;
mod shared;
pub(crate) mod waiters;

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::config::{ClassId, Config};
use crate::core::Delivery;
use crate::dead::{DeadLetterReason, DeadLetterSink};
use crate::error::{ReserveError, SendError, TryRecvError, TrySendError};
use crate::ledger::{Completion, Stats};
use crate::sync::{Arc, block_on};
use ring::Take;
pub(crate) use shared::Completed;
use shared::Shared;
use waiters::Ticket;

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
    if sink.is_some() {
        crate::contain::quiet_hook();
    }
    let shared = Arc::new(Shared::new(config, sink));
    (Sender { shared: shared.clone() }, Receiver { shared })
}

/// Releases a waiting future's ticket when the future is dropped (cancel safety).
struct WaitGuard<'a, E> {
    shared: &'a Shared<E>,
    ticket: Ticket,
    /// A send's class while its event is still in the future: dropped so, the send was
    /// cancelled while it waited (a guard exists only once the future was polled).
    sending: Option<usize>,
}

impl<'a, E> WaitGuard<'a, E> {
    fn new(shared: &'a Shared<E>, sending: Option<usize>) -> WaitGuard<'a, E> {
        WaitGuard { shared, ticket: Ticket::default(), sending }
    }
}

impl<E> Drop for WaitGuard<'_, E> {
    fn drop(&mut self) {
        if let Some(k) = self.sending {
            self.shared.count_cancelled(k);
        }
        self.shared.cancel_wait(&mut self.ticket);
    }
}

/// How often the blocking API retries before it parks the thread: the other side of a busy
/// channel usually answers within a microsecond, far sooner than a futex round trip.
#[cfg(not(veltrix_loom))]
const BLOCKING_TRIES: u32 = 10;

/// Backs off between blocking retries: spins twice as long each time (about 63 `spin_loop`
/// hints in all), then yields the CPU a few times before the caller parks.
#[cfg(not(veltrix_loom))]
fn backoff(attempt: u32) {
    if attempt < 6 {
        for _ in 0..1u32 << attempt {
            std::hint::spin_loop();
        }
    } else {
        std::thread::yield_now();
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
        self.shared.senders.fetch_add(1, Relaxed);
        Sender { shared: self.shared.clone() }
    }
}

impl<E> Drop for Sender<E> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, AcqRel) == 1 {
            self.shared.close();
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
        let p = std::mem::ManuallyDrop::new(self);
        p.shared.fill(p.class.index(), event, None);
    }

    /// Sends into the reserved slot with an explicit deadline: if it is still queued at
    /// `deadline`, it goes to the dead letter (`Expired`) and no receiver sees it.
    pub fn send_with_deadline(self, event: E, deadline: Instant) {
        let p = std::mem::ManuallyDrop::new(self);
        p.shared.fill(p.class.index(), event, Some(deadline));
    }
}

impl<E> Drop for Permit<'_, E> {
    fn drop(&mut self) {
        self.shared.unreserve(self.class.index());
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
        shared.fill(self.class.index(), event, deadline);
    }
}

impl<E> Drop for OwnedPermit<E> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.unreserve(self.class.index());
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
    /// list, and passes on any wakeup it had received. The event is dropped with the future; if
    /// the future had started waiting, the ledger counts it as
    /// [`cancelled`](crate::ClassStats::cancelled), so `offered` still adds up.
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
        let k = self.shared.index(class);
        let mut guard = WaitGuard::new(&self.shared, Some(k));
        let taken = poll_fn(|cx| guard.shared.poll_offer(Some(cx), k, Take::Position, &mut guard.ticket)).await;
        guard.sending = None;
        match taken {
            Ok((pos, shed)) => {
                self.shared.write(k, pos, event, deadline);
                self.shared.dead_letter(shed);
                Ok(())
            }
            Err(ReserveError::Closed) => Err(SendError::Closed(event)),
            Err(_) => Err(SendError::Rejected(event)),
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
    #[inline]
    pub fn try_send_with_deadline(
        &self,
        event: E,
        class: ClassId,
        deadline: Option<Instant>,
    ) -> Result<(), TrySendError<E>> {
        let k = self.shared.index(class);
        match self.shared.poll_offer(None, k, Take::Position, &mut Ticket::default()) {
            Poll::Ready(Ok((pos, shed))) => {
                self.shared.write(k, pos, event, deadline);
                self.shared.dead_letter(shed);
                Ok(())
            }
            Poll::Ready(Err(e)) => Err(e.with(event)),
            Poll::Pending => unreachable!("no context, no wait"),
        }
    }

    /// Blocking [`Sender::send`], for threads outside an async runtime. It retries briefly
    /// before parking the thread.
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
        self.send_blocking_with_deadline(event, class, None)
    }

    /// Blocking [`Sender::send_with_deadline`].
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
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use veltrix_engine::{channel, ClassId, Config, Instant};
    ///
    /// let (tx, rx) = channel::<&str>(&Config::default());
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// tx.send_blocking_with_deadline("quote", ClassId::CRITICAL, Some(deadline)).unwrap();
    /// assert_eq!(rx.recv_blocking().unwrap().deadline, Some(deadline));
    /// ```
    pub fn send_blocking_with_deadline(
        &self,
        event: E,
        class: ClassId,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<E>> {
        #[cfg(not(veltrix_loom))]
        {
            let k = self.shared.index(class);
            for attempt in 0..BLOCKING_TRIES {
                match self.shared.offer(k, Take::Position) {
                    Ok((pos, shed)) => {
                        self.shared.write(k, pos, event, deadline);
                        self.shared.dead_letter(shed);
                        return Ok(());
                    }
                    Err(b) if b.error == ReserveError::Full => backoff(attempt),
                    // Final answers are counted and returned by the waiting path below.
                    Err(_) => break,
                }
            }
        }
        block_on(self.send_with_deadline(event, class, deadline))
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
        let k = self.shared.index(class);
        let mut guard = WaitGuard::new(&self.shared, None);
        let (_, shed) =
            poll_fn(|cx| guard.shared.poll_offer(Some(cx), k, Take::Reservation, &mut guard.ticket)).await?;
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
        let k = self.shared.index(class);
        match self.shared.poll_offer(None, k, Take::Reservation, &mut Ticket::default()) {
            Poll::Ready(r) => r.map(|(_, shed)| {
                let permit = Permit { shared: &self.shared, class };
                self.shared.dead_letter(shed);
                permit
            }),
            Poll::Pending => unreachable!("no context, no wait"),
        }
    }

    /// Blocking [`Sender::reserve`], for threads outside an async runtime. It retries briefly
    /// before parking the thread.
    ///
    /// # Errors
    ///
    /// [`ReserveError::Closed`] or [`ReserveError::Rejected`].
    ///
    /// It blocks the thread: do not call it from an async task.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    ///
    /// # Examples
    ///
    /// ```
    /// use veltrix_engine::{channel, ClassId, Config};
    ///
    /// let (tx, rx) = channel::<u64>(&Config::default());
    /// let permit = tx.reserve_blocking(ClassId::CRITICAL).unwrap();
    /// permit.send(42); // cannot fail: the slot is held
    /// assert_eq!(rx.recv_blocking().unwrap().event, 42);
    /// ```
    pub fn reserve_blocking(&self, class: ClassId) -> Result<Permit<'_, E>, ReserveError> {
        #[cfg(not(veltrix_loom))]
        {
            let k = self.shared.index(class);
            for attempt in 0..BLOCKING_TRIES {
                match self.shared.offer(k, Take::Reservation) {
                    Ok((_, shed)) => {
                        let permit = Permit { shared: &self.shared, class };
                        self.shared.dead_letter(shed);
                        return Ok(permit);
                    }
                    Err(b) if b.error == ReserveError::Full => backoff(attempt),
                    Err(_) => break,
                }
            }
        }
        block_on(self.reserve(class))
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
        let k = self.shared.index(class);
        let shared = ticket.shared.get_or_insert_with(|| self.shared.clone());
        assert!(Arc::ptr_eq(shared, &self.shared), "a ReserveTicket serves one channel");
        match self.shared.poll_offer(Some(cx), k, Take::Reservation, &mut ticket.ticket) {
            Poll::Ready(Ok((_, shed))) => {
                let permit = OwnedPermit { shared: Some(self.shared.clone()), class };
                self.shared.dead_letter(shed);
                Poll::Ready(Ok(permit))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Counts an event of `class` refused with `error` after its reservation was: for a caller
    /// that offered an event on the strength of a reservation (the tower service's `call`).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn count_refused(&self, class: ClassId, error: ReserveError) {
        self.shared.count_refusal(self.shared.index(class), Take::Position, error);
    }

    /// Stops admission; see [`Receiver::close`].
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether the channel is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Events queued in `class` (including any a producer is writing right now).
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn len(&self, class: ClassId) -> usize {
        self.shared.len(class)
    }

    /// Whether nothing is queued in any class.
    pub fn is_empty(&self) -> bool {
        self.shared.is_empty()
    }

    /// `class`'s capacity.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn capacity(&self, class: ClassId) -> usize {
        self.shared.capacity(class)
    }

    /// The occupancy at which `class` counts as full now: its capacity, or under
    /// [adaptive admission](crate::adaptive) the limit the controller set last (at most the
    /// capacity). A node that pulls from an outside queue can size its credit by it.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn admission_limit(&self, class: ClassId) -> usize {
        self.shared.admission_limit(class)
    }

    /// Under [adaptive admission](crate::adaptive), the service rate the controller measured for
    /// `class` (events per second while it had a backlog); `None` before its first measurement,
    /// and always for a static configuration.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn measured_rate(&self, class: ClassId) -> Option<f64> {
        self.shared.measured_rate(class)
    }

    /// The ledger snapshot. Conservation holds exactly in every snapshot (accepted events are
    /// read off the ring positions); counters of the two sides may be a few events apart while
    /// operations are in flight.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
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
        self.shared.receivers.fetch_add(1, Relaxed);
        Receiver { shared: self.shared.clone() }
    }
}

impl<E> Drop for Receiver<E> {
    fn drop(&mut self) {
        if self.shared.receivers.fetch_sub(1, AcqRel) == 1 {
            self.shared.abandon();
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
        let mut slot = None;
        self.poll_until(1, &mut Vec::new(), |d| slot = Some(d)).await;
        slot
    }

    /// Receives without waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] or, once closed and drained, [`TryRecvError::Closed`].
    pub fn try_recv(&self) -> Result<Delivery<E>, TryRecvError> {
        let mut slot = None;
        match self.shared.poll_pop(None, &mut Ticket::default(), 1, &mut Vec::new(), |d| slot = Some(d)) {
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
        self.poll_until(limit, &mut Vec::new(), |d| buf.push(d)).await
    }

    /// The engine's receive: applies the worker's completions under the same lock, then as
    /// [`Receiver::recv_many`].
    pub(crate) async fn recv_settling(
        &self,
        buf: &mut Vec<Delivery<E>>,
        limit: usize,
        settle: &mut Vec<Completed>,
    ) -> usize {
        self.poll_until(limit, settle, |d| buf.push(d)).await
    }

    async fn poll_until(&self, limit: usize, settle: &mut Vec<Completed>, mut out: impl FnMut(Delivery<E>)) -> usize {
        let mut guard = WaitGuard::new(&self.shared, None);
        poll_fn(|cx| guard.shared.poll_pop(Some(cx), &mut guard.ticket, limit, settle, &mut out)).await
    }

    /// Blocking [`Receiver::recv`], for threads outside an async runtime. It retries briefly
    /// before parking the thread; do not call it from an async task.
    pub fn recv_blocking(&self) -> Option<Delivery<E>> {
        #[cfg(not(veltrix_loom))]
        for attempt in 0..BLOCKING_TRIES {
            match self.try_recv() {
                Ok(d) => return Some(d),
                Err(TryRecvError::Closed) => return None,
                Err(_) => backoff(attempt),
            }
        }
        block_on(self.recv())
    }

    /// Blocking [`Receiver::recv_many`], for threads outside an async runtime: waits for at
    /// least one event, then appends up to `limit` in scheduler order to `buf`. Returns how many;
    /// 0 means closed and drained (or `limit == 0`). It retries briefly before parking the
    /// thread; do not call it from an async task.
    ///
    /// # Examples
    ///
    /// ```
    /// use veltrix_engine::{channel, ClassId, Config};
    ///
    /// let (tx, rx) = channel::<u64>(&Config::default());
    /// for i in 0..3 {
    ///     tx.try_send(i, ClassId::SHEDDABLE_PLUS).unwrap();
    /// }
    /// drop(tx);
    /// let mut buf = Vec::new();
    /// assert_eq!(rx.recv_many_blocking(&mut buf, 8), 3);
    /// assert_eq!(rx.recv_many_blocking(&mut buf, 8), 0, "closed and drained");
    /// ```
    pub fn recv_many_blocking(&self, buf: &mut Vec<Delivery<E>>, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        #[cfg(not(veltrix_loom))]
        for attempt in 0..BLOCKING_TRIES {
            let polled = self.shared.poll_pop(None, &mut Ticket::default(), limit, &mut Vec::new(), |d| buf.push(d));
            match polled {
                Poll::Ready(n) => return n,
                Poll::Pending => backoff(attempt),
            }
        }
        block_on(self.recv_many(buf, limit))
    }

    /// Every worker serving this channel is gone (the engine noticed): closes it, marks it
    /// abandoned (later permit fills are dead-lettered `Closed` at once) and dead-letters the
    /// backlog with `reason`.
    pub(crate) fn abandon(&self, reason: DeadLetterReason) {
        self.shared.abandon_with(reason);
    }

    /// Stops admission: later sends get their event back as `Closed`; blocked senders wake and
    /// do too. Queued events and open permits still drain to the receivers, which then get `None`.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether the channel is closed (it may still hold events to drain).
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Events queued in `class` (including any a producer is writing right now).
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn len(&self, class: ClassId) -> usize {
        self.shared.len(class)
    }

    /// Whether nothing is queued in any class.
    pub fn is_empty(&self) -> bool {
        self.shared.is_empty()
    }

    /// `class`'s capacity.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn capacity(&self, class: ClassId) -> usize {
        self.shared.capacity(class)
    }

    /// The occupancy at which `class` counts as full now: its capacity, or under
    /// [adaptive admission](crate::adaptive) the limit the controller set last (at most the
    /// capacity). A node that pulls from an outside queue can size its credit by it.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn admission_limit(&self, class: ClassId) -> usize {
        self.shared.admission_limit(class)
    }

    /// Under [adaptive admission](crate::adaptive), the service rate the controller measured for
    /// `class` (events per second while it had a backlog); `None` before its first measurement,
    /// and always for a static configuration.
    ///
    /// # Panics
    ///
    /// If `class` is not configured.
    pub fn measured_rate(&self, class: ClassId) -> Option<f64> {
        self.shared.measured_rate(class)
    }

    /// The ledger snapshot; see [`Sender::stats`].
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Reports how the processing of a delivered event of `class` ended (and how many retries it
    /// took), so the ledger can tell handled, dead-lettered and in-flight events apart. The caller
    /// hands dead-lettered events to its own sink; this only counts.
    ///
    /// # Panics
    ///
    /// If `class` has no delivered event awaiting completion.
    pub fn complete(&self, class: ClassId, completion: Completion, retries: u32) {
        self.shared.complete(class, completion, retries);
    }

    /// Dead-letters everything queued now with `reason` (through the sink), most critical class
    /// first; returns how many. For a consumer that gives up on the backlog (shutdown).
    pub fn dead_letter_backlog(&self, reason: DeadLetterReason) -> usize {
        self.shared.drain_backlog(reason)
    }

    /// Loom models only: publishes `limit` as `class`'s admission limit exactly as the adaptive
    /// controller does at the end of an interval, without a controller or a clock.
    #[cfg(veltrix_loom)]
    #[doc(hidden)]
    pub fn publish_admission_limit(&self, class: ClassId, limit: u32) {
        let k = self.shared.index(class);
        self.shared.publish_limit(k, limit);
        self.shared.settle_full_bits();
    }

    /// Asserts the channel's invariants: each class's taken positions equal its deliveries plus
    /// dead letters at dequeue and are all released, occupancy within capacity, the published
    /// full bits right, and conservation. Call it at quiescence (no operation in flight).
    ///
    /// # Panics
    ///
    /// If one is broken.
    pub fn check_invariants(&self) {
        self.shared.check_invariants();
    }
}
