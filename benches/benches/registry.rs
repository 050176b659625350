//! Criterion benches of the reactor's registration table: register and
//! deregister next to many live registrations, and the token lookup a
//! drain makes.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tally_reactor::{Reactor, Registration};

fn register(c: &mut Criterion) {
    let mut g = c.benchmark_group("registration");
    g.throughput(Throughput::Elements(1));
    for live in [1_000usize, 100_000] {
        let reactor = Reactor::new().expect("io_uring reactor");
        let held: Vec<Registration> = (0..live).map(|_| reactor.register()).collect();
        g.bench_with_input(BenchmarkId::new("register_drop", live), &live, |b, _| {
            b.iter(|| drop(black_box(reactor.register())))
        });
        let reg = &held[live / 2];
        g.bench_with_input(BenchmarkId::new("try_drain_empty", live), &live, |b, _| {
            b.iter(|| black_box(reg.try_drain()))
        });
        drop(held);
    }
    g.finish();
}

criterion_group!(benches, register);
criterion_main!(benches);
