//! Multishot poll: readiness edges fold into one counted signal packet.

mod util;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use tally_reactor::{Reactor, Signals};
use util::{TICK, signal_packets, signal_totals, turn_until};

/// Edges observed one turn apart, before any drain, come back as one packet
/// list whose signal count is the number of edges.
#[test]
fn pipe_edges_between_drains_fold_into_one_count() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_poll);
    let (mut rx, mut tx) = std::io::pipe().unwrap();
    let reg = reactor.register_fd(rx.as_raw_fd(), Signals::READABLE).unwrap();
    // Let the poll arm before the first write.
    reactor.turn(Some(std::time::Duration::ZERO)).unwrap();

    const EDGES: u64 = 5;
    for i in 0..EDGES {
        let before = reactor.metrics().completions;
        tx.write_all(&[i as u8]).unwrap();
        // Turn until the reactor has reaped this edge, without draining.
        turn_until(&reactor, "a readiness edge", || reactor.metrics().completions > before);
    }

    let packets = reg.try_drain();
    assert_eq!(signal_packets(&packets), 1, "one coalesced signal packet: {packets:?}");
    let signal = packets[0].as_signal().unwrap();
    assert_eq!(packets[0].key(), reg.token());
    assert!(signal.observed.contains(Signals::READABLE), "{signal:?}");
    assert_eq!(signal.trigger, Signals::READABLE);
    // Each write was reaped on its own, so each is an edge; a spurious
    // wake-up may add more, never fewer.
    assert!(signal.count.get() as u64 >= EDGES, "count {} < {EDGES} edges", signal.count);

    // The data is all there, and the drain emptied the registration.
    let mut buf = [0u8; 16];
    assert_eq!(rx.read(&mut buf).unwrap(), EDGES as usize);
    assert!(reg.try_drain().is_empty());

    // The poll is still armed: a later edge arrives as a fresh packet.
    tx.write_all(b"again").unwrap();
    let mut later = Vec::new();
    turn_until(&reactor, "an edge after the drain", || {
        later.extend(reg.try_drain());
        signal_totals(&later).1 >= 1
    });
    assert!(signal_totals(&later).0.contains(Signals::READABLE));
}

/// Several writes before the reactor looks: the kernel may merge their
/// wake-ups, so the count is at least one (not necessarily eight), and it
/// arrives as one packet.
#[test]
fn pipe_burst_before_a_turn_is_one_packet() {
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_poll);
    let (rx, mut tx) = std::io::pipe().unwrap();
    let reg = reactor.register_fd(rx.as_raw_fd(), Signals::READABLE).unwrap();
    reactor.turn(Some(std::time::Duration::ZERO)).unwrap();

    let before = reactor.metrics().completions;
    for _ in 0..8 {
        tx.write_all(b"x").unwrap();
    }
    turn_until(&reactor, "the burst's edges", || reactor.metrics().completions > before);
    // Give late edges a chance to land before the one drain.
    reactor.turn(Some(TICK)).unwrap();
    let packets = reg.try_drain();
    assert_eq!(signal_packets(&packets), 1, "{packets:?}");
    let count = packets[0].as_signal().unwrap().count.get();
    assert!(count >= 1, "count {count}");
}

/// A one-shot poll completes once, as a signal packet of what it saw.
#[test]
fn one_shot_poll_reports_readiness_once() {
    let reactor = Reactor::new().unwrap();
    let (rx, mut tx) = std::io::pipe().unwrap();
    let reg = reactor.register();
    let _op = reg.submit(tally_reactor::Op::poll(rx.as_raw_fd(), Signals::READABLE)).unwrap();
    reactor.turn(Some(std::time::Duration::ZERO)).unwrap();
    tx.write_all(b"x").unwrap();
    let packets = util::gather_until(&reactor, &reg, "the poll", |p| signal_totals(p).1 > 0);
    let (bits, count) = signal_totals(&packets);
    assert!(bits.contains(Signals::READABLE));
    assert_eq!(count, 1);
    // One-shot: a second write raises nothing, and nothing is in flight.
    tx.write_all(b"y").unwrap();
    for _ in 0..3 {
        reactor.turn(Some(TICK)).unwrap();
    }
    assert!(reg.try_drain().is_empty());
    assert_eq!(reactor.metrics().ops_in_flight, 0);
}

/// `poll_signal` hands over the counted signal alone, without a packet
/// list; waits (storing the waker, which the next edge wakes) when nothing
/// is queued; and says `Ready(None)` as soon as anything else is queued,
/// which the full drain then hands over with the signal, nothing lost.
#[test]
fn poll_signal_takes_a_lone_signal_and_defers_to_the_full_drain() {
    use std::task::{Context, Poll};

    let (count, waker) = util::CountingWaker::new();
    let mut cx = Context::from_waker(&waker);

    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_poll);
    let (mut rx, mut tx) = std::io::pipe().unwrap();
    let reg = reactor.register_fd(rx.as_raw_fd(), Signals::READABLE).unwrap();
    reactor.turn(Some(std::time::Duration::ZERO)).unwrap();
    assert!(reg.poll_signal(&mut cx).is_pending(), "nothing queued yet");

    // An edge wakes the stored waker, and comes back as the signal alone.
    let before = reactor.metrics().completions;
    tx.write_all(b"x").unwrap();
    turn_until(&reactor, "an edge", || reactor.metrics().completions > before);
    assert!(count.wakes() >= 1, "the edge woke the waiter");
    let Poll::Ready(Some(signal)) = reg.poll_signal(&mut cx) else {
        panic!("the lone signal, taken");
    };
    assert!(signal.observed.contains(Signals::READABLE), "{signal:?}");
    assert_eq!(signal.trigger, Signals::READABLE);
    assert!(signal.count.get() >= 1);
    assert!(reg.poll_signal(&mut cx).is_pending(), "taken once");

    // A completion queued beside an edge: not for poll_signal.
    let mut buf = [0u8; 4];
    assert_eq!(rx.read(&mut buf).unwrap(), 1);
    let nop = reg.submit(tally_reactor::Op::nop()).unwrap();
    let before = reactor.metrics().completions;
    tx.write_all(b"y").unwrap();
    turn_until(&reactor, "the nop and an edge", || reactor.metrics().completions >= before + 2);
    assert_eq!(reg.poll_signal(&mut cx), Poll::Ready(None), "more than a signal waits");
    let packets = reg.try_drain();
    assert!(util::completion_of(&packets, nop).is_some(), "{packets:?}");
    assert_eq!(signal_packets(&packets), 1, "the signal comes with it: {packets:?}");
    assert!(reg.poll_signal(&mut cx).is_pending(), "all drained");
}
