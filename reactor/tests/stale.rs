//! Stale tokens: a completion in flight for a dropped registration never
//! reaches the registration that reuses its slot.

mod util;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use tally_reactor::{Op, Reactor, Registration};
use util::{TICK, completions, turn_until, wait_completion};

/// Drops `old` and registers anew; the slab is LIFO, so the newcomer takes
/// the same slot with a new generation.
fn reuse_slot(reactor: &Reactor, old: Registration) -> Registration {
    let old_token = old.token();
    drop(old);
    let new = reactor.register();
    assert_eq!(new.token().slot(), old_token.slot(), "LIFO slab reuses the slot");
    assert_ne!(new.token().generation(), old_token.generation());
    assert_ne!(new.token(), old_token);
    new
}

/// Turns until the old op's final completion has come back, then checks the
/// newcomer got nothing and can still complete its own work.
fn settle_and_check(reactor: &Reactor, new: &Registration, reclaimed_before: u64) {
    turn_until(reactor, "the old op's final completion", || reactor.metrics().ops_in_flight == 0);
    // A few more turns in case anything else was on its way.
    for _ in 0..3 {
        reactor.turn(Some(TICK)).unwrap();
    }
    let got = new.try_drain();
    assert!(got.is_empty(), "the new registration received the old one's packets: {got:?}");
    let m = reactor.metrics();
    // The old completion was either dropped as stale or reclaimed as
    // cancelled; either way it is accounted for, not delivered.
    assert!(
        m.stale_completions + m.reclaimed > reclaimed_before,
        "the old completion was neither dropped nor reclaimed: {m:?}"
    );

    let op = new.submit(Op::nop()).unwrap();
    let (c, all) = wait_completion(reactor, new, op);
    assert_eq!(c.result, 0);
    assert_eq!(completions(&all).len(), 1, "exactly the newcomer's own nop: {all:?}");
    assert!(all.iter().all(|p| p.key() == new.token()));
}

/// A timeout fires while its registration is being dropped and replaced:
/// its -ETIME arrives after the slot has a new owner.
#[test]
fn expired_timeout_of_a_dropped_registration_is_not_delivered() {
    let reactor = Reactor::new().unwrap();
    let old = reactor.register();
    old.submit(Op::timeout(Duration::from_millis(1))).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    // The timer fires now; with deferred task work its completion waits
    // for the next enter.
    thread::sleep(Duration::from_millis(20));
    let before = reactor.metrics();
    let new = reuse_slot(&reactor, old);
    settle_and_check(&reactor, &new, before.stale_completions + before.reclaimed);
}

/// A timeout still pending when its registration goes is cancelled; the
/// -ECANCELED completion is reclaimed, not handed to the slot's next owner.
#[test]
fn cancelled_timeout_of_a_dropped_registration_is_not_delivered() {
    let reactor = Reactor::new().unwrap();
    let old = reactor.register();
    old.submit(Op::timeout(Duration::from_secs(30))).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    assert_eq!(reactor.metrics().ops_in_flight, 1);
    let before = reactor.metrics();
    let new = reuse_slot(&reactor, old);
    settle_and_check(&reactor, &new, before.stale_completions + before.reclaimed);
}

/// A recv completes with data while its registration is dropped and its
/// slot reused: the bytes (and the buffer) never reach the newcomer.
#[test]
fn completed_recv_of_a_dropped_registration_is_not_delivered() {
    let reactor = Reactor::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let old = reactor.register();
    old.submit(Op::recv(a.as_raw_fd(), Vec::with_capacity(64), 0)).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    b.write_all(b"for the old registration").unwrap();
    let before = reactor.metrics();
    let new = reuse_slot(&reactor, old);
    settle_and_check(&reactor, &new, before.stale_completions + before.reclaimed);
    // Whether the recv took the bytes or was cancelled first, the socket is
    // still usable and the newcomer can read what is left.
    b.write_all(b"!").unwrap();
    drop(b);
    let mut rest = Vec::new();
    let mut a = a;
    a.read_to_end(&mut rest).unwrap();
    assert!(rest.ends_with(b"!"), "{rest:?}");
}
