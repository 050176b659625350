//! Multishot recv with a provided buffer ring: every byte arrives in order,
//! buffers are recycled, the kernel running out of buffers pauses the
//! receive until they come back, and a stale packet copy never claims a
//! buffer delivered again since.

mod util;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use tally_reactor::{CompletionPacket, Op, Reactor, RecvBuf};
use util::{Deadline, TICK, completions, pattern};

const TOTAL: u64 = 10 * 1024 * 1024;

/// Writes `total` bytes of the test pattern, in chunks of `chunk`.
fn writer(mut tx: UnixStream, total: u64, chunk: usize) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = vec![0u8; chunk];
        let mut sent = 0u64;
        while sent < total {
            let n = chunk.min((total - sent) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(sent + i as u64);
            }
            tx.write_all(&buf[..n]).unwrap();
            sent += n as u64;
        }
        // Dropping `tx` ends the stream: the receiver sees a 0-byte recv.
    })
}

/// Checks `data` against the pattern at `offset`.
fn verify(data: &[u8], offset: u64) {
    for (i, &b) in data.iter().enumerate() {
        let at = offset + i as u64;
        assert_eq!(b, pattern(at), "byte {at} is wrong");
    }
}

/// 10 MB through a ring of 16 x 4 KiB buffers (64 KiB, so each buffer is
/// reused ~160 times), released as soon as each is checked.
#[test]
fn ten_megabytes_arrive_in_order_through_recycled_buffers() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_recv);
    require!(reactor, buf_ring);
    let group = reactor.buf_ring(16, 4096).unwrap();
    let (rx, tx) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    let op = reg.submit(Op::recv_multi(rx.as_raw_fd(), group)).unwrap();
    let writer = writer(tx, TOTAL, 64 * 1024);

    let deadline = Deadline::after(Duration::from_secs(30));
    let (mut received, mut chunks, mut eof) = (0u64, 0u64, false);
    while !eof {
        deadline.check(&reactor, "10 MB over the buffer ring");
        reactor.turn(Some(TICK)).unwrap();
        for c in completions(&reg.try_drain()) {
            assert_eq!(c.op(), op);
            assert!(c.result >= 0, "recv failed: {}", util::errno(c.result));
            if c.result == 0 {
                assert!(!c.more(), "EOF ends the multishot recv");
                eof = true;
                continue;
            }
            let buf = reg.buffer(&c).expect("a data completion names a buffer");
            assert_eq!(buf.len(), c.result as usize);
            verify(&buf, received);
            received += buf.len() as u64;
            chunks += 1;
            drop(buf);
        }
    }
    writer.join().unwrap();
    assert_eq!(received, TOTAL);
    assert!(chunks > 16, "10 MB through 16 buffers must recycle them ({chunks} chunks)");
    let m = reactor.metrics();
    assert_eq!(m.ops_in_flight, 0, "EOF finished the op: {m:?}");
    println!("buf ring: {chunks} chunks; {m:?}");
}

/// The consumer sits on every buffer: the kernel ends the multishot recv
/// with ENOBUFS, which the reactor keeps to itself, and re-arms the recv
/// once buffers come back. No byte is lost or reordered across the pause.
#[test]
fn recv_pauses_when_buffers_run_out_and_resumes_when_released() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_recv);
    require!(reactor, buf_ring);
    const BUFS: usize = 4;
    const SIZE: u32 = 1024;
    const DATA: u64 = 128 * 1024;
    let group = reactor.buf_ring(BUFS as u16, SIZE).unwrap();
    let (rx, tx) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    reg.submit(Op::recv_multi(rx.as_raw_fd(), group)).unwrap();
    let writer = writer(tx, DATA, 4096);

    let deadline = Deadline::new();
    let (mut received, mut eof, mut pauses) = (0u64, false, 0);
    let mut held: Vec<RecvBuf> = Vec::new();
    while !eof {
        deadline.check(&reactor, "the paused recv to resume");
        reactor.turn(Some(TICK)).unwrap();
        for c in completions(&reg.try_drain()) {
            assert!(c.result >= 0, "error delivered: {}", util::errno(c.result));
            if c.result == 0 {
                eof = true;
                continue;
            }
            held.push(reg.buffer(&c).unwrap());
        }
        if held.len() == BUFS {
            // Every buffer is out: the kernel cannot continue. Turn a few
            // times to let it notice and stop, and check nothing arrives.
            for _ in 0..3 {
                reactor.turn(Some(Duration::from_millis(1))).unwrap();
            }
            let stalled = reg.try_drain();
            assert!(completions(&stalled).is_empty(), "data without buffers: {stalled:?}");
            pauses += 1;
        }
        if held.len() == BUFS || eof {
            for buf in held.drain(..) {
                verify(&buf, received);
                received += buf.len() as u64;
            }
        }
    }
    for buf in held.drain(..) {
        verify(&buf, received);
        received += buf.len() as u64;
    }
    writer.join().unwrap();
    assert_eq!(received, DATA);
    assert!(pauses > 0, "the ring never ran dry");
    let m = reactor.metrics();
    // The first arm plus at least one re-arm per pause.
    assert!(m.submissions >= 1 + 1 + pauses, "no re-arm after ENOBUFS: {m:?}");
    println!("paused {pauses} times; {m:?}");
}

/// Buffers the kernel filled for a recv that was cancelled before its
/// completions were reaped go back to the ring: a later recv on the same
/// ring still gets them. (Without deferred task work, completions are
/// posted on any return from a syscall, so they can wait in the CQ while
/// the registration is dropped.)
#[test]
fn buffers_of_a_cancelled_recv_return_to_the_ring() {
    let reactor = tally_reactor::Builder::new().defer_taskrun(false).build().unwrap();
    require!(reactor, multishot_recv);
    require!(reactor, buf_ring);
    let group = reactor.buf_ring(2, 256).unwrap();
    for round in 0..4 {
        let (rx, mut tx) = UnixStream::pair().unwrap();
        let old = reactor.register();
        old.submit(Op::recv_multi(rx.as_raw_fd(), group)).unwrap();
        reactor.turn(Some(Duration::ZERO)).unwrap();
        // Fill both buffers; the kernel posts (or queues) their completions.
        for _ in 0..2 {
            tx.write_all(&[round; 256]).unwrap();
            thread::sleep(Duration::from_millis(5));
        }
        drop(old);
        util::turn_until(&reactor, "the cancelled recv to finish", || {
            reactor.metrics().ops_in_flight == 0
        });

        // A new recv on the same two-buffer ring must still receive.
        let (rx, mut tx) = UnixStream::pair().unwrap();
        let new = reactor.register();
        new.submit(Op::recv_multi(rx.as_raw_fd(), group)).unwrap();
        tx.write_all(b"still there").unwrap();
        let got = util::gather_until(&reactor, &new, "data through the reused ring", |p| {
            !completions(p).is_empty()
        });
        let c = completions(&got)[0];
        assert!(c.result > 0, "round {round}: {}", util::errno(c.result));
        assert_eq!(&*new.buffer(&c).unwrap(), b"still there");
    }
    println!("cancelled recv: {:?}", reactor.metrics());
}

/// Writes `data` and turns until a completion with data arrives; returns it.
fn next_data(
    reactor: &Reactor,
    reg: &tally_reactor::Registration,
    tx: &mut UnixStream,
    data: &[u8],
) -> CompletionPacket {
    tx.write_all(data).unwrap();
    let got = util::gather_until(reactor, reg, "a recv completion with data", |p| {
        completions(p).iter().any(|c| c.result > 0)
    });
    let data: Vec<_> = completions(&got).into_iter().filter(|c| c.result > 0).collect();
    assert_eq!(data.len(), 1, "one write, one chunk: {got:?}");
    data[0]
}

/// Packets are `Copy` and buffer ids are reused. A copy of an old packet,
/// kept after its buffer went back to the kernel, must neither claim nor
/// give back the buffer when a later completion delivers it again with
/// someone else's data; the later packet itself still claims it.
#[test]
fn a_stale_packet_copy_cannot_claim_a_later_delivery_of_its_buffer() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_recv);
    require!(reactor, buf_ring);
    // One buffer, so that every delivery reuses buffer id 0.
    let group = reactor.buf_ring(1, 64).unwrap();
    let (rx, mut tx) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    reg.submit(Op::recv_multi(rx.as_raw_fd(), group)).unwrap();

    let first = next_data(&reactor, &reg, &mut tx, b"first delivery");
    let stale = first;
    let buf = reg.buffer(&first).expect("the first delivery claims its buffer");
    assert_eq!(&*buf, b"first delivery");
    assert!(reg.buffer(&stale).is_none(), "claimed twice");
    drop(buf);
    assert!(reg.buffer(&stale).is_none(), "given back, yet claimed again");

    let second = next_data(&reactor, &reg, &mut tx, b"second delivery");
    let (s2, s1) = (second.buffer().unwrap(), stale.buffer().unwrap());
    assert_eq!(s2.id, s1.id, "one buffer: its id is reused");
    assert!(s2.generation > s1.generation, "{second:?} vs {stale:?}");
    assert!(reg.buffer(&stale).is_none(), "a stale copy claimed a later delivery");
    // Nor may the stale copy hand the later delivery back to the kernel.
    reg.release_buffer(&stale);
    let buf = reg.buffer(&second).expect("the fresh packet claims its buffer");
    assert_eq!(&*buf, b"second delivery");
    assert!(reg.buffer(&stale).is_none() && reg.buffer(&second).is_none());
    drop(buf);

    // And the ring keeps working: a third delivery of the same buffer.
    let third = next_data(&reactor, &reg, &mut tx, b"third");
    assert_eq!(third.buffer().unwrap().id, s1.id);
    assert!(reg.buffer(&second).is_none(), "a stale copy claimed a later delivery");
    assert_eq!(&*reg.buffer(&third).unwrap(), b"third");
}

/// `CompletionPacket::result` is a public field: safe code can raise it on a
/// real 10-byte packet. The buffer must still be exactly the 10 bytes the
/// kernel wrote (the buffers are not zeroed, so a longer slice would read
/// uninitialised memory), and another registration cannot claim it.
#[test]
fn a_forged_result_cannot_lengthen_a_buffer_and_another_registration_cannot_claim_it() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_recv);
    require!(reactor, buf_ring);
    let group = reactor.buf_ring(4, 4096).unwrap();
    let (rx, mut tx) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    let other = reactor.register();
    let op = reg.submit(Op::recv_multi(rx.as_raw_fd(), group)).unwrap();
    tx.write_all(b"0123456789").unwrap();
    let (c, _) = util::wait_completion(&reactor, &reg, op);
    assert_eq!(c.result, 10);

    let mut forged = c;
    forged.result = 4096;
    assert!(other.buffer(&forged).is_none(), "another registration claimed the buffer");
    assert!(other.buffer(&c).is_none(), "another registration claimed the buffer");
    let buf = reg.buffer(&forged).expect("the owner claims its buffer");
    assert_eq!(&buf[..], b"0123456789", "the length must be the kernel's, not the packet's");
    drop(buf);
    let _ = reg.cancel(op);
}
