//! Veltrix on NATS JetStream: several engine nodes share durable pull consumers, one per route
//! and class (`events.<route>.<class>`). Each node pulls exactly the free credit of a class (so
//! the backlog stays in the stream, and memory is bounded by the credit), acks an event only
//! after its handler finished, and maps the engine's overload decisions onto the server:
//!
//! | in the engine                                 | to the server                                 |
//! |-----------------------------------------------|-----------------------------------------------|
//! | handler returned `Ok`                         | `+ACK`                                        |
//! | handler still running after `progress_every` | `+WPI` (progress), repeated                   |
//! | shed (ShedOldest, CoDel) or refused           | the class's [`ShedAction`]: `-NAK` with delay, or `+TERM` |
//! | past its deadline (counted from publication)  | `+TERM`: no redelivery can meet it            |
//! | backpressure class full                       | the pull waits; the backlog stays in the stream |
//! | handler failed, deliveries left               | `-NAK` (100 ms), redelivered to any node      |
//! | any nak on delivery `max_deliver`             | `+TERM`, counted `exhausted` (the dead letter) |
//! | left at shutdown                              | `-NAK` at once, so another node takes it      |
//! | node crashed                                  | nothing: redelivered after `ack_wait`         |
//!
//! The guarantee is at-least-once: a crash, a lost ack or an `ack_wait` overrun redelivers an
//! event. Redelivered copies are recognised by stream sequence: a copy of an event the node still
//! holds is answered with progress and dropped (`stale`), a copy of one it already acked is acked
//! again without running the handler (`duplicates`). Copies that land on another node run again; count them in the handler
//! if duplicates matter (the tests do).
//!
//! Tested against Debian's nats-server 2.9.10: only consumer options that server understands
//! are sent (`async-nats` without its `server_2_10`+ features).
//!
//! # Examples
//!
//! ```no_run
//! use std::future::Future;
//! use std::time::Duration;
//! use veltrix_engine::Config;
//! use veltrix_engine::runtime::{Handler, HandlerContext, Outcome, RouteSpec};
//! use veltrix_nats::{NatsEvent, Node, NodeConfig, Publisher, ensure_stream};
//!
//! struct Print;
//! impl Handler<NatsEvent> for Print {
//!     fn handle(&self, e: &NatsEvent, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
//!         println!("{} #{}", e.subject(), e.stream_sequence());
//!         std::future::ready(Outcome::Ok)
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("127.0.0.1:4222").await?;
//! let js = async_nats::jetstream::new(client);
//! let config = NodeConfig::new("EVENTS").ack_wait(Duration::from_secs(30)).service_rate(1_000.0);
//! ensure_stream(&js, &config).await?;
//! Publisher::new(js.clone(), &config).publish("orders", "CRITICAL", "order-1", "paid".into()).await?;
//! let node = Node::builder(js, config).route("orders", RouteSpec::new(Config::default()), Print).start().await?;
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! let report = node.shutdown(Duration::from_secs(5)).await;
//! println!("acked {}", report.sum(|c| c.acked));
//! # Ok(()) }
//! ```
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod config;
mod event;
mod node;
mod publish;

pub use config::{ClassPolicy, NodeConfig, NodeError, ShedAction};
pub use event::NatsEvent;
pub use node::{ClassReport, Node, NodeBuilder, NodeReport};
pub use publish::{PublishError, Published, Publisher, ensure_stream};
