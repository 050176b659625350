//! Sockets: [`TcpListener`], [`TcpStream`], [`UdpSocket`], [`UnixListener`],
//! [`UnixStream`] and [`UnixDatagram`].
//!
//! # Buffers
//!
//! Streams are built on completion operations, and their buffers are
//! designed so that an idle connection pins no receive memory, and the
//! steady state allocates nothing:
//!
//! * **Reads** use one multishot recv per stream, armed on first read, that
//!   receives into a **provided buffer ring** shared by every stream of the
//!   executor (1024 buffers of 4 KiB). A completion names the buffer it
//!   filled; the stream holds it until its last byte is read, then returns
//!   it to the ring at once. Back pressure is per stream: a stream that
//!   holds 64 buffers (queued for it, or received and not yet read) stops
//!   its recv, which re-arms once it gives some back, so streams whose
//!   peers keep sending while the application does not read them cannot
//!   take every buffer from the others. The cap is soft by one batch: the
//!   kernel may deliver up to about 32 more in the wake-up that crossed it,
//!   so a stalled stream holds at most about 96 buffers (384 KiB), and only
//!   about ten such streams together can run the ring dry. When it does
//!   run dry the kernel stops the recvs and the reactor re-arms them once
//!   buffers come back: back pressure, not loss. Read every stream you
//!   accept, or drop it. On kernels without buffer rings, a one-shot recv into a
//!   16 KiB buffer owned by the stream takes its place.
//! * **Writes** are first tried inline, by a non-blocking `send(2)`
//!   (`MSG_DONTWAIT | MSG_NOSIGNAL`): a write the socket buffer takes costs
//!   no operation and no completion. Only when it is full (`EAGAIN`) are the
//!   bytes copied into one buffer owned by the stream (up to 64 KiB per
//!   write) and one send submitted; `poll_write` returns as soon as the
//!   bytes are copied, and the next write, flush or close waits for that
//!   send to finish and reports its error. At most one send is in flight per stream,
//!   so bytes go out in order. The buffer is kept between writes, so its
//!   capacity is that of the largest write so far (at most 64 KiB).
//!
//! * **One registration per stream** carries the completions of its reads,
//!   writes, connect and shutdown, so an idle stream costs one reactor slot
//!   and its own state (about 500 bytes connected in all). A reader and a
//!   writer in two tasks (a `split` stream) each keep their waker apart, so
//!   neither misses a wake-up (see `stream.rs`, `Wakers`).
//!
//! **A dropped read never loses data.** Received bytes belong to the stream,
//! not to the future that asked for them: the receive stays armed when a
//! read future is dropped, every completion it makes (however many arrive
//! between two reads) is queued in the stream in order, and the next read
//! returns the bytes. The tests `a_dropped_read_*` and
//! `many_chunks_queued_before_a_read_all_arrive_in_order` check this.
//!
//! Dropping a stream cancels its operations (the reactor keeps their buffers
//! until the kernel lets go) and closes the fd through the ring, after every
//! operation already queued for it, so a reused fd number never sees them.
//! A send still in flight may therefore be cut short: as with any buffered
//! writer, `flush` (or `close`) a stream before dropping it if the last
//! bytes written must reach the peer.
//!
//! Datagram sockets use readiness: a multishot poll raises a counted signal,
//! and `recv_from`/`send_to` are non-blocking syscalls.
//!
//! Listeners and datagram sockets take `&self`, so several tasks may wait
//! on one at once; a waiter that goes away (dropped by a `timeout` or
//! `select!`), or that takes the readiness another needed, does not leave
//! the others waiting forever (see `waiters.rs`).

/// Implements the futures-io traits (and, with the `tokio-io` feature,
/// tokio's) for a type with an `io: StreamIo` field: the reading ones with
/// `read:`, the writing ones with `write:`, and both with neither (a
/// socket; a child's stdin only writes and its stdout only reads).
macro_rules! stream_traits {
    ($ty:ty) => {
        $crate::net::stream_traits!(read: $ty);
        $crate::net::stream_traits!(write: $ty);
    };
    (read: $ty:ty) => {
        impl futures::io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.get_mut().io.poll_read(cx, buf)
            }
        }

        impl futures::io::AsyncBufRead for $ty {
            fn poll_fill_buf(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<&[u8]>> {
                self.get_mut().io.poll_fill_buf(cx)
            }

            fn consume(self: std::pin::Pin<&mut Self>, amt: usize) {
                self.get_mut().io.consume(amt)
            }
        }

        /// With the `tokio-io` feature. A read copies from the received
        /// chunk straight into the `ReadBuf`'s unfilled part (no zeroing
        /// first): the one copy the futures-io read makes too.
        #[cfg(feature = "tokio-io")]
        impl tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if buf.remaining() == 0 {
                    return std::task::Poll::Ready(Ok(()));
                }
                let io = &mut self.get_mut().io;
                let chunk = std::task::ready!(io.poll_fill_buf(cx))?;
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                io.consume(n);
                std::task::Poll::Ready(Ok(()))
            }
        }
    };
    (write: $ty:ty) => {
        impl futures::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.get_mut().io.poll_write(cx, buf)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.get_mut().io.poll_flush(cx)
            }

            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.get_mut().io.poll_close(cx)
            }
        }

        /// With the `tokio-io` feature; `poll_shutdown` is `poll_close`.
        #[cfg(feature = "tokio-io")]
        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.get_mut().io.poll_write(cx, buf)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.get_mut().io.poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.get_mut().io.poll_close(cx)
            }
        }
    };
}
pub(crate) use stream_traits;

mod addr;
mod datagram;
mod stream;
mod tcp;
mod unix;
mod waiters;

pub(crate) use stream::StreamIo;

pub use addr::ToSocketAddrs;
pub use datagram::{UdpSocket, UnixDatagram};
pub use tcp::{TcpListener, TcpStream};
pub use unix::{UnixListener, UnixStream};
