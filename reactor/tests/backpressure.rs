//! Back pressure: a registration whose queue is full stops re-arming its
//! data-bearing multishot operations until it is drained, and loses
//! nothing on the way.

mod util;

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tally_reactor::{Builder, Op};
use util::{Deadline, TICK, completions, pattern};

/// A queue of 2 and 12 connections: the accept pauses when the queue fills,
/// and resumes after each drain until every connection is accepted once.
#[test]
fn multishot_accept_pauses_on_a_full_queue_and_resumes_after_a_drain() {
    let reactor = Builder::new().queue_cap(2).build().unwrap();
    require!(reactor, multishot_accept);
    let (listener, addr) = util::loopback_listener();
    let reg = reactor.register();
    let op = reg.submit(Op::accept_multi(listener.as_raw_fd())).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    const CLIENTS: usize = 12;
    let clients: Vec<_> = (0..CLIENTS).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Let the queue fill without draining.
    for _ in 0..5 {
        reactor.turn(Some(TICK)).unwrap();
    }
    let m = reactor.metrics();
    assert!(m.queue_overflows > 0, "the queue of 2 never overflowed: {m:?}");

    let mut peers = HashSet::new();
    let deadline = Deadline::new();
    while peers.len() < CLIENTS {
        deadline.check(&reactor, "every connection to be accepted");
        for c in completions(&reg.try_drain()) {
            assert_eq!(c.op(), op);
            assert!(c.result >= 0, "accept: {}", util::errno(c.result));
            let s = TcpStream::from(reg.take_fd(&c).expect("an accept lends its fd"));
            assert!(peers.insert(s.peer_addr().unwrap()), "a connection accepted twice");
        }
        reactor.turn(Some(TICK)).unwrap();
    }
    let want: HashSet<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    assert_eq!(peers, want);
    println!("accept back pressure: {:?}", reactor.metrics());
}

/// A multishot recv on a registration with a queue of 4: data keeps
/// arriving, in order, with the recv stopping and re-arming as the
/// consumer drains slowly.
#[test]
fn multishot_recv_pauses_on_a_full_queue() {
    let reactor = Builder::new().queue_cap(4).build().unwrap();
    require!(reactor, multishot_recv);
    require!(reactor, buf_ring);
    let group = reactor.buf_ring(64, 512).unwrap();
    let (rx, tx) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    reg.submit(Op::recv_multi(rx.as_raw_fd(), group)).unwrap();
    const DATA: u64 = 64 * 1024;
    let writer = std::thread::spawn(move || {
        let bytes: Vec<u8> = (0..DATA).map(pattern).collect();
        for chunk in bytes.chunks(512) {
            (&tx).write_all(chunk).unwrap();
        }
    });
    let deadline = Deadline::new();
    let (mut received, mut eof, mut turns) = (0u64, false, 0u64);
    while !eof {
        deadline.check(&reactor, "the paced recv");
        reactor.turn(Some(TICK)).unwrap();
        turns += 1;
        // Drain only every third turn, so the queue fills in between.
        if turns % 3 != 0 {
            continue;
        }
        for c in completions(&reg.try_drain()) {
            assert!(c.result >= 0, "recv: {}", util::errno(c.result));
            if c.result == 0 {
                eof = true;
                continue;
            }
            let buf = reg.buffer(&c).unwrap();
            for (i, &b) in buf.iter().enumerate() {
                assert_eq!(b, pattern(received + i as u64), "byte {}", received + i as u64);
            }
            received += buf.len() as u64;
        }
    }
    writer.join().unwrap();
    assert_eq!(received, DATA);
    // End of file arrives once: the op is over, nothing re-arms it.
    for _ in 0..3 {
        reactor.turn(Some(TICK)).unwrap();
    }
    let late = reg.try_drain();
    assert!(completions(&late).is_empty(), "completions after end of file: {late:?}");
    let m = reactor.metrics();
    assert_eq!(m.ops_in_flight, 0);
    assert!(m.queue_overflows > 0, "the queue of 4 never overflowed: {m:?}");
    println!("recv back pressure: {m:?}");
}

/// Review finding 6: a registration that is not drained holds at most
/// `buf_cap` buffers of a shared ring, plus what its recv delivered in the
/// batch that crossed the cap (the kernel retries a multishot recv up to 32
/// times per wake-up before it yields); another registration on the same ring keeps
/// receiving meanwhile; and the stalled one resumes, losing nothing, once
/// it gives its buffers back.
#[test]
fn an_undrained_registration_holds_at_most_its_buffer_cap() {
    const CAP: u32 = 8;
    let reactor = Builder::new().buf_cap(CAP).build().unwrap();
    require!(reactor, multishot_recv);
    require!(reactor, buf_ring);
    let group = reactor.buf_ring(256, 512).unwrap();
    let (stalled_rx, stalled_tx) = UnixStream::pair().unwrap();
    let (live_rx, live_tx) = UnixStream::pair().unwrap();
    let stalled = reactor.register();
    let live = reactor.register();
    stalled.submit(Op::recv_multi(stalled_rx.as_raw_fd(), group)).unwrap();
    live.submit(Op::recv_multi(live_rx.as_raw_fd(), group)).unwrap();
    const DATA: u64 = 256 * 1024;
    let writer = std::thread::spawn(move || {
        let bytes: Vec<u8> = (0..DATA).map(pattern).collect();
        (&stalled_tx).write_all(&bytes).unwrap();
    });
    // The stalled registration is never drained here: it fills up to its
    // cap and stops, and the ring keeps buffers for the live one.
    let deadline = Deadline::new();
    while reactor.metrics().completions < u64::from(CAP) {
        deadline.check(&reactor, "the stalled registration to reach its cap");
        reactor.turn(Some(TICK)).unwrap();
    }
    for _ in 0..20 {
        reactor.turn(Some(TICK)).unwrap();
    }
    for round in 0..100u8 {
        (&live_tx).write_all(&[round]).unwrap();
        let mut got = Vec::new();
        let deadline = Deadline::new();
        while got.is_empty() {
            deadline.check(&reactor, "the live registration's byte");
            reactor.turn(Some(TICK)).unwrap();
            for c in completions(&live.try_drain()) {
                assert!(c.result > 0, "live recv: {}", util::errno(c.result));
                got.extend_from_slice(&live.buffer(&c).expect("the live recv's buffer"));
            }
        }
        assert_eq!(got, [round]);
    }
    // What the stalled one holds, claimed and kept: its cap and one batch,
    // far from the ring's 256 (which it took, uncapped).
    let mut held = Vec::new();
    let mut received = Vec::new();
    for c in completions(&stalled.try_drain()) {
        assert!(c.result > 0);
        held.push(stalled.buffer(&c).expect("a stalled recv's buffer"));
    }
    let slack = 40;
    assert!(
        (CAP as usize..=CAP as usize + slack).contains(&held.len()),
        "the stalled registration held {} buffers, its cap is {CAP}",
        held.len()
    );
    println!("the stalled registration held {} buffers (cap {CAP})", held.len());
    // Still held (claimed), so it stays stopped.
    for _ in 0..5 {
        reactor.turn(Some(TICK)).unwrap();
        assert!(completions(&stalled.try_drain()).is_empty(), "received past its cap");
    }
    // Given back, it resumes and everything arrives in order.
    for b in held.drain(..) {
        received.extend_from_slice(&b);
    }
    let deadline = Deadline::new();
    while (received.len() as u64) < DATA {
        deadline.check(&reactor, "the stalled registration's data after it gave buffers back");
        reactor.turn(Some(TICK)).unwrap();
        for c in completions(&stalled.try_drain()) {
            if c.result == 0 {
                // End of file may come in the same drain as the last bytes.
                assert_eq!(received.len() as u64, DATA, "end of file before all the data");
                continue;
            }
            assert!(c.result > 0, "stalled recv: {}", util::errno(c.result));
            received.extend_from_slice(&stalled.buffer(&c).unwrap());
        }
    }
    writer.join().unwrap();
    assert!(received.iter().enumerate().all(|(i, &b)| b == pattern(i as u64)), "data reordered");
    println!("buffer cap: {:?}", reactor.metrics());
}
