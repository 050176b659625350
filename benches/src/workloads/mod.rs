//! The workloads. Each module builds a [`Spec`](crate::harness::Spec): one
//! [`Case`](crate::harness::Case) per engine that can run it, each doing the
//! same counted work.
//!
//! | module | workload | engines now |
//! |---|---|---|
//! | [`nop`] | W0 `nop` | tally, io-uring |
//! | [`signal_flood`] | W1 `signal_flood` | tally, tally-epoll, mio, tokio |
//! | [`fan_in`] | W2 `fan_in` | tally, tally-epoll, mio, tokio |
//! | [`pingpong`] | W3 `pingpong` | tally (executor, and raw reactor), tally-epoll (executor, and raw reactor), mio, tokio, monoio |
//! | [`pingpong_many`] | W3-many (`--only W3M`): 64 pairs at once | tally (executor, and raw reactor), tally-epoll (executor, and raw reactor), mio, tokio, monoio |
//! | [`echo`] | W4 `echo` | tally (executor, and raw reactor), tally-epoll (executor), mio, tokio, monoio |
//! | [`echo_mt`] | W4 `echo 2-workers` (`--only W4MT`): every server on 2 threads | tally (`Runtime`, 2 workers), tokio (`multi_thread`, 2 workers), monoio (a runtime per thread) |
//! | [`churn`] | W5 `churn (fd-less)`, `churn-random` | tally, mio, tokio |
//! | [`churn`] | W5 `churn-fd` | tally, tally-epoll, mio, tokio |
//! | [`timers`] | W6 `timers` | tally, tally-epoll, mio, tokio |
//! | [`http`] | W7 `http`: hyper's hello world, 64 keep-alive connections | tally, tally-epoll, tokio |
//! | [`file`](mod@file) | W8 `file`: 4 KiB random reads of a cached file, 64 in flight | tally, tally-epoll, tokio, pread |
//! | [`footprint`] | bytes per idle registration | tally, mio, tokio |
//!
//! A `tally-epoll` case is its workload's `tally` case, the same code, on a
//! reactor built with [`Backend::Epoll`]: [`tally_reactor_on`] and
//! [`tally_executor_on`] build it and check, from its metrics, that it
//! really runs on epoll. The `tally` cases keep the reactor's default,
//! [`Backend::Auto`].

pub mod churn;
pub mod echo;
pub mod echo_mt;
pub mod fan_in;
pub mod file;
pub mod footprint;
pub mod http;
pub mod nop;
pub mod pingpong;
pub mod pingpong_many;
pub mod signal_flood;
pub mod timers;

use std::io;
use std::task::{Context, Waker};

use tally_reactor::{Backend, PacketList, Reactor, Registration};

/// How big a run is: `--quick` (under two minutes on two cores) or full
/// (under fifteen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Whether this is a `--quick` run.
    pub quick: bool,
    /// The soft `RLIMIT_NOFILE` in force: engines that need one fd per
    /// registration stop short of it.
    pub fd_limit: u64,
}

impl Config {
    /// Picks the quick or the full size.
    pub fn pick(self, quick: u64, full: u64) -> u64 {
        if self.quick { quick } else { full }
    }

    /// Interleaved repetitions per case.
    pub fn reps(self) -> usize {
        if self.quick { 3 } else { 7 }
    }
}

/// Moves everything queued for `reg` into `out`, keeping `out`'s
/// allocation, without storing a waker that anyone will call: a plain
/// non-blocking drain for loops that turn the reactor themselves.
///
/// `Registration::try_drain` would do, but it returns a fresh
/// `PacketList`, which allocates once more than four packets are queued.
pub fn drain_into(reg: &Registration, out: &mut PacketList) {
    let mut cx = Context::from_waker(Waker::noop());
    let _ = reg.poll_drain_into(&mut cx, out);
}

/// A tally reactor with default settings on `backend`.
///
/// # Errors
///
/// As [`tally_reactor::Builder::build`].
///
/// # Panics
///
/// As [`assert_backend`]: an explicit backend that the reactor's metrics
/// do not report.
pub fn tally_reactor_on(backend: Backend) -> io::Result<Reactor> {
    let reactor = Reactor::builder().backend(backend).build()?;
    assert_backend(backend, &reactor.metrics());
    Ok(reactor)
}

/// A `tally::LocalReactor` (the executor) with default settings, on a
/// reactor on `backend`.
///
/// # Errors
///
/// As [`tally::Builder::build`].
///
/// # Panics
///
/// As [`assert_backend`].
pub fn tally_executor_on(backend: Backend) -> io::Result<tally::LocalReactor> {
    let rt = tally::LocalReactor::builder()
        .reactor(tally_reactor::Builder::new().backend(backend))
        .build()?;
    assert_backend(backend, &rt.metrics());
    Ok(rt)
}

/// Checks, once per run's set-up and outside its measured window, that a
/// reactor asked for an explicit backend is on it, so that a `tally-epoll`
/// figure can never come from io_uring. [`Backend::Auto`] is not checked:
/// it is whatever the reactor chose.
///
/// # Panics
///
/// When `wanted` is explicit and `metrics.backend` is another: a reactor
/// that ignores its builder is a bug to stop on, not a case to drop.
pub fn assert_backend(wanted: Backend, metrics: &tally_reactor::Metrics) {
    if wanted != Backend::Auto {
        assert_eq!(
            metrics.backend, wanted,
            "a reactor built with Backend::{wanted:?} reports Backend::{:?} in its metrics",
            metrics.backend
        );
    }
}

/// A current-thread tokio runtime with I/O and time enabled.
///
/// # Errors
///
/// The runtime's I/O driver cannot be created.
pub fn tokio_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// The monoio runtime W3 and W4 run on: monoio's own io_uring driver
/// (`IoUringDriver`, default 1024 entries), with its timer enabled as the
/// tokio runtime has (W4's deadline needs it). A monoio runtime is always
/// current-thread.
pub type MonoioRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

/// A [`MonoioRuntime`].
///
/// # Errors
///
/// The io_uring instance cannot be created (an old kernel, or io_uring
/// disabled by `kernel.io_uring_disabled`).
pub fn monoio_runtime() -> io::Result<MonoioRuntime> {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build()
}

/// `Poll::poll`, retried when a signal interrupts it (`EINTR`), as every
/// mio loop must.
///
/// # Errors
///
/// Any other error from `epoll_wait`.
pub fn mio_poll(
    poll: &mut mio::Poll,
    events: &mut mio::Events,
    timeout: Option<std::time::Duration>,
) -> io::Result<()> {
    loop {
        match poll.poll(events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// With `COMPARE_METRICS=1` in the environment, prints a tally reactor's
/// metrics after a run (on stderr): turns, kernel entries, remote kicks.
pub fn debug_metrics(what: &str, reactor: &tally_reactor::Reactor) {
    if std::env::var_os("COMPARE_METRICS").is_some() {
        eprintln!("\n{what}: {:?}", reactor.metrics());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoll_reactor_and_executor_say_epoll() {
        let reactor = tally_reactor_on(Backend::Epoll).unwrap();
        assert_eq!(reactor.metrics().backend, Backend::Epoll);
        let rt = tally_executor_on(Backend::Epoll).unwrap();
        assert_eq!(rt.metrics().backend, Backend::Epoll);
    }

    #[test]
    #[should_panic(expected = "reports Backend::IoUring")]
    fn a_backend_other_than_the_one_asked_for_panics() {
        let mut metrics = tally_reactor::Metrics::default();
        metrics.backend = Backend::IoUring;
        assert_backend(Backend::Epoll, &metrics);
    }

    #[test]
    fn auto_is_not_checked() {
        let mut metrics = tally_reactor::Metrics::default();
        metrics.backend = Backend::IoUring;
        assert_backend(Backend::Auto, &metrics);
    }
}
