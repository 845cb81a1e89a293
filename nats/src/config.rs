//! A node's settings, the per-class shed mapping and the typed errors.

use std::fmt;
use std::time::Duration;

use veltrix_engine::runtime::EngineBuildError;

/// What a shed, expired or refused event tells the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedAction {
    /// `-NAK` with this delay: the server redelivers it later (to any node), up to `max_deliver`.
    Nak(Duration),
    /// `+TERM`: the server never redelivers it. For events whose value is gone once late.
    Term,
}

/// How a node maps one route and class onto JetStream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassPolicy {
    /// Events this node may hold for the class at once (queued + being handled). `None`: the
    /// class's queue capacity, so a fetch never overflows the queue.
    pub credit: Option<usize>,
    /// What a shed (ShedOldest, CoDel) or refused event becomes; an expired one is always termed.
    pub on_shed: ShedAction,
}

impl Default for ClassPolicy {
    /// Credit = queue capacity; shed events are nak'ed with a 1 s delay.
    fn default() -> Self {
        ClassPolicy { credit: None, on_shed: ShedAction::Nak(Duration::from_secs(1)) }
    }
}

impl ClassPolicy {
    /// The default policy with `on_shed`.
    pub fn on_shed(on_shed: ShedAction) -> ClassPolicy {
        ClassPolicy { on_shed, ..ClassPolicy::default() }
    }

    /// This policy with an explicit credit.
    pub fn with_credit(mut self, credit: usize) -> ClassPolicy {
        self.credit = Some(credit);
        self
    }
}

/// Settings shared by every consumer of a node.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The JetStream stream holding the events.
    pub stream: String,
    /// Subjects are `<subject_prefix>.<route>.<class>`.
    pub subject_prefix: String,
    /// Durable consumers are named `<durable_prefix>-<route>-<class>`; nodes sharing them share
    /// the work.
    pub durable_prefix: String,
    /// The server redelivers an event not acked (nor given progress) within this.
    pub ack_wait: Duration,
    /// Deliveries per event before the server gives up; the last failed one is termed and
    /// counted as `exhausted` (the dead letter).
    pub max_deliver: i64,
    /// The server-side cap on unacked events per consumer, over all nodes (`None`: the server's
    /// default, 1000 on 2.9).
    pub max_ack_pending: Option<i64>,
    /// How long one pull request waits for events before it is renewed.
    pub fetch_wait: Duration,
    /// How often a handler still running tells the server it is alive (`+WPI`); at most half of
    /// `ack_wait`.
    pub progress_every: Duration,
    /// Events per second this node's handlers sustain, if known. With it, the node refuses to
    /// start with more credit than Little's law allows: credit ≤ rate × ack_wait / 2, so an
    /// event fetched at the back of a full credit is still handled well inside `ack_wait`.
    pub service_rate: Option<f64>,
}

impl NodeConfig {
    /// Stream `stream`, subjects `events.<route>.<class>`, durables `veltrix-<route>-<class>`,
    /// ack_wait 30 s, max_deliver 5, fetch_wait 250 ms, progress every 10 s.
    pub fn new(stream: impl Into<String>) -> NodeConfig {
        NodeConfig {
            stream: stream.into(),
            subject_prefix: "events".into(),
            durable_prefix: "veltrix".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: None,
            fetch_wait: Duration::from_millis(250),
            progress_every: Duration::from_secs(10),
            service_rate: None,
        }
    }

    /// With `ack_wait`; progress is then sent every `ack_wait / 3`.
    pub fn ack_wait(mut self, ack_wait: Duration) -> NodeConfig {
        self.ack_wait = ack_wait;
        self.progress_every = ack_wait / 3;
        self
    }

    /// With `max_deliver`.
    pub fn max_deliver(mut self, max_deliver: i64) -> NodeConfig {
        self.max_deliver = max_deliver;
        self
    }

    /// With a server-side `max_ack_pending`.
    pub fn max_ack_pending(mut self, max_ack_pending: i64) -> NodeConfig {
        self.max_ack_pending = Some(max_ack_pending);
        self
    }

    /// With the handlers' sustained rate (events/s), enabling the credit check.
    pub fn service_rate(mut self, per_second: f64) -> NodeConfig {
        self.service_rate = Some(per_second);
        self
    }

    /// The subject of `route` and `class`.
    pub fn subject(&self, route: &str, class: &str) -> String {
        format!("{}.{route}.{class}", self.subject_prefix)
    }

    /// The durable consumer name of `route` and `class`.
    pub fn durable(&self, route: &str, class: &str) -> String {
        format!("{}-{route}-{class}", self.durable_prefix)
    }

    /// The most credit Little's law allows at `rate` events/s: `rate × ack_wait / 2`.
    pub fn credit_bound(&self, rate: f64) -> usize {
        (rate * self.ack_wait.as_secs_f64() / 2.0).floor() as usize
    }
}

/// Why a node could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeError {
    /// A name used in a subject or durable name has a character NATS does not allow there
    /// (only ASCII letters, digits, `_` and `-` are accepted).
    InvalidName {
        /// What the name names (`"route"`, `"class"`, `"stream"`, …).
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A class policy names a route or class that was not registered.
    UnknownClass {
        /// The route.
        route: String,
        /// The class.
        class: String,
    },
    /// A setting is out of range.
    InvalidSetting {
        /// Which one.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// More credit than `ack_wait` allows at the configured service rate.
    CreditExceedsAckWait {
        /// Credit over all routes and classes.
        credit: usize,
        /// `service_rate × ack_wait / 2`.
        bound: usize,
    },
    /// The engine refused the routes.
    Engine(EngineBuildError),
    /// The server refused a stream or consumer request.
    Nats(async_nats::Error),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::InvalidName { what, name } => {
                write!(f, "{what} name {name:?} is not usable in a NATS subject: use ASCII letters, digits, _ and -")
            }
            NodeError::UnknownClass { route, class } => write!(f, "no class {class:?} on route {route:?}"),
            NodeError::InvalidSetting { setting, reason } => write!(f, "{setting}: {reason}"),
            NodeError::CreditExceedsAckWait { credit, bound } => write!(
                f,
                "credit {credit} exceeds service_rate × ack_wait / 2 = {bound}: events at the back of the credit \
                 would wait past ack_wait and be redelivered while queued; lower the credit or raise ack_wait"
            ),
            NodeError::Engine(e) => write!(f, "engine: {e}"),
            NodeError::Nats(e) => write!(f, "nats: {e}"),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeError::Engine(e) => Some(e),
            NodeError::Nats(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<EngineBuildError> for NodeError {
    fn from(e: EngineBuildError) -> Self {
        NodeError::Engine(e)
    }
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), NodeError> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(NodeError::InvalidName { what, name: name.to_string() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_fit_a_subject_token() {
        assert!(check_name("route", "orders_v2-eu").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", "ü"] {
            let err = check_name("route", bad).unwrap_err();
            assert!(err.to_string().contains("route name"), "{err}");
        }
    }

    #[test]
    fn credit_bound_is_littles_law_with_half_the_ack_wait() {
        let c = NodeConfig::new("S").ack_wait(Duration::from_secs(4));
        assert_eq!(c.credit_bound(500.0), 1000);
        assert_eq!(c.progress_every, Duration::from_millis(1333) + Duration::from_nanos(333_333));
        assert_eq!(c.subject("orders", "CRITICAL"), "events.orders.CRITICAL");
        assert_eq!(c.durable("orders", "CRITICAL"), "veltrix-orders-CRITICAL");
    }
}
