//! W0 `nop`: N NOP operations, submitted in batches, through tally and
//! through the same loop written directly on the `io-uring` crate. This is
//! the floor: what tally's bookkeeping (op slab, packet queue, drain) costs
//! on top of the bare ring.
//!
//! * **tally**: one registration; per batch, `Registration::submit(Op::nop())`
//!   `BATCH` times, one `Reactor::turn`, then drains until the batch's
//!   completion packets are all in.
//! * **io-uring**: a ring with the same setup flags tally asks for
//!   (`SINGLE_ISSUER | DEFER_TASKRUN`, `COOP_TASKRUN | TASKRUN_FLAG`,
//!   `SUBMIT_ALL`, CQ twice the SQ); per batch, `BATCH` NOP SQEs, one
//!   `submit_and_wait(BATCH)`, and a walk of the CQ.

use std::io;
use std::time::Duration;

use io_uring::{IoUring, opcode};
use tally_reactor::{Op, PacketList, Reactor};

use super::{Config, drain_into};
use crate::harness::{Case, Engine, Run, Spec, Window};

/// NOPs per submission batch.
pub const BATCH: u64 = 32;

/// The W0 spec.
pub fn spec(cfg: Config) -> Spec {
    let count = cfg.pick(2_000_000, 20_000_000);
    Spec {
        name: "W0 nop".into(),
        unit: "ops/s",
        count,
        warmup: count / 10,
        cases: vec![Case::new(Engine::Tally, tally), Case::new(Engine::IoUring, raw)],
    }
}

fn tally(n: u64) -> io::Result<Run> {
    let reactor = Reactor::builder().entries(256).build()?;
    let reg = reactor.register();
    let mut list = PacketList::new();
    list.reserve(BATCH as usize * 2);
    let window = Window::open();
    let mut done = 0;
    while done < n {
        let batch = BATCH.min(n - done);
        for _ in 0..batch {
            reg.submit(Op::nop())?;
        }
        let mut got = 0;
        while got < batch {
            reactor.turn(Some(Duration::from_secs(1)))?;
            drain_into(&reg, &mut list);
            got += list.len() as u64;
            list.clear();
        }
        done += batch;
    }
    Ok(window.close(done))
}

fn raw(n: u64) -> io::Result<Run> {
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_submit_all()
        .setup_cqsize(512)
        .build(256)?;
    let window = Window::open();
    let mut done = 0;
    while done < n {
        let batch = BATCH.min(n - done);
        {
            let mut sq = ring.submission();
            for i in 0..batch {
                let sqe = opcode::Nop::new().build().user_data(done + i);
                // SAFETY: a NOP references no memory.
                unsafe { sq.push(&sqe) }.map_err(|_| io::Error::other("SQ full"))?;
            }
        }
        ring.submit_and_wait(batch as usize)?;
        let mut got = 0;
        for cqe in ring.completion() {
            if cqe.result() < 0 {
                return Err(io::Error::from_raw_os_error(-cqe.result()));
            }
            got += 1;
        }
        if got != batch {
            return Err(io::Error::other(format!("reaped {got} of {batch} NOPs")));
        }
        done += batch;
    }
    Ok(window.close(done))
}
