//! Operations: typed builders for the work a registration can submit.
//!
//! An [`Op`] owns everything the kernel will touch (its buffer, its socket
//! address, its timespec). Submitting it moves it into the reactor's operation
//! slab, where it stays until the operation's final completion, even if the
//! registration or the future that submitted it is dropped first. That is
//! what makes cancellation sound: the kernel never writes into freed memory.
//!
//! Fds are borrowed by number: an fd named by an operation must stay open
//! until the operation's **final completion** has been reaped, or until the
//! operation is cancelled ([`Registration::cancel`](crate::Registration::cancel),
//! or dropping its registration). On io_uring the kernel resolves the number
//! only when it consumes the SQE, so a cancel first hands every queued SQE
//! to the kernel: the op binds to the file it was made for, and closing the
//! fd right after the cancel, even with the number reused at once, reaches
//! nothing of the new file. [`Op::close`] on the same reactor also works:
//! the close runs after every SQE already queued for the fd.

use std::ffi::CString;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use tally_packets::{OpTag, PacketList, Signals, Token};

/// A group of provided buffers, created by
/// [`Reactor::buf_ring`](crate::Reactor::buf_ring).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BufGroup(pub(crate) u16);

impl BufGroup {
    /// The kernel's buffer group id.
    pub fn id(self) -> u16 {
        self.0
    }
}

/// The token of a submitted operation. Completion packets carry it in
/// [`CompletionPacket::op`](tally_packets::CompletionPacket::op).
pub type OpId = Token;

/// What [`Registration::cancel`](crate::Registration::cancel) did. Either
/// way, nothing the op already delivered to the reactor is thrown away:
/// its completions that were queued but not yet drained come back here,
/// lent as a drain's are (take their fds and buffers before the
/// registration's next drain, which frees what is left).
#[must_use = "a cancel may hand back completions (and a read's bytes) that arrived first"]
#[derive(Debug)]
pub enum Cancel {
    /// Nothing to cancel: the op is not live, not this registration's, or
    /// already cancelled, and no completion of it was queued.
    NotFound,
    /// The op was live: the kernel was asked to stop it, and no packet for
    /// it is delivered after this. A completion the kernel makes before the
    /// stop takes effect is reclaimed (its fd closed, its buffer returned),
    /// not delivered. The list holds the completions that had arrived
    /// first (a multishot op's), possibly none.
    Cancelled(PacketList),
    /// The op had already finished: the list holds its completion if it
    /// was not yet drained, and a read's or recv's buffer, with the bytes
    /// read, still waits for [`reclaim`](crate::Registration::reclaim).
    AlreadyCompleted(PacketList),
}

/// One operation, ready to submit with
/// [`Registration::submit`](crate::Registration::submit).
///
/// # Examples
///
/// ```
/// use tally_reactor::Op;
///
/// let op = Op::read(0, Vec::with_capacity(4096));
/// assert_eq!(op.name(), "read");
/// ```
pub struct Op {
    pub(crate) kind: OpKind,
}

/// A socket address in the form the kernel reads it: a `sockaddr_storage`
/// and its length. `Op::connect` makes one; it is public for the system
/// calls that take an address and that the reactor does not make itself
/// (say `bind(2)` on a socket with options set first).
///
/// ```
/// let raw = tally_reactor::RawAddr::from("127.0.0.1:80".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(raw.len() as usize, std::mem::size_of::<libc::sockaddr_in>());
/// ```
pub struct RawAddr {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAddr")
            .field("family", &self.storage.ss_family)
            .field("len", &self.len)
            .finish()
    }
}

impl RawAddr {
    /// The address, for a `const struct sockaddr *` argument; valid while
    /// `self` is.
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&raw const self.storage).cast()
    }

    /// Its length, for the `socklen_t` beside it.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }
}

pub(crate) enum OpKind {
    Nop,
    Read {
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
    },
    Write {
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
    },
    Recv {
        fd: RawFd,
        buf: Vec<u8>,
        flags: i32,
    },
    Send {
        fd: RawFd,
        buf: Vec<u8>,
        flags: i32,
    },
    Accept {
        fd: RawFd,
        multishot: bool,
    },
    Connect {
        fd: RawFd,
        addr: Box<RawAddr>,
    },
    /// `None` once the kernel has taken the fd (see [`OpKind::settle`]);
    /// until then, dropping the op closes it, so that an op never submitted,
    /// or cancelled before it ran, leaks nothing.
    Close {
        fd: Option<OwnedFd>,
    },
    Shutdown {
        fd: RawFd,
        how: i32,
    },
    Timeout {
        ts: Box<KernelTimespec>,
    },
    Poll {
        fd: RawFd,
        interest: Signals,
        multishot: bool,
    },
    RecvMulti {
        fd: RawFd,
        group: BufGroup,
    },
    /// The path lives on the heap, so it stays put when the op moves.
    OpenAt {
        dir: RawFd,
        path: CString,
        flags: i32,
        mode: u32,
    },
    Fsync {
        fd: RawFd,
        datasync: bool,
    },
    /// Boxed, as is a rename's: the two would make every op slot bigger.
    Statx(Box<StatxArgs>),
    UnlinkAt {
        dir: RawFd,
        path: CString,
        flags: i32,
    },
    RenameAt(Box<RenameArgs>),
    MkdirAt {
        dir: RawFd,
        path: CString,
        mode: u32,
    },
    Ftruncate {
        fd: RawFd,
        len: u64,
    },
}

/// A statx's arguments. The kernel writes a `struct statx` into `buf`'s
/// spare capacity, which is at least that big.
pub(crate) struct StatxArgs {
    pub(crate) dir: RawFd,
    pub(crate) path: CString,
    pub(crate) flags: i32,
    pub(crate) mask: u32,
    pub(crate) buf: Vec<u8>,
}

/// A rename's arguments.
pub(crate) struct RenameArgs {
    pub(crate) old_dir: RawFd,
    pub(crate) old: CString,
    pub(crate) new_dir: RawFd,
    pub(crate) new: CString,
    pub(crate) flags: u32,
}

/// The bytes a statx op writes: one `struct statx`.
pub const STATX_BYTES: usize = std::mem::size_of::<libc::statx>();

/// A relative time in the kernel's `struct __kernel_timespec` layout, which
/// the kernel reads for a timeout (io_uring's, or a timerfd's). Boxed in
/// its op, so that it stays put until the op's final completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KernelTimespec {
    pub(crate) tv_sec: i64,
    pub(crate) tv_nsec: i64,
}

impl From<Duration> for KernelTimespec {
    /// Saturates: a duration past `i64::MAX` seconds is `i64::MAX` seconds,
    /// not a negative time that would expire at once.
    fn from(d: Duration) -> KernelTimespec {
        let tv_sec = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        KernelTimespec { tv_sec, tv_nsec: i64::from(d.subsec_nanos()) }
    }
}

/// `u64::MAX` means "the current file position" to reads and writes.
const CURRENT_POSITION: u64 = u64::MAX;

impl Op {
    /// Does nothing; completes with result 0. Useful to measure the floor.
    pub fn nop() -> Op {
        Op { kind: OpKind::Nop }
    }

    /// Reads into the spare capacity of `buf` (`capacity - len` bytes) at the
    /// current file position. [`Registration::reclaim`](crate::Registration::reclaim)
    /// hands `buf` back with the bytes read appended.
    pub fn read(fd: RawFd, buf: Vec<u8>) -> Op {
        Op { kind: OpKind::Read { fd, buf, offset: CURRENT_POSITION } }
    }

    /// As [`Op::read`], at file offset `offset`.
    pub fn read_at(fd: RawFd, buf: Vec<u8>, offset: u64) -> Op {
        Op { kind: OpKind::Read { fd, buf, offset } }
    }

    /// Writes all of `buf` (one `write`, so possibly short) at the current
    /// file position.
    pub fn write(fd: RawFd, buf: Vec<u8>) -> Op {
        Op { kind: OpKind::Write { fd, buf, offset: CURRENT_POSITION } }
    }

    /// As [`Op::write`], at file offset `offset`.
    pub fn write_at(fd: RawFd, buf: Vec<u8>, offset: u64) -> Op {
        Op { kind: OpKind::Write { fd, buf, offset } }
    }

    /// Receives into the spare capacity of `buf`, like `recv(2)` with `flags`.
    pub fn recv(fd: RawFd, buf: Vec<u8>, flags: i32) -> Op {
        Op { kind: OpKind::Recv { fd, buf, flags } }
    }

    /// Sends all of `buf` (possibly short), like `send(2)` with `flags`.
    /// `MSG_NOSIGNAL` is always added.
    pub fn send(fd: RawFd, buf: Vec<u8>, flags: i32) -> Op {
        Op { kind: OpKind::Send { fd, buf, flags: flags | libc::MSG_NOSIGNAL } }
    }

    /// Accepts one connection. The completion's result is the new fd, which
    /// the receiver of the packet owns.
    pub fn accept(fd: RawFd) -> Op {
        Op { kind: OpKind::Accept { fd, multishot: false } }
    }

    /// Accepts connections until cancelled: one completion packet per
    /// connection, each carrying a new fd that the receiver owns.
    pub fn accept_multi(fd: RawFd) -> Op {
        Op { kind: OpKind::Accept { fd, multishot: true } }
    }

    /// Connects socket `fd` to `addr`.
    pub fn connect(fd: RawFd, addr: SocketAddr) -> Op {
        Op { kind: OpKind::Connect { fd, addr: Box::new(RawAddr::from(addr)) } }
    }

    /// Closes `fd` asynchronously. If the op is dropped unsubmitted, or
    /// cancelled before the kernel ran it, the fd is closed anyway.
    pub fn close(fd: OwnedFd) -> Op {
        Op { kind: OpKind::Close { fd: Some(fd) } }
    }

    /// Shuts down part of a socket, like `shutdown(2)` (`libc::SHUT_WR`, …).
    pub fn shutdown(fd: RawFd, how: i32) -> Op {
        Op { kind: OpKind::Shutdown { fd, how } }
    }

    /// Completes after `after` with result `-ETIME`.
    pub fn timeout(after: Duration) -> Op {
        Op { kind: OpKind::Timeout { ts: Box::new(KernelTimespec::from(after)) } }
    }

    /// Completes once, when `fd` shows any of `interest`, with a signal
    /// packet of what it observed.
    pub fn poll(fd: RawFd, interest: Signals) -> Op {
        Op { kind: OpKind::Poll { fd, interest, multishot: false } }
    }

    /// Watches `fd` until cancelled. Each readiness edge raises the
    /// registration's counted signal; edges that arrive before a drain fold
    /// into one signal packet with a count.
    pub fn poll_multi(fd: RawFd, interest: Signals) -> Op {
        Op { kind: OpKind::Poll { fd, interest, multishot: true } }
    }

    /// Receives until cancelled, each chunk into a buffer of `group`. Each
    /// completion packet names its buffer; take it with
    /// [`Registration::buffer`](crate::Registration::buffer), and it goes
    /// back to the ring when dropped.
    pub fn recv_multi(fd: RawFd, group: BufGroup) -> Op {
        Op { kind: OpKind::RecvMulti { fd, group } }
    }

    /// Opens `path` relative to directory `dir` (`libc::AT_FDCWD` for the
    /// working directory), like `openat(2)` with `flags` and `mode`.
    /// `O_CLOEXEC` is always added. A successful completion's result is
    /// the new fd, lent to the drainer as an accept's is: take it with
    /// [`Registration::take_fd`](crate::Registration::take_fd), or the next
    /// drain closes it.
    pub fn open_at(dir: RawFd, path: CString, flags: i32, mode: u32) -> Op {
        Op { kind: OpKind::OpenAt { dir, path, flags: flags | libc::O_CLOEXEC, mode } }
    }

    /// Flushes `fd`'s data and metadata to storage, like `fsync(2)`; with
    /// `datasync`, only what reading the data back needs, like
    /// `fdatasync(2)`.
    pub fn fsync(fd: RawFd, datasync: bool) -> Op {
        Op { kind: OpKind::Fsync { fd, datasync } }
    }

    /// Reads the status of `path` relative to `dir`, like `statx(2)` with
    /// `flags` (`libc::AT_EMPTY_PATH` and an empty path for `dir` itself)
    /// and `mask`. The kernel writes one `struct statx` ([`STATX_BYTES`]
    /// bytes) into `buf`, whose capacity grows to that first if it must:
    /// [`Registration::reclaim`](crate::Registration::reclaim) hands it
    /// back holding exactly those bytes after a successful completion, and
    /// empty otherwise.
    pub fn statx(dir: RawFd, path: CString, flags: i32, mask: u32, mut buf: Vec<u8>) -> Op {
        buf.clear();
        buf.reserve(STATX_BYTES);
        Op { kind: OpKind::Statx(Box::new(StatxArgs { dir, path, flags, mask, buf })) }
    }

    /// Removes `path` relative to `dir`, like `unlinkat(2)` (`flags`
    /// `libc::AT_REMOVEDIR` removes an empty directory).
    pub fn unlink_at(dir: RawFd, path: CString, flags: i32) -> Op {
        Op { kind: OpKind::UnlinkAt { dir, path, flags } }
    }

    /// Renames `old` (relative to `old_dir`) to `new` (relative to
    /// `new_dir`), like `renameat2(2)` with `flags`.
    pub fn rename_at(old_dir: RawFd, old: CString, new_dir: RawFd, new: CString, flags: u32) -> Op {
        let args = RenameArgs { old_dir, old, new_dir, new, flags };
        Op { kind: OpKind::RenameAt(Box::new(args)) }
    }

    /// Makes directory `path` relative to `dir` with `mode`, like
    /// `mkdirat(2)`.
    pub fn mkdir_at(dir: RawFd, path: CString, mode: u32) -> Op {
        Op { kind: OpKind::MkdirAt { dir, path, mode } }
    }

    /// Sets the length of file `fd` to `len`, like `ftruncate(2)`. On
    /// io_uring it needs Linux 6.9 ([`Features::ftruncate`](crate::Features::ftruncate)).
    pub fn ftruncate(fd: RawFd, len: u64) -> Op {
        Op { kind: OpKind::Ftruncate { fd, len } }
    }

    /// The buffer the op owns (a read's, a write's, a statx's), for an op
    /// that was never submitted: [`Registration::submit_or_return`](crate::Registration::submit_or_return)
    /// hands a refused op back so that its buffer is not lost.
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        self.kind.into_buffer(-1)
    }

    /// A short name, for logs and `Debug`.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Whether the operation posts completions until cancelled.
    pub fn is_multishot(&self) -> bool {
        self.kind.is_multishot()
    }
}

impl OpKind {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            OpKind::Nop => "nop",
            OpKind::Read { .. } => "read",
            OpKind::Write { .. } => "write",
            OpKind::Recv { .. } => "recv",
            OpKind::Send { .. } => "send",
            OpKind::Accept { multishot: false, .. } => "accept",
            OpKind::Accept { multishot: true, .. } => "accept_multi",
            OpKind::Connect { .. } => "connect",
            OpKind::Close { .. } => "close",
            OpKind::Shutdown { .. } => "shutdown",
            OpKind::Timeout { .. } => "timeout",
            OpKind::Poll { multishot: false, .. } => "poll",
            OpKind::Poll { multishot: true, .. } => "poll_multi",
            OpKind::RecvMulti { .. } => "recv_multi",
            OpKind::OpenAt { .. } => "open_at",
            OpKind::Fsync { .. } => "fsync",
            OpKind::Statx(_) => "statx",
            OpKind::UnlinkAt { .. } => "unlink_at",
            OpKind::RenameAt(_) => "rename_at",
            OpKind::MkdirAt { .. } => "mkdir_at",
            OpKind::Ftruncate { .. } => "ftruncate",
        }
    }

    /// The tag its completion packets carry.
    #[inline]
    pub(crate) fn tag(&self) -> OpTag {
        match self {
            OpKind::Nop => OpTag::Nop,
            OpKind::Read { .. } => OpTag::Read,
            OpKind::Write { .. } => OpTag::Write,
            OpKind::Recv { .. } | OpKind::RecvMulti { .. } => OpTag::Recv,
            OpKind::Send { .. } => OpTag::Send,
            OpKind::Accept { .. } => OpTag::Accept,
            OpKind::Connect { .. } => OpTag::Connect,
            OpKind::Close { .. } => OpTag::Close,
            OpKind::Shutdown { .. } => OpTag::Shutdown,
            OpKind::Timeout { .. } => OpTag::Timeout,
            OpKind::Poll { .. } => OpTag::Poll,
            OpKind::OpenAt { .. } => OpTag::Open,
            OpKind::Fsync { .. } => OpTag::Fsync,
            OpKind::Statx(_) => OpTag::Statx,
            OpKind::UnlinkAt { .. } => OpTag::Unlink,
            OpKind::RenameAt(_) => OpTag::Rename,
            OpKind::MkdirAt { .. } => OpTag::Mkdir,
            OpKind::Ftruncate { .. } => OpTag::Ftruncate,
        }
    }

    pub(crate) fn is_multishot(&self) -> bool {
        matches!(
            self,
            OpKind::Accept { multishot: true, .. }
                | OpKind::Poll { multishot: true, .. }
                | OpKind::RecvMulti { .. }
        )
    }

    /// Called with the result of the op's final completion. A close that
    /// ran (whatever it answered: the kernel detaches the fd before it
    /// flushes) gives up its fd, which must not be closed again; only one
    /// cancelled before it ran keeps it, to be closed on drop.
    pub(crate) fn settle(&mut self, result: i32) {
        if let OpKind::Close { fd } = self {
            if result != -libc::ECANCELED {
                if let Some(fd) = fd.take() {
                    // The kernel closed it: forget the number.
                    let _ = fd.into_raw_fd();
                }
            }
        }
    }

    /// The provided-buffer group the op receives into, if it selects buffers.
    pub(crate) fn buf_group(&self) -> Option<BufGroup> {
        match self {
            OpKind::RecvMulti { group, .. } => Some(*group),
            _ => None,
        }
    }

    /// Whether a successful completion's result is an fd the receiver owns
    /// (the rule `CompletionPacket::accepted_fd` applies to packets).
    pub(crate) fn yields_fd(&self) -> bool {
        matches!(self.tag(), OpTag::Accept | OpTag::Open)
    }

    /// Whether the caller gets something back with `reclaim`.
    pub(crate) fn has_buffer(&self) -> bool {
        matches!(
            self,
            OpKind::Read { .. }
                | OpKind::Write { .. }
                | OpKind::Recv { .. }
                | OpKind::Send { .. }
                | OpKind::Statx(_)
        )
    }

    /// The buffer, once the kernel is done with it, with `result` bytes
    /// appended when the operation filled it.
    pub(crate) fn into_buffer(self, result: i32) -> Option<Vec<u8>> {
        match self {
            OpKind::Read { mut buf, .. } | OpKind::Recv { mut buf, .. } => {
                if let Ok(n) = usize::try_from(result) {
                    let new_len = buf.len() + n.min(buf.capacity() - buf.len());
                    // SAFETY: the kernel wrote `n` bytes into the spare
                    // capacity starting at `len`, and `new_len` never passes
                    // the capacity.
                    unsafe { buf.set_len(new_len) };
                }
                Some(buf)
            }
            OpKind::Write { buf, .. } | OpKind::Send { buf, .. } => Some(buf),
            OpKind::Statx(args) => {
                let mut buf = args.buf;
                if result == 0 {
                    // SAFETY: a successful statx wrote one whole `struct
                    // statx` at the start of the spare capacity, which `Op::statx`
                    // made at least that big (and `buf` was empty).
                    unsafe { buf.set_len(STATX_BYTES) };
                }
                Some(buf)
            }
            _ => None,
        }
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op").field("kind", &self.name()).finish()
    }
}

impl From<SocketAddr> for RawAddr {
    fn from(addr: SocketAddr) -> RawAddr {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for
                // sockaddr_in; we write one whole value at its start.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr { storage, len: len as libc::socklen_t }
    }
}

#[cfg(test)]
mod tests {
    /// An op lives in every slot of the reactor's op slab: the file ops'
    /// bigger arguments are boxed so that they do not grow it.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn op_kind_stays_small() {
        assert!(
            std::mem::size_of::<super::OpKind>() <= 40,
            "{}",
            std::mem::size_of::<super::OpKind>()
        );
    }
}
