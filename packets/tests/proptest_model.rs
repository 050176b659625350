//! Property tests: `CountedSignal` and `PacketQueue` against plain sequential
//! reference models.
//!
//! The models use nothing from the crate's logic: a counted signal is a `u32`
//! of bits plus a `u32` count with `saturating_add`, and a queue is a `Vec`
//! with the documented fold rule (when full, a signal packet folds into the
//! newest queued signal packet of the same key: trigger and observed ORed,
//! counts added with saturation; any other packet is handed back).
//!
//! Under `--cfg loom` a `CountedSignal` only works inside `loom::model`, so
//! this file is compiled out there.
#![cfg(not(loom))]

use proptest::collection::vec;
use proptest::prelude::*;
use tally_packets::{
    CompletionPacket, Count, CountedSignal, LaneHint, OpTag, Packet, PacketKind, PacketList,
    PacketQueue, ProcessSignalPacket, Raised, SignalPacket, Signals, TimerPacket, Token,
};

const CASES: u32 = 256;

/// The keys packets are pushed with. Two share slot 0 with different
/// generations, and one is reserved, so the fold must match the whole key.
const KEYS: [Token; 4] = [Token::new(0, 1), Token::new(1, 1), Token::new(0, 2), Token::reserved(1)];

// The reference models (`WordModel`, `QueueModel`) are the fuzz target's,
// shared so that the fold rule is written down once.
#[path = "../../fuzz/src/packets_model.rs"]
#[allow(dead_code)]
mod packets_model;

use packets_model::{QueueModel, WordModel};

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Signal bits: often none or a few named bits, sometimes anything (unnamed
/// bits must survive too).
fn bits() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => Just(0),
        4 => prop::sample::select(vec![
            Signals::READABLE.bits(),
            Signals::WRITABLE.bits(),
            Signals::ERROR.bits(),
            Signals::user(7).bits(),
            (Signals::READABLE | Signals::WRITABLE).bits(),
        ]),
        1 => any::<u32>(),
    ]
}

/// Counts: mostly small, often close enough to `u32::MAX` to saturate.
fn count() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..4,
        2 => (u32::MAX - 3)..=u32::MAX,
        1 => (u32::MAX / 2 - 1)..=(u32::MAX / 2 + 1),
        1 => any::<u32>(),
    ]
}

fn key() -> impl Strategy<Value = Token> {
    prop::sample::select(KEYS.to_vec())
}

fn signal_packet() -> impl Strategy<Value = Packet> {
    (key(), bits(), bits(), count()).prop_map(|(key, trigger, observed, n)| {
        Packet::signal(
            key,
            Signals::from_bits(trigger),
            Signals::from_bits(observed),
            Count::new(n),
        )
    })
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        6 => signal_packet(),
        // A signal packet with a non-zero status: the fold must keep the
        // queued packet's status.
        1 => (key(), bits(), count(), -5i32..0).prop_map(|(key, b, n, status)| {
            let s = SignalPacket {
                trigger: Signals::from_bits(b),
                observed: Signals::from_bits(b),
                count: Count::new(n),
            };
            Packet::new(key, status, PacketKind::Signal(s))
        }),
        2 => (key(), any::<i32>(), any::<bool>()).prop_map(|(key, result, more)| {
            let c = CompletionPacket::new(Token::new(9, 9), OpTag::Write, result).with_more(more);
            Packet::completion(key, c)
        }),
        2 => (key(), any::<u8>()).prop_map(|(key, b)| Packet::user(key, [b; 32])),
        1 => (key(), any::<u64>(), count()).prop_map(|(key, id, n)| {
            Packet::new(key, 0, PacketKind::Timer(TimerPacket::new(id, Count::new(n))))
        }),
        1 => (key(), 1i32..32, count()).prop_map(|(key, signo, n)| {
            let p = ProcessSignalPacket { signo, count: Count::new(n) };
            Packet::new(key, 0, PacketKind::ProcessSignal(p))
        }),
    ]
}

#[derive(Clone, Debug)]
enum WordOp {
    Raise(u32, u32),
    /// `raise_with` through producer `h`'s lane hint.
    RaiseLane(usize, u32, u32),
    Take,
}

fn word_op() -> impl Strategy<Value = WordOp> {
    // Lane raises draw from few bit sets and mostly small counts, so that
    // they claim the lane, share it and sometimes miss it.
    let lane_bits =
        prop_oneof![Just(Signals::USER_0.bits()), Just(Signals::READABLE.bits()), bits()];
    let lane_count = prop_oneof![3 => 0u32..=300, 1 => count()];
    prop_oneof![
        4 => (bits(), count()).prop_map(|(b, n)| WordOp::Raise(b, n)),
        4 => (0..3usize, lane_bits, lane_count).prop_map(|(h, b, n)| WordOp::RaiseLane(h, b, n)),
        1 => Just(WordOp::Take),
    ]
}

#[derive(Clone, Debug)]
enum QueueOp {
    Push(Packet),
    /// `drain_into` a list that already holds a sentinel packet.
    DrainInto,
    /// `take`, which drains into a fresh list.
    Take,
}

fn queue_op() -> impl Strategy<Value = QueueOp> {
    prop_oneof![
        8 => packet().prop_map(QueueOp::Push),
        1 => Just(QueueOp::DrainInto),
        1 => Just(QueueOp::Take),
    ]
}

#[derive(Clone, Debug)]
enum PipeOp {
    /// A producer raises word `k`.
    Raise(usize, u32, u32),
    /// The consumer takes word `k` and queues it as a signal packet; when the
    /// queue refuses it, the take is raised back into the word.
    Crank(usize),
    /// Some other packet for key `k` takes up room in the queue.
    User(usize),
    Drain,
}

fn pipe_op() -> impl Strategy<Value = PipeOp> {
    prop_oneof![
        4 => (0..3usize, bits(), count()).prop_map(|(k, b, n)| PipeOp::Raise(k, b, n)),
        3 => (0..3usize).prop_map(PipeOp::Crank),
        2 => (0..3usize).prop_map(PipeOp::User),
        1 => Just(PipeOp::Drain),
    ]
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

fn check_queue(queue: &PacketQueue, model: &QueueModel) -> Result<(), TestCaseError> {
    let queued: Vec<Packet> = queue.iter().copied().collect();
    prop_assert_eq!(&queued, &model.items);
    prop_assert_eq!(queue.len(), model.items.len());
    prop_assert_eq!(queue.is_empty(), model.items.is_empty());
    prop_assert_eq!(queue.is_full(), model.items.len() >= model.cap);
    prop_assert_eq!(queue.cap(), model.cap);
    prop_assert!(queue.len() <= queue.cap(), "the queue grew past its cap");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Every raise and take agrees with the model, and `Raised::Woke` is
    /// returned exactly on the model's empty -> non-empty transitions; with
    /// lane raises in the mix, on every such transition and at most on one
    /// more raise per take (the word's own edge while the lane held some).
    #[test]
    fn counted_signal_matches_model(ops in vec(word_op(), 0..64)) {
        let word = CountedSignal::new();
        let hints = [LaneHint::new(), LaneHint::new(), LaneHint::new()];
        let mut model = WordModel::default();
        let mut lane_used = false;
        let mut extra_wakes = 0;
        for op in ops {
            let (raised, woke, what) = match op {
                WordOp::Raise(b, n) => {
                    (word.raise(Signals::from_bits(b), n), model.raise(Signals::from_bits(b), n), (b, n))
                }
                WordOp::RaiseLane(h, b, n) => {
                    lane_used = true;
                    let raised = word.raise_with(&hints[h], Signals::from_bits(b), n);
                    (raised, model.raise(Signals::from_bits(b), n), (b, n))
                }
                WordOp::Take => {
                    extra_wakes = 0;
                    prop_assert_eq!(word.take(), model.take());
                    (Raised::Coalesced, false, (0, 0))
                }
            };
            if !lane_used {
                prop_assert_eq!(raised == Raised::Woke, woke, "raise{:x?}", what);
            } else {
                prop_assert!(!woke || raised == Raised::Woke, "raise{:x?} woke nobody", what);
                if raised == Raised::Woke && !woke {
                    extra_wakes += 1;
                    prop_assert!(extra_wakes <= 1, "two extra wake-ups before a take");
                }
            }
            prop_assert_eq!(word.peek(), model.pair());
            prop_assert_eq!(word.peek().1.is_unbounded(), model.count == u32::MAX);
        }
        prop_assert_eq!(word.take(), model.take());
        prop_assert_eq!(word.take(), (Signals::NONE, Count::ZERO));
    }

    /// `CountedSignal::fold`/`pack`/`unpack` agree with the model's fold.
    #[test]
    fn fold_matches_model(b0 in bits(), n0 in count(), b1 in bits(), n1 in count()) {
        let mut model = WordModel { bits: b0, count: n0 };
        model.raise(Signals::from_bits(b1), n1);
        let word = CountedSignal::pack(Signals::from_bits(b0), Count::new(n0));
        let folded = CountedSignal::fold(word, Signals::from_bits(b1), n1);
        prop_assert_eq!(CountedSignal::unpack(folded), model.pair());
    }

    /// Push, `drain_into` and `take` agree with the `Vec` model at every step,
    /// including what a refused push hands back.
    #[test]
    fn packet_queue_matches_model(cap in 1usize..5, ops in vec(queue_op(), 0..64)) {
        let mut queue = PacketQueue::with_cap(cap);
        let mut model = QueueModel::new(cap);
        let sentinel = Packet::user(Token::reserved(0), [0xaa; 32]);
        for op in ops {
            match op {
                QueueOp::Push(p) => prop_assert_eq!(queue.push(p), model.push(p)),
                QueueOp::DrainInto => {
                    let mut out = PacketList::new();
                    out.push(sentinel);
                    queue.drain_into(&mut out);
                    prop_assert_eq!(out[0], sentinel);
                    prop_assert_eq!(&out[1..], &model.drain()[..]);
                }
                QueueOp::Take => prop_assert_eq!(&queue.take()[..], &model.drain()[..]),
            }
            check_queue(&queue, &model)?;
        }
        prop_assert_eq!(&queue.take()[..], &model.drain()[..]);
        prop_assert!(queue.is_empty());
    }

    /// Words feeding a small shared queue, as the reactor does: a take that
    /// the queue refuses is raised back into its word. Nothing is lost: every
    /// raised bit is delivered, and the delivered counts add up to the raised
    /// ones, unless they saturated, in which case `Count::UNBOUNDED` is seen.
    #[test]
    fn words_into_queue_lose_nothing(cap in 1usize..4, ops in vec(pipe_op(), 0..80)) {
        let keys = [KEYS[0], KEYS[1], KEYS[2]];
        let words = [CountedSignal::new(), CountedSignal::new(), CountedSignal::new()];
        let mut queue = PacketQueue::with_cap(cap);
        let mut raised_bits = [0u32; 3];
        let mut raised_total = [0u64; 3];
        let mut got_bits = [0u32; 3];
        let mut got_total = [0u64; 3];
        let mut got_unbounded = [false; 3];
        let mut deliver = |k: usize, bits: Signals, count: Count| {
            got_bits[k] |= bits.bits();
            got_total[k] += u64::from(count.get());
            got_unbounded[k] |= count.is_unbounded();
        };
        let drain = |queue: &mut PacketQueue, deliver: &mut dyn FnMut(usize, Signals, Count)| {
            for p in queue.take() {
                if let Some(s) = p.as_signal() {
                    let k = keys.iter().position(|&key| key == p.key()).expect("a known key");
                    prop_assert_eq!(s.trigger, s.observed);
                    deliver(k, s.observed, s.count);
                }
            }
            Ok(())
        };
        for op in ops {
            match op {
                PipeOp::Raise(k, b, n) => {
                    let _ = words[k].raise(Signals::from_bits(b), n);
                    raised_bits[k] |= b;
                    raised_total[k] += u64::from(n);
                }
                PipeOp::Crank(k) => {
                    let (bits, count) = words[k].take();
                    if bits.is_empty() && count == Count::ZERO {
                        continue;
                    }
                    if let Err(p) = queue.push(Packet::signal(keys[k], bits, bits, count)) {
                        let s = p.as_signal().expect("the refused packet is handed back");
                        prop_assert_eq!((s.observed, s.count), (bits, count));
                        prop_assert_eq!(words[k].raise(s.observed, s.count.get()), Raised::Woke);
                    }
                }
                PipeOp::User(k) => {
                    let _ = queue.push(Packet::user(keys[k], [k as u8; 32]));
                }
                PipeOp::Drain => drain(&mut queue, &mut deliver)?,
            }
        }
        drain(&mut queue, &mut deliver)?;
        for (k, word) in words.iter().enumerate() {
            let (bits, count) = word.take();
            deliver(k, bits, count);
        }
        for k in 0..3 {
            prop_assert_eq!(got_bits[k], raised_bits[k], "bits lost for key {}", k);
            if got_unbounded[k] {
                prop_assert!(raised_total[k] >= u64::from(u32::MAX));
            } else {
                prop_assert_eq!(got_total[k], raised_total[k], "count lost for key {}", k);
            }
        }
    }
}
