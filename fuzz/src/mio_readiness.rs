//! Model-based driver for compat-mio's readiness: interprets bytes as
//! registry calls, readiness edges and polls on a real `Poll` (on whichever
//! backend `TALLY_BACKEND` picks), keeps a plain model of what mio promises,
//! and asserts after every step that the two agree.
//!
//! This file uses only `std` and `tally_compat_mio`. The fuzz target calls
//! it through `libfuzzer-sys`, and `compat-mio/tests/fuzz_corpus_replay.rs`
//! includes it with `#[path]` to replay the corpus on stable, on both
//! backends.
//!
//! # Encoding
//!
//! The first byte sets the `Events` capacity: `1 + b % 3`. Then each
//! operation is an opcode byte, `op % 10`, followed by its arguments. Input
//! that runs out in the middle of an operation ends the run. `s` is a byte
//! naming one of three sources, `s % 3`; `i` is an interest byte, `i % 3`:
//! readable, writable, or both.
//!
//! | op | operation                                   | arguments |
//! |----|---------------------------------------------|-----------|
//! | 0  | `register`                                  | `s`, `i`  |
//! | 1  | `reregister`                                | `s`, `i`  |
//! | 2  | `deregister`                                | `s`       |
//! | 3  | the peer writes one byte                    | `s`       |
//! | 4  | read until `WouldBlock`                     | `s`       |
//! | 5  | the peer shuts its end down                 | `s`       |
//! | 6  | drop the source unregistered, make a new one (its fd number is reused) | `s` |
//! | 7  | one `poll` with a zero timeout              |           |
//! | 8  | `Waker::wake`                               |           |
//! | 9  | settle: poll until nothing is owed          |           |
//!
//! Every successful `register`/`reregister` gets a fresh token, so an event
//! for any token but a source's current one is a stale event.
//!
//! # The model
//!
//! Each source is registered or not, with a token and an interest, and has
//! unread bytes or not. mio's promises, as checked:
//!
//! - `register` of a registered source fails with `AlreadyExists`;
//!   `reregister`/`deregister` of an unregistered one with `NotFound`; the
//!   rest succeed.
//! - An event's token is the current token of a registered source, or the
//!   waker's: never one that was deregistered, replaced by `reregister`, or
//!   dropped with its source.
//! - No poll returns more events than `Events`' capacity, nor two events
//!   for one token.
//! - Edges are owed, and must arrive: a readable event after each write or
//!   shutdown by the peer (even with bytes still unread), after a
//!   (re)registration for readable while bytes are unread, and a writable
//!   event after a (re)registration for writable (the socket has room). A
//!   settle polls, at most for 2 s, until every owed edge has arrived.
//!   Reading a source to empty (its peer still open) cancels what it owes:
//!   epoll checks an item's readiness again when it reports it, and so does
//!   io_uring's poll. Spurious events are allowed.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use tally_compat_mio::net::UnixStream;
use tally_compat_mio::{Events, Interest, Poll, Token, Waker};

const SOURCES: usize = 3;
const WAKER: Token = Token(usize::MAX);
/// How long a settle waits for owed edges before calling them lost.
const SETTLE: Duration = Duration::from_secs(2);

/// What one run exercised. The corpus replay test checks that the committed
/// seeds, taken together, reach every branch counted here.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coverage {
    /// Operations run.
    pub ops: usize,
    /// `register`s, `reregister`s and `deregister`s that succeeded.
    pub registry_ok: usize,
    /// Registry calls that failed as the model said they must.
    pub registry_refused: usize,
    /// Owed readable edges that arrived.
    pub readable_edges: usize,
    /// Owed writable edges that arrived.
    pub writable_edges: usize,
    /// Sources dropped while registered.
    pub dropped_registered: usize,
    /// Polls that filled `Events` to its capacity.
    pub full_polls: usize,
    /// Waker events seen.
    pub wakes: usize,
}

impl std::ops::AddAssign for Coverage {
    fn add_assign(&mut self, o: Coverage) {
        self.ops += o.ops;
        self.registry_ok += o.registry_ok;
        self.registry_refused += o.registry_refused;
        self.readable_edges += o.readable_edges;
        self.writable_edges += o.writable_edges;
        self.dropped_registered += o.dropped_registered;
        self.full_polls += o.full_polls;
        self.wakes += o.wakes;
    }
}

/// Runs `data` (see the module docs); panics where compat-mio and the
/// model disagree.
pub fn run(data: &[u8]) {
    let _ = run_with_coverage(data);
}

/// [`run`], also reporting what the run exercised.
pub fn run_with_coverage(data: &[u8]) -> Coverage {
    let mut input = Input { data, pos: 0 };
    let Some(cap) = input.byte() else { return Coverage::default() };
    let mut h = Harness::new(1 + usize::from(cap % 3));
    while h.step(&mut input).is_some() {}
    h.settle();
    h.cov
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
}

/// One source: our end (registered with the `Poll`) and the peer's.
struct Source {
    ours: UnixStream,
    peer: Option<std::os::unix::net::UnixStream>,
    /// The model: `Some((token, interest))` while registered.
    reg: Option<(Token, Interest)>,
    unread: bool,
    owed_readable: bool,
    owed_writable: bool,
}

impl Source {
    fn new() -> Source {
        let (ours, peer) = UnixStream::pair().expect("socketpair");
        let peer = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(peer));
        peer.set_nonblocking(true).expect("nonblocking peer");
        Source {
            ours,
            peer: Some(peer),
            reg: None,
            unread: false,
            owed_readable: false,
            owed_writable: false,
        }
    }

    /// What a (re)registration for `interest` owes, as `EPOLL_CTL_ADD` and
    /// `_MOD` report current readiness.
    fn armed(&mut self, token: Token, interest: Interest) {
        self.reg = Some((token, interest));
        self.owed_readable = interest.is_readable() && self.unread;
        self.owed_writable = interest.is_writable();
    }
}

struct Harness {
    poll: Poll,
    events: Events,
    waker: Waker,
    sources: Vec<Source>,
    next_token: usize,
    owed_wake: bool,
    cov: Coverage,
}

impl Harness {
    fn new(cap: usize) -> Harness {
        let poll = Poll::new().expect("Poll::new");
        let waker = Waker::new(poll.registry(), WAKER).expect("Waker::new");
        Harness {
            poll,
            events: Events::with_capacity(cap),
            waker,
            sources: (0..SOURCES).map(|_| Source::new()).collect(),
            next_token: 0,
            owed_wake: false,
            cov: Coverage::default(),
        }
    }

    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.byte()? % 10;
        self.cov.ops += 1;
        match op {
            0..=2 => {
                let s = usize::from(input.byte()?) % SOURCES;
                let interest = if op < 2 { Some(interest(input.byte()?)) } else { None };
                self.registry(op, s, interest);
            }
            3 => {
                let src = &mut self.sources[usize::from(input.byte()?) % SOURCES];
                if let Some(peer) = &mut src.peer {
                    match peer.write(b"x") {
                        Ok(1) => {
                            src.unread = true;
                            src.owed_readable |= src.reg.is_some_and(|(_, i)| i.is_readable());
                        }
                        Ok(n) => panic!("a one-byte write wrote {n}"),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("the peer's write failed: {e}"),
                    }
                }
            }
            4 => {
                let src = &mut self.sources[usize::from(input.byte()?) % SOURCES];
                let mut buf = [0; 256];
                loop {
                    match src.ours.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("read failed: {e}"),
                    }
                }
                // Read to empty, with the peer still there: an edge not yet
                // reported may be dropped, as epoll drops a ready item
                // whose file no longer polls ready when `epoll_wait` looks.
                if src.peer.is_some() {
                    src.unread = false;
                    src.owed_readable = false;
                }
            }
            5 => {
                let src = &mut self.sources[usize::from(input.byte()?) % SOURCES];
                if let Some(peer) = src.peer.take() {
                    peer.shutdown(Shutdown::Both).expect("shutdown");
                    // A closed peer stays readable (EOF) for good.
                    src.unread = true;
                    src.owed_readable |= src.reg.is_some_and(|(_, i)| i.is_readable());
                }
            }
            6 => {
                let s = usize::from(input.byte()?) % SOURCES;
                if self.sources[s].reg.is_some() {
                    self.cov.dropped_registered += 1;
                }
                // Dropped first, so that the new pair reuses its fd numbers.
                drop(self.sources.remove(s));
                self.sources.insert(s, Source::new());
            }
            7 => self.poll_once(Duration::ZERO),
            8 => {
                self.waker.wake().expect("Waker::wake");
                self.owed_wake = true;
            }
            _ => self.settle(),
        }
        Some(())
    }

    fn registry(&mut self, op: u8, s: usize, interest: Option<Interest>) {
        let token = Token(self.next_token);
        let registry = self.poll.registry();
        let src = &mut self.sources[s];
        let registered = src.reg.is_some();
        let result = match (op, interest) {
            (0, Some(i)) => registry.register(&mut src.ours, token, i),
            (1, Some(i)) => registry.reregister(&mut src.ours, token, i),
            _ => registry.deregister(&mut src.ours),
        };
        let expect = match (op, registered) {
            (0, true) => Some(ErrorKind::AlreadyExists),
            (1 | 2, false) => Some(ErrorKind::NotFound),
            _ => None,
        };
        match (result, expect) {
            (Ok(()), None) => {
                self.cov.registry_ok += 1;
                match interest {
                    Some(i) => {
                        self.next_token += 1;
                        src.armed(token, i);
                    }
                    None => {
                        src.reg = None;
                        src.owed_readable = false;
                        src.owed_writable = false;
                    }
                }
            }
            (Err(e), Some(kind)) if e.kind() == kind => self.cov.registry_refused += 1,
            (got, want) => {
                panic!("registry op {op} on source {s}: got {got:?}, the model says {want:?}")
            }
        }
    }

    /// One poll: checks every event against the model and pays what it owes.
    fn poll_once(&mut self, timeout: Duration) {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return,
            Err(e) => panic!("poll failed: {e}"),
        }
        let cap = self.events.capacity();
        let mut seen = HashSet::new();
        let mut n = 0;
        for event in self.events.iter() {
            n += 1;
            let token = event.token();
            assert!(seen.insert(token), "two events for {token:?} in one poll");
            if token == WAKER {
                self.owed_wake = false;
                self.cov.wakes += 1;
                continue;
            }
            let Some(src) =
                self.sources.iter_mut().find(|s| s.reg.is_some_and(|(t, _)| t == token))
            else {
                panic!("an event for {token:?}, which no registered source holds: {event:?}");
            };
            if event.is_readable() || event.is_read_closed() {
                if src.owed_readable {
                    self.cov.readable_edges += 1;
                }
                src.owed_readable = false;
            }
            if event.is_writable() {
                if src.owed_writable {
                    self.cov.writable_edges += 1;
                }
                src.owed_writable = false;
            }
        }
        assert!(n <= cap, "{n} events with a capacity of {cap}");
        if n == cap {
            self.cov.full_polls += 1;
        }
    }

    fn owed(&self) -> bool {
        self.owed_wake || self.sources.iter().any(|s| s.owed_readable || s.owed_writable)
    }

    /// Polls until every owed edge has arrived; panics if one has not
    /// within [`SETTLE`].
    fn settle(&mut self) {
        let start = Instant::now();
        let mut timeout = Duration::ZERO;
        while self.owed() {
            assert!(
                start.elapsed() < SETTLE,
                "owed edges never arrived: wake {}, sources {:?}",
                self.owed_wake,
                self.sources
                    .iter()
                    .map(|s| (s.reg, s.owed_readable, s.owed_writable))
                    .collect::<Vec<_>>()
            );
            self.poll_once(timeout);
            timeout = Duration::from_millis(5);
        }
    }
}

fn interest(b: u8) -> Interest {
    match b % 3 {
        0 => Interest::READABLE,
        1 => Interest::WRITABLE,
        _ => Interest::READABLE | Interest::WRITABLE,
    }
}
