//! Taking things apart: cancelling operations, deregistering
//! registrations, and shutting the core down without freeing anything the
//! kernel still holds.

use std::os::fd::{FromRawFd, OwnedFd};
use std::task::Waker;
use std::time::{Duration, Instant};

use tally_packets::{CompletionPacket, Packet, PacketList, Token};

use super::lent::{Lent, free_lent, lend, reclaim, reclaim_packet};
use super::reg::Cold;
use super::{Core, OpSlot, OpState, RegSlot, unlink};
use crate::config::WAKE_TOKEN;
use crate::op::{Cancel, OpId, OpKind};
use crate::slab::GenSlab;

/// Things that must be dropped after the core borrow ends: a dropped waker
/// may drop a task, whose drop may touch the reactor again.
#[derive(Default)]
pub(crate) struct Garbage {
    _waker: Option<Waker>,
    _slot: Option<RegSlot>,
}

impl Core {
    /// Cancels `op` if `reg` owns it: asks the kernel to stop it, and
    /// hands back, lent as a drain's, its completions that are queued but
    /// not yet drained. A finished op with a buffer keeps it for `reclaim`.
    pub(crate) fn cancel(&mut self, reg: Token, op: OpId) -> Cancel {
        let mut arrived = PacketList::new();
        self.withdraw(reg, op, &mut arrived);
        let Some(slot) = self.ops.get_mut(op).filter(|o| o.reg == reg) else {
            return if arrived.is_empty() {
                Cancel::NotFound
            } else {
                Cancel::AlreadyCompleted(arrived)
            };
        };
        match slot.state {
            OpState::InFlight | OpState::Stopping => {
                self.driver.cancel(op);
                slot.state = OpState::Cancelled;
                Cancel::Cancelled(arrived)
            }
            OpState::Paused => {
                self.remove_op(op);
                Cancel::Cancelled(arrived)
            }
            OpState::Done(_) => Cancel::AlreadyCompleted(arrived),
            OpState::Cancelled if arrived.is_empty() => Cancel::NotFound,
            OpState::Cancelled => Cancel::Cancelled(arrived),
        }
    }

    /// Moves `op`'s completions out of `reg`'s queue into `out`, in order,
    /// lending what they carry as a drain does.
    fn withdraw(&mut self, reg: Token, op: OpId, out: &mut PacketList) {
        let Some(r) = self.regs.get_mut(reg) else { return };
        let is_op = |p: &Packet| p.as_completion().is_some_and(|c| c.op() == op);
        let before = out.len();
        let mut keep = |packet: &Packet| {
            if !is_op(packet) {
                return true;
            }
            out.push(*packet);
            false
        };
        r.queue.retain(&mut keep);
        if let Some(cold) = r.cold_opt_mut() {
            cold.overflow.retain(|p| keep(p));
        }
        if out.len() > before {
            lend(&mut r.cold_mut().lent, &out[before..]);
        }
    }

    /// Takes the fd that accept completion `c`, lent to `reg` by its last
    /// drain, carries.
    pub(crate) fn take_fd(&mut self, reg: Token, c: &CompletionPacket) -> Option<OwnedFd> {
        let r = self.regs.get_mut(reg).filter(|_| c.result >= 0)?;
        let lent = &mut r.cold_opt_mut()?.lent;
        let i = lent.iter().position(|l| *l == Lent::Fd(c.result))?;
        lent.swap_remove(i);
        // SAFETY: the fd is a fresh one from an accept completion that the
        // reactor lent to `reg` and nobody took; removing it from the lent
        // list makes this its only owner.
        Some(unsafe { OwnedFd::from_raw_fd(c.result) })
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
        for packet in slot.queue.as_slice() {
            if reclaim_packet(&mut self.driver, packet) {
                self.counters.reclaimed += 1;
            }
        }
        if let Some(cold) = slot.cold_opt_mut() {
            self.deregister_cold(token, cold);
        }
        Garbage { _waker: slot.waker.take(), _slot: Some(slot) }
    }

    /// The cold half of `deregister`: ops, overflow, lent resources,
    /// remote handles and the fd's owner entry.
    fn deregister_cold(&mut self, token: Token, cold: &mut Cold) {
        for op in cold.ops.drain(..) {
            let Some(o) = self.ops.get_mut(op) else { continue };
            match o.state {
                // A close is left to run, its completion dropped (it
                // settles as any cancelled op does): the kernel sends the
                // close of a file with a flush method (NFS, FUSE, CIFS) to
                // a worker thread, and a cancel that caught it there would
                // hand the fd back, to be closed synchronously on this
                // thread when the op is dropped, flush and all.
                OpState::InFlight if matches!(o.kind, OpKind::Close { .. }) => {
                    o.state = OpState::Cancelled;
                }
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
        for packet in &cold.overflow {
            if reclaim_packet(&mut self.driver, packet) {
                self.counters.reclaimed += 1;
            }
        }
        let _ = free_lent(&mut self.driver, &mut cold.lent, &mut self.counters.reclaimed);
        if let Some(shared) = &cold.shared {
            shared.close();
        }
        if let Some(fd) = cold.fd {
            if let Some(owner) = self.fd_owner.get_mut(fd as usize) {
                if *owner == Some(token) {
                    *owner = None;
                }
            }
        }
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
                if !cqe.more() {
                    op.kind.settle(cqe.result);
                    self.ops.remove(token);
                }
            }
        }
        // The kernel kept some operations past the deadline, and closing
        // the ring does not wait for them either. Freeing their memory, or
        // the provided buffers they may still fill, could let the kernel
        // write into freed memory: leak the ops and every buffer ring
        // instead (the rings are neither unregistered nor unmapped).
        eprintln!(
            "tally: reactor dropped with operations the kernel would not cancel; leaking their buffers and the buffer rings"
        );
        std::mem::forget(std::mem::replace(&mut self.ops, GenSlab::new()));
        std::mem::forget(std::mem::replace(&mut self.wake_op, OpKind::Nop));
        self.driver.leak_buf_rings();
    }
}
