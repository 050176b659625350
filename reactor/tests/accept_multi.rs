//! Multishot accept over TCP loopback: one completion per connection, each
//! carrying an fd the receiver owns.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

use tally_reactor::{Cancel, Op, Reactor};
use util::{completions, gather_accepts};

const CLIENTS: usize = 8;

#[test]
fn every_connection_arrives_as_an_owned_fd() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_accept);
    let (listener, addr) = util::loopback_listener();
    let reg = reactor.register();
    let op = reg.submit(Op::accept_multi(listener.as_raw_fd())).unwrap();
    reactor.turn(Some(std::time::Duration::ZERO)).unwrap();

    let mut clients: Vec<TcpStream> =
        (0..CLIENTS).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let (packets, fds) =
        gather_accepts(&reactor, &reg, "eight accepts", |p| completions(p).len() >= CLIENTS);
    let accepted: Vec<_> = completions(&packets);
    assert_eq!(accepted.len(), CLIENTS, "{packets:?}");

    for c in &accepted {
        assert_eq!(c.op(), op);
        assert!(c.result >= 0, "accept failed: {}", util::errno(c.result));
        assert!(c.more(), "the multishot accept keeps going");
    }
    assert_eq!(fds.len(), CLIENTS, "every accept lent its fd");
    let mut peers = Vec::new();
    for (_, fd) in fds {
        let stream = TcpStream::from(fd);
        peers.push((stream.peer_addr().unwrap(), stream));
    }
    // Each accepted socket is the far end of one of our clients.
    let mut want: Vec<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    let mut got: Vec<SocketAddr> = peers.iter().map(|(a, _)| *a).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);

    // And they carry data both ways.
    for (addr, server) in &mut peers {
        let client = clients.iter_mut().find(|c| c.local_addr().unwrap() == *addr).unwrap();
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
    // The test owns the fds: dropping them closes them.
    drop(peers);

    // Still armed: one more client is accepted too.
    let _late = TcpStream::connect(addr).unwrap();
    let (more, fds) =
        gather_accepts(&reactor, &reg, "a late accept", |p| !completions(p).is_empty());
    let c = completions(&more)[0];
    assert!(c.result >= 0);
    assert_eq!(fds.len(), 1);
    drop(fds);

    // Cancelling ends it; its final completion is reclaimed, not delivered.
    assert!(matches!(reg.cancel(op), Cancel::Cancelled(_)));
    util::turn_until(&reactor, "the cancel", || reactor.metrics().ops_in_flight == 0);
    assert!(completions(&reg.try_drain()).is_empty());
}
