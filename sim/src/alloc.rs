//! The counting allocator behind allocation figures and budgets: the system allocator, plus a
//! count of every allocation. A binary or test binary installs it with one line:
//!
//! ```
//! #[global_allocator]
//! static ALLOC: veltrix_sim::CountingAllocator = veltrix_sim::CountingAllocator;
//! ```
//!
//! This module holds the crate's only `unsafe` code: a `GlobalAlloc` implementation is unsafe
//! by definition, and this one delegates to `std::alloc::System` unchanged.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::Ordering;

use crate::{ALLOCATIONS, ALLOCATIONS_COUNTED};

thread_local! {
    /// This thread's allocations (const-initialized: reading it never allocates).
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Allocations made on the calling thread so far, as [`CountingAllocator`] counted them (0
/// without it). Unlike the process-wide [`ALLOCATIONS`](crate::ALLOCATIONS), other threads —
/// the other tests of a test binary — do not move it.
pub fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

/// The system allocator, counting allocations into [`ALLOCATIONS`](crate::ALLOCATIONS) and per
/// thread ([`thread_allocations`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

// SAFETY: every method delegates to the system allocator with the caller's arguments, so it
// upholds exactly the system allocator's contract. Counting touches only an atomic and this
// thread's const-initialized cell, neither of which allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract (non-zero size) is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from this allocator (so from the system one) with `layout`, and the
        // caller guarantees `new_size` is valid for it.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is from the system allocator, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// One more allocation, process-wide and on this thread.
fn count() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATIONS_COUNTED.store(true, Ordering::Relaxed);
    // A thread being torn down has no thread-locals left: its last allocations go uncounted.
    let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}
