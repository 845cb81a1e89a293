//! The gate between the front end and the system under test: it hands requests to the system
//! so that every scheduling decision is taken on the queue the exact (continuous-time) system
//! would have, whatever the simulation's step.
//!
//! # Why
//!
//! turmoil advances time in steps (1 ms by default) and delivers messages at step boundaries;
//! tokio's timers fire on them too. If requests went straight into the system, a worker that
//! finished at an exact instant `d` would take its next event at the step after `d`, choosing
//! among whatever had arrived by then — events that exactly arrived after `d` included, events
//! exactly due before `d` but still on the wire excluded. At a service time of a few steps that
//! shifts who goes first enough to blur priority (the top class waits longer than Cobham says,
//! the lower ones less).
//!
//! # How
//!
//! Service is modelled in exact time (`ServerShared::serve`: a job starts at
//! `max(ready, free_at)` on the virtual worker that frees first and ends its service time
//! later). The gate makes the *order* exact too. Each received request waits in the gate, keyed
//! by its exact ready time, and is released into the system only when the decision it takes part
//! in comes up:
//!
//! - **A worker finishing at `d`** (a busy worker's decision) first lets idle workers take, one
//!   at a time, the requests ready before `d`, then releases every request ready by `d`, then
//!   returns to the system, which picks the next event among exactly those.
//! - **An idle worker** (nothing queued) gets the earliest request alone, with any that are ready
//!   at the same instant; the next is released only once it has been taken.
//!
//! A decision at `d` is taken only once every request ready by `d` must have been received: a
//! request is on the wire at most `jitter + 2` steps beyond its ready time (the client sends at
//! the step after its arrival, the network delivers at the step after its latency), so workers
//! and the gate look `LOOKAHEAD_STEPS` steps behind the clock. The simulated clock therefore runs
//! that far ahead of the decisions; what is measured comes from the exact times.
//!
//! What stays on the simulated clock: the engine's own clock reads (deadline expiry at dequeue,
//! CoDel's sojourn) see decisions up to the look-ahead late, and answers leave at the step after
//! the exact end of service. Admission is exact: a request is offered to the system when every
//! decision before its ready time has been taken and none after it.

use std::collections::{BTreeMap, BTreeSet};

use super::server::Job;

/// How many steps behind the clock the decisions run, beyond the network's jitter: a request
/// is received at most two steps after its ready time (plus jitter); one more for margin.
pub(super) const LOOKAHEAD_STEPS: u64 = 3;

/// Received requests not yet handed to the system, and what the release rules need to know.
#[derive(Debug)]
pub(super) struct Gate {
    /// By `(ready_ns, arrival order)`.
    held: BTreeMap<(u64, u64), Job>,
    next_seq: u64,
    /// Every request ready by this instant has been released (or refused).
    released_through: u64,
    /// Workers not inside the service model (waiting for work).
    pub(super) idle: usize,
    /// Released and accepted by the system, not yet started or dead-lettered.
    pub(super) queued: usize,
    /// Requests received after the decision at their ready time was taken (only possible beyond
    /// the look-ahead, as after a partition); they take part in the next one.
    pub(super) late: u64,
    /// The decisions busy workers will take, by `(instant, order of registration)`: with several
    /// workers, the one whose service ends first decides first, whatever order their timers
    /// fire in within a step.
    pending: BTreeSet<(u64, u64)>,
    next_pending: u64,
    /// Workers that finished their job and have not yet taken their next decision.
    pub(super) finishing: usize,
}

impl Gate {
    pub(super) fn new(workers: usize) -> Gate {
        Gate {
            held: BTreeMap::new(),
            next_seq: 0,
            released_through: 0,
            idle: workers,
            queued: 0,
            late: 0,
            pending: BTreeSet::new(),
            next_pending: 0,
            finishing: 0,
        }
    }

    /// Holds `job` until its decision; a job whose ready time was already decided joins the
    /// next decision.
    pub(super) fn hold(&mut self, mut job: Job) {
        if job.ready_ns < self.released_through {
            job.ready_ns = self.released_through;
            self.late += 1;
        }
        self.held.insert((job.ready_ns, self.next_seq), job);
        self.next_seq += 1;
    }

    /// The earliest held ready time.
    pub(super) fn first_ready(&self) -> Option<u64> {
        self.held.first_key_value().map(|((ready, _), _)| *ready)
    }

    /// Whether an idle worker is waiting for the next request: its decision is due when the
    /// earliest one's ready time is past the look-ahead.
    pub(super) fn idle_decision(&self) -> Option<u64> {
        if self.idle > 0 && self.queued == 0 { self.first_ready() } else { None }
    }

    /// Takes every held request ready by `through`, in ready order.
    pub(super) fn release_through(&mut self, through: u64) -> Vec<Job> {
        self.released_through = self.released_through.max(through);
        let later = self.held.split_off(&(through.saturating_add(1), 0));
        std::mem::replace(&mut self.held, later).into_values().collect()
    }

    /// A worker will decide at `at` (its service's end): its place among the pending decisions.
    pub(super) fn will_decide(&mut self, at: u64) -> (u64, u64) {
        let key = (at, self.next_pending);
        self.next_pending += 1;
        self.pending.insert(key);
        key
    }

    /// Whether the decision `key` is the earliest still to be taken.
    pub(super) fn decides_next(&self, key: (u64, u64)) -> bool {
        self.pending.first() == Some(&key)
    }

    /// The decision `key` was taken (or will not be: its worker stops).
    pub(super) fn decided(&mut self, key: (u64, u64)) {
        self.pending.remove(&key);
    }

    /// A new incarnation of the system: `workers` idle workers, nothing queued, no decision
    /// pending (the old system's cancelled work leaves none behind).
    pub(super) fn restart(&mut self, workers: usize) {
        self.idle = workers;
        self.queued = 0;
        self.pending.clear();
        self.finishing = 0;
    }

    /// A crash: the new incarnation starts afresh, and what was held is handed back (it had
    /// arrived: the crash takes it).
    pub(super) fn crash(&mut self, workers: usize) -> Vec<Job> {
        self.restart(workers);
        std::mem::take(&mut self.held).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::wire::Request;

    fn job(ready_ns: u64, id: u64) -> Job {
        let req = Request { id, class: 0, arrival_ns: ready_ns, service_ns: 1, deadline_ns: 0 };
        Job { req, ready_ns, reply: mpsc::unbounded_channel().0 }
    }

    #[test]
    fn releases_in_ready_order_and_late_jobs_join_the_next_decision() {
        let mut g = Gate::new(1);
        g.hold(job(30, 1));
        g.hold(job(10, 2));
        g.hold(job(20, 3));
        g.hold(job(20, 4));
        assert_eq!(g.idle_decision(), Some(10));
        let ids = |v: Vec<Job>| v.iter().map(|j| j.req.id).collect::<Vec<_>>();
        assert_eq!(ids(g.release_through(20)), [2, 3, 4], "ties keep their arrival order");
        g.hold(job(15, 5));
        assert_eq!(g.late, 1);
        assert_eq!(g.first_ready(), Some(20), "a late job is ready at the last decision");
        g.queued = 1;
        assert_eq!(g.idle_decision(), None, "a queued request goes first");
        assert_eq!(ids(g.release_through(u64::MAX)), [5, 1]);
        assert_eq!(g.first_ready(), None);
    }
}
