//! Allocation budget of the engine's hot path (its own binary: one dhat profiler per process).
//!
//! 100,000 events through `submit` → worker → handler → completion on a keyed route with two
//! workers and lanes small enough that submits wait for room: after warm-up, zero allocations.
#![cfg(not(veltrix_loom))]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use veltrix_engine::runtime::{Engine, Handler, HandlerContext, Outcome, RouteSpec, Submission};
use veltrix_engine::{ClassId, ClassSpec, Config};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const WARMUP: u64 = 2_000;
const MEASURED: u64 = 100_000;

/// A handler that allocates nothing and finishes on its first poll; counts its calls.
struct Count(Arc<AtomicU64>);

impl Handler<u64> for Count {
    fn handle(&self, _e: &u64, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        self.0.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Outcome::Ok)
    }
}

#[test]
fn steady_state_submit_to_outcome_allocates_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let (warm, end, handled) = rt.block_on(async {
        let classes = Config::builder()
            .class(ClassSpec::new("CRITICAL", 8))
            .class(ClassSpec::new("SHEDDABLE", 8).with_weight(2))
            .build()
            .unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let engine = Engine::builder()
            .route("r", RouteSpec::new(classes).workers(2).keyed(), Count(calls.clone()))
            .build()
            .unwrap();
        let mut warm = None;
        for i in 0..WARMUP + MEASURED {
            if i == WARMUP {
                // tokio's first `yield_now` allocates its defer list: do it before measuring.
                tokio::task::yield_now().await;
                warm = Some(dhat::HeapStats::get());
            }
            let class = ClassId::new((i % 2) as usize);
            engine.submit(Submission::new("r", class, i).key(i % 7)).await.unwrap();
        }
        // Every event reaches its handler before the measurement ends (shutdown allocates).
        while calls.load(Ordering::Relaxed) < WARMUP + MEASURED {
            tokio::task::yield_now().await;
        }
        let end = dhat::HeapStats::get();
        let report = engine.shutdown(std::time::Duration::from_secs(1)).await;
        (warm.unwrap(), end, report.handled)
    });
    assert_eq!(handled, WARMUP + MEASURED);
    let allocations = end.total_blocks - warm.total_blocks;
    println!("dhat: {allocations} allocations over {MEASURED} events submit → handler → outcome after warm-up");
    assert_eq!(allocations, 0);
}
