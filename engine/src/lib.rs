#![doc = include_str!("../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod adaptive;
mod chan;
mod codel;
mod config;
mod contain;
pub mod core;
mod dead;
mod error;
mod latch;
mod ledger;
pub mod runtime;
mod sched;
mod sync;
mod time;

pub use adaptive::Adaptive;
pub use chan::{OwnedPermit, Permit, Receiver, ReserveTicket, Sender, channel, channel_with_sink};
pub use config::{
    ClassId, ClassSpec, Codel, Config, ConfigBuilder, MAX_CAPACITY, MAX_CLASSES, OverloadPolicy, SchedulerMode,
};
pub use core::Delivery;
pub use dead::{DeadLetter, DeadLetterReason, DeadLetterSink};
pub use error::{BuildError, ReserveError, SendError, SubmitError, TryRecvError, TrySendError};
pub use ledger::{ClassStats, Completion, Stats};
pub use time::Timestamp;
/// The clock the channel reads: tokio's, so a paused test clock or a simulator drives it.
pub use tokio::time::Instant;
