//! The reactor's core: the state behind the `RefCell`, and everything the
//! crank does to it. Registrations and operations live in two generational
//! slabs; an operation's slot owns its resources from submission to its
//! final completion. Nothing here calls user code: wakers are collected and
//! called by `Reactor::turn` once the borrow is released.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tally_packets::{
    CompletionPacket, Count, CountedSignal, Packet, PacketKind, PacketList, PacketQueue, Signals,
    Token,
};

use crate::metrics::Counters;
use crate::op::{Op, OpId, OpKind};
use crate::reactor::{Config, WAKE_TOKEN};
use crate::remote::{Remote, Shared};
use crate::slab::GenSlab;
use crate::sys::{Cqe, Driver, uring};
use crate::syscall;

const IORING_OP_ACCEPT: u8 = io_uring::opcode::Accept::CODE;

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
    wake_op: OpKind,
    wake_armed: bool,
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
    pub(crate) opcode: u8,
    pub(crate) state: OpState,
    /// Set when the op is (re)armed, cleared by its first completion.
    pub(crate) armed_fresh: bool,
    /// Multishot poll only: consecutive armings whose first completion was
    /// also their last. A file that cannot wait for readiness (`/dev/null`,
    /// a pseudo-file without poll) answers every arming that way.
    pub(crate) instant_ends: u8,
}

impl OpState {
    pub(crate) fn kernel_holds(self) -> bool {
        matches!(self, OpState::InFlight | OpState::Stopping | OpState::Cancelled)
    }
}

/// Things that must be dropped after the core borrow ends: a dropped waker
/// may drop a task, whose drop may touch the reactor again.
#[derive(Default)]
pub(crate) struct Garbage {
    _waker: Option<Waker>,
    _slot: Option<RegSlot>,
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
        if let OpKind::RecvMulti { group, .. } = op.kind {
            if self.driver.buf_ring(group.0).is_none() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "unknown buffer group"));
            }
        }
        let reg_index = slot.ops.len();
        let Some((token, op)) = self.ops.insert_mut(OpSlot {
            reg,
            reg_index,
            kind: op.kind,
            opcode: 0,
            state: OpState::InFlight,
            armed_fresh: true,
            instant_ends: 0,
        }) else {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "operation slab exhausted"));
        };
        slot.ops.push(token);
        // SAFETY: the op's resources live in its slab slot until its final
        // completion: deregistration and cancellation only mark it
        // Cancelled, and Drop waits for every op the kernel holds.
        op.opcode = unsafe { self.driver.submit(token, &mut op.kind) };
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
        if let OpKind::RecvMulti { group, .. } = op.kind {
            return Some(self.driver.buf_ring(group.0).is_some_and(|r| r.available > 0));
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

    fn dispatch(&mut self, cqe: Cqe) {
        let token = Token::from_u64(cqe.user_data);
        if token.is_reserved() {
            if token == WAKE_TOKEN {
                self.wake_armed = false;
                if cqe.result != -libc::ECANCELED {
                    self.arm_wake();
                }
            }
            return;
        }
        let more = cqe.flags & CompletionPacket::F_MORE != 0;
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
            // Cancelled (or, defensively, orphaned): reclaim, never deliver.
            reclaim(&mut self.driver, &op.kind, cqe);
            self.counters.reclaimed += 1;
            if !more {
                let (reg, index) = (op.reg, op.reg_index);
                if let Some(r) = self.regs.get_mut(reg) {
                    unlink(&mut self.ops, r, token, index);
                }
                self.ops.discard(token);
            }
            return;
        };
        let multishot = op.kind.is_multishot();
        let first_since_armed = std::mem::replace(&mut op.armed_fresh, false);
        let mut deliver = true;
        let mut unpollable = false;
        if let OpKind::Poll { .. } = op.kind {
            if cqe.result >= 0 {
                let observed = uring::poll_signals(cqe.result as u32);
                reg.local_signal = CountedSignal::fold(reg.local_signal, observed, 1);
                deliver = false;
            }
            if multishot && more {
                op.instant_ends = 0;
            } else if multishot && first_since_armed && cqe.result > 0 {
                // The kernel found no wait queue to sleep on, reported the
                // file ready and ended the poll. Once could be a full CQ;
                // twice running means the file cannot wait, and re-arming
                // would spin the reactor: end the op with EPERM, as epoll
                // would have refused the fd.
                op.instant_ends = op.instant_ends.saturating_add(1);
                unpollable = op.instant_ends >= 2;
            }
        }
        let group = match op.kind {
            OpKind::RecvMulti { group, .. } => group.0,
            _ => 0,
        };
        if cqe.flags & CompletionPacket::F_BUFFER != 0 {
            if let Some(ring) = self.driver.buf_ring(group) {
                ring.taken((cqe.flags >> 16) as u16);
            }
        }
        // The end of one arming of a multishot op (no F_MORE) that is not
        // the end of the op itself: we stopped it for back pressure, or the
        // kernel ran out of provided buffers. Pause it and deliver nothing;
        // it re-arms once the registration is drained and buffers are back.
        let paused_end = multishot
            && !more
            && ((op.state == OpState::Stopping && cqe.result == -libc::ECANCELED)
                || cqe.result == -libc::ENOBUFS);
        if paused_end {
            deliver = false;
        }
        if deliver {
            let c = CompletionPacket::new(token, op.opcode, cqe.result, cqe.flags, group);
            if reg.enqueue(Packet::completion(reg_token, c)) {
                // Overflow: kept (nothing is lost), and back pressure.
                self.counters.queue_overflows += 1;
                if multishot && more && op.state == OpState::InFlight {
                    self.driver.cancel(token);
                    op.state = OpState::Stopping;
                }
            }
        }
        if unpollable {
            let c = CompletionPacket::new(token, op.opcode, -libc::EPERM, 0, group);
            if reg.enqueue(Packet::completion(reg_token, c)) {
                self.counters.queue_overflows += 1;
            }
        }
        if !more {
            // The kernel also ends an arming that is still healthy (say, it
            // could not post to a full CQ) with a success: re-arm that too.
            // A recv's 0 is end of file, and any other error ends the op.
            let healthy = |kind: &OpKind| match kind {
                OpKind::RecvMulti { .. } => cqe.result > 0,
                _ => cqe.result >= 0,
            };
            let keeps_going = multishot && !unpollable && (paused_end || healthy(&op.kind));
            if keeps_going {
                op.state = OpState::Paused;
                self.paused.push(token);
            } else if op.kind.has_buffer() {
                op.state = OpState::Done(cqe.result);
            } else {
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

    /// Moves everything queued for `token` into `out`. Returns whether
    /// anything was moved.
    pub(crate) fn drain(&mut self, token: Token, out: &mut PacketList) -> bool {
        let Some(reg) = self.regs.get_mut(token) else { return false };
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
        reg.queue.drain_into(out);
        out.extend_from_slice(&reg.overflow);
        reg.overflow.clear();
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

    /// Cancels `op` if `reg` owns it: asks the kernel to stop it, and
    /// withdraws (reclaiming what they carry) its completions that are
    /// queued but not yet drained. Returns whether there was anything to
    /// cancel.
    pub(crate) fn cancel(&mut self, reg: Token, op: OpId) -> bool {
        let purged = self.purge(reg, op);
        let Some(slot) = self.ops.get_mut(op).filter(|o| o.reg == reg) else { return purged };
        match slot.state {
            OpState::InFlight | OpState::Stopping => {
                self.driver.cancel(op);
                slot.state = OpState::Cancelled;
                true
            }
            OpState::Paused | OpState::Done(_) => {
                self.remove_op(op);
                true
            }
            OpState::Cancelled => purged,
        }
    }

    /// Takes `op`'s completions out of `reg`'s queue and reclaims what they
    /// carry (an accepted fd, a provided buffer). Returns whether there
    /// were any.
    fn purge(&mut self, reg: Token, op: OpId) -> bool {
        let Some(r) = self.regs.get_mut(reg) else { return false };
        let is_op = |p: &Packet| p.as_completion().is_some_and(|c| c.op() == op);
        let before = r.queue.len() + r.overflow.len();
        let (driver, counters) = (&mut self.driver, &mut self.counters);
        let mut keep = |packet: &Packet| {
            if !is_op(packet) {
                return true;
            }
            reclaim_packet(driver, packet);
            counters.reclaimed += 1;
            false
        };
        r.queue.retain(&mut keep);
        r.overflow.retain(|p| keep(p));
        r.queue.len() + r.overflow.len() < before
    }

    /// Removes op `token` from the slab and from its registration's list.
    fn remove_op(&mut self, token: OpId) -> Option<OpSlot> {
        let slot = self.ops.remove(token)?;
        if let Some(r) = self.regs.get_mut(slot.reg) {
            unlink(&mut self.ops, r, token, slot.reg_index);
        }
        Some(slot)
    }

    /// The buffer of a finished one-shot op, handed back to its owner.
    pub(crate) fn reclaim(&mut self, reg: Token, op: OpId) -> Option<Vec<u8>> {
        let slot = self.ops.get(op).filter(|o| o.reg == reg)?;
        let OpState::Done(result) = slot.state else { return None };
        let slot = self.remove_op(op)?;
        slot.kind.into_buffer(result)
    }

    /// Removes a registration: cancels its ops, reclaims resources in its
    /// queued packets, and closes its remote handles.
    pub(crate) fn deregister(&mut self, token: Token) -> Garbage {
        let Some(mut slot) = self.regs.remove(token) else { return Garbage::default() };
        for op in slot.ops.drain(..) {
            let Some(o) = self.ops.get_mut(op) else { continue };
            match o.state {
                OpState::InFlight | OpState::Stopping => {
                    self.driver.cancel(op);
                    o.state = OpState::Cancelled;
                }
                OpState::Paused | OpState::Done(_) => {
                    self.ops.remove(op);
                }
                OpState::Cancelled => {}
            }
        }
        for packet in slot.queue.iter().chain(&slot.overflow) {
            if reclaim_packet(&mut self.driver, packet) {
                self.counters.reclaimed += 1;
            }
        }
        if let Some(shared) = &slot.shared {
            shared.close();
        }
        if let Some(fd) = slot.fd {
            if let Some(owner) = self.fd_owner.get_mut(fd as usize) {
                if *owner == Some(token) {
                    *owner = None;
                }
            }
        }
        Garbage { _waker: slot.waker.take(), _slot: Some(slot) }
    }

    /// Cancels everything the kernel holds and waits (bounded) for the
    /// final completions, so that no buffer is freed under the kernel.
    pub(crate) fn shut_down(&mut self) {
        let held: Vec<OpId> =
            self.ops.iter().filter(|(_, o)| o.state.kernel_holds()).map(|(t, _)| t).collect();
        for token in held {
            self.driver.cancel(token);
            if let Some(o) = self.ops.get_mut(token) {
                o.state = OpState::Cancelled;
            }
        }
        if self.wake_armed {
            self.driver.cancel(WAKE_TOKEN);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut cqes = Vec::new();
        loop {
            let busy = self.wake_armed || self.ops.iter().any(|(_, o)| o.state.kernel_holds());
            if !busy {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let _ = self.driver.enter(true, Some((deadline - now).min(Duration::from_millis(100))));
            self.driver.flush_overflow();
            self.driver.reap(&mut cqes);
            for cqe in cqes.drain(..) {
                let token = Token::from_u64(cqe.user_data);
                if token == WAKE_TOKEN {
                    self.wake_armed = false;
                    continue;
                }
                let Some(op) = self.ops.get_mut(token) else { continue };
                reclaim(&mut self.driver, &op.kind, cqe);
                if cqe.flags & CompletionPacket::F_MORE == 0 {
                    op.kind.settle(cqe.result);
                    self.ops.remove(token);
                }
            }
        }
        // The kernel kept some operations past the deadline. Freeing their
        // memory could let it write into freed memory: leak it instead.
        eprintln!(
            "tally: reactor dropped with operations the kernel would not cancel; leaking their buffers"
        );
        std::mem::forget(std::mem::replace(&mut self.ops, GenSlab::new()));
        std::mem::forget(std::mem::replace(&mut self.wake_op, OpKind::Nop));
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
fn unlink(ops: &mut GenSlab<OpSlot>, reg: &mut RegSlot, token: OpId, index: usize) {
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

/// Reclaims what a queued packet carries, if it is a completion that
/// carries something. Returns whether it was a completion.
fn reclaim_packet(driver: &mut Driver, packet: &Packet) -> bool {
    let PacketKind::Completion(c) = packet.kind() else { return false };
    let cqe = Cqe { user_data: 0, result: c.result, flags: c.flags };
    reclaim_group(driver, c.opcode == IORING_OP_ACCEPT, cqe, c.buf_group, Fresh::Queued);
    true
}

/// Frees what a completion of `kind`, fresh from the kernel, carries when
/// nobody will receive it.
fn reclaim(driver: &mut Driver, kind: &OpKind, cqe: Cqe) {
    let group = match kind {
        OpKind::RecvMulti { group, .. } => group.0,
        _ => u16::MAX,
    };
    reclaim_group(driver, kind.yields_fd(), cqe, group, Fresh::FromKernel);
}

/// Where the completion being reclaimed comes from, which decides what our
/// buffer-ring bookkeeping already knows about the buffer it names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// Straight from the CQ: the ring still counts the buffer as the
    /// kernel's, so it is first marked taken, then handed back.
    FromKernel,
    /// A packet that was queued: dispatch already marked it taken.
    Queued,
}

fn reclaim_group(driver: &mut Driver, yields_fd: bool, cqe: Cqe, group: u16, fresh: Fresh) {
    if yields_fd && cqe.result >= 0 {
        syscall::close_fd(cqe.result);
    }
    if cqe.flags & CompletionPacket::F_BUFFER != 0 {
        let bid = (cqe.flags >> 16) as u16;
        if let Some(ring) = driver.buf_ring(group) {
            if fresh == Fresh::FromKernel {
                ring.taken(bid);
            }
            ring.recycle(bid);
        }
    }
}
