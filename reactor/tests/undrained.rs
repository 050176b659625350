//! A registration woken in one crank and left undrained is counted at the
//! next, and can be made to assert in debug builds.

mod util;

use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use tally_reactor::{Builder, Op, Reactor, Registration, Signals};

use util::CountingWaker;

/// Polls `reg` with a counting waker; returns the counter.
fn park(reg: &Registration) -> Arc<CountingWaker> {
    let (count, waker) = CountingWaker::new();
    assert!(reg.poll_packets(&mut Context::from_waker(&waker)).is_pending());
    count
}

fn woken(reactor: &Reactor, count: &CountingWaker) {
    util::turn_until(reactor, "the waker", || count.wakes() > 0);
    assert_eq!(count.wakes(), 1);
}

#[test]
fn woken_and_left_undrained_is_counted() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let count = park(&reg);
    reg.submit(Op::nop()).unwrap();
    woken(&reactor, &count);
    assert_eq!(reactor.metrics().undrained, 0, "counted at the start of the next crank");
    reactor.turn(Some(Duration::ZERO)).unwrap();
    assert_eq!(reactor.metrics().undrained, 1);
    // Counted once per wake, not once per turn.
    reactor.turn(Some(Duration::ZERO)).unwrap();
    assert_eq!(reactor.metrics().undrained, 1);
    assert_eq!(reg.try_drain().len(), 1);
}

#[test]
fn woken_by_a_raise_and_left_undrained_is_counted() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let count = park(&reg);
    let signaler = reg.signaler();
    let raised = std::thread::spawn(move || signaler.raise(Signals::user(0), 3).unwrap());
    assert_eq!(raised.join().unwrap(), tally_reactor::Raised::Woke);
    woken(&reactor, &count);
    reactor.turn(Some(Duration::ZERO)).unwrap();
    assert_eq!(reactor.metrics().undrained, 1);
}

#[test]
fn drained_in_its_crank_is_not_counted() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    for _ in 0..3 {
        let count = park(&reg);
        reg.submit(Op::nop()).unwrap();
        woken(&reactor, &count);
        assert_eq!(util::completions(&reg.try_drain()).len(), 1);
        reactor.turn(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(reactor.metrics().undrained, 0);
}

#[cfg(debug_assertions)]
#[test]
fn assert_drained_panics_in_debug_builds() {
    let reactor = Builder::new().assert_drained(true).build().unwrap();
    let reg = reactor.register();
    let count = park(&reg);
    reg.submit(Op::nop()).unwrap();
    woken(&reactor, &count);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reactor.turn(Some(Duration::ZERO))
    }));
    assert!(result.is_err(), "an undrained registration did not assert");
    // The reactor survives the panic and can still be drained and dropped.
    assert_eq!(reg.try_drain().len(), 1);
    reactor.turn(Some(Duration::ZERO)).unwrap();
}
