//! Allocation budget of the commit tracker (dhat: one profiler per process, so its own
//! binary, and without the test harness, whose threads allocate while a test runs): a million
//! events taken and finished out of order, with gaps, after the tracker was built: zero
//! allocations.

use veltrix_kafka::{CommitTracker, Take};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    taking_and_finishing_allocates_nothing();
    println!("taking_and_finishing_allocates_nothing: 0 allocations over 1,000,000 events");
}

fn taking_and_finishing_allocates_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut t = CommitTracker::new(4096);
    let mut ring = [0i64; 256];
    let before = dhat::HeapStats::get();
    let mut offset = 0i64;
    for i in 0..1_000_000u64 {
        // Every 1000th offset is a gap; events finish 256 behind, in a scrambled order.
        offset += if i % 1000 == 999 { 2 } else { 1 };
        assert_eq!(t.take(offset), Take::Taken);
        let slot = (i.wrapping_mul(97) % 256) as usize;
        if ring[slot] != 0 {
            assert!(t.finish(ring[slot]));
        }
        ring[slot] = offset;
    }
    let after = dhat::HeapStats::get();
    dhat::assert_eq!(after.total_blocks, before.total_blocks);
    assert!(t.in_flight() <= 256);
    assert!(t.commit_point().unwrap() > 999_000);
}
