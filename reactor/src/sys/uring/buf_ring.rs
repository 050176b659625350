//! A provided-buffer ring registered with io_uring
//! (`IORING_REGISTER_PBUF_RING`): page-aligned anonymous memory holding one
//! descriptor per free buffer, which the kernel reads. Which buffers are
//! free, and the buffers themselves, are `sys::buffers`' business.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The descriptor ring of one buffer group.
pub(crate) struct KernelRing {
    entries: u16,
    ring: NonNull<BufRingEntry>,
    ring_bytes: usize,
    /// Our copy of the tail; published to the kernel with a Release store.
    tail: u16,
}

impl KernelRing {
    /// Maps a ring of `entries` descriptors (a power of two). Registering
    /// it is the caller's job.
    pub(crate) fn new(entries: u16) -> io::Result<KernelRing> {
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
        Ok(KernelRing { entries, ring, ring_bytes, tail: 0 })
    }

    pub(crate) fn addr(&self) -> u64 {
        self.ring.as_ptr() as u64
    }

    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    /// Writes a descriptor for buffer `bid` past the published tail.
    pub(crate) fn push(&mut self, bid: u16, addr: u64, len: u32) {
        let index = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: index < entries, inside the mapping; the kernel only reads
        // entries between its head and our published tail, and this one is
        // past the tail until `publish`.
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        entry.set_addr(addr);
        entry.set_len(len);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Shows the kernel every descriptor pushed so far.
    pub(crate) fn publish(&self) {
        // SAFETY: `ring` is the page-aligned base of the ring, mapped in
        // `new`; the tail overlays entry 0's `resv` field, which is what the
        // kernel reads as the tail. It is a naturally aligned u16.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        // Release: the entries written before must be visible to the kernel
        // before it sees the new tail.
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for KernelRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; the ring was
        // unregistered, or the io_uring closed, before (see `Uring`'s Drop
        // and `Driver`'s field order), or it is leaked instead.
        unsafe { libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes) };
    }
}
