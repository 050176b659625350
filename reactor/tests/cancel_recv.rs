//! Cancellation of a recv together with its buffer: the buffer outlives the
//! registration until the kernel's final completion, and not a moment less.
//!
//! A global allocator watches the one buffer handed to the kernel and
//! records when it is freed, so the test sees directly whether the reactor
//! freed it while the kernel could still write into it. Run this binary
//! under valgrind or AddressSanitizer as well (see the crate's notes).

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tally_reactor::{Op, Reactor};
use util::{TICK, turn_until};

/// The system allocator, plus a note of when the watched block is freed.
struct Watching;

static WATCHED: AtomicUsize = AtomicUsize::new(0);
static FREED: AtomicBool = AtomicBool::new(false);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the bookkeeping only reads the pointer value.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr as usize == WATCHED.load(Ordering::SeqCst) {
            FREED.store(true, Ordering::SeqCst);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// A buffer whose freeing the allocator reports.
fn watched_buffer() -> Vec<u8> {
    let buf = Vec::with_capacity(4096);
    WATCHED.store(buf.as_ptr() as usize, Ordering::SeqCst);
    FREED.store(false, Ordering::SeqCst);
    buf
}

/// One test, so that the watched pointer is never shared between tests.
#[test]
fn dropped_recv_keeps_its_buffer_until_the_final_completion() {
    // 1. Drop the registration with the recv armed in the kernel, then make
    //    the recv complete: the buffer lives until that completion is reaped.
    let reactor = Reactor::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    reg.submit(Op::recv(a.as_raw_fd(), watched_buffer(), 0)).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    assert_eq!(reactor.metrics().ops_in_flight, 1);
    drop(reg);
    assert!(!FREED.load(Ordering::SeqCst), "buffer freed while the kernel holds the recv");
    b.write_all(&[0xAB; 4096]).unwrap();
    turn_until(&reactor, "the cancelled recv's final completion", || {
        reactor.metrics().ops_in_flight == 0
    });
    assert!(FREED.load(Ordering::SeqCst), "buffer never freed after the final completion");
    assert!(reactor.metrics().reclaimed >= 1, "{:?}", reactor.metrics());
    for _ in 0..3 {
        reactor.turn(Some(TICK)).unwrap();
    }

    // 2. Drop the registration and the reactor with the recv still armed:
    //    the reactor's drop waits for the kernel before freeing the buffer.
    //    (A fresh pair: the first recv may have been cancelled before it
    //    took its bytes, and a recv that completes at once is no test.)
    let (a, mut b) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    reg.submit(Op::recv(a.as_raw_fd(), watched_buffer(), 0)).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    assert_eq!(reactor.metrics().ops_in_flight, 1);
    drop(reg);
    assert!(!FREED.load(Ordering::SeqCst), "buffer freed while the kernel holds the recv");
    drop(reactor);
    assert!(FREED.load(Ordering::SeqCst), "the reactor's drop leaked the buffer");
    // The kernel wrote nothing into freed memory, and the socket still works.
    b.write_all(b"after").unwrap();

    // 3. Drop everything before the recv was ever submitted to the kernel.
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    reg.submit(Op::recv(a.as_raw_fd(), watched_buffer(), 0)).unwrap();
    drop(reg);
    drop(reactor);
    assert!(FREED.load(Ordering::SeqCst));
}
