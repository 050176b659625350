//! TCP: [`TcpListener`] and [`TcpStream`].

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::stream::{Acceptor, StreamIo, widen_backlog};
use crate::sys::{self, syscall};

/// A TCP socket listening for connections.
///
/// Accepts use one multishot accept, armed at the first
/// [`accept`](Self::accept); connections that arrive between accepts queue
/// in the listener (bounded by the registration's queue, beyond which the
/// kernel's backlog holds them).
///
/// # Examples
///
/// ```
/// use futures::{AsyncReadExt, AsyncWriteExt};
/// use tally::net::{TcpListener, TcpStream};
///
/// let rt = tally::LocalReactor::new().unwrap();
/// rt.block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let server = tally::spawn(async move {
///         let (mut s, _) = listener.accept().await.unwrap();
///         let mut buf = [0; 5];
///         s.read_exact(&mut buf).await.unwrap();
///         s.write_all(&buf).await.unwrap();
///         s.flush().await.unwrap();
///     });
///     let mut c = TcpStream::connect(addr).await.unwrap();
///     c.write_all(b"hello").await.unwrap();
///     let mut buf = [0; 5];
///     c.read_exact(&mut buf).await.unwrap();
///     assert_eq!(&buf, b"hello");
///     server.await.unwrap();
/// });
/// ```
pub struct TcpListener {
    /// Taken (and closed through the ring) only in `drop`.
    sock: ManuallyDrop<std::net::TcpListener>,
    acceptor: RefCell<Acceptor>,
}

impl TcpListener {
    /// Binds to `addr` (port 0 picks a free port) and listens, with the
    /// longest accept queue the kernel allows (std's is 128).
    ///
    /// # Errors
    ///
    /// Any error from resolving, binding or listening.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let sock = std::net::TcpListener::bind(addr)?;
        widen_backlog(sock.as_raw_fd())?;
        Ok(TcpListener::from_std(sock))
    }

    /// Binds to `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`) set, and
    /// listens: several listeners bound this way to one address share its
    /// connections, which the kernel spreads over them by a hash of each
    /// connection's addresses. The server shape of a multi-thread
    /// [`Runtime`](crate::Runtime): each worker accepts on a listener of its
    /// own. Port 0 picks a free port for the first; bind the others to the
    /// first's [`local_addr`](Self::local_addr).
    ///
    /// # Errors
    ///
    /// Any error from resolving, `socket`, `setsockopt`, `bind` or
    /// `listen`; with several addresses, the last one's.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn bind_reuseport(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match reuseport_socket(addr) {
                Ok(sock) => return Ok(TcpListener::from_std(sock)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the address resolved to nothing")
        }))
    }

    /// Wraps a listening std socket.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn from_std(sock: std::net::TcpListener) -> TcpListener {
        TcpListener { sock: ManuallyDrop::new(sock), acceptor: RefCell::new(Acceptor::new()) }
    }

    /// Accepts one connection.
    ///
    /// # Errors
    ///
    /// An error from `accept` (e.g. `EMFILE`); the listener stays usable.
    ///
    /// Several tasks may await `accept` on one listener at once; each
    /// connection goes to one of them.
    ///
    /// A connection reset while it waited in the accept queue (a port
    /// scan, a client closing with `SO_LINGER` 0) has no peer any more: it
    /// is closed and skipped, and `accept` goes on to the next one rather
    /// than failing with `ENOTCONN`.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        Acceptor::accept(
            &self.acceptor,
            self.sock.as_raw_fd(),
            TcpStream::from_fd,
            TcpStream::peer_addr,
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

impl Drop for TcpListener {
    fn drop(&mut self) {
        // SAFETY: `sock` is taken here only, and never touched again.
        let sock = unsafe { ManuallyDrop::take(&mut self.sock) };
        self.acceptor.get_mut().close_listener(OwnedFd::from(sock));
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener").field("fd", &self.sock.as_raw_fd()).finish()
    }
}

/// A TCP connection. Implements `futures::io::{AsyncRead, AsyncBufRead,
/// AsyncWrite}`; see the [module docs](super) for its buffers.
pub struct TcpStream {
    pub(crate) io: StreamIo,
}

impl TcpStream {
    /// Connects to `addr`, trying each resolved address in turn, as std
    /// does. A host name (`"localhost:8080"`, `("example.com", 443)`) is
    /// resolved on the blocking pool, so a slow resolver stalls only this
    /// task; an address is used as it is.
    ///
    /// # Errors
    ///
    /// The lookup's error, the last connect error, or `InvalidInput` if
    /// nothing resolved.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub async fn connect(addr: impl super::ToSocketAddrs) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        for addr in super::addr::resolve(&addr).await? {
            let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
            let fd = match sys::socket(family, libc::SOCK_STREAM) {
                Ok(fd) => fd,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match StreamIo::connect(fd, addr).await {
                Ok(io) => return Ok(TcpStream { io }),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> TcpStream {
        TcpStream { io: StreamIo::new(fd) }
    }

    /// Wraps a connected std stream.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn from_std(stream: std::net::TcpStream) -> TcpStream {
        TcpStream::from_fd(stream.into())
    }

    fn with_std<T>(&self, f: impl FnOnce(&std::net::TcpStream) -> io::Result<T>) -> io::Result<T> {
        // A std view of our fd, for its getters and setters; no dup(2), so
        // no second fd that could fail at the fd limit.
        // SAFETY: the fd is open and owned by `self.io` for the whole call,
        // and ManuallyDrop never closes it.
        let view = std::mem::ManuallyDrop::new(unsafe {
            std::net::TcpStream::from_raw_fd(self.io.raw_fd())
        });
        f(&view)
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.with_std(|s| s.local_addr())
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// As `getpeername(2)`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.with_std(|s| s.peer_addr())
    }

    /// Sets `TCP_NODELAY`.
    ///
    /// # Errors
    ///
    /// As `setsockopt(2)`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.with_std(|s| s.set_nodelay(on))
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.fd().as_fd()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.raw_fd()
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream").field("fd", &self.io.raw_fd()).finish()
    }
}

super::stream_traits!(TcpStream);

/// A listening TCP socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`.
fn reuseport_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let sock = sys::socket(domain, libc::SOCK_STREAM)?;
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // `one` is a live c_int of `len` bytes, as these options take.
        syscall!(setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw const one).cast(),
            len
        ))?;
    }
    let raw = tally_reactor::RawAddr::from(addr);
    // `raw` holds a sockaddr of `raw.len()` bytes and outlives the call.
    syscall!(bind(sock.as_raw_fd(), raw.as_ptr(), raw.len()))?;
    widen_backlog(sock.as_raw_fd())?;
    Ok(std::net::TcpListener::from(sock))
}
