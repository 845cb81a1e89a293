//! Veltrix on Apache Kafka.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod config;
mod event;
mod node;
mod offsets;
mod publish;

pub use config::{ClassPolicy, NodeConfig, NodeError};
pub use event::KafkaEvent;
pub use node::{ClassReport, Node, NodeBuilder, NodeReport};
pub use offsets::{CommitTracker, Take};
pub use publish::{PublishError, Published, Publisher, ensure_topics};
