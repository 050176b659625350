//! The machinery every stream socket and listener shares: completion-based
//! reads, writes, accepts and close; and the same for pipes (a child
//! process's stdin, stdout and stderr), which read and write with
//! `read(2)`/`write(2)` ops instead of `recv`/`send`.
//!
//! On the epoll backend a socket reads on readiness instead: its reactor
//! op is a multishot poll, whose edges fold into the registration's counted
//! signal, and `poll_read` makes the `recv(2)` itself, straight into the
//! caller's buffer, as mio and tokio do. There a completion-style recv is
//! the same syscall made by the reactor into a pool buffer, then copied:
//! one more copy, a buffer's bookkeeping and a completion per read, for
//! nothing epoll can do better. Writes are the same on both backends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker, ready};

use parking_lot::Mutex;

use tally_reactor::{
    BufGroup, Cancel, CompletionPacket, Op, OpId, PacketList, RecvBuf, Registration, Signals,
};

use super::waiters::{Waiter, Waiters};
use crate::context;
use crate::sys::syscall;

/// Bytes per write op.
const WRITE_MAX: usize = 64 * 1024;
/// Bytes per one-shot read on kernels without buffer rings.
const OWNED_READ: usize = 16 * 1024;
/// Bytes per read on a pipe: a pipe holds 64 KiB by default, so one read
/// can empty it.
const PIPE_READ: usize = 64 * 1024;

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

/// One side of a stream: the reading side or the writing side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Read,
    Write,
}

/// Who the stream's one registration wakes.
///
/// Reads and writes share one registration (a reactor slot per stream,
/// not two), and a registration keeps one waker. While one task drives
/// both sides (the usual case) that waker is the task's, and a drain by
/// either side that finds the other's completion wakes the task again only
/// if that other side is waiting. When a second task waits on the other
/// side (a stream `split` between a reader and a writer task), the stream
/// switches for good to a [`Pair`]: the registration then wakes both, each
/// side's own waker kept apart, so neither task's wake is lost when the
/// other polls last or goes away.
enum Wakers {
    /// The waker the registration was last given, if any.
    Solo(Option<Waker>),
    /// Two tasks: the registration wakes this pair.
    Pair(Arc<Pair>),
}

/// The reading and writing tasks' wakers, for a stream that two tasks use.
/// Waking it wakes (and takes) both; each side puts its waker back before
/// it next waits.
#[derive(Default)]
struct Pair {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl Pair {
    fn slot(&self, side: Side) -> &Mutex<Option<Waker>> {
        match side {
            Side::Read => &self.read,
            Side::Write => &self.write,
        }
    }

    /// Keeps `waker` as `side`'s.
    fn set(&self, side: Side, waker: &Waker) {
        let mut slot = self.slot(side).lock();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            let old = slot.replace(waker.clone());
            drop(slot);
            drop(old);
        }
    }

    /// Wakes `side`'s task, if it waits.
    fn wake_side(&self, side: Side) {
        let waker = self.slot(side).lock().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Wake for Pair {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_side(Side::Read);
        self.wake_side(Side::Write);
    }
}

/// A connected stream socket's I/O state.
///
/// Layout (x86-64): it is the only per-stream memory besides the reactor's
/// one registration slot, so what a stream needs only while it reads
/// (received chunks, an owned read buffer) or writes (the write buffer)
/// allocates nothing until used.
pub(crate) struct StreamIo {
    fd: Option<OwnedFd>,
    /// Every op's completions: reads, writes, connect and shutdown.
    reg: Registration,
    group: Option<BufGroup>,
    read_op: Option<OpId>,
    /// The send or the shutdown in flight (never both: a shutdown waits
    /// for the sends before it).
    write_op: Option<OpId>,
    /// The result of `write_op`, when a drain found it.
    write_done: Option<i32>,
    /// Received bytes not yet read, oldest first; the front one is being
    /// read, `read_pos` bytes of it already. They belong to the stream,
    /// not to any read future, so a dropped read loses nothing.
    received: VecDeque<Chunk>,
    read_pos: usize,
    /// A spare owned read buffer (kernels without buffer rings).
    spare: Vec<u8>,
    read_err: Option<io::Error>,
    write_buf: Vec<u8>,
    write_err: Option<io::Error>,
    wakers: Wakers,
    /// Whether each side last returned `Pending` (its task waits).
    read_waiting: bool,
    write_waiting: bool,
    read_eof: bool,
    /// With [`FdKind::ReadySocket`]: whether a `recv` may find bytes.
    readiness: Readiness,
    /// Whether `write_op` is a shutdown.
    shutting: bool,
    shut: bool,
    /// A pipe's write finishing in a background task after its stream
    /// was dropped (see `Drop`): dropping this one closes at once.
    lingering: bool,
    kind: FdKind,
}

/// What a stream's fd is, which decides its ops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FdKind {
    /// A socket: recv and send, and an inline `send(2)`.
    Socket,
    /// A socket that reads on readiness (the epoll backend; see the module
    /// doc): its read op is a multishot poll, and `recv(2)` is made inline.
    /// It writes as [`FdKind::Socket`] does.
    ReadySocket,
    /// A pipe in non-blocking mode: `read`/`write` ops (one-shot, into the
    /// stream's own buffer), and an inline `write(2)`; closing it closes
    /// the fd rather than shutting a half down.
    Pipe,
    /// A pipe put back in blocking mode because the ring answered an op
    /// with `EAGAIN` (io_uring before Linux 6.3 may, on a non-blocking
    /// file): its ops then wait in the kernel, and no write is tried
    /// inline, which would block the thread.
    BlockingPipe,
}

/// What a socket that reads on readiness knows of its receive queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Readiness {
    /// Empty at the last read (`EAGAIN`, or a read shorter than asked):
    /// its next bytes raise a new edge, so no `recv` is made until then.
    Empty,
    /// May have bytes: never read, or an edge since the last read.
    Ready,
    /// The peer closed, or the socket failed: the end of file or the error
    /// raises no later edge, so every read tries, short ones included.
    Closed,
    /// May have bytes, but this thread's reads have had their share of
    /// the crank (`context::note_full_read`): the next read yields first.
    Yield,
}

impl Readiness {
    /// Notes an edge of the read poll that observed `observed`.
    fn raise(&mut self, observed: Signals) {
        let closed = Signals::READ_CLOSED | Signals::ERROR;
        if observed.intersects(closed) {
            *self = Readiness::Closed;
        } else if *self == Readiness::Empty {
            *self = Readiness::Ready;
        }
        // Ready, Closed and Yield stay: the edge says nothing new.
    }
}

impl FdKind {
    fn is_socket(self) -> bool {
        matches!(self, FdKind::Socket | FdKind::ReadySocket)
    }
}

/// One non-blocking `send(2)` of `src` on socket `fd`: how much the
/// socket buffer took, or `WouldBlock` when it is full. A peer that reset
/// the connection gives `EPIPE` or `ECONNRESET`, never `SIGPIPE`.
fn send_now(fd: RawFd, src: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // send(2) reads `src.len()` bytes from a live slice.
    let n = syscall!(send(fd, src.as_ptr().cast(), src.len(), flags))?;
    Ok(n as usize)
}

/// One non-blocking `recv(2)` into `dst` on socket `fd`: how many bytes
/// it got (0: end of file), or `WouldBlock` when the socket is empty.
fn recv_now(fd: RawFd, dst: &mut [u8]) -> io::Result<usize> {
    // recv(2) writes at most `dst.len()` bytes into a live slice.
    let n = syscall!(recv(fd, dst.as_mut_ptr().cast(), dst.len(), libc::MSG_DONTWAIT))?;
    Ok(n as usize)
}

thread_local! {
    /// Where a small read on readiness lands first (see
    /// `StreamIo::read_ready`): one per thread, shared by its streams, so
    /// that an idle stream holds no read buffer.
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One `write(2)` of `src` on pipe `fd`, which is non-blocking
/// ([`StreamIo::pipe`] made it so): how much the pipe took, or
/// `WouldBlock` when it is full. A pipe whose reader is gone gives `EPIPE`
/// (and `SIGPIPE`, which Rust programs ignore unless they ask otherwise).
fn write_now(fd: RawFd, src: &[u8]) -> io::Result<usize> {
    // write(2) reads `src.len()` bytes from a live slice.
    let n = syscall!(write(fd, src.as_ptr().cast(), src.len()))?;
    Ok(n as usize)
}

/// Puts `fd` in non-blocking mode (its own file description only: the
/// other end of a pipe keeps its mode).
fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // fcntl(2) with F_GETFL/F_SETFL takes no pointers.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    if flags & libc::O_NONBLOCK == 0 {
        // As above.
        syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
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

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Read => Side::Write,
            Side::Write => Side::Read,
        }
    }
}

impl StreamIo {
    /// Wraps a connected socket. Must run inside an executor.
    pub(crate) fn new(fd: OwnedFd) -> StreamIo {
        let exec = context::current();
        if exec.ready_reads {
            return StreamIo::with(fd, exec.reactor.register(), None, FdKind::ReadySocket);
        }
        StreamIo::with(fd, exec.reactor.register(), exec.recv_group(), FdKind::Socket)
    }

    fn with(fd: OwnedFd, reg: Registration, group: Option<BufGroup>, kind: FdKind) -> StreamIo {
        StreamIo {
            fd: Some(fd),
            reg,
            group,
            read_op: None,
            write_op: None,
            write_done: None,
            received: VecDeque::new(),
            read_pos: 0,
            spare: Vec::new(),
            read_err: None,
            write_buf: Vec::new(),
            write_err: None,
            wakers: Wakers::Solo(None),
            read_waiting: false,
            write_waiting: false,
            read_eof: false,
            readiness: Readiness::Ready,
            shutting: false,
            shut: false,
            lingering: false,
            kind,
        }
    }

    /// Wraps one end of a pipe. It is made non-blocking, so that a write
    /// the pipe can take at once costs no op, as `send(2)` does for
    /// sockets; reads are one-shot `read` ops into the stream's own buffer
    /// (a multishot recv does not work on pipes), so a pipe never makes
    /// the executor set up its buffer ring. Must run inside an executor.
    ///
    /// # Errors
    ///
    /// Any error of `fcntl(2)` (say, `EBADF`).
    pub(crate) fn pipe(fd: OwnedFd) -> io::Result<StreamIo> {
        set_nonblocking(fd.as_raw_fd())?;
        let reg = context::current().reactor.register();
        Ok(StreamIo::with(fd, reg, None, FdKind::Pipe))
    }

    /// A write of `buf` on this stream: a write op on a pipe, a send on a
    /// socket.
    fn write_of(&self, buf: Vec<u8>) -> Op {
        match self.kind {
            FdKind::Socket | FdKind::ReadySocket => Op::send(self.raw_fd(), buf, 0),
            FdKind::Pipe | FdKind::BlockingPipe => Op::write(self.raw_fd(), buf),
        }
    }

    /// Whether `result`, an op's, is a pipe's `EAGAIN`: then the pipe goes
    /// back to blocking mode ([`FdKind::BlockingPipe`]) and the op is to
    /// be made again.
    fn pipe_would_block(&mut self, result: i32) -> bool {
        if result != -libc::EAGAIN || self.kind.is_socket() {
            return false;
        }
        if self.kind == FdKind::Pipe {
            // F_GETFL/F_SETFL take no pointers. If it fails, the fd stays
            // non-blocking and the op is made again anyway.
            if let Ok(flags) = syscall!(fcntl(self.raw_fd(), libc::F_GETFL)) {
                let _ = syscall!(fcntl(self.raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK));
            }
            self.kind = FdKind::BlockingPipe;
        }
        true
    }

    /// Connects socket `fd` to `addr` through the ring.
    pub(crate) async fn connect(fd: OwnedFd, addr: std::net::SocketAddr) -> io::Result<StreamIo> {
        let io = StreamIo::new(fd);
        let c = run_op(&io.reg, Op::connect(io.raw_fd(), addr)).await?;
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

    /// Whether reads are made inline on readiness (see the module doc).
    fn ready_reads(&self) -> bool {
        self.kind == FdKind::ReadySocket
    }

    fn waiting(&self, side: Side) -> bool {
        match side {
            Side::Read => self.read_waiting,
            Side::Write => self.write_waiting,
        }
    }

    /// Takes everything queued on the registration, for `side`, which
    /// waits (woken by `cx`) if nothing was queued: every completion of
    /// the read op, in order (a multishot recv may have completed many
    /// times since the last look), and that of the write op. If it finds
    /// the other side's completion while that side waits, it wakes it.
    fn poll_packets(&mut self, side: Side, cx: &mut Context<'_>) -> Poll<()> {
        let pair = match &self.wakers {
            Wakers::Pair(pair) => Some(pair.clone()),
            Wakers::Solo(Some(last))
                if self.waiting(side.other()) && !last.will_wake(cx.waker()) =>
            {
                // A second task: the other side waits on `last`.
                let pair = Arc::new(Pair::default());
                pair.set(side.other(), last);
                self.wakers = Wakers::Pair(pair.clone());
                Some(pair)
            }
            Wakers::Solo(_) => None,
        };
        let mut list = PacketList::new();
        match pair {
            Some(pair) => {
                pair.set(side, cx.waker());
                let waker = Waker::from(pair);
                ready!(self.reg.poll_drain_into(&mut Context::from_waker(&waker), &mut list));
            }
            None => {
                let polled = if self.ready_reads() {
                    // Mostly the read poll's edges: take one without a
                    // packet list when that is all there is.
                    match self.reg.poll_signal(cx) {
                        Poll::Ready(Some(signal)) => {
                            self.readiness.raise(signal.observed);
                            if side == Side::Write && self.read_waiting {
                                // One task drives both sides: it runs again.
                                cx.waker().wake_by_ref();
                            }
                            return Poll::Ready(());
                        }
                        Poll::Ready(None) => self.reg.poll_drain_into(cx, &mut list),
                        Poll::Pending => Poll::Pending,
                    }
                } else {
                    self.reg.poll_drain_into(cx, &mut list)
                };
                if polled.is_pending() {
                    if let Wakers::Solo(last) = &mut self.wakers {
                        if !last.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            *last = Some(cx.waker().clone());
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
        let mut other_done = false;
        for packet in &list {
            let Some(c) = packet.as_completion() else {
                // The read poll's edge (the only signal this registration
                // gets): a recv may find bytes now.
                if let Some(signal) = packet.as_signal().filter(|_| self.ready_reads()) {
                    self.readiness.raise(signal.observed);
                    other_done |= side == Side::Write;
                }
                continue;
            };
            if Some(c.op()) == self.read_op {
                self.on_read(c);
                other_done |= side == Side::Write;
            } else if Some(c.op()) == self.write_op {
                self.write_done = Some(c.result);
                other_done |= side == Side::Read;
            } else {
                // Not ours any more: hand back the buffer it may name.
                self.reg.release_buffer(&c);
            }
        }
        if other_done && self.waiting(side.other()) {
            match &self.wakers {
                Wakers::Pair(pair) => pair.wake_side(side.other()),
                // One task drives both sides: it runs again.
                Wakers::Solo(_) => cx.waker().wake_by_ref(),
            }
        }
        Poll::Ready(())
    }

    /// Handles one completion of the read op.
    fn on_read(&mut self, c: CompletionPacket) {
        if self.ready_reads() {
            // The read poll ended (its edges come as signals, not
            // completions): a cancel, or an error, which is the read's.
            // The next read arms a new one.
            if !c.more() {
                self.read_op = None;
            }
            match c.result {
                r if r >= 0 || r == -libc::ECANCELED || r == -libc::EINTR => {
                    self.readiness.raise(Signals::READABLE);
                }
                r => self.read_err = Some(errno(r)),
            }
            return;
        }
        if self.group.is_some() {
            if c.result > 0 {
                // Claim the buffer now: the bytes are the stream's from here
                // on, whoever reads them.
                match self.reg.buffer(&c) {
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
        let buf = self.reg.reclaim(c.op()).unwrap_or_default();
        self.read_op = None;
        if c.result > 0 {
            self.received.push_back(Chunk::Owned(buf));
        } else {
            self.spare = buf;
            self.end_read(c.result);
        }
    }

    fn end_read(&mut self, result: i32) {
        if self.pipe_would_block(result) {
            // Read again, now waiting in the kernel.
            return;
        }
        match result {
            0 => self.read_eof = true,
            r if r == -libc::ECANCELED || r == -libc::EINTR => {}
            r => self.read_err = Some(errno(r)),
        }
    }

    /// The next received bytes, waiting for some if needed. Empty at EOF.
    pub(crate) fn poll_fill_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let polled = self.poll_received(cx);
        self.read_waiting = polled.is_pending();
        ready!(polled)?;
        Poll::Ready(Ok(match self.received.front() {
            Some(chunk) => &chunk.bytes()[self.read_pos..],
            None => &[],
        }))
    }

    /// Ready once the front chunk has bytes left, or at EOF.
    fn poll_received(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(chunk) = self.received.front() {
                if self.read_pos < chunk.bytes().len() {
                    return Poll::Ready(Ok(()));
                }
                self.release_front();
                continue;
            }
            if let Some(e) = self.read_err.take() {
                return Poll::Ready(Err(e));
            }
            if self.read_eof {
                return Poll::Ready(Ok(()));
            }
            if self.yield_read(cx) {
                return Poll::Pending;
            }
            if self.ready_reads() {
                match self.read_ready(&mut []) {
                    // A chunk, or the end of file, noted.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => self.read_err = Some(e),
                    None => ready!(self.poll_packets(Side::Read, cx)),
                }
                continue;
            }
            if self.read_op.is_none() {
                let op = match self.group {
                    Some(group) => Op::recv_multi(self.raw_fd(), group),
                    None => {
                        let mut buf = std::mem::take(&mut self.spare);
                        buf.clear();
                        if !self.kind.is_socket() {
                            buf.reserve(PIPE_READ);
                            Op::read(self.raw_fd(), buf)
                        } else {
                            buf.reserve(OWNED_READ);
                            Op::recv(self.raw_fd(), buf, 0)
                        }
                    }
                };
                self.read_op = Some(self.reg.submit(op)?);
            }
            ready!(self.poll_packets(Side::Read, cx));
        }
    }

    /// Lets go of the front chunk: a ring buffer goes back to the kernel,
    /// an owned one becomes the spare.
    fn release_front(&mut self) {
        self.read_pos = 0;
        if let Some(Chunk::Owned(v)) = self.received.pop_front() {
            self.spare = v;
        }
    }

    pub(crate) fn consume(&mut self, n: usize) {
        if let Some(chunk) = self.received.front() {
            let len = chunk.bytes().len();
            self.read_pos = (self.read_pos + n).min(len);
            if self.read_pos == len {
                // Fully read: return a ring buffer at once rather than at
                // the next read, so an idle stream holds none.
                self.release_front();
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
        if self.ready_reads() && self.received.is_empty() {
            // Straight into `dst`: no chunk, no copy.
            let polled = self.poll_read_ready(cx, dst);
            self.read_waiting = polled.is_pending();
            return polled;
        }
        let src = ready!(self.poll_fill_buf(cx))?;
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
        self.consume(n);
        Poll::Ready(Ok(n))
    }

    /// A read on readiness into `dst` (see the module doc), waiting for
    /// the poll's next edge when the socket is empty.
    fn poll_read_ready(&mut self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            if let Some(e) = self.read_err.take() {
                return Poll::Ready(Err(e));
            }
            if self.read_eof {
                return Poll::Ready(Ok(0));
            }
            if self.yield_read(cx) {
                return Poll::Pending;
            }
            if let Some(got) = self.read_ready(dst) {
                return Poll::Ready(got.map(|n| n.min(dst.len())));
            }
            ready!(self.poll_packets(Side::Read, cx));
        }
    }

    /// Whether a read on readiness yields now (its thread's reads had
    /// their share of the crank): it wakes itself, and the next poll reads.
    fn yield_read(&mut self, cx: &mut Context<'_>) -> bool {
        if self.readiness != Readiness::Yield {
            return false;
        }
        self.readiness = Readiness::Ready;
        cx.waker().wake_by_ref();
        true
    }

    /// One read on readiness, after making sure the read poll is armed:
    /// `None` when the socket has no bytes (wait for the next edge), else
    /// how many bytes the `recv(2)` got (0: end of file, noted). They go
    /// into `dst` first, straight from the kernel when `dst` is at least
    /// [`OWNED_READ`] long, else through this thread's scratch buffer, so
    /// that a small read still asks for a full buffer's worth and a short
    /// read says the socket is empty; what `dst` cannot hold becomes a
    /// received chunk.
    fn read_ready(&mut self, dst: &mut [u8]) -> Option<io::Result<usize>> {
        if self.read_op.is_none() {
            // Armed before the recv: an edge after that recv is then
            // never missed (the poll also reports the state at arming).
            let op = Op::poll_multi(self.raw_fd(), Signals::READABLE | Signals::READ_CLOSED);
            match self.reg.submit(op) {
                Ok(id) => self.read_op = Some(id),
                Err(e) => return Some(Err(e)),
            }
        }
        let fd = self.raw_fd();
        while self.readiness != Readiness::Empty {
            let got = if dst.len() >= OWNED_READ {
                recv_now(fd, dst).map(|n| (n, dst.len()))
            } else {
                READ_SCRATCH.with_borrow_mut(|scratch| {
                    if scratch.len() < OWNED_READ {
                        scratch.resize(OWNED_READ, 0);
                    }
                    let n = recv_now(fd, scratch)?;
                    let k = n.min(dst.len());
                    dst[..k].copy_from_slice(&scratch[..k]);
                    if n > k {
                        let mut rest = std::mem::take(&mut self.spare);
                        rest.clear();
                        rest.extend_from_slice(&scratch[k..n]);
                        self.received.push_back(Chunk::Owned(rest));
                    }
                    Ok((n, scratch.len()))
                })
            };
            match got {
                Ok((n, asked)) => {
                    if n == 0 {
                        self.read_eof = true;
                    } else if n < asked && self.readiness == Readiness::Ready {
                        // A short read emptied the stream: its next bytes
                        // raise a new edge.
                        self.readiness = Readiness::Empty;
                    } else if n == asked
                        && self.readiness == Readiness::Ready
                        && context::note_full_read()
                    {
                        // More may wait, but other tasks get their turn
                        // first: the next read yields.
                        self.readiness = Readiness::Yield;
                    }
                    return Some(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readiness = Readiness::Empty;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }

    /// Waits for the send or shutdown in flight, as the writing side.
    fn poll_write_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.poll_sends(cx);
        self.write_waiting = polled.is_pending();
        polled
    }

    /// Waits for the send in flight, resubmitting the rest of a short
    /// send, or for the shutdown in flight; reports its error.
    fn poll_sends(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(op) = self.write_op {
            let Some(result) = self.write_done.take() else {
                ready!(self.poll_packets(Side::Write, cx));
                continue;
            };
            self.write_op = None;
            if self.shutting {
                self.shutting = false;
                self.shut = true;
                if result < 0 && result != -libc::ENOTCONN {
                    self.write_err = Some(errno(result));
                }
                break;
            }
            let mut buf = self.reg.reclaim(op).unwrap_or_default();
            if result < 0 {
                if result != -libc::EINTR && !self.pipe_would_block(result) {
                    self.write_err = Some(errno(result));
                    buf.clear();
                    self.write_buf = buf;
                    break;
                }
            } else {
                buf.drain(..(result as usize).min(buf.len()));
            }
            if buf.is_empty() {
                self.write_buf = buf;
            } else {
                self.write_op = Some(self.reg.submit(self.write_of(buf))?);
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
        // Nothing is in flight (the wait above), so bytes sent now follow
        // every byte sent before: try a non-blocking send first, which
        // costs no SQE and no completion, and go through the ring only
        // when the socket buffer is full, or when many streams are busy
        // and one enter for all their sends is cheaper (`batch_sends`).
        if !context::batch_sends() {
            let now = match self.kind {
                FdKind::Socket | FdKind::ReadySocket => send_now(self.raw_fd(), src),
                FdKind::Pipe => write_now(self.raw_fd(), src),
                FdKind::BlockingPipe => Err(io::ErrorKind::WouldBlock.into()),
            };
            match now {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let n = src.len().min(WRITE_MAX);
        let mut buf = std::mem::take(&mut self.write_buf);
        buf.clear();
        buf.extend_from_slice(&src[..n]);
        self.write_op = Some(self.reg.submit(self.write_of(buf))?);
        Poll::Ready(Ok(n))
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_idle(cx)
    }

    /// Flushes, then shuts down the writing half; a pipe is closed (through
    /// the ring, after every op queued for it), so that its reader sees end
    /// of file.
    pub(crate) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_write_idle(cx))?;
            if self.shut {
                return Poll::Ready(Ok(()));
            }
            if !self.kind.is_socket() {
                if let Some(fd) = self.fd.take() {
                    close_after_queued(&self.reg, fd);
                }
                self.shut = true;
                continue;
            }
            self.write_op = Some(self.reg.submit(Op::shutdown(self.raw_fd(), libc::SHUT_WR))?);
            self.shutting = true;
        }
    }
}

impl StreamIo {
    /// For a pipe dropped with a write in flight: moves the fd, its
    /// registration and the write into a new `StreamIo` (leaving a fresh,
    /// idle registration behind) whose task finishes the write and then
    /// closes the fd. `poll_write` reported those bytes written once they
    /// were copied, so cancelling them would lose data the caller was told
    /// went out (`stdin.write_all(..).await; child.wait().await` would
    /// lose the tail: `wait` drops stdin). tokio's pipes hand bytes to the
    /// kernel before `Ready`, so a drop there loses nothing either.
    ///
    /// Not for sockets, whose drop keeps the documented behaviour (flush
    /// or close first): a peer that never reads would keep such a task
    /// forever, while a pipe's reader is a child that ends. Outside a
    /// running executor there is nothing to run the task: `None`, and the
    /// write is cancelled as before.
    fn linger(&mut self) -> Option<StreamIo> {
        if self.kind.is_socket() || self.lingering || self.write_op.is_none() {
            return None;
        }
        let exec = context::try_current()?;
        let fd = self.fd.take()?;
        let reg = std::mem::replace(&mut self.reg, exec.reactor.register());
        let mut io = StreamIo::with(fd, reg, None, self.kind);
        io.lingering = true;
        io.read_op = self.read_op.take();
        io.write_op = self.write_op.take();
        io.write_done = self.write_done.take();
        io.shutting = std::mem::take(&mut self.shutting);
        io.write_buf = std::mem::take(&mut self.write_buf);
        Some(io)
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        if let Some(mut io) = self.linger() {
            // Detached: the task ends when the write has gone out (or the
            // reader has gone: EPIPE) and the fd is closed.
            drop(crate::spawn(async move {
                let _ = std::future::poll_fn(|cx| io.poll_close(cx)).await;
            }));
            return;
        }
        if let Some(fd) = self.fd.take() {
            close_after_queued(&self.reg, fd);
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
#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::os::fd::{FromRawFd, OwnedFd};

    use super::{FdKind, StreamIo};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into `fds`, a live local.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 just made both, and nothing else owns them.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// The fallback for a ring that answers a pipe op with `EAGAIN`
    /// (io_uring before 6.3 may): the pipe goes back to blocking mode,
    /// writes stop being tried inline, and bytes still flow both ways
    /// through the ring, more than the pipe holds.
    #[test]
    fn a_pipe_put_back_in_blocking_mode_still_reads_and_writes() {
        let rt = crate::LocalReactor::new().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let back = rt.block_on(async {
            let (r, w) = pipe();
            let (mut reader, mut writer) = (StreamIo::pipe(r).unwrap(), StreamIo::pipe(w).unwrap());
            for io in [&mut reader, &mut writer] {
                assert!(io.pipe_would_block(-libc::EAGAIN));
                assert_eq!(io.kind, FdKind::BlockingPipe);
                assert!(!io.pipe_would_block(-libc::EPIPE));
            }
            // SAFETY: F_GETFL takes no pointers.
            let flags = unsafe { libc::fcntl(writer.raw_fd(), libc::F_GETFL) };
            assert_eq!(flags & libc::O_NONBLOCK, 0, "blocking again");
            let write = async {
                let mut sent = 0;
                while sent < data.len() {
                    sent += poll_fn(|cx| writer.poll_write(cx, &data[sent..])).await.unwrap();
                }
                poll_fn(|cx| writer.poll_close(cx)).await.unwrap();
            };
            let read = async {
                let mut back = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    match poll_fn(|cx| reader.poll_read(cx, &mut buf)).await.unwrap() {
                        0 => break back,
                        n => back.extend_from_slice(&buf[..n]),
                    }
                }
            };
            futures::future::join(write, read).await.1
        });
        assert!(back == data, "{} bytes of {} came back", back.len(), data.len());
    }

    /// A stream's own state is most of what an idle connection costs
    /// besides its one registration slot (see `bytes_per_idle_tcp_stream`
    /// in `tests/alloc.rs`); keep it from growing unnoticed.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn stream_state_stays_small() {
        assert!(std::mem::size_of::<super::StreamIo>() <= 200);
    }
}
