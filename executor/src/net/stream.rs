//! The machinery every stream socket and listener shares: completion-based
//! reads, writes, accepts and close.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll, ready};

use tally_reactor::{
    BufGroup, Cancel, CompletionPacket, Op, OpId, PacketList, RecvBuf, Registration,
};

use super::waiters::{Waiter, Waiters};
use crate::context;
use crate::sys::syscall;

/// Bytes per write op.
const WRITE_MAX: usize = 64 * 1024;
/// Bytes per one-shot read on kernels without buffer rings.
const OWNED_READ: usize = 16 * 1024;

/// Received bytes waiting to be read.
enum Chunk {
    Ring(RecvBuf),
    Owned(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Ring(b) => b,
            Chunk::Owned(v) => v,
        }
    }
}

/// A connected stream socket's I/O state.
pub(crate) struct StreamIo {
    fd: Option<OwnedFd>,
    /// Reads' completions; its waker is the reader's.
    rd: Registration,
    /// Writes', connect's and shutdown's completions; the writer's waker.
    wr: Registration,
    group: Option<BufGroup>,
    read_op: Option<OpId>,
    /// Received bytes not yet read, oldest first. They belong to the
    /// stream, not to any read future, so a dropped read loses nothing.
    received: VecDeque<Chunk>,
    /// The chunk being read, and how much of it has been read.
    current: Option<(Chunk, usize)>,
    /// A spare owned read buffer (kernels without buffer rings).
    spare: Vec<u8>,
    read_eof: bool,
    read_err: Option<io::Error>,
    write_buf: Vec<u8>,
    write_op: Option<OpId>,
    write_err: Option<io::Error>,
    shutdown_op: Option<OpId>,
    shut: bool,
}

fn errno(result: i32) -> io::Error {
    io::Error::from_raw_os_error(-result)
}

/// Drains `reg` until the completion of `op` arrives; other packets are
/// handed to `other`.
pub(crate) fn poll_op(
    reg: &Registration,
    op: OpId,
    cx: &mut Context<'_>,
    mut other: impl FnMut(CompletionPacket),
) -> Poll<CompletionPacket> {
    loop {
        let mut list = PacketList::new();
        ready!(reg.poll_drain_into(cx, &mut list));
        let mut found = None;
        for packet in list {
            if let Some(c) = packet.as_completion() {
                if c.op() == op && found.is_none() {
                    found = Some(c);
                } else {
                    other(c);
                }
            }
        }
        if let Some(c) = found {
            return Poll::Ready(c);
        }
    }
}

/// Submits `op` on `reg` and waits for its completion.
pub(crate) async fn run_op(reg: &Registration, op: Op) -> io::Result<CompletionPacket> {
    let id = reg.submit(op)?;
    let mut guard = CancelOnDrop { reg, op: Some(id) };
    let c = poll_fn(|cx| poll_op(reg, id, cx, |_| {})).await;
    guard.op = None;
    Ok(c)
}

/// Cancels an operation whose future was dropped before it completed.
pub(crate) struct CancelOnDrop<'a> {
    pub(crate) reg: &'a Registration,
    pub(crate) op: Option<OpId>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(op) = self.op {
            // The future that wanted the result is gone: if the op finished
            // first, its buffer goes too (its packet, handed back lent, is
            // freed at the next drain).
            if let Cancel::AlreadyCompleted(_) = self.reg.cancel(op) {
                drop(self.reg.reclaim(op));
            }
        }
    }
}

impl StreamIo {
    /// Wraps a connected socket. Must run inside an executor.
    pub(crate) fn new(fd: OwnedFd) -> StreamIo {
        let exec = context::current();
        StreamIo {
            fd: Some(fd),
            rd: exec.reactor.register(),
            wr: exec.reactor.register(),
            group: exec.recv_group(),
            read_op: None,
            received: VecDeque::new(),
            current: None,
            spare: Vec::new(),
            read_eof: false,
            read_err: None,
            write_buf: Vec::new(),
            write_op: None,
            write_err: None,
            shutdown_op: None,
            shut: false,
        }
    }

    /// Connects socket `fd` to `addr` through the ring.
    pub(crate) async fn connect(fd: OwnedFd, addr: std::net::SocketAddr) -> io::Result<StreamIo> {
        let io = StreamIo::new(fd);
        let c = run_op(&io.wr, Op::connect(io.raw_fd(), addr)).await?;
        if c.result < 0 {
            return Err(errno(c.result));
        }
        Ok(io)
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        self.fd.as_ref().expect("a stream owns its fd until dropped")
    }

    /// Handles one completion of the read op.
    fn on_read(&mut self, c: CompletionPacket) {
        if self.group.is_some() {
            if c.result > 0 {
                // Claim the buffer now: the bytes are the stream's from here
                // on, whoever reads them.
                match self.rd.buffer(&c) {
                    Some(buf) => self.received.push_back(Chunk::Ring(buf)),
                    None => debug_assert!(false, "a recv completion without its buffer: {c:?}"),
                }
            } else {
                self.end_read(c.result);
            }
            // A final completion with data only pauses the multishot recv
            // (the reactor re-arms it); one without data ends it.
            if !c.more() && c.result <= 0 {
                self.read_op = None;
            }
            return;
        }
        // One-shot recv into an owned buffer.
        let buf = self.rd.reclaim(c.op()).unwrap_or_default();
        self.read_op = None;
        if c.result > 0 {
            self.received.push_back(Chunk::Owned(buf));
        } else {
            self.spare = buf;
            self.end_read(c.result);
        }
    }

    /// Takes everything queued on the read registration: every completion
    /// of the read op, in order (a multishot recv may have completed many
    /// times since the last look). `Pending` if nothing was queued.
    fn poll_read_packets(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut list = PacketList::new();
        ready!(self.rd.poll_drain_into(cx, &mut list));
        for packet in list {
            let Some(c) = packet.as_completion() else { continue };
            if Some(c.op()) == self.read_op {
                self.on_read(c);
            } else {
                // Not ours any more: hand back the buffer it may name.
                self.rd.release_buffer(&c);
            }
        }
        Poll::Ready(())
    }

    fn end_read(&mut self, result: i32) {
        match result {
            0 => self.read_eof = true,
            r if r == -libc::ECANCELED || r == -libc::EINTR => {}
            r => self.read_err = Some(errno(r)),
        }
    }

    /// The next received bytes, waiting for some if needed. Empty at EOF.
    pub(crate) fn poll_fill_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        loop {
            if self.current.as_ref().is_some_and(|(chunk, pos)| *pos < chunk.bytes().len()) {
                let (chunk, pos) = self.current.as_ref().expect("checked above");
                return Poll::Ready(Ok(&chunk.bytes()[*pos..]));
            }
            self.release_current();
            if let Some(chunk) = self.received.pop_front() {
                self.current = Some((chunk, 0));
                continue;
            }
            if let Some(e) = self.read_err.take() {
                return Poll::Ready(Err(e));
            }
            if self.read_eof {
                return Poll::Ready(Ok(&[]));
            }
            if self.read_op.is_none() {
                let op = match self.group {
                    Some(group) => Op::recv_multi(self.raw_fd(), group),
                    None => {
                        let mut buf = std::mem::take(&mut self.spare);
                        buf.clear();
                        buf.reserve(OWNED_READ);
                        Op::recv(self.raw_fd(), buf, 0)
                    }
                };
                self.read_op = Some(self.rd.submit(op)?);
            }
            ready!(self.poll_read_packets(cx));
        }
    }

    /// Lets go of the current chunk: a ring buffer goes back to the kernel,
    /// an owned one becomes the spare.
    fn release_current(&mut self) {
        if let Some((Chunk::Owned(v), _)) = self.current.take() {
            self.spare = v;
        }
    }

    pub(crate) fn consume(&mut self, n: usize) {
        if let Some((chunk, pos)) = &mut self.current {
            *pos = (*pos + n).min(chunk.bytes().len());
            if *pos == chunk.bytes().len() {
                // Fully read: return a ring buffer at once rather than at
                // the next read, so an idle stream holds none.
                self.release_current();
            }
        }
    }

    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if dst.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let src = ready!(self.poll_fill_buf(cx))?;
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
        self.consume(n);
        Poll::Ready(Ok(n))
    }

    /// Waits for the send in flight, resubmitting the rest of a short send.
    fn poll_write_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(op) = self.write_op {
            let c = ready!(poll_op(&self.wr, op, cx, |_| {}));
            let mut buf = self.wr.reclaim(op).unwrap_or_default();
            self.write_op = None;
            if c.result < 0 {
                if c.result != -libc::EINTR {
                    self.write_err = Some(errno(c.result));
                    buf.clear();
                    self.write_buf = buf;
                    break;
                }
            } else {
                buf.drain(..(c.result as usize).min(buf.len()));
            }
            if buf.is_empty() {
                self.write_buf = buf;
            } else {
                self.write_op = Some(self.wr.submit(Op::send(self.raw_fd(), buf, 0))?);
            }
        }
        match self.write_err.take() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        src: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_write_idle(cx))?;
        if self.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream shut down for writing",
            )));
        }
        if src.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = src.len().min(WRITE_MAX);
        let mut buf = std::mem::take(&mut self.write_buf);
        buf.clear();
        buf.extend_from_slice(&src[..n]);
        self.write_op = Some(self.wr.submit(Op::send(self.raw_fd(), buf, 0))?);
        Poll::Ready(Ok(n))
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_idle(cx)
    }

    /// Flushes, then shuts down the writing half.
    pub(crate) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_idle(cx))?;
        if self.shut {
            return Poll::Ready(Ok(()));
        }
        let op = match self.shutdown_op {
            Some(op) => op,
            None => {
                let op = self.wr.submit(Op::shutdown(self.raw_fd(), libc::SHUT_WR))?;
                self.shutdown_op = Some(op);
                op
            }
        };
        let c = ready!(poll_op(&self.wr, op, cx, |_| {}));
        self.shutdown_op = None;
        self.shut = true;
        if c.result < 0 && c.result != -libc::ENOTCONN {
            return Poll::Ready(Err(errno(c.result)));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            close_after_queued(&self.wr, fd);
        }
    }
}

/// Closes `fd` through the ring, so that the close runs after every SQE
/// already queued for it (pushed this crank, not yet submitted): those
/// then run against this socket, never against a new one that reused the
/// fd number. A cancel is asynchronous, so closing at once would not do.
///
/// If the ring refuses the op, `submit` drops it, and dropping an unrun
/// close closes the fd: it is closed exactly once either way.
pub(crate) fn close_after_queued(reg: &Registration, fd: OwnedFd) {
    drop(reg.submit(Op::close(fd)));
}

/// The accept queue `TcpListener::bind` asks for: as long as the kernel
/// allows (`net.core.somaxconn`, 4096 by default), which a negative backlog
/// means to Linux, as std's `UnixListener` already asks. std's TCP
/// listener asks for 128, and a burst of connects beyond that, made before
/// the listener's multishot accept next runs (when the reactor enters the
/// kernel), has its SYNs dropped and retried a whole second later.
const LISTEN_BACKLOG: i32 = -1;

/// Widens the accept queue of listening socket `fd` to [`LISTEN_BACKLOG`]:
/// calling `listen(2)` again on a listening socket only changes its
/// backlog.
pub(crate) fn widen_backlog(fd: RawFd) -> io::Result<()> {
    // listen(2) takes no pointers; a bad fd is an error, not UB.
    syscall!(listen(fd, LISTEN_BACKLOG))?;
    Ok(())
}

/// Stops a listening socket at once, for a listener being dropped. Its
/// multishot accept holds the socket open until the kernel has processed
/// the cancel, at the reactor's next turn, and until then the address
/// stays in use; `shutdown(2)` stops the listening now, so the address can
/// be bound again right away (std listeners set `SO_REUSEADDR`) and new
/// connects are refused.
fn stop_listening(fd: RawFd) {
    // shutdown(2) takes no pointers; its errors change nothing.
    let _ = syscall!(shutdown(fd, libc::SHUT_RDWR));
}

/// A listening socket's accept state: one multishot accept, armed on the
/// first accept, whose fds queue here until taken.
///
/// Several tasks may wait in `accept` at once, but the registration keeps
/// only the waker of the last to poll it. So each waiting accept also keeps
/// its waker in `waiters`, and an accept that returns or is dropped wakes
/// one of the others: it takes the next queued connection if there is one,
/// or polls the registration again, putting its own waker there. None is
/// left behind by a poller that went away (see [`Waiters`]).
pub(crate) struct Acceptor {
    reg: Registration,
    op: Option<OpId>,
    ready: VecDeque<OwnedFd>,
    err: Option<io::Error>,
    waiters: Waiters,
}

impl Acceptor {
    /// Stops the listening socket `fd` at once and closes it after the
    /// accept this acceptor may have queued this crank, which must not run
    /// against a socket that reuses the fd number (see
    /// [`close_after_queued`]).
    pub(crate) fn close_listener(&self, fd: OwnedFd) {
        stop_listening(fd.as_raw_fd());
        close_after_queued(&self.reg, fd);
    }

    /// Accepts the next connection on listening socket `fd`, wraps it with
    /// `wrap`, and returns it with its peer address (`peer`). A connection
    /// reset while it waited in the accept queue answers `ENOTCONN` there:
    /// the listener is healthy, so that connection is closed and skipped.
    pub(crate) async fn accept<S, A>(
        acceptor: &RefCell<Acceptor>,
        fd: RawFd,
        wrap: impl Fn(OwnedFd) -> S,
        peer: impl Fn(&S) -> io::Result<A>,
    ) -> io::Result<(S, A)> {
        let mut waiter = Waiter::new(acceptor, |a| &mut a.waiters);
        loop {
            let stream = wrap(poll_fn(|cx| Acceptor::poll(acceptor, fd, &mut waiter, cx)).await?);
            match peer(&stream) {
                Ok(addr) => return Ok((stream, addr)),
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn new() -> Acceptor {
        Acceptor {
            reg: context::current().reactor.register(),
            op: None,
            ready: VecDeque::new(),
            err: None,
            waiters: Waiters::new(),
        }
    }

    /// Polls `acceptor` (listening on `fd`) for a connection, for the
    /// accept that `waiter` is; when it must wait, its waker joins the
    /// waiters, after the borrow ends.
    fn poll(
        acceptor: &RefCell<Acceptor>,
        fd: RawFd,
        waiter: &mut Waiter<'_, Acceptor>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<OwnedFd>> {
        let result = acceptor.borrow_mut().poll_accept(fd, cx);
        if result.is_pending() {
            waiter.wait(cx.waker());
        }
        result
    }

    fn poll_accept(&mut self, fd: RawFd, cx: &mut Context<'_>) -> Poll<io::Result<OwnedFd>> {
        loop {
            if let Some(fd) = self.ready.pop_front() {
                return Poll::Ready(Ok(fd));
            }
            if let Some(e) = self.err.take() {
                return Poll::Ready(Err(e));
            }
            let op = match self.op {
                Some(op) => op,
                None => {
                    let op = self.reg.submit(Op::accept_multi(fd))?;
                    self.op = Some(op);
                    op
                }
            };
            let mut list = PacketList::new();
            ready!(self.reg.poll_drain_into(cx, &mut list));
            for packet in list {
                let Some(c) = packet.as_completion() else { continue };
                if c.op() != op {
                    continue;
                }
                if let Some(fd) = self.reg.take_fd(&c) {
                    self.ready.push_back(fd);
                } else if c.result >= 0 {
                    debug_assert!(false, "an accept completion without its fd: {c:?}");
                } else if c.result != -libc::ECANCELED && c.result != -libc::EINTR {
                    self.err = Some(errno(c.result));
                }
                if !c.more() && c.result < 0 {
                    self.op = None;
                }
            }
        }
    }
}
