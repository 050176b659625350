//! [`Metrics`]: a snapshot of what a reactor has done.

use crate::config::{Backend, Fallback};

/// Counters since the reactor was built, plus a few gauges.
///
/// Cumulative counters only grow. Take two snapshots and subtract to
/// measure a stretch of work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// The backend in use: [`Backend::IoUring`] or [`Backend::Epoll`].
    pub backend: Backend,
    /// Why [`Backend::Auto`] chose epoll, if it had to.
    pub fallback: Option<Fallback>,
    /// Calls to `turn`.
    pub turns: u64,
    /// Kernel entries (`io_uring_enter` or `epoll_wait` calls): the one a `turn` makes,
    /// plus any made to flush a full submission queue or an overflowed
    /// completion queue.
    pub enters: u64,
    /// Operations submitted (user operations and internal re-arms).
    pub submissions: u64,
    /// Completions reaped.
    pub completions: u64,
    /// Packets handed to consumers by drains.
    pub packets: u64,
    /// Completions whose token named no live operation: dropped, never
    /// delivered to a newer occupant of the slot.
    pub stale_completions: u64,
    /// Completions reclaimed instead of delivered: those of cancelled
    /// operations (whose registration was dropped, or which were cancelled
    /// by hand), and completions still queued when their registration was
    /// dropped. Fds they carried were closed and buffers returned.
    pub reclaimed: u64,
    /// Remote notifications whose registration was gone.
    pub stale_notifications: u64,
    /// Raises (remote or readiness edges) folded into a signal packet that
    /// another raise had already opened: `count - 1` summed over packets.
    pub coalesced_raises: u64,
    /// Registrations woken in one crank and still holding packets at the
    /// start of the next.
    pub undrained: u64,
    /// Times the completion queue overflowed and had to be flushed.
    pub cq_overflows: u64,
    /// Completions queued past a registration's `queue_cap`: kept (nothing
    /// is dropped), and the multishot operation that produced them is
    /// paused until the registration is drained.
    pub queue_overflows: u64,
    /// Kernel wake-ups (eventfd writes) made by other threads.
    pub kernel_wakes: u64,
    /// Live registrations.
    pub registrations: usize,
    /// Operations the kernel still holds.
    pub ops_in_flight: usize,
}

/// The reactor-thread half of the counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) turns: u64,
    pub(crate) submissions: u64,
    pub(crate) completions: u64,
    pub(crate) packets: u64,
    pub(crate) stale_completions: u64,
    pub(crate) reclaimed: u64,
    pub(crate) stale_notifications: u64,
    pub(crate) coalesced_raises: u64,
    pub(crate) undrained: u64,
    pub(crate) cq_overflows: u64,
    pub(crate) queue_overflows: u64,
}
