//! Datagram sockets, by readiness: [`UdpSocket`] and [`UnixDatagram`].
//!
//! A multishot poll raises the read registration's counted signal on each
//! readable edge; `recv` tries the non-blocking syscall first and waits for
//! an edge only on `WouldBlock`. Sends rarely block, so a one-shot poll is
//! armed for writability only when one does (a send to a Unix datagram
//! socket whose reader is behind does block).
//!
//! Several tasks may receive, and several send, on one socket at once:
//! each side keeps the wakers of all its waiting calls in a [`Waiters`],
//! so that none is left waiting when another takes the readiness or is
//! dropped while it waits.

use std::cell::RefCell;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::SocketAddr as UnixSocketAddr;
use std::path::Path;
use std::task::{Context, Poll};

use tally_reactor::{Op, PacketList, Registration, Signals};

use super::stream::CancelOnDrop;
use super::waiters::{Waiter, Waiters};
use crate::context;

/// Readiness for one non-blocking fd.
///
/// Several tasks may read, and several write, at once; each side's
/// registration keeps only the waker of the last to poll it, so each
/// waiting call also keeps its waker in that side's [`Waiters`]. A call
/// that returns, or is dropped, wakes one of the others, which tries its
/// syscall again (the readiness it waited for may be the one just taken)
/// and, if it must still wait, puts its own waker in the registration.
struct Readiness {
    fd: RawFd,
    readable: Registration,
    writable: Registration,
    readers: RefCell<Waiters>,
    writers: RefCell<Waiters>,
}

/// The [`Waiters`] in a `RefCell<Waiters>`.
fn itself(waiters: &mut Waiters) -> &mut Waiters {
    waiters
}

impl Readiness {
    fn new(fd: RawFd) -> io::Result<Readiness> {
        let reactor = context::current().reactor.clone();
        let readable = reactor.register_with(Signals::READABLE);
        readable.submit(Op::poll_multi(fd, Signals::READABLE))?;
        Ok(Readiness {
            fd,
            readable,
            writable: reactor.register_with(Signals::WRITABLE),
            readers: RefCell::new(Waiters::new()),
            writers: RefCell::new(Waiters::new()),
        })
    }

    /// `Ready` when `reg` has delivered something, or when another waiter
    /// woke `waiter`: either way, the caller tries its syscall again.
    fn poll_ready(
        reg: &Registration,
        waiter: &mut Waiter<'_, Waiters>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let mut list = PacketList::new();
        let delivered = reg.poll_drain_into(cx, &mut list).is_ready();
        if waiter.take_woken() || delivered {
            return Poll::Ready(());
        }
        waiter.wait(cx.waker());
        Poll::Pending
    }

    async fn read<T>(&self, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
        let mut waiter = Waiter::new(&self.readers, itself);
        loop {
            poll_fn(|cx| Readiness::poll_ready(&self.readable, &mut waiter, cx)).await;
            match f() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
        }
    }

    async fn write<T>(&self, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
        let mut waiter = Waiter::new(&self.writers, itself);
        loop {
            {
                // A poll's readiness arrives as a signal packet, an error
                // as a completion: either way, try again.
                let op = self.writable.submit(Op::poll(self.fd, Signals::WRITABLE))?;
                let _cancel = CancelOnDrop { reg: &self.writable, op: Some(op) };
                poll_fn(|cx| Readiness::poll_ready(&self.writable, &mut waiter, cx)).await;
            }
            match f() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
        }
    }
}

/// A UDP socket.
///
/// Its methods take `&self`: several tasks may await `recv_from`, `recv`,
/// `send_to` or `send` on one socket (an `Rc<UdpSocket>`) at once. Each
/// datagram goes to one of the receivers, and a call dropped while it
/// waits (by a `timeout` or `select!`) leaves none of the others waiting
/// forever.
///
/// # Examples
///
/// ```
/// use tally::net::UdpSocket;
///
/// let rt = tally::LocalReactor::new().unwrap();
/// rt.block_on(async {
///     let a = UdpSocket::bind("127.0.0.1:0").unwrap();
///     let b = UdpSocket::bind("127.0.0.1:0").unwrap();
///     a.send_to(b"ping", b.local_addr().unwrap()).await.unwrap();
///     let mut buf = [0; 16];
///     let (n, from) = b.recv_from(&mut buf).await.unwrap();
///     assert_eq!((&buf[..n], from), (&b"ping"[..], a.local_addr().unwrap()));
/// });
/// ```
pub struct UdpSocket {
    sock: std::net::UdpSocket,
    ready: Readiness,
}

impl UdpSocket {
    /// Binds to `addr`.
    ///
    /// # Errors
    ///
    /// Any error from resolving or binding.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        UdpSocket::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// Wraps a bound std socket, making it non-blocking.
    ///
    /// # Errors
    ///
    /// As `fcntl(2)`, or if the reactor refuses the registration.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn from_std(sock: std::net::UdpSocket) -> io::Result<UdpSocket> {
        sock.set_nonblocking(true)?;
        let ready = Readiness::new(sock.as_raw_fd())?;
        Ok(UdpSocket { sock, ready })
    }

    /// Sets the default peer for `send` and `recv`.
    ///
    /// # Errors
    ///
    /// As `connect(2)`.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        self.sock.connect(addr)
    }

    /// Sends one datagram to `addr`, the first address it resolves to (a
    /// host name is resolved on the blocking pool; pass a `SocketAddr` to
    /// send without a lookup).
    ///
    /// # Errors
    ///
    /// The lookup's error, or as `sendto(2)`.
    pub async fn send_to(&self, buf: &[u8], addr: impl super::ToSocketAddrs) -> io::Result<usize> {
        let addr = super::addr::resolve(&addr)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        self.ready.write(|| self.sock.send_to(buf, addr)).await
    }

    /// Receives one datagram and its sender.
    ///
    /// # Errors
    ///
    /// As `recvfrom(2)`.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.ready.read(|| self.sock.recv_from(buf)).await
    }

    /// Sends one datagram to the connected peer.
    ///
    /// # Errors
    ///
    /// As `send(2)`.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.ready.write(|| self.sock.send(buf)).await
    }

    /// Receives one datagram from the connected peer.
    ///
    /// # Errors
    ///
    /// As `recv(2)`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.ready.read(|| self.sock.recv(buf)).await
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket").field("fd", &self.sock.as_raw_fd()).finish()
    }
}

/// A Unix-domain datagram socket.
///
/// As with [`UdpSocket`], several tasks may await its sends and receives
/// on one socket at once, and a call dropped while it waits leaves none of
/// the others waiting forever.
pub struct UnixDatagram {
    sock: std::os::unix::net::UnixDatagram,
    ready: Readiness,
}

impl UnixDatagram {
    /// Binds to `path`.
    ///
    /// # Errors
    ///
    /// As `bind(2)`.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(std::os::unix::net::UnixDatagram::bind(path)?)
    }

    /// An unbound socket.
    ///
    /// # Errors
    ///
    /// As `socket(2)`.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn unbound() -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(std::os::unix::net::UnixDatagram::unbound()?)
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
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = std::os::unix::net::UnixDatagram::pair()?;
        Ok((UnixDatagram::from_std(a)?, UnixDatagram::from_std(b)?))
    }

    /// Wraps a std socket, making it non-blocking.
    ///
    /// # Errors
    ///
    /// As `fcntl(2)`, or if the reactor refuses the registration.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn from_std(sock: std::os::unix::net::UnixDatagram) -> io::Result<UnixDatagram> {
        sock.set_nonblocking(true)?;
        let ready = Readiness::new(sock.as_raw_fd())?;
        Ok(UnixDatagram { sock, ready })
    }

    /// Sets the default peer.
    ///
    /// # Errors
    ///
    /// As `connect(2)`.
    pub fn connect(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.sock.connect(path)
    }

    /// Sends one datagram to the socket at `path`.
    ///
    /// # Errors
    ///
    /// As `sendto(2)`.
    pub async fn send_to(&self, buf: &[u8], path: impl AsRef<Path>) -> io::Result<usize> {
        let path = path.as_ref();
        self.ready.write(|| self.sock.send_to(buf, path)).await
    }

    /// Receives one datagram and its sender.
    ///
    /// # Errors
    ///
    /// As `recvfrom(2)`.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, UnixSocketAddr)> {
        self.ready.read(|| self.sock.recv_from(buf)).await
    }

    /// Sends one datagram to the connected peer.
    ///
    /// # Errors
    ///
    /// As `send(2)`.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.ready.write(|| self.sock.send(buf)).await
    }

    /// Receives one datagram.
    ///
    /// # Errors
    ///
    /// As `recv(2)`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.ready.read(|| self.sock.recv(buf)).await
    }
}

impl fmt::Debug for UnixDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixDatagram").field("fd", &self.sock.as_raw_fd()).finish()
    }
}
