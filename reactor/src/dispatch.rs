//! The reactor's core: the state behind the `RefCell`, submission, and
//! completion dispatch. Registrations and operations live in two
//! generational slabs; an operation's slot owns its resources from
//! submission to its final completion. Nothing here calls user code: wakers
//! are collected and called by `Reactor::turn` once the borrow is released.
//!
//! Cancellation, deregistration and shutdown live in `teardown.rs`.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tally_packets::{
    BufferRef, CompletionPacket, Count, CountedSignal, OpTag, Packet, PacketList, PacketQueue,
    Signals, Token,
};

use crate::metrics::Counters;
use crate::op::{Op, OpId, OpKind};
use crate::reactor::{Config, WAKE_TOKEN};
use crate::remote::{Remote, Shared};
use crate::slab::GenSlab;
use crate::sys::{Cqe, Driver};
use crate::syscall;
use crate::teardown::{Lent, free_lent, lend, reclaim};

/// The longest back-off before re-arming a failed wake read: 2^6 = 64 ms.
const WAKE_BACKOFF_MAX_SHIFT: u32 = 6;

pub(crate) struct Core {
    pub(crate) driver: Driver,
    pub(crate) regs: GenSlab<RegSlot>,
    pub(crate) ops: GenSlab<OpSlot>,
    remote: Arc<Remote>,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    /// Scratch for reaping; keeps its allocation.
    cqes: Vec<Cqe>,
    /// Scratch for the remote queue; swapped with it each crank.
    remote_tokens: Vec<Token>,
    /// Wakers to call once the borrow is released.
    pub(crate) wakers: Vec<Waker>,
    /// Registrations woken this crank, checked for drains at the next.
    woken: Vec<Token>,
    /// Multishot operations waiting to be re-armed.
    paused: Vec<OpId>,
    /// Which registration watches each fd (for `register_fd`), by fd number.
    pub(crate) fd_owner: Vec<Option<Token>>,
    /// The read on the remote eventfd; its 8-byte buffer lives here.
    pub(crate) wake_op: OpKind,
    pub(crate) wake_armed: bool,
    /// Wake reads that failed in a row, and when to arm the next one after
    /// a failure (never at once: a read that fails every time would spin).
    wake_failures: u32,
    pub(crate) wake_retry_at: Option<Instant>,
    /// Whether operations were submitted or re-armed since the last enter:
    /// then the next turn does not spin before blocking, since the enter
    /// itself may complete them at once.
    pub(crate) fresh_submissions: bool,
}

/// One registration's reactor-side state.
pub(crate) struct RegSlot {
    /// Completion packets waiting for a drain, oldest first, at most
    /// `queue_cap` of them. Signals (readiness edges, remote raises) do not
    /// queue: they fold into `local_signal` and the shared counted signal
    /// and become one packet at drain time; user packets wait in `shared`.
    pub(crate) queue: PacketQueue,
    /// Completions the full queue refused. Nothing is lost: they are kept
    /// here, and the data-bearing multishot op that produced them pauses
    /// until the next drain (back pressure). Empty in steady state.
    pub(crate) overflow: Vec<Packet>,
    pub(crate) waker: Option<Waker>,
    pub(crate) trigger: Signals,
    /// Readiness edges folded in on this thread, packed as a CountedSignal.
    pub(crate) local_signal: u64,
    pub(crate) shared: Option<Arc<Shared>>,
    /// Operations this registration owns (in flight, paused, done, or
    /// cancelled by hand and awaiting their final completion). Each op's
    /// `reg_index` is its position here.
    pub(crate) ops: Vec<OpId>,
    pub(crate) fd: Option<RawFd>,
    /// What the last drain handed over in its packets (accepted fds,
    /// provided buffers) and nobody has taken yet: freed at the next drain,
    /// or when the registration drops.
    pub(crate) lent: Vec<Lent>,
    /// Provided buffers delivered to this registration and not yet handed
    /// back; at `buf_cap` its data-bearing multishot ops pause.
    pub(crate) bufs_held: u32,
    /// Whether a packet queued since the last drain may carry an fd or a
    /// buffer: only then does the drain look for what to lend.
    pub(crate) may_lend: bool,
}

/// An operation's life: submitted and in flight, then done (holding
/// resources for `reclaim`) or finished; or cancelled, holding its resources
/// until the kernel's final completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpState {
    InFlight,
    /// A multishot op cancelled for back pressure: becomes `Paused`.
    Stopping,
    /// Waiting to be re-armed.
    Paused,
    /// Owner gone or cancel asked: completions are reclaimed, not delivered.
    Cancelled,
    /// A one-shot op finished; its buffer waits for `reclaim`.
    Done(i32),
}

pub(crate) struct OpSlot {
    pub(crate) reg: Token,
    /// Where this op sits in its registration's `ops` list, so that it
    /// leaves the list in O(1) when it finishes.
    pub(crate) reg_index: usize,
    pub(crate) kind: OpKind,
    pub(crate) tag: OpTag,
    pub(crate) state: OpState,
    /// Set when the op is (re)armed, cleared by its first completion.
    pub(crate) armed_fresh: bool,
    /// Multishot poll only: consecutive armings whose first completion was
    /// also their last. A file that cannot wait for readiness (`/dev/null`,
    /// a pseudo-file without poll) answers every arming that way, and so
    /// does a healthy fd while the CQ is full; `watched` asks epoll which.
    pub(crate) instant_ends: u8,
}

impl OpSlot {
    /// What `submit` writes into a fresh slot before filling in the op: a
    /// constant, so that it is stored straight from read-only data.
    const VACANT: OpSlot = OpSlot {
        reg: Token::from_u64(0),
        reg_index: 0,
        kind: OpKind::Nop,
        tag: OpTag::Nop,
        state: OpState::InFlight,
        armed_fresh: true,
        instant_ends: 0,
    };
}

impl OpState {
    pub(crate) fn kernel_holds(self) -> bool {
        matches!(self, OpState::InFlight | OpState::Stopping | OpState::Cancelled)
    }
}

impl Core {
    pub(crate) fn new(
        driver: Driver,
        remote: Arc<Remote>,
        config: Config,
        wake_op: OpKind,
    ) -> Core {
        Core {
            driver,
            regs: GenSlab::new(),
            ops: GenSlab::new(),
            remote,
            config,
            counters: Counters::default(),
            cqes: Vec::new(),
            remote_tokens: Vec::new(),
            wakers: Vec::new(),
            woken: Vec::new(),
            paused: Vec::new(),
            fd_owner: Vec::new(),
            wake_op,
            wake_armed: false,
            wake_failures: 0,
            wake_retry_at: None,
            fresh_submissions: false,
        }
    }

    pub(crate) fn insert_reg(&mut self, trigger: Signals, fd: Option<RawFd>) -> Token {
        let slot = RegSlot {
            queue: PacketQueue::with_cap(self.config.queue_cap),
            overflow: Vec::new(),
            waker: None,
            trigger,
            local_signal: 0,
            shared: None,
            ops: Vec::new(),
            fd,
            lent: Vec::new(),
            bufs_held: 0,
            may_lend: false,
        };
        // 2^32 live registrations cannot fit in memory first.
        self.regs.insert(slot).expect("registration slab exhausted")
    }

    pub(crate) fn arm_wake(&mut self) {
        // SAFETY: `wake_op` lives in the core, which outlives every
        // completion: Drop waits for this read's final completion.
        unsafe { self.driver.submit(WAKE_TOKEN, &mut self.wake_op) };
        self.wake_armed = true;
        self.counters.submissions += 1;
    }

    /// Submits `op` for registration `reg`.
    #[inline]
    pub(crate) fn submit(&mut self, reg: Token, op: Op) -> io::Result<OpId> {
        let Some(slot) = self.regs.get_mut(reg) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the registration is gone"));
        };
        if let Some(group) = op.kind.buf_group() {
            if self.driver.buf_ring(group.0).is_none() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "unknown buffer group"));
            }
        }
        let reg_index = slot.ops.len();
        // The slot is filled in place, field by field. Built whole and moved
        // in, the OpSlot was staged on the stack and copied out with loads
        // wider than the stores that built it, which defeats store-to-load
        // forwarding: about 7% of `turn_cost`'s time per op.
        let Op { kind } = op;
        let Some((token, op)) = self.ops.insert_mut(OpSlot::VACANT) else {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "operation slab exhausted"));
        };
        op.reg = reg;
        op.reg_index = reg_index;
        // The vacant slot's kind is a Nop, which owns nothing: skip its drop.
        std::mem::forget(std::mem::replace(&mut op.kind, kind));
        slot.ops.push(token);
        op.tag = op.kind.tag();
        // SAFETY: the op's resources live in its slab slot until its final
        // completion: deregistration and cancellation only mark it
        // Cancelled, and Drop waits for every op the kernel holds.
        unsafe { self.driver.submit(token, &mut op.kind) };
        self.counters.submissions += 1;
        self.fresh_submissions = true;
        Ok(token)
    }

    fn rearm(&mut self, token: OpId) {
        let Some(op) = self.ops.get_mut(token) else { return };
        // SAFETY: as in `submit`: the op stays in its slot until its final
        // completion.
        unsafe { self.driver.submit(token, &mut op.kind) };
        op.state = OpState::InFlight;
        op.armed_fresh = true;
        self.counters.submissions += 1;
        self.fresh_submissions = true;
    }

    /// The end of the previous crank: count registrations woken then and
    /// still undrained, and re-arm paused multishot ops that have room.
    pub(crate) fn begin_crank(&mut self) {
        if let Some(at) = self.wake_retry_at {
            if Instant::now() >= at {
                self.wake_retry_at = None;
                self.arm_wake();
            }
        }
        // Drained in place: the list keeps its allocation from crank to crank.
        let mut woken = std::mem::take(&mut self.woken);
        for token in woken.drain(..) {
            let Some(reg) = self.regs.get(token) else { continue };
            if reg.waker.is_none() && reg.has_packets() {
                self.counters.undrained += 1;
                debug_assert!(
                    !self.config.assert_drained,
                    "registration {token:?} was woken but not drained in its crank"
                );
            }
        }
        self.woken = woken;
        let mut i = 0;
        while i < self.paused.len() {
            let token = self.paused[i];
            match self.may_rearm(token) {
                Some(true) => {
                    self.paused.swap_remove(i);
                    self.rearm(token);
                }
                Some(false) => i += 1,
                None => {
                    self.paused.swap_remove(i);
                }
            }
        }
    }

    /// `None` if the op is no longer paused; else whether it may re-arm.
    fn may_rearm(&mut self, token: OpId) -> Option<bool> {
        let op = self.ops.get(token).filter(|op| op.state == OpState::Paused)?;
        let reg = self.regs.get(op.reg)?;
        if reg.queue.is_full() || !reg.overflow.is_empty() {
            return Some(false);
        }
        if let Some(group) = op.kind.buf_group() {
            return Some(
                reg.bufs_held < self.config.buf_cap
                    && self.driver.buf_ring(group.0).is_some_and(|r| r.available > 0),
            );
        }
        Some(true)
    }

    pub(crate) fn reap_all(&mut self) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        let mut reaped = 0;
        // The overflow flush is bounded: each round moves completions out of
        // the kernel's list, and a list that refuses to empty is an error we
        // surface through metrics rather than spin on.
        let mut overflow_rounds = 0;
        loop {
            // Copied out first. Dispatching straight from the CQ saves the
            // copy's ~20 instructions per completion, but measured about 3%
            // slower in `turn_cost`, so the copy stays.
            self.driver.reap(&mut cqes);
            if cqes.is_empty() {
                if overflow_rounds < 64 && self.driver.flush_overflow() {
                    overflow_rounds += 1;
                    self.counters.cq_overflows += 1;
                    continue;
                }
                break;
            }
            reaped += cqes.len();
            for cqe in cqes.drain(..) {
                self.dispatch(cqe);
            }
        }
        self.cqes = cqes;
        self.counters.completions += reaped as u64;
        reaped
    }

    /// Folds or queues one completion into its registration, and settles
    /// its op.
    #[inline]
    fn dispatch(&mut self, cqe: Cqe) {
        let token = Token::from_u64(cqe.user_data);
        if token.is_reserved() {
            self.reserved(token, cqe);
            return;
        }
        let more = cqe.more();
        let Some(op) = self.ops.get_mut(token) else {
            self.counters.stale_completions += 1;
            return;
        };
        if !more {
            op.kind.settle(cqe.result);
        }
        let reg_token = op.reg;
        let reg = match op.state {
            OpState::Cancelled => None,
            _ => self.regs.get_mut(reg_token),
        };
        let Some(reg) = reg else {
            self.orphaned(token, cqe);
            return;
        };
        let end = if op.kind.is_multishot() || matches!(op.kind, OpKind::Poll { .. }) {
            let buf_cap = self.config.buf_cap;
            watched(op, reg, token, cqe, &mut self.driver, &mut self.counters, buf_cap)
        } else {
            // A plain one-shot op (nop, read, send, ...): one packet, and
            // it is over. One-shot ops select no provided buffers.
            let c = CompletionPacket::new(token, op.tag, cqe.result).with_more(more);
            reg.may_lend |= Lent::of(&c).is_some();
            if reg.enqueue(Packet::completion(reg_token, c)) {
                // Overflow: kept (nothing is lost).
                self.counters.queue_overflows += 1;
            }
            if more { End::More } else { End::Finished }
        };
        match end {
            End::More => {}
            End::Paused => {
                op.state = OpState::Paused;
                self.paused.push(token);
            }
            End::Finished if op.kind.has_buffer() => op.state = OpState::Done(cqe.result),
            End::Finished => {
                let index = op.reg_index;
                unlink(&mut self.ops, reg, token, index);
                self.ops.discard(token);
            }
        }
        if let Some(waker) = reg.waker.take() {
            self.wakers.push(waker);
            self.woken.push(reg_token);
        }
    }

    /// A completion of the reactor's own: the remote wake-up read, or a
    /// cancel request (ignored).
    #[cold]
    fn reserved(&mut self, token: Token, cqe: Cqe) {
        if token != WAKE_TOKEN {
            return;
        }
        self.wake_armed = false;
        if cqe.result == -libc::ECANCELED {
            // Shutdown cancelled it.
        } else if cqe.result >= 0 {
            self.wake_failures = 0;
            self.arm_wake();
        } else {
            // Re-armed after a back-off that doubles from 1 ms to 64 ms,
            // never at once: a read that fails every time would spin the
            // reactor. Meanwhile a blocking turn waits no longer than the
            // back-off, and drains the remote queue as always, so a remote
            // wake-up is late by at most that, never lost.
            let backoff =
                Duration::from_millis(1 << self.wake_failures.min(WAKE_BACKOFF_MAX_SHIFT));
            self.wake_failures = self.wake_failures.saturating_add(1);
            self.wake_retry_at = Some(Instant::now() + backoff);
        }
    }

    /// A completion of an op that was cancelled (or, defensively, whose
    /// registration is gone): reclaim what it carries, never deliver.
    #[cold]
    fn orphaned(&mut self, token: OpId, cqe: Cqe) {
        let Some(op) = self.ops.get_mut(token) else { return };
        reclaim(&mut self.driver, &op.kind, cqe);
        self.counters.reclaimed += 1;
        if !cqe.more() {
            let (reg, index) = (op.reg, op.reg_index);
            if let Some(r) = self.regs.get_mut(reg) {
                unlink(&mut self.ops, r, token, index);
            }
            self.ops.discard(token);
        }
    }
}

/// Marks the provided buffer a fresh completion names (if it names one) as
/// delivered to registration `reg`, with the completion's length, and
/// describes that delivery for its packet.
#[inline]
fn take_buffer(driver: &mut Driver, group: Option<u16>, cqe: Cqe, reg: Token) -> Option<BufferRef> {
    let (group, id) = (group?, cqe.buffer_id()?);
    let generation = driver.buf_ring(group)?.taken(id, cqe.result, reg.as_u64());
    (generation != 0).then_some(BufferRef { group, id, generation })
}

/// What a delivered completion means for its op.
enum End {
    /// More completions follow.
    More,
    /// One arming of a multishot op ended, not the op: re-arm it later.
    Paused,
    /// The op is over.
    Finished,
}

/// Delivers a completion of a multishot op or a poll, which may fold into
/// the counted signal, pause for back pressure, or be the end of one
/// arming rather than of the op.
fn watched(
    op: &mut OpSlot,
    reg: &mut RegSlot,
    token: OpId,
    cqe: Cqe,
    driver: &mut Driver,
    counters: &mut Counters,
    buf_cap: u32,
) -> End {
    let more = cqe.more();
    let multishot = op.kind.is_multishot();
    let first_since_armed = std::mem::replace(&mut op.armed_fresh, false);
    let mut deliver = true;
    // The error that ends a poll on a file that cannot wait for readiness.
    let mut refused = None;
    if let OpKind::Poll { fd, .. } = op.kind {
        if cqe.result >= 0 {
            let observed = cqe.readiness();
            reg.local_signal = CountedSignal::fold(reg.local_signal, observed, 1);
            deliver = false;
        }
        if multishot && more {
            op.instant_ends = 0;
        } else if multishot && first_since_armed && cqe.result > 0 {
            // The kernel found no wait queue to sleep on, reported the file
            // ready and ended the poll; or it could not post the poll's
            // first completion to a full CQ and ended it the same way.
            // Twice running, ask epoll which: a file that cannot wait
            // would make every re-arming spin the reactor, so its op ends
            // with EPERM, as epoll would have refused the fd.
            op.instant_ends = op.instant_ends.saturating_add(1);
            if op.instant_ends >= 2 {
                op.instant_ends = 0;
                refused = match syscall::waits_for_readiness(fd) {
                    Ok(true) => None,
                    Ok(false) => Some(libc::EPERM),
                    // No fd or memory for the probe: keep watching, and
                    // ask again after the next two.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
                        ) =>
                    {
                        None
                    }
                    Err(e) => Some(e.raw_os_error().unwrap_or(libc::EIO)),
                };
            }
        }
    }
    let buf_group = op.kind.buf_group().map(|g| g.0);
    let buffer = take_buffer(driver, buf_group, cqe, op.reg);
    // A registration at its buffer cap stops its receive (back pressure
    // of its own, on a ring the others share) until it gives some back.
    let mut stop = false;
    if buffer.is_some() {
        reg.bufs_held += 1;
        stop = reg.bufs_held >= buf_cap;
    }
    // The end of one arming of a multishot op (no "more") that is not the
    // end of the op itself: we stopped it for back pressure, or the kernel
    // ran out of provided buffers. Pause it and deliver nothing; it re-arms
    // once the registration is drained and buffers are back.
    let paused_end = multishot
        && !more
        && ((op.state == OpState::Stopping && cqe.result == -libc::ECANCELED)
            || cqe.result == -libc::ENOBUFS);
    if paused_end {
        deliver = false;
    }
    let reg_token = op.reg;
    if deliver {
        let mut c = CompletionPacket::new(token, op.tag, cqe.result).with_more(more);
        if let Some(buffer) = buffer {
            c = c.with_buffer(buffer);
        }
        reg.may_lend |= Lent::of(&c).is_some();
        if reg.enqueue(Packet::completion(reg_token, c)) {
            // Overflow: kept (nothing is lost), and back pressure.
            counters.queue_overflows += 1;
            stop = true;
        }
    }
    if stop && multishot && more && op.state == OpState::InFlight {
        driver.cancel(token);
        op.state = OpState::Stopping;
    }
    if let Some(errno) = refused {
        let c = CompletionPacket::new(token, op.tag, -errno);
        if reg.enqueue(Packet::completion(reg_token, c)) {
            counters.queue_overflows += 1;
        }
    }
    if more {
        return End::More;
    }
    // The kernel also ends an arming that is still healthy (say, it could
    // not post to a full CQ) with a success: re-arm that too. A recv's 0 is
    // end of file, and any other error ends the op.
    let healthy = match op.kind {
        OpKind::RecvMulti { .. } => cqe.result > 0,
        _ => cqe.result >= 0,
    };
    if multishot && refused.is_none() && (paused_end || healthy) {
        End::Paused
    } else {
        End::Finished
    }
}

impl Core {
    pub(crate) fn drain_remote(&mut self) {
        let mut tokens = std::mem::take(&mut self.remote_tokens);
        self.remote.take(&mut tokens);
        for token in tokens.drain(..) {
            match self.regs.get_mut(token) {
                Some(reg) => {
                    if let Some(waker) = reg.waker.take() {
                        self.wakers.push(waker);
                        self.woken.push(token);
                    }
                }
                None => self.counters.stale_notifications += 1,
            }
        }
        self.remote_tokens = tokens;
    }

    /// Moves everything queued for `token` into `out`, lending what its
    /// completions carry until the next drain, and first frees what the
    /// previous drain lent and nobody took. Returns whether anything was
    /// moved.
    pub(crate) fn drain(&mut self, token: Token, out: &mut PacketList) -> bool {
        let Some(reg) = self.regs.get_mut(token) else { return false };
        if !reg.lent.is_empty() {
            let returned = free_lent(&mut self.driver, &mut reg.lent, &mut self.counters.reclaimed);
            reg.bufs_held = reg.bufs_held.saturating_sub(returned);
        }
        let before = out.len();
        let (mut bits, mut count) = CountedSignal::unpack(std::mem::take(&mut reg.local_signal));
        if let Some(shared) = &reg.shared {
            let (b, c) = shared.signal.take();
            bits |= b;
            count = count.saturating_add(c.get());
        }
        if !bits.is_empty() || count != Count::ZERO {
            out.push(Packet::signal(token, reg.trigger, bits, count));
            self.counters.coalesced_raises += u64::from(count.get().saturating_sub(1));
        }
        let completions = out.len();
        reg.queue.drain_into(out);
        out.extend_from_slice(&reg.overflow);
        reg.overflow.clear();
        if std::mem::take(&mut reg.may_lend) {
            lend(&mut reg.lent, &out[completions..]);
        }
        if let Some(shared) = &reg.shared {
            shared.drain_user(|p| out.push(Packet::user(token, p)));
        }
        self.counters.packets += (out.len() - before) as u64;
        out.len() > before
    }

    /// Stores `waker` for `token` unless an equivalent one is stored; the
    /// replaced waker is returned so it drops outside the borrow.
    pub(crate) fn set_waker(&mut self, token: Token, waker: &Waker) -> Option<Waker> {
        let reg = self.regs.get_mut(token)?;
        match &reg.waker {
            Some(w) if w.will_wake(waker) => None,
            _ => reg.waker.replace(waker.clone()),
        }
    }

    /// A buffer delivered to the registration tagged `holder` went back to
    /// the kernel.
    pub(crate) fn buffer_returned(&mut self, holder: u64) {
        if let Some(reg) = self.regs.get_mut(Token::from_u64(holder)) {
            reg.bufs_held = reg.bufs_held.saturating_sub(1);
        }
    }

    pub(crate) fn shared(&mut self, token: Token) -> Option<Arc<Shared>> {
        let user_cap = self.config.user_cap;
        let remote = &self.remote;
        let reg = self.regs.get_mut(token)?;
        Some(
            reg.shared
                .get_or_insert_with(|| Arc::new(Shared::new(token, remote.clone(), user_cap)))
                .clone(),
        )
    }
}

impl RegSlot {
    /// Queues `packet`, or keeps it in the overflow list when the queue is
    /// full. Returns whether it overflowed.
    #[inline]
    fn enqueue(&mut self, packet: Packet) -> bool {
        match self.queue.push(packet) {
            Ok(_) => false,
            Err(packet) => {
                self.overflow.push(packet);
                true
            }
        }
    }

    fn has_packets(&self) -> bool {
        !self.queue.is_empty()
            || !self.overflow.is_empty()
            || self.local_signal != 0
            || self
                .shared
                .as_ref()
                .is_some_and(|s| s.signal.peek() != (Signals::NONE, Count::ZERO) || s.has_user())
    }
}

/// Takes op `token` (at `index`) out of registration `reg`'s list, in O(1):
/// the last op moves into its place and learns its new index.
pub(crate) fn unlink(ops: &mut GenSlab<OpSlot>, reg: &mut RegSlot, token: OpId, index: usize) {
    if reg.ops.get(index) != Some(&token) {
        debug_assert!(false, "op {token:?} is not at {index} in its registration's list");
        return;
    }
    reg.ops.swap_remove(index);
    if let Some(&moved) = reg.ops.get(index) {
        if let Some(m) = ops.get_mut(moved) {
            m.reg_index = index;
        }
    }
}
