//! The client host: offers the drawn arrivals over TCP, with timeouts, retries and a retry
//! budget, and counts what came back.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::scenario::Scenario;
use crate::wire::{Outcome, REQUEST_LEN, RESPONSE_LEN, Request, Response, split_wire_id, wire_id};
use crate::workload::Arrival;

use super::{ClientClass, PORT};

/// The client's script: the schedule, and the retry rules.
pub(super) struct ClientPlan {
    pub(super) arrivals: Vec<Arrival>,
    pub(super) deadline_ns: Vec<u64>,
    pub(super) timeout_ns: Option<u64>,
    pub(super) max_attempts: u32,
    pub(super) backoff_ns: u64,
    pub(super) retry_budget: Option<f64>,
    /// When the server stops; no retry is sent from then on.
    pub(super) end_ns: u64,
    pub(super) stop_ns: u64,
}

impl ClientPlan {
    pub(super) fn new(scenario: &Scenario, schedule: &[Arrival], stop_ns: u64) -> ClientPlan {
        let timeout_ns = scenario.client.timeout_ms.map(|t| (t.0 * 1e6) as u64);
        // On the wire, 0 means no deadline.
        let deadline_ns = scenario.useful_within_ns().into_iter().map(|d| d.unwrap_or(0)).collect();
        ClientPlan {
            arrivals: schedule.to_vec(),
            deadline_ns,
            timeout_ns,
            max_attempts: scenario.client.max_attempts,
            backoff_ns: (scenario.client.backoff_ms.0 * 1e6) as u64,
            retry_budget: scenario.client.retry_budget.map(|b| b.0),
            end_ns: (scenario.duration_s.0 * 1e9) as u64,
            stop_ns,
        }
    }
}

struct Pending {
    pub(super) arrival: Arrival,
    /// The latest attempt sent.
    pub(super) attempt: u32,
    /// Whether that attempt still awaits an answer.
    pub(super) waiting: bool,
    pub(super) done: bool,
}

/// Connects and starts a reader that forwards decoded responses to `tx`.
pub(super) async fn connect(tx: &mpsc::UnboundedSender<Response>) -> Option<turmoil::net::tcp::OwnedWriteHalf> {
    let stream = turmoil::net::TcpStream::connect(("server", PORT)).await.ok()?;
    let (mut rd, wr) = stream.into_split();
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; RESPONSE_LEN];
        while rd.read_exact(&mut buf).await.is_ok() {
            match Response::decode(&buf) {
                Ok(r) if tx.send(r).is_ok() => {}
                // A malformed frame or a finished client: stop reading this connection.
                _ => break,
            }
        }
    });
    Some(wr)
}

pub(super) async fn client_main(plan: ClientPlan, stats: Arc<Mutex<Vec<ClientClass>>>) -> turmoil::Result {
    let t0 = Instant::now() - turmoil::sim_elapsed().unwrap_or_default();
    let (tx, mut responses) = mpsc::unbounded_channel::<Response>();
    // The server binds on its first poll: retry until it listens.
    let mut wr = loop {
        if let Some(w) = connect(&tx).await {
            break Some(w);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mut client = Client::new(plan, stats);
    loop {
        let now = now_ns();
        if now >= client.plan.stop_ns {
            break;
        }
        client.send_due(now);
        if !client.out.is_empty() {
            if wr.is_none() {
                wr = connect(&tx).await;
            }
            let written = match &mut wr {
                Some(w) => w.write_all(&client.out).await.is_ok(),
                None => false,
            };
            if !written {
                // The server is down (crashed): these attempts fail; timeouts will retry them.
                wr = None;
                client.send_failed();
            }
            client.out.clear();
            client.out_classes.clear();
        }
        let wake = client.next_wake();
        tokio::select! {
            biased;
            Some(r) = responses.recv() => client.answered(r, now_ns()),
            _ = tokio::time::sleep_until(t0 + Duration::from_nanos(wake)) => {}
        }
    }
    client.finish();
    Ok(())
}

fn now_ns() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64
}

/// The client's state between wake-ups: what is outstanding, what is due when, and the frames
/// to write next.
struct Client {
    plan: ClientPlan,
    stats: Arc<Mutex<Vec<ClientClass>>>,
    pending: BTreeMap<u64, Pending>,
    /// `(when, request, attempt)`: an attempt times out.
    timeouts: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// `(when, request)`: the next attempt goes out.
    retries: BinaryHeap<Reverse<(u64, u64)>>,
    /// The retry budget's tokens.
    tokens: f64,
    /// The next fresh arrival in `plan.arrivals`.
    next: usize,
    /// Encoded frames to write, and their classes (to count the ones that cannot be written).
    out: Vec<u8>,
    out_classes: Vec<u8>,
}

impl Client {
    fn new(plan: ClientPlan, stats: Arc<Mutex<Vec<ClientClass>>>) -> Client {
        Client {
            plan,
            stats,
            pending: BTreeMap::new(),
            timeouts: BinaryHeap::new(),
            retries: BinaryHeap::new(),
            tokens: 0.0,
            next: 0,
            out: Vec::with_capacity(64 * REQUEST_LEN),
            out_classes: Vec::new(),
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Vec<ClientClass>> {
        self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fresh arrivals, retries and timeouts due by `now`: frames into `out`, counts into stats.
    fn send_due(&mut self, now: u64) {
        let stats = self.stats.clone();
        let mut stats = stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(a) = self.plan.arrivals.get(self.next).filter(|a| a.at_ns <= now).copied() {
            self.next += 1;
            stats[a.class as usize].fresh += 1;
            self.tokens = (self.tokens + self.plan.retry_budget.unwrap_or(0.0)).min(100.0);
            self.pending.insert(a.id, Pending { arrival: a, attempt: 1, waiting: true, done: false });
            self.send(&a, 1, a.at_ns);
        }
        while let Some(&Reverse((at, id))) = self.retries.peek().filter(|r| r.0.0 <= now) {
            self.retries.pop();
            if at >= self.plan.end_ns {
                // The server has stopped: the request ends unanswered rather than with an
                // attempt that could still be on the wire when the simulation ends.
                continue;
            }
            let p = self.pending.get_mut(&id).expect("pending");
            p.attempt += 1;
            p.waiting = true;
            stats[p.arrival.class as usize].retries += 1;
            let (arrival, attempt) = (p.arrival, p.attempt);
            self.send(&arrival, attempt, at);
        }
        while let Some(&Reverse((_, id, attempt))) = self.timeouts.peek().filter(|t| t.0.0 <= now) {
            self.timeouts.pop();
            let p = self.pending.get_mut(&id).expect("pending");
            if p.done || !p.waiting || p.attempt != attempt {
                continue;
            }
            stats[p.arrival.class as usize].timeouts += 1;
            retry_or_fail(p, &self.plan, now, &mut self.tokens, &mut self.retries, &mut stats);
        }
    }

    /// Encodes one attempt into `out` and arms its timeout.
    fn send(&mut self, a: &Arrival, attempt: u32, at_ns: u64) {
        let req = Request {
            id: wire_id(a.id, attempt),
            class: a.class,
            arrival_ns: at_ns,
            service_ns: a.service_ns,
            deadline_ns: self.plan.deadline_ns[a.class as usize],
        };
        self.out.extend_from_slice(&req.encode());
        self.out_classes.push(a.class);
        if let Some(t) = self.plan.timeout_ns {
            self.timeouts.push(Reverse((at_ns + t, a.id, attempt)));
        }
    }

    /// The frames in `out` could not be written.
    fn send_failed(&self) {
        let mut stats = self.stats();
        for &class in &self.out_classes {
            stats[class as usize].send_failed += 1;
        }
    }

    /// When something is next due: an arrival, a timeout, a retry, or the stop.
    fn next_wake(&self) -> u64 {
        [
            self.plan.arrivals.get(self.next).map(|a| a.at_ns),
            self.timeouts.peek().map(|t| t.0.0),
            self.retries.peek().map(|r| r.0.0),
            Some(self.plan.stop_ns),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("stop is always there")
    }

    /// An answer came back: it ends its request if it answers the latest attempt.
    fn answered(&mut self, r: Response, now: u64) {
        let (id, attempt) = split_wire_id(r.id);
        let stats = self.stats.clone();
        let mut stats = stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = self.pending.get_mut(&id).filter(|p| !p.done && p.waiting && p.attempt == attempt) {
            if r.outcome == Outcome::Handled {
                p.done = true;
                stats[p.arrival.class as usize].succeeded += 1;
            } else {
                retry_or_fail(p, &self.plan, now, &mut self.tokens, &mut self.retries, &mut stats);
            }
        }
    }

    /// The run is over: what never ended is unanswered.
    fn finish(&self) {
        let mut stats = self.stats();
        for p in self.pending.values().filter(|p| !p.done) {
            stats[p.arrival.class as usize].unanswered += 1;
        }
    }
}

/// The attempt failed (an error answer, or its timeout): retry after the back-off if attempts
/// and the retry budget allow, else the request fails.
fn retry_or_fail(
    p: &mut Pending,
    plan: &ClientPlan,
    now: u64,
    tokens: &mut f64,
    retries: &mut BinaryHeap<Reverse<(u64, u64)>>,
    stats: &mut [ClientClass],
) {
    let class = p.arrival.class as usize;
    // The attempt is over either way: a late answer to it no longer matches.
    p.waiting = false;
    if p.attempt >= plan.max_attempts {
        p.done = true;
        stats[class].failed += 1;
        return;
    }
    if plan.retry_budget.is_some() {
        if *tokens < 1.0 {
            p.done = true;
            stats[class].budget_denied += 1;
            stats[class].failed += 1;
            return;
        }
        *tokens -= 1.0;
    }
    retries.push(Reverse((now + plan.backoff_ns, p.arrival.id)));
}
