//! Unix-domain streams: [`UnixListener`] and [`UnixStream`].

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::stream::{Acceptor, StreamIo};
use crate::sys::{self, syscall};

/// A Unix-domain socket listening for connections.
pub struct UnixListener {
    /// Taken (and closed through the ring) only in `drop`.
    sock: ManuallyDrop<std::os::unix::net::UnixListener>,
    acceptor: RefCell<Acceptor>,
}

impl UnixListener {
    /// Binds to `path` and listens, with the longest accept queue the
    /// kernel allows.
    ///
    /// # Errors
    ///
    /// Any error from binding (e.g. the path exists) or listening.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        // std already listens with the longest queue the kernel allows.
        Ok(UnixListener::from_std(std::os::unix::net::UnixListener::bind(path)?))
    }

    /// Wraps a listening std socket.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn from_std(sock: std::os::unix::net::UnixListener) -> UnixListener {
        UnixListener { sock: ManuallyDrop::new(sock), acceptor: RefCell::new(Acceptor::new()) }
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
        Acceptor::accept(
            &self.acceptor,
            self.sock.as_raw_fd(),
            UnixStream::from_fd,
            UnixStream::peer_addr,
        )
        .await
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

impl Drop for UnixListener {
    fn drop(&mut self) {
        // SAFETY: `sock` is taken here only, and never touched again.
        let sock = unsafe { ManuallyDrop::take(&mut self.sock) };
        self.acceptor.get_mut().close_listener(OwnedFd::from(sock));
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
    /// Connects to the socket at `path`.
    ///
    /// A Unix-domain connect completes at once, or finds the listener's
    /// accept queue full. A blocking connect would then block the whole
    /// thread, and with it the very task that would accept; this one is
    /// non-blocking and retries after a short sleep (100 µs, doubling up to
    /// 10 ms) until the listener makes room.
    ///
    /// # Errors
    ///
    /// As `connect(2)`; `InvalidInput` for a path too long for
    /// `sockaddr_un`.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let (addr, len) = sockaddr_un(path.as_ref())?;
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK)?;
        let mut backoff = Duration::from_micros(100);
        loop {
            let ptr = (&raw const addr).cast::<libc::sockaddr>();
            // `ptr` points at a sockaddr_un valid for `len` bytes.
            let e = match syscall!(connect(fd.as_raw_fd(), ptr, len)) {
                Ok(_) => return Ok(UnixStream::from_fd(fd)),
                Err(e) => e,
            };
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    crate::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(10));
                }
                _ => return Err(e),
            }
        }
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

/// `path` as a `sockaddr_un` and its length.
fn sockaddr_un(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data, for which all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // One byte stays zero: the terminating NUL.
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a Unix socket path must be 1 to 107 bytes, without NUL",
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}
