//! The completion path, one way: the backend's [`Cqe`]s are reaped, each
//! is folded or queued into its registration and settles its op, and a
//! drain hands a registration's packets over. Nothing here calls back into
//! the backend to decode a result.

use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tally_packets::{
    BufferRef, CompletionPacket, Count, CountedSignal, Packet, PacketList, SignalPacket, Token,
};

use super::lent::{Lent, free_lent, lend, reclaim};
use super::{Core, OpSlot, OpState, RegSlot, WAKE_BACKOFF_MAX_SHIFT, unlink};
use crate::config::WAKE_TOKEN;
use crate::metrics::Counters;
use crate::op::{OpId, OpKind};
use crate::remote::Shared;
use crate::sys::{Cqe, Driver, syscall};

impl Core {
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
            for &cqe in &cqes {
                self.dispatch(cqe);
            }
            cqes.clear();
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
        let is_poll = matches!(op.kind, OpKind::Poll { .. });
        let end = if is_poll && more && cqe.result >= 0 {
            // The common case, on its own: an edge of a multishot poll
            // folds into the counted signal, and the poll goes on.
            op.armed_fresh = false;
            op.instant_ends = 0;
            reg.local_signal = CountedSignal::fold(reg.local_signal, cqe.readiness(), 1);
            End::More
        } else if is_poll || op.kind.is_multishot() {
            let caps = Caps { queue: self.config.queue_cap, bufs: self.config.buf_cap };
            watched(op, reg, token, cqe, &mut self.driver, &mut self.counters, caps)
        } else {
            // A plain one-shot op (nop, read, send, ...): one packet, and
            // it is over. One-shot ops select no provided buffers.
            let c = CompletionPacket::new(token, op.kind.tag(), cqe.result).with_more(more);
            if Lent::of(&c).is_some() {
                reg.note_lend();
            }
            if reg.enqueue(Packet::completion(reg_token, c), self.config.queue_cap) {
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
        // Shutdown reaps its own cancel (see teardown), so an ECANCELED
        // here came from the kernel: io_uring cancels a thread's requests
        // when that thread exits, and a reactor moved to another thread
        // (compat-mio's `Poll` is `Send`) outlives the one that armed its
        // read. Re-armed at once, from this thread, like a success.
        if cqe.result >= 0 || cqe.result == -libc::ECANCELED {
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

/// What [`Core::take_signal`] found.
pub(crate) enum SignalTake {
    /// The counted signal, the only thing queued.
    Signal(SignalPacket),
    /// Nothing queued: the waker is stored; the one it replaced, if any.
    Waiting(Option<Waker>),
    /// More than a signal: drain in full.
    More,
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

/// The caps a delivery checks: the queue's, and provided buffers held.
#[derive(Clone, Copy)]
struct Caps {
    queue: usize,
    bufs: u32,
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
    caps: Caps,
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
        let cold = reg.cold_mut();
        cold.bufs_held += 1;
        stop = cold.bufs_held >= caps.bufs;
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
        let mut c = CompletionPacket::new(token, op.kind.tag(), cqe.result).with_more(more);
        if let Some(buffer) = buffer {
            c = c.with_buffer(buffer);
        }
        if Lent::of(&c).is_some() {
            reg.note_lend();
        }
        if reg.enqueue(Packet::completion(reg_token, c), caps.queue) {
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
        let c = CompletionPacket::new(token, op.kind.tag(), -errno);
        if reg.enqueue(Packet::completion(reg_token, c), caps.queue) {
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
        if let Some(cold) = reg.cold_opt_mut().filter(|c| !c.lent.is_empty()) {
            let returned =
                free_lent(&mut self.driver, &mut cold.lent, &mut self.counters.reclaimed);
            cold.bufs_held = cold.bufs_held.saturating_sub(returned);
        }
        let before = out.len();
        let (mut bits, mut count) = CountedSignal::unpack(std::mem::take(&mut reg.local_signal));
        if let Some(shared) = reg.shared() {
            let (b, c) = shared.signal.take();
            bits |= b;
            count = count.saturating_add(c.get());
        }
        if !bits.is_empty() || count != Count::ZERO {
            out.push(Packet::signal(token, reg.trigger(), bits, count));
            self.counters.coalesced_raises += u64::from(count.get().saturating_sub(1));
        }
        let completions = out.len();
        reg.queue.drain_into(out);
        if let Some(cold) = reg.cold_opt_mut() {
            if !cold.overflow.is_empty() {
                out.extend_from_slice(&cold.overflow);
                cold.overflow.clear();
            }
            if std::mem::take(&mut cold.may_lend) {
                lend(&mut cold.lent, &out[completions..]);
            }
        }
        if let Some(shared) = reg.shared() {
            shared.drain_user(|p| out.push(Packet::user(token, p)));
        }
        self.counters.packets += (out.len() - before) as u64;
        out.len() > before
    }

    /// The drain of a registration that holds its counted signal and
    /// nothing else, with one lookup: the signal if it was raised (now
    /// taken); else, with nothing queued, `waker` stored (the one it
    /// replaces handed back, to drop outside the borrow); else
    /// [`SignalTake::More`]: completions, user packets or resources to
    /// lend or free, which only [`drain`](Self::drain) hands over.
    #[inline]
    pub(crate) fn take_signal(&mut self, token: Token, waker: &Waker) -> SignalTake {
        let Some(reg) = self.regs.get_mut(token) else { return SignalTake::More };
        if !reg.queue.is_empty() || reg.cold().is_some_and(|c| !c.only_signals()) {
            return SignalTake::More;
        }
        if reg.local_signal == 0 {
            return match &reg.waker {
                Some(w) if w.will_wake(waker) => SignalTake::Waiting(None),
                _ => SignalTake::Waiting(reg.waker.replace(waker.clone())),
            };
        }
        let (bits, count) = CountedSignal::unpack(std::mem::take(&mut reg.local_signal));
        self.counters.packets += 1;
        self.counters.coalesced_raises += u64::from(count.get().saturating_sub(1));
        SignalTake::Signal(SignalPacket { trigger: reg.trigger(), observed: bits, count })
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
        if let Some(cold) =
            self.regs.get_mut(Token::from_u64(holder)).and_then(RegSlot::cold_opt_mut)
        {
            cold.bufs_held = cold.bufs_held.saturating_sub(1);
        }
    }

    pub(crate) fn shared(&mut self, token: Token) -> Option<Arc<Shared>> {
        let user_cap = self.config.user_cap;
        let remote = &self.remote;
        let reg = self.regs.get_mut(token)?;
        Some(
            reg.cold_mut()
                .shared
                .get_or_insert_with(|| Arc::new(Shared::new(token, remote.clone(), user_cap)))
                .clone(),
        )
    }
}
