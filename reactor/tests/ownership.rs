//! What packets own, and what cancel hands back: a drained list dropped
//! unhandled neither leaks an accepted fd nor keeps a provided buffer out
//! of the ring (the registration frees them at its next drain), and
//! cancelling an op that already completed returns its completion and its
//! bytes instead of discarding them (review findings 11 and 3).

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tally_reactor::{Cancel, CompletionPacket, Op, Packet, Reactor, Registration};
use util::{Deadline, TICK, completion_of, completions};

/// Whether `client`'s peer closed: a read sees end of file (or a reset)
/// within a second, rather than timing out.
fn peer_closed(client: &mut TcpStream) -> bool {
    client.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut byte = [0u8; 1];
    match client.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent nothing"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => false,
        Err(_) => true,
    }
}

/// A listener, a registration whose one-shot accept took a client's
/// connection, the client, the accept's completion, and every packet the
/// drain that carried the completion handed over.
struct Accepted {
    _listener: std::net::TcpListener,
    reg: Registration,
    client: TcpStream,
    c: CompletionPacket,
    packets: Vec<Packet>,
}

fn accepted(reactor: &Reactor) -> Accepted {
    let (listener, addr) = util::loopback_listener();
    let reg = reactor.register();
    let op = reg.submit(Op::accept(listener.as_raw_fd())).unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (c, packets) = util::wait_completion(reactor, &reg, op);
    assert!(c.result >= 0, "accept failed: {}", util::errno(c.result));
    Accepted { _listener: listener, reg, client, c, packets }
}

#[test]
fn an_accepted_fd_in_a_dropped_list_is_closed_at_the_next_drain() {
    let reactor = Reactor::new().unwrap();
    let Accepted { reg, mut client, packets, .. } = accepted(&reactor);
    drop(packets);
    // The next drain frees what the last one lent and nobody took.
    assert!(reg.try_drain().is_empty());
    assert!(peer_closed(&mut client), "the accepted fd leaked: the client never saw it close");
}

#[test]
fn a_taken_fd_is_the_takers_and_is_taken_once() {
    let reactor = Reactor::new().unwrap();
    let Accepted { reg, mut client, c, .. } = accepted(&reactor);
    let fd = reg.take_fd(&c).expect("an accept completion carries its fd");
    assert!(reg.take_fd(&c).is_none(), "one fd taken twice");
    assert!(reg.try_drain().is_empty());
    let mut server = TcpStream::from(fd);
    server.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x", "the next drain closed an fd that was taken");
    let other = reactor.register();
    assert!(other.take_fd(&c).is_none(), "another registration took the fd");
}

#[test]
fn a_dropped_registration_closes_the_fds_it_lent() {
    let reactor = Reactor::new().unwrap();
    let Accepted { reg, mut client, .. } = accepted(&reactor);
    drop(reg);
    assert!(peer_closed(&mut client), "the accepted fd leaked with its registration");
}

/// A ring of two buffers: packets naming both, dropped unhandled, would
/// starve the recv for good if the buffers never came back.
#[test]
fn buffers_named_by_a_dropped_list_go_back_to_the_ring_at_the_next_drain() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_recv);
    require!(reactor, buf_ring);
    let group = reactor.buf_ring(2, 64).unwrap();
    let (rx, mut tx) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    reg.submit(Op::recv_multi(rx.as_raw_fd(), group)).unwrap();
    let deadline = Deadline::after(Duration::from_secs(10));
    let mut rounds = 0;
    while rounds < 20 {
        deadline.check(&reactor, "twenty rounds over a two-buffer ring");
        tx.write_all(&[7u8; 64]).unwrap();
        let packets = util::gather_until(&reactor, &reg, "a filled buffer", |p| {
            completions(p).iter().any(|c| c.buffer().is_some())
        });
        // Dropped without `buffer` or `release_buffer`.
        drop(packets);
        rounds += 1;
    }
    let _ = reactor.turn(Some(TICK));
}

#[test]
fn cancelling_a_completed_read_returns_its_packet_and_its_bytes() {
    let reactor = Reactor::new().unwrap();
    let (rx, mut tx) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    let op = reg.submit(Op::read(rx.as_raw_fd(), Vec::with_capacity(16))).unwrap();
    tx.write_all(b"hello").unwrap();
    util::turn_until(&reactor, "the read", || reactor.metrics().ops_in_flight == 0);
    // Completed, queued, not drained: a cancel now must not discard it.
    match reg.cancel(op) {
        Cancel::AlreadyCompleted(packets) => {
            let c = completion_of(&packets, op).expect("the read's completion comes back");
            assert_eq!(c.result, 5);
        }
        other => panic!("cancel of a completed read said {other:?}"),
    }
    assert_eq!(reg.reclaim(op).as_deref(), Some(&b"hello"[..]), "the bytes read were dropped");
    assert!(reg.try_drain().is_empty(), "the completion was delivered twice");
}

#[test]
fn cancelling_a_read_in_flight_says_cancelled_and_nothing_arrives() {
    let reactor = Reactor::new().unwrap();
    let (rx, _tx) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    let op = reg.submit(Op::read(rx.as_raw_fd(), Vec::with_capacity(16))).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    assert!(matches!(reg.cancel(op), Cancel::Cancelled(ref p) if p.is_empty()));
    util::turn_until(&reactor, "the cancel", || reactor.metrics().ops_in_flight == 0);
    assert!(reg.try_drain().is_empty());
    assert!(matches!(reg.cancel(op), Cancel::NotFound), "cancelled twice");
    assert!(reg.reclaim(op).is_none());
}

#[test]
fn cancelling_a_multishot_accept_hands_back_the_connections_already_accepted() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_accept);
    let (listener, addr) = util::loopback_listener();
    let reg = reactor.register();
    let op = reg.submit(Op::accept_multi(listener.as_raw_fd())).unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    util::turn_until(&reactor, "the accept", || reactor.metrics().completions > 0);
    let Cancel::Cancelled(packets) = reg.cancel(op) else { panic!("the accept was live") };
    let c = completion_of(&packets, op).expect("the accepted connection comes back");
    let fd = reg.take_fd(&c).expect("and its fd with it");
    let mut server = TcpStream::from(fd);
    server.write_all(b"y").unwrap();
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"y");
}
