//! Publishing events to a class's topic, and creating the topics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{NodeConfig, NodeError, check_name};

/// Publishes events to `<prefix>.<route>.<class>` with an idempotent producer (`acks=all`):
/// a retry inside the client never writes an event twice. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    config: NodeConfig,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Where a published event landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
}

/// Why an event was not published.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The route or class name cannot be part of a topic name; nothing was sent.
    InvalidName(NodeError),
    /// Kafka did not take it (after the client's own retries).
    Kafka(KafkaError),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::InvalidName(e) => write!(f, "not published: {e}"),
            PublishError::Kafka(e) => write!(f, "not published: {e}"),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PublishError::InvalidName(e) => Some(e),
            PublishError::Kafka(e) => Some(e),
        }
    }
}

/// How long a publish waits for room in the client's queue before it fails.
const QUEUE_WAIT: Duration = Duration::from_secs(30);

impl Publisher {
    /// A publisher to the cluster and topics of `config`.
    ///
    /// # Errors
    ///
    /// [`NodeError::InvalidSetting`] for a bad setting, [`NodeError::Kafka`] if the client
    /// could not be created.
    pub fn new(config: &NodeConfig) -> Result<Publisher, NodeError> {
        config.validate()?;
        let producer = config
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()?;
        Ok(Publisher { producer, config: config.clone() })
    }

    /// Publishes `payload` (with `key`, which picks the partition) to the topic of `class` on
    /// `route`, and waits until Kafka has it.
    ///
    /// # Errors
    ///
    /// [`PublishError::InvalidName`] before anything is sent, or [`PublishError::Kafka`].
    pub async fn publish(
        &self,
        route: &str,
        class: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<Published, PublishError> {
        check_name("route", route).map_err(PublishError::InvalidName)?;
        check_name("class", class).map_err(PublishError::InvalidName)?;
        let topic = self.config.topic(route, class);
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        match self.producer.send(record, QUEUE_WAIT).await {
            Ok(d) => Ok(Published { partition: d.partition, offset: d.offset }),
            Err((e, _)) => Err(PublishError::Kafka(e)),
        }
    }

    /// Waits until every event published so far is written, for up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`PublishError::Kafka`] if some were not written in time.
    pub fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        self.producer.flush(timeout).map_err(PublishError::Kafka)
    }
}

/// Creates the topic of every `(route, class)` and the dead-letter topic, with `partitions`
/// partitions and `replication` copies each; topics that already exist are left as they are.
///
/// # Errors
///
/// [`NodeError::InvalidName`] or [`NodeError::InvalidSetting`] before anything is created, or
/// [`NodeError::Kafka`] for a topic the cluster refused.
pub async fn ensure_topics(
    config: &NodeConfig,
    classes: &[(&str, &str)],
    partitions: i32,
    replication: i32,
) -> Result<(), NodeError> {
    config.validate()?;
    if partitions < 1 || replication < 1 {
        return Err(NodeError::InvalidSetting {
            setting: "partitions",
            reason: format!("{partitions} partitions, {replication} replicas: both must be at least 1"),
        });
    }
    let mut names = Vec::with_capacity(classes.len() + 1);
    for (route, class) in classes {
        check_name("route", route)?;
        check_name("class", class)?;
        names.push(config.topic(route, class));
    }
    names.push(config.dlq_topic());
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let topics: Vec<NewTopic<'_>> =
        names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(NodeError::Kafka(KafkaError::AdminOp(code))).inspect_err(|_| {
                    tracing::warn!(%topic, %code, "topic not created");
                });
            }
        }
    }
    Ok(())
}
