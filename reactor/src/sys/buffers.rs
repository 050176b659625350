//! Provided-buffer groups, backend-neutral: a pool of equal-sized buffers
//! that multishot receives fill, and the bookkeeping that makes lending
//! them out sound. How a free buffer reaches whoever fills it is the
//! backend's part, its [`Feed`]: for io_uring, a ring of descriptors the
//! kernel reads (`IORING_REGISTER_PBUF_RING`).
//!
//! A buffer id is owned by exactly one party at a time: the feed (the
//! kernel) while it is free, the consumer from the completion that names
//! it until it is recycled.
//!
//! Ids are reused, so each delivery of a buffer gets a generation, and the
//! buffer is lent only against the completion packet that carries the
//! current one: a stale copy of an older packet for the same id (packets are
//! `Copy`) cannot claim, or give back, a later delivery.
//!
//! Each delivery also records how many bytes were written and which
//! registration it went to. A claim is answered with that recorded length,
//! never with anything the packet says: packets are plain public data that
//! safe code can forge, and a length taken from one could expose bytes
//! nobody wrote (the buffers are not zeroed).

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;

use super::uring::KernelRing;

/// How free buffers reach whoever fills them.
pub(crate) enum Feed {
    /// A buffer ring registered with io_uring.
    Kernel(KernelRing),
    /// Free buffer ids, for a backend that fills buffers itself (epoll).
    User(Vec<u16>),
}

impl Feed {
    /// Queues buffer `bid` (at `addr`, `len` bytes) as free; visible to the
    /// filler at the next [`publish`](Self::publish).
    fn push(&mut self, bid: u16, addr: u64, len: u32) {
        match self {
            Feed::Kernel(ring) => ring.push(bid, addr, len),
            Feed::User(free) => free.push(bid),
        }
    }

    fn publish(&self) {
        match self {
            Feed::Kernel(ring) => ring.publish(),
            Feed::User(_) => {}
        }
    }

    /// A free buffer for a user-space filler to fill (the most recently
    /// freed, still warm in cache). Its completion then names it, and the
    /// core marks it delivered.
    pub(crate) fn take_free(&mut self) -> Option<u16> {
        match self {
            Feed::Kernel(_) => None,
            Feed::User(free) => free.pop(),
        }
    }

    /// Hands back a buffer [`take_free`](Self::take_free) gave but that
    /// nothing was written into.
    pub(crate) fn give_back(&mut self, bid: u16) {
        if let Feed::User(free) = self {
            free.push(bid);
        }
    }
}

/// One provided-buffer group.
pub(crate) struct BufPool {
    entries: u16,
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    pub(crate) buf_size: u32,
    /// How many buffers the feed holds right now.
    pub(crate) available: u32,
    /// Who holds each buffer: [`KERNEL`], [`DELIVERED`] or [`CLAIMED`].
    owner: Vec<u8>,
    /// Each buffer's current delivery, written by [`BufPool::taken`].
    deliveries: Vec<Delivery>,
    pub(crate) feed: Feed,
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

impl BufPool {
    /// Checks a group's shape before anything is allocated for it.
    pub(crate) fn check(entries: u16, buf_size: u32) -> io::Result<()> {
        if !entries.is_power_of_two() || entries > 32768 || buf_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring entries must be a power of two up to 32768, and buffers non-empty",
            ));
        }
        Ok(())
    }

    /// Allocates `entries` (see [`check`](Self::check)) buffers of
    /// `buf_size` bytes and hands all of them to `feed`.
    pub(crate) fn new(entries: u16, buf_size: u32, feed: Feed) -> io::Result<BufPool> {
        BufPool::check(entries, buf_size)?;
        let total =
            (entries as usize).checked_mul(buf_size as usize).filter(|&t| t <= isize::MAX as usize);
        let Some(bufs_layout) = total.and_then(|t| Layout::from_size_align(t, 64).ok()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"));
        };
        // SAFETY: the layout has a non-zero size (entries > 0, buf_size > 0).
        let bufs = NonNull::new(unsafe { alloc::alloc(bufs_layout) });
        let Some(bufs) = bufs else {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        };
        let mut pool = BufPool {
            entries,
            bufs,
            bufs_layout,
            buf_size,
            available: 0,
            owner: vec![KERNEL; entries as usize],
            deliveries: vec![Delivery::default(); entries as usize],
            feed,
        };
        for bid in 0..entries {
            pool.push(bid);
        }
        pool.feed.publish();
        Ok(pool)
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
            self.feed.publish();
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
        let addr = self.buf_ptr(bid).map_or(0, |p| p.as_ptr() as u64);
        self.feed.push(bid, addr, self.buf_size);
        self.available += 1;
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the reactor drops a
        // pool only after the kernel finished every operation that could
        // use it (a shutdown that times out waiting for the kernel leaks
        // the pools instead: `Driver::leak_buf_rings`) and its ring was
        // unregistered or closed. The feed drops after this.
        unsafe { alloc::dealloc(self.bufs.as_ptr(), self.bufs_layout) };
    }
}
