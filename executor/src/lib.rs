//! tally: a Linux async runtime whose core is a completion-based reactor
//! with counted-signal readiness.
//!
//! A readiness reactor says "this fd can be read now" and leaves the rest to
//! you. tally delivers *packets*: "this operation finished, here is its
//! result", or, for signal-style sources, "these bits were raised, N times
//! since you last looked". A flood of events between two looks costs one
//! wake-up and one packet, and the count tells the consumer how much work
//! is waiting.
//!
//! This crate is what users depend on:
//!
//! * [`LocalReactor`]: a per-thread reactor plus a task executor, with
//!   [`spawn`], [`LocalReactor::block_on`] and [`JoinHandle`];
//! * [`task`]: [`task::spawn_blocking`], closures run on a pool of threads;
//! * [`fs`]: files with positional I/O on owned buffers, ring operations
//!   on io_uring and the blocking pool on epoll;
//! * [`time`]: sleeps, timeouts and intervals, one kernel timeout per crank;
//! * [`net`]: TCP, UDP and Unix sockets with `futures-io` traits (and, with
//!   the `tokio-io` feature, tokio's `AsyncRead`/`AsyncWrite`, so tokio-util
//!   codecs run on them);
//! * [`signal`]: process signals as counted packets;
//! * [`process`]: child processes, their exits as packets (pidfd) and their
//!   stdin/stdout/stderr as pipe streams;
//! * `hyper` (with the `hyper` feature): hyper 1.x's `rt` traits for the
//!   streams, an executor and a timer, so hyper's HTTP/1 server runs on a
//!   `LocalReactor`;
//! * [`Runtime`]: a `LocalReactor` per worker thread, spawned onto from any
//!   thread through a [`Handle`];
//! * [`TestExecutor`]: fake time and `run_until_stalled`;
//! * registrations, [`Signaler`]s and [`Sender`]s, re-exported from
//!   `tally-reactor`, for raw packet lists.
//!
//! # Example
//!
//! ```
//! use tally::{LocalReactor, Signals};
//!
//! let rt = LocalReactor::new().unwrap();
//! let reg = rt.register();
//! let signaler = reg.signaler();
//! let producer = std::thread::spawn(move || {
//!     for _ in 0..10_000 {
//!         let _ = signaler.raise(Signals::user(0), 1).unwrap();
//!     }
//! });
//! let seen = rt.block_on(async {
//!     let mut seen = 0;
//!     while seen < 10_000 {
//!         for packet in reg.packets().await {
//!             seen += packet.as_signal().unwrap().count.get();
//!         }
//!     }
//!     seen
//! });
//! producer.join().unwrap();
//! assert_eq!(seen, 10_000);
//! ```

mod blocking;
mod context;
mod executor;
pub mod fs;
#[cfg(feature = "hyper")]
pub mod hyper;
#[cfg(all(test, loom))]
mod loom_model;
pub mod net;
pub mod process;
pub mod runtime;
pub mod signal;
mod sync;
mod sys;
pub mod task;
mod test_executor;
pub mod time;
mod timers;

pub use executor::{Builder, LocalReactor, reactor, spawn};
pub use runtime::{Handle, RemoteHandle, Runtime, RuntimeError, SignalReceiver, WorkerStats};
pub use task::{JoinError, JoinHandle};
pub use test_executor::TestExecutor;

pub use tally_reactor::{
    Backend, BufGroup, BufferRef, CompletionPacket, Count, CountedSignal, Fallback, Metrics, Op,
    OpId, OpTag, Packet, PacketKind, PacketList, Packets, ProcessSignalPacket, Raised, Reactor,
    RecvBuf, Registration, RemoteWaker, Sender, SignalPacket, Signaler, Signals, TimerPacket,
    Token,
};
