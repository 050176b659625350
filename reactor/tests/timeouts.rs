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
