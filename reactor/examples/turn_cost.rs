//! What a crank costs: kernel entries per turn when idle and when busy, and
//! the cost of one completion dispatched through tally beside a raw
//! io-uring NOP loop in the same process.
//!
//! ```text
//! cargo run -p tally-reactor --release --example turn_cost
//! ```

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode};
use tally_reactor::{Builder, Op, PacketList, Reactor};

const BATCH: usize = 256;
/// Batches per timed round.
const BATCHES: usize = 200;
/// Rounds, each timing tally and then raw back to back; the medians are
/// reported, so that noise from other processes mostly cancels out.
const ROUNDS: usize = 61;

fn main() -> io::Result<()> {
    let reactor = Builder::new().entries(BATCH as u32).queue_cap(BATCH).build()?;
    // `turn_cost tally` or `turn_cost raw` runs one loop only, for a profiler.
    match std::env::args().nth(1).as_deref() {
        Some("tally") => {
            let ns = (0..ROUNDS)
                .map(|_| tally_nops(&reactor))
                .min_by(|a, b| a.as_ref().unwrap().total_cmp(b.as_ref().unwrap()));
            println!("tally {:.1} ns/op", ns.unwrap()?);
            return Ok(());
        }
        Some("raw") => {
            let mut raw = raw_ring()?;
            let ns = (0..ROUNDS)
                .map(|_| raw_nops(&mut raw))
                .min_by(|a, b| a.as_ref().unwrap().total_cmp(b.as_ref().unwrap()));
            println!("raw {:.1} ns/op", ns.unwrap()?);
            return Ok(());
        }
        _ => {}
    }
    println!("backend {}, features {:?}", reactor.metrics().backend, reactor.features());
    idle(&reactor)?;
    busy(&reactor, 64)?;

    let mut raw = raw_ring()?;
    let (mut tally, mut bare, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = tally_nops(&reactor)?;
        let r = raw_nops(&mut raw)?;
        tally.push(t);
        bare.push(r);
        ratio.push(t / r);
    }
    println!(
        "nop, batch {BATCH}: tally {:.1} ns/op, raw io-uring {:.1} ns/op, ratio {:.2}x \
         (thread CPU time; medians of {ROUNDS} paired rounds of {} ops; ratio quartiles \
         {:.2}..{:.2})",
        median(&mut tally),
        median(&mut bare),
        median(&mut ratio),
        BATCH * BATCHES,
        quantile(&mut ratio, 0.25),
        quantile(&mut ratio, 0.75),
    );
    Ok(())
}

/// This thread's CPU time (user + kernel on its behalf): unlike wall time,
/// it does not count the time other processes had the core.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn median(v: &mut [f64]) -> f64 {
    quantile(v, 0.5)
}

/// Turns with nothing to do and nothing in flight but the remote wake-up.
fn idle(reactor: &Reactor) -> io::Result<()> {
    reactor.turn(Some(Duration::ZERO))?; // arm the remote wake-up
    let before = reactor.metrics();
    const TURNS: u64 = 1_000_000;
    let start = Instant::now();
    for _ in 0..TURNS {
        reactor.turn(Some(Duration::ZERO))?;
    }
    let elapsed = start.elapsed();
    let after = reactor.metrics();
    println!(
        "idle: {} io_uring_enter in {TURNS} turns ({:.3} per turn), {:.1} ns per turn",
        after.enters - before.enters,
        (after.enters - before.enters) as f64 / TURNS as f64,
        elapsed.as_nanos() as f64 / TURNS as f64
    );
    Ok(())
}

/// Each turn finds `per_turn` nops queued.
fn busy(reactor: &Reactor, per_turn: usize) -> io::Result<()> {
    let reg = reactor.register();
    let mut list = PacketList::new();
    const TURNS: u64 = 20_000;
    for wait in [false, true] {
        let timeout = if wait { Some(Duration::from_secs(1)) } else { Some(Duration::ZERO) };
        let before = reactor.metrics();
        for _ in 0..TURNS {
            for _ in 0..per_turn {
                reg.submit(Op::nop())?;
            }
            reactor.turn(timeout)?;
            list.clear();
            drain_into(&reg, &mut list);
            assert_eq!(list.len(), per_turn);
        }
        let after = reactor.metrics();
        println!(
            "busy ({per_turn} nops per turn, turn({timeout:?})): {:.3} io_uring_enter per turn",
            (after.enters - before.enters) as f64 / TURNS as f64
        );
    }
    Ok(())
}

fn drain_into(reg: &tally_reactor::Registration, list: &mut PacketList) {
    let waker = std::task::Waker::noop();
    let _ = reg.poll_drain_into(&mut std::task::Context::from_waker(waker), list);
}

/// ns per nop: submit a batch, turn once, drain once.
fn tally_nops(reactor: &Reactor) -> io::Result<f64> {
    let reg = reactor.register();
    let mut list = PacketList::with_capacity(BATCH);
    let start = cpu_now();
    let mut seen = 0usize;
    for _ in 0..BATCHES {
        for _ in 0..BATCH {
            reg.submit(Op::nop())?;
        }
        reactor.turn(Some(Duration::from_secs(1)))?;
        drain_into(&reg, &mut list);
        seen += list.len();
        black_box(&list);
        list.clear();
    }
    let ns = (cpu_now() - start).as_nanos() as f64 / (BATCH * BATCHES) as f64;
    assert_eq!(seen, BATCH * BATCHES);
    Ok(ns)
}

/// A ring set up as tally's is.
fn raw_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_submit_all()
        .setup_cqsize(2 * BATCH as u32)
        .build(BATCH as u32)
        .or_else(|_| IoUring::new(BATCH as u32))
}

/// ns per nop: push a batch, submit_and_wait for all of it, reap.
fn raw_nops(ring: &mut IoUring) -> io::Result<f64> {
    let nop = opcode::Nop::new().build();
    let start = cpu_now();
    let mut seen = 0usize;
    for _ in 0..BATCHES {
        {
            let mut sq = ring.submission();
            for i in 0..BATCH {
                // SAFETY: a nop references no memory.
                unsafe { sq.push(&nop.clone().user_data(i as u64)) }.expect("SQ has room");
            }
        }
        ring.submit_and_wait(BATCH)?;
        for cqe in ring.completion() {
            black_box(cqe.user_data());
            black_box(cqe.result());
            seen += 1;
        }
    }
    let ns = (cpu_now() - start).as_nanos() as f64 / (BATCH * BATCHES) as f64;
    assert_eq!(seen, BATCH * BATCHES);
    Ok(ns)
}
