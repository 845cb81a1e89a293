//! A node's settings, topic naming, and the errors of a bad setting.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

/// Settings shared by every node of one consumer group.
///
/// Topics are named `<topic_prefix>.<route>.<class>` (`veltrix.orders.CRITICAL`), and dead
/// letters go to `<topic_prefix>.dlq` unless [`dead_letter_topic`](Self::dead_letter_topic)
/// says otherwise. Route and class names may hold ASCII letters, digits, `_` and `-`.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub(crate) bootstrap: String,
    pub(crate) group: String,
    pub(crate) topic_prefix: String,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) commit_every: Duration,
    pub(crate) revoke_drain: Duration,
    pub(crate) session_timeout: Duration,
    pub(crate) prefetch_kbytes: usize,
    pub(crate) fetch_wait: Duration,
    pub(crate) client: Vec<(String, String)>,
}

impl NodeConfig {
    /// Nodes of consumer group `group` on the cluster at `bootstrap` (`host:port,…`), with the
    /// defaults: topic prefix `veltrix`, commits every 200 ms, 5 s to finish a revoked
    /// partition's events, a 10 s session timeout, 1 MiB of prefetch per partition, fetches
    /// that wait at most 20 ms for data.
    pub fn new(bootstrap: impl Into<String>, group: impl Into<String>) -> NodeConfig {
        NodeConfig {
            bootstrap: bootstrap.into(),
            group: group.into(),
            topic_prefix: "veltrix".to_string(),
            dead_letter_topic: None,
            commit_every: Duration::from_millis(200),
            revoke_drain: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            prefetch_kbytes: 1024,
            fetch_wait: Duration::from_millis(20),
            client: Vec::new(),
        }
    }

    /// The first part of every topic name.
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> NodeConfig {
        self.topic_prefix = prefix.into();
        self
    }

    /// Where dead letters go (default `<topic_prefix>.dlq`).
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> NodeConfig {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// How often finished offsets are committed (they are also committed on revocation and
    /// at shutdown). A crash replays the work handled since the last commit, and everything
    /// finished above an event that was still running.
    pub fn commit_every(mut self, every: Duration) -> NodeConfig {
        self.commit_every = every;
        self
    }

    /// How long a revoked partition's events in flight may run before the partition is
    /// handed over without them: the new owner reads them again (duplicates, counted
    /// `handed_back`).
    pub fn revoke_drain(mut self, drain: Duration) -> NodeConfig {
        self.revoke_drain = drain;
        self
    }

    /// The group session timeout: how long a crashed node keeps its partitions.
    pub fn session_timeout(mut self, timeout: Duration) -> NodeConfig {
        self.session_timeout = timeout;
        self
    }

    /// How much the node may fetch ahead of its credit per partition, in KiB
    /// (`queued.max.messages.kbytes`, and at most 10,000 messages): with the credit, the bound
    /// on what a node holds.
    pub fn prefetch_kbytes(mut self, kbytes: usize) -> NodeConfig {
        self.prefetch_kbytes = kbytes;
        self
    }

    /// How long the broker may hold a fetch that found no data (`fetch.wait.max.ms`): with a
    /// partition's queue empty, an event published meanwhile waits for the fetch in flight to
    /// end, so this bounds its extra latency, at the price of idle fetches.
    pub fn fetch_wait(mut self, wait: Duration) -> NodeConfig {
        self.fetch_wait = wait;
        self
    }

    /// Any other librdkafka setting for the node's clients (`security.protocol`, …). The
    /// settings the node's guarantees rest on cannot be overridden ([`NodeError::InvalidSetting`]).
    pub fn client_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> NodeConfig {
        self.client.push((key.into(), value.into()));
        self
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The first part of every topic name.
    pub fn prefix(&self) -> &str {
        &self.topic_prefix
    }

    /// The topic of `class` on `route`.
    pub fn topic(&self, route: &str, class: &str) -> String {
        format!("{}.{route}.{class}", self.topic_prefix)
    }

    /// The dead-letter topic.
    pub fn dlq_topic(&self) -> String {
        self.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dlq", self.topic_prefix))
    }

    pub(crate) fn validate(&self) -> Result<(), NodeError> {
        let bad = |setting: &'static str, reason: String| Err(NodeError::InvalidSetting { setting, reason });
        if self.bootstrap.trim().is_empty() {
            return bad("bootstrap", "empty: name at least one broker as host:port".into());
        }
        if self.group.is_empty() || self.group.len() > 255 {
            return bad("group", format!("{:?}: must be 1 to 255 characters", self.group));
        }
        check_topic(&self.topic_prefix, "topic_prefix")?;
        check_topic(&self.dlq_topic(), "dead_letter_topic")?;
        if self.commit_every.is_zero() {
            return bad("commit_every", "zero: commits would never pause".into());
        }
        let session = self.session_timeout.as_millis();
        if !(1_000..=3_600_000).contains(&session) {
            return bad("session_timeout", format!("{:?}: must be 1 s to 1 h", self.session_timeout));
        }
        if !(1..=2_097_151).contains(&self.prefetch_kbytes) {
            return bad("prefetch_kbytes", format!("{}: must be in 1..=2097151", self.prefetch_kbytes));
        }
        if !(1..=300_000).contains(&self.fetch_wait.as_millis()) {
            return bad("fetch_wait", format!("{:?}: must be 1 ms to 300 s", self.fetch_wait));
        }
        if let Some((key, _)) = self.client.iter().find(|(k, _)| RESERVED.contains(&k.as_str())) {
            return bad("client_setting", format!("{key:?} is set by the node (its guarantees rest on it)"));
        }
        Ok(())
    }

    /// The settings every client of the node starts from: the user's, then the bootstrap.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    /// One class's consumer: manual commits of offsets the node tracks itself, cooperative
    /// rebalancing (a joining node does not stop every partition), bounded prefetch.
    pub(crate) fn consumer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = self.client_config();
        let session = self.session_timeout.as_millis();
        c.set("group.id", &self.group)
            .set("client.id", client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 3).max(100).to_string())
            // Per partition (intake reads each partition's own queue): the client stops
            // fetching a partition whose queue holds this many messages or kilobytes.
            .set("queued.min.messages", "10000")
            .set("queued.max.messages.kbytes", self.prefetch_kbytes.to_string())
            .set("fetch.wait.max.ms", self.fetch_wait.as_millis().to_string())
            // A full prefetch queue would otherwise postpone the partition's next fetch by 1 s.
            .set("fetch.queue.backoff.ms", "5")
            .set("isolation.level", "read_committed");
        c
    }
}

/// librdkafka settings the node sets itself.
const RESERVED: [&str; 12] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "partition.assignment.strategy",
    "enable.idempotence",
    "acks",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
];

/// One route and class's settings on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassPolicy {
    /// The most events of this class the node holds at once (queued, running, or waiting for
    /// their dead letter to be written). `None`: the class's capacity.
    pub credit: Option<usize>,
}

impl ClassPolicy {
    /// A policy holding at most `credit` events.
    pub fn credit(credit: usize) -> ClassPolicy {
        ClassPolicy { credit: Some(credit) }
    }
}

/// Why a node could not start, or a publish was refused before it reached Kafka.
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeError {
    /// A route or class name that cannot be part of a topic name.
    InvalidName {
        /// `route` or `class`.
        kind: &'static str,
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A setting out of range.
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// Its value and the allowed range.
        reason: String,
    },
    /// A policy for a route or class the node does not have.
    UnknownClass {
        /// The route.
        route: String,
        /// The class.
        class: String,
    },
    /// A topic the node reads or writes does not exist (create it with
    /// [`ensure_topics`](crate::ensure_topics)).
    MissingTopic {
        /// The topic.
        topic: String,
    },
    /// The engine refused its configuration.
    Engine(veltrix_engine::runtime::EngineBuildError),
    /// The Kafka client failed.
    Kafka(KafkaError),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::InvalidName { kind, name, reason } => write!(f, "invalid {kind} name {name:?}: {reason}"),
            NodeError::InvalidSetting { setting, reason } => write!(f, "invalid {setting}: {reason}"),
            NodeError::UnknownClass { route, class } => write!(f, "policy for unknown route/class {route}/{class}"),
            NodeError::MissingTopic { topic } => write!(f, "topic {topic:?} does not exist (see ensure_topics)"),
            NodeError::Engine(e) => write!(f, "engine: {e}"),
            NodeError::Kafka(e) => write!(f, "kafka: {e}"),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeError::Engine(e) => Some(e),
            NodeError::Kafka(e) => Some(e),
            _ => None,
        }
    }
}

impl From<KafkaError> for NodeError {
    fn from(e: KafkaError) -> Self {
        NodeError::Kafka(e)
    }
}

impl From<veltrix_engine::runtime::EngineBuildError> for NodeError {
    fn from(e: veltrix_engine::runtime::EngineBuildError) -> Self {
        NodeError::Engine(e)
    }
}

/// A route or class name: one part of a topic name, without the separator.
pub(crate) fn check_name(kind: &'static str, name: &str) -> Result<(), NodeError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 100 {
        Some("longer than 100 characters")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        Some("only ASCII letters, digits, '_' and '-' may appear in a topic name part")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NodeError::InvalidName { kind, name: name.to_string(), reason }),
        None => Ok(()),
    }
}

/// A whole topic name (Kafka's rule: 1 to 249 of ASCII letters, digits, `.`, `_`, `-`).
fn check_topic(topic: &str, setting: &'static str) -> Result<(), NodeError> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NodeError::InvalidSetting {
            setting,
            reason: format!("{topic:?}: a topic name is 1 to 249 ASCII letters, digits, '.', '_' or '-'"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_settings_are_checked() {
        assert!(check_name("route", "orders").is_ok());
        assert!(check_name("class", "CRITICAL_PLUS").is_ok());
        for bad in ["", "a.b", "a b", "ü"] {
            let e = check_name("class", bad).unwrap_err();
            assert!(matches!(e, NodeError::InvalidName { kind: "class", .. }), "{bad:?}: {e}");
        }
        let ok = NodeConfig::new("127.0.0.1:9092", "g");
        assert!(ok.validate().is_ok());
        assert_eq!(ok.topic("orders", "CRITICAL"), "veltrix.orders.CRITICAL");
        assert_eq!(ok.dlq_topic(), "veltrix.dlq");
        let cases = [
            (NodeConfig::new(" ", "g"), "bootstrap"),
            (NodeConfig::new("b:1", ""), "group"),
            (NodeConfig::new("b:1", "g").topic_prefix("a/b"), "topic_prefix"),
            (NodeConfig::new("b:1", "g").dead_letter_topic(""), "dead_letter_topic"),
            (NodeConfig::new("b:1", "g").commit_every(Duration::ZERO), "commit_every"),
            (NodeConfig::new("b:1", "g").session_timeout(Duration::from_millis(10)), "session_timeout"),
            (NodeConfig::new("b:1", "g").prefetch_kbytes(0), "prefetch_kbytes"),
            (NodeConfig::new("b:1", "g").fetch_wait(Duration::ZERO), "fetch_wait"),
            (NodeConfig::new("b:1", "g").client_setting("enable.auto.commit", "true"), "client_setting"),
        ];
        for (config, setting) in cases {
            match config.validate() {
                Err(NodeError::InvalidSetting { setting: s, reason }) => {
                    assert_eq!(s, setting, "{reason}");
                    assert!(!reason.is_empty());
                }
                other => panic!("{setting}: {other:?}"),
            }
        }
    }
}
