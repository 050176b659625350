//! The readiness semantics mio documents and its users depend on, each
//! checked against real sockets, pipes and threads, on whichever backend
//! `TALLY_BACKEND` selects (`.ci/run` runs both).
//!
//! Every wait is bounded: a lost event fails a test instead of hanging it.

use std::io::{self, Read, Write};
use std::net::{self, Shutdown};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use tally_compat_mio::event::Event;
use tally_compat_mio::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use tally_compat_mio::unix::{pipe, SourceFd};
use tally_compat_mio::{Events, Interest, Poll, Token, Waker};

/// What one event said, copied out of `Events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    token: Token,
    readable: bool,
    writable: bool,
    read_closed: bool,
    write_closed: bool,
    error: bool,
    priority: bool,
}

impl Seen {
    fn of(e: &Event) -> Seen {
        Seen {
            token: e.token(),
            readable: e.is_readable(),
            writable: e.is_writable(),
            read_closed: e.is_read_closed(),
            write_closed: e.is_write_closed(),
            error: e.is_error(),
            priority: e.is_priority(),
        }
    }
}

/// One poll's events.
fn poll_once(poll: &mut Poll, events: &mut Events, timeout: Duration) -> Vec<Seen> {
    poll.poll(events, Some(timeout)).unwrap();
    events.iter().map(Seen::of).collect()
}

/// Polls until an event for `token` satisfies `want`, for at most 5 s.
fn wait_for(
    poll: &mut Poll,
    events: &mut Events,
    token: Token,
    want: impl Fn(&Seen) -> bool,
) -> Seen {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        for seen in poll_once(poll, events, Duration::from_millis(50)) {
            if seen.token == token && want(&seen) {
                return seen;
            }
        }
    }
    panic!("no event for {token:?} within 5 s");
}

/// Events for `token` during `for_`.
fn quiet_for(poll: &mut Poll, events: &mut Events, token: Token, for_: Duration) -> Vec<Seen> {
    let start = Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < for_ {
        got.extend(
            poll_once(poll, events, Duration::from_millis(20))
                .into_iter()
                .filter(|s| s.token == token),
        );
    }
    got
}

/// A connected TCP pair: ours (non-blocking, for mio) and the peer's.
fn tcp_pair() -> (TcpStream, net::TcpStream) {
    let listener = net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    (TcpStream::from_std(ours), peer)
}

const A: Token = Token(1);
const B: Token = Token(2);

/// Semantic 1: Edge-triggered: each new arrival is a new event even if the user
/// never read to `WouldBlock`; no new arrival, no event; a socket that
/// stays writable is reported once, not on every poll.
#[test]
fn edge_triggered_a_new_event_per_transition_and_no_spin() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(16);
    let (mut ours, mut peer) = tcp_pair();
    poll.registry().register(&mut ours, A, Interest::READABLE | Interest::WRITABLE).unwrap();
    // Connected: writable at once, reported once.
    wait_for(&mut poll, &mut events, A, |s| s.writable);
    assert!(
        quiet_for(&mut poll, &mut events, A, Duration::from_millis(150)).is_empty(),
        "a writable socket spins"
    );
    for round in 0..3 {
        peer.write_all(&[round]).unwrap();
        let seen = wait_for(&mut poll, &mut events, A, |s| s.readable);
        assert!(!seen.read_closed, "{seen:?}");
        // Not read: no new data, no new event.
        let again = quiet_for(&mut poll, &mut events, A, Duration::from_millis(100));
        assert!(
            again.iter().all(|s| !s.readable),
            "round {round}: level-triggered readiness {again:?}"
        );
    }
    let mut buf = [0; 8];
    assert_eq!((&ours).read(&mut buf).unwrap(), 3);
}

/// Semantic 2: A source already ready when registered yields an event: a connected
/// stream is writable, a listener with a pending connection readable.
#[test]
fn a_source_ready_at_registration_yields_an_event() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(16);
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    thread::sleep(Duration::from_millis(20));
    poll.registry().register(&mut listener, A, Interest::READABLE).unwrap();
    wait_for(&mut poll, &mut events, A, |s| s.readable);
    let (mut accepted, _) = listener.accept().unwrap();
    poll.registry().register(&mut accepted, B, Interest::WRITABLE).unwrap();
    wait_for(&mut poll, &mut events, B, |s| s.writable);
    drop(client);
}

/// Semantic 3: Readiness bits as mio's epoll backend maps them: the peer's
/// shutdown is read-closed (and readable), a pipe whose reader is gone is
/// write-closed and an error, out-of-band data is priority, a full close
/// is both closed bits.
#[test]
fn readiness_bits_map_as_mio_epoll_maps_them() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(16);

    let (mut ours, peer) = tcp_pair();
    poll.registry().register(&mut ours, A, Interest::READABLE).unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    let seen = wait_for(&mut poll, &mut events, A, |s| s.read_closed);
    assert!(seen.readable && !seen.write_closed && !seen.error, "{seen:?}");

    let (mut sender, receiver) = pipe::new().unwrap();
    poll.registry().register(&mut sender, B, Interest::WRITABLE).unwrap();
    wait_for(&mut poll, &mut events, B, |s| s.writable);
    drop(receiver);
    let seen = wait_for(&mut poll, &mut events, B, |s| s.write_closed);
    assert!(seen.error, "{seen:?}");

    let (mut urgent, peer) = tcp_pair();
    poll.registry()
        .register(&mut urgent, Token(3), Interest::READABLE | Interest::PRIORITY)
        .unwrap();
    // SAFETY: `peer`'s fd is open; the buffer is one valid byte.
    let sent = unsafe { libc::send(peer.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
    assert_eq!(sent, 1, "{}", io::Error::last_os_error());
    let seen = wait_for(&mut poll, &mut events, Token(3), |s| s.priority);
    assert!(seen.readable, "mio reports PRI as readable too: {seen:?}");

    // A reset connection hangs up both halves.
    let (mut reset, peer) = tcp_pair();
    poll.registry()
        .register(&mut reset, Token(4), Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `peer`'s fd is open and `linger` is a valid `linger` value of
    // the size passed.
    let set = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0);
    drop(peer);
    let seen = wait_for(&mut poll, &mut events, Token(4), |s| s.read_closed && s.write_closed);
    assert!(seen.readable, "{seen:?}");
}

/// Semantic 4: `Events::with_capacity(n)` gets at most n events per poll; the
/// surplus comes back on the next polls, none dropped, none twice.
#[test]
fn surplus_events_wait_for_the_next_poll() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(3);
    let mut keep = Vec::new();
    for i in 0..10 {
        let (mut ours, peer) = tcp_pair();
        poll.registry().register(&mut ours, Token(100 + i), Interest::WRITABLE).unwrap();
        keep.push((ours, peer));
    }
    let mut seen = Vec::new();
    let start = Instant::now();
    while seen.len() < 10 && start.elapsed() < Duration::from_secs(5) {
        let got = poll_once(&mut poll, &mut events, Duration::from_millis(50));
        assert!(got.len() <= 3, "{} events in a capacity of 3", got.len());
        seen.extend(got.into_iter().map(|s| s.token.0));
    }
    seen.sort_unstable();
    assert_eq!(seen, (100..110).collect::<Vec<_>>());
    assert!(poll_once(&mut poll, &mut events, Duration::from_millis(50)).is_empty());
}

/// Semantic 5: Timeouts: `Some(ZERO)` still returns what is ready, a sub-millisecond
/// timeout waits at least that long, `None` blocks until an event.
#[test]
fn poll_timeouts() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(16);
    let (mut ours, _peer) = tcp_pair();
    poll.registry().register(&mut ours, A, Interest::WRITABLE).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    while got.is_empty() && start.elapsed() < Duration::from_secs(5) {
        got = poll_once(&mut poll, &mut events, Duration::ZERO);
    }
    assert_eq!(got.first().map(|s| s.token), Some(A), "Some(ZERO) returned nothing ready");

    for wait in [Duration::from_micros(300), Duration::from_millis(15)] {
        let start = Instant::now();
        let got = poll_once(&mut poll, &mut events, wait);
        assert!(got.is_empty(), "{got:?}");
        assert!(start.elapsed() >= wait, "a {wait:?} timeout returned after {:?}", start.elapsed());
    }

    let waker = Waker::new(poll.registry(), B).unwrap();
    let waking = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
    });
    let start = Instant::now();
    poll.poll(&mut events, None).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(40), "poll(None) returned without an event");
    assert_eq!(events.iter().map(|e| e.token()).collect::<Vec<_>>(), [B]);
    waking.join().unwrap();
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// Semantic 5: A wait cut short by a signal handler returns `Interrupted`.
#[test]
fn an_interrupted_wait_returns_interrupted() {
    // SAFETY: `sa` is zeroed (a valid sigaction) and then given a handler
    // that does nothing; no SA_RESTART, so the wait is interrupted.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as usize;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let done = done.clone();
        thread::spawn(move || {
            let mut poll = Poll::new().unwrap();
            let mut events = Events::with_capacity(4);
            // SAFETY: `pthread_self` has no preconditions.
            tx.send(unsafe { libc::pthread_self() }).unwrap();
            let result = poll.poll(&mut events, Some(Duration::from_secs(10)));
            done.store(true, Ordering::SeqCst);
            result.map(|()| events.iter().count())
        })
    };
    let thread = rx.recv().unwrap();
    let start = Instant::now();
    // Signal until the poll ends (the first may land before it waits).
    while !done.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(30));
        // SAFETY: the poller thread has not been joined, so `thread` is
        // a live thread id.
        unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
    }
    let result = poller.join().unwrap();
    assert_eq!(result.map_err(|e| e.kind()), Err(io::ErrorKind::Interrupted));
}

/// Semantic 6: Errors are synchronous: bad fds fail in `register`; reregister and
/// deregister of what is not registered is `NotFound`; a double register
/// is `AlreadyExists`.
#[test]
fn errors_are_synchronous() {
    let poll = Poll::new().unwrap();
    let registry = poll.registry();
    assert!(registry.register(&mut SourceFd(&-1), A, Interest::READABLE).is_err());
    let closed = {
        let (ours, _peer) = tcp_pair();
        ours.into_raw_fd()
    };
    // SAFETY: `closed` was just given up by `into_raw_fd`; closing it once.
    drop(unsafe { OwnedFd::from_raw_fd(closed) });
    let err = registry.register(&mut SourceFd(&closed), A, Interest::READABLE).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
    let file = std::fs::File::open("/etc/hostname")
        .unwrap_or_else(|_| std::fs::File::open("Cargo.toml").unwrap());
    assert!(registry.register(&mut SourceFd(&file.as_raw_fd()), A, Interest::READABLE).is_err());

    let (mut ours, _peer) = tcp_pair();
    assert_eq!(
        registry.reregister(&mut ours, A, Interest::READABLE).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(registry.deregister(&mut ours).unwrap_err().kind(), io::ErrorKind::NotFound);
    registry.register(&mut ours, A, Interest::READABLE).unwrap();
    assert_eq!(
        registry.register(&mut ours, B, Interest::READABLE).unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    let fd = ours.as_raw_fd();
    assert_eq!(
        registry.register(&mut SourceFd(&fd), B, Interest::READABLE).unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    registry.deregister(&mut ours).unwrap();
    assert_eq!(registry.deregister(&mut ours).unwrap_err().kind(), io::ErrorKind::NotFound);
    assert_eq!(
        registry.deregister(&mut SourceFd(&fd)).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

/// Semantic 7: `reregister` replaces token and interest; a pending event that no
/// longer matches is dropped.
#[test]
fn reregister_replaces_token_and_interest() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(16);
    let (mut ours, mut peer) = tcp_pair();
    poll.registry().register(&mut ours, A, Interest::READABLE).unwrap();
    assert!(quiet_for(&mut poll, &mut events, A, Duration::from_millis(50)).is_empty());
    peer.write_all(b"x").unwrap();
    thread::sleep(Duration::from_millis(20));
    // The readable edge is pending; now watch writability only, as B.
    poll.registry().reregister(&mut ours, B, Interest::WRITABLE).unwrap();
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_millis(300) {
        seen.extend(poll_once(&mut poll, &mut events, Duration::from_millis(20)));
    }
    assert!(seen.iter().all(|s| s.token == B && !s.readable), "{seen:?}");
    assert!(seen.iter().any(|s| s.writable), "{seen:?}");
    // And back: reregister re-arms, reporting the data still there.
    poll.registry().reregister(&mut ours, A, Interest::READABLE).unwrap();
    wait_for(&mut poll, &mut events, A, |s| s.readable);
}

/// Semantic 8: `deregister` is final: its token never appears again, even for
/// readiness that arrived before; the source can then join another `Poll`.
#[test]
fn deregister_is_final_and_the_source_can_move_to_another_poll() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(16);
    let (mut ours, mut peer) = tcp_pair();
    poll.registry().register(&mut ours, A, Interest::READABLE).unwrap();
    assert!(quiet_for(&mut poll, &mut events, A, Duration::from_millis(30)).is_empty());
    peer.write_all(b"x").unwrap();
    thread::sleep(Duration::from_millis(20));
    // Let the readiness reach the reactor, but not the user: a capacity-1
    // poll taken by another ready source.
    let (mut other, _other_peer) = tcp_pair();
    poll.registry().register(&mut other, B, Interest::WRITABLE).unwrap();
    let mut one = Events::with_capacity(1);
    poll.poll(&mut one, Some(Duration::from_millis(50))).unwrap();
    poll.registry().deregister(&mut ours).unwrap();
    let late = quiet_for(&mut poll, &mut events, A, Duration::from_millis(200));
    assert!(late.is_empty(), "a deregistered token came back: {late:?}");
    peer.write_all(b"y").unwrap();
    assert!(quiet_for(&mut poll, &mut events, A, Duration::from_millis(100)).is_empty());

    let mut poll2 = Poll::new().unwrap();
    poll2.registry().register(&mut ours, Token(7), Interest::READABLE).unwrap();
    wait_for(&mut poll2, &mut events, Token(7), |s| s.readable);
    assert!(quiet_for(&mut poll, &mut events, A, Duration::from_millis(50)).is_empty());
}

/// Polls on another thread until told to stop, recording every token.
struct Poller {
    stop: Arc<AtomicBool>,
    waker: Waker,
    thread: Option<thread::JoinHandle<Vec<Seen>>>,
}

const STOP: Token = Token(usize::MAX);

impl Poller {
    fn start(mut poll: Poll) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let waker = Waker::new(poll.registry(), STOP).unwrap();
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut events = Events::with_capacity(64);
            let mut seen = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                poll.poll(&mut events, None).unwrap();
                seen.extend(events.iter().map(Seen::of));
            }
            seen
        });
        Poller { stop, waker, thread: Some(thread) }
    }

    fn stop(mut self) -> Vec<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake().unwrap();
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Semantic 9: Dropping a net type without deregistering cancels its poll and
/// closes it, so the peer sees EOF while the poller blocks; a reused fd
/// number does not inherit the old registration.
#[test]
fn dropping_a_registered_stream_closes_it_and_a_reused_fd_starts_clean() {
    let poll = Poll::new().unwrap();
    let registry = poll.registry().try_clone().unwrap();
    let poller = Poller::start(poll);
    let (mut ours, mut peer) = tcp_pair();
    registry.register(&mut ours, A, Interest::READABLE | Interest::WRITABLE).unwrap();
    thread::sleep(Duration::from_millis(50));
    let fd = ours.as_raw_fd();
    drop(ours);
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0; 8];
    assert_eq!(peer.read(&mut buf).expect("the peer never saw EOF"), 0);

    // The same fd number, registered afresh, reports only its new token.
    let (mut fresh, mut fresh_peer) = tcp_pair();
    let reused = fresh.as_raw_fd() == fd;
    registry.register(&mut fresh, B, Interest::READABLE).unwrap();
    fresh_peer.write_all(b"x").unwrap();
    thread::sleep(Duration::from_millis(100));
    let seen = poller.stop();
    let after: Vec<_> = seen.iter().skip_while(|s| s.token != B).collect();
    assert!(!after.is_empty(), "no event for the new registration (fd reused: {reused})");
    assert!(after.iter().all(|s| s.token != A), "the old token came back: {seen:?}");
}

/// Semantic 10: A `register` from another thread, while one thread blocks in
/// `poll`, takes effect in that poll without a `Waker`.
#[test]
fn register_from_another_thread_reaches_a_blocked_poll() {
    let mut poll = Poll::new().unwrap();
    let registry = poll.registry().try_clone().unwrap();
    let (mut ours, _peer) = tcp_pair();
    let barrier = Arc::new(Barrier::new(2));
    let registering = {
        let barrier = barrier.clone();
        thread::spawn(move || {
            barrier.wait();
            thread::sleep(Duration::from_millis(50));
            registry.register(&mut ours, A, Interest::WRITABLE).unwrap();
            ours
        })
    };
    let mut events = Events::with_capacity(8);
    barrier.wait();
    let start = Instant::now();
    poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
    let got: Vec<_> = events.iter().map(Seen::of).collect();
    assert!(got.iter().any(|s| s.token == A && s.writable), "{got:?} after {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the registration waited {:?}",
        start.elapsed()
    );
    drop(registering.join().unwrap());
}

/// Semantic 11: One `Waker` per `Poll`, usable from any thread; several wakes before
/// a poll collapse into one readable event with its token; it never fails.
#[test]
fn wakes_collapse_into_one_event() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(8);
    let waker = Arc::new(Waker::new(poll.registry(), B).unwrap());
    let wakers: Vec<_> = (0..4)
        .map(|_| {
            let waker = waker.clone();
            thread::spawn(move || {
                for _ in 0..100 {
                    waker.wake().unwrap();
                }
            })
        })
        .collect();
    for w in wakers {
        w.join().unwrap();
    }
    let got = poll_once(&mut poll, &mut events, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].token == B && got[0].readable, "{got:?}");
    assert!(poll_once(&mut poll, &mut events, Duration::from_millis(100)).is_empty());
    drop(poll);
    waker.wake().expect("a wake after the poll is gone failed");
}

/// A `Poll` that moves to another thread keeps working after the thread
/// that armed its polls exits (io_uring cancels an exiting thread's
/// requests): sources and the waker are armed again from the new thread.
#[test]
fn a_poll_outlives_the_thread_that_armed_it() {
    let (mut ours, mut peer) = tcp_pair();
    let (poll, ours) = thread::spawn(move || {
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(8);
        poll.registry().register(&mut ours, A, Interest::READABLE).unwrap();
        poll.poll(&mut events, Some(Duration::from_millis(20))).unwrap();
        (poll, ours)
    })
    .join()
    .unwrap();
    let mut poll = poll;
    let mut events = Events::with_capacity(8);
    peer.write_all(b"x").unwrap();
    wait_for(&mut poll, &mut events, A, |s| s.readable);
    let waker = Waker::new(poll.registry(), B).unwrap();
    let waking = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        waker.wake().unwrap();
    });
    let start = Instant::now();
    poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
    assert!(events.iter().any(|e| e.token() == B), "no wake-up");
    assert!(start.elapsed() < Duration::from_secs(2), "the wake-up took {:?}", start.elapsed());
    waking.join().unwrap();
    drop(ours);
}

/// The ring is built with `COOP_TASKRUN`, so the task work that posts a
/// poll's completion runs on the thread that armed the poll without an
/// interrupt: at that thread's next entry to the kernel, or at once if it
/// sleeps. A `Poll` that moved to another thread (tokio's workers take
/// turns at it) still gets its events while the arming thread lives on,
/// whether that thread is asleep on a lock or busy in user space.
#[test]
fn a_poll_moved_away_from_a_living_arming_thread_still_reports() {
    let (ours, mut peer) = tcp_pair();
    let (to_main, from_armer) = std::sync::mpsc::channel();
    let (to_armer, from_main) = std::sync::mpsc::channel::<bool>();
    let armer = thread::spawn(move || {
        let mut ours = ours;
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(8);
        poll.registry().register(&mut ours, A, Interest::READABLE).unwrap();
        poll.poll(&mut events, Some(Duration::from_millis(20))).unwrap();
        to_main.send((poll, ours)).unwrap();
        // Asleep on a channel (a futex) until told to spin, then busy in
        // user space, making no system call, until told to stop.
        while let Ok(spin) = from_main.recv() {
            if spin {
                let until = Instant::now() + Duration::from_millis(500);
                let mut x = 0u64;
                while Instant::now() < until {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
        }
    });
    let (mut poll, mut ours) = from_armer.recv().unwrap();
    let mut events = Events::with_capacity(8);
    let mut buf = [0; 8];
    for spin in [false, true] {
        to_armer.send(spin).unwrap();
        thread::sleep(Duration::from_millis(20));
        peer.write_all(b"x").unwrap();
        let start = Instant::now();
        wait_for(&mut poll, &mut events, A, |s| s.readable);
        // Well inside the spin: the event did not wait for the spinning
        // thread's next system call.
        let took = start.elapsed();
        let state = if spin { "spins" } else { "sleeps" };
        assert!(
            took < Duration::from_millis(400),
            "the event took {took:?} while the arming thread {state}"
        );
        assert_eq!(ours.read(&mut buf).unwrap(), 1);
    }
    drop(to_armer);
    armer.join().unwrap();
}

/// UDP and Unix streams go through the same path.
#[test]
fn udp_and_unix_streams() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(8);
    let mut udp = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    poll.registry().register(&mut udp, A, Interest::READABLE).unwrap();
    let sender = net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"ping", udp.local_addr().unwrap()).unwrap();
    wait_for(&mut poll, &mut events, A, |s| s.readable);
    let mut buf = [0; 8];
    assert_eq!(udp.recv_from(&mut buf).unwrap().0, 4);
    assert_eq!(udp.recv_from(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);

    let (mut a, mut b) = UnixStream::pair().unwrap();
    poll.registry().register(&mut a, B, Interest::READABLE).unwrap();
    b.write_all(b"hi").unwrap();
    wait_for(&mut poll, &mut events, B, |s| s.readable);
    assert_eq!(a.read(&mut buf).unwrap(), 2);
}
