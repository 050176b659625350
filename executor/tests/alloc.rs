//! Allocations on the steady-state message path, counted by a global
//! allocator, plus (ignored by default) memory footprint figures.
//!
//! Only allocations made on a thread that turned tracking on are counted,
//! so the harness's other threads do not disturb the figures. Set
//! `TALLY_ALLOC_TRACE=N` to print the backtraces of the first N counted
//! allocations, to find where they come from.
//!
//! The target, and the check, is zero allocations per message, for the
//! executor's paths and for a bare reactor's wake-and-drain turn alike.
//!
//! The footprint figures are meant for a release build:
//!
//! ```text
//! cargo test --release -p tally --test alloc -- --ignored --nocapture
//! ```

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use tally::net::{TcpStream, UnixStream};
use tally::{LocalReactor, PacketKind, Signals};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated minus bytes freed while tracking.
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static TRACES_LEFT: AtomicI64 = AtomicI64::new(-1);

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

fn tracking() -> bool {
    TRACKING.try_with(|t| t.get()).unwrap_or(false)
        && !IN_HOOK.try_with(|h| h.get()).unwrap_or(true)
}

fn on_alloc(size: usize) {
    if !tracking() {
        return;
    }
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    LIVE_BYTES.fetch_add(size as i64, Ordering::Relaxed);
    if TRACES_LEFT.load(Ordering::Relaxed) > 0 && TRACES_LEFT.fetch_sub(1, Ordering::Relaxed) > 0 {
        IN_HOOK.with(|h| h.set(true));
        let bt = std::backtrace::Backtrace::force_capture();
        eprintln!("allocation of {size} bytes:\n{bt}");
        IN_HOOK.with(|h| h.set(false));
    }
}

fn on_free(size: usize) {
    if tracking() {
        LIVE_BYTES.fetch_sub(size as i64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping only touches atomics and const-initialised thread-locals,
// which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_free(layout.size());
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_free(layout.size());
        on_alloc(new_size);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What was allocated on this thread while a [`Tracker`] ran.
#[derive(Debug, Clone, Copy)]
struct Usage {
    allocs: u64,
    live_bytes: i64,
    /// Reactor turns in the window, when measured with `start_on_reactor`.
    turns: u64,
}

/// Counts allocations on this thread from `start` to `stop`. Tests in this
/// file must not overlap their tracking windows across threads, since the
/// counters are global; a lock serialises them.
struct Tracker {
    _serial: std::sync::MutexGuard<'static, ()>,
    turns: Cell<u64>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Tracker {
    fn new() -> Tracker {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if TRACES_LEFT.load(Ordering::Relaxed) < 0 {
            let n = std::env::var("TALLY_ALLOC_TRACE").ok().and_then(|v| v.parse().ok());
            TRACES_LEFT.store(n.unwrap_or(0), Ordering::Relaxed);
        }
        Tracker { _serial: serial, turns: Cell::new(0) }
    }

    fn start(&self) {
        ALLOCS.store(0, Ordering::SeqCst);
        LIVE_BYTES.store(0, Ordering::SeqCst);
        TRACKING.with(|t| t.set(true));
    }

    fn stop(&self) -> Usage {
        TRACKING.with(|t| t.set(false));
        Usage {
            allocs: ALLOCS.load(Ordering::SeqCst),
            live_bytes: LIVE_BYTES.load(Ordering::SeqCst),
            turns: 0,
        }
    }

    /// As `start`, also counting the turns of the running executor's
    /// reactor.
    fn start_on_reactor(&self) {
        self.turns.set(tally::reactor().metrics().turns);
        self.start();
    }

    fn stop_on_reactor(&self) -> Usage {
        let usage = self.stop();
        Usage { turns: tally::reactor().metrics().turns - self.turns.get(), ..usage }
    }
}

const WARM_UP: u32 = 1_000;
const MEASURED: u32 = 10_000;
const MSG: usize = 64;
/// Round trips in a ping-pong: the warm-up, the measured ones, and one
/// more after tracking stops, so that the echoing task (and what it owns)
/// ends outside the measured window.
const ROUNDS: u32 = WARM_UP + MEASURED + 1;

/// Ping-pongs 64-byte messages between two tasks over `(a, b)`; returns
/// the allocations made during the measured round trips.
fn stream_ping_pong<S>(
    rt: &LocalReactor,
    tracker: &Tracker,
    make: impl FnOnce() -> (S, S) + 'static,
) -> Usage
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin + 'static,
{
    util::bounded(rt, "ping-pong", async move {
        let (mut a, mut b) = make();
        let echo = tally::spawn(async move {
            let mut buf = [0u8; MSG];
            for _ in 0..ROUNDS {
                b.read_exact(&mut buf).await.unwrap();
                b.write_all(&buf).await.unwrap();
            }
        });
        let mut msg = [0u8; MSG];
        let mut back = [0u8; MSG];
        let mut usage = None;
        for i in 0..ROUNDS {
            if i == WARM_UP {
                tracker.start_on_reactor();
            }
            if i == WARM_UP + MEASURED {
                usage = Some(tracker.stop_on_reactor());
            }
            msg[..4].copy_from_slice(&i.to_le_bytes());
            a.write_all(&msg).await.unwrap();
            a.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }
        echo.await.unwrap();
        usage.unwrap()
    })
}

/// Prints the figure and asserts that nothing was allocated.
#[track_caller]
fn assert_no_allocations(what: &str, usage: Usage, messages: u32) {
    println!(
        "{what}: {} allocations over {messages} messages and {} executor turns ({:.4} per \
         message), {} bytes still live",
        usage.allocs,
        usage.turns,
        usage.allocs as f64 / f64::from(messages),
        usage.live_bytes
    );
    assert_eq!(usage.allocs, 0, "{what}: allocations in the steady state: {usage:?}");
}

/// A bare reactor (no executor) allocates nothing on turns that wake a
/// registration and drain it.
#[test]
fn bare_reactor_wake_and_drain_allocates_nothing() {
    const TURNS: u32 = 200;
    let tracker = Tracker::new();
    let reactor = tally::Reactor::new().unwrap();
    let reg = reactor.register();
    let signaler = reg.signaler();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for i in 0..2 * TURNS {
        if i == TURNS {
            tracker.start();
        }
        // Store a waker, raise from "elsewhere", turn: the turn wakes the
        // registration; then drain it.
        assert!(reg.poll_packets(&mut cx).is_pending());
        let _ = signaler.raise(Signals::user(0), 1).unwrap();
        reactor.turn(Some(Duration::ZERO)).unwrap();
        assert!(reg.poll_packets(&mut cx).is_ready());
    }
    let usage = tracker.stop();
    assert_no_allocations("bare reactor wake-and-drain", usage, TURNS);
}

#[test]
fn unix_stream_ping_pong_allocates_nothing_per_message() {
    let rt = LocalReactor::new().unwrap();
    let tracker = Tracker::new();
    let usage = stream_ping_pong(&rt, &tracker, || UnixStream::pair().unwrap());
    assert_no_allocations("UnixStream ping-pong", usage, 2 * MEASURED);
}

#[test]
fn tcp_ping_pong_allocates_nothing_per_message() {
    let rt = LocalReactor::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let tracker = Tracker::new();
    let usage = stream_ping_pong(&rt, &tracker, move || {
        client.set_nodelay(true).unwrap();
        server.set_nodelay(true).unwrap();
        (TcpStream::from_std(client), TcpStream::from_std(server))
    });
    assert_no_allocations("TcpStream ping-pong", usage, 2 * MEASURED);
}

#[test]
fn signaler_ping_pong_allocates_nothing_per_message() {
    let rt = LocalReactor::new().unwrap();
    let tracker = Tracker::new();
    let usage = util::bounded(&rt, "signal ping-pong", async {
        let (ra, rb) = (tally::reactor().register(), tally::reactor().register());
        let (to_a, to_b) = (ra.signaler(), rb.signaler());
        let pong = tally::spawn(async move {
            for _ in 0..ROUNDS {
                let list = rb.packets().await;
                let PacketKind::Signal(s) = list[0].kind() else { panic!("{list:?}") };
                assert_eq!(s.count.get(), 1);
                let _ = to_a.raise(Signals::user(1), 1).unwrap();
            }
        });
        let mut usage = None;
        for i in 0..ROUNDS {
            if i == WARM_UP {
                tracker.start_on_reactor();
            }
            if i == WARM_UP + MEASURED {
                usage = Some(tracker.stop_on_reactor());
            }
            let _ = to_b.raise(Signals::user(0), 1).unwrap();
            let list = ra.packets().await;
            assert!(list[0].as_signal().unwrap().observed.contains(Signals::user(1)));
        }
        pong.await.unwrap();
        usage.unwrap()
    });
    assert_no_allocations("Registration + Signaler ping-pong", usage, 2 * MEASURED);
}

#[test]
fn sender_ping_pong_allocates_nothing_per_message() {
    let rt = LocalReactor::new().unwrap();
    let tracker = Tracker::new();
    let usage = util::bounded(&rt, "user packet ping-pong", async {
        let (ra, rb) = (tally::reactor().register(), tally::reactor().register());
        let (to_a, to_b) = (ra.sender(), rb.sender());
        let pong = tally::spawn(async move {
            for _ in 0..ROUNDS {
                let list = rb.packets().await;
                let PacketKind::User(payload) = list[0].kind() else { panic!("{list:?}") };
                to_a.send(payload).unwrap();
            }
        });
        let mut usage = None;
        for i in 0..ROUNDS {
            if i == WARM_UP {
                tracker.start_on_reactor();
            }
            if i == WARM_UP + MEASURED {
                usage = Some(tracker.stop_on_reactor());
            }
            let mut payload = [0u8; 32];
            payload[..4].copy_from_slice(&i.to_le_bytes());
            to_b.send(payload).unwrap();
            let list = ra.packets().await;
            assert_eq!(list[0].kind(), PacketKind::User(payload));
        }
        pong.await.unwrap();
        usage.unwrap()
    });
    assert_no_allocations("Registration + Sender ping-pong", usage, 2 * MEASURED);
}

#[test]
fn waking_polling_and_timers_allocate_nothing() {
    let rt = LocalReactor::new().unwrap();
    let tracker = Tracker::new();
    let usage = util::bounded(&rt, "yields and sleeps", async {
        let spinner = tally::spawn(async {
            for _ in 0..WARM_UP + MEASURED {
                util::yield_now().await;
            }
        });
        for _ in 0..100 {
            tally::time::sleep(Duration::from_micros(10)).await;
        }
        tracker.start_on_reactor();
        for _ in 0..100 {
            tally::time::sleep(Duration::from_micros(10)).await;
        }
        spinner.await.unwrap();
        tracker.stop_on_reactor()
    });
    assert_no_allocations("yield and sleep loop", usage, MEASURED);
}

/// Bytes per spawned task that has not run yet, and after its first poll:
/// the task's own allocation, its slot in the executor's slab and its entry
/// in the run queue.
#[test]
#[ignore = "a footprint figure; run with --release -- --ignored --nocapture"]
fn bytes_per_task() {
    const N: usize = 100_000;
    let rt = LocalReactor::new().unwrap();
    let tracker = Tracker::new();
    tracker.start();
    for _ in 0..N {
        drop(rt.spawn(async { std::future::pending::<()>().await }));
    }
    let spawned = tracker.stop();
    tracker.start();
    util::crank(&rt);
    let polled = tracker.stop();
    let after = spawned.live_bytes + polled.live_bytes;
    println!(
        "bytes per task: {:.1} spawned, not yet run ({} allocations per task); {:.1} once \
         polled and pending",
        spawned.live_bytes as f64 / N as f64,
        spawned.allocs as f64 / N as f64,
        after as f64 / N as f64,
    );
    assert!(spawned.live_bytes > 0);
    // One allocation per task; the slab and the run queue growing add the
    // rest (0.0003 per task at this N).
    assert!(spawned.allocs as f64 / (N as f64) < 1.01, "{spawned:?}");
    tracker.start();
    drop(rt);
    let freed = tracker.stop();
    assert!(freed.live_bytes <= -after, "dropping the reactor frees its tasks: {freed:?}");
}

/// Bytes per idle connected `TcpStream` (both ends are tally streams), with
/// and without a read armed. The `TcpStream` itself (its slot in a `Vec`)
/// and the reactor's slabs are included; the kernel's socket memory is not.
#[test]
#[ignore = "a footprint figure; run with --release -- --ignored --nocapture"]
fn bytes_per_idle_tcp_stream() {
    // Two fds per pair, each duplicated for a moment by from_std; keep
    // within the fd limit, raised as far as it goes.
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit with a valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        // Root may raise the hard limit too; if not, the soft one goes up
        // to the hard one.
        limit.rlim_max = limit.rlim_max.max(2 * 10_000 + 1_000);
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = limit.rlim_max;
        }
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    let pairs_max = (limit.rlim_cur as usize).saturating_sub(200) / 2;
    let pair_count = pairs_max.min(10_000);
    assert!(pair_count >= 100, "the fd limit ({}) is too low", limit.rlim_cur);
    let rt = LocalReactor::new().unwrap();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    // Plain std pairs first, so that only the tally side is measured.
    let mut pairs = Vec::with_capacity(pair_count);
    for _ in 0..pair_count {
        let c = std::net::TcpStream::connect(addr).unwrap();
        let (s, _) = std_listener.accept().unwrap();
        pairs.push((c, s));
    }
    let tracker = Tracker::new();
    let (connected, armed) = util::bounded(&rt, "footprint", async {
        // The executor's shared receive ring (1024 x 4 KiB) is made with its
        // first stream: make it now, so that it is not counted per stream.
        drop(UnixStream::pair().unwrap());
        tracker.start();
        let mut streams: Vec<TcpStream> = Vec::with_capacity(2 * pair_count);
        for (c, s) in pairs {
            streams.push(TcpStream::from_std(c));
            streams.push(TcpStream::from_std(s));
        }
        let connected = tracker.stop();
        tracker.start();
        // Arm every stream's receive by polling a read once.
        for s in &mut streams {
            let mut buf = [0u8; 1];
            let mut read = s.read(&mut buf);
            assert!(util::poll_once(&mut read).is_pending());
        }
        // Let the receives reach the kernel.
        util::yield_now().await;
        let armed = tracker.stop();
        // Prove they are alive: one byte each way on the first pair.
        let (first, rest) = streams.split_at_mut(1);
        first[0].write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        rest[0].read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"x");
        assert!(streams[0].as_raw_fd() >= 0);
        (connected, armed)
    });
    let n = (2 * pair_count) as f64;
    println!(
        "{pair_count} connected pairs; bytes per idle TcpStream: {:.1} connected; {:.1} more with a receive armed \
         ({:.1} in all; {} allocations per stream)",
        connected.live_bytes as f64 / n,
        armed.live_bytes as f64 / n,
        (connected.live_bytes + armed.live_bytes) as f64 / n,
        (connected.allocs + armed.allocs) as f64 / n,
    );
}
