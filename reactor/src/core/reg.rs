//! A registration's reactor-side state, split by temperature: [`RegSlot`]
//! holds what a completion and a drain touch and lives in the slab (48
//! bytes; 56 with its generation, less than a cache line, though entries
//! are not line-aligned: padding them to 64 bytes measured no faster);
//! [`Cold`] holds the rest and is
//! allocated on first use (an op submitted, an fd registered, a signaler or
//! sender made, a packet overflowing, a trigger other than `ALL`). An idle
//! `Reactor::register()` registration costs its slab slot and nothing else.

use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::Waker;

use tally_packets::{Count, Packet, PacketList, Signals};

use super::Lent;
use crate::op::OpId;
use crate::remote::Shared;

/// One registration's hot state.
pub(crate) struct RegSlot {
    /// Completion packets waiting for a drain, oldest first, at most the
    /// config's `queue_cap` of them. Signals (readiness edges, remote
    /// raises) do not queue: they fold into `local_signal` and the shared
    /// counted signal and become one packet at drain time; user packets
    /// wait in `shared`.
    pub(crate) queue: PacketBuf,
    pub(crate) waker: Option<Waker>,
    /// Readiness edges folded in on this thread, packed as a CountedSignal.
    pub(crate) local_signal: u64,
    /// Everything else; `None` until first needed.
    cold: Option<Box<Cold>>,
}

/// One registration's cold state: what only setup, overflow, lending and
/// teardown touch.
pub(crate) struct Cold {
    /// The trigger its signal packets report.
    pub(crate) trigger: Signals,
    /// Completions the full queue refused. Nothing is lost: they are kept
    /// here, and the data-bearing multishot op that produced them pauses
    /// until the next drain (back pressure). Empty in steady state.
    pub(crate) overflow: Vec<Packet>,
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

/// The cold state a registration without one behaves as.
const COLD_DEFAULT: Cold = Cold {
    trigger: Signals::ALL,
    overflow: Vec::new(),
    shared: None,
    ops: Vec::new(),
    fd: None,
    lent: Vec::new(),
    bufs_held: 0,
    may_lend: false,
};

impl Cold {
    /// Whether a drain would hand over nothing but the local counted
    /// signal: no overflow, nothing lent to free, no shared half (whose
    /// remote raises and user packets only `Core::drain` collects).
    #[inline]
    pub(crate) fn only_signals(&self) -> bool {
        self.overflow.is_empty() && self.lent.is_empty() && self.shared.is_none()
    }
}

impl RegSlot {
    /// A registration whose signal packets report `trigger`, watching `fd`.
    pub(crate) fn new(trigger: Signals, fd: Option<RawFd>) -> RegSlot {
        let mut slot =
            RegSlot { queue: PacketBuf::new(), waker: None, local_signal: 0, cold: None };
        if trigger != Signals::ALL || fd.is_some() {
            let cold = slot.cold_mut();
            cold.trigger = trigger;
            cold.fd = fd;
        }
        slot
    }

    /// The cold state, if it was ever needed.
    #[inline]
    pub(crate) fn cold(&self) -> Option<&Cold> {
        self.cold.as_deref()
    }

    /// The cold state, if it was ever needed, to change.
    #[inline]
    pub(crate) fn cold_opt_mut(&mut self) -> Option<&mut Cold> {
        self.cold.as_deref_mut()
    }

    /// The cold state, allocated now if it never was.
    #[inline]
    pub(crate) fn cold_mut(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(|| Box::new(COLD_DEFAULT))
    }

    pub(crate) fn trigger(&self) -> Signals {
        self.cold().map_or(Signals::ALL, |c| c.trigger)
    }

    pub(crate) fn shared(&self) -> Option<&Arc<Shared>> {
        self.cold()?.shared.as_ref()
    }

    pub(crate) fn bufs_held(&self) -> u32 {
        self.cold().map_or(0, |c| c.bufs_held)
    }

    /// Completions are waiting in the overflow list.
    pub(crate) fn overflowed(&self) -> bool {
        self.cold().is_some_and(|c| !c.overflow.is_empty())
    }

    /// Whether the next completion would overflow.
    pub(crate) fn is_full(&self, cap: usize) -> bool {
        self.queue.len() >= cap || self.overflowed()
    }

    /// Queues `packet`, or keeps it in the overflow list when `cap` packets
    /// are queued. Returns whether it overflowed.
    #[inline]
    pub(crate) fn enqueue(&mut self, packet: Packet, cap: usize) -> bool {
        if self.queue.len() < cap {
            self.queue.push(packet);
            return false;
        }
        self.cold_mut().overflow.push(packet);
        true
    }

    /// Notes that a queued packet carries something to lend.
    #[inline]
    pub(crate) fn note_lend(&mut self) {
        self.cold_mut().may_lend = true;
    }

    pub(crate) fn has_packets(&self) -> bool {
        !self.queue.is_empty()
            || self.overflowed()
            || self.local_signal != 0
            || self
                .shared()
                .is_some_and(|s| s.signal.peek() != (Signals::NONE, Count::ZERO) || s.has_user())
    }
}

/// A `Vec<Packet>` taken apart into its pointer and two `u32`s: 16 bytes
/// in the slot instead of 24. Growth, retain and drop rebuild the `Vec` and
/// let it do the work; push and drain are open-coded.
pub(crate) struct PacketBuf {
    /// The `Vec`'s buffer (dangling while `cap` is 0).
    ptr: NonNull<Packet>,
    len: u32,
    cap: u32,
}

// SAFETY: a PacketBuf owns its packets exactly as a `Vec<Packet>` does
// (nothing else points into its buffer), and `Packet` is plain data.
unsafe impl Send for PacketBuf {}
// SAFETY: as above; `&PacketBuf` only reads.
unsafe impl Sync for PacketBuf {}

impl PacketBuf {
    const fn new() -> PacketBuf {
        PacketBuf { ptr: NonNull::dangling(), len: 0, cap: 0 }
    }

    /// Takes `v` apart. A queue is bounded by its cap long before 2^32
    /// packets (192 GiB), so the counts fit.
    fn from_vec(v: Vec<Packet>) -> PacketBuf {
        let mut v = ManuallyDrop::new(v);
        let (Ok(len), Ok(cap)) = (u32::try_from(v.len()), u32::try_from(v.capacity())) else {
            panic!("a packet queue past 2^32 packets");
        };
        // SAFETY: a Vec's pointer is never null (dangling when empty).
        let ptr = unsafe { NonNull::new_unchecked(v.as_mut_ptr()) };
        PacketBuf { ptr, len, cap }
    }

    /// Runs `f` on the `Vec` this was taken from. `self` is empty while `f`
    /// runs, so a panic in `f` frees the buffer once.
    fn with_vec<R>(&mut self, f: impl FnOnce(&mut Vec<Packet>) -> R) -> R {
        let taken = ManuallyDrop::new(std::mem::replace(self, PacketBuf::new()));
        // SAFETY: pointer, length and capacity came from one `Vec<Packet>`
        // (`from_vec`), whose buffer only `taken` owned; `taken` is not
        // dropped, so the rebuilt Vec is the only owner.
        let mut v = unsafe {
            Vec::from_raw_parts(taken.ptr.as_ptr(), taken.len as usize, taken.cap as usize)
        };
        let r = f(&mut v);
        // The empty stand-in owns nothing: forget it rather than run `Drop`.
        std::mem::forget(std::mem::replace(self, PacketBuf::from_vec(v)));
        r
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The queued packets, oldest first.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[Packet] {
        // SAFETY: the first `len` packets of the buffer are initialised,
        // and the buffer lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len as usize) }
    }

    #[inline]
    pub(crate) fn push(&mut self, packet: Packet) {
        if self.len == self.cap {
            self.grow();
        }
        // SAFETY: `len < cap` now, so the write stays in the buffer, past
        // the initialised packets.
        unsafe { self.ptr.as_ptr().add(self.len as usize).write(packet) };
        self.len += 1;
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.with_vec(|v| v.reserve(1));
    }

    /// Moves every queued packet, oldest first, onto the end of `out`,
    /// keeping the allocation.
    #[inline]
    pub(crate) fn drain_into(&mut self, out: &mut PacketList) {
        // One push per packet: a queue holds one or two packets at a time,
        // and `extend_from_slice` costs two out-of-line `memmove` calls
        // (the shift and the copy) whatever the length.
        for &packet in self.as_slice() {
            out.push(packet);
        }
        // Packets are Copy: forgetting them is dropping them.
        self.len = 0;
    }

    /// Keeps only the packets for which `keep` returns true, in order.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&Packet) -> bool) {
        self.with_vec(|v| v.retain(keep));
    }
}

impl Drop for PacketBuf {
    fn drop(&mut self) {
        // SAFETY: as in `with_vec`: the parts came from one `Vec<Packet>`
        // that only `self` owns, and `self` is not used again.
        drop(unsafe {
            Vec::from_raw_parts(self.ptr.as_ptr(), self.len as usize, self.cap as usize)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_packets::Token;

    #[test]
    fn a_slot_fits_one_cache_line_with_its_generation() {
        assert_eq!(std::mem::size_of::<PacketBuf>(), 16);
        assert!(std::mem::size_of::<RegSlot>() <= 48, "{}", std::mem::size_of::<RegSlot>());
        let entry = crate::slab::entry_size::<RegSlot>();
        assert!(entry <= 56, "a registration's slab entry grew to {entry} bytes");
    }

    #[test]
    fn packet_buf_keeps_order_through_growth_and_retain() {
        let key = Token::new(0, 1);
        let mut q = PacketBuf::new();
        for i in 0..9u8 {
            q.push(Packet::user(key, [i; 32]));
        }
        q.retain(|p| p.kind() != tally_packets::PacketKind::User([3; 32]));
        assert_eq!(q.len(), 8);
        let mut out = PacketList::new();
        q.drain_into(&mut out);
        assert!(q.is_empty());
        let firsts: Vec<u8> = out
            .iter()
            .map(|p| match p.kind() {
                tally_packets::PacketKind::User(b) => b[0],
                _ => 255,
            })
            .collect();
        assert_eq!(firsts, [0, 1, 2, 4, 5, 6, 7, 8]);
        q.push(Packet::user(key, [9; 32]));
        assert_eq!(q.as_slice().len(), 1);
    }
}
