//! Addresses to connect to: [`ToSocketAddrs`], whose host names are
//! resolved on the blocking pool, never on the reactor's thread.
//!
//! `getaddrinfo(3)` blocks, sometimes for seconds (a slow resolver, a
//! timeout on an unreachable DNS server). Called on the reactor's thread it
//! would stall every task of the executor, so a name that is not already an
//! address is looked up by [`crate::task::spawn_blocking`]; an address
//! (`"127.0.0.1:80"`, a `SocketAddr`, an `(IpAddr, u16)`) is parsed in
//! place and costs no thread hop.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Something [`TcpStream::connect`](super::TcpStream::connect) and
/// [`UdpSocket::send_to`](super::UdpSocket::send_to) can turn into socket
/// addresses: what std's `ToSocketAddrs` takes, with host names resolved on
/// the blocking pool.
///
/// Implemented for `SocketAddr` (and its V4/V6 forms), `(IpAddr, u16)`
/// (and the V4/V6 forms), `&[SocketAddr]`, `"host:port"` strings (`&str`,
/// `String`) and `(&str, u16)`/`(String, u16)` pairs, and references to
/// these. It is sealed: the set of forms is this crate's to extend.
pub trait ToSocketAddrs: sealed::Resolve {}

pub(crate) mod sealed {
    use super::*;

    /// What an address form turns into before any lookup.
    #[derive(Debug)]
    pub enum Parsed {
        /// Addresses known without a lookup.
        Ready(Vec<SocketAddr>),
        /// A `host:port` whose host must be looked up.
        Lookup(String),
    }

    /// The resolution step behind [`ToSocketAddrs`]; crate-private.
    pub trait Resolve {
        /// Parses `self`, or says what to look up.
        fn classify(&self) -> io::Result<Parsed>;
    }
}

use sealed::{Parsed, Resolve};

/// Resolves `addr`: in place if it is already an address, on the blocking
/// pool if it names a host. The addresses come back in resolver order.
///
/// # Errors
///
/// As `getaddrinfo(3)`, through std's `ToSocketAddrs`.
pub(crate) async fn resolve(addr: &impl ToSocketAddrs) -> io::Result<Vec<SocketAddr>> {
    match addr.classify()? {
        Parsed::Ready(addrs) => Ok(addrs),
        Parsed::Lookup(host_port) => {
            let lookup = crate::task::spawn_blocking(move || {
                std::net::ToSocketAddrs::to_socket_addrs(&host_port).map(Iterator::collect)
            });
            lookup.await.map_err(|e| io::Error::other(format!("address lookup failed: {e}")))?
        }
    }
}

macro_rules! addr_forms {
    ($($ty:ty),* $(,)?) => {$(
        impl Resolve for $ty {
            fn classify(&self) -> io::Result<Parsed> {
                Ok(Parsed::Ready(vec![SocketAddr::from(*self)]))
            }
        }
        impl ToSocketAddrs for $ty {}
    )*};
}

addr_forms!(
    SocketAddr,
    SocketAddrV4,
    SocketAddrV6,
    (IpAddr, u16),
    (Ipv4Addr, u16),
    (Ipv6Addr, u16),
    ([u8; 4], u16),
    ([u16; 8], u16),
);

impl Resolve for [SocketAddr] {
    fn classify(&self) -> io::Result<Parsed> {
        Ok(Parsed::Ready(self.to_vec()))
    }
}
impl ToSocketAddrs for [SocketAddr] {}

impl Resolve for str {
    fn classify(&self) -> io::Result<Parsed> {
        match self.parse::<SocketAddr>() {
            Ok(addr) => Ok(Parsed::Ready(vec![addr])),
            Err(_) => Ok(Parsed::Lookup(self.to_owned())),
        }
    }
}
impl ToSocketAddrs for str {}

impl Resolve for String {
    fn classify(&self) -> io::Result<Parsed> {
        Resolve::classify(self.as_str())
    }
}
impl ToSocketAddrs for String {}

impl Resolve for (&str, u16) {
    fn classify(&self) -> io::Result<Parsed> {
        let (host, port) = *self;
        match host.parse::<IpAddr>() {
            Ok(ip) => Ok(Parsed::Ready(vec![SocketAddr::new(ip, port)])),
            // std's `(&str, u16)` form never takes a bracketed IPv6 host;
            // neither does this one, so "host:port" below is unambiguous.
            Err(_) => Ok(Parsed::Lookup(format!("{host}:{port}"))),
        }
    }
}
impl ToSocketAddrs for (&str, u16) {}

impl Resolve for (String, u16) {
    fn classify(&self) -> io::Result<Parsed> {
        (self.0.as_str(), self.1).classify()
    }
}
impl ToSocketAddrs for (String, u16) {}

impl<T: Resolve + ?Sized> Resolve for &T {
    fn classify(&self) -> io::Result<Parsed> {
        (**self).classify()
    }
}
impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(addr: &(impl ToSocketAddrs + ?Sized)) -> Vec<SocketAddr> {
        match addr.classify().unwrap() {
            Parsed::Ready(v) => v,
            Parsed::Lookup(s) => panic!("{s} should not need a lookup"),
        }
    }

    fn lookup(addr: &(impl ToSocketAddrs + ?Sized)) -> String {
        match addr.classify().unwrap() {
            Parsed::Ready(v) => panic!("{v:?} should need a lookup"),
            Parsed::Lookup(s) => s,
        }
    }

    #[test]
    fn addresses_parse_in_place() {
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        assert_eq!(ready(&"127.0.0.1:80"), [v4]);
        assert_eq!(ready(&"[::1]:443".to_string()), [v6]);
        assert_eq!(ready(&v4), [v4]);
        assert_eq!(ready(&("::1", 443)), [v6]);
        assert_eq!(ready(&(Ipv4Addr::LOCALHOST, 80)), [v4]);
        assert_eq!(ready(&[v4, v6][..]), [v4, v6]);
    }

    #[test]
    fn names_go_to_a_lookup() {
        assert_eq!(lookup(&"localhost:80"), "localhost:80");
        assert_eq!(lookup(&("localhost".to_string(), 8080)), "localhost:8080");
        // Not an address and not host:port: std's lookup reports it.
        assert_eq!(lookup(&"no port here"), "no port here");
    }
}
