//! [`PacketQueue`]: a registration's bounded queue, and [`PacketList`], what a
//! drain hands over.
//!
//! The queue never grows past its cap. When it is full, a signal packet folds
//! into the queued signal packet of the same key, so signal floods cost O(1)
//! memory; any other packet is refused and handed back, so the caller (the
//! reactor) applies back pressure. Nothing is silently dropped.

use smallvec::SmallVec;

use crate::{Packet, PacketKind, Token};

/// What one drain hands over.
///
/// Four packets are stored inline (192 bytes), with no heap allocation. A
/// registration drained every crank typically holds one coalesced signal
/// packet plus a completion or two, so four covers the steady state of
/// signal sources, sockets with a read and a write in flight, and listeners
/// with a small accept burst. Bigger bursts spill to the heap once; reuse the
/// list with `drain_into` to keep that allocation.
pub type PacketList = SmallVec<[Packet; 4]>;

/// What [`PacketQueue::push`] did with an accepted packet.
#[must_use]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pushed {
    /// Appended to the queue.
    Queued,
    /// The queue was full, and the signal packet was folded into the queued
    /// signal packet of the same key.
    Folded,
}

/// A bounded queue of packets for one registration.
///
/// # Examples
///
/// ```
/// use tally_packets::{Count, Packet, PacketList, PacketQueue, Pushed, Signals, Token};
///
/// let key = Token::new(0, 1);
/// let sig = |n| Packet::signal(key, Signals::READABLE, Signals::READABLE, Count::new(n));
/// let mut q = PacketQueue::with_cap(1);
/// assert_eq!(q.push(sig(1)), Ok(Pushed::Queued));
/// assert_eq!(q.push(sig(2)), Ok(Pushed::Folded));
/// assert!(q.push(Packet::user(key, [0; 32])).is_err()); // refused: back pressure
///
/// let mut out = PacketList::new();
/// q.drain_into(&mut out);
/// assert_eq!(out[0].as_signal().unwrap().count, Count::new(3));
/// ```
#[derive(Debug, Clone)]
pub struct PacketQueue {
    items: Vec<Packet>,
    cap: usize,
    /// Index of the most recently queued signal packet: the fold target on
    /// overflow in the common one-key case, so folding is O(1) there.
    last_signal: Option<usize>,
}

impl PacketQueue {
    /// A queue that holds at most `cap` packets. It allocates nothing until
    /// the first push.
    ///
    /// # Panics
    ///
    /// Panics if `cap` is zero.
    pub fn with_cap(cap: usize) -> PacketQueue {
        assert!(cap > 0, "a packet queue needs room for at least one packet");
        PacketQueue { items: Vec::new(), cap, last_signal: None }
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// How many packets are queued.
    #[inline]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the next non-signal push would be refused.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.cap
    }

    /// The queued packets, oldest first.
    pub fn iter(&self) -> std::slice::Iter<'_, Packet> {
        self.items.iter()
    }

    /// Queues `packet`.
    ///
    /// When the queue is full, a signal packet folds into the queued signal
    /// packet of the same key: observed and trigger bits are ORed (no bit is
    /// lost) and counts add with saturation.
    ///
    /// # Errors
    ///
    /// Hands `packet` back when the queue is full and it cannot be folded.
    #[inline]
    pub fn push(&mut self, packet: Packet) -> Result<Pushed, Packet> {
        let is_signal = matches!(packet.kind(), PacketKind::Signal(_));
        if self.items.len() < self.cap {
            if is_signal {
                self.last_signal = Some(self.items.len());
            }
            self.items.push(packet);
            return Ok(Pushed::Queued);
        }
        let PacketKind::Signal(new) = packet.kind() else { return Err(packet) };
        let Some(index) = self.signal_index(packet.key()) else { return Err(packet) };
        if let PacketKind::Signal(queued) = self.items[index].kind_mut() {
            queued.trigger |= new.trigger;
            queued.observed |= new.observed;
            queued.count = queued.count.saturating_add(new.count.get());
        }
        Ok(Pushed::Folded)
    }

    /// The index of a queued signal packet for `key`.
    fn signal_index(&self, key: Token) -> Option<usize> {
        let is_target = |p: &Packet| p.key() == key && matches!(p.kind(), PacketKind::Signal(_));
        match self.last_signal {
            Some(i) if is_target(&self.items[i]) => Some(i),
            // Several keys share this queue: fall back to a scan, which only
            // happens on overflow and is bounded by the cap.
            _ => self.items.iter().rposition(is_target),
        }
    }

    /// Moves every queued packet, oldest first, onto the end of `out`. The
    /// queue keeps its allocation.
    pub fn drain_into(&mut self, out: &mut PacketList) {
        // Packets are Copy: one block copy, then forget them here.
        out.extend_from_slice(&self.items);
        self.items.clear();
        self.last_signal = None;
    }

    /// Keeps only the packets for which `keep` returns true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Packet) -> bool) {
        self.items.retain(|p| keep(p));
        // Indices moved; the fold target is found again by a scan.
        self.last_signal = None;
    }

    /// Takes every queued packet, oldest first.
    pub fn take(&mut self) -> PacketList {
        let mut out = PacketList::new();
        self.drain_into(&mut out);
        out
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{Count, Signals};

    #[test]
    fn retain_keeps_order_and_folding_still_finds_the_signal() {
        let (a, b) = (Token::new(0, 1), Token::new(1, 1));
        let sig = |key, n| Packet::signal(key, Signals::READABLE, Signals::READABLE, Count::new(n));
        let mut q = PacketQueue::with_cap(3);
        assert_eq!(q.push(sig(a, 1)), Ok(Pushed::Queued));
        assert_eq!(q.push(Packet::user(b, [1; 32])), Ok(Pushed::Queued));
        assert_eq!(q.push(Packet::user(b, [2; 32])), Ok(Pushed::Queued));
        q.retain(|p| p.kind() != PacketKind::User([1; 32]));
        assert_eq!(q.len(), 2);
        assert_eq!(q.push(Packet::user(b, [3; 32])), Ok(Pushed::Queued));
        // Full again: a signal for `a` folds into the (moved) queued one.
        assert_eq!(q.push(sig(a, 4)), Ok(Pushed::Folded));
        let list = q.take();
        assert_eq!(list[0].as_signal().unwrap().count, Count::new(5));
        assert_eq!(list[1].kind(), PacketKind::User([2; 32]));
        assert_eq!(list[2].kind(), PacketKind::User([3; 32]));
    }
}
