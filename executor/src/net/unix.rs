//! Unix-domain streams: [`UnixListener`] and [`UnixStream`].

use std::cell::RefCell;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;

use super::stream::{Acceptor, StreamIo, widen_backlog};

/// A Unix-domain socket listening for connections.
pub struct UnixListener {
    sock: std::os::unix::net::UnixListener,
    acceptor: RefCell<Acceptor>,
}

impl UnixListener {
    /// Binds to `path` and listens, with an accept queue of 1024 (std's is
    /// 128).
    ///
    /// # Errors
    ///
    /// Any error from binding (e.g. the path exists) or listening.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let sock = std::os::unix::net::UnixListener::bind(path)?;
        widen_backlog(sock.as_raw_fd())?;
        Ok(UnixListener::from_std(sock))
    }

    /// Wraps a listening std socket.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn from_std(sock: std::os::unix::net::UnixListener) -> UnixListener {
        UnixListener { sock, acceptor: RefCell::new(Acceptor::new()) }
    }

    /// Accepts one connection.
    ///
    /// # Errors
    ///
    /// An error from `accept`; the listener stays usable.
    ///
    /// Several tasks may await `accept` on one listener at once; each
    /// connection goes to one of them.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let fd = poll_fn(|cx| Acceptor::poll(&self.acceptor, self.sock.as_raw_fd(), cx)).await?;
        let stream = UnixStream::from_fd(fd);
        let peer = stream.peer_addr()?;
        Ok((stream, peer))
    }

    /// The address it listens on.
    ///
    /// # Errors
    ///
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener").field("fd", &self.sock.as_raw_fd()).finish()
    }
}

/// A Unix-domain stream. Implements `futures::io::{AsyncRead, AsyncBufRead,
/// AsyncWrite}`.
pub struct UnixStream {
    io: StreamIo,
}

impl UnixStream {
    /// Connects to the socket at `path`. Unix-domain connects complete at
    /// once or fail, so this is one non-blocking syscall.
    ///
    /// # Errors
    ///
    /// As `connect(2)`.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let std = std::os::unix::net::UnixStream::connect(path)?;
        Ok(UnixStream::from_std(std))
    }

    /// A connected pair.
    ///
    /// # Errors
    ///
    /// As `socketpair(2)`.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((UnixStream::from_std(a), UnixStream::from_std(b)))
    }

    fn from_fd(fd: OwnedFd) -> UnixStream {
        UnixStream { io: StreamIo::new(fd) }
    }

    /// Wraps a connected std stream.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> UnixStream {
        UnixStream::from_fd(stream.into())
    }

    fn with_std<T>(
        &self,
        f: impl FnOnce(&std::os::unix::net::UnixStream) -> io::Result<T>,
    ) -> io::Result<T> {
        // A std view of our fd, for its getters and setters; no dup(2), so
        // no second fd that could fail at the fd limit.
        // SAFETY: the fd is open and owned by `self.io` for the whole call,
        // and ManuallyDrop never closes it.
        let view = std::mem::ManuallyDrop::new(unsafe {
            std::os::unix::net::UnixStream::from_raw_fd(self.io.raw_fd())
        });
        f(&view)
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// As `getpeername(2)`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.with_std(|s| s.peer_addr())
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.with_std(|s| s.local_addr())
    }
}

impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.fd().as_fd()
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.raw_fd()
    }
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream").field("fd", &self.io.raw_fd()).finish()
    }
}

super::stream_traits!(UnixStream);
