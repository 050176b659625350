//! Taking things apart: cancelling operations, deregistering
//! registrations, handing back what undelivered completions carry (accepted
//! fds, provided buffers), and shutting the core down without freeing
//! anything the kernel still holds.

use std::task::Waker;
use std::time::{Duration, Instant};

use tally_packets::{CompletionPacket, Packet, PacketKind, Token};

use crate::dispatch::{Core, OpSlot, OpState, RegSlot, unlink};
use crate::op::{OpId, OpKind};
use crate::reactor::WAKE_TOKEN;
use crate::slab::GenSlab;
use crate::sys::{Cqe, Driver};
use crate::syscall;

const IORING_OP_ACCEPT: u8 = io_uring::opcode::Accept::CODE;

/// Things that must be dropped after the core borrow ends: a dropped waker
/// may drop a task, whose drop may touch the reactor again.
#[derive(Default)]
pub(crate) struct Garbage {
    _waker: Option<Waker>,
    _slot: Option<RegSlot>,
}

impl Core {
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

/// Reclaims what a queued packet carries, if it is a completion that
/// carries something. Returns whether it was a completion.
fn reclaim_packet(driver: &mut Driver, packet: &Packet) -> bool {
    let PacketKind::Completion(c) = packet.kind() else { return false };
    let cqe = Cqe { user_data: 0, result: c.result, flags: c.flags };
    let fresh = Fresh::Queued { generation: c.buffer_generation() };
    reclaim_group(driver, c.opcode == IORING_OP_ACCEPT, cqe, Some(c.buf_group), fresh);
    true
}

/// Frees what a completion of `kind`, fresh from the kernel, carries when
/// nobody will receive it.
pub(crate) fn reclaim(driver: &mut Driver, kind: &OpKind, cqe: Cqe) {
    let group = kind.buf_group().map(|g| g.0);
    reclaim_group(driver, kind.yields_fd(), cqe, group, Fresh::FromKernel);
}

/// Where the completion being reclaimed comes from, which decides what our
/// buffer-ring bookkeeping already knows about the buffer it names.
#[derive(Clone, Copy)]
enum Fresh {
    /// Straight from the CQ: the ring still counts the buffer as the
    /// kernel's, so it is first marked taken, then handed back.
    FromKernel,
    /// A packet that was queued: dispatch already marked it taken, and
    /// `generation` is the delivery it reports.
    Queued { generation: u32 },
}

fn reclaim_group(driver: &mut Driver, yields_fd: bool, cqe: Cqe, group: Option<u16>, fresh: Fresh) {
    if yields_fd && cqe.result >= 0 {
        syscall::close_fd(cqe.result);
    }
    if cqe.flags & CompletionPacket::F_BUFFER != 0 {
        let bid = (cqe.flags >> 16) as u16;
        if let Some(ring) = group.and_then(|g| driver.buf_ring(g)) {
            match fresh {
                Fresh::FromKernel => {
                    // Delivered to nobody (tag 0 is no registration's).
                    ring.taken(bid, cqe.result, 0);
                    ring.recycle(bid);
                }
                Fresh::Queued { generation } => ring.recycle_delivered(bid, generation),
            }
        }
    }
}
