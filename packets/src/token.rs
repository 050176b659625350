//! [`Token`]: the 64-bit key that names a registration or an operation.
//!
//! A token is a slab slot index plus a generation. The reactor bumps a slot's
//! generation every time the slot is reused, so a completion that was in
//! flight for an old occupant carries a generation that no longer matches and
//! is dropped instead of being delivered to the new one (the ABA problem).

use std::fmt;

/// A slot index plus a generation, packed in a `u64`.
///
/// ```text
///  63                              32 31                               0
/// +----------------------------------+----------------------------------+
/// |          generation (32)         |          slot index (32)         |
/// +----------------------------------+----------------------------------+
/// ```
///
/// Generation `0` is never given to a slot: tokens whose generation is zero
/// are **reserved** for the reactor's own sources (remote wake-up, the timer,
/// cancel requests), and there are [`Token::RESERVED_COUNT`] of them, slot
/// indices `0..RESERVED_COUNT`. [`Token::new`] refuses generation zero, so a
/// user token can never collide with a reserved one.
///
/// # Examples
///
/// ```
/// use tally_packets::Token;
///
/// let t = Token::new(7, 3);
/// assert_eq!((t.slot(), t.generation()), (7, 3));
/// assert!(!t.is_reserved());
/// assert!(Token::reserved(0).is_reserved());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Token(u64);

impl Token {
    /// How many reserved tokens there are.
    pub const RESERVED_COUNT: u32 = 16;

    const SLOT_BITS: u32 = 32;
    const SLOT_MASK: u64 = (1 << Self::SLOT_BITS) - 1;

    /// Packs a slot index and a generation.
    ///
    /// # Panics
    ///
    /// Panics if `generation` is zero: generation zero belongs to the
    /// reserved tokens.
    #[inline]
    pub const fn new(slot: u32, generation: u32) -> Token {
        assert!(generation != 0, "generation 0 is reserved for the reactor's own tokens");
        Token::pack(slot, generation)
    }

    /// The `n`th reserved token.
    ///
    /// # Panics
    ///
    /// Panics if `n >= Token::RESERVED_COUNT`.
    #[inline]
    pub const fn reserved(n: u32) -> Token {
        assert!(n < Self::RESERVED_COUNT, "reserved token out of range");
        Token::pack(n, 0)
    }

    const fn pack(slot: u32, generation: u32) -> Token {
        Token(((generation as u64) << Self::SLOT_BITS) | slot as u64)
    }

    /// The slot index.
    #[inline]
    pub const fn slot(self) -> u32 {
        (self.0 & Self::SLOT_MASK) as u32
    }

    /// The generation. Zero for reserved tokens.
    #[inline]
    pub const fn generation(self) -> u32 {
        (self.0 >> Self::SLOT_BITS) as u32
    }

    /// Whether this is one of the reactor's reserved tokens.
    #[inline]
    pub const fn is_reserved(self) -> bool {
        self.generation() == 0
    }

    /// The raw `u64`, as it travels in an io_uring `user_data`.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Reads a raw `u64` back. Any value is a well-formed token; whether it
    /// names a live slot is for the slab to decide.
    #[inline]
    pub const fn from_u64(raw: u64) -> Token {
        Token(raw)
    }

    /// The generation that follows `generation` for a reused slot: it skips
    /// zero, which is reserved.
    #[inline]
    pub const fn next_generation(generation: u32) -> u32 {
        match generation.wrapping_add(1) {
            0 => 1,
            g => g,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_reserved() {
            write!(f, "Token(reserved {})", self.slot())
        } else {
            write!(f, "Token({}v{})", self.slot(), self.generation())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks_extremes() {
        for (slot, generation) in [(0, 1), (u32::MAX, u32::MAX), (1, u32::MAX), (u32::MAX, 1)] {
            let t = Token::new(slot, generation);
            assert_eq!(t.slot(), slot);
            assert_eq!(t.generation(), generation);
            assert_eq!(Token::from_u64(t.as_u64()), t);
            assert!(!t.is_reserved());
        }
        assert_eq!(Token::new(u32::MAX, u32::MAX).as_u64(), u64::MAX);
    }

    #[test]
    fn reserved_tokens_never_collide_with_user_tokens() {
        for n in 0..Token::RESERVED_COUNT {
            let r = Token::reserved(n);
            assert!(r.is_reserved());
            assert_eq!(r.slot(), n);
            assert_ne!(r, Token::new(n, 1));
        }
    }

    #[test]
    #[should_panic(expected = "generation 0 is reserved")]
    fn generation_zero_is_refused() {
        let _ = Token::new(1, 0);
    }

    #[test]
    #[should_panic(expected = "reserved token out of range")]
    fn reserved_range_is_bounded() {
        let _ = Token::reserved(Token::RESERVED_COUNT);
    }

    #[test]
    fn next_generation_skips_zero() {
        assert_eq!(Token::next_generation(1), 2);
        assert_eq!(Token::next_generation(u32::MAX), 1);
    }
}
