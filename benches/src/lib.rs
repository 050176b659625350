//! Benchmarks for tally: Criterion micro-benches of the hot operations
//! (`benches/`), and the `compare` binary, which runs tally (on io_uring,
//! and on W1 to W4, W6 and W7 also on its epoll backend), a hand-written mio
//! readiness loop, tokio and (on W3 and W4) monoio side by side on named
//! workloads and prints tally's throughput ratios.
//!
//! This library holds what `compare` is made of:
//!
//! * [`harness`]: the method (warm-up, interleaved repetitions, counted
//!   runs, a measuring [`Window`](harness::Window));
//! * [`workloads`]: W0 to W7, one module each, every engine's side of each;
//! * [`echo_client`]: the separate client process of W4;
//! * [`http_client`]: the separate client process of W7;
//! * [`tokio_on_tally`]: the `tokio-on-tally` engine, run by a second
//!   binary with mio patched to compat-mio, whose entry point is
//!   [`child`];
//! * [`alloc`]: the counting global allocator;
//! * [`report`] and [`plot`]: the table, the JSON and the SVG;
//! * [`sys`]: the raw syscalls, in one place.
//!
//! # Example
//!
//! Measure one workload, quickly, and print its table:
//!
//! ```no_run
//! use tally_benches::harness::Bench;
//! use tally_benches::report::WorkloadResult;
//! use tally_benches::workloads::{Config, nop};
//!
//! let mut bench = Bench::new(1);
//! let measured = bench.measure(nop::spec(Config { quick: true, fd_limit: 1024 }));
//! let w0 = WorkloadResult::summarize(&measured, "W0 nop", "ops/s", |r| Some(r.throughput()));
//! println!("{:?}", w0.ratio("tally/io-uring"));
//! ```

pub mod alloc;
pub mod child;
pub mod echo_client;
pub mod harness;
pub mod http_client;
pub mod plot;
pub mod report;
pub mod sys;
pub mod tokio_on_tally;
pub mod workloads;
