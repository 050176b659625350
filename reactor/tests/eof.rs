//! End of file reaches a multishot recv however it arrives: with the last
//! bytes before the recv is armed, or with them while it waits. (On epoll,
//! a short read ends a recv's turn, and only the edge's "peer closed" bit,
//! or another try, finds the end of file that came with the bytes.)

mod util;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tally_reactor::{Op, Reactor};
use util::{Deadline, TICK, completions};

/// Drains `reg` until a completion with result 0 (end of file), and
/// returns the bytes received before it.
fn until_eof(reactor: &Reactor, reg: &tally_reactor::Registration) -> Vec<u8> {
    let deadline = Deadline::new();
    let mut got = Vec::new();
    loop {
        deadline.check(reactor, "end of file");
        reactor.turn(Some(TICK)).unwrap();
        for c in completions(&reg.try_drain()) {
            assert!(c.result >= 0, "recv: {}", util::errno(c.result));
            if c.result == 0 {
                return got;
            }
            got.extend_from_slice(&reg.buffer(&c).expect("a recv's buffer"));
        }
    }
}

#[test]
fn bytes_and_end_of_file_sent_before_the_recv_is_armed() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_recv);
    let group = reactor.buf_ring(8, 64).unwrap();
    let (rx, mut tx) = UnixStream::pair().unwrap();
    tx.write_all(b"last words").unwrap();
    drop(tx);
    let reg = reactor.register();
    reg.submit(Op::recv_multi(rx.as_raw_fd(), group)).unwrap();
    assert_eq!(until_eof(&reactor, &reg), b"last words");
}

#[test]
fn bytes_and_end_of_file_sent_while_the_recv_waits() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_recv);
    let group = reactor.buf_ring(8, 64).unwrap();
    let (rx, mut tx) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    reg.submit(Op::recv_multi(rx.as_raw_fd(), group)).unwrap();
    for _ in 0..3 {
        reactor.turn(Some(Duration::from_millis(1))).unwrap();
    }
    assert!(completions(&reg.try_drain()).is_empty());
    // One go, so that one edge carries both the bytes and the close.
    tx.write_all(b"last words").unwrap();
    drop(tx);
    assert_eq!(until_eof(&reactor, &reg), b"last words");
}
