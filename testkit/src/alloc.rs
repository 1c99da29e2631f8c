//! A counting allocator, for tests that measure what input makes a
//! component hold: the live heap, to put beside a limit; and for benches
//! that count the heap allocations a hot path makes.
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: shopfloor_testkit::Counting = shopfloor_testkit::Counting;
//! let before = shopfloor_testkit::live_heap();
//! // … feed it …
//! let grown = shopfloor_testkit::live_heap() - before;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting the bytes live and the allocations made.
/// Install it in a test binary with `#[global_allocator]`.
#[derive(Debug)]
pub struct Counting;

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        new
    }
}

/// Bytes live on the heap now (through [`Counting`]; 0 when it is not the
/// global allocator).
pub fn live_heap() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Heap allocations so far, reallocations included (through [`Counting`];
/// 0 when it is not the global allocator).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}
