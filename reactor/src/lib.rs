//! tally's per-thread completion reactor.
//!
//! A [`Reactor`] owns a backend (io_uring, or epoll where io_uring cannot
//! start; see [`Backend`]) and a slab of [`Registration`]s. Work
//! arrives at a registration as **packets** ([`Packet`]): completions of the
//! [`Op`]s it submitted, and **counted signals**, where any number of
//! readiness edges or remote raises between two drains fold into one packet
//! with a count. A consumer drains everything queued in one call.
//!
//! * Tokens are slot + generation, so a completion for a dead registration
//!   is dropped and counted, never delivered to the slot's next occupant.
//! * Operations own their buffers and sit in the reactor's slab until their
//!   final completion: dropping a registration cancels them, and nothing is
//!   freed under the kernel.
//! * [`Signaler`] and [`Sender`] raise and send from other threads, costing
//!   at most one kernel wake-up per crank.
//! * Queues are bounded: signal packets coalesce, and data-bearing
//!   multishot operations pause until their registration is drained.
//!
//! The backend sits behind a private `sys` boundary and is chosen at run
//! time ([`Builder::backend`], or `TALLY_BACKEND=io_uring|epoll`);
//! [`Metrics::backend`] says which, and [`Metrics::fallback`] why `Auto`
//! chose epoll.
//!
//! # Example
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! use std::os::fd::AsRawFd;
//! use tally_reactor::{Reactor, Signals};
//!
//! let reactor = Reactor::new()?;
//! let (rx, tx) = std::io::pipe()?;
//! let reg = reactor.register_fd(rx.as_raw_fd(), Signals::READABLE)?;
//! for _ in 0..3 {
//!     std::io::Write::write_all(&mut &tx, b"x")?;
//!     reactor.turn(Some(std::time::Duration::from_millis(100)))?;
//! }
//! // Three readiness edges, one packet.
//! let packets = reg.try_drain();
//! let signal = packets[0].as_signal().unwrap();
//! assert!(signal.observed.contains(Signals::READABLE));
//! assert_eq!(signal.count.get(), 3);
//! # Ok(())
//! # }
//! ```

mod buffers;
mod config;
mod core;
mod metrics;
mod op;
mod reactor;
mod registration;
mod remote;
mod slab;
mod sync;
mod sys;

pub use buffers::RecvBuf;
pub use config::{Backend, Fallback};
pub use metrics::Metrics;
pub use op::{BufGroup, Cancel, Op, OpId, RawAddr, STATX_BYTES};
pub use reactor::{Builder, Reactor};
pub use registration::{Packets, Registration};
#[cfg(loom)]
#[doc(hidden)]
pub use remote::ModelReactor;
pub use remote::{RemoteWaker, Sender, Signaler};
pub use sys::Features;
/// Checks that `fd` is open and can wait for readiness, as
/// [`Reactor::register_fd`] does before it registers anything: `EBADF` for
/// a negative or closed fd, `PermissionDenied` for a directory, a block
/// device or a regular file that cannot wait. For a caller that must
/// answer bad input at once but registers later, on the reactor's own
/// thread (compat-mio's `Registry`).
///
/// # Errors
///
/// As above, or the error of `fstat`/`fstatfs`.
pub fn check_pollable(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    sys::syscall::check_pollable(fd)
}

pub use tally_packets::{
    BufferRef, CompletionPacket, Count, CountedSignal, OpTag, Packet, PacketKind, PacketList,
    ProcessSignalPacket, Raised, SignalPacket, Signals, TimerPacket, Token,
};
