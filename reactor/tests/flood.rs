//! Cross-thread flood: counted signals conserve the count, and a flood of
//! raises costs a handful of kernel wake-ups.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tally_reactor::{Raised, Reactor, Signals};
use util::{Deadline, signal_totals};

const THREADS: u64 = 4;
const RAISES: u64 = 1_000_000;

/// Four threads each raise 1M times at one registration while the reactor
/// thread turns and drains. The counts drained add up to exactly 4M.
#[test]
fn four_threads_raise_a_million_times_each() {
    let reactor = Reactor::new().unwrap();
    let reg = reactor.register();
    let woke = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let signaler = reg.signaler();
            let woke = woke.clone();
            thread::spawn(move || {
                let bit = Signals::user(t as u32);
                let mut mine = 0;
                for _ in 0..RAISES {
                    if signaler.raise(bit, 1).unwrap() == Raised::Woke {
                        mine += 1;
                    }
                }
                woke.fetch_add(mine, Ordering::Relaxed);
            })
        })
        .collect();

    let deadline = Deadline::after(Duration::from_secs(60));
    let (mut total, mut bits, mut drains, mut signal_packets) = (0u64, Signals::NONE, 0u64, 0);
    while total < THREADS * RAISES {
        deadline.check(&reactor, "4M raises to be drained");
        reactor.turn(Some(Duration::from_millis(50))).unwrap();
        let packets = reg.try_drain();
        let (b, n) = signal_totals(&packets);
        if n > 0 {
            drains += 1;
        }
        signal_packets += util::signal_packets(&packets) as u64;
        assert!(packets.iter().all(|p| p.key() == reg.token()));
        total += n;
        bits |= b;
    }
    let elapsed = start.elapsed();
    for p in producers {
        p.join().unwrap();
    }
    // Nothing more arrives once the producers are done: the count is
    // conserved exactly, neither lost nor duplicated.
    reactor.turn(Some(Duration::ZERO)).unwrap();
    let last = reg.try_drain();
    total += signal_totals(&last).1;
    signal_packets += util::signal_packets(&last) as u64;
    assert_eq!(total, THREADS * RAISES);
    for t in 0..THREADS as u32 {
        assert!(bits.contains(Signals::user(t)), "bit of thread {t} missing: {bits:?}");
    }

    let m = reactor.metrics();
    let raises = THREADS * RAISES;
    let woke = woke.load(Ordering::Relaxed);
    // Every wake-owing raise owes at most one kernel wake-up. An edge is
    // reported once on the word and at most once more through the fast
    // lane (thread 0's bit claims it; see `CountedSignal`), so a drain that
    // found something answers at most two wake-owing raises.
    assert!(m.kernel_wakes <= woke, "{} kernel wakes > {woke} empty->full edges", m.kernel_wakes);
    assert!(woke <= 2 * (drains + 1), "{woke} edges but only {drains} drains found anything");
    // Each signal packet stands for `count` raises, `count - 1` of them
    // coalesced into the one that opened it.
    assert_eq!(m.coalesced_raises, raises - signal_packets);
    println!(
        "flood: {raises} raises in {elapsed:?}: {woke} wake-owing raises, {} kernel wakes, \
         {drains} non-empty drains over {} turns; coalescing {:.0} raises per kernel wake, \
         {:.0} raises per drain",
        m.kernel_wakes,
        m.turns,
        raises as f64 / m.kernel_wakes.max(1) as f64,
        raises as f64 / drains.max(1) as f64,
    );
}
