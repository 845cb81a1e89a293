//! Error types. Every error that concerns an event hands the event back.

use std::fmt;

/// A configuration problem found by [`ConfigBuilder::build`](crate::ConfigBuilder::build).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BuildError {
    /// No class was configured.
    NoClasses,
    /// More classes than [`MAX_CLASSES`](crate::MAX_CLASSES).
    TooManyClasses {
        /// Classes given.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// A class has an empty name.
    EmptyName {
        /// The class's index.
        index: usize,
    },
    /// Two classes share a name.
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A class has capacity 0.
    ZeroCapacity {
        /// The class's name.
        class: String,
    },
    /// A class's capacity is above [`MAX_CAPACITY`](crate::MAX_CAPACITY).
    CapacityTooLarge {
        /// The class's name.
        class: String,
        /// The capacity given.
        capacity: usize,
        /// The maximum.
        max: usize,
    },
    /// A class has DRR weight 0.
    ZeroWeight {
        /// The class's name.
        class: String,
    },
    /// A class's CoDel target or interval is zero.
    ZeroCodelParameter {
        /// The class's name.
        class: String,
    },
    /// Adaptive admission with a zero target delay or interval.
    ZeroAdaptiveParameter {
        /// The class whose own target is zero; `None` for the configuration's target or interval.
        class: Option<String>,
    },
    /// The strict tier's share cap is outside (0, 1].
    CapOutOfRange {
        /// The cap given.
        cap: f64,
    },
    /// The strict tier's window is zero services.
    ZeroWindow,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NoClasses => write!(f, "no class configured (1 to 16 are needed)"),
            BuildError::TooManyClasses { count, max } => {
                write!(f, "{count} classes configured, at most {max} are allowed")
            }
            BuildError::EmptyName { index } => write!(f, "class {index} has an empty name"),
            BuildError::DuplicateName { name } => write!(f, "class name `{name}` is used twice"),
            BuildError::ZeroCapacity { class } => write!(f, "class `{class}` has capacity 0 (at least 1 is needed)"),
            BuildError::CapacityTooLarge { class, capacity, max } => {
                write!(f, "class `{class}` has capacity {capacity}, at most {max} is allowed")
            }
            BuildError::ZeroWeight { class } => write!(f, "class `{class}` has weight 0 (at least 1 is needed)"),
            BuildError::ZeroCodelParameter { class } => {
                write!(f, "class `{class}` has a zero codel target or interval")
            }
            BuildError::ZeroAdaptiveParameter { class: None } => {
                write!(f, "adaptive admission has a zero target delay or interval")
            }
            BuildError::ZeroAdaptiveParameter { class: Some(class) } => {
                write!(f, "class `{class}` has a zero target delay")
            }
            BuildError::CapOutOfRange { cap } => write!(f, "strict tier cap {cap} is outside (0, 1]"),
            BuildError::ZeroWindow => write!(f, "strict tier window is 0 services (at least 1 is needed)"),
        }
    }
}

impl std::error::Error for BuildError {}

macro_rules! event_error {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $msg:literal,)+ }) => {
        $(#[$meta])*
        #[derive(PartialEq, Eq, Clone, Copy)]
        #[non_exhaustive]
        pub enum $name<E> {
            $($(#[$vmeta])* $variant(E),)+
        }

        impl<E> $name<E> {
            /// Takes the event back.
            pub fn into_inner(self) -> E {
                match self {
                    $($name::$variant(e) => e,)+
                }
            }
        }

        impl<E> fmt::Debug for $name<E> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str(concat!(stringify!($name), "::", stringify!($variant), "(..)")),)+
                }
            }
        }

        impl<E> fmt::Display for $name<E> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str($msg),)+
                }
            }
        }

        impl<E> std::error::Error for $name<E> {}
    };
}

event_error! {
    /// Why [`Sender::try_send`](crate::Sender::try_send) did not accept an event; the event is inside.
    TrySendError {
        /// The class (or a more critical one) is full and the class's policy is backpressure.
        Full => "channel class is full",
        /// The channel is closed.
        Closed => "channel is closed",
        /// The class is overloaded and its policy is to reject.
        Rejected => "event rejected by the class's overload policy",
    }
}

event_error! {
    /// Why [`Sender::send`](crate::Sender::send) did not accept an event; the event is inside.
    SendError {
        /// The channel is closed.
        Closed => "channel is closed",
        /// The class is overloaded and its policy is to reject.
        Rejected => "event rejected by the class's overload policy",
    }
}

event_error! {
    /// Why [`Engine::submit`](crate::runtime::Engine::submit) did not accept an event; the event is inside.
    SubmitError {
        /// The class is full under backpressure (`try_submit` only).
        Full => "route class is full",
        /// The engine is shutting down.
        Closed => "engine is shut down",
        /// The class is overloaded and its policy is to reject.
        Rejected => "event rejected by the class's overload policy",
        /// No route has that name.
        UnknownRoute => "no such route",
        /// The route has no class with that index.
        UnknownClass => "no such class on this route",
    }
}

/// Why a reservation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReserveError {
    /// The class (or a more critical one) is full and the class's policy is backpressure
    /// (only from `try_reserve`).
    Full,
    /// The channel is closed.
    Closed,
    /// The class is overloaded and its policy is to reject.
    Rejected,
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReserveError::Full => "channel class is full",
            ReserveError::Closed => "channel is closed",
            ReserveError::Rejected => "reservation rejected by the class's overload policy",
        })
    }
}

impl std::error::Error for ReserveError {}

impl ReserveError {
    pub(crate) fn with<E>(self, event: E) -> TrySendError<E> {
        match self {
            ReserveError::Full => TrySendError::Full(event),
            ReserveError::Closed => TrySendError::Closed(event),
            ReserveError::Rejected => TrySendError::Rejected(event),
        }
    }
}

/// Why [`Receiver::try_recv`](crate::Receiver::try_recv) returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing is queued now, but more may come.
    Empty,
    /// The channel is closed (or every sender is gone) and fully drained.
    Closed,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "channel is empty",
            TryRecvError::Closed => "channel is closed and drained",
        })
    }
}

impl std::error::Error for TryRecvError {}

/// A problem found by [`EngineBuilder::build`](crate::runtime::EngineBuilder::build).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EngineBuildError {
    /// No route was registered.
    NoRoutes,
    /// A route has an empty name.
    EmptyRouteName,
    /// Two routes share a name.
    DuplicateRoute(String),
    /// A route has zero workers.
    ZeroWorkers(String),
    /// A route's retry policy allows zero attempts.
    ZeroAttempts(String),
    /// A route lets its workers take at most zero events at once.
    ZeroBatch(String),
    /// More routes than fit in a [`RouteId`](crate::runtime::RouteId).
    TooManyRoutes {
        /// How many routes were registered.
        registered: usize,
        /// The most an engine can have (65,536).
        max: usize,
    },
    /// `build` was called outside a tokio runtime, so there is nowhere to spawn workers.
    NoRuntime,
}

impl fmt::Display for EngineBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineBuildError::NoRoutes => write!(f, "no route registered"),
            EngineBuildError::EmptyRouteName => write!(f, "a route has an empty name"),
            EngineBuildError::DuplicateRoute(r) => write!(f, "route `{r}` is registered twice"),
            EngineBuildError::ZeroWorkers(r) => write!(f, "route `{r}` has 0 workers (at least 1 is needed)"),
            EngineBuildError::ZeroAttempts(r) => write!(f, "route `{r}` allows 0 attempts (at least 1 is needed)"),
            EngineBuildError::ZeroBatch(r) => write!(f, "route `{r}` has max_batch 0 (at least 1 is needed)"),
            EngineBuildError::TooManyRoutes { registered, max } => {
                write!(f, "{registered} routes registered, at most {max} are allowed")
            }
            EngineBuildError::NoRuntime => write!(f, "the engine must be built inside a tokio runtime"),
        }
    }
}

impl std::error::Error for EngineBuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    struct NotDebug;

    #[test]
    fn errors_hand_the_event_back_and_format_without_debug() {
        let e = TrySendError::Full(NotDebug);
        assert_eq!(format!("{e:?}"), "TrySendError::Full(..)");
        assert_eq!(e.to_string(), "channel class is full");
        let _event: NotDebug = e.into_inner();
        assert_eq!(SendError::Rejected(7).into_inner(), 7);
        assert_eq!(ReserveError::Closed.with(3), TrySendError::Closed(3));
    }

    #[test]
    fn reservation_and_receive_errors_say_what_happened() {
        assert_eq!(ReserveError::Full.to_string(), "channel class is full");
        assert_eq!(ReserveError::Closed.to_string(), "channel is closed");
        assert_eq!(ReserveError::Rejected.to_string(), "reservation rejected by the class's overload policy");
        assert_eq!(TryRecvError::Empty.to_string(), "channel is empty");
        assert_eq!(TryRecvError::Closed.to_string(), "channel is closed and drained");
    }
}
