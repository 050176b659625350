//! W3-many `pingpong_many`: [`PAIRS`] Unix socketpairs ping-ponging at once
//! on one thread, one 64-byte message in flight per pair, bounded by the
//! total message count. Throughput is messages delivered (one way) per
//! second, over all pairs. Where W3 measures the latency of one round trip
//! through each engine, this measures how well an engine batches: each
//! crank finds up to 64 ready pairs.
//!
//! Every engine runs W3's code ([`pingpong`](super::pingpong)) over 64
//! pairs:
//!
//! * **tally**: per pair, an echo task and a driver task (W3's two loops,
//!   `tally::spawn`ed); `block_on` awaits the 64 drivers' `JoinHandle`s.
//! * **tally-epoll**: the same on an executor whose reactor is built with
//!   `Backend::Epoll`.
//! * **tally, reactor only** ("W3-many pingpong reactor-only"): W3's
//!   hand-driven loop with one registration per pair; one `turn` per crank,
//!   then a drain of each of the 64 registrations; and the same on epoll,
//!   as `tally-epoll` in that entry.
//! * **mio**: one `Poll`, all 128 ends registered `READABLE`
//!   (edge-triggered), W3's read loop on each event.
//! * **tokio**: the tally program's shape on a `current_thread` runtime:
//!   64 echo tasks and 64 driver tasks spawned, the drivers'
//!   `JoinHandle`s awaited in turn (tokio's documented way to wait for
//!   spawned tasks).
//! * **monoio**: the same on [`monoio_runtime`], with W3's owned-buffer
//!   loops.

use std::io;

use tally_reactor::Backend;

use super::pingpong::{
    mio_pairs, monoio_drive, monoio_echo, reactor_pairs, tally_drive, tally_echo, tokio_drive,
    tokio_echo,
};
use super::{Config, monoio_runtime, tally_executor_on, tokio_runtime};
use crate::harness::{Case, Engine, Run, Spec, Window};

/// Socketpairs in play at once.
pub const PAIRS: usize = 64;

/// The W3-many spec. The count is messages delivered in all, a multiple of
/// two per pair (each pair does the same number of round trips).
pub fn spec(cfg: Config) -> Spec {
    let step = 2 * PAIRS as u64;
    let count = cfg.pick(200_000, 1_000_000) / step * step;
    Spec {
        name: "W3-many pingpong".into(),
        unit: "msgs/s",
        count,
        warmup: count / 10 / step * step,
        cases: vec![
            Case::new(Engine::Tally, |n| tally_executor(n, Backend::Auto)),
            Case::new(Engine::TallyEpoll, |n| tally_executor(n, Backend::Epoll)),
            Case::new(Engine::TallyReactor, |n| reactor_pairs(PAIRS, n, Backend::Auto)),
            Case::new(Engine::TallyReactorEpoll, |n| reactor_pairs(PAIRS, n, Backend::Epoll)),
            Case::new(Engine::Mio, |n| mio_pairs(PAIRS, n)),
            Case::new(Engine::Tokio, tokio),
            Case::new(Engine::Monoio, monoio),
        ],
    }
}

/// Round trips per pair for `n` messages in all.
fn rounds(n: u64) -> u64 {
    n / 2 / PAIRS as u64
}

fn joined<E: std::fmt::Debug>(r: Result<io::Result<u64>, E>) -> io::Result<u64> {
    r.map_err(|e| io::Error::other(format!("a driver task failed: {e:?}")))?
}

fn tally_executor(n: u64, backend: Backend) -> io::Result<Run> {
    let rt = tally_executor_on(backend)?;
    rt.block_on(async {
        let rounds = rounds(n);
        let mut drivers = Vec::with_capacity(PAIRS);
        let mut echoes = Vec::with_capacity(PAIRS);
        for _ in 0..PAIRS {
            let (a, b) = tally::net::UnixStream::pair()?;
            echoes.push(tally::spawn(tally_echo(b)));
            drivers.push(tally::spawn(tally_drive(a, rounds)));
        }
        // The tasks first run when this one awaits: the pairs' set-up
        // stays outside the window.
        let window = Window::open();
        let mut done = 0;
        for d in drivers {
            done += joined(d.await)?;
        }
        let run = window.close(done * 2);
        for e in echoes {
            let _ = e.await;
        }
        Ok(run)
    })
}

fn tokio(n: u64) -> io::Result<Run> {
    let rt = tokio_runtime()?;
    rt.block_on(async {
        let rounds = rounds(n);
        let mut drivers = Vec::with_capacity(PAIRS);
        let mut echoes = Vec::with_capacity(PAIRS);
        for _ in 0..PAIRS {
            let (a, b) = tokio::net::UnixStream::pair()?;
            echoes.push(tokio::spawn(tokio_echo(b)));
            drivers.push(tokio::spawn(tokio_drive(a, rounds)));
        }
        // The tasks first run when this one awaits: the pairs' set-up
        // stays outside the window.
        let window = Window::open();
        let mut done = 0;
        for d in drivers {
            done += joined(d.await)?;
        }
        let run = window.close(done * 2);
        for e in echoes {
            let _ = e.await;
        }
        Ok(run)
    })
}

fn monoio(n: u64) -> io::Result<Run> {
    let mut rt = monoio_runtime()?;
    rt.block_on(async {
        let rounds = rounds(n);
        let mut drivers = Vec::with_capacity(PAIRS);
        let mut echoes = Vec::with_capacity(PAIRS);
        for _ in 0..PAIRS {
            let (a, b) = monoio::net::UnixStream::pair()?;
            echoes.push(monoio::spawn(monoio_echo(b)));
            drivers.push(monoio::spawn(monoio_drive(a, rounds)));
        }
        // The tasks first run when this one awaits: the pairs' set-up
        // stays outside the window.
        let window = Window::open();
        let mut done = 0;
        for d in drivers {
            done += d.await?;
        }
        let run = window.close(done * 2);
        for e in echoes {
            e.await;
        }
        Ok(run)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_splits_evenly_over_the_pairs() {
        for quick in [true, false] {
            let s = spec(Config { quick, fd_limit: 1024 });
            assert_eq!(s.count % (2 * PAIRS as u64), 0);
            assert_eq!(s.warmup % (2 * PAIRS as u64), 0);
            assert_eq!(rounds(s.count) * 2 * PAIRS as u64, s.count);
        }
        assert_eq!(super::super::pingpong::MSG, 64);
    }

    #[test]
    fn its_targets_name_this_workload() {
        let name = spec(Config { quick: true, fd_limit: 1024 }).name;
        let keys: Vec<&str> =
            crate::report::TARGETS.iter().filter(|t| t.0 == name).map(|t| t.1).collect();
        assert_eq!(keys, ["tally/mio", "tally/tokio"]);
    }

    #[test]
    fn every_engine_delivers_the_count() {
        let n = 2 * PAIRS as u64 * 10;
        for mut case in spec(Config { quick: true, fd_limit: 1024 }).cases {
            let run = (case.run)(n).unwrap();
            assert_eq!(run.events, n, "{:?}", case.engine);
        }
    }
}
