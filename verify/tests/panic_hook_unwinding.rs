//! A channel with a dead-letter sink built while its thread unwinds from a panic (a `Drop` that
//! sends its last words) must leave the panic hook alone: the hook cannot be changed on a
//! panicking thread, and trying aborts the process. A binary of its own: the engine installs its
//! hook (for sinks' contained panics) once per process, and here the first such channel is built
//! during an unwind.
#![cfg(not(veltrix_loom))]

use veltrix_engine::{ClassId, Config, DeadLetter, channel_with_sink};

struct LastWords;

impl Drop for LastWords {
    fn drop(&mut self) {
        assert!(std::thread::panicking());
        let (tx, rx) = channel_with_sink(&Config::default(), |_: DeadLetter<u32>| {});
        tx.try_send(7, ClassId::CRITICAL).unwrap();
        assert_eq!(rx.try_recv().unwrap().event, 7);
    }
}

#[test]
fn a_channel_built_during_an_unwind_leaves_the_hook_alone() {
    let unwound = std::panic::catch_unwind(|| {
        let _words = LastWords;
        panic!("unwinding on purpose");
    });
    assert!(unwound.is_err(), "the panic came through, the process did not abort");
    // Off the unwind, the next channel installs the hook as usual.
    let (tx, rx) = channel_with_sink(&Config::default(), |_: DeadLetter<u32>| {});
    tx.try_send(8, ClassId::CRITICAL).unwrap();
    assert_eq!(rx.try_recv().unwrap().event, 8);
}
