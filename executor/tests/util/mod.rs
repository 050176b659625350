//! Helpers shared by tally's integration tests.
//!
//! * [`Counters`] and [`Counted`]: a future instrumented to count its polls
//!   and its drops, in the manner of async-task's tests;
//! * [`CountingWaker`]: a waker that counts its wakes, clones and drops;
//! * [`yield_now`] and [`crank`]: let the executor run one round;
//! * [`bounded`]: every wait in a test is bounded in time, and fails loudly
//!   instead of hanging;
//! * [`linger_zero`]: make a socket's close a reset (RST, no TIME_WAIT).

#![allow(dead_code)]

use std::cell::Cell;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tally::LocalReactor;

/// How long any one wait in a test may take before it fails.
pub const BUDGET: Duration = Duration::from_secs(20);

/// Poll and drop counts of one [`Counted`] future.
#[derive(Clone, Default, Debug)]
pub struct Counters {
    polls: Rc<Cell<usize>>,
    drops: Rc<Cell<usize>>,
}

impl Counters {
    pub fn new() -> Counters {
        Counters::default()
    }

    /// How many times the future was polled.
    pub fn polls(&self) -> usize {
        self.polls.get()
    }

    /// How many times the future was dropped (0 or 1, unless there is a bug).
    pub fn drops(&self) -> usize {
        self.drops.get()
    }

    /// Asserts both counters at once, naming the step on failure.
    #[track_caller]
    pub fn assert(&self, step: &str, polls: usize, drops: usize) {
        assert_eq!(
            (self.polls(), self.drops()),
            (polls, drops),
            "after {step}: (polls, drops) differ from the expected"
        );
    }

    /// Wraps `fut` so that these counters see it.
    pub fn wrap<F: Future>(&self, fut: F) -> Counted<F> {
        Counted { fut: Box::pin(fut), counters: self.clone() }
    }
}

/// A future that counts its polls and its drop.
pub struct Counted<F> {
    fut: Pin<Box<F>>,
    counters: Counters,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.counters.polls.set(self.counters.polls.get() + 1);
        self.fut.as_mut().poll(cx)
    }
}

impl<F> Drop for Counted<F> {
    fn drop(&mut self) {
        self.counters.drops.set(self.counters.drops.get() + 1);
    }
}

/// A future that stores its waker in `slot` and stays pending until `open`
/// is set; every poll is counted by the caller's [`Counters`].
pub fn gate(open: Rc<Cell<bool>>, slot: Rc<Cell<Option<Waker>>>) -> impl Future<Output = ()> {
    std::future::poll_fn(move |cx| {
        if open.get() {
            Poll::Ready(())
        } else {
            slot.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    })
}

/// A waker that counts what is done to it.
#[derive(Default, Debug)]
pub struct CountingWaker {
    wakes: AtomicUsize,
}

impl CountingWaker {
    /// A new counting waker and the handle to read it.
    pub fn new() -> (Arc<CountingWaker>, Waker) {
        let w = Arc::new(CountingWaker::default());
        (w.clone(), Waker::from(w))
    }

    /// Wakes so far.
    pub fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Live clones of a waker (not counting the one `handle` holds).
pub fn waker_refs(handle: &Arc<CountingWaker>) -> usize {
    // The handle itself and the `Waker` the test keeps are two references.
    Arc::strong_count(handle)
}

/// Polls `fut` once with `waker`.
pub fn poll_with<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

/// Polls `fut` once with a waker that does nothing.
pub fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_with(fut, Waker::noop())
}

/// Returns `Pending` once (waking itself first), then `Ready`.
pub fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

/// Lets `rt` run one crank: ready tasks run (up to the budget) and the
/// reactor is turned once without blocking.
pub fn crank(rt: &LocalReactor) {
    rt.block_on(yield_now());
}

/// Runs `fut` on `rt`, failing the test if it takes longer than [`BUDGET`].
#[track_caller]
pub fn bounded<F: Future>(rt: &LocalReactor, what: &str, fut: F) -> F::Output {
    match rt.block_on(tally::time::timeout(BUDGET, fut)) {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {BUDGET:?}; metrics: {:?}", rt.metrics()),
    }
}

/// A fresh path for a Unix socket in the temporary directory, named after
/// this process so that concurrent test runs do not collide.
pub fn socket_path(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let file = format!("tally-{}-{name}-{n}.sock", std::process::id());
    let path = std::env::temp_dir().join(file);
    let _ = std::fs::remove_file(&path);
    path
}

/// Aborts the process if it is still alive after `limit`: for tests whose
/// failure mode is a thread blocked in a syscall, which no async timeout can
/// interrupt. Dropping the watchdog disarms it.
pub struct Watchdog {
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    pub fn new(what: &'static str, limit: Duration) -> Watchdog {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < limit {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!("watchdog: {what} still blocked after {limit:?}; aborting");
            std::process::abort();
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Sets `SO_LINGER` {on, 0} on socket `fd`: its close then sends RST
/// instead of FIN, discards whatever was queued, and leaves no TIME_WAIT.
///
/// # Panics
///
/// If `setsockopt` fails (`fd` is not an open socket).
pub fn linger_zero(fd: std::os::fd::RawFd) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `linger` is a valid, live `struct linger` of the size passed;
    // setsockopt only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER): {}", std::io::Error::last_os_error());
}
