//! [`CountedSignal`]: signal bits and a saturating count in one `AtomicU64`.
//!
//! This is the heart of counted-signal readiness. Producers on any thread
//! [`raise`](CountedSignal::raise) bits and a count; the consumer
//! [`take`](CountedSignal::take)s the whole word once per crank. However many
//! raises land between two takes, they cost the consumer one wake-up and one
//! packet, and the count tells it how much work is waiting.
//!
//! # Memory ordering
//!
//! * `raise` publishes with a **`Release`** CAS. Whatever the producer wrote
//!   before raising (say, a message it put in a queue) happens-before the
//!   consumer's `take` that reads those bits. Its failure ordering is
//!   `Relaxed`: a failed CAS publishes nothing, and the retry re-reads.
//! * `take` is a **`Acquire`** swap, pairing with that `Release`. It needs no
//!   `Release` half, because the consumer publishes nothing to producers
//!   through the word: a producer only needs to know whether the word was
//!   empty, and atomicity of the read-modify-write alone decides that.
//! * **Exactly one wake per empty→non-empty edge** follows from atomicity, not
//!   ordering: every RMW on one location reads the value written by the one
//!   before it in the location's modification order, so only one raise can
//!   read the `0` that a `take` (or the initial value) left.
//!
//! The loom tests in `tests/loom_counted.rs` check all three.
//!
//! # The fast lane
//!
//! A raise by compare-and-swap costs a load, a fold and a `lock cmpxchg`
//! that depend on each other, about twice a bare `fetch_add` in a flood. A
//! single `fetch_add` on the word cannot be exact: a take between the
//! moment a raiser decides its bits are present and its add leaves a count
//! with no bits, which a consumer filtering on bits would drop. So the word
//! has a second `AtomicU64` beside it, the **lane**, whose high half holds
//! one set of bits *claimed once and never changed*, and whose low half is
//! a count. A producer that holds a [`LaneHint`] saying the lane is claimed
//! by its bits raises with one `fetch_add` on the lane
//! ([`raise_with`](CountedSignal::raise_with)); every other raise uses the
//! word. Because the lane's bits never change, a count added there can only
//! ever mean those bits, and `take` reports them with it.
//!
//! * **Take** swaps the word, then clears the lane's count with one RMW
//!   (`AcqRel`), and reports the union of the bits and the saturating sum of
//!   the counts.
//! * **Wake-ups.** A raise that moves the word from empty still wakes. A
//!   lane add that moves the lane's count from zero wakes only if the word
//!   is empty too; if the word holds something, its own raiser owes (or
//!   made) the wake-up, and the take that empties the word also empties the
//!   lane (the lane RMWs are `AcqRel`, so that take's swap happens-before
//!   the lane add's read of the word). The reverse check would lose a
//!   wake-up when both sides see the other, so the word never defers to the
//!   lane: an edge can be reported `Woke` twice, once on each half, and the
//!   consumer then finds one of the two wake-ups empty. Never zero times.
//! * **Saturation.** A lane add takes at most [`LANE_MAX_N`]; a larger one
//!   uses the word. When an add finds the lane's count at 2³¹ or more, it
//!   moves the lane's count into the word with the exact saturating raise.
//!   At most one add per thread can land between a count crossing 2³¹ and
//!   its move, and Linux has fewer than 2²² threads, so the lane's count
//!   stays below 2³¹ + 2³⁰ and never carries into its bits.

use std::fmt;

use crate::Signals;
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The count half of a counted signal: saturating, with a sticky ceiling.
///
/// `Count(u32::MAX)` is [`Count::UNBOUNDED`], which means "more than can be
/// counted: process until empty". Once reached it never goes down by adding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct Count(u32);

impl Count {
    /// Zero.
    pub const ZERO: Count = Count(0);
    /// The sticky sentinel: the count saturated, process until empty.
    pub const UNBOUNDED: Count = Count(u32::MAX);

    /// A count of `n`. `n == u32::MAX` is [`Count::UNBOUNDED`].
    #[inline]
    pub const fn new(n: u32) -> Count {
        Count(n)
    }

    /// The raw value.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Whether this is the saturated sentinel.
    #[inline]
    pub const fn is_unbounded(self) -> bool {
        self.0 == u32::MAX
    }

    /// Adds with saturation at [`Count::UNBOUNDED`].
    #[must_use]
    #[inline]
    pub const fn saturating_add(self, n: u32) -> Count {
        Count(self.0.saturating_add(n))
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unbounded() {
            f.write_str("unbounded (process until empty)")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// What a [`CountedSignal::raise`] did. Only [`Raised::Woke`] obliges the
/// caller to wake the consumer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Raised {
    /// The word was empty and now is not: this caller wakes the consumer.
    Woke,
    /// The word already held a raise (or this one added nothing): it was
    /// folded in, and the wake-up already owed covers it.
    Coalesced,
}

/// Signal bits and a count in one `AtomicU64`.
///
/// ```text
///  63                              32 31                               0
/// +----------------------------------+----------------------------------+
/// |       signal bits (Signals)      |     count (saturating, u32)      |
/// +----------------------------------+----------------------------------+
/// ```
///
/// `0` means empty: nothing raised since the last take.
///
/// # Examples
///
/// ```
/// # if tally_packets::LOOM { return; } // loom's atomics only work inside a model
/// use tally_packets::{Count, CountedSignal, Raised, Signals};
///
/// let word = CountedSignal::new();
/// assert_eq!(word.raise(Signals::READABLE, 1), Raised::Woke);
/// assert_eq!(word.raise(Signals::user(0), 4), Raised::Coalesced);
/// assert_eq!(word.take(), (Signals::READABLE | Signals::user(0), Count::new(5)));
/// assert_eq!(word.take(), (Signals::NONE, Count::ZERO));
/// ```
pub struct CountedSignal {
    word: AtomicU64,
    /// The fast lane: claimed bits (high half, set once) and a count.
    lane: AtomicU64,
}

/// The largest count a lane add takes; larger raises use the word. See the
/// module doc for why this bound keeps the lane's count from carrying.
pub const LANE_MAX_N: u32 = 256;

/// A lane count at which the next add moves it into the word. Small under
/// loom, so that models reach it.
const LANE_SPILL: u32 = if cfg!(loom) { 4 } else { 1 << 31 };

/// What one producer knows about a [`CountedSignal`]'s fast lane: which
/// word it was first used with, and the bits that claimed that word's lane.
/// Keep one per producer handle. It is bound to the first word it is used
/// with; with any other word it never takes the lane, so it can make a
/// raise slower, never wrong. It must not outlive that word: a later word
/// at the same address would look like the first.
#[derive(Default)]
pub struct LaneHint {
    /// The address of the word this hint is bound to; 0 while unbound.
    word: AtomicUsize,
    /// The bits that own that word's lane; 0 while unknown.
    bits: AtomicU32,
}

impl LaneHint {
    /// A hint bound to no word yet.
    #[cfg(not(loom))]
    pub const fn new() -> LaneHint {
        LaneHint { word: AtomicUsize::new(0), bits: AtomicU32::new(0) }
    }

    /// A hint bound to no word yet.
    #[cfg(loom)]
    pub fn new() -> LaneHint {
        LaneHint { word: AtomicUsize::new(0), bits: AtomicU32::new(0) }
    }

    /// Whether this hint says `bits` own `signal`'s lane.
    #[inline]
    fn owns(&self, signal: &CountedSignal, bits: Signals) -> bool {
        self.bits.load(Ordering::Relaxed) == bits.bits()
            && self.word.load(Ordering::Relaxed) == signal.addr()
    }

    /// Records that `bits` own `signal`'s lane, if this hint is unbound or
    /// already bound to `signal`.
    fn learn(&self, signal: &CountedSignal, bits: Signals) {
        let addr = signal.addr();
        let bound = match self.word.compare_exchange(0, addr, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(seen) => seen == addr,
        };
        if bound {
            // One word's lane has one owner, so every learner of this word
            // stores the same bits.
            self.bits.store(bits.bits(), Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for LaneHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaneHint")
            .field("bound", &(self.word.load(Ordering::Relaxed) != 0))
            .field("bits", &Signals::from_bits(self.bits.load(Ordering::Relaxed)))
            .finish()
    }
}

impl CountedSignal {
    const BITS_SHIFT: u32 = 32;
    const COUNT_MASK: u64 = u32::MAX as u64;

    /// An empty word.
    #[cfg(not(loom))]
    #[inline]
    pub const fn new() -> CountedSignal {
        CountedSignal { word: AtomicU64::new(0), lane: AtomicU64::new(0) }
    }

    /// An empty word.
    #[cfg(loom)]
    #[inline]
    pub fn new() -> CountedSignal {
        CountedSignal { word: AtomicU64::new(0), lane: AtomicU64::new(0) }
    }

    /// Packs bits and a count into a word.
    #[inline]
    pub const fn pack(bits: Signals, count: Count) -> u64 {
        ((bits.bits() as u64) << Self::BITS_SHIFT) | count.get() as u64
    }

    /// Splits a word into its bits and its count.
    #[inline]
    pub const fn unpack(word: u64) -> (Signals, Count) {
        let bits = (word >> Self::BITS_SHIFT) as u32;
        let count = (word & Self::COUNT_MASK) as u32;
        (Signals::from_bits(bits), Count::new(count))
    }

    /// The word after folding `bits` and `n` into `word`.
    #[inline]
    pub const fn fold(word: u64, bits: Signals, n: u32) -> u64 {
        let (old_bits, old_count) = Self::unpack(word);
        Self::pack(Signals::from_bits(old_bits.bits() | bits.bits()), old_count.saturating_add(n))
    }

    /// ORs in `bits` and adds `n` to the count, saturating at
    /// [`Count::UNBOUNDED`].
    ///
    /// Returns [`Raised::Woke`] to exactly one caller per empty→non-empty
    /// transition; that caller must wake the consumer. A raise of no bits and
    /// a zero count changes nothing and returns [`Raised::Coalesced`].
    #[must_use = "the caller that moved the word from empty to non-empty must wake the consumer"]
    #[inline]
    pub fn raise(&self, bits: Signals, n: u32) -> Raised {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let next = Self::fold(current, bits, n);
            if next == current {
                // Nothing to add (no new bits, and zero or a saturated count):
                // no store, and no wake owed by this caller.
                return Raised::Coalesced;
            }
            // Release: publish what the producer wrote before raising to the
            // consumer's Acquire take. Relaxed on failure: nothing was written.
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                // We moved it from empty: the wake-up is ours to make.
                Ok(0) => return Raised::Woke,
                // It was already non-empty: a wake-up is already owed.
                Ok(_) => return Raised::Coalesced,
                // Lost a race with another raise or a take: fold into what
                // is there now.
                Err(seen) => current = seen,
            }
        }
    }

    /// [`raise`](Self::raise), through the fast lane when `hint` says the
    /// lane belongs to `bits`: then it is one `fetch_add`. The first raise
    /// with non-empty bits and a count of at most [`LANE_MAX_N`] claims the
    /// lane for its bits; raises with other bits, no bits, a zero count or a
    /// larger count take the exact path on the word.
    ///
    /// Returns [`Raised::Woke`] at least once per empty→non-empty
    /// transition, and at most once more (see the module doc); every caller
    /// it returns `Woke` to must wake the consumer.
    #[must_use = "a caller that gets Woke must wake the consumer"]
    #[inline]
    pub fn raise_with(&self, hint: &LaneHint, bits: Signals, n: u32) -> Raised {
        if Self::lane_takes(bits, n) && hint.owns(self, bits) {
            return self.lane_add(bits, n);
        }
        self.raise_claiming(hint, bits, n)
    }

    #[cold]
    fn raise_claiming(&self, hint: &LaneHint, bits: Signals, n: u32) -> Raised {
        if Self::lane_takes(bits, n) {
            let owner = match self.lane.compare_exchange(
                0,
                u64::from(bits.bits()) << Self::BITS_SHIFT,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => bits.bits(),
                Err(seen) => (seen >> Self::BITS_SHIFT) as u32,
            };
            if owner == bits.bits() {
                hint.learn(self, bits);
                return self.lane_add(bits, n);
            }
        }
        self.raise(bits, n)
    }

    fn addr(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Whether a raise can go through the lane: it has bits (a count with no
    /// bits could not be told apart from the lane's own), a count (bits with
    /// no count would not show in the lane), and a small one.
    #[inline]
    const fn lane_takes(bits: Signals, n: u32) -> bool {
        !bits.is_empty() && n != 0 && n <= LANE_MAX_N
    }

    /// Adds `n` (non-zero) to the lane, which `bits` own.
    #[inline]
    fn lane_add(&self, bits: Signals, n: u32) -> Raised {
        // Release publishes the producer's writes to the take's AcqRel;
        // Acquire makes the take that emptied the lane (and the word before
        // it) visible to the read of the word below.
        let prev = self.lane.fetch_add(u64::from(n), Ordering::AcqRel) as u32;
        if prev >= LANE_SPILL {
            return self.spill(bits);
        }
        if prev != 0 {
            return Raised::Coalesced;
        }
        // The lane's edge: the word's raiser owes the wake-up if it holds
        // anything (module doc, "Wake-ups").
        if self.word.load(Ordering::Acquire) == 0 { Raised::Woke } else { Raised::Coalesced }
    }

    /// Moves the lane's count into the word, saturating there.
    #[cold]
    fn spill(&self, bits: Signals) -> Raised {
        let taken = self.lane.fetch_and(!Self::COUNT_MASK, Ordering::AcqRel) as u32;
        if taken == 0 {
            return Raised::Coalesced;
        }
        self.raise(bits, taken)
    }

    /// Swaps in empty and returns what was raised since the last take, on
    /// the word and in the lane.
    #[inline]
    pub fn take(&self) -> (Signals, Count) {
        let (bits, count) = Self::unpack(self.word.swap(0, Ordering::Acquire));
        // An RMW, not a load: a load may read a stale zero and leave behind
        // a lane add that counted on this take (module doc, "Wake-ups").
        let lane = self.lane.fetch_and(!Self::COUNT_MASK, Ordering::AcqRel);
        Self::merge(bits, count, lane)
    }

    /// Folds a lane value (claimed bits and a count) into a taken word.
    #[inline]
    fn merge(bits: Signals, count: Count, lane: u64) -> (Signals, Count) {
        let (lane_bits, lane_count) = Self::unpack(lane);
        if lane_count == Count::ZERO {
            return (bits, count);
        }
        (bits | lane_bits, count.saturating_add(lane_count.get()))
    }

    /// A snapshot of the word and the lane, for metrics and debugging only:
    /// it may be stale by the time it is read.
    #[inline]
    pub fn peek(&self) -> (Signals, Count) {
        let (bits, count) = Self::unpack(self.word.load(Ordering::Relaxed));
        Self::merge(bits, count, self.lane.load(Ordering::Relaxed))
    }
}

impl Default for CountedSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CountedSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (bits, count) = self.peek();
        f.debug_struct("CountedSignal").field("bits", &bits).field("count", &count).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_at_the_edges() {
        for (bits, count) in [(0, 0), (u32::MAX, u32::MAX), (1, 0), (0, 1), (1 << 31, 7)] {
            let w = CountedSignal::pack(Signals::from_bits(bits), Count::new(count));
            assert_eq!(CountedSignal::unpack(w), (Signals::from_bits(bits), Count::new(count)));
        }
        assert_eq!(CountedSignal::pack(Signals::READABLE, Count::new(2)), (1 << 32) | 2);
    }

    #[test]
    fn count_saturates_and_sticks() {
        let w = CountedSignal::new();
        assert_eq!(w.raise(Signals::NONE, u32::MAX - 1), Raised::Woke);
        assert_eq!(w.raise(Signals::NONE, 5), Raised::Coalesced);
        assert_eq!(w.peek().1, Count::UNBOUNDED);
        assert_eq!(w.raise(Signals::NONE, 1), Raised::Coalesced);
        let (_, c) = w.take();
        assert!(c.is_unbounded());
        assert_eq!(c.to_string(), "unbounded (process until empty)");
        assert_eq!(w.take(), (Signals::NONE, Count::ZERO));
    }

    #[test]
    fn empty_raise_neither_wakes_nor_stores() {
        let w = CountedSignal::new();
        assert_eq!(w.raise(Signals::NONE, 0), Raised::Coalesced);
        assert_eq!(w.take(), (Signals::NONE, Count::ZERO));
        assert_eq!(w.raise(Signals::NONE, 0), Raised::Coalesced);
        assert_eq!(w.raise(Signals::ERROR, 0), Raised::Woke);
    }

    #[test]
    fn the_lane_is_claimed_once_and_reports_its_bits_with_its_count() {
        let w = CountedSignal::new();
        let (a, b) = (LaneHint::new(), LaneHint::new());
        assert_eq!(w.raise_with(&a, Signals::user(0), 1), Raised::Woke);
        assert_eq!(w.lane.load(Ordering::Relaxed) >> 32, u64::from(Signals::user(0).bits()));
        assert_eq!(w.word.load(Ordering::Relaxed), 0, "the claiming raise went to the word");
        // Other bits cannot use the lane; they go to the word, and that edge
        // wakes as well (the word never defers to the lane).
        assert_eq!(w.raise_with(&b, Signals::user(1), 2), Raised::Woke);
        assert_eq!(w.raise_with(&a, Signals::user(0), 3), Raised::Coalesced);
        assert_eq!(w.take(), (Signals::user(0) | Signals::user(1), Count::new(6)));
        assert_eq!(w.take(), (Signals::NONE, Count::ZERO));
        // The claim outlives the take; a lane edge with an empty word wakes.
        assert_eq!(w.raise_with(&a, Signals::user(0), 1), Raised::Woke);
        assert_eq!(w.take(), (Signals::user(0), Count::new(1)));
    }

    #[test]
    fn a_lane_edge_defers_to_a_non_empty_word() {
        let w = CountedSignal::new();
        let h = LaneHint::new();
        assert_eq!(w.raise_with(&h, Signals::user(0), 1), Raised::Woke);
        let _ = w.take();
        assert_eq!(w.raise(Signals::READABLE, 1), Raised::Woke);
        assert_eq!(w.raise_with(&h, Signals::user(0), 1), Raised::Coalesced);
        assert_eq!(w.take(), (Signals::READABLE | Signals::user(0), Count::new(2)));
    }

    #[test]
    fn raises_the_lane_cannot_carry_take_the_exact_path() {
        let w = CountedSignal::new();
        let h = LaneHint::new();
        // Bits with no count, a count with no bits, and a large count.
        assert_eq!(w.raise_with(&h, Signals::ERROR, 0), Raised::Woke);
        assert_eq!(w.raise_with(&h, Signals::NONE, 5), Raised::Coalesced);
        assert_eq!(w.raise_with(&h, Signals::ERROR, LANE_MAX_N + 1), Raised::Coalesced);
        assert_eq!(w.lane.load(Ordering::Relaxed), 0, "nothing claimed the lane");
        assert_eq!(w.take(), (Signals::ERROR, Count::new(LANE_MAX_N + 6)));
    }

    #[test]
    fn a_foreign_hint_cannot_put_a_count_under_the_wrong_bits() {
        let w = CountedSignal::new();
        let h = LaneHint::new();
        let _ = w.raise_with(&h, Signals::user(0), 1);
        let _ = w.take();
        // A hint learned on another word, claimed by other bits.
        let other = CountedSignal::new();
        let stale = LaneHint::new();
        let _ = other.raise_with(&stale, Signals::user(1), 1);
        assert_eq!(w.raise_with(&stale, Signals::user(1), 4), Raised::Woke);
        assert_eq!(w.take(), (Signals::user(1), Count::new(4)));
    }

    #[test]
    fn a_lane_past_two_to_the_31_moves_into_the_word_and_saturates() {
        let w = CountedSignal::new();
        let h = LaneHint::new();
        // Put the lane just below the spill point without 8M raises.
        let _ = w.raise_with(&h, Signals::user(0), 1);
        w.lane.fetch_add(u64::from(LANE_SPILL - 2), Ordering::Relaxed);
        let _ = w.raise_with(&h, Signals::user(0), 1);
        assert_eq!(w.word.load(Ordering::Relaxed), 0, "spilled before reaching 2^31");
        let _ = w.raise_with(&h, Signals::user(0), 1);
        assert_eq!(w.lane.load(Ordering::Relaxed) as u32, 0, "did not spill at 2^31");
        assert_eq!(w.peek(), (Signals::user(0), Count::new(LANE_SPILL + 1)));
        // Once more and the word saturates; the lane never carries.
        w.lane.fetch_add(u64::from(LANE_SPILL), Ordering::Relaxed);
        let _ = w.raise_with(&h, Signals::user(0), 1);
        assert_eq!(w.lane.load(Ordering::Relaxed) >> 32, u64::from(Signals::user(0).bits()));
        assert_eq!(w.take(), (Signals::user(0), Count::UNBOUNDED));
    }

    #[test]
    fn each_take_reopens_the_edge() {
        let w = CountedSignal::new();
        for _ in 0..3 {
            assert_eq!(w.raise(Signals::READABLE, 1), Raised::Woke);
            assert_eq!(w.raise(Signals::READABLE, 1), Raised::Coalesced);
            assert_eq!(w.take(), (Signals::READABLE, Count::new(2)));
        }
    }
}
