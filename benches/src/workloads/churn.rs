//! W5 `churn`: register and deregister while N other registrations stay
//! live, for N = 1k, 10k, 100k and 1M (N = 1k and 10k for `churn-fd`). Throughput is register + deregister
//! cycles per second; tally's throughput at 1M over its throughput at 1k is
//! reported as `ratios["1M/1k"]` (1.0: the cost does not grow with N).
//!
//! A cycle is a short-lived registration coming and going (a connection
//! accepted and closed) next to N long-lived ones: the N are made before
//! the run and not touched during it.
//!
//! * **tally**: N `Reactor::register()` registrations held; a cycle is
//!   `register()` and dropping the `Registration`. No fd and no kernel
//!   object is involved, so this pattern is labelled `W5 churn (fd-less)`:
//!   it sets tally's bookkeeping against mio's and tokio's `epoll_ctl`
//!   pair, which is different work.
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
//! A third pattern, `churn-fd`, is the like-for-like one: tally holds N
//! `Reactor::register_fd(eventfd, Signals::READABLE)` registrations (N
//! multishot polls armed in the kernel), and a cycle is `register_fd` of the
//! next pool eventfd, one `turn(Some(ZERO))`, and dropping the
//! `Registration`. The turn belongs in the cycle: `register_fd` only queues
//! the poll, and the reactor submits at its next turn, so without it the
//! arm would never reach the kernel inside the window (and a dropped, never
//! submitted poll would cost nothing). One turn per cycle submits this
//! cycle's poll together with the previous cycle's cancel, and reaps what
//! has completed: one kernel entry per cycle, where mio makes two
//! `epoll_ctl` calls. After the last cycle, still inside the window, the
//! reactor is turned until the registrations and ops in flight are back to
//! their count before the window (a run that does not get there fails). mio
//! and tokio run the `churn` cycle, which is already fd-based. Engines:
//! tally, tally-epoll (the same code on `Backend::Epoll`), mio, tokio.
//!
//! mio and tokio need one fd per registration. Sizes past the fd limit
//! (`compare` raises `RLIMIT_NOFILE` as far as it may) are left out for them
//! and listed as not measured.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};
use tally_reactor::{Backend, Reactor, Registration, Signals};
use tokio::io::unix::AsyncFd;

use super::{Config, tally_reactor_on, tokio_runtime};
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
    /// A fresh fd registration (a multishot poll armed and cancelled); the
    /// N are fd registrations too.
    Fd,
}

impl Pattern {
    /// The workload name's stem.
    pub fn stem(self) -> &'static str {
        match self {
            Pattern::Fresh => "W5 churn (fd-less)",
            Pattern::Random => "W5 churn-random",
            Pattern::Fd => "W5 churn-fd",
        }
    }

    /// The live sizes this pattern runs at: all of [`SIZES`], or 1k and
    /// 10k for [`Pattern::Fd`] (one eventfd per registration for every
    /// engine).
    pub fn sizes(self) -> &'static [(usize, &'static str)] {
        match self {
            Pattern::Fresh | Pattern::Random => &SIZES,
            Pattern::Fd => &SIZES[..2],
        }
    }
}

/// One spec per size in [`SIZES`], and a line for each size an fd-based
/// engine cannot reach under the fd limit.
pub fn specs(cfg: Config, pattern: Pattern) -> (Vec<Spec>, Vec<String>) {
    let count = match pattern {
        Pattern::Fresh => cfg.pick(200_000, 2_000_000),
        Pattern::Random | Pattern::Fd => cfg.pick(100_000, 1_000_000),
    };
    let stem = pattern.stem();
    let mut absent = Vec::new();
    let specs = pattern
        .sizes()
        .iter()
        .map(|&(live, label)| {
            let fits = (live + POOL + SPARE_FDS) as u64 <= cfg.fd_limit;
            let mut cases = Vec::new();
            if pattern == Pattern::Fd {
                // tally needs the fds too: a size past the limit is left
                // out for every engine.
                if fits {
                    cases.push(Case::new(Engine::Tally, move |n| tally_fd(live, n, Backend::Auto)));
                    cases.push(Case::new(Engine::TallyEpoll, move |n| {
                        tally_fd(live, n, Backend::Epoll)
                    }));
                }
            } else {
                cases.push(Case::new(Engine::Tally, move |n| tally(live, n, pattern)));
            }
            if fits {
                cases.push(Case::new(Engine::Mio, move |n| mio(live, n, pattern)));
                cases.push(Case::new(Engine::Tokio, move |n| tokio(live, n, pattern)));
            } else {
                let who = if pattern == Pattern::Fd { "all engines" } else { "mio and tokio" };
                absent.push(format!(
                    "{stem} {label}, {who}: {} fds needed, RLIMIT_NOFILE is {} \
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
        Pattern::Fd => unreachable!("churn-fd runs tally_fd"),
    }
    let run = window.close(n);
    drop(regs);
    Ok(run)
}

/// Turns `reactor` without blocking until its registrations and ops in
/// flight are back to `base`'s, at most [`SETTLE_TURNS`] times.
///
/// # Errors
///
/// An error from `turn`, or `Other` if the reactor does not get back to
/// `base` in that many turns: something piled up.
fn settle(reactor: &Reactor, base: &tally_reactor::Metrics) -> io::Result<()> {
    for _ in 0..SETTLE_TURNS {
        let m = reactor.metrics();
        if m.registrations == base.registrations && m.ops_in_flight == base.ops_in_flight {
            return Ok(());
        }
        reactor.turn(Some(Duration::ZERO))?;
    }
    let m = reactor.metrics();
    Err(io::Error::other(format!(
        "after {SETTLE_TURNS} turns: {} registrations and {} ops in flight, {} and {} before",
        m.registrations, m.ops_in_flight, base.registrations, base.ops_in_flight
    )))
}

/// Turns [`settle`] may take.
const SETTLE_TURNS: usize = 1_000;

/// churn-fd's tally cycle: `register_fd` of a pool eventfd, one
/// non-blocking turn (which submits the poll, and the previous cycle's
/// cancel), and dropping the `Registration`, next to `live` held fd
/// registrations; then [`settle`], inside the window.
fn tally_fd(live: usize, n: u64, backend: Backend) -> io::Result<Run> {
    let fds = fds(live + POOL)?;
    let raws: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let (held, pool) = raws.split_at(live);
    let reactor = tally_reactor_on(backend)?;
    let regs = held
        .iter()
        .map(|&fd| reactor.register_fd(fd, Signals::READABLE))
        .collect::<io::Result<Vec<Registration>>>()?;
    reactor.turn(Some(Duration::ZERO))?;
    let base = reactor.metrics();
    let window = Window::open();
    for k in 0..n as usize {
        let reg = reactor.register_fd(pool[k % POOL], Signals::READABLE)?;
        reactor.turn(Some(Duration::ZERO))?;
        drop(reg);
    }
    settle(&reactor, &base)?;
    let run = window.close(n);
    super::debug_metrics("W5 churn-fd", &reactor);
    drop(regs);
    drop(reactor);
    drop(fds);
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
            Pattern::Fresh | Pattern::Fd => (&pool[k % POOL], Token(live + k % POOL)),
            Pattern::Random => {
                let i = rng.below(live);
                registry.deregister(&mut SourceFd(&held[i]))?;
                (&held[i], Token(i))
            }
        };
        registry.register(&mut SourceFd(fd), token, Interest::READABLE)?;
        if pattern != Pattern::Random {
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
                Pattern::Fresh | Pattern::Fd => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_fd_runs_its_four_engines_at_1k_and_10k() {
        let (specs, absent) = specs(Config { quick: true, fd_limit: 20_000 }, Pattern::Fd);
        assert!(absent.is_empty());
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["W5 churn-fd 1k", "W5 churn-fd 10k"]);
        for s in &specs {
            let engines: Vec<Engine> = s.cases.iter().map(|c| c.engine).collect();
            assert_eq!(engines, [Engine::Tally, Engine::TallyEpoll, Engine::Mio, Engine::Tokio]);
        }
    }

    #[test]
    fn the_fd_less_pattern_says_so() {
        let (specs, _) = specs(Config { quick: true, fd_limit: 20_000 }, Pattern::Fresh);
        let name = &specs.last().unwrap().name;
        assert_eq!(name, "W5 churn (fd-less) 1M");
        assert!(crate::report::TARGETS.iter().any(|t| t.0 == name && t.1 == "1M/1k"));
        let (fd, _) = super::specs(Config { quick: true, fd_limit: 20_000 }, Pattern::Fd);
        for s in &fd {
            assert!(crate::report::TARGETS.iter().any(|t| t.0 == s.name && t.1 == "tally/mio"));
        }
    }

    #[test]
    fn a_tally_fd_cycle_leaves_the_reactor_as_it_found_it() {
        for backend in [Backend::Auto, Backend::Epoll] {
            let run = tally_fd(100, 1_000, backend).unwrap();
            assert_eq!(run.events, 1_000);
        }
    }
}
