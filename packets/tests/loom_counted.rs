//! loom model checks of `CountedSignal` across threads.
//!
//! Run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p tally-packets --release --test loom_counted
//! ```
//!
//! Each scenario has a few raiser threads and one taker (the model's main
//! thread) that takes while they run, then joins them and takes once more.
//! In every interleaving loom explores, it checks:
//!
//! * **counts:** the counts taken add up to the counts raised, unless a take
//!   saw `Count::UNBOUNDED`, which only happens when enough was raised;
//! * **bits:** the union of the bits taken is the union of the bits raised;
//! * **wake-ups:** the raises that returned `Raised::Woke` are exactly as many
//!   as the takes that returned a non-empty word (one per empty -> non-empty
//!   edge). With raisers on the fast lane, an edge may be reported twice,
//!   so there the taker takes as a reactor does (when a wake-up is pending,
//!   or unprompted), makes its last take only if a wake-up is pending, and
//!   the word must then be empty: no raise was left without a wake-up;
//! * **ordering:** a take that sees a raise's bit also sees what the raiser
//!   wrote (with a `Relaxed` store) before raising, so the raise's `Release`
//!   pairs with the take's `Acquire`.
//!
//! The preemption bound defaults to [`PREEMPTIONS`]; `LOOM_MAX_PREEMPTIONS`
//! overrides it.
#![cfg(loom)]

use std::sync::atomic::AtomicBool as StdAtomicBool;
use std::sync::atomic::Ordering::SeqCst;

use loom::model::Builder;
use loom::sync::Arc;
use loom::sync::atomic::AtomicBool;
use loom::sync::atomic::Ordering::Relaxed;
use loom::thread;
use tally_packets::{Count, CountedSignal, LaneHint, Raised, Signals};

/// Preemption bound used unless `LOOM_MAX_PREEMPTIONS` says otherwise.
const PREEMPTIONS: usize = 3;

/// One raise: its bits and its count.
type Raise = (Signals, u32);

/// What the taker saw over one execution.
#[derive(Default)]
struct Seen {
    bits: Signals,
    /// Sum of the takes that did not saturate.
    total: u64,
    unbounded_takes: u64,
    non_empty_takes: usize,
}

/// Runs one scenario under loom: `raisers[i]` is the sequence of raises made
/// by thread `i`, and the taker takes `takes` times while they run. Returns
/// whether any execution saw a saturated count.
///
/// Every raise with bits must have bits no other raise has, so that a bit
/// seen by a take names the one raise that set it.
fn check(raisers: &'static [&'static [Raise]], takes: usize) -> bool {
    let all: Vec<Raise> = raisers.iter().flat_map(|r| r.iter().copied()).collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert!(!a.0.intersects(b.0), "raises in a scenario need distinct bits");
        }
    }
    run(raisers, &[], takes)
}

/// [`check`] with some threads raising through the fast lane
/// (`CountedSignal::raise_with`, one `LaneHint` per thread): `lane[i]` says
/// whether thread `i` does. Raises may repeat bits here; a take that sees a
/// bit must then see the write of at least one raise that carries it.
fn check_lane(raisers: &'static [&'static [Raise]], lane: &'static [bool], takes: usize) -> bool {
    assert_eq!(raisers.len(), lane.len());
    run(raisers, lane, takes)
}

fn run(raisers: &'static [&'static [Raise]], lane: &'static [bool], takes: usize) -> bool {
    let all: Vec<Raise> = raisers.iter().flat_map(|r| r.iter().copied()).collect();
    let exact_wakes = !lane.contains(&true);
    let raised_bits = all.iter().fold(Signals::NONE, |acc, r| acc | r.0);
    let raised_total: u64 = all.iter().map(|r| u64::from(r.1)).sum();

    let saw_unbounded = std::sync::Arc::new(StdAtomicBool::new(false));
    let saw = saw_unbounded.clone();
    let mut builder = Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(PREEMPTIONS);
    }
    builder.check(move || {
        let word = Arc::new(CountedSignal::new());
        // One flag per raise (in `all` order), written before the raise.
        let written: Arc<Vec<AtomicBool>> =
            Arc::new(all.iter().map(|_| AtomicBool::new(false)).collect());

        // The reactor's "something is pending" flag: set by every raiser
        // that got `Woke`, cleared by a take made because of it.
        let pending = Arc::new(AtomicBool::new(false));

        let mut first = 0;
        let handles: Vec<_> = raisers
            .iter()
            .enumerate()
            .map(|(t, seq)| {
                let (word, written, pending) = (word.clone(), written.clone(), pending.clone());
                let base = first;
                first += seq.len();
                let on_lane = lane.get(t).copied().unwrap_or(false);
                thread::spawn(move || {
                    let hint = LaneHint::new();
                    let mut woke = 0;
                    for (i, &(bits, n)) in seq.iter().enumerate() {
                        written[base + i].store(true, Relaxed);
                        let raised = if on_lane {
                            word.raise_with(&hint, bits, n)
                        } else {
                            word.raise(bits, n)
                        };
                        if raised == Raised::Woke {
                            woke += 1;
                            // A swap, not a store: loom 0.7 can place a plain
                            // store between the read and the write of another
                            // thread's RMW (tokio-rs/loom#254, fix pending in
                            // #391), which would report a lost wake-up that
                            // the C++ model forbids.
                            let _ = pending.swap(true, SeqCst);
                        }
                    }
                    woke
                })
            })
            .collect();

        let mut seen = Seen::default();
        let mut record = |(bits, count): (Signals, Count)| {
            if bits.is_empty() && count == Count::ZERO {
                return;
            }
            seen.non_empty_takes += 1;
            seen.bits |= bits;
            if count.is_unbounded() {
                seen.unbounded_takes += 1;
            } else {
                seen.total += u64::from(count.get());
            }
            // Acquire/Release: whatever a raiser wrote before a raise whose
            // bit this take sees must be visible now (for bits several
            // raises share, the write of one of them).
            for r in all.iter().filter(|r| !r.0.is_empty() && bits.contains(r.0)) {
                let carriers = all.iter().enumerate().filter(|(_, q)| q.0 == r.0);
                let visible = carriers.clone().any(|(i, _)| written[i].load(Relaxed));
                assert!(visible, "take saw {:?} but not its write", r.0);
            }
        };
        if exact_wakes {
            for _ in 0..takes {
                record(word.take());
            }
        } else {
            // Takes as a reactor makes them: prompted by a wake-up, or
            // unprompted (a drain the owner asked for), alternately.
            for k in 0..takes {
                if k % 2 == 1 || pending.swap(false, SeqCst) {
                    record(word.take());
                }
            }
        }
        let woke: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        if exact_wakes || pending.swap(false, SeqCst) {
            record(word.take());
        }
        // With the lane, the last take is made only if a wake-up is owed:
        // anything left now was raised with no wake-up for it.
        assert_eq!(
            word.peek(),
            (Signals::NONE, Count::ZERO),
            "a raise owed a wake-up and made none"
        );

        assert_eq!(seen.bits, raised_bits, "a raised bit was lost");
        if seen.unbounded_takes == 0 {
            assert_eq!(seen.total, raised_total, "the counts taken do not add up");
        } else {
            saw.store(true, SeqCst);
            assert!(raised_total >= u64::from(u32::MAX), "saturated without enough raises");
            let floor = seen.total + seen.unbounded_takes * u64::from(u32::MAX);
            assert!(floor <= raised_total, "more was taken than raised");
        }
        if exact_wakes {
            assert_eq!(woke, seen.non_empty_takes, "wake-ups != empty -> non-empty edges");
        }
    });
    saw_unbounded.load(SeqCst)
}

const R: Signals = Signals::READABLE;
const W: Signals = Signals::WRITABLE;
const E: Signals = Signals::ERROR;
const U0: Signals = Signals::USER_0;

#[test]
fn two_raisers_taker_takes_twice() {
    check(&[&[(R, 1)], &[(W, 2)]], 2);
}

#[test]
fn three_raisers_one_take() {
    check(&[&[(R, 1)], &[(W, 1)], &[(E, 3)]], 1);
}

#[test]
fn raiser_raising_twice_against_another() {
    // The second raise of the first thread is a Coalesced or a fresh Woke
    // depending on whether a take slipped in between.
    check(&[&[(R, 1), (U0, 1)], &[(W, 1)]], 2);
}

#[test]
fn raises_with_only_bits_or_only_a_count() {
    check(&[&[(R, 0)], &[(Signals::NONE, 2)]], 1);
}

#[test]
fn saturating_count_is_sticky_and_loses_no_bit() {
    // A alone nearly saturates; B's first raise reaches u32::MAX when it folds
    // into A's, and B's second raise (no bits) is then a no-op.
    let saw = check(&[&[(R, u32::MAX - 1)], &[(W, 1), (Signals::NONE, 1)]], 1);
    assert!(saw, "no execution saturated the count");
}

#[test]
fn two_halves_overflow_together() {
    const HALF: u32 = u32::MAX / 2 + 1;
    let saw = check(&[&[(R, HALF)], &[(W, HALF)]], 1);
    assert!(saw, "no execution saturated the count");
}

#[test]
fn lane_raises_against_takes() {
    // The first raise claims the lane; the others are single fetch_adds
    // that a take can land between.
    check_lane(&[&[(U0, 1), (U0, 1), (U0, 1)]], &[true], 2);
}

#[test]
fn lane_and_word_raisers_share_one_edge() {
    // A lane edge must wake unless the word holds something whose own
    // raise woke; the word's edge never defers to the lane.
    check_lane(&[&[(U0, 1), (U0, 1)], &[(R, 1)]], &[true, false], 1);
    check_lane(&[&[(U0, 1), (U0, 1)], &[(R, 1)]], &[true, false], 2);
}

#[test]
fn two_lane_raisers_with_the_same_bits() {
    check_lane(&[&[(U0, 1)], &[(U0, 2), (U0, 1)]], &[true, true], 1);
}

#[test]
fn a_lane_raiser_with_other_bits_uses_the_word() {
    check_lane(&[&[(U0, 1), (U0, 1)], &[(W, 1), (W, 1)]], &[true, true], 1);
}

#[test]
fn the_lane_spills_into_the_word() {
    // Under loom the lane spills at 4: the second raise finds 3, the third
    // finds 5 and moves it into the word, racing a take.
    check_lane(&[&[(U0, 3), (U0, 2), (U0, 1)]], &[true], 1);
    check_lane(&[&[(U0, 3), (U0, 2)], &[(R, 1)]], &[true, false], 1);
}
