//! Every one-shot operation round-trips through a real kernel object.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use tally_reactor::{Cancel, Op, Reactor, Registration, Signals};
use util::{completions, signal_totals, wait_completion};

/// Submits `op` and waits for its completion's result.
fn run(reactor: &Reactor, reg: &Registration, op: Op) -> (tally_reactor::OpId, i32) {
    let id = reg.submit(op).unwrap();
    let (c, all) = wait_completion(reactor, reg, id);
    assert_eq!(completions(&all).len(), 1, "one completion per one-shot op: {all:?}");
    assert!(!c.more());
    (id, c.result)
}

#[test]
fn nop() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let (id, result) = run(&reactor, &reg, Op::nop());
    assert_eq!(result, 0);
    assert!(reg.reclaim(id).is_none(), "a nop has no buffer");
}

#[test]
fn write_then_read_a_pipe() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let (rx, tx) = std::io::pipe().unwrap();
    let (w, result) = run(&reactor, &reg, Op::write(tx.as_raw_fd(), b"hello".to_vec()));
    assert_eq!(result, 5);
    assert_eq!(reg.reclaim(w).unwrap(), b"hello", "the write's buffer comes back");
    // A read appends to what the buffer already holds.
    let mut buf = Vec::with_capacity(16);
    buf.extend_from_slice(b">>");
    let (r, result) = run(&reactor, &reg, Op::read(rx.as_raw_fd(), buf));
    assert_eq!(result, 5);
    assert_eq!(reg.reclaim(r).unwrap(), b">>hello");
}

#[test]
fn write_at_then_read_at_a_memfd() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let name = c"tally-ops";
    // SAFETY: `name` is a valid C string; memfd_create takes no other pointers.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: memfd_create just returned this fd; nothing else owns it.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let (_, result) = run(&reactor, &reg, Op::write_at(file.as_raw_fd(), b"xyz".to_vec(), 100));
    assert_eq!(result, 3);
    let (r, result) =
        run(&reactor, &reg, Op::read_at(file.as_raw_fd(), Vec::with_capacity(3), 100));
    assert_eq!(result, 3);
    assert_eq!(reg.reclaim(r).unwrap(), b"xyz");
    // Before offset 100 the file is a hole of zeroes.
    let (r, _) = run(&reactor, &reg, Op::read_at(file.as_raw_fd(), Vec::with_capacity(2), 98));
    assert_eq!(reg.reclaim(r).unwrap(), [0, 0]);
}

#[test]
fn send_then_recv_a_socketpair() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let (a, b) = UnixStream::pair().unwrap();
    let (s, result) = run(&reactor, &reg, Op::send(a.as_raw_fd(), b"datagram?".to_vec(), 0));
    assert_eq!(result, 9);
    assert_eq!(reg.reclaim(s).unwrap(), b"datagram?");
    let (r, result) = run(&reactor, &reg, Op::recv(b.as_raw_fd(), Vec::with_capacity(64), 0));
    assert_eq!(result, 9);
    assert_eq!(reg.reclaim(r).unwrap(), b"datagram?");
    // A recv submitted before the data arrives waits for it.
    let id = reg.submit(Op::recv(b.as_raw_fd(), Vec::with_capacity(64), 0)).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    assert!(reg.try_drain().is_empty());
    (&a).write_all(b"late").unwrap();
    let (c, _) = wait_completion(&reactor, &reg, id);
    assert_eq!(c.result, 4);
    assert_eq!(reg.reclaim(id).unwrap(), b"late");
}

#[test]
fn connect_and_accept_over_loopback() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let (listener, addr) = util::loopback_listener();
    let accept = reg.submit(Op::accept(listener.as_raw_fd())).unwrap();
    // SAFETY: socket() takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: socket() just returned this fd; nothing else owns it.
    let client = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let connect = reg.submit(Op::connect(client.as_raw_fd(), addr)).unwrap();
    let (packets, mut fds) =
        util::gather_accepts(&reactor, &reg, "connect and accept", |p| completions(p).len() == 2);
    let connected = util::completion_of(&packets, connect).unwrap();
    assert_eq!(connected.result, 0, "connect failed");
    let accepted = util::completion_of(&packets, accept).unwrap();
    assert!(accepted.result >= 0, "accept: {}", util::errno(accepted.result));
    let (c, fd) = fds.pop().expect("the accept lent its fd");
    assert_eq!(c, accepted);
    let mut server = TcpStream::from(fd);
    assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
    (&client).write_all(b"hi").unwrap();
    let mut buf = [0; 2];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
}

#[test]
fn close_closes_the_fd() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    // Closing the only write end makes the read end see end of file. (The
    // fd number itself could be reused by another test's thread at once,
    // so the check goes through the pipe, not fcntl.)
    let (mut rx, tx) = std::io::pipe().unwrap();
    let (_, result) = run(&reactor, &reg, Op::close(OwnedFd::from(tx)));
    assert_eq!(result, 0);
    let mut buf = [0; 1];
    assert_eq!(rx.read(&mut buf).unwrap(), 0, "the write end is still open");
}

#[test]
fn shutdown_ends_the_peer_stream() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let (a, mut b) = UnixStream::pair().unwrap();
    (&a).write_all(b"last").unwrap();
    let (_, result) = run(&reactor, &reg, Op::shutdown(a.as_raw_fd(), libc::SHUT_WR));
    assert_eq!(result, 0);
    let mut got = Vec::new();
    b.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"last");
    assert!((&a).write_all(b"more").is_err(), "writes after SHUT_WR fail");
}

#[test]
fn timeout_expires_with_etime() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let start = Instant::now();
    let (_, result) = run(&reactor, &reg, Op::timeout(Duration::from_millis(30)));
    assert_eq!(result, -libc::ETIME);
    assert!(start.elapsed() >= Duration::from_millis(25), "fired early: {:?}", start.elapsed());
}

#[test]
fn cancelled_timeout_delivers_nothing() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let id = reg.submit(Op::timeout(Duration::from_secs(30))).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    assert!(matches!(reg.cancel(id), Cancel::Cancelled(_)));
    util::turn_until(&reactor, "the cancel", || reactor.metrics().ops_in_flight == 0);
    assert!(reg.try_drain().is_empty());
    assert!(reactor.metrics().reclaimed >= 1);
}

#[test]
fn poll_reports_writable_once() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let (a, _b) = UnixStream::pair().unwrap();
    reg.submit(Op::poll(a.as_raw_fd(), Signals::WRITABLE)).unwrap();
    let packets = util::gather_until(&reactor, &reg, "writable", |p| signal_totals(p).1 > 0);
    let (bits, count) = signal_totals(&packets);
    assert!(bits.contains(Signals::WRITABLE), "{bits:?}");
    assert_eq!(count, 1);
    assert!(completions(&packets).is_empty(), "a successful poll is a signal, not a completion");
    assert_eq!(reactor.metrics().ops_in_flight, 0);
}
