//! Model-based driver for `tally-packets`: interprets bytes as operations on
//! three `CountedSignal` words and one `PacketQueue`, runs each operation on
//! the real types and on a plain reference model, and asserts they agree
//! after every step.
//!
//! This file uses only `std` and `tally_packets`. The fuzz target calls it
//! through `libfuzzer-sys`, and `packets/tests/fuzz_corpus_replay.rs`
//! includes it with `#[path]` to replay the corpus on stable.
//!
//! # Encoding
//!
//! The first byte sets the queue cap: `1 + b % 4`. Then each operation is an
//! opcode byte, `op % 9`, followed by its arguments. Input that runs out in
//! the middle of an operation ends the run. `k` is a byte naming a word/key,
//! `k % 3`.
//!
//! | op | operation       | arguments                     |
//! |----|-----------------|-------------------------------|
//! | 0  | raise word      | `k`, bits, count              |
//! | 1  | take word       | `k`                           |
//! | 2  | push signal     | `k`, trigger, observed, count |
//! | 3  | push completion | `k`, result, flags            |
//! | 4  | push user       | `k`, fill byte                |
//! | 5  | push timer      | `k`, count                    |
//! | 6  | drain_into      |                               |
//! | 7  | crank word      | `k`                           |
//! | 8  | take queue      |                               |
//!
//! A crank takes word `k`, queues what it held as a signal packet, and raises
//! it back into the word if the queue refuses it, as the reactor does.
//!
//! *bits* is one byte; its bit `i` sets signal bit `BIT_MAP[i]`. *count* is a
//! class byte, `c % 4`: `0` small (`next % 8`), `1` near the top
//! (`u32::MAX - next % 8`), `2` about half (`u32::MAX / 2 + next % 4`), `3`
//! four little-endian bytes. In a raise (op 0), bit 7 of the class byte
//! raises through `raise_with` and a `LaneHint` (bit 6 picks one of the
//! word's two hints, as two `Signaler`s would hold), the fast-lane path.
//!
//! # The model
//!
//! A word is a `u32` of bits plus a `u32` count added with `saturating_add`;
//! a raise "wakes" when it moves the word from empty to non-empty. The real
//! word must report every such wake; once its lane holds a count (since the
//! last take) it may also report one more than the model, as
//! `CountedSignal`'s doc allows ("an edge may report `Woke` twice, never
//! zero times"). The queue is
//! a `Vec`: below the cap a push appends; at the cap a signal packet folds into
//! the newest queued signal packet of the same key (trigger and observed ORed,
//! counts added with saturation, the queued packet's status kept) and any
//! other packet is handed back unchanged.

use tally_packets::{
    CompletionPacket, Count, CountedSignal, LaneHint, OpTag, Packet, PacketKind, PacketList,
    PacketQueue, Pushed, Raised, SignalPacket, Signals, TimerPacket, Token,
};

/// The keys that the words feed and that packets are pushed with. Two share
/// slot 0 with different generations, so a fold must match the whole key.
const KEYS: [Token; 3] = [Token::new(0, 1), Token::new(1, 1), Token::new(0, 2)];

/// Which signal bit each bit of a *bits* byte sets. Bit 10 has no name: it
/// must survive anyway.
const BIT_MAP: [u32; 8] = [0, 1, 2, 4, 5, 10, 24, 31];

/// What one run exercised. The corpus replay test checks that the committed
/// seeds, taken together, reach every branch counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Operations run.
    pub ops: usize,
    /// Raises that returned `Raised::Woke`.
    pub wakes: usize,
    /// Raises that returned `Raised::Coalesced` on a non-empty word.
    pub coalesced: usize,
    /// Times a word's count reached `Count::UNBOUNDED`.
    pub saturated_words: usize,
    /// Pushes that were queued.
    pub queued: usize,
    /// Pushes that folded into a queued signal packet.
    pub folds: usize,
    /// Folds whose target was not the newest signal packet in the queue
    /// (several keys share it).
    pub folds_past_other_keys: usize,
    /// Folds that left the queued count at `Count::UNBOUNDED`.
    pub saturated_folds: usize,
    /// Signal packets refused because no queued signal packet had their key.
    pub refused_signals: usize,
    /// Other packets refused because the queue was full.
    pub refused_others: usize,
    /// Cranks whose refused packet was raised back into its word.
    pub raised_back: usize,
    /// Raises through a `LaneHint` (`raise_with`).
    pub lane_raises: usize,
    /// Raises that reported `Woke` on a word the model held non-empty,
    /// which a lane holding a count allows.
    pub double_wakes: usize,
    /// Non-empty drains.
    pub drains: usize,
}

/// Runs `data` against the model, panicking on the first disagreement.
pub fn run(data: &[u8]) {
    let _ = run_with_coverage(data);
}

/// [`run`], also reporting what the run exercised.
pub fn run_with_coverage(data: &[u8]) -> Coverage {
    let mut input = Input { data, pos: 0 };
    let Some(cap) = input.byte() else { return Coverage::default() };
    let mut h = Harness::new(1 + usize::from(cap % 4));
    while h.step(&mut input).is_some() {
        h.check();
    }
    h.finish();
    h.cov
}

/// The bytes still to interpret.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn key(&mut self) -> Option<usize> {
        Some(usize::from(self.byte()?) % KEYS.len())
    }

    fn bits(&mut self) -> Option<Signals> {
        let b = self.byte()?;
        let bits = (0..8).filter(|i| b & (1 << i) != 0).fold(0, |acc, i| acc | 1 << BIT_MAP[i]);
        Some(Signals::from_bits(bits))
    }

    fn count(&mut self) -> Option<u32> {
        Some(self.count_and_class()?.0)
    }

    /// A count and the class byte it was read with.
    fn count_and_class(&mut self) -> Option<(u32, u8)> {
        let class = self.byte()?;
        let n = match class % 4 {
            0 => u32::from(self.byte()? % 8),
            1 => u32::MAX - u32::from(self.byte()? % 8),
            2 => u32::MAX / 2 + u32::from(self.byte()? % 4),
            _ => u32::from_le_bytes([self.byte()?, self.byte()?, self.byte()?, self.byte()?]),
        };
        Some((n, class))
    }
}

/// A counted signal as plain data: the reference model, also used by
/// `packets/tests/proptest_model.rs`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct WordModel {
    /// The signal bits.
    pub bits: u32,
    /// The count, added with `saturating_add`.
    pub count: u32,
}

impl WordModel {
    /// Whether nothing was raised since the last take.
    pub fn is_empty(self) -> bool {
        self.bits == 0 && self.count == 0
    }

    /// Folds a raise in; returns whether it moved the word from empty to
    /// non-empty (the one raise that owes a wake-up).
    pub fn raise(&mut self, bits: Signals, n: u32) -> bool {
        let was_empty = self.is_empty();
        self.bits |= bits.bits();
        self.count = self.count.saturating_add(n);
        was_empty && !self.is_empty()
    }

    /// Empties the word and returns what it held.
    pub fn take(&mut self) -> (Signals, Count) {
        let WordModel { bits, count } = std::mem::take(self);
        (Signals::from_bits(bits), Count::new(count))
    }

    /// What the word holds.
    pub fn pair(self) -> (Signals, Count) {
        (Signals::from_bits(self.bits), Count::new(self.count))
    }
}

/// A packet queue as a plain `Vec` with the documented fold rule: the
/// reference model, also used by `packets/tests/proptest_model.rs`.
#[derive(Debug)]
pub struct QueueModel {
    /// How many packets it holds at most.
    pub cap: usize,
    /// The queued packets, oldest first.
    pub items: Vec<Packet>,
}

impl QueueModel {
    /// An empty queue of `cap` packets.
    pub fn new(cap: usize) -> QueueModel {
        QueueModel { cap, items: Vec::new() }
    }

    /// Where a signal packet for `key` folds when the queue is full: the
    /// newest queued signal packet of the same key.
    pub fn fold_target(&self, key: Token) -> Option<usize> {
        self.items.iter().rposition(|p| p.key() == key && is_signal(p))
    }

    /// Below the cap, appends. At the cap, folds a signal packet into its
    /// fold target (trigger and observed ORed, counts added with saturation,
    /// the queued packet's key and status kept) and hands anything else back.
    pub fn push(&mut self, packet: Packet) -> Result<Pushed, Packet> {
        if self.items.len() < self.cap {
            self.items.push(packet);
            return Ok(Pushed::Queued);
        }
        let PacketKind::Signal(new) = packet.kind() else { return Err(packet) };
        let Some(index) = self.fold_target(packet.key()) else { return Err(packet) };
        let queued = self.items[index];
        let old = queued.as_signal().expect("the target is a signal packet");
        let folded = SignalPacket {
            trigger: Signals::from_bits(old.trigger.bits() | new.trigger.bits()),
            observed: Signals::from_bits(old.observed.bits() | new.observed.bits()),
            count: Count::new(old.count.get().saturating_add(new.count.get())),
        };
        self.items[index] = Packet::new(queued.key(), queued.status(), PacketKind::Signal(folded));
        Ok(Pushed::Folded)
    }

    /// Takes every queued packet, oldest first.
    pub fn drain(&mut self) -> Vec<Packet> {
        std::mem::take(&mut self.items)
    }
}

fn is_signal(p: &Packet) -> bool {
    matches!(p.kind(), PacketKind::Signal(_))
}

/// The real types and their models, side by side.
struct Harness {
    words: [CountedSignal; 3],
    /// Two hints per word, as two `Signaler`s of one registration hold.
    hints: [[LaneHint; 2]; 3],
    /// Whether a raise went through word `k`'s lane since its last take.
    lane_used: [bool; 3],
    word_models: [WordModel; 3],
    queue: PacketQueue,
    model: QueueModel,
    /// Reused across drains, as the reactor reuses its list.
    list: PacketList,
    cov: Coverage,
}

impl Harness {
    fn new(cap: usize) -> Harness {
        Harness {
            words: [CountedSignal::new(), CountedSignal::new(), CountedSignal::new()],
            hints: std::array::from_fn(|_| [LaneHint::new(), LaneHint::new()]),
            lane_used: [false; 3],
            word_models: [WordModel::default(); 3],
            queue: PacketQueue::with_cap(cap),
            model: QueueModel::new(cap),
            list: PacketList::new(),
            cov: Coverage::default(),
        }
    }

    /// Reads and runs one operation; `None` when the input ran out.
    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.byte()? % 9;
        match op {
            0 => {
                let (k, bits) = (input.key()?, input.bits()?);
                let (n, class) = input.count_and_class()?;
                if class & 0x80 != 0 {
                    self.raise_lane(k, usize::from(class >> 6 & 1), bits, n);
                } else {
                    self.raise(k, bits, n);
                }
            }
            1 => {
                let k = input.key()?;
                assert_eq!(self.words[k].take(), self.word_models[k].take(), "take word {k}");
                self.lane_used[k] = false;
            }
            2 => {
                let (k, trigger, observed) = (input.key()?, input.bits()?, input.bits()?);
                let count = Count::new(input.count()?);
                self.push(Packet::signal(KEYS[k], trigger, observed, count));
            }
            3 => {
                let k = input.key()?;
                let result = i32::from(input.byte()? as i8);
                let more = input.byte()? & 1 != 0;
                let c =
                    CompletionPacket::new(Token::new(7, 7), OpTag::Read, result).with_more(more);
                self.push(Packet::completion(KEYS[k], c));
            }
            4 => {
                let (k, fill) = (input.key()?, input.byte()?);
                self.push(Packet::user(KEYS[k], [fill; 32]));
            }
            5 => {
                let (k, n) = (input.key()?, input.count()?);
                let t = TimerPacket::new(k as u64, Count::new(n));
                self.push(Packet::new(KEYS[k], 0, PacketKind::Timer(t)));
            }
            6 => self.drain(false),
            7 => {
                let k = input.key()?;
                self.crank(k);
            }
            _ => self.drain(true),
        }
        self.cov.ops += 1;
        Some(())
    }

    fn raise(&mut self, k: usize, bits: Signals, n: u32) {
        let raised = self.words[k].raise(bits, n);
        self.record_raise(k, bits, n, raised);
    }

    /// A raise through hint `h` of word `k`: the fast lane once the hint
    /// owns it.
    fn raise_lane(&mut self, k: usize, h: usize, bits: Signals, n: u32) {
        let raised = self.words[k].raise_with(&self.hints[k][h], bits, n);
        self.lane_used[k] = true;
        self.cov.lane_raises += 1;
        self.record_raise(k, bits, n, raised);
    }

    fn record_raise(&mut self, k: usize, bits: Signals, n: u32, raised: Raised) {
        let was_empty = self.word_models[k].is_empty();
        let was_saturated = self.word_models[k].count == u32::MAX;
        let woke = raised == Raised::Woke;
        let model_woke = self.word_models[k].raise(bits, n);
        if model_woke {
            assert!(woke, "raise word {k} ({bits:?}, {n}) owed a wake-up and reported none");
        } else if woke {
            assert!(
                self.lane_used[k],
                "raise word {k} ({bits:?}, {n}) woke a non-empty word whose lane is empty"
            );
            self.cov.double_wakes += 1;
        }
        if woke && model_woke {
            self.cov.wakes += 1;
        } else if !was_empty {
            self.cov.coalesced += 1;
        }
        if !was_saturated && self.word_models[k].count == u32::MAX {
            self.cov.saturated_words += 1;
        }
    }

    /// Takes word `k` and queues what it held; a refused packet goes back
    /// into the word, so nothing raised is lost.
    fn crank(&mut self, k: usize) {
        let (bits, count) = self.words[k].take();
        assert_eq!((bits, count), self.word_models[k].take(), "crank word {k}");
        self.lane_used[k] = false;
        if bits.is_empty() && count == Count::ZERO {
            return;
        }
        if let Some(p) = self.push(Packet::signal(KEYS[k], bits, bits, count)) {
            let s = p.as_signal().expect("a refused signal packet comes back as one");
            self.raise(k, s.observed, s.count.get());
            self.cov.raised_back += 1;
        }
    }

    /// Pushes `packet` into both queues; returns it if it was refused.
    fn push(&mut self, packet: Packet) -> Option<Packet> {
        let got = self.queue.push(packet);
        let want = self.model_push(packet);
        assert_eq!(got, want, "push {packet:?}");
        got.err()
    }

    /// Pushes into the model, counting which branch the push took.
    fn model_push(&mut self, packet: Packet) -> Result<Pushed, Packet> {
        let newest_signal = self.model.items.iter().rposition(is_signal);
        let target = self.model.fold_target(packet.key());
        let result = self.model.push(packet);
        match result {
            Ok(Pushed::Queued) => self.cov.queued += 1,
            Ok(Pushed::Folded) => {
                let index = target.expect("a fold has a target");
                self.cov.folds += 1;
                if newest_signal != Some(index) {
                    self.cov.folds_past_other_keys += 1;
                }
                let folded = self.model.items[index].as_signal().expect("folded into a signal");
                if folded.count.is_unbounded() {
                    self.cov.saturated_folds += 1;
                }
            }
            Err(_) if is_signal(&packet) => self.cov.refused_signals += 1,
            Err(_) => self.cov.refused_others += 1,
        }
        result
    }

    fn drain(&mut self, fresh: bool) {
        let want = self.model.drain();
        if !want.is_empty() {
            self.cov.drains += 1;
        }
        if fresh {
            assert_eq!(&self.queue.take()[..], &want[..], "take queue");
        } else {
            // drain_into appends: whatever the reused list held stays first.
            let before = self.list.len();
            self.queue.drain_into(&mut self.list);
            assert_eq!(&self.list[before..], &want[..], "drain_into");
            if self.list.len() > 8 {
                self.list.clear();
            }
        }
    }

    /// Compares every observable of the real types with the model.
    fn check(&self) {
        let queued: Vec<Packet> = self.queue.iter().copied().collect();
        let model = &self.model;
        assert_eq!(queued, model.items, "queued packets");
        assert_eq!(self.queue.len(), model.items.len(), "len");
        assert_eq!(self.queue.is_empty(), model.items.is_empty(), "is_empty");
        assert_eq!(self.queue.is_full(), model.items.len() >= model.cap, "is_full");
        assert!(self.queue.len() <= self.queue.cap(), "the queue grew past its cap");
        for (k, (word, model)) in self.words.iter().zip(&self.word_models).enumerate() {
            assert_eq!(word.peek(), model.pair(), "word {k}");
        }
    }

    /// Drains what is left and takes every word: both must match the model.
    fn finish(&mut self) {
        self.check();
        self.drain(true);
        for k in 0..KEYS.len() {
            assert_eq!(self.words[k].take(), self.word_models[k].take(), "final take word {k}");
            assert_eq!(self.words[k].take(), (Signals::NONE, Count::ZERO), "word {k} after take");
        }
    }
}

impl std::ops::AddAssign for Coverage {
    fn add_assign(&mut self, rhs: Coverage) {
        self.ops += rhs.ops;
        self.wakes += rhs.wakes;
        self.coalesced += rhs.coalesced;
        self.saturated_words += rhs.saturated_words;
        self.queued += rhs.queued;
        self.folds += rhs.folds;
        self.folds_past_other_keys += rhs.folds_past_other_keys;
        self.saturated_folds += rhs.saturated_folds;
        self.refused_signals += rhs.refused_signals;
        self.refused_others += rhs.refused_others;
        self.raised_back += rhs.raised_back;
        self.lane_raises += rhs.lane_raises;
        self.double_wakes += rhs.double_wakes;
        self.drains += rhs.drains;
    }
}
