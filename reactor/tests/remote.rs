//! Signalers, senders and remote wake-ups from other threads, before and
//! after their registration or reactor is gone.

mod util;

use std::io::ErrorKind;
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use tally_reactor::{Builder, Raised, Reactor, RemoteWaker, Sender, Signaler, Signals};
use util::{Deadline, TICK, signal_totals, user_payloads};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

#[test]
fn remote_handles_cross_threads() {
    assert_send_sync::<Signaler>();
    assert_send::<Sender>();
    assert_send_sync::<RemoteWaker>();
}

fn payload(n: u32) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[..4].copy_from_slice(&n.to_le_bytes());
    p[31] = 0xEE;
    p
}

/// A sender's queue is bounded: the send past the cap answers WouldBlock,
/// and room returns once the registration is drained.
#[test]
fn sender_queue_is_bounded() {
    let reactor = Builder::new().user_cap(4).build().unwrap();
    let reg = reactor.register();
    let sender = reg.sender();
    for n in 0..4 {
        sender.send(payload(n)).unwrap();
    }
    let err = sender.send(payload(4)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);

    reactor.turn(Some(Duration::ZERO)).unwrap();
    let packets = reg.try_drain();
    assert_eq!(user_payloads(&packets), (0..4).map(payload).collect::<Vec<_>>());
    assert!(packets.iter().all(|p| p.key() == reg.token()));
    sender.send(payload(5)).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    assert_eq!(user_payloads(&reg.try_drain()), vec![payload(5)]);
}

/// Another thread sends 10,000 packets through a queue of 16, retrying on
/// WouldBlock; every one arrives, in order.
#[test]
fn sender_from_another_thread_delivers_in_order() {
    const N: u32 = 10_000;
    let reactor = Builder::new().user_cap(16).build().unwrap();
    let reg = reactor.register();
    let sender = reg.sender();
    let producer = thread::spawn(move || {
        let mut full = 0u64;
        for n in 0..N {
            loop {
                match sender.send(payload(n)) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        full += 1;
                        thread::yield_now();
                    }
                    Err(e) => panic!("send failed: {e}"),
                }
            }
        }
        full
    });
    let deadline = Deadline::new();
    let mut next = 0;
    while next < N {
        deadline.check(&reactor, "10,000 user packets");
        reactor.turn(Some(TICK)).unwrap();
        for p in user_payloads(&reg.try_drain()) {
            assert_eq!(p, payload(next), "out of order");
            next += 1;
        }
    }
    let full = producer.join().unwrap();
    println!("sender: {N} packets, {full} WouldBlock retries, {:?}", reactor.metrics());
}

/// Once the registration is dropped, its signalers and senders answer
/// BrokenPipe, on any thread, without panicking.
#[test]
fn handles_fail_after_the_registration_is_dropped() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let signaler = reg.signaler();
    let sender = reg.sender();
    assert_eq!(signaler.raise(Signals::user(0), 1).unwrap(), Raised::Woke);
    sender.send(payload(1)).unwrap();
    drop(reg);
    assert_eq!(signaler.raise(Signals::user(0), 1).unwrap_err().kind(), ErrorKind::BrokenPipe);
    assert_eq!(sender.send(payload(2)).unwrap_err().kind(), ErrorKind::BrokenPipe);
    let other = thread::spawn(move || {
        (
            signaler.raise(Signals::user(1), 1).unwrap_err().kind(),
            sender.send(payload(3)).unwrap_err().kind(),
        )
    });
    assert_eq!(other.join().unwrap(), (ErrorKind::BrokenPipe, ErrorKind::BrokenPipe));
    // The reactor shrugs off the notifications that were in flight.
    for _ in 0..3 {
        reactor.turn(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(reactor.metrics().registrations, 0);
}

/// Once the reactor is gone, every remote handle answers BrokenPipe.
#[test]
fn handles_fail_after_the_reactor_is_dropped() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let signaler = reg.signaler();
    let sender = reg.sender();
    let waker = reactor.remote_waker();
    drop(reg);
    drop(reactor);
    let other = thread::spawn(move || {
        let kinds = [
            signaler.raise(Signals::user(0), 7).unwrap_err().kind(),
            sender.send(payload(0)).unwrap_err().kind(),
            waker.wake().unwrap_err().kind(),
        ];
        // Cloned handles outlive everything and still fail cleanly.
        let late = signaler.clone();
        drop(signaler);
        (kinds, late.raise(Signals::user(0), 1).unwrap_err().kind())
    });
    let (kinds, late) = other.join().unwrap();
    assert_eq!(kinds, [ErrorKind::BrokenPipe; 3]);
    assert_eq!(late, ErrorKind::BrokenPipe);
}

/// A reactor blocked in `turn` wakes promptly for a raise from another
/// thread, and the registration's waker is called once.
#[test]
fn a_raise_wakes_a_blocked_turn_and_the_waker() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let (wakes, waker) = util::CountingWaker::new();
    assert!(reg.poll_packets(&mut Context::from_waker(&waker)).is_pending());
    // Settle the reactor so that it really sleeps in the next turn.
    reactor.turn(Some(Duration::ZERO)).unwrap();

    let signaler = reg.signaler();
    let raiser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        for _ in 0..100 {
            let _ = signaler.raise(Signals::user(2), 1).unwrap();
        }
    });
    let start = Instant::now();
    let deadline = Deadline::new();
    while wakes.wakes() == 0 {
        deadline.check(&reactor, "the raise to wake the reactor");
        reactor.turn(Some(Duration::from_secs(5))).unwrap();
    }
    let waited = start.elapsed();
    raiser.join().unwrap();
    assert!(waited < Duration::from_secs(4), "turn slept through the wake-up ({waited:?})");
    assert_eq!(wakes.wakes(), 1, "woken once per crank");
    // Everything raised is there, in one drain once the raiser is done.
    reactor.turn(Some(Duration::ZERO)).unwrap();
    let Poll::Ready(packets) = reg.poll_packets(&mut Context::from_waker(&waker)) else {
        panic!("woken but nothing to drain");
    };
    let (bits, count) = signal_totals(&packets);
    assert_eq!(bits, Signals::user(2));
    assert_eq!(count, 100);
    assert!(reactor.metrics().kernel_wakes >= 1);
}

/// A `RemoteWaker` makes a blocked turn return.
#[test]
fn remote_waker_interrupts_a_blocked_turn() {
    let reactor = Reactor::new().unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    let waker = reactor.remote_waker();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
    });
    let start = Instant::now();
    reactor.turn(Some(Duration::from_secs(5))).unwrap();
    let waited = start.elapsed();
    t.join().unwrap();
    assert!(waited < Duration::from_secs(4), "turn slept through the wake-up ({waited:?})");
    // A wake that arrives while the reactor is awake makes the next turn
    // return at once.
    reactor.remote_waker().wake().unwrap();
    assert!(reactor.has_remote_wake());
    let start = Instant::now();
    reactor.turn(Some(Duration::from_secs(5))).unwrap();
    assert!(start.elapsed() < Duration::from_secs(4));
}
