//! The workloads. Each module builds a [`Spec`](crate::harness::Spec): one
//! [`Case`](crate::harness::Case) per engine that can run it, each doing the
//! same counted work.
//!
//! | module | workload | engines now |
//! |---|---|---|
//! | [`nop`] | W0 `nop` | tally, io-uring |
//! | [`signal_flood`] | W1 `signal_flood` | tally, mio, tokio |
//! | [`fan_in`] | W2 `fan_in` | tally, mio, tokio |
//! | [`pingpong`] | W3 `pingpong` | tally (raw reactor), mio, tokio, monoio |
//! | [`echo`] | W4 `echo` | tally (raw reactor), mio, tokio, monoio |
//! | [`churn`] | W5 `churn` | tally, mio, tokio |
//! | [`timers`] | W6 `timers` | mio, tokio (tally waits for the executor) |
//! | [`footprint`] | bytes per idle registration | tally, mio, tokio |

pub mod churn;
pub mod echo;
pub mod fan_in;
pub mod footprint;
pub mod nop;
pub mod pingpong;
pub mod signal_flood;
pub mod timers;

use std::io;
use std::task::{Context, Waker};

use tally_reactor::{PacketList, Registration};

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
