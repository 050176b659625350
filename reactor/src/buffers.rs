//! Provided buffers, as users see them: [`RecvBuf`] lends one buffer out
//! of its group (a [`BufGroup`](crate::BufGroup)) until dropped.

use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;

use crate::core::Inner;

/// One received buffer, lent out of its ring. Dropping it hands the buffer
/// back to the kernel.
pub struct RecvBuf {
    pub(crate) inner: Rc<Inner>,
    pub(crate) group: u16,
    pub(crate) bid: u16,
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
}

impl Deref for RecvBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the ring marked buffer `bid` CLAIMED for this guard alone,
        // so the kernel cannot write it until `drop` recycles it; `len` is
        // the length the ring recorded from the kernel's own completion when
        // it delivered the buffer (clamped to the buffer size), so the
        // kernel wrote every one of those bytes; and the `Rc<Inner>` keeps
        // the ring's memory alive.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        match self.inner.core.try_borrow_mut() {
            Ok(mut core) => {
                let holder = core.driver.buf_ring(self.group).and_then(|r| r.recycle(self.bid));
                if let Some(holder) = holder {
                    core.buffer_returned(holder);
                }
            }
            // Dropped from inside the reactor: the buffer stays out of the
            // ring (lost to it, never unsound) rather than risk a double
            // borrow. The one user code that runs under the core borrow is
            // `Waker::clone` (storing a registration's waker), so only a
            // waker whose clone drops a RecvBuf gets here.
            Err(_) => debug_assert!(false, "RecvBuf dropped while the reactor was busy"),
        }
    }
}

impl fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBuf")
            .field("group", &self.group)
            .field("bid", &self.bid)
            .field("len", &self.len)
            .finish()
    }
}
