//! [`Registration`]: a consumer's end of the reactor. Packets for it queue in
//! the reactor; polling it hands over everything queued as one list (or,
//! with [`Registration::poll_signal`], its counted signal alone when that is
//! all there is).

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tally_packets::{CompletionPacket, PacketList, SignalPacket, Token};

use crate::buffers::RecvBuf;
use crate::core::{Inner, SignalTake};

use crate::op::{Cancel, Op, OpId};
use crate::remote::{Sender, Signaler};

/// A registration with a [`Reactor`](crate::Reactor). `!Send` and `!Sync`.
///
/// Everything delivered to it (completions of the operations it submits,
/// readiness edges, raises from its [`Signaler`]s, payloads from its
/// [`Sender`]s) waits in its bounded queue until drained. A woken
/// registration is expected to be drained in the same crank; one left
/// undrained is counted in [`Metrics::undrained`](crate::Metrics::undrained).
///
/// # What packets own
///
/// A completion may carry a resource: an accept's new fd, or a provided
/// buffer with received bytes. Packets are plain `Copy` data, so the
/// registration keeps ownership: a drain **lends** those resources until
/// the registration's next drain. Take what you want to keep before then,
/// an fd with [`take_fd`](Self::take_fd) and a buffer with
/// [`buffer`](Self::buffer); the next drain (or the registration's drop)
/// closes the fds and returns to the kernel the buffers nobody took. So a
/// packet list dropped unhandled loses nothing for good, and a resource is
/// never freed twice. Never wrap an accept's `result` in an `OwnedFd`
/// yourself: the reactor would close it again.
///
/// Dropping it cancels its operations in flight (the reactor keeps their
/// buffers until the kernel lets go), frees what its packets carry (queued
/// or lent), and makes its signalers and senders fail with `BrokenPipe`.
pub struct Registration {
    inner: Rc<Inner>,
    token: Token,
}

impl Registration {
    pub(crate) fn new(inner: Rc<Inner>, token: Token) -> Registration {
        Registration { inner, token }
    }

    /// This registration's token: the key of every packet it receives.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Everything queued since the last drain, as one list, or `Pending`
    /// (storing the waker) when nothing is.
    pub fn poll_packets(&self, cx: &mut Context<'_>) -> Poll<PacketList> {
        let mut list = PacketList::new();
        match self.poll_drain_into(cx, &mut list) {
            Poll::Ready(()) => Poll::Ready(list),
            Poll::Pending => Poll::Pending,
        }
    }

    /// As [`poll_packets`](Self::poll_packets), appending to `out` so that
    /// a caller can reuse one list's allocation.
    pub fn poll_drain_into(&self, cx: &mut Context<'_>, out: &mut PacketList) -> Poll<()> {
        let mut core = self.inner.core.borrow_mut();
        if core.drain(self.token, out) {
            return Poll::Ready(());
        }
        let replaced = core.set_waker(self.token, cx.waker());
        drop(core);
        drop(replaced);
        Poll::Pending
    }

    /// A drain for a registration that mostly hears signals (a readiness
    /// poll's edges): when its counted signal is all that is queued, it
    /// is taken without a packet list, `Ready(Some(signal))`; with nothing
    /// queued, `Pending`, storing the waker, as
    /// [`poll_drain_into`](Self::poll_drain_into). `Ready(None)` means more
    /// than a signal waits (completions, user packets, remote raises):
    /// drain with `poll_drain_into`, which hands over everything.
    pub fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<Option<SignalPacket>> {
        let taken = self.inner.core.borrow_mut().take_signal(self.token, cx.waker());
        match taken {
            SignalTake::Signal(signal) => Poll::Ready(Some(signal)),
            SignalTake::More => Poll::Ready(None),
            // The replaced waker drops here, outside the borrow.
            SignalTake::Waiting(_replaced) => Poll::Pending,
        }
    }

    /// A future that resolves to the next non-empty packet list.
    pub fn packets(&self) -> Packets<'_> {
        Packets { reg: self }
    }

    /// Everything queued now, possibly nothing. Never waits.
    pub fn try_drain(&self) -> PacketList {
        let mut list = PacketList::new();
        self.inner.core.borrow_mut().drain(self.token, &mut list);
        list
    }

    /// Submits `op`. Its completion arrives as a completion packet whose
    /// [`op()`](CompletionPacket::op) is the returned id.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an unknown buffer group. Errors the kernel finds
    /// (a closed fd, say) arrive as a completion with a negative result.
    #[inline]
    pub fn submit(&self, op: Op) -> io::Result<OpId> {
        self.inner.core.borrow_mut().submit(self.token, op)
    }

    /// As [`submit`](Self::submit), but an op the reactor refuses comes
    /// back with the error, unsubmitted, so that what it owns (a buffer:
    /// [`Op::into_buffer`]) is not lost.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit), with the op.
    #[inline]
    pub fn submit_or_return(&self, op: Op) -> Result<OpId, (io::Error, Op)> {
        self.inner.core.borrow_mut().submit_or_return(self.token, op)
    }

    /// Cancels operation `op`: no packet for it is delivered after this.
    /// Completions of it that already arrived but were not yet drained are
    /// handed back in the answer, which also says whether the op was still
    /// live ([`Cancel::Cancelled`]) or had finished first
    /// ([`Cancel::AlreadyCompleted`]: a read's bytes then wait for
    /// [`reclaim`](Self::reclaim)). Completions the kernel makes after this
    /// are reclaimed (fds closed, buffers returned), never delivered.
    pub fn cancel(&self, op: OpId) -> Cancel {
        self.inner.core.borrow_mut().cancel(self.token, op)
    }

    /// The fd that an accept completion carries, now the caller's. `None`
    /// if the packet carries no fd, was not lent to this registration by
    /// its last drain (or by [`cancel`](Self::cancel) since), or its fd was
    /// already taken. An fd not taken before the next drain is closed.
    pub fn take_fd(&self, completion: &CompletionPacket) -> Option<OwnedFd> {
        self.inner.core.borrow_mut().take_fd(self.token, completion)
    }

    /// The buffer of a finished read, write, recv or send, once its
    /// completion packet has been delivered: reads come back with the bytes
    /// read appended. `None` if `op` is not finished, not ours, or already
    /// reclaimed.
    pub fn reclaim(&self, op: OpId) -> Option<Vec<u8>> {
        self.inner.core.borrow_mut().reclaim(self.token, op)
    }

    /// The provided buffer a completion packet names, lent until dropped.
    /// Claim it before the registration's next drain, which hands unclaimed
    /// buffers back to the kernel. `None` if the packet names no buffer, if
    /// it was already claimed or handed back, if
    /// it was delivered to another registration, or if the packet is a
    /// stale copy: the buffer went back to the kernel and was delivered
    /// again since, to a later packet that names the same buffer id with a
    /// newer [`generation`](tally_packets::BufferRef::generation).
    ///
    /// The buffer's length is what the kernel reported when it delivered
    /// the buffer, as the reactor recorded it, never the packet's `result`
    /// (a public field that safe code may change).
    pub fn buffer(&self, completion: &CompletionPacket) -> Option<RecvBuf> {
        let b = completion.buffer()?;
        let mut core = self.inner.core.borrow_mut();
        let ring = core.driver.buf_ring(b.group)?;
        let ptr = ring.buf_ptr(b.id)?;
        let len = ring.claim(b.id, b.generation, self.token.as_u64())?;
        drop(core);
        Some(RecvBuf { inner: self.inner.clone(), group: b.group, bid: b.id, ptr, len })
    }

    /// Hands the provided buffer a completion names back to the kernel
    /// without reading it. Does nothing for a packet that
    /// [`buffer`](Self::buffer) would refuse.
    pub fn release_buffer(&self, completion: &CompletionPacket) {
        if let Some(buf) = self.buffer(completion) {
            drop(buf);
        }
    }

    /// A handle that raises this registration's counted signal from any
    /// thread.
    pub fn signaler(&self) -> Signaler {
        Signaler::new(self.shared())
    }

    /// A handle that sends user packets to this registration from any
    /// thread.
    pub fn sender(&self) -> Sender {
        Sender::new(self.shared())
    }

    fn shared(&self) -> std::sync::Arc<crate::remote::Shared> {
        self.inner.core.borrow_mut().shared(self.token).expect("a live registration has a slot")
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        match self.inner.core.try_borrow_mut() {
            Ok(mut core) => {
                let garbage = core.deregister(self.token);
                drop(core);
                drop(garbage);
            }
            Err(_) => self.inner.deferred.borrow_mut().push(self.token),
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration").field("token", &self.token).finish()
    }
}

/// The future returned by [`Registration::packets`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Packets<'a> {
    reg: &'a Registration,
}

impl Future for Packets<'_> {
    type Output = PacketList;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PacketList> {
        self.reg.poll_packets(cx)
    }
}
