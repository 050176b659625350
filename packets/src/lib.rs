//! Packets, signal bits and counted signals: the data that tally's reactor
//! delivers, with no I/O and no syscalls.
//!
//! * [`Token`] is the 64-bit key of a registration or an operation: a slot
//!   index plus a generation, with a small reserved range.
//! * [`Signals`] is a set of signal bits: readiness bits plus eight user bits.
//! * [`CountedSignal`] packs signal bits and a saturating count into one
//!   `AtomicU64`. A flood of raises between two takes coalesces into one
//!   wake-up and one packet, and the count says how much work is waiting.
//! * [`Packet`] is the 48-byte unit of delivery, with a [`PacketKind`].
//! * [`PacketQueue`] is a registration's bounded queue, and [`PacketList`] is
//!   what a drain hands over.
//!
//! This crate is model-checked with loom (`RUSTFLAGS="--cfg loom"`) and
//! fuzzed against a sequential model (`fuzz/`, target `packets_model`).
//!
//! # Example
//!
//! ```
//! # if tally_packets::LOOM { return; } // loom's atomics only work inside a model
//! use tally_packets::{CountedSignal, Packet, PacketList, PacketQueue, Raised, Signals, Token};
//!
//! // A producer raises a flood of events; only the first raise owes a wake-up.
//! let word = CountedSignal::new();
//! let woke = (0..1000).filter(|_| word.raise(Signals::READABLE, 1) == Raised::Woke).count();
//! assert_eq!(woke, 1);
//!
//! // The consumer takes the word once and gets one packet for all of them.
//! let (bits, count) = word.take();
//! let key = Token::new(0, 1);
//! let mut queue = PacketQueue::with_cap(64);
//! queue.push(Packet::signal(key, Signals::READABLE, bits, count)).unwrap();
//! let mut list = PacketList::new();
//! queue.drain_into(&mut list);
//! assert_eq!(list[0].as_signal().unwrap().count.get(), 1000);
//! ```

#![forbid(unsafe_code)]

mod counted;
mod packet;
mod queue;
mod signals;
mod sync;
mod token;

pub use counted::{Count, CountedSignal, LANE_MAX_N, LaneHint, Raised};
pub use packet::{
    BufferRef, CompletionPacket, OpTag, Packet, PacketKind, ProcessSignalPacket, SignalPacket,
    TimerPacket,
};
pub use queue::{PacketList, PacketQueue, Pushed};
pub use signals::Signals;
pub use token::Token;

/// Whether this build uses loom's atomics (`--cfg loom`). Doctests that
/// touch a `CountedSignal` outside a loom model skip themselves when set.
#[doc(hidden)]
pub const LOOM: bool = cfg!(loom);
