//! What a drained completion carries (an accepted fd, a provided buffer),
//! lent to whoever drained it until its registration's next drain, and
//! freeing it when nobody takes it.

use std::os::fd::RawFd;

use tally_packets::{CompletionPacket, Packet};

use crate::op::OpKind;
use crate::sys::{Cqe, Driver, syscall};

/// A resource that a drained completion carries (an accepted fd, a
/// provided buffer), lent to whoever drained it until its registration's
/// next drain, which frees it unless it was taken (`take_fd`, `buffer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lent {
    Fd(RawFd),
    Buffer { group: u16, bid: u16, generation: u32 },
}

impl Lent {
    /// What `c`, a completion the reactor itself queued, carries.
    #[inline]
    pub(crate) fn of(c: &CompletionPacket) -> Option<Lent> {
        if let Some(fd) = c.accepted_fd() {
            return Some(Lent::Fd(fd));
        }
        let b = c.buffer()?;
        Some(Lent::Buffer { group: b.group, bid: b.id, generation: b.generation })
    }

    /// Closes the fd, or hands the buffer back to the kernel unless it was
    /// claimed (a claimed buffer goes back when its `RecvBuf` drops).
    /// Returns whether it freed anything.
    fn free(self, driver: &mut Driver) -> bool {
        match self {
            Lent::Fd(fd) => {
                syscall::close_fd(fd);
                true
            }
            Lent::Buffer { group, bid, generation } => {
                driver.buf_ring(group).is_some_and(|ring| ring.recycle_delivered(bid, generation))
            }
        }
    }
}

/// Records what the completions among `packets` carry as lent.
#[inline]
pub(crate) fn lend(lent: &mut Vec<Lent>, packets: &[Packet]) {
    for packet in packets {
        if let Some(l) = packet.as_completion().as_ref().and_then(Lent::of) {
            lent.push(l);
        }
    }
}

/// Frees everything still lent: what the last drain handed over and
/// nobody took. Counts what it freed in `reclaimed`, and returns how many
/// of those were buffers.
#[inline]
pub(crate) fn free_lent(driver: &mut Driver, lent: &mut Vec<Lent>, reclaimed: &mut u64) -> u32 {
    let mut buffers = 0;
    for l in lent.drain(..) {
        if l.free(driver) {
            *reclaimed += 1;
            buffers += u32::from(matches!(l, Lent::Buffer { .. }));
        }
    }
    buffers
}

/// Reclaims what a queued packet carries, if it is a completion that
/// carries something. Returns whether it was a completion.
pub(crate) fn reclaim_packet(driver: &mut Driver, packet: &Packet) -> bool {
    let Some(c) = packet.as_completion() else { return false };
    if let Some(l) = Lent::of(&c) {
        l.free(driver);
    }
    true
}

/// Frees what a completion of `kind`, fresh from the kernel, carries when
/// nobody will receive it.
pub(crate) fn reclaim(driver: &mut Driver, kind: &OpKind, cqe: Cqe) {
    if kind.yields_fd() && cqe.result >= 0 {
        syscall::close_fd(cqe.result);
    }
    if let Some(bid) = cqe.buffer_id() {
        if let Some(ring) = kind.buf_group().and_then(|g| driver.buf_ring(g.0)) {
            // The ring still counts the buffer as the kernel's: mark it
            // delivered to nobody (tag 0 is no registration's), then give
            // it back.
            ring.taken(bid, cqe.result, 0);
            let _ = ring.recycle(bid);
        }
    }
}
