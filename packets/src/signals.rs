//! [`Signals`]: the 32-bit set of signal bits a registration can be raised with.
//!
//! The low bits name readiness conditions, in the spirit of `POLLIN`/`POLLOUT`;
//! the top eight bits are free for users, like Zircon's `ZX_USER_SIGNAL_0..7`.

use std::fmt;
use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, BitXor, Not, Sub};

/// A set of signal bits.
///
/// ```text
///  31          24 23                 6   5    4    3    2    1    0
/// +--------------+--------------------+----+----+----+----+----+----+
/// | USER_7..0    |   reserved (0)     |PRI |ERR |WCLS|RCLS| WR | RD |
/// +--------------+--------------------+----+----+----+----+----+----+
/// ```
///
/// # Examples
///
/// ```
/// use tally_packets::Signals;
///
/// let s = Signals::READABLE | Signals::user(3);
/// assert!(s.contains(Signals::READABLE));
/// assert_eq!(format!("{s:?}"), "Signals(READABLE | USER_3)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Signals(u32);

impl Signals {
    /// No bits set.
    pub const NONE: Signals = Signals(0);
    /// The source has data to read (or a connection to accept).
    pub const READABLE: Signals = Signals(1 << 0);
    /// The source can take more data.
    pub const WRITABLE: Signals = Signals(1 << 1);
    /// The peer closed its writing half: reads will reach end of file.
    pub const READ_CLOSED: Signals = Signals(1 << 2);
    /// Writing is no longer possible (the peer closed its reading half, or hung up).
    pub const WRITE_CLOSED: Signals = Signals(1 << 3);
    /// The source is in an error state.
    pub const ERROR: Signals = Signals(1 << 4);
    /// Priority (out-of-band) data is available.
    pub const PRIORITY: Signals = Signals(1 << 5);
    /// The first of the eight user bits; see [`Signals::user`].
    pub const USER_0: Signals = Signals(1 << Self::USER_SHIFT);
    /// Every user bit.
    pub const USER_ALL: Signals = Signals(0xff << Self::USER_SHIFT);
    /// Every bit that has a meaning.
    pub const ALL: Signals = Signals(0b11_1111 | Self::USER_ALL.0);

    const USER_SHIFT: u32 = 24;
    const NAMES: [(Signals, &'static str); 6] = [
        (Self::READABLE, "READABLE"),
        (Self::WRITABLE, "WRITABLE"),
        (Self::READ_CLOSED, "READ_CLOSED"),
        (Self::WRITE_CLOSED, "WRITE_CLOSED"),
        (Self::ERROR, "ERROR"),
        (Self::PRIORITY, "PRIORITY"),
    ];

    /// User bit `n`, for `n` in `0..8`.
    ///
    /// # Panics
    ///
    /// Panics if `n >= 8`.
    #[inline]
    pub const fn user(n: u32) -> Signals {
        assert!(n < 8, "there are eight user signal bits, 0..8");
        Signals(1 << (Self::USER_SHIFT + n))
    }

    /// The bits as a `u32`.
    #[inline]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Builds a set from raw bits. Bits without a meaning are kept, so that a
    /// value read back from a packet round-trips exactly.
    #[inline]
    pub const fn from_bits(bits: u32) -> Signals {
        Signals(bits)
    }

    /// Whether no bit is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every bit of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: Signals) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set in `self`.
    #[inline]
    pub const fn intersects(self, other: Signals) -> bool {
        self.0 & other.0 != 0
    }
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signals(")?;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let s = if first { "" } else { " | " };
            first = false;
            f.write_str(s)
        };
        for (bit, name) in Self::NAMES {
            if self.contains(bit) {
                sep(f)?;
                f.write_str(name)?;
            }
        }
        for n in 0..8 {
            if self.contains(Signals::user(n)) {
                sep(f)?;
                write!(f, "USER_{n}")?;
            }
        }
        let unknown = self.0 & !Self::ALL.0;
        if unknown != 0 {
            sep(f)?;
            write!(f, "{unknown:#x}")?;
        }
        if first {
            f.write_str("NONE")?;
        }
        f.write_str(")")
    }
}

macro_rules! bit_op {
    ($Trait:ident $method:ident $AssignTrait:ident $assign:ident $op:tt) => {
        impl $Trait for Signals {
            type Output = Signals;
            fn $method(self, rhs: Signals) -> Signals {
                Signals(self.0 $op rhs.0)
            }
        }
        impl $AssignTrait for Signals {
            fn $assign(&mut self, rhs: Signals) {
                self.0 = self.0 $op rhs.0;
            }
        }
    };
}
bit_op!(BitOr bitor BitOrAssign bitor_assign |);
bit_op!(BitAnd bitand BitAndAssign bitand_assign &);

impl BitXor for Signals {
    type Output = Signals;
    fn bitxor(self, rhs: Signals) -> Signals {
        Signals(self.0 ^ rhs.0)
    }
}

impl Sub for Signals {
    type Output = Signals;
    /// The bits of `self` that are not in `rhs`.
    fn sub(self, rhs: Signals) -> Signals {
        Signals(self.0 & !rhs.0)
    }
}

impl Not for Signals {
    type Output = Signals;
    fn not(self) -> Signals {
        Signals(!self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_every_bit() {
        assert_eq!(format!("{:?}", Signals::NONE), "Signals(NONE)");
        assert_eq!(
            format!("{:?}", Signals::READABLE | Signals::WRITE_CLOSED | Signals::user(7)),
            "Signals(READABLE | WRITE_CLOSED | USER_7)"
        );
        assert_eq!(format!("{:?}", Signals::from_bits(1 << 10)), "Signals(0x400)");
    }

    #[test]
    fn user_bits_are_the_top_byte() {
        assert_eq!(Signals::user(0), Signals::USER_0);
        assert_eq!(Signals::user(7).bits(), 1 << 31);
        assert_eq!(Signals::USER_ALL.bits(), 0xff00_0000);
        assert!(!Signals::USER_ALL.intersects(Signals::ALL - Signals::USER_ALL));
    }
}
