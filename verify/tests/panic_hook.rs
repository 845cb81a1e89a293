//! Contained panics (handlers, dead-letter sinks) stay out of the panic hook; every other panic
//! still reaches it. A test binary of its own: the hook is process-wide.
#![cfg(not(veltrix_loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use veltrix_engine::runtime::{Engine, RouteSpec, Routed, Submission};
use veltrix_engine::{ClassId, Config, DeadLetter, DeadLetterReason};
use veltrix_verify::scripted::{Behaviour, Scripted, ScriptedHandler};

#[test]
fn contained_panics_do_not_reach_the_panic_hook_others_do() {
    let hooked = Arc::new(AtomicUsize::new(0));
    let h = hooked.clone();
    std::panic::set_hook(Box::new(move |_| {
        h.fetch_add(1, Ordering::SeqCst);
    }));
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let report = rt.block_on(async {
        let engine = Engine::builder()
            .route("r", RouteSpec::new(Config::default()), ScriptedHandler::default())
            .dead_letter_sink(|_: DeadLetter<Routed<Scripted>>| panic!("sink"))
            .build()
            .unwrap();
        for id in 0..100 {
            let e = Scripted { id, behaviour: Behaviour::Panic };
            engine.submit(Submission::new("r", ClassId::CRITICAL, e)).await.unwrap();
        }
        engine.shutdown(Duration::from_secs(10)).await
    });
    assert_eq!(report.dead(DeadLetterReason::Panicked), 100);
    assert_eq!(report.stats.sink_panics, 100);
    assert_eq!(hooked.load(Ordering::SeqCst), 0, "200 contained panics reached the hook");
    // A panic the engine did not contain still reaches the hook that was there before.
    let _ = std::panic::catch_unwind(|| panic!("not contained"));
    assert_eq!(hooked.load(Ordering::SeqCst), 1);
}
