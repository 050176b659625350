//! Submitting operations, re-arming paused multishot ones, and the start
//! of a crank.

use std::io;
use std::time::Instant;

use tally_packets::Token;

use super::{Core, OpSlot, OpState};
use crate::config::WAKE_TOKEN;
use crate::op::{Op, OpId};

impl Core {
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
        self.submit_or_return(reg, op).map_err(|(e, _)| e)
    }

    /// Submits `op` for registration `reg`, or hands it back, unsubmitted
    /// and with everything it owns, with the reason.
    #[inline]
    pub(crate) fn submit_or_return(&mut self, reg: Token, op: Op) -> Result<OpId, (io::Error, Op)> {
        let Some(slot) = self.regs.get_mut(reg) else {
            return Err((io::Error::new(io::ErrorKind::NotFound, "the registration is gone"), op));
        };
        if let Some(group) = op.kind.buf_group() {
            if self.driver.buf_ring(group.0).is_none() {
                let e = io::Error::new(io::ErrorKind::InvalidInput, "unknown buffer group");
                return Err((e, op));
            }
        }

        let reg_index = slot.cold().map_or(0, |c| c.ops.len());
        // The slot is filled in place, field by field. Built whole and moved
        // in, the OpSlot was staged on the stack and copied out with loads
        // wider than the stores that built it, which defeats store-to-load
        // forwarding: about 7% of `turn_cost`'s time per op.
        let Some((token, slab_op)) = self.ops.insert_mut(OpSlot::VACANT) else {
            let e = io::Error::new(io::ErrorKind::OutOfMemory, "operation slab exhausted");
            return Err((e, op));
        };
        let Op { kind } = op;
        let op = slab_op;
        op.reg = reg;
        op.reg_index = reg_index;
        // The vacant slot's kind is a Nop, which owns nothing: skip its drop.
        std::mem::forget(std::mem::replace(&mut op.kind, kind));
        slot.cold_mut().ops.push(token);
        // SAFETY: the op's resources live in its slab slot until its final
        // completion: deregistration and cancellation only mark it
        // Cancelled, and Drop waits for every op the kernel holds.
        unsafe { self.driver.submit(token, &mut op.kind) };
        self.counters.submissions += 1;
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
        if reg.is_full(self.config.queue_cap) {
            return Some(false);
        }
        if let Some(group) = op.kind.buf_group() {
            return Some(
                reg.bufs_held() < self.config.buf_cap
                    && self.driver.buf_ring(group.0).is_some_and(|r| r.available > 0),
            );
        }
        Some(true)
    }
}
