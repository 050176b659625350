//! The workloads. Each module builds a [`Spec`](crate::harness::Spec): one
//! [`Case`](crate::harness::Case) per engine that can run it, each doing the
//! same counted work.
//!
//! | module | workload | engines now |
//! |---|---|---|
//! | [`nop`] | W0 `nop` | tally, io-uring |
//! | [`signal_flood`] | W1 `signal_flood` | tally, mio, tokio |
//! | [`fan_in`] | W2 `fan_in` | tally, mio, tokio |
//! | [`pingpong`] | W3 `pingpong` | tally (raw reactor), mio, tokio |
//! | [`echo`] | W4 `echo` | tally (raw reactor), mio, tokio |
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
