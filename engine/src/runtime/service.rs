//! A `tower::Service` that submits to one route and class (feature `tower`).

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use super::{Engine, RouteId, Routed};
use crate::chan::{OwnedPermit, ReserveTicket, Sender};
use crate::config::ClassId;
use crate::error::{ReserveError, SubmitError};

/// A `tower::Service` that submits each request to one route and class (feature `tower`).
///
/// `poll_ready` reserves a slot, so it is `Pending` while the class is full under backpressure:
/// a tower stack sees the engine's capacity as readiness. `call` fills the slot. A refusal
/// (closed, rejected by policy) is answered by `call` with the request handed back in
/// [`SubmitError`], and counted in the route's ledger as an offered, refused event — so
/// `offered` equals the requests called.
pub struct SubmitService<E> {
    tx: Sender<Routed<E>>,
    route: RouteId,
    class: ClassId,
    ready: Option<Result<OwnedPermit<Routed<E>>, ReserveError>>,
    ticket: ReserveTicket<Routed<E>>,
}

impl<E> std::fmt::Debug for SubmitService<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitService").field("route", &self.route).field("class", &self.class).finish_non_exhaustive()
    }
}

impl<E> Engine<E> {
    /// A `tower::Service` submitting to `route` in `class`, or `None` if the route does not
    /// exist, lacks the class, or is keyed (a keyed route picks its lane from each event's key,
    /// which `poll_ready` cannot know).
    pub fn service(&self, route: &str, class: ClassId) -> Option<SubmitService<E>> {
        let r = self.find(route)?;
        if r.senders.len() != 1 || class.index() >= r.classes.len() {
            return None;
        }
        Some(SubmitService {
            tx: r.senders[0].clone(),
            route: r.id,
            class,
            ready: None,
            ticket: ReserveTicket::default(),
        })
    }
}

impl<E> tower::Service<E> for SubmitService<E> {
    type Response = ();
    type Error = SubmitError<E>;
    type Future = Ready<Result<(), SubmitError<E>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready.is_none() {
            match self.tx.poll_reserve_owned(cx, self.class, &mut self.ticket) {
                Poll::Ready(r) => self.ready = Some(r),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// # Panics
    ///
    /// If `poll_ready` did not return `Ready` first (the tower contract).
    fn call(&mut self, event: E) -> Self::Future {
        let out = match self.ready.take().expect("call without poll_ready") {
            Ok(permit) => {
                permit.send(Routed { route: self.route, key: None, event }, None);
                Ok(())
            }
            Err(e) => {
                // The request was offered and is handed back: the ledger counts it as a refused
                // event (the refused reservation itself is counted apart).
                self.tx.count_refused(self.class, e);
                Err(e.with(Routed { route: self.route, key: None, event }).into())
            }
        };
        ready(out)
    }
}
