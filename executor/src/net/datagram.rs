//! Datagram sockets, by readiness: [`UdpSocket`] and [`UnixDatagram`].
//!
//! A multishot poll raises the read registration's counted signal on each
//! readable edge; `recv` tries the non-blocking syscall first and waits for
//! an edge only on `WouldBlock`. Sends rarely block, so a one-shot poll is
//! armed for writability only when one does (a send to a Unix datagram
//! socket whose reader is behind does block).

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
use crate::executor;

/// Readiness for one non-blocking fd.
struct Readiness {
    fd: RawFd,
    readable: Registration,
    writable: Registration,
}

impl Readiness {
    fn new(fd: RawFd) -> io::Result<Readiness> {
        let reactor = executor::current().reactor.clone();
        let readable = reactor.register_with(Signals::READABLE);
        readable.submit(Op::poll_multi(fd, Signals::READABLE))?;
        Ok(Readiness { fd, readable, writable: reactor.register_with(Signals::WRITABLE) })
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut list = PacketList::new();
        self.readable.poll_drain_into(cx, &mut list)
    }

    async fn read<T>(&self, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        loop {
            match f() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    poll_fn(|cx| self.poll_readable(cx)).await;
                }
                r => return r,
            }
        }
    }

    async fn write<T>(&self, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        loop {
            match f() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A poll's readiness arrives as a signal packet, an
                    // error as a completion: either way, try again.
                    let op = self.writable.submit(Op::poll(self.fd, Signals::WRITABLE))?;
                    let _cancel = CancelOnDrop { reg: &self.writable, op: Some(op) };
                    poll_fn(|cx| {
                        let mut list = PacketList::new();
                        self.writable.poll_drain_into(cx, &mut list)
                    })
                    .await;
                }
                r => return r,
            }
        }
    }
}

/// A UDP socket.
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

    /// Sends one datagram to `addr`.
    ///
    /// # Errors
    ///
    /// As `sendto(2)`.
    pub async fn send_to(&self, buf: &[u8], addr: impl ToSocketAddrs) -> io::Result<usize> {
        let addr = addr
            .to_socket_addrs()?
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
