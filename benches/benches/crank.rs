//! Criterion benches of the crank's hot paths: completions dispatched into
//! a registration and drained (the reactor), and a task woken and polled
//! again (the executor).

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally::LocalReactor;
use tally_reactor::{Op, Reactor};

/// Completions per iteration of `dispatch`.
const BATCH: u64 = 64;
/// Wake-ups per iteration of `task_wake`.
const WAKES: u64 = 1024;

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(BATCH));
    let reactor = Reactor::new().expect("reactor");
    let reg = reactor.register();
    // BATCH nops submitted, one turn that reaps and dispatches them, one
    // drain: the per-completion cost of the completion path.
    g.bench_function("nop_submit_turn_drain", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                reg.submit(Op::nop()).expect("submit");
            }
            let mut seen = 0;
            while seen < BATCH as usize {
                reactor.turn(Some(Duration::ZERO)).expect("turn");
                seen += black_box(reg.try_drain()).len();
            }
        })
    });
    g.finish();
}

/// Pending `left` times, waking itself each time: every poll after the
/// first is one task wake-up and one crank.
struct YieldN {
    left: u64,
}

impl Future for YieldN {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.left == 0 {
            return Poll::Ready(());
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn task_wake(c: &mut Criterion) {
    let mut g = c.benchmark_group("task_wake");
    g.throughput(Throughput::Elements(WAKES));
    let rt = LocalReactor::new().expect("runtime");
    g.bench_function("spawned_task_wakes_itself", |b| {
        b.iter(|| rt.block_on(rt.spawn(YieldN { left: WAKES })).expect("task"))
    });
    g.bench_function("main_future_wakes_itself", |b| {
        b.iter(|| rt.block_on(YieldN { left: WAKES }))
    });
    g.finish();
}

criterion_group!(benches, dispatch, task_wake);
criterion_main!(benches);
