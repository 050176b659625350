//! Provided buffer rings (`IORING_REGISTER_PBUF_RING`): a pool of equal-sized
//! buffers the kernel picks from for multishot receives.
//!
//! The ring of descriptors is page-aligned anonymous memory that the kernel
//! reads; the buffers are one heap allocation. A buffer id is owned by exactly
//! one party at a time: the kernel while it sits in the ring, the consumer
//! from the completion that names it until it is recycled.
//!
//! Ids are reused, so each delivery of a buffer gets a generation, and the
//! buffer is lent only against the completion packet that carries the
//! current one: a stale copy of an older packet for the same id (packets are
//! `Copy`) cannot claim, or give back, a later delivery.
//!
//! Each delivery also records how many bytes the kernel wrote and which
//! registration it went to. A claim is answered with that recorded length,
//! never with anything the packet says: packets are plain public data that
//! safe code can forge, and a length taken from one could expose bytes the
//! kernel never wrote (the buffers are not zeroed).

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

pub(crate) struct BufRing {
    pub(crate) group: u16,
    entries: u16,
    ring: NonNull<BufRingEntry>,
    ring_bytes: usize,
    /// Our copy of the tail; published to the kernel with a Release store.
    tail: u16,
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    pub(crate) buf_size: u32,
    /// How many buffers the kernel holds right now.
    pub(crate) available: u32,
    /// Who holds each buffer: [`KERNEL`], [`DELIVERED`] or [`CLAIMED`].
    owner: Vec<u8>,
    /// Each buffer's current delivery, written by [`BufRing::taken`].
    deliveries: Vec<Delivery>,
}

/// What the reactor knows of a buffer's current (or last) delivery.
#[derive(Clone, Copy, Default)]
struct Delivery {
    /// Bumped by every delivery; 0 until the first, and never 0 after.
    generation: u32,
    /// Bytes the kernel wrote into the buffer: the completion's result,
    /// clamped to the buffer size.
    len: u32,
    /// The tag of the registration the completion was delivered to.
    holder: u64,
}

/// In the ring, for the kernel to fill.
const KERNEL: u8 = 0;
/// Named by a completion packet, not yet claimed.
const DELIVERED: u8 = 1;
/// Lent to a `RecvBuf` guard.
const CLAIMED: u8 = 2;

impl BufRing {
    /// Allocates `entries` (a power of two, at most 32768) buffers of
    /// `buf_size` bytes and fills the ring with all of them. Registering it is
    /// the caller's job.
    pub(crate) fn new(group: u16, entries: u16, buf_size: u32) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 || buf_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring entries must be a power of two up to 32768, and buffers non-empty",
            ));
        }
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked below.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = NonNull::new(ring.cast::<BufRingEntry>()).expect("mmap never returns null");
        let total =
            (entries as usize).checked_mul(buf_size as usize).filter(|&t| t <= isize::MAX as usize);
        let Some(bufs_layout) = total.and_then(|t| Layout::from_size_align(t, 64).ok()) else {
            // SAFETY: unmapping exactly what we mapped above.
            unsafe { libc::munmap(ring.as_ptr().cast(), ring_bytes) };
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"));
        };
        // SAFETY: the layout has a non-zero size (entries > 0, buf_size > 0).
        let bufs = NonNull::new(unsafe { alloc::alloc(bufs_layout) });
        let Some(bufs) = bufs else {
            // SAFETY: unmapping exactly what we mapped above.
            unsafe { libc::munmap(ring.as_ptr().cast(), ring_bytes) };
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        };
        let mut ring = BufRing {
            group,
            entries,
            ring,
            ring_bytes,
            tail: 0,
            bufs,
            bufs_layout,
            buf_size,
            available: 0,
            owner: vec![KERNEL; entries as usize],
            deliveries: vec![Delivery::default(); entries as usize],
        };
        for bid in 0..entries {
            ring.push(bid);
        }
        ring.publish();
        Ok(ring)
    }

    pub(crate) fn ring_addr(&self) -> u64 {
        self.ring.as_ptr() as u64
    }

    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    /// The first byte of buffer `bid`.
    pub(crate) fn buf_ptr(&self, bid: u16) -> Option<NonNull<u8>> {
        if bid >= self.entries {
            return None;
        }
        // SAFETY: bid < entries, so the offset stays inside the allocation.
        Some(unsafe { self.bufs.add(bid as usize * self.buf_size as usize) })
    }

    /// Hands buffer `bid` back to the kernel, unless the kernel has it.
    /// Returns the tag of the registration it was delivered to, if it
    /// handed it back.
    pub(crate) fn recycle(&mut self, bid: u16) -> Option<u64> {
        if self.owner.get(bid as usize).is_some_and(|&o| o != KERNEL) {
            self.owner[bid as usize] = KERNEL;
            self.push(bid);
            self.publish();
            return Some(self.deliveries[bid as usize].holder);
        }
        None
    }

    /// A completion whose `result` is `result` named buffer `bid`, and is
    /// delivered to the registration tagged `holder`: the kernel is done
    /// with it. Returns the generation of this delivery, which the packet
    /// carries (0 for an id outside the ring).
    pub(crate) fn taken(&mut self, bid: u16, result: i32, holder: u64) -> u32 {
        let buf_size = self.buf_size;
        let (Some(o), Some(d)) =
            (self.owner.get_mut(bid as usize), self.deliveries.get_mut(bid as usize))
        else {
            return 0;
        };
        *o = DELIVERED;
        // Skips 0, which names no delivery, when it wraps.
        d.generation = d.generation.wrapping_add(1).max(1);
        d.len = u32::try_from(result).unwrap_or(0).min(buf_size);
        d.holder = holder;
        self.available = self.available.saturating_sub(1);
        d.generation
    }

    /// Whether buffer `bid` is delivered, unclaimed, and `generation` is
    /// its current delivery.
    fn is_delivered(&self, bid: u16, generation: u32) -> bool {
        self.owner.get(bid as usize) == Some(&DELIVERED)
            && self.deliveries.get(bid as usize).is_some_and(|d| d.generation == generation)
    }

    /// Lends delivery `generation` of buffer `bid` to one guard of the
    /// registration tagged `holder`, and returns how many bytes the kernel
    /// wrote into it. `None` if the buffer is not delivered, already
    /// claimed, delivered again since (a stale packet), or delivered to
    /// another registration.
    pub(crate) fn claim(&mut self, bid: u16, generation: u32, holder: u64) -> Option<usize> {
        if !self.is_delivered(bid, generation) {
            return None;
        }
        let delivery = self.deliveries[bid as usize];
        if delivery.holder != holder {
            return None;
        }
        self.owner[bid as usize] = CLAIMED;
        Some(delivery.len as usize)
    }

    /// Hands delivery `generation` of buffer `bid`, never claimed, back to
    /// the kernel: what an undelivered packet's buffer comes to. Nothing
    /// happens if that delivery is no longer the current one.
    pub(crate) fn recycle_delivered(&mut self, bid: u16, generation: u32) -> bool {
        let delivered = self.is_delivered(bid, generation);
        if delivered {
            let _ = self.recycle(bid);
        }
        delivered
    }

    fn push(&mut self, bid: u16) {
        let index = (self.tail & (self.entries - 1)) as usize;
        let addr = self.buf_ptr(bid).map_or(0, |p| p.as_ptr() as u64);
        // SAFETY: index < entries, inside the mapping; the kernel only reads
        // entries between its head and our published tail, and this one is
        // past the tail until `publish`.
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        entry.set_addr(addr);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.available += 1;
    }

    fn publish(&self) {
        // SAFETY: `ring` is the page-aligned base of the ring, initialised
        // above; the tail overlays entry 0's `resv` field, which is what the
        // kernel reads as the tail. It is a naturally aligned u16.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        // Release: the entries written before must be visible to the kernel
        // before it sees the new tail.
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both regions were allocated in `new` with these sizes, and
        // the reactor drops a ring only after the kernel finished every
        // operation that could use it (a shutdown that times out waiting
        // for the kernel leaks the rings instead: `leak_buf_rings`) and
        // the ring was unregistered or closed.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes);
            alloc::dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}
