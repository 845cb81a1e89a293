//! Containing panics of user code: handlers and dead-letter sinks.
//!
//! A contained panic is caught, counted and logged once through `tracing` (message and
//! location) by the code that contained it. The default panic hook would also print it with a
//! backtrace prompt to stderr, once per panic — thousands of lines for a handler that panics on
//! every event of a flood. So the first engine, or channel with a sink, built installs a hook
//! (once per process) that stays silent while the panicking thread is inside [`call`] (user code
//! the engine runs: a handler's poll, a sink call), and hands every other panic to the hook that
//! was installed before it. Consequences: a hook installed earlier (an error reporter) does not
//! see contained panics — they reach `tracing` instead — nor panics that user code catches
//! itself inside a handler; a hook set later replaces this one, as always in Rust, and then
//! prints contained panics too. With `panic = "abort"` nothing can be contained, and no hook is
//! installed.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{self, UnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many [`call`]s this thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the last contained panic of this thread happened (set by the hook).
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic that was contained: its message and, when the hook saw it, its location.
#[derive(Debug)]
pub(crate) struct Panic {
    message: String,
    location: Option<String>,
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(at) => write!(f, "{} (at {at})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Runs `f`, catching a panic in it. The panic hook installed by [`quiet_hook`] stays silent
/// for it.
pub(crate) fn call<R>(f: impl FnOnce() -> R + UnwindSafe) -> Result<R, Panic> {
    // `try_with`: during thread-local teardown the counters are gone; the panic is still caught.
    let outer = DEPTH.try_with(|d| {
        d.set(d.get() + 1);
        d.get() == 1
    });
    if outer == Ok(true) {
        // A location left by a panic that user code caught itself is not this call's.
        let _ = LOCATION.try_with(|l| l.borrow_mut().take());
    }
    let result = panic::catch_unwind(f);
    let _ = DEPTH.try_with(|d| d.set(d.get() - 1));
    result.map_err(|payload| Panic {
        message: message(&*payload),
        location: LOCATION.try_with(|l| l.borrow_mut().take()).ok().flatten(),
    })
}

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic payload that is not a string".to_string()
    }
}

/// Installs, once per process, the panic hook that silences contained panics (see the module
/// docs). Does nothing on a thread that is panicking (the hook cannot be changed there).
pub(crate) fn quiet_hook() {
    static INSTALL: Once = Once::new();
    if cfg!(panic = "abort") || std::thread::panicking() {
        return;
    }
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            // Never panic in here (that aborts): `try_with` and `try_borrow_mut` only.
            if DEPTH.try_with(Cell::get).unwrap_or(0) > 0 {
                let at = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                let _ = LOCATION.try_with(|l| l.try_borrow_mut().map(|mut slot| *slot = at));
            } else {
                previous(info);
            }
        }));
    });
}

#[cfg(all(test, not(veltrix_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_contained_panic_comes_back_with_its_message_and_location() {
        quiet_hook();
        let p = call(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(p.message, "boom 7");
        assert!(p.location.as_deref().is_some_and(|l| l.contains("contain.rs")), "{p}");
        let shown = p.to_string();
        assert!(shown.starts_with("boom 7 (at ") && shown.contains("contain.rs"), "{shown}");
        assert_eq!(call(|| 5).unwrap(), 5);
        assert_eq!(DEPTH.with(Cell::get), 0, "depth restored after a panic");
    }

    #[test]
    fn a_location_left_by_a_panic_user_code_caught_is_not_the_next_ones() {
        quiet_hook();
        // Inside a call, user code catches its own panic: the hook records its location.
        let caught = call(|| panic::catch_unwind(|| panic!("inner")).is_err());
        assert!(caught.unwrap());
        // A panic resumed without the hook (no location of its own) must not get that one.
        let p = call(|| panic::resume_unwind(Box::new("resumed"))).unwrap_err();
        assert_eq!(p.message, "resumed");
        assert_eq!(p.location, None, "{p}");
    }
}
