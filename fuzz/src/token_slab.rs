//! Model-based driver for tally's generational token slab, in two layers
//! that one input interleaves:
//!
//! 1. **The slab itself.** The reactor's `GenSlab` (`reactor/src/slab.rs`,
//!    which is crate-private, included here with `#[path]` so that the
//!    code that ships is the code fuzzed) against a plain model: the live
//!    tokens and their values, every token ever removed, and the free slots
//!    as a LIFO stack.
//! 2. **The reactor's registrations.** A real `Reactor` (on whichever
//!    backend `TALLY_BACKEND` picks; built at the input's first reactor
//!    operation) with three registration places that are registered,
//!    dropped while their operations are in flight, and registered again,
//!    so that slots are reused. Each registration's model records the
//!    operations it issued, what it raised through its `Signaler` and sent
//!    through its `Sender`; every packet it drains is checked against that.
//!
//! This file uses only `std`, `tally_packets` (which the slab needs) and
//! `tally_reactor`. The fuzz target calls it through `libfuzzer-sys`, and
//! `reactor/tests/fuzz_token_slab_replay.rs` includes it with `#[path]` to
//! replay the corpus on stable, on both backends.
//!
//! # Encoding
//!
//! The first byte sets the reactor's queue cap, `1 + b % 3`, and its user
//! packet cap, `1 + (b / 3) % 3`. Then each operation is an opcode byte,
//! `op % 20`, followed by its arguments; input that runs out in the middle
//! of an operation ends the run, and so do the first 300 operations. `k`
//! picks one of a list (`k % len`; nothing happens when it is empty), `r`
//! one of three registration places (`r % 3`).
//!
//! | op | operation                                                          | arguments |
//! |----|--------------------------------------------------------------------|-----------|
//! | 0  | slab: `insert` a fresh value                                       |           |
//! | 1  | slab: `insert_mut`, then change the value through the lent `&mut`  |           |
//! | 2  | slab: `remove` live token `k`                                      | `k`       |
//! | 3  | slab: `discard` live token `k`                                     | `k`       |
//! | 4  | slab: `get`, `get_mut`, `remove`, `discard` removed token `k`      | `k`       |
//! | 5  | slab: all four with `Token` (slot `s % (slots + 2)`, generation `g`) | `s g`   |
//! | 6  | slab: `get_mut` live token `k` and store a fresh value             | `k`       |
//! | 7  | slab: `iter` and `len` against the model                           |           |
//! | 8  | drop registration `r` if live, and `register_with` trigger `t`     | `r t`     |
//! | 9  | drop `r` if live, and `register_fd` socket `f % 2` for `READABLE`  | `r f`     |
//! | 10 | drop registration `r`                                              | `r`       |
//! | 11 | `r` submits operation `o % 8` (below)                              | `r o`     |
//! | 12 | `r` cancels: its live op `k` (`k < 128`), else op id `k - 128` of the run's | `r k` |
//! | 13 | `r`'s `Signaler` raises `Signals::user(b % 8)`, count `1 + (b / 8) % 3` | `r b` |
//! | 14 | `r`'s `Sender` sends a user packet                                 | `r`       |
//! | 15 | raise and send through dropped registration `k`'s handles          | `k`       |
//! | 16 | `try_drain` registration `r`                                       | `r`       |
//! | 17 | `poll_packets` registration `r` with its counting waker            | `r`       |
//! | 18 | one `turn`, with a zero timeout (`t` even) or 200 µs (`t` odd)     | `t`       |
//! | 19 | the peer acts, `w % 4` (below)                                     | `w`       |
//!
//! Operations (`o % 8`): a nop; a timeout of 0, 50 µs, 1 ms or 60 s; a
//! recv of up to 16 bytes and a send of 16 bytes on the ops socket; a
//! one-shot poll of it for `READABLE`. A registration place that is empty
//! when op 11, 13 or 14 names it is first filled with `register()`.
//!
//! The peer (`w % 4`, with `n = w / 4`): writes `1 + n % 16` bytes to the
//! ops socket; reads it empty; writes a byte to fd socket `n % 2`; or we
//! read fd socket `n % 2` empty.
//!
//! # What is checked
//!
//! The slab, after every step: each live token finds its own value, and
//! every token ever removed finds nothing (nor removes or discards
//! anything), also once its slot holds a newer entry; `len` and `iter`
//! agree with the model; an insert takes the most recently freed slot (or
//! a new one) and hands out a token never issued before in the run.
//!
//! The reactor:
//!
//! - Every packet a registration drains carries its token as key. A
//!   completion is for an operation this very registration issued and has
//!   not seen end (never one of a dropped predecessor in the same slot, of
//!   another registration, or one already finished or cancelled), with its
//!   op's tag; a nop answers 0, a timeout `-ETIME`, and a recv's or send's
//!   buffer comes back once through `reclaim`.
//! - A signal packet has its registration's trigger; its user bits are
//!   exactly those raised since the last drain, and its count is the
//!   raises' total (at least that where polls or a watched fd add edges,
//!   and readiness bits appear only there). User packets are exactly those
//!   sent since the last drain, in order. So a drain hands over every raise
//!   and send, and a first raise after a drain reports `Raised::Woke`.
//! - A `Sender` with `user_cap` packets undrained answers `WouldBlock`.
//! - Cancelling a live op answers `Cancelled` or `AlreadyCompleted` (then
//!   with its final completion); cancelling or reclaiming an op id the
//!   registration does not own answers `NotFound` and `None`.
//! - Registration tokens, and op ids, are unique over the run.
//! - A registration nothing was ever addressed to is never woken.
//! - `register_fd` of a socket a live registration watches fails with
//!   `AlreadyExists`, and succeeds once that one is dropped.
//! - Handles of a dropped registration fail with `BrokenPipe`.
//! - `metrics().registrations` is the live count after every step; at the
//!   end every nop and short timeout has completed, and once everything is
//!   dropped no op is in flight, no registration is left, and (once the
//!   reactor is gone) `/proc/self/fd` holds as many entries as before.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tally_reactor::{
    Cancel, CompletionPacket, Op, OpId, OpTag, PacketKind, PacketList, Raised, Reactor,
    Registration, Sender, SignalPacket, Signaler, Signals, Token,
};

#[path = "../../reactor/src/slab.rs"]
mod slab;

use slab::GenSlab;

/// Operations per input, at most.
const MAX_STEPS: usize = 300;
/// Registration places.
const REGS: usize = 3;
/// Sockets that `register_fd` watches.
const FD_SOCKETS: usize = 2;
/// Dropped registrations whose handles are kept for op 15.
const DEAD_KEPT: usize = 4;
/// The timeouts op 11 submits.
const TIMEOUTS: [Duration; 4] =
    [Duration::ZERO, Duration::from_micros(50), Duration::from_millis(1), Duration::from_secs(60)];
/// Linux's `ETIME`, which a timeout answers.
const ETIME: i32 = 62;
/// How long the end of a run waits for short ops, and for the kernel to
/// let go of cancelled ones.
const SETTLE: Duration = Duration::from_secs(2);

/// What one run exercised. The corpus replay test checks that the
/// committed seeds, taken together, reach every branch counted here.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coverage {
    /// Operations run.
    pub ops: usize,
    /// Slab inserts that reused a freed slot.
    pub slab_reused_slots: usize,
    /// Slab lookups of a removed token whose slot holds a newer entry.
    pub stale_after_reuse: usize,
    /// Slab lookups of a removed token whose slot is free.
    pub stale_vacant: usize,
    /// Slab lookups of a token never issued (reserved, out of range, or a
    /// generation the slot never had).
    pub never_issued: usize,
    /// Slab entries removed by `discard`.
    pub discards: usize,
    /// Registrations made.
    pub registrations: usize,
    /// Registrations that took the slot of a dropped one.
    pub reused_reg_slots: usize,
    /// Operations that took the slot of a finished one.
    pub reused_op_slots: usize,
    /// Registrations dropped with operations they had not seen end.
    pub dropped_busy: usize,
    /// Completion packets checked.
    pub completions: usize,
    /// Signal packets checked.
    pub signals: usize,
    /// User packets checked.
    pub user_packets: usize,
    /// Cancels of a live op.
    pub cancels: usize,
    /// Cancels and reclaims of an op id the registration does not own,
    /// refused.
    pub foreign_ops_refused: usize,
    /// Raises and sends through a dropped registration's handles, refused.
    pub dead_handles_refused: usize,
    /// Of those, while a newer registration held the slot.
    pub dead_handles_after_reuse: usize,
    /// `register_fd` of a watched socket, refused.
    pub fd_conflicts: usize,
    /// Sends refused because the user packet queue was full.
    pub user_queue_full: usize,
    /// Remote notifications the reactor found stale (its metric).
    pub stale_notifications: u64,
    /// Completions the reactor reclaimed instead of delivering (its metric).
    pub reclaimed: u64,
}

impl std::ops::AddAssign for Coverage {
    fn add_assign(&mut self, o: Coverage) {
        self.ops += o.ops;
        self.slab_reused_slots += o.slab_reused_slots;
        self.stale_after_reuse += o.stale_after_reuse;
        self.stale_vacant += o.stale_vacant;
        self.never_issued += o.never_issued;
        self.discards += o.discards;
        self.registrations += o.registrations;
        self.reused_reg_slots += o.reused_reg_slots;
        self.reused_op_slots += o.reused_op_slots;
        self.dropped_busy += o.dropped_busy;
        self.completions += o.completions;
        self.signals += o.signals;
        self.user_packets += o.user_packets;
        self.cancels += o.cancels;
        self.foreign_ops_refused += o.foreign_ops_refused;
        self.dead_handles_refused += o.dead_handles_refused;
        self.dead_handles_after_reuse += o.dead_handles_after_reuse;
        self.fd_conflicts += o.fd_conflicts;
        self.user_queue_full += o.user_queue_full;
        self.stale_notifications += o.stale_notifications;
        self.reclaimed += o.reclaimed;
    }
}

/// Runs `data` (see the module docs); panics where the slab or the
/// reactor breaks a promise.
pub fn run(data: &[u8]) {
    let _ = run_with_coverage(data);
}

/// [`run`], also reporting what the run exercised.
pub fn run_with_coverage(data: &[u8]) -> Coverage {
    let mut input = Input { data, pos: 0 };
    let Some(config) = input.byte() else { return Coverage::default() };
    let fds_before = open_fds();
    let mut h = Harness {
        slab: SlabModel::new(),
        reactor: None,
        queue_cap: 1 + usize::from(config % 3),
        user_cap: 1 + usize::from(config / 3 % 3),
        cov: Coverage::default(),
    };
    let mut steps = 0;
    while steps < MAX_STEPS && h.step(&mut input).is_some() {
        steps += 1;
    }
    let mut cov = h.cov;
    if let Some(layer) = h.reactor.take() {
        layer.finish(&mut cov);
    }
    assert_eq!(open_fds(), fds_before, "the run leaked fds");
    cov
}

/// How many fds this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// The bytes still to interpret.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    /// The next byte, or `None` at the end.
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// The next byte as a registration place, `r % REGS`.
    fn reg(&mut self) -> Option<usize> {
        Some(usize::from(self.byte()?) % REGS)
    }
}

/// Both layers of one run, and what it exercised.
struct Harness {
    slab: SlabModel,
    /// Built at the first reactor operation, so that slab-only inputs run
    /// fast.
    reactor: Option<ReactorLayer>,
    /// The reactor's settings, from the first byte.
    queue_cap: usize,
    user_cap: usize,
    cov: Coverage,
}

impl Harness {
    /// Runs one operation and checks the layer it touched; `None` once
    /// the input runs out.
    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.byte()? % 20;
        self.cov.ops += 1;
        let cov = &mut self.cov;
        match op {
            0 => self.slab.insert(false, cov),
            1 => self.slab.insert(true, cov),
            2 => self.slab.remove(input.byte()?, false, cov),
            3 => self.slab.remove(input.byte()?, true, cov),
            4 => self.slab.stale(input.byte()?, cov),
            5 => {
                let (s, g) = (input.byte()?, input.byte()?);
                self.slab.probe(s, g, cov);
            }
            6 => self.slab.overwrite(input.byte()?),
            7 => self.slab.check_iter(),
            _ => {
                let (queue_cap, user_cap) = (self.queue_cap, self.user_cap);
                let layer =
                    self.reactor.get_or_insert_with(|| ReactorLayer::new(queue_cap, user_cap));
                layer.step(op, input, &mut self.cov)?;
                layer.check_registrations();
                return Some(());
            }
        }
        self.slab.check();
        Some(())
    }
}

// ---------------------------------------------------------------------
// Layer 1: the slab against its model.
// ---------------------------------------------------------------------

/// A `GenSlab<u64>` and its plain model.
struct SlabModel {
    slab: GenSlab<u64>,
    /// Live tokens and their values, in insertion order.
    live: Vec<(Token, u64)>,
    /// Every token removed so far.
    removed: Vec<Token>,
    /// Every token issued so far.
    issued: HashSet<Token>,
    /// Freed slots, most recent last: the next insert takes the last.
    free: Vec<u32>,
    /// Slots the slab has made so far.
    slots: u32,
    /// Which live token holds each occupied slot.
    occupant: HashMap<u32, Token>,
    /// The last value stored: every value is new, so a lookup that finds
    /// another entry's value cannot pass.
    next_value: u64,
}

impl SlabModel {
    /// An empty slab, and its model.
    fn new() -> SlabModel {
        SlabModel {
            slab: GenSlab::new(),
            live: Vec::new(),
            removed: Vec::new(),
            issued: HashSet::new(),
            free: Vec::new(),
            slots: 0,
            occupant: HashMap::new(),
            next_value: 0,
        }
    }

    /// A value never stored before.
    fn fresh_value(&mut self) -> u64 {
        self.next_value += 1;
        self.next_value
    }

    /// Op 0 (`insert`) or 1 (`insert_mut`).
    fn insert(&mut self, through_mut: bool, cov: &mut Coverage) {
        let value = self.fresh_value();
        let token = if through_mut {
            let changed = self.fresh_value();
            let (token, lent) = self.slab.insert_mut(value).expect("a slot for a small slab");
            assert_eq!(*lent, value, "insert_mut lent another value");
            *lent = changed;
            self.live.push((token, changed));
            token
        } else {
            let token = self.slab.insert(value).expect("a slot for a small slab");
            self.live.push((token, value));
            token
        };
        let want = match self.free.pop() {
            Some(slot) => {
                cov.slab_reused_slots += 1;
                slot
            }
            None => {
                self.slots += 1;
                self.slots - 1
            }
        };
        assert_eq!(token.slot(), want, "an insert took slot {}, not {want} (LIFO)", token.slot());
        assert!(!token.is_reserved(), "an insert issued reserved token {token:?}");
        assert!(self.issued.insert(token), "token {token:?} was issued twice");
        self.occupant.insert(token.slot(), token);
    }

    /// Op 2 (`remove`) or 3 (`discard`) of live token `k`; a second
    /// removal finds nothing.
    fn remove(&mut self, k: u8, discard: bool, cov: &mut Coverage) {
        if self.live.is_empty() {
            return;
        }
        let (token, value) = self.live.remove(usize::from(k) % self.live.len());
        if discard {
            assert!(self.slab.discard(token), "discard of live {token:?} found nothing");
            assert!(!self.slab.discard(token), "a second discard of {token:?} found something");
            cov.discards += 1;
        } else {
            assert_eq!(self.slab.remove(token), Some(value), "remove of live {token:?}");
            assert_eq!(self.slab.remove(token), None, "a second remove of {token:?}");
        }
        self.free.push(token.slot());
        self.occupant.remove(&token.slot());
        self.removed.push(token);
    }

    /// Op 4: removed token `k` finds nothing.
    fn stale(&mut self, k: u8, cov: &mut Coverage) {
        if self.removed.is_empty() {
            return;
        }
        let token = self.removed[usize::from(k) % self.removed.len()];
        self.expect_nothing(token, "removed");
        if self.occupant.contains_key(&token.slot()) {
            cov.stale_after_reuse += 1;
        } else {
            cov.stale_vacant += 1;
        }
    }

    /// Op 5: any token, as the model classifies it.
    fn probe(&mut self, s: u8, g: u8, cov: &mut Coverage) {
        let slot = u32::from(s) % (self.slots + 2);
        let token = Token::from_u64((u64::from(g) << 32) | u64::from(slot));
        if let Some(&(_, value)) = self.live.iter().find(|(t, _)| *t == token) {
            assert_eq!(self.slab.get(token), Some(&value), "get of live {token:?}");
            assert_eq!(self.slab.get_mut(token).copied(), Some(value), "get_mut of live {token:?}");
        } else if self.issued.contains(&token) {
            self.expect_nothing(token, "removed");
            if self.occupant.contains_key(&slot) {
                cov.stale_after_reuse += 1;
            } else {
                cov.stale_vacant += 1;
            }
        } else {
            self.expect_nothing(token, "never-issued");
            cov.never_issued += 1;
        }
    }

    /// `token` is not live: no call may find, remove or discard anything.
    fn expect_nothing(&mut self, token: Token, what: &str) {
        let now = self.occupant.get(&token.slot());
        assert_eq!(self.slab.get(token), None, "get of {what} {token:?} (slot now {now:?})");
        assert_eq!(
            self.slab.get_mut(token),
            None,
            "get_mut of {what} {token:?} (slot now {now:?})"
        );
        assert_eq!(self.slab.remove(token), None, "remove of {what} {token:?} (slot now {now:?})");
        assert!(!self.slab.discard(token), "discard of {what} {token:?} (slot now {now:?})");
    }

    /// Op 6: a value changed through `get_mut` stays changed.
    fn overwrite(&mut self, k: u8) {
        if self.live.is_empty() {
            return;
        }
        let i = usize::from(k) % self.live.len();
        let value = self.fresh_value();
        let token = self.live[i].0;
        let entry = self.slab.get_mut(token).expect("get_mut of a live token");
        assert_eq!(*entry, self.live[i].1, "get_mut of live {token:?}");
        *entry = value;
        self.live[i].1 = value;
    }

    /// Op 7: `iter` yields exactly the live tokens, in slot order.
    fn check_iter(&self) {
        let mut got: Vec<(Token, u64)> = self.slab.iter().map(|(t, v)| (t, *v)).collect();
        let mut want = self.live.clone();
        assert!(got.windows(2).all(|w| w[0].0.slot() < w[1].0.slot()), "iter out of slot order");
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "iter disagrees with the live tokens");
    }

    /// After every slab step: live tokens find their values, removed ones
    /// nothing.
    fn check(&self) {
        assert_eq!(self.slab.len(), self.live.len(), "len");
        for &(token, value) in &self.live {
            assert_eq!(self.slab.get(token), Some(&value), "get of live {token:?}");
        }
        for &token in &self.removed {
            let now = self.occupant.get(&token.slot());
            assert_eq!(self.slab.get(token), None, "get of removed {token:?} (slot now {now:?})");
        }
    }
}

// ---------------------------------------------------------------------
// Layer 2: the reactor's registrations, through its public API.
// ---------------------------------------------------------------------

/// An operation op 11 submits, as the model remembers it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `Op::nop`.
    Nop,
    /// `Op::timeout` of this long.
    Timeout(Duration),
    /// `Op::recv` on the ops socket.
    Recv,
    /// `Op::send` of this many bytes on the ops socket.
    Send(usize),
    /// A one-shot poll: its success folds into the signal packet and ends
    /// it silently, so the model cannot know when it is over.
    Poll,
}

impl Kind {
    /// The tag its completion carries.
    fn tag(self) -> OpTag {
        match self {
            Kind::Nop => OpTag::Nop,
            Kind::Timeout(_) => OpTag::Timeout,
            Kind::Recv => OpTag::Recv,
            Kind::Send(_) => OpTag::Send,
            Kind::Poll => OpTag::Poll,
        }
    }

    /// Whether it completes soon without outside help.
    fn completes_soon(self) -> bool {
        match self {
            Kind::Nop => true,
            Kind::Timeout(d) => d <= Duration::from_millis(1),
            _ => false,
        }
    }
}

/// A waker that counts its wakes.
#[derive(Default)]
struct WakeCount(AtomicUsize);

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A live registration and what it has issued.
struct RegModel {
    /// The registration itself.
    reg: Registration,
    /// Which registration of the run this is, for messages.
    serial: u32,
    /// The trigger its signal packets report.
    trigger: Signals,
    /// The fd socket it watches (`register_fd`).
    fd: Option<usize>,
    /// Ops issued and not yet seen end (polls excepted).
    ops: Vec<(OpId, Kind)>,
    /// Polls issued, which may end without a packet.
    polls: Vec<OpId>,
    /// Its handles, made at its first raise and send.
    signaler: Option<Signaler>,
    sender: Option<Sender>,
    /// The bits and the total count raised since the last drain.
    raised_bits: Signals,
    raised_count: u32,
    /// Whether readiness edges may fold into its signal (a poll or a
    /// watched fd).
    edges: bool,
    /// Sent since the last drain, oldest first.
    user_pending: VecDeque<[u8; 32]>,
    /// The sequence number of its next user packet.
    user_seq: u32,
    /// Whether anything was ever addressed to it (an op, a raise, a send, a
    /// watched fd): only then may it be woken.
    addressed: bool,
    /// The waker op 17 polls it with.
    wakes: Arc<WakeCount>,
}

/// The handles of a dropped registration.
struct Dead {
    /// Its token, and which registration of the run it was.
    token: Token,
    serial: u32,
    /// The handles it had made.
    signaler: Option<Signaler>,
    sender: Option<Sender>,
}

/// Who issued an op id.
#[derive(Clone, Copy)]
struct Issued {
    /// The op id.
    id: OpId,
    /// The issuing registration: which of the run, and its token.
    serial: u32,
    reg: Token,
}

/// The reactor, its registration places and their models, and the
/// sockets the ops run on.
struct ReactorLayer {
    reactor: Reactor,
    /// The `user_cap` it was built with.
    user_cap: usize,
    /// The registration places.
    regs: Vec<Option<RegModel>>,
    /// The last few dropped registrations that had handles.
    dead: VecDeque<Dead>,
    /// Every registration token issued, and those dropped.
    reg_tokens: HashSet<Token>,
    dropped: Vec<Token>,
    /// Every op id issued, in order, and the slots op ids have used.
    issued: Vec<Issued>,
    op_ids: HashSet<OpId>,
    op_slots: HashSet<u32>,
    /// The serial of the last registration made.
    next_serial: u32,
    // The sockets go last: the reactor (torn down when its last handle,
    // in `regs`, drops) must let go of every op before their fds close.
    /// Our end of the socket ops run on, and the peer's.
    ours: UnixStream,
    peer: UnixStream,
    /// The sockets `register_fd` watches: ours, the peer's.
    fd_socks: Vec<(UnixStream, UnixStream)>,
}

/// A non-blocking socketpair.
fn socketpair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (a, b)
}

/// Reads `s` until it would block.
fn read_empty(mut s: &UnixStream) {
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("a read failed: {e}"),
        }
    }
}

/// Writes what `s` takes of `bytes`.
fn write_some(mut s: &UnixStream, bytes: &[u8]) {
    match s.write(bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => panic!("a write failed: {e}"),
    }
}

impl ReactorLayer {
    /// A reactor with these caps, no registration yet, and fresh sockets.
    fn new(queue_cap: usize, user_cap: usize) -> ReactorLayer {
        let reactor =
            Reactor::builder().queue_cap(queue_cap).user_cap(user_cap).build().expect("reactor");
        let (ours, peer) = socketpair();
        ReactorLayer {
            reactor,
            user_cap,
            regs: (0..REGS).map(|_| None).collect(),
            dead: VecDeque::new(),
            reg_tokens: HashSet::new(),
            dropped: Vec::new(),
            issued: Vec::new(),
            op_ids: HashSet::new(),
            op_slots: HashSet::new(),
            next_serial: 0,
            ours,
            peer,
            fd_socks: (0..FD_SOCKETS).map(|_| socketpair()).collect(),
        }
    }

    /// Runs reactor operation `op` (8 to 19); `None` once the input runs
    /// out.
    fn step(&mut self, op: u8, input: &mut Input<'_>, cov: &mut Coverage) -> Option<()> {
        match op {
            8 => {
                let (r, t) = (input.reg()?, input.byte()?);
                self.drop_reg(r, cov);
                let trigger = match t % 3 {
                    0 => Signals::ALL,
                    1 => Signals::user(u32::from(t / 3 % 8)),
                    _ => Signals::READABLE | Signals::user(u32::from(t / 3 % 8)),
                };
                let reg = self.reactor.register_with(trigger);
                self.adopt(r, reg, trigger, None, cov);
            }
            9 => {
                let (r, f) = (input.reg()?, usize::from(input.byte()?) % FD_SOCKETS);
                self.drop_reg(r, cov);
                self.register_fd(r, f, cov);
            }
            10 => {
                let r = input.reg()?;
                self.drop_reg(r, cov);
            }
            11 => {
                let (r, o) = (input.reg()?, input.byte()?);
                self.submit(r, o, cov);
            }
            12 => {
                let (r, k) = (input.reg()?, input.byte()?);
                if k < 128 {
                    self.cancel_own(r, usize::from(k), cov);
                } else {
                    self.refuse_foreign(r, usize::from(k - 128), cov);
                }
            }
            13 => {
                let (r, b) = (input.reg()?, input.byte()?);
                self.raise(r, b, cov);
            }
            14 => {
                let r = input.reg()?;
                self.send(r, cov);
            }
            15 => {
                let k = usize::from(input.byte()?);
                self.dead_handles(k, cov);
            }
            16 => {
                let r = input.reg()?;
                self.drain(r, cov);
            }
            17 => {
                let r = input.reg()?;
                self.poll(r, cov);
            }
            18 => {
                let t = input.byte()?;
                let timeout = if t % 2 == 0 { Duration::ZERO } else { Duration::from_micros(200) };
                self.turn(timeout);
            }
            _ => {
                let w = input.byte()?;
                let n = 1 + usize::from(w / 4 % 16);
                let f = usize::from(w / 4) % FD_SOCKETS;
                match w % 4 {
                    0 => write_some(&self.peer, &[0xa5; 16][..n]),
                    1 => read_empty(&self.peer),
                    2 => write_some(&self.fd_socks[f].1, b"!"),
                    _ => read_empty(&self.fd_socks[f].0),
                }
            }
        }
        Some(())
    }

    /// After every reactor step: the reactor counts the live registrations.
    fn check_registrations(&self) {
        let live = self.regs.iter().flatten().count();
        assert_eq!(self.reactor.metrics().registrations, live, "registrations in the metrics");
    }

    /// Takes `reg` into place `r`, checking its token is new.
    fn adopt(
        &mut self,
        r: usize,
        reg: Registration,
        trigger: Signals,
        fd: Option<usize>,
        cov: &mut Coverage,
    ) {
        let token = reg.token();
        assert!(!token.is_reserved(), "registration token {token:?} is reserved");
        assert!(self.reg_tokens.insert(token), "registration token {token:?} issued twice");
        if self.dropped.iter().any(|t| t.slot() == token.slot()) {
            cov.reused_reg_slots += 1;
        }
        cov.registrations += 1;
        self.next_serial += 1;
        self.regs[r] = Some(RegModel {
            reg,
            serial: self.next_serial,
            trigger,
            fd,
            ops: Vec::new(),
            polls: Vec::new(),
            signaler: None,
            sender: None,
            raised_bits: Signals::NONE,
            raised_count: 0,
            edges: fd.is_some(),
            user_pending: VecDeque::new(),
            user_seq: 0,
            addressed: fd.is_some(),
            wakes: Arc::default(),
        });
    }

    /// Place `r`'s registration, made with `register()` if the place is
    /// empty.
    fn live(&mut self, r: usize, cov: &mut Coverage) -> &mut RegModel {
        if self.regs[r].is_none() {
            let reg = self.reactor.register();
            self.adopt(r, reg, Signals::ALL, None, cov);
        }
        self.regs[r].as_mut().expect("just registered")
    }

    /// Op 9: place `r` (empty) watches fd socket `f`, unless another
    /// registration does.
    fn register_fd(&mut self, r: usize, f: usize, cov: &mut Coverage) {
        let watcher = self.regs.iter().flatten().find(|m| m.fd == Some(f)).map(|m| m.serial);
        let fd = self.fd_socks[f].0.as_raw_fd();
        match (self.reactor.register_fd(fd, Signals::READABLE), watcher) {
            (Ok(reg), None) => self.adopt(r, reg, Signals::READABLE, Some(f), cov),
            (Err(e), Some(_)) if e.kind() == ErrorKind::AlreadyExists => cov.fd_conflicts += 1,
            (Ok(reg), Some(w)) => {
                panic!("register_fd of socket {f}, watched by registration #{w}, gave {reg:?}")
            }
            (Err(e), w) => panic!("register_fd of socket {f} (watched by {w:?}) failed: {e}"),
        }
    }

    /// Drops place `r`'s registration, keeping its handles for op 15.
    fn drop_reg(&mut self, r: usize, cov: &mut Coverage) {
        let Some(m) = self.regs[r].take() else { return };
        if !m.ops.is_empty() {
            cov.dropped_busy += 1;
        }
        let token = m.reg.token();
        drop(m.reg);
        self.dropped.push(token);
        if m.signaler.is_some() || m.sender.is_some() {
            if self.dead.len() == DEAD_KEPT {
                self.dead.pop_front();
            }
            let (signaler, sender) = (m.signaler, m.sender);
            self.dead.push_back(Dead { token, serial: m.serial, signaler, sender });
        }
    }

    /// Op 11: `r` submits operation `o % 8`; its op id is new.
    fn submit(&mut self, r: usize, o: u8, cov: &mut Coverage) {
        let fd = self.ours.as_raw_fd();
        let (kind, op) = match o % 8 {
            0 => (Kind::Nop, Op::nop()),
            o @ 1..=4 => {
                let d = TIMEOUTS[usize::from(o) - 1];
                (Kind::Timeout(d), Op::timeout(d))
            }
            5 => (Kind::Recv, Op::recv(fd, Vec::with_capacity(16), 0)),
            6 => (Kind::Send(16), Op::send(fd, vec![0x5a; 16], 0)),
            _ => (Kind::Poll, Op::poll(fd, Signals::READABLE)),
        };
        let m = self.live(r, cov);
        let id = m.reg.submit(op).expect("submit");
        m.addressed = true;
        if kind == Kind::Poll {
            m.polls.push(id);
            m.edges = true;
        } else {
            m.ops.push((id, kind));
        }
        let (serial, reg) = (m.serial, m.reg.token());
        assert!(self.op_ids.insert(id), "op id {id:?} issued twice");
        if !self.op_slots.insert(id.slot()) {
            cov.reused_op_slots += 1;
        }
        self.issued.push(Issued { id, serial, reg });
    }

    /// Cancels `r`'s live op `k` (its ops, then its polls).
    fn cancel_own(&mut self, r: usize, k: usize, cov: &mut Coverage) {
        let Some(m) = self.regs[r].as_mut() else { return };
        let all = m.ops.len() + m.polls.len();
        if all == 0 {
            return;
        }
        let k = k % all;
        let (id, kind) =
            if k < m.ops.len() { m.ops[k] } else { (m.polls[k - m.ops.len()], Kind::Poll) };
        let answer = m.reg.cancel(id);
        let (list, finished) = match answer {
            // A poll may have ended silently, folded into the signal.
            Cancel::NotFound if kind == Kind::Poll => (PacketList::new(), true),
            Cancel::NotFound => panic!("cancel of live {kind:?} op {id:?}: NotFound"),
            Cancel::Cancelled(list) => {
                cov.cancels += 1;
                (list, false)
            }
            Cancel::AlreadyCompleted(list) => (list, true),
        };
        self.handle(r, list, Some(id), cov);
        let m = self.regs[r].as_mut().expect("still live");
        let pos = m.ops.iter().position(|&(o, _)| o == id);
        assert!(
            !(finished && pos.is_some()),
            "cancel of finished {kind:?} op {id:?} held no final completion"
        );
        // The op is over for us: no packet of it may come after this.
        if let Some(pos) = pos {
            m.ops.remove(pos);
        }
        m.polls.retain(|&p| p != id);
        assert_eq!(m.reg.reclaim(id), None, "a cancelled op's buffer came back");
    }

    /// `r` cancels and reclaims op id `k` of the run's, which it does not
    /// own (any more): both must find nothing.
    fn refuse_foreign(&mut self, r: usize, k: usize, cov: &mut Coverage) {
        let Some(m) = self.regs[r].as_ref() else { return };
        if self.issued.is_empty() {
            return;
        }
        let Issued { id, serial, reg } = self.issued[k % self.issued.len()];
        if m.ops.iter().any(|&(o, _)| o == id) || m.polls.contains(&id) {
            return;
        }
        let whose = self.whose(id, serial, reg);
        match m.reg.cancel(id) {
            Cancel::NotFound => {}
            other => panic!("registration #{} cancelled op {id:?} ({whose}): {other:?}", m.serial),
        }
        assert_eq!(m.reg.reclaim(id), None, "registration #{} reclaimed {whose}", m.serial);
        cov.foreign_ops_refused += 1;
    }

    /// Describes op `id` for a message.
    fn whose(&self, id: OpId, serial: u32, reg: Token) -> String {
        let state = if self.dropped.contains(&reg) {
            "dropped"
        } else if self.regs.iter().flatten().any(|m| m.serial == serial) {
            "live"
        } else {
            "unknown"
        };
        format!("op {id:?} of {state} registration #{serial} {reg:?}")
    }

    /// Op 13.
    fn raise(&mut self, r: usize, b: u8, cov: &mut Coverage) {
        let m = self.live(r, cov);
        let bits = Signals::user(u32::from(b % 8));
        let n = 1 + u32::from(b / 8 % 3);
        let signaler = m.signaler.get_or_insert_with(|| m.reg.signaler());
        assert_eq!(signaler.token(), m.reg.token(), "a signaler for another registration");
        let raised = signaler.raise(bits, n).expect("a raise on a live registration");
        assert!(
            m.raised_count != 0 || raised == Raised::Woke,
            "the first raise since a drain did not report Woke"
        );
        m.raised_bits |= bits;
        m.raised_count += n;
        m.addressed = true;
    }

    /// Op 14: refused with `WouldBlock` at `user_cap` undrained.
    fn send(&mut self, r: usize, cov: &mut Coverage) {
        let user_cap = self.user_cap;
        let m = self.live(r, cov);
        let mut payload = [0xc3; 32];
        payload[..4].copy_from_slice(&m.serial.to_le_bytes());
        payload[4..8].copy_from_slice(&m.user_seq.to_le_bytes());
        let sender = m.sender.get_or_insert_with(|| m.reg.sender());
        assert_eq!(sender.token(), m.reg.token(), "a sender for another registration");
        let sent = sender.send(payload);
        if m.user_pending.len() >= user_cap {
            let e = sent.expect_err("a send past user_cap");
            assert_eq!(e.kind(), ErrorKind::WouldBlock, "a send past user_cap: {e}");
            cov.user_queue_full += 1;
        } else {
            sent.expect("a send on a live registration");
            m.user_pending.push_back(payload);
            m.user_seq += 1;
        }
        m.addressed = true;
    }

    /// Op 15: dropped registration `k`'s handles fail with `BrokenPipe`.
    fn dead_handles(&mut self, k: usize, cov: &mut Coverage) {
        if self.dead.is_empty() {
            return;
        }
        let d = &self.dead[k % self.dead.len()];
        if let Some(s) = &d.signaler {
            assert_eq!(s.token(), d.token, "a dead signaler's token changed");
            let e = s.raise(Signals::user(7), 1).expect_err("a raise for a dropped registration");
            assert_eq!(e.kind(), ErrorKind::BrokenPipe, "dropped #{}'s signaler: {e}", d.serial);
        }
        if let Some(s) = &d.sender {
            assert_eq!(s.token(), d.token, "a dead sender's token changed");
            let e = s.send([0xee; 32]).expect_err("a send to a dropped registration");
            assert_eq!(e.kind(), ErrorKind::BrokenPipe, "dropped #{}'s sender: {e}", d.serial);
        }
        cov.dead_handles_refused += 1;
        if self.regs.iter().flatten().any(|m| m.reg.token().slot() == d.token.slot()) {
            cov.dead_handles_after_reuse += 1;
        }
    }

    /// Op 16.
    fn drain(&mut self, r: usize, cov: &mut Coverage) {
        let Some(m) = self.regs[r].as_ref() else { return };
        let list = m.reg.try_drain();
        self.handle(r, list, None, cov);
    }

    /// Op 17: `Pending` only when nothing raised or sent is undrained.
    fn poll(&mut self, r: usize, cov: &mut Coverage) {
        let Some(m) = self.regs[r].as_ref() else { return };
        let waker = Waker::from(m.wakes.clone());
        match m.reg.poll_packets(&mut Context::from_waker(&waker)) {
            Poll::Ready(list) => self.handle(r, list, None, cov),
            Poll::Pending => {
                assert!(
                    m.raised_count == 0 && m.user_pending.is_empty(),
                    "registration #{} is Pending with raises or sends undrained",
                    m.serial
                );
            }
        }
    }

    /// One turn; then no registration nothing was addressed to was woken.
    fn turn(&mut self, timeout: Duration) {
        self.reactor.turn(Some(timeout)).expect("turn");
        for m in self.regs.iter().flatten() {
            let wakes = m.wakes.0.load(Ordering::Relaxed);
            assert!(
                m.addressed || wakes == 0,
                "registration #{} {:?}, to which nothing was ever addressed, was woken {wakes} times \
                 (by an event of a predecessor in its slot?)",
                m.serial,
                m.reg.token()
            );
        }
    }

    /// Checks the packets `list` delivered to registration `r`: a drain's
    /// (`only` is `None`), or a cancel's of op `only`.
    fn handle(&mut self, r: usize, list: PacketList, only: Option<OpId>, cov: &mut Coverage) {
        let mut signalled = false;
        for packet in list.iter() {
            let m = self.regs[r].as_ref().expect("a draining registration");
            let token = m.reg.token();
            if packet.key() != token {
                let dropped = self.dropped.contains(&packet.key());
                panic!(
                    "registration #{} {token:?} drained a packet keyed {:?} (a dropped \
                     registration's: {dropped}): {packet:?}",
                    m.serial,
                    packet.key()
                );
            }
            match packet.kind() {
                PacketKind::Completion(c) => {
                    if let Some(op) = only {
                        assert_eq!(c.op(), op, "a cancel handed back another op's completion");
                    }
                    self.completion(r, c, cov);
                }
                PacketKind::Signal(s) if only.is_none() => {
                    assert!(!signalled, "two signal packets in one drain");
                    signalled = true;
                    self.signal(r, s, cov);
                }
                PacketKind::User(p) if only.is_none() => {
                    let m = self.regs[r].as_mut().expect("live");
                    let want = m.user_pending.pop_front();
                    assert_eq!(Some(p), want, "registration #{} drained a user packet", m.serial);
                    cov.user_packets += 1;
                }
                _ => panic!("an unexpected packet: {packet:?} (a cancel's: {only:?})"),
            }
        }
        let m = self.regs[r].as_ref().expect("live");
        if only.is_none() {
            // A drain hands over everything raised and sent.
            assert!(m.raised_count == 0, "registration #{}: a raise was not delivered", m.serial);
            assert!(m.user_pending.is_empty(), "registration #{}: sends not delivered", m.serial);
        }
    }

    /// Checks completion `c`, drained by `r`, against the op it names.
    fn completion(&mut self, r: usize, c: CompletionPacket, cov: &mut Coverage) {
        cov.completions += 1;
        let m = self.regs[r].as_mut().expect("live");
        let id = c.op();
        if let Some(pos) = m.ops.iter().position(|&(o, _)| o == id) {
            let kind = m.ops[pos].1;
            assert_eq!(c.tag(), kind.tag(), "a {kind:?} op's completion: {c:?}");
            assert!(!c.more(), "a one-shot {kind:?} op's completion says more: {c:?}");
            match kind {
                Kind::Nop => assert_eq!(c.result, 0, "a nop's result"),
                Kind::Timeout(_) => assert_eq!(c.result, -ETIME, "a timeout's result"),
                Kind::Recv | Kind::Send(_) => {
                    let buf = m.reg.reclaim(id).expect("a finished op's buffer");
                    assert_eq!(m.reg.reclaim(id), None, "a buffer reclaimed twice");
                    if let Kind::Send(n) = kind {
                        assert_eq!(buf.len(), n, "a send's buffer came back changed");
                        assert!(c.result <= n as i32, "a send sent more than it had");
                    } else {
                        assert!(buf.len() == c.result.max(0) as usize, "a recv's buffer length");
                    }
                }
                Kind::Poll => unreachable!("polls are kept apart"),
            }
            m.ops.remove(pos);
        } else if let Some(pos) = m.polls.iter().position(|&o| o == id) {
            assert_eq!(c.tag(), OpTag::Poll, "a poll's completion: {c:?}");
            // A poll that saw readiness folds it into the signal packet.
            assert!(c.result < 0, "a poll's success came as a completion: {c:?}");
            m.polls.remove(pos);
        } else {
            let serial = m.serial;
            let whose = match self.issued.iter().find(|i| i.id == id) {
                Some(i) => self.whose(id, i.serial, i.reg),
                None => format!("op {id:?}, never issued"),
            };
            panic!("registration #{serial} drained a completion of {whose}, not live here: {c:?}");
        }
    }

    /// Checks signal packet `s`, drained by `r`, against what `r` raised.
    fn signal(&mut self, r: usize, s: SignalPacket, cov: &mut Coverage) {
        cov.signals += 1;
        let m = self.regs[r].as_mut().expect("live");
        assert_eq!(s.trigger, m.trigger, "registration #{}'s signal trigger", m.serial);
        let user = Signals::from_bits(s.observed.bits() & Signals::USER_ALL.bits());
        let readiness = s.observed.bits() & !Signals::USER_ALL.bits();
        assert_eq!(user, m.raised_bits, "registration #{}'s raised bits: {s:?}", m.serial);
        let count = s.count.get();
        if m.edges {
            assert!(count >= m.raised_count, "registration #{}'s count: {s:?}", m.serial);
        } else {
            assert_eq!(readiness, 0, "registration #{} has no poll: {s:?}", m.serial);
            assert_eq!(count, m.raised_count, "registration #{}'s count: {s:?}", m.serial);
        }
        assert!(count > 0 || !s.observed.is_empty(), "an empty signal packet");
        m.raised_bits = Signals::NONE;
        m.raised_count = 0;
    }

    /// Lets the short ops complete, drains everything, drops everything,
    /// and checks nothing is left.
    fn finish(mut self, cov: &mut Coverage) {
        let start = Instant::now();
        loop {
            let pending = self
                .regs
                .iter()
                .flatten()
                .any(|m| m.ops.iter().any(|&(_, kind)| kind.completes_soon()));
            if !pending {
                break;
            }
            assert!(start.elapsed() < SETTLE, "short ops never completed");
            self.turn(Duration::from_millis(1));
            for r in 0..REGS {
                self.drain(r, cov);
            }
        }
        for r in 0..REGS {
            self.drain(r, cov);
            self.drop_reg(r, cov);
        }
        self.dead.clear();
        let start = Instant::now();
        while self.reactor.metrics().ops_in_flight != 0 {
            assert!(start.elapsed() < SETTLE, "ops still in flight: {:?}", self.reactor.metrics());
            self.reactor.turn(Some(Duration::from_millis(1))).expect("turn");
        }
        let metrics = self.reactor.metrics();
        assert_eq!(metrics.registrations, 0, "registrations left");
        cov.stale_notifications += metrics.stale_notifications;
        cov.reclaimed += metrics.reclaimed;
    }
}
