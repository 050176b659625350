//! Criterion benches of `tally-packets`: token pack and unpack, and a
//! registration queue's push and drain.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tally_packets::{
    CompletionPacket, Count, OpTag, Packet, PacketList, PacketQueue, Signals, Token,
};

fn token(c: &mut Criterion) {
    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pack_unpack", |b| {
        b.iter(|| {
            let t = Token::new(black_box(12_345), black_box(7));
            let raw = Token::from_u64(black_box(t.as_u64()));
            black_box((raw.slot(), raw.generation(), raw.is_reserved()))
        })
    });
    g.finish();
}

fn queue(c: &mut Criterion) {
    const BATCH: u64 = 64;
    let key = Token::new(1, 1);
    let completion =
        Packet::completion(key, CompletionPacket::new(Token::new(2, 1), OpTag::Recv, 64));
    let mut g = c.benchmark_group("packet_queue");
    g.throughput(Throughput::Elements(BATCH));
    let mut queue = PacketQueue::with_cap(256);
    let mut list = PacketList::new();
    list.reserve(256);
    g.bench_function("push_64_then_drain", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let _ = queue.push(black_box(completion));
            }
            queue.drain_into(&mut list);
            let n = list.len();
            list.clear();
            black_box(n)
        })
    });
    let signal = Packet::signal(key, Signals::ALL, Signals::READABLE, Count::new(1));
    g.bench_function("fold_signals_into_full_queue", |b| {
        b.iter_batched_ref(
            || {
                let mut q = PacketQueue::with_cap(8);
                for _ in 0..8 {
                    let _ = q.push(signal);
                }
                q
            },
            |q| {
                for _ in 0..BATCH {
                    let _ = black_box(q.push(black_box(signal)));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, token, queue);
criterion_main!(benches);
