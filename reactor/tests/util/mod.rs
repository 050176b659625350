//! Helpers shared by the reactor's integration tests.
//!
//! Every wait is bounded: [`Deadline`] turns the reactor with a short
//! timeout until a condition holds, and panics (with the metrics) when the
//! deadline passes instead of hanging. Expectations tolerate spurious
//! events: signal packets are summed rather than counted one by one, and
//! helpers look for the completion they want among whatever else arrived.

#![allow(dead_code)]

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use tally_reactor::{
    CompletionPacket, Features, OpId, Packet, PacketKind, Reactor, Registration, Signals,
};

/// How long any one wait in a test may take before it fails.
pub const BUDGET: Duration = Duration::from_secs(10);

/// One turn's timeout inside a bounded loop.
pub const TICK: Duration = Duration::from_millis(10);

/// A point in time a test must not pass.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    /// [`BUDGET`] from now.
    pub fn new() -> Deadline {
        Deadline::after(BUDGET)
    }

    /// `d` from now.
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }

    /// Panics, naming `what` and the reactor's metrics, if the deadline
    /// has passed.
    #[track_caller]
    pub fn check(&self, reactor: &Reactor, what: &str) {
        if self.passed() {
            panic!("timed out waiting for {what}; metrics: {:?}", reactor.metrics());
        }
    }
}

/// Turns `reactor` (never blocking longer than [`TICK`]) until `done`
/// returns true. Panics after [`BUDGET`].
#[track_caller]
pub fn turn_until(reactor: &Reactor, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Deadline::new();
    loop {
        if done() {
            return;
        }
        deadline.check(reactor, what);
        reactor.turn(Some(TICK)).expect("turn");
    }
}

/// Turns and drains `reg` into one growing list until `done` holds for the
/// packets gathered so far. Returns them all.
#[track_caller]
pub fn gather_until(
    reactor: &Reactor,
    reg: &Registration,
    what: &str,
    mut done: impl FnMut(&[Packet]) -> bool,
) -> Vec<Packet> {
    let mut all = Vec::new();
    turn_until(reactor, what, || {
        all.extend(reg.try_drain());
        done(&all)
    });
    all
}

/// As [`gather_until`], taking after each drain (before the next one
/// frees them) the fds that accept completions carry. Returns the packets
/// and the fds, each with the completion that carried it.
#[track_caller]
pub fn gather_accepts(
    reactor: &Reactor,
    reg: &Registration,
    what: &str,
    mut done: impl FnMut(&[Packet]) -> bool,
) -> (Vec<Packet>, Vec<(CompletionPacket, OwnedFd)>) {
    let (mut all, mut fds) = (Vec::new(), Vec::new());
    turn_until(reactor, what, || {
        let list = reg.try_drain();
        for c in completions(&list) {
            if let Some(fd) = reg.take_fd(&c) {
                fds.push((c, fd));
            }
        }
        all.extend(list);
        done(&all)
    });
    (all, fds)
}

/// Turns until the completion of `op` reaches `reg`, and returns it along
/// with everything else drained on the way.
#[track_caller]
pub fn wait_completion(
    reactor: &Reactor,
    reg: &Registration,
    op: OpId,
) -> (CompletionPacket, Vec<Packet>) {
    let all =
        gather_until(reactor, reg, "an operation's completion", |p| completion_of(p, op).is_some());
    (completion_of(&all, op).unwrap(), all)
}

/// The completion of `op` among `packets`, if any.
pub fn completion_of(packets: &[Packet], op: OpId) -> Option<CompletionPacket> {
    completions(packets).into_iter().find(|c| c.op() == op)
}

/// Every completion among `packets`, in order.
pub fn completions(packets: &[Packet]) -> Vec<CompletionPacket> {
    packets.iter().filter_map(|p| p.as_completion()).collect()
}

/// The union of the observed bits and the sum of the counts of every signal
/// packet among `packets`. Several signal packets (spurious ones, or one per
/// drain) add up; a test asserts on the totals.
pub fn signal_totals(packets: &[Packet]) -> (Signals, u64) {
    packets
        .iter()
        .filter_map(|p| p.as_signal())
        .fold((Signals::NONE, 0), |(bits, n), s| (bits | s.observed, n + u64::from(s.count.get())))
}

/// How many signal packets are among `packets`.
pub fn signal_packets(packets: &[Packet]) -> usize {
    packets.iter().filter(|p| matches!(p.kind(), PacketKind::Signal(_))).count()
}

/// The user payloads among `packets`, in order.
pub fn user_payloads(packets: &[Packet]) -> Vec<[u8; 32]> {
    packets
        .iter()
        .filter_map(|p| match p.kind() {
            PacketKind::User(bytes) => Some(bytes),
            _ => None,
        })
        .collect()
}

/// Prints why a test is skipped. The caller returns right after.
pub fn skip(test: &str, reason: &str) {
    println!("SKIPPED {test}: {reason}");
    eprintln!("SKIPPED {test}: {reason}");
}

/// Returns from the calling test, printing the reason, unless the running
/// kernel has `feature` (a field of [`Features`]).
#[macro_export]
macro_rules! require {
    ($reactor:expr, $feature:ident) => {
        if !$reactor.features().$feature {
            $crate::util::skip(
                module_path!(),
                concat!("the running kernel lacks ", stringify!($feature)),
            );
            return;
        }
    };
}

/// The features of a default reactor, for tests that check before building
/// their own.
pub fn features() -> Features {
    Reactor::new().expect("reactor").features()
}

/// How many fds this process has open. Only meaningful in a test binary
/// that runs one test at a time.
pub fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// A listener on an ephemeral loopback port.
pub fn loopback_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    (listener, addr)
}

/// `errno` of a negative completion result.
pub fn errno(result: i32) -> io::Error {
    assert!(result < 0, "expected an error result, got {result}");
    io::Error::from_raw_os_error(-result)
}

/// The byte at offset `i` of the test stream: a pattern that a shifted or
/// repeated chunk cannot match by accident.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 20) as u8
}

/// A waker that counts its wakes.
pub struct CountingWaker(AtomicUsize);

impl CountingWaker {
    /// The counter and a waker that bumps it.
    pub fn new() -> (Arc<CountingWaker>, Waker) {
        let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        (count, waker)
    }

    /// How many times it was woken.
    pub fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
