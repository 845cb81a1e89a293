//! Allocation budget of the channel (dhat: one profiler per process, so one budget per binary).
//!
//! 100,000 events through `send().await` / `recv().await` across 4 classes whose queues are small
//! enough that the producers block on full classes over and over: after warm-up, zero
//! allocations; the peak heap stays under a bound computed from the configured capacities.
#![cfg(not(veltrix_loom))]

use std::sync::atomic::{AtomicU64, Ordering};

use veltrix_engine::{ClassId, ClassSpec, Config, channel};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const CLASSES: usize = 4;
const CAPACITY: usize = 8;
const WARMUP: u64 = 2_000;
const MEASURED: u64 = 100_000;
/// Per queued event: the event (u64) and its enqueue time and deadline (tokio Instants).
const ENTRY_BYTES: usize = 48;
/// Fixed cost of the channel besides its queues: the shared state, the class table, the waiter
/// slab (32 slots), plus the four producer tasks.
const FIXED_BYTES: usize = 8 * 1024;

#[test]
fn steady_state_send_recv_allocates_nothing_and_heap_is_bounded() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let before = dhat::HeapStats::get();

    let config = (0..CLASSES)
        .fold(Config::builder(), |b, k| b.class(ClassSpec::new(format!("c{k}"), CAPACITY).with_weight(1 + k as u32)))
        .build()
        .unwrap();
    let (tx, rx) = channel::<u64>(&config);
    let per_class = (WARMUP + MEASURED) / CLASSES as u64;

    let (warm, end, blocked) = rt.block_on(async move {
        let blocked = std::sync::Arc::new(AtomicU64::new(0));
        for k in 0..CLASSES {
            let (tx, blocked) = (tx.clone(), blocked.clone());
            tokio::spawn(async move {
                for i in 0..per_class {
                    if tx.len(ClassId::new(k)) == CAPACITY {
                        blocked.fetch_add(1, Ordering::Relaxed);
                    }
                    tx.send(i, ClassId::new(k)).await.unwrap();
                }
            });
        }
        drop(tx);
        let mut received = 0u64;
        let mut warm = None;
        let mut next = [0u64; CLASSES];
        loop {
            let Some(d) = rx.recv().await else { break };
            let k = d.class.index();
            assert_eq!(d.event, next[k], "FIFO within class {k}");
            next[k] += 1;
            received += 1;
            if received == WARMUP {
                warm = Some(dhat::HeapStats::get());
            }
            // Let the producers run into the full queues again.
            tokio::task::yield_now().await;
        }
        assert_eq!(received, per_class * CLASSES as u64);
        rx.check_invariants();
        (warm.unwrap(), dhat::HeapStats::get(), blocked.load(Ordering::Relaxed))
    });

    let allocations = end.total_blocks - warm.total_blocks;
    let channel_bound = CLASSES * CAPACITY * ENTRY_BYTES + FIXED_BYTES;
    let peak = end.max_bytes - before.curr_bytes;
    println!(
        "dhat: {allocations} allocations over {MEASURED} events after warm-up; peak heap above the runtime {peak} B \
         (bound {channel_bound} B); producers found their class full {blocked} times"
    );
    assert!(blocked > MEASURED / 4, "producers did not block on full queues often ({blocked})");
    assert_eq!(allocations, 0, "allocations in steady state");
    assert!(peak <= channel_bound, "peak heap {peak} B above the bound {channel_bound} B");
}
