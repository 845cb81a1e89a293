//! Allocation budget of adaptive admission (dhat: one profiler per process, so its own binary).
//!
//! 100,000 events through `send().await` / `recv().await` across 4 adaptive classes on a paused
//! clock, the consumer slower than the producers so the controller keeps moving the limits
//! (one update every 5 ms of simulated time, about 2,000 in the run): after warm-up, zero
//! allocations.
#![cfg(not(veltrix_loom))]

use std::time::Duration;

use veltrix_engine::{Adaptive, ClassId, ClassSpec, Config, channel};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const CLASSES: usize = 4;
const CAPACITY: usize = 1024;
const WARMUP: u64 = 2_000;
const MEASURED: u64 = 100_000;

#[test]
fn adaptive_admission_allocates_nothing_per_event() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let adaptive = Adaptive::new(Duration::from_millis(20)).with_interval(Duration::from_millis(5));
    let config = (0..CLASSES)
        .fold(Config::builder(), |b, k| b.class(ClassSpec::new(format!("c{k}"), CAPACITY).with_weight(1 + k as u32)))
        .adaptive(adaptive)
        .build()
        .unwrap();
    let (tx, rx) = channel::<u64>(&config);
    let per_class = (WARMUP + MEASURED) / CLASSES as u64;

    let (warm, end, limits) = rt.block_on(async move {
        for k in 0..CLASSES {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..per_class {
                    tx.send(i, ClassId::new(k)).await.unwrap();
                }
            });
        }
        drop(tx);
        let (mut received, mut warm, mut limits) = (0u64, None, [0usize; CLASSES]);
        while let Some(d) = rx.recv().await {
            received += 1;
            if received == WARMUP {
                warm = Some(dhat::HeapStats::get());
            }
            if received % 10 == 0 {
                // Ten events a millisecond: the producers always wait for room.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if received == WARMUP + MEASURED / 2 {
                for (k, limit) in limits.iter_mut().enumerate() {
                    *limit = rx.admission_limit(ClassId::new(k));
                }
            }
            std::hint::black_box(d);
        }
        assert_eq!(received, per_class * CLASSES as u64);
        rx.check_invariants();
        (warm.unwrap(), dhat::HeapStats::get(), limits)
    });

    let allocations = end.total_blocks - warm.total_blocks;
    println!(
        "dhat: {allocations} allocations over {MEASURED} adaptive events after warm-up; limits mid-run {limits:?}"
    );
    // The least critical class waits behind the others' limits (admission in criticality
    // order), so its own queue stays empty and its limit at the capacity.
    assert!(limits[..CLASSES - 1].iter().all(|&l| l < CAPACITY / 10), "limits mid-run {limits:?}");
    assert_eq!(allocations, 0, "allocations in steady state");
}
