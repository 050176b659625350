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

use std::fmt;

use crate::Signals;
use crate::sync::{AtomicU64, Ordering};

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
}

impl CountedSignal {
    const BITS_SHIFT: u32 = 32;
    const COUNT_MASK: u64 = u32::MAX as u64;

    /// An empty word.
    #[cfg(not(loom))]
    #[inline]
    pub const fn new() -> CountedSignal {
        CountedSignal { word: AtomicU64::new(0) }
    }

    /// An empty word.
    #[cfg(loom)]
    #[inline]
    pub fn new() -> CountedSignal {
        CountedSignal { word: AtomicU64::new(0) }
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

    /// Swaps in empty and returns what was raised since the last take.
    #[inline]
    pub fn take(&self) -> (Signals, Count) {
        Self::unpack(self.word.swap(0, Ordering::Acquire))
    }

    /// A snapshot of the word, for metrics and debugging only: it may be
    /// stale by the time it is read.
    #[inline]
    pub fn peek(&self) -> (Signals, Count) {
        Self::unpack(self.word.load(Ordering::Relaxed))
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
    fn each_take_reopens_the_edge() {
        let w = CountedSignal::new();
        for _ in 0..3 {
            assert_eq!(w.raise(Signals::READABLE, 1), Raised::Woke);
            assert_eq!(w.raise(Signals::READABLE, 1), Raised::Coalesced);
            assert_eq!(w.take(), (Signals::READABLE, Count::new(2)));
        }
    }
}
