//! Completion-queue overflow: a ring far too small for the work in flight
//! still delivers every completion exactly once, and nothing hangs.

mod util;

use std::collections::HashSet;

use tally_reactor::{Backend, Builder, Op};
use util::{Deadline, TICK, completions};

const OPS: usize = 10_000;

/// 10,000 nops submitted at once on an 8-entry ring (16 CQ entries).
#[test]
fn ten_thousand_nops_on_an_eight_entry_ring() {
    let reactor = Builder::new().entries(8).queue_cap(OPS).build().unwrap();
    let reg = reactor.register();
    let mut pending = HashSet::with_capacity(OPS);
    for _ in 0..OPS {
        assert!(pending.insert(reg.submit(Op::nop()).unwrap()), "op ids are unique");
    }
    let deadline = Deadline::new();
    let mut delivered = 0;
    while !pending.is_empty() {
        deadline.check(&reactor, "10,000 nop completions");
        reactor.turn(Some(TICK)).unwrap();
        for c in completions(&reg.try_drain()) {
            assert_eq!(c.result, 0);
            assert!(pending.remove(&c.op()), "completion {:?} delivered twice or unknown", c.op());
            delivered += 1;
        }
    }
    assert_eq!(delivered, OPS);
    // Nothing else trickles in later.
    for _ in 0..3 {
        reactor.turn(Some(TICK)).unwrap();
    }
    assert!(completions(&reg.try_drain()).is_empty());
    let m = reactor.metrics();
    assert_eq!(m.ops_in_flight, 0);
    assert_eq!(m.completions as usize, OPS, "{m:?}");
    // 10,000 completions cannot fit in 16 CQ entries before the first
    // reap: the overflow path was taken, and survived.
    if m.backend == Backend::IoUring {
        assert!(m.cq_overflows > 0, "the CQ never overflowed: {m:?}");
    } else {
        util::skip("the CQ-overflow check", "epoll has no completion queue to overflow");
    }
    println!("cq overflow: {m:?}");
}

/// The same flood with the default queue cap: the registration's queue
/// overflows too, and one-shot completions wait in its overflow list
/// rather than being dropped. Submitting while draining keeps it going.
#[test]
fn nops_submitted_while_draining_on_a_tiny_ring() {
    let reactor = Builder::new().entries(8).queue_cap(16).build().unwrap();
    let reg = reactor.register();
    let deadline = Deadline::new();
    let (mut submitted, mut delivered) = (0, 0);
    let mut seen = HashSet::with_capacity(OPS);
    while delivered < OPS {
        deadline.check(&reactor, "nops submitted as we go");
        for _ in 0..100.min(OPS - submitted) {
            reg.submit(Op::nop()).unwrap();
            submitted += 1;
        }
        reactor.turn(Some(TICK)).unwrap();
        for c in completions(&reg.try_drain()) {
            assert!(seen.insert(c.op()), "duplicate completion");
            delivered += 1;
        }
    }
    assert_eq!(reactor.metrics().ops_in_flight, 0);
}

/// Review finding 7: under sustained CQ overflow the kernel ends healthy
/// multishot polls right after arming (it cannot post their `F_MORE`
/// completion), which looks like a file that cannot wait. 64 eventfds,
/// signalled every crank on a 16-entry CQ, must all keep being watched:
/// none may be refused with `EPERM`, and each still reports its writes.
#[test]
fn sustained_cq_overflow_does_not_refuse_healthy_polls() {
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    use tally_packets::Signals;

    const FDS: usize = 64;
    const CRANKS: usize = 50;
    let reactor = Builder::new().entries(8).build().unwrap();
    let files: Vec<File> = (0..FDS)
        .map(|_| {
            // SAFETY: eventfd takes no pointers.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            assert!(fd >= 0);
            // SAFETY: eventfd just returned this fd; nothing else owns it.
            unsafe { File::from_raw_fd(fd) }
        })
        .collect();
    let regs: Vec<_> = files
        .iter()
        .map(|f| reactor.register_fd(f.as_raw_fd(), Signals::READABLE).unwrap())
        .collect();
    let mut readable = vec![0usize; FDS];
    let deadline = Deadline::new();
    for _ in 0..CRANKS {
        deadline.check(&reactor, "cranks of signalled eventfds");
        for mut f in &files {
            // Never read, so each fd stays readable; each write is an edge.
            f.write_all(&1u64.to_ne_bytes()).unwrap();
        }
        reactor.turn(Some(TICK)).unwrap();
        for (i, reg) in regs.iter().enumerate() {
            let got = reg.try_drain();
            for c in completions(&got) {
                assert_ne!(c.result, -libc::EPERM, "eventfd {i} was refused as unpollable");
            }
            if util::signal_totals(&got).0.contains(Signals::READABLE) {
                readable[i] += 1;
            }
        }
    }
    let m = reactor.metrics();
    if m.backend == Backend::IoUring {
        assert!(m.cq_overflows > 0, "the CQ never overflowed, so this tested nothing: {m:?}");
    } else {
        util::skip("the CQ-overflow check", "epoll has no completion queue to overflow");
    }
    // Emptied, the eventfds stop being ready, and every poll that paused
    // for the full CQ re-arms and stays armed: none has ended.
    for mut f in &files {
        let mut count = [0u8; 8];
        std::io::Read::read_exact(&mut f, &mut count).unwrap();
    }
    for _ in 0..3 {
        reactor.turn(Some(TICK)).unwrap();
        for reg in &regs {
            assert!(completions(&reg.try_drain()).is_empty());
        }
    }
    let m = reactor.metrics();
    assert_eq!(m.ops_in_flight, FDS, "every poll is armed again: {m:?}");
    assert!(readable.iter().all(|&n| n > 0), "an eventfd never reported readable: {readable:?}");
}
