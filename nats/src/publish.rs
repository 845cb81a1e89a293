//! Publishing events into the stream exactly once per id, and creating the stream.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use crate::config::{NodeConfig, NodeError, check_name};

/// Creates the node's stream if it does not exist: subjects `<subject_prefix>.>`, file storage,
/// a 2-minute duplicate window for `Nats-Msg-Id`. An existing stream is used as it is (its
/// duplicate window is what makes retried publishes safe).
///
/// # Errors
///
/// [`NodeError::InvalidName`] or [`NodeError::InvalidSetting`] for a bad config,
/// [`NodeError::Nats`] if the server refuses.
pub async fn ensure_stream(js: &jetstream::Context, config: &NodeConfig) -> Result<stream::Stream, NodeError> {
    config.validate()?;
    js.get_or_create_stream(stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| NodeError::Nats(e.into()))
}

/// Why a publish failed for good.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The route or class name cannot be a subject token (no consumer would ever see it).
    InvalidName(NodeError),
    /// Every attempt failed; the last error. The event may or may not be in the stream:
    /// publishing it again with the same id is safe within the stream's duplicate window.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: async_nats::Error,
    },
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Failed { attempts, last } => write!(f, "publish failed after {attempts} attempts: {last}"),
            PublishError::InvalidName(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PublishError::Failed { last, .. } => Some(last.as_ref()),
            PublishError::InvalidName(e) => Some(e),
        }
    }
}

/// How one publish ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The event's stream sequence.
    pub sequence: u64,
    /// The server already had an event with this id (a retried publish): it was not stored twice.
    pub duplicate: bool,
    /// Attempts it took (1 when the first went through).
    pub attempts: u32,
}

/// Publishes events with a `Nats-Msg-Id`, retrying failed publishes with the same id so the
/// stream's duplicate window stores each event once.
#[derive(Clone, Debug)]
pub struct Publisher {
    js: jetstream::Context,
    subject_prefix: String,
    attempts: u32,
}

impl Publisher {
    /// Publishes to `config`'s subjects, with up to 5 attempts per event.
    pub fn new(js: jetstream::Context, config: &NodeConfig) -> Publisher {
        Publisher { js, subject_prefix: config.subject_prefix.clone(), attempts: 5 }
    }

    /// With up to `attempts` attempts per event (≥ 1).
    pub fn attempts(mut self, attempts: u32) -> Publisher {
        self.attempts = attempts.max(1);
        self
    }

    /// Publishes `payload` for `route` and `class` under `id`, waiting for the server's ack.
    ///
    /// # Errors
    ///
    /// [`PublishError::InvalidName`] for a route or class no node could consume;
    /// [`PublishError::Failed`] once every attempt failed.
    pub async fn publish(&self, route: &str, class: &str, id: &str, payload: Bytes) -> Result<Published, PublishError> {
        check_name("route", route).and_then(|()| check_name("class", class)).map_err(PublishError::InvalidName)?;
        let subject = format!("{}.{route}.{class}", self.subject_prefix);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let message = jetstream::message::PublishMessage::build().payload(payload.clone()).message_id(id);
            let result = match self.js.send_publish(subject.clone(), message).await {
                Ok(ack) => ack.await.map_err(async_nats::Error::from),
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(ack) => {
                    return Ok(Published { sequence: ack.sequence, duplicate: ack.duplicate, attempts: attempt });
                }
                Err(last) if attempt >= self.attempts => return Err(PublishError::Failed { attempts: attempt, last }),
                Err(e) => {
                    tracing::debug!(id, attempt, error = %e, "publish failed; retrying with the same id");
                    tokio::time::sleep(Duration::from_millis(50) * attempt).await;
                }
            }
        }
    }
}
