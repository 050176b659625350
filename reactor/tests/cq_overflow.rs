//! Completion-queue overflow: a ring far too small for the work in flight
//! still delivers every completion exactly once, and nothing hangs.

mod util;

use std::collections::HashSet;

use tally_reactor::{Builder, Op};
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
    assert!(m.cq_overflows > 0, "the CQ never overflowed: {m:?}");
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
