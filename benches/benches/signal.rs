//! Criterion benches of the counted signal: `CountedSignal::raise` and
//! `take` on one thread, and `Signaler::raise` through a reactor's remote
//! path.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally_packets::{CountedSignal, Signals};
use tally_reactor::Reactor;

fn counted(c: &mut Criterion) {
    let mut g = c.benchmark_group("counted_signal");
    g.throughput(Throughput::Elements(1));
    let word = CountedSignal::new();
    let _ = word.raise(Signals::READABLE, 1);
    g.bench_function("raise_coalesced", |b| {
        b.iter(|| black_box(word.raise(black_box(Signals::READABLE), 1)))
    });
    g.bench_function("raise_then_take", |b| {
        b.iter(|| {
            let _ = word.raise(black_box(Signals::READABLE), 1);
            black_box(word.take())
        })
    });
    g.bench_function("take_empty", |b| b.iter(|| black_box(word.take())));
    g.bench_function("fold", |b| {
        b.iter(|| CountedSignal::fold(black_box(1 << 32 | 7), black_box(Signals::USER_0), 1))
    });
    g.finish();
}

fn signaler(c: &mut Criterion) {
    let mut g = c.benchmark_group("signaler");
    g.throughput(Throughput::Elements(1));
    let reactor = Reactor::new().expect("io_uring reactor");
    let reg = reactor.register();
    let signaler = reg.signaler();
    let _ = signaler.raise(Signals::user(0), 1);
    g.bench_function("raise_coalesced", |b| {
        b.iter(|| black_box(signaler.raise(Signals::user(0), 1).expect("live")))
    });
    // The edge path: the raise that moves the word from empty queues the
    // registration on the remote queue; the drain takes it again.
    let _ = reg.try_drain();
    g.bench_function("raise_edge_and_drain", |b| {
        b.iter(|| {
            let _ = signaler.raise(Signals::user(0), 1).expect("live");
            black_box(reg.try_drain())
        })
    });
    g.finish();
    drop(reg);
}

criterion_group!(benches, counted, signaler);
criterion_main!(benches);
