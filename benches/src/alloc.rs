//! [`CountingAlloc`]: the system allocator with atomic counters, so that the
//! `compare` binary can report allocations per event and heap bytes per
//! registration.
//!
//! The counters are process-wide statics. They count only when a binary
//! installs the allocator with `#[global_allocator]`; elsewhere (criterion
//! benches, tests) they stay at zero and every report says so.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Allocation calls (`alloc`, `alloc_zeroed`, and `realloc`) since start.
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes currently allocated: grows on alloc, shrinks on dealloc.
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Wraps [`System`], counting every allocation and the live heap size.
///
/// Install it in a binary:
///
/// ```no_run
/// #[global_allocator]
/// static ALLOC: tally_benches::alloc::CountingAlloc = tally_benches::alloc::CountingAlloc;
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counters are side effects
// that never touch the returned memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded from the caller, who upholds `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded from the caller, as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator (so from `System`) with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded from the caller, who upholds `GlobalAlloc::realloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

/// Allocation calls so far (zero unless [`CountingAlloc`] is installed).
pub fn allocations() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// Heap bytes currently allocated (zero unless [`CountingAlloc`] is installed).
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Whether [`CountingAlloc`] is the global allocator of this process:
/// allocates once and looks for the count to move.
pub fn is_counting() -> bool {
    let before = allocations();
    drop(std::hint::black_box(Box::new(0u64)));
    allocations() != before
}
