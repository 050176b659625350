//! The measuring method shared by every workload.
//!
//! * Each case (one engine on one workload) first runs once as a warm-up,
//!   on a smaller count, and that run is thrown away.
//! * Then the engines run interleaved, A B C A B C …, for `reps`
//!   repetitions, so that a slow drift of the machine (frequency, another
//!   process) hits every engine alike, and repetition `i` of tally can be
//!   paired with repetition `i` of each peer.
//! * Every run is bounded by a count of events, never by a duration: a run
//!   returns how long its count took.
//! * A run measures only its steady state: it sets up (reactor, sockets,
//!   registrations, threads), then opens a [`Window`], does the counted
//!   work, and closes the window. Time and allocations are taken inside the
//!   window only.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::alloc;
use crate::sys;

/// An engine: one way of running a workload. The names are fixed by the
/// JSON schema.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Engine {
    /// tally on the reactor's default backend (`Backend::Auto`: io_uring
    /// where the ring can be set up): the executor, or on W0, W1, W2 and W5
    /// the reactor API driven by hand.
    Tally,
    /// The `tally` case's own code on a reactor built with
    /// `Backend::Epoll`, checked against its metrics at each run's set-up.
    TallyEpoll,
    /// A hand-written mio 1.x readiness loop.
    Mio,
    /// A tokio `current_thread` runtime.
    Tokio,
    /// The same tokio program with mio patched to compat-mio: tokio's
    /// readiness answered by a tally reactor. It runs in a separate binary
    /// (one binary cannot link two `mio` packages); see
    /// [`tokio_on_tally`](crate::tokio_on_tally).
    TokioOnTally,
    /// monoio's io_uring runtime.
    Monoio,
    /// The `io-uring` crate driven by hand (W0 only): the floor.
    IoUring,
    /// `tally_reactor` driven by hand, without the executor: measured next
    /// to the executor-based tally case, and reported as a workload entry
    /// of its own ("… reactor-only") under the engine name `tally`.
    TallyReactor,
    /// The `tally-reactor` case's code on a reactor built with
    /// `Backend::Epoll`: reported in the "… reactor-only" entry as
    /// `tally-epoll`, so that the reactor's own layer over epoll stands
    /// against mio without the executor and stream types above it.
    TallyReactorEpoll,
    /// A loop of `pread(2)` on one thread (W8 only): the limit.
    Pread,
}

impl Engine {
    /// Every engine of the JSON schema, in report order.
    pub const ALL: [Engine; 8] = [
        Engine::Tally,
        Engine::TallyEpoll,
        Engine::Mio,
        Engine::Tokio,
        Engine::TokioOnTally,
        Engine::Monoio,
        Engine::IoUring,
        Engine::Pread,
    ];

    /// The engine's name in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Tally => "tally",
            Engine::TallyEpoll => "tally-epoll",
            Engine::Mio => "mio",
            Engine::Tokio => "tokio",
            Engine::TokioOnTally => "tokio-on-tally",
            Engine::Monoio => "monoio",
            Engine::IoUring => "io-uring",
            Engine::TallyReactor => "tally-reactor",
            Engine::TallyReactorEpoll => "tally-reactor-epoll",
            Engine::Pread => "pread",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One measured run: `events` of work done in `elapsed`.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Events (operations, messages, signals) the run completed.
    pub events: u64,
    /// Wall-clock time inside the window.
    pub elapsed: Duration,
    /// Allocations (all threads) inside the window.
    pub allocs: u64,
    /// CPU time of the consuming thread inside the window, where measured.
    pub cpu: Option<Duration>,
}

impl Run {
    /// Events per wall-clock second.
    pub fn throughput(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Events per second of the consumer's CPU time, where measured.
    pub fn cpu_throughput(&self) -> Option<f64> {
        self.cpu.map(|c| self.events as f64 / c.as_secs_f64().max(1e-9))
    }
}

/// The measured stretch of a run: opened after setup, closed after the
/// counted work.
#[derive(Debug)]
#[must_use = "a window measures nothing until it is closed"]
pub struct Window {
    start: Instant,
    allocs: u64,
    cpu: Option<Duration>,
}

impl Window {
    /// Starts the clock and the allocation count.
    pub fn open() -> Window {
        Window { start: Instant::now(), allocs: alloc::allocations(), cpu: None }
    }

    /// As [`open`](Self::open), also taking the calling thread's CPU time;
    /// close it on the same thread.
    pub fn open_with_cpu() -> Window {
        let cpu = Some(sys::thread_cpu_time());
        Window { cpu, ..Window::open() }
    }

    /// Stops the clock: `events` were done inside the window.
    pub fn close(self, events: u64) -> Run {
        let elapsed = self.start.elapsed();
        let allocs = alloc::allocations() - self.allocs;
        let cpu = self.cpu.map(|c| sys::thread_cpu_time().saturating_sub(c));
        Run { events, elapsed, allocs, cpu }
    }
}

/// A run of one engine: called with the event count, returns its [`Run`].
pub type RunFn = Box<dyn FnMut(u64) -> io::Result<Run>>;

/// One engine's side of a workload.
pub struct Case {
    /// Which engine.
    pub engine: Engine,
    /// Runs it once for a given count.
    pub run: RunFn,
}

impl Case {
    /// A case from a closure.
    pub fn new(engine: Engine, run: impl FnMut(u64) -> io::Result<Run> + 'static) -> Case {
        Case { engine, run: Box::new(run) }
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case").field("engine", &self.engine).finish_non_exhaustive()
    }
}

/// A workload ready to measure: its cases and its counts.
#[derive(Debug)]
pub struct Spec {
    /// `W<n> <name>`, as in the table and the JSON.
    pub name: String,
    /// What a throughput counts, per second (`"ops/s"`, `"msgs/s"`).
    pub unit: &'static str,
    /// Events per measured run.
    pub count: u64,
    /// Events in the warm-up run.
    pub warmup: u64,
    /// One per engine.
    pub cases: Vec<Case>,
}

/// Every measured run of a workload, by engine.
#[derive(Debug, Clone)]
pub struct Measured {
    /// As in the [`Spec`].
    pub name: String,
    /// As in the [`Spec`].
    pub unit: &'static str,
    /// Runs in repetition order, by engine.
    pub runs: BTreeMap<Engine, Vec<Run>>,
}

/// Runs specs with a progress line and collects notes on failures.
#[derive(Debug)]
pub struct Bench {
    reps: usize,
    start: Instant,
    tty: bool,
    /// Engines to run (by name), or all.
    engines: Option<Vec<String>>,
    /// Engines that failed, with why: shown under the table.
    pub notes: Vec<String>,
}

impl Bench {
    /// A bench running `reps` interleaved repetitions of every case.
    pub fn new(reps: usize) -> Bench {
        Bench {
            reps: reps.max(1),
            start: Instant::now(),
            tty: io::stderr().is_terminal(),
            engines: None,
            notes: Vec::new(),
        }
    }

    /// Runs only the engines named in `names` (for profiling one side).
    pub fn only_engines(&mut self, names: Vec<String>) {
        self.engines = Some(names);
    }

    /// Seconds since the bench started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Shows `msg` on the progress line (stderr).
    pub fn progress(&self, msg: &str) {
        let secs = self.start.elapsed().as_secs_f64();
        let mut err = io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K[{secs:6.1}s] {msg}");
        } else {
            let _ = writeln!(err, "[{secs:6.1}s] {msg}");
        }
        let _ = err.flush();
    }

    /// Ends the progress line.
    pub fn finish_progress(&self) {
        if self.tty {
            eprintln!();
        }
    }

    /// Warms up each case, then runs them interleaved `reps` times. A case
    /// that fails is dropped from the workload and noted.
    pub fn measure(&mut self, spec: Spec) -> Measured {
        let Spec { name, unit, count, warmup, mut cases } = spec;
        if let Some(names) = &self.engines {
            cases.retain(|c| names.iter().any(|n| n == c.engine.name()));
        }
        let mut runs: BTreeMap<Engine, Vec<Run>> = BTreeMap::new();
        let mut failed = vec![false; cases.len()];
        for (i, case) in cases.iter_mut().enumerate() {
            self.progress(&format!("{name}: warm-up {}", case.engine));
            if let Err(e) = (case.run)(warmup) {
                self.notes.push(format!("{name}: {} failed in warm-up: {e}", case.engine));
                failed[i] = true;
            }
        }
        for rep in 0..self.reps {
            for (i, case) in cases.iter_mut().enumerate() {
                if failed[i] {
                    continue;
                }
                self.progress(&format!("{name}: rep {}/{} {}", rep + 1, self.reps, case.engine));
                match (case.run)(count) {
                    Ok(run) => runs.entry(case.engine).or_default().push(run),
                    Err(e) => {
                        self.notes.push(format!("{name}: {} failed: {e}", case.engine));
                        failed[i] = true;
                        runs.remove(&case.engine);
                    }
                }
            }
        }
        Measured { name, unit, runs }
    }
}
