//! W5 `churn`: register and deregister while N other registrations stay
//! live, for N = 1k, 10k, 100k and 1M. Throughput is register + deregister
//! cycles per second; tally's throughput at 1M over its throughput at 1k is
//! reported as `ratios["1M/1k"]` (1.0: the cost does not grow with N).
//!
//! A cycle is a short-lived registration coming and going (a connection
//! accepted and closed) next to N long-lived ones: the N are made before
//! the run and not touched during it.
//!
//! * **tally**: N `Reactor::register()` registrations held; a cycle is
//!   `register()` and dropping the `Registration`.
//! * **mio**: N eventfds registered `READABLE` with one `Poll`, plus a pool
//!   of [`POOL`] more, all created before the run (fd creation is not
//!   measured); a cycle is `Registry::register` and `Registry::deregister`
//!   of the next pool fd (`epoll_ctl` ADD + DEL on an interest set of N).
//! * **tokio**: the same, with `AsyncFd`s on a `current_thread` runtime; a
//!   cycle builds an `AsyncFd` for the next pool fd and unwraps it again
//!   (`into_inner` deregisters).
//!
//! A second pattern, `churn-random`, replaces a long-lived registration
//! picked at random instead: the cycle then lands anywhere in a table of N,
//! so it shows what the size of each slot costs in cache and TLB misses.
//! mio and tokio deregister and re-register one of their N fds.
//!
//! mio and tokio need one fd per registration. Sizes past the fd limit
//! (`compare` raises `RLIMIT_NOFILE` as far as it may) are left out for them
//! and listed as not measured.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};
use tally_reactor::{Reactor, Registration};
use tokio::io::unix::AsyncFd;

use super::{Config, tokio_runtime};
use crate::harness::{Case, Engine, Run, Spec, Window};
use crate::sys;

/// The live sizes, with their labels.
pub const SIZES: [(usize, &str); 4] =
    [(1_000, "1k"), (10_000, "10k"), (100_000, "100k"), (1_000_000, "1M")];

/// Pool fds that mio and tokio register and deregister in turn.
pub const POOL: usize = 64;

/// Fds a process needs besides the registrations (stdio, rings, epoll,
/// runtime internals), with room to spare.
const SPARE_FDS: usize = 200;

/// Which registrations a cycle touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// A fresh registration, made and dropped; the N stay untouched.
    Fresh,
    /// One of the N, picked at random, replaced.
    Random,
}

impl Pattern {
    /// The workload name's stem.
    pub fn stem(self) -> &'static str {
        match self {
            Pattern::Fresh => "W5 churn",
            Pattern::Random => "W5 churn-random",
        }
    }
}

/// One spec per size in [`SIZES`], and a line for each size an fd-based
/// engine cannot reach under the fd limit.
pub fn specs(cfg: Config, pattern: Pattern) -> (Vec<Spec>, Vec<String>) {
    let count = match pattern {
        Pattern::Fresh => cfg.pick(200_000, 2_000_000),
        Pattern::Random => cfg.pick(100_000, 1_000_000),
    };
    let stem = pattern.stem();
    let mut absent = Vec::new();
    let specs = SIZES
        .iter()
        .map(|&(live, label)| {
            let mut cases = vec![Case::new(Engine::Tally, move |n| tally(live, n, pattern))];
            if (live + POOL + SPARE_FDS) as u64 <= cfg.fd_limit {
                cases.push(Case::new(Engine::Mio, move |n| mio(live, n, pattern)));
                cases.push(Case::new(Engine::Tokio, move |n| tokio(live, n, pattern)));
            } else {
                absent.push(format!(
                    "{stem} {label}, mio and tokio: {} fds needed, RLIMIT_NOFILE is {} \
                     (raising the hard limit needs CAP_SYS_RESOURCE)",
                    live + POOL,
                    cfg.fd_limit
                ));
            }
            let name = format!("{stem} {label}");
            Spec { name, unit: "cycles/s", count, warmup: count / 10, cases }
        })
        .collect();
    (specs, absent)
}

/// xorshift64*: cheap, deterministic, good enough to scatter indices.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        Rng(0x9e37_79b9_7f4a_7c15)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (((x >> 32) * n as u64) >> 32) as usize
    }
}

fn tally(live: usize, n: u64, pattern: Pattern) -> io::Result<Run> {
    let reactor = Reactor::new()?;
    let mut regs: Vec<Registration> = (0..live).map(|_| reactor.register()).collect();
    let mut rng = Rng::new();
    let window = Window::open();
    match pattern {
        Pattern::Fresh => {
            for _ in 0..n {
                drop(std::hint::black_box(reactor.register()));
            }
        }
        Pattern::Random => {
            for _ in 0..n {
                let i = rng.below(live);
                regs[i] = reactor.register();
            }
        }
    }
    let run = window.close(n);
    drop(regs);
    Ok(run)
}

/// `live` eventfds, or an error naming the fd limit.
fn fds(live: usize) -> io::Result<Vec<OwnedFd>> {
    let (fds, err) = sys::eventfds(live);
    match err {
        None => Ok(fds),
        Some(e) => Err(io::Error::new(
            e.kind(),
            format!("only {} of {live} eventfds could be opened ({e})", fds.len()),
        )),
    }
}

fn mio(live: usize, n: u64, pattern: Pattern) -> io::Result<Run> {
    let fds = fds(live + POOL)?;
    let raws: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let (held, pool) = raws.split_at(live);
    let poll = Poll::new()?;
    let registry = poll.registry();
    for (i, fd) in held.iter().enumerate() {
        registry.register(&mut SourceFd(fd), Token(i), Interest::READABLE)?;
    }
    let mut rng = Rng::new();
    let window = Window::open();
    for k in 0..n as usize {
        let (fd, token) = match pattern {
            Pattern::Fresh => (&pool[k % POOL], Token(live + k % POOL)),
            Pattern::Random => {
                let i = rng.below(live);
                registry.deregister(&mut SourceFd(&held[i]))?;
                (&held[i], Token(i))
            }
        };
        registry.register(&mut SourceFd(fd), token, Interest::READABLE)?;
        if pattern == Pattern::Fresh {
            registry.deregister(&mut SourceFd(fd))?;
        }
    }
    let run = window.close(n);
    drop(poll);
    drop(fds);
    Ok(run)
}

/// An fd borrowed by number, for `AsyncFd`.
#[derive(Debug, Clone, Copy)]
pub struct Borrowed(pub RawFd);

impl AsRawFd for Borrowed {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Registers `fd` with the current tokio runtime for readability.
///
/// # Safety
///
/// `fd` must stay open, naming the same file, until the `AsyncFd` is
/// dropped or unwrapped.
pub(crate) unsafe fn async_fd(fd: Borrowed) -> io::Result<AsyncFd<Borrowed>> {
    // SAFETY: forwarded from this function's contract.
    Ok(unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?)
}

fn tokio(live: usize, n: u64, pattern: Pattern) -> io::Result<Run> {
    let fds = fds(live + POOL)?;
    let raws: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let (held, pool) = raws.split_at(live);
    let rt = tokio_runtime()?;
    let run = rt.block_on(async {
        let mut afds: Vec<Option<AsyncFd<Borrowed>>> = Vec::with_capacity(live);
        for &fd in held {
            // SAFETY: `fds` owns every eventfd and outlives `afds`.
            afds.push(Some(unsafe { async_fd(Borrowed(fd)) }?));
        }
        let mut rng = Rng::new();
        let window = Window::open();
        for k in 0..n as usize {
            match pattern {
                Pattern::Fresh => {
                    // SAFETY: as above; the AsyncFd is unwrapped at once.
                    let afd = unsafe { async_fd(Borrowed(pool[k % POOL])) }?;
                    std::hint::black_box(afd.into_inner());
                }
                Pattern::Random => {
                    let i = rng.below(live);
                    let fd = afds[i].take().map_or(Borrowed(held[i]), AsyncFd::into_inner);
                    // SAFETY: as above.
                    afds[i] = Some(unsafe { async_fd(fd) }?);
                }
            }
        }
        let run = window.close(n);
        drop(afds);
        Ok::<Run, io::Error>(run)
    })?;
    drop(rt);
    drop(fds);
    Ok(run)
}
