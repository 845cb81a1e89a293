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
    /// start with more credit than Little's law allows: credit ≤ rate × ack_wait / 2, so a
    /// backlog served in arrival order is handled within half of `ack_wait`. Under priority
    /// scheduling a less critical class can wait longer behind critical work; the server's
    /// redeliveries of its held events are then answered with progress and dropped (`stale`),
    /// never run twice on this node.
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
    /// A name used in a subject or durable name has a character that is not allowed there:
    /// route and class names take ASCII letters, digits and `_`; the stream and the prefixes may
    /// also use `-` (and the subject prefix `.` between tokens).
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
    /// The durable consumer already exists with other settings than the node's (it is not
    /// changed behind the other nodes' backs: delete it, or use the settings it has).
    ConsumerMismatch {
        /// The durable.
        durable: String,
        /// The first setting that differs.
        setting: &'static str,
        /// `server vs node`.
        values: String,
    },
    /// The server refused a stream or consumer request.
    Nats(async_nats::Error),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::InvalidName { what, name } => {
                write!(
                    f,
                    "{what} {name:?} is not usable in NATS subjects and durable names: use ASCII letters, digits and _"
                )
            }
            NodeError::UnknownClass { route, class } => write!(f, "no class {class:?} on route {route:?}"),
            NodeError::InvalidSetting { setting, reason } => write!(f, "{setting}: {reason}"),
            NodeError::CreditExceedsAckWait { credit, bound } => write!(
                f,
                "credit {credit} exceeds service_rate × ack_wait / 2 = {bound}: events at the back of the credit \
                 would wait past ack_wait and be redelivered while queued; lower the credit or raise ack_wait"
            ),
            NodeError::ConsumerMismatch { durable, setting, values } => {
                write!(f, "durable consumer {durable} exists with another {setting} (server vs node: {values})")
            }
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

/// Route and class names: one subject token, and free of the `-` that joins durable names (so
/// two lanes can never share a durable).
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), NodeError> {
    check_chars(what, name, |b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_chars(what: &'static str, name: &str, allowed: impl Fn(u8) -> bool) -> Result<(), NodeError> {
    let ok = !name.is_empty() && name.bytes().all(allowed);
    if ok { Ok(()) } else { Err(NodeError::InvalidName { what, name: name.to_string() }) }
}

impl NodeConfig {
    /// Checks names and ranges.
    ///
    /// # Errors
    ///
    /// [`NodeError::InvalidName`] or [`NodeError::InvalidSetting`] for the first problem.
    pub fn validate(&self) -> Result<(), NodeError> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        check_chars("stream", &self.stream, token)?;
        check_chars("durable_prefix", &self.durable_prefix, token)?;
        // A subject prefix may have several tokens, but no wildcard and no empty token.
        for part in self.subject_prefix.split('.') {
            check_chars("subject_prefix", part, token)
                .map_err(|_| NodeError::InvalidName { what: "subject_prefix", name: self.subject_prefix.clone() })?;
        }
        let rate_ok = self.service_rate.is_none_or(|r| r.is_finite() && r > 0.0);
        for (setting, ok, range) in [
            ("ack_wait", !self.ack_wait.is_zero() && self.ack_wait <= MAX_ACK_WAIT, "in (0, 1 day]"),
            ("fetch_wait", !self.fetch_wait.is_zero() && self.fetch_wait <= MAX_FETCH_WAIT, "in (0, 60 s]"),
            (
                "progress_every",
                !self.progress_every.is_zero() && self.progress_every <= self.ack_wait / 2,
                "in (0, ack_wait / 2]",
            ),
            ("max_deliver", self.max_deliver == -1 || self.max_deliver >= 1, "-1 (unlimited) or ≥ 1"),
            ("max_ack_pending", self.max_ack_pending.is_none_or(|m| m == -1 || m >= 1), "-1 (unlimited) or ≥ 1"),
            ("service_rate", rate_ok, "finite and > 0"),
        ] {
            if !ok {
                return Err(NodeError::InvalidSetting { setting, reason: format!("must be {range}") });
            }
        }
        Ok(())
    }
}

const MAX_ACK_WAIT: Duration = Duration::from_secs(24 * 3600);
const MAX_FETCH_WAIT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_fit_a_subject_token() {
        assert!(check_name("route", "orders_v2").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", "ü", "a-b"] {
            let err = check_name("route", bad).unwrap_err();
            assert!(err.to_string().starts_with("route "), "{err}");
        }
    }

    #[test]
    fn config_validation_names_the_setting() {
        assert!(NodeConfig::new("S").validate().is_ok());
        let mut c = NodeConfig::new("S");
        c.subject_prefix = "app.events".into();
        assert!(c.validate().is_ok(), "a multi-token prefix is fine");
        for prefix in ["app.>", "app..x", "a*", ""] {
            c.subject_prefix = prefix.into();
            assert!(matches!(c.validate(), Err(NodeError::InvalidName { what: "subject_prefix", .. })), "{prefix}");
        }
        type Break = fn(&mut NodeConfig);
        let cases: [(&str, Break); 6] = [
            ("ack_wait", |c| c.ack_wait = Duration::ZERO),
            ("fetch_wait", |c| c.fetch_wait = Duration::from_secs(61)),
            ("progress_every", |c| c.progress_every = c.ack_wait),
            ("max_deliver", |c| c.max_deliver = 0),
            ("max_ack_pending", |c| c.max_ack_pending = Some(0)),
            ("service_rate", |c| c.service_rate = Some(f64::NAN)),
        ];
        for (name, break_it) in cases {
            let mut c = NodeConfig::new("S");
            break_it(&mut c);
            match c.validate() {
                Err(NodeError::InvalidSetting { setting, .. }) => assert_eq!(setting, name),
                other => panic!("{name}: {other:?}"),
            }
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
