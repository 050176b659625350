//! A turn's timeout past what the kernel's timespec holds means "no
//! timeout", not "already expired".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tally_reactor::Reactor;

/// `turn(Some(Duration::MAX))` once built a negative `tv_sec`, got `ETIME`
/// at once and so never slept: a loop of such turns spun the CPU until the
/// wake-up came. Now each turn blocks until it is woken.
#[test]
fn a_turn_with_duration_max_blocks_until_woken() {
    let reactor = Reactor::new().unwrap();
    let waker = reactor.remote_waker();
    let woken = Arc::new(AtomicBool::new(false));
    let flag = woken.clone();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        flag.store(true, Ordering::SeqCst);
        waker.wake().unwrap();
    });
    let mut turns = 0;
    while !woken.load(Ordering::SeqCst) && turns < 1000 {
        reactor.turn(Some(Duration::MAX)).unwrap();
        turns += 1;
    }
    thread.join().unwrap();
    // One turn blocks until the wake; allow a few for spurious returns
    // (the wake-up read re-arming, a signal), never a spin.
    assert!(turns <= 5, "{turns} turns before the wake-up: the turn did not block");
}

/// `Op::timeout(Duration::MAX)` once became a negative `tv_sec`, which the
/// kernel refuses (EINVAL) at once; a timeout past what a timespec holds
/// now saturates, and means "not in this process's lifetime".
#[test]
fn a_timeout_op_of_duration_max_does_not_fire() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let op = reg.submit(tally_reactor::Op::timeout(Duration::MAX)).unwrap();
    for _ in 0..5 {
        reactor.turn(Some(Duration::from_millis(5))).unwrap();
        let got = reg.try_drain();
        assert!(got.is_empty(), "a Duration::MAX timeout completed: {got:?}");
    }
    assert!(matches!(reg.cancel(op), tally_reactor::Cancel::Cancelled(_)));
}
