//! hyper 1.x on a [`LocalReactor`](crate::LocalReactor), with the `hyper`
//! feature: what `hyper::rt` asks a runtime for.
//!
//! * **I/O.** [`TcpStream`] and [`UnixStream`] implement
//!   [`hyper::rt::Read`] and [`hyper::rt::Write`] themselves, so a stream
//!   goes straight to `serve_connection`, with no wrapper. A read builds no
//!   operation: the stream's multishot recv is already armed and its
//!   received chunks are queued in the stream, so a read copies from the
//!   front chunk straight into the unfilled (uninitialised) part of hyper's
//!   buffer and advances it, as hyper-util's `TokioIo` does with a tokio
//!   `ReadBuf`. That is the one copy the `futures-io` read makes too. A
//!   write is the stream's write: an inline `send(2)` first, a ring send
//!   only when the socket buffer is full (or when many streams send at once
//!   and one kernel entry for all of them is cheaper). **A flush does not
//!   wait for a send in flight**: the bytes are already the reactor's, sent
//!   in order, which is what a tokio `TcpStream`'s flush (a no-op) gives
//!   hyper. Waiting kept hyper "mid-message" after the peer had the whole
//!   response, and a peer that then closed made hyper end the connection
//!   with "connection closed before message completed" (seen in W7 under
//!   load). The flush still reports a finished send's error and keeps the
//!   task's waker, so hyper flushes again when the send completes;
//!   `poll_shutdown` and the next write wait for it. Writes are not
//!   vectored, so hyper flattens a response's head and body into one
//!   buffer: one send.
//! * **Executor.** [`LocalExec`] spawns hyper's background futures on the
//!   current executor with [`spawn`](crate::spawn). hyper's HTTP/1 server
//!   needs none; HTTP/2 users would.
//! * **Timer.** [`LocalTimer`] makes hyper's sleeps (its header read
//!   timeout, for one) tally timers: a sleep is one entry in the executor's
//!   timer heap, no kernel timeout of its own.
//!
//! # Sleeps and `Send`
//!
//! hyper asks for `Sleep: Send + Sync`, and tally's timers are per thread:
//! a [`time::Sleep`] holds a handle to its executor and is `!Send`. As
//! compio does for its hyper timer, [`LocalSleep`] wraps one and records the
//! thread that made it. It is `Send`, but its sleep is only ever touched on
//! that thread: polling or resetting it anywhere else panics, and dropping
//! it anywhere else leaks the inner sleep (its timer then fires once, to no
//! one) rather than touch it. hyper polls a connection's sleeps where it
//! polls the connection, which on a `LocalReactor` is its own thread, so
//! neither happens in practice.
//!
//! # Example
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use http_body_util::Full;
//! use hyper::body::Bytes;
//! use hyper::service::service_fn;
//! use hyper::{Request, Response};
//! use tally::hyper::LocalTimer;
//! use tally::net::TcpListener;
//!
//! async fn hello(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     Ok(Response::new(Full::new(Bytes::from_static(b"Hello, world!\n"))))
//! }
//!
//! let rt = tally::LocalReactor::new()?;
//! rt.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:8080")?;
//!     # if false { return Ok::<(), std::io::Error>(()); }
//!     loop {
//!         let (stream, _) = listener.accept().await?;
//!         tally::spawn(async move {
//!             let conn = hyper::server::conn::http1::Builder::new()
//!                 .timer(LocalTimer)
//!                 .serve_connection(stream, service_fn(hello));
//!             if let Err(e) = conn.await {
//!                 eprintln!("connection: {e}");
//!             }
//!         });
//!     }
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use futures::io::{AsyncBufRead, AsyncWrite};
use hyper::rt::ReadBufCursor;

use crate::context;
use crate::net::{TcpStream, UnixStream};
use crate::time;

/// Fills hyper's cursor from the stream's front received chunk: waits for
/// one if none is queued (the multishot recv is armed on the first read),
/// copies what fits, and consumes it. Copies nothing at EOF, which hyper
/// reads as EOF.
fn poll_read_into<S: AsyncBufRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    mut buf: ReadBufCursor<'_>,
) -> Poll<io::Result<()>> {
    if buf.remaining() == 0 {
        return Poll::Ready(Ok(()));
    }
    let chunk = ready!(Pin::new(&mut *stream).poll_fill_buf(cx))?;
    let n = chunk.len().min(buf.remaining());
    // Writes into the unfilled part without zeroing it first, and advances.
    buf.put_slice(&chunk[..n]);
    Pin::new(stream).consume(n);
    Poll::Ready(Ok(()))
}

/// hyper's flush: ready once the bytes written are the reactor's, without
/// waiting for the send in flight to complete.
///
/// A write either went out inline or is a send the reactor holds, in
/// order, so nothing is left to push: this is what a tokio `TcpStream`'s
/// flush (a no-op) gives hyper. Waiting for the completion instead would
/// keep hyper "mid-message" after the peer already has the whole response;
/// a peer that then closes (a benchmark client at its end, or a client
/// that half-closes after its request) makes hyper read that EOF as
/// "connection closed before message completed", end the connection with
/// an error, and drop the stream with the send still in flight.
///
/// The flush is still polled: a finished send's error is reported here, a
/// short send's rest is resubmitted, and when the send is still in flight
/// the task's waker is kept, so it is woken when the send completes and
/// hyper (which flushes at each turn of its loop) flushes again.
/// `poll_shutdown` does wait for it, as does the next write.
///
/// If hyper drops the stream without a shutdown (its error paths), the
/// reactor still hands a queued send to the kernel before it cancels it,
/// so a send the socket has room for goes out, as a tokio write would
/// have; one still waiting for room is cut short, as tokio's would be.
fn poll_flush_handed_over<S: AsyncWrite + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    match Pin::new(stream).poll_flush(cx) {
        Poll::Pending => Poll::Ready(Ok(())),
        done => done,
    }
}

/// Implements `hyper::rt::{Read, Write}` for a stream type through its
/// `futures-io` traits.
macro_rules! hyper_io {
    ($ty:ty) => {
        /// With the `hyper` feature: reads copy from the received chunk
        /// straight into hyper's buffer; no operation per read.
        impl hyper::rt::Read for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: ReadBufCursor<'_>,
            ) -> Poll<io::Result<()>> {
                poll_read_into(self.get_mut(), cx, buf)
            }
        }

        /// With the `hyper` feature: the stream's own writes. `poll_flush`
        /// reports a finished send's error but does not wait for the send
        /// in flight; `poll_shutdown` waits for it, then shuts the writing
        /// half.
        impl hyper::rt::Write for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                AsyncWrite::poll_write(self, cx, buf)
            }

            /// Does not wait for a send in flight (see the module doc).
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                poll_flush_handed_over(self.get_mut(), cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                AsyncWrite::poll_close(self, cx)
            }
        }
    };
}

hyper_io!(TcpStream);
hyper_io!(UnixStream);

/// A [`hyper::rt::Executor`] that spawns on the executor running on the
/// calling thread, with [`spawn`](crate::spawn); the task is detached.
///
/// # Panics
///
/// `execute` panics outside a running tally executor, as `spawn` does.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        drop(crate::spawn(fut));
    }
}

/// A [`hyper::rt::Timer`] on the timers of the executor running on the
/// calling thread: give it to hyper's builders with `.timer(LocalTimer)`.
///
/// Its sleeps are [`LocalSleep`]s: see the [module doc](self) for why they
/// are `Send` and what happens off their thread. Its clock is the
/// executor's ([`time::now`]), fake under a
/// [`TestExecutor`](crate::TestExecutor), and the real one outside any
/// executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalTimer;

impl hyper::rt::Timer for LocalTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(LocalSleep::new(time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(LocalSleep::new(time::sleep_until(deadline)))
    }

    fn now(&self) -> Instant {
        match context::try_current() {
            Some(exec) => exec.clock.now(),
            None => Instant::now(),
        }
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<LocalSleep>() {
            Some(mine) => mine.get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

thread_local! {
    /// This thread's id, cached: a `Cell` of a `Copy` value has no
    /// destructor, so it can be read even while the thread's other
    /// thread-locals are being destroyed (a sleep dropped with its
    /// executor from one of them).
    static THREAD_ID: Cell<Option<ThreadId>> = const { Cell::new(None) };
}

/// The calling thread's id.
fn thread_id() -> ThreadId {
    THREAD_ID.with(|id| match id.get() {
        Some(id) => id,
        None => {
            let me = thread::current().id();
            id.set(Some(me));
            me
        }
    })
}

/// A tally [`time::Sleep`] that hyper may hold as a `Send + Sync`
/// [`hyper::rt::Sleep`], used only on the thread that made it.
///
/// # Panics
///
/// Polling or resetting it on another thread panics. Dropping it on
/// another thread does not: the inner sleep is leaked there.
pub struct LocalSleep {
    /// The thread whose executor the sleep belongs to: the only thread that
    /// may touch `sleep`.
    owner: ThreadId,
    /// A copy of the deadline, readable from any thread.
    deadline: Instant,
    /// Touched (polled, reset, dropped) only on `owner`.
    sleep: ManuallyDrop<time::Sleep>,
}

// SAFETY: `sleep` is `!Send` because it holds a `Weak` to its executor,
// whose reference counts are not atomic. A `LocalSleep` moved to another
// thread only moves those bytes: every access to `sleep` (poll, reset,
// drop) first checks that it runs on `owner` and otherwise panics (poll,
// reset) or leaks `sleep` untouched (drop). So the counts are only ever
// read or written on the thread that made them.
unsafe impl Send for LocalSleep {}

// SAFETY: no `&self` method reaches `sleep` (`Debug` prints `owner` and the
// `deadline` copy, plain `Copy` fields); only `&mut self`/`Pin<&mut Self>`
// methods do, and they check the thread as above.
unsafe impl Sync for LocalSleep {}

impl LocalSleep {
    /// Wraps `sleep`, made on (and to be polled on) the calling thread.
    pub fn new(sleep: time::Sleep) -> LocalSleep {
        LocalSleep {
            owner: thread_id(),
            deadline: sleep.deadline(),
            sleep: ManuallyDrop::new(sleep),
        }
    }

    /// The instant this sleep completes at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline, re-arming the timer.
    ///
    /// # Panics
    ///
    /// On a thread other than the one that made the sleep.
    pub fn reset(&mut self, deadline: Instant) {
        self.sleep_mut().reset(deadline);
        self.deadline = deadline;
    }

    /// The inner sleep, on its own thread.
    fn sleep_mut(&mut self) -> &mut time::Sleep {
        assert!(
            thread_id() == self.owner,
            "a tally::hyper::LocalSleep was used on a thread other than the one that made it \
             (tally's timers are per thread)"
        );
        &mut self.sleep
    }
}

impl Future for LocalSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(self.get_mut().sleep_mut()).poll(cx)
    }
}

impl hyper::rt::Sleep for LocalSleep {}

impl Drop for LocalSleep {
    fn drop(&mut self) {
        if thread_id() == self.owner {
            // SAFETY: `sleep` is dropped only here, once, and never used
            // after: `self` is being dropped.
            unsafe { ManuallyDrop::drop(&mut self.sleep) };
        }
        // On another thread, `sleep` is leaked untouched (see `Send`).
    }
}

impl fmt::Debug for LocalSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSleep")
            .field("owner", &self.owner)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
