//! [`Runtime`]: N worker threads, each running its own [`LocalReactor`],
//! fed from any thread through a [`Handle`].
//!
//! A worker is a plain `LocalReactor` on its own thread, with one control
//! registration. Spawning from outside pushes a job (a `Send` closure that
//! builds the `!Send` future on the worker) onto the worker's inbox and
//! raises the control registration's counted signal: a burst of spawns
//! costs the worker one wake-up and one packet, and it runs every queued
//! job in that crank. Shutdown is a flag in the inbox and one more raise.
//!
//! Placement is round-robin over the workers: each `spawn` takes the next
//! worker in turn. (A least-loaded rule would read each worker's live task
//! count, which is already stale when the job lands; round-robin spreads
//! a stream of similar tasks evenly and costs one atomic add.)
//! [`Handle::spawn_on`] picks the worker.
//!
//! # Liveness
//!
//! Each worker counts its cranks in a [`Heartbeat`] (a relaxed atomic add
//! per crank, no syscall) and marks when it parks in the reactor. A
//! coordinator thread samples the counts every quarter of the stall
//! threshold (default 100 ms): a worker whose count has not moved for the
//! threshold while it was not parked (a task, or a spawn's closure, is
//! blocking its thread) is reported as stalled, once per stall, with a line
//! on stderr naming the worker and how long it has been stuck, and counted
//! in [`WorkerStats`]. An idle worker is parked, so it is never reported.
//!
//! A worker's thread ends when the runtime shuts down, or when it fails: a
//! panic outside any task (a task's own panic is its `JoinError`, as on a
//! `LocalReactor`), or a reactor that cannot be built. [`Runtime::join`]
//! then shuts the other workers down and returns a [`RuntimeError`] that
//! names the failed worker. No worker thread outlives the `Runtime`: its
//! drop shuts down at once and joins them all.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::channel::oneshot;
use parking_lot::Mutex;
use tally_reactor::{Backend, Signaler, Signals};

use crate::executor::{self, Heartbeat, LocalReactor};
use crate::task::JoinError;

/// A job for a worker: builds a future there and spawns it.
type Job = Box<dyn FnOnce() + Send>;

/// What a worker's outside shares with it.
struct Inbox {
    jobs: Mutex<VecDeque<Job>>,
    /// Set once: shut down, letting tasks run until this instant.
    shutdown: Mutex<Option<Instant>>,
    /// Raises the worker's control registration.
    wake: Signaler,
}

impl Inbox {
    fn push(&self, job: Job) -> io::Result<()> {
        if self.shutdown.lock().is_some() {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the runtime is shutting down"));
        }
        self.jobs.lock().push_back(job);
        self.kick()
    }

    fn kick(&self) -> io::Result<()> {
        self.wake.raise(Signals::user(0), 1).map(drop)
    }
}

/// Builds a [`Runtime`].
#[derive(Debug, Clone)]
pub struct Builder {
    workers: usize,
    worker: executor::Builder,
    name: String,
    stall_threshold: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: one worker per available CPU, each a `LocalReactor` with
    /// default settings, threads named `tally-worker-<i>`.
    pub fn new() -> Builder {
        let workers = thread::available_parallelism().map_or(1, usize::from);
        Builder {
            workers,
            worker: executor::Builder::new(),
            name: "tally-worker".into(),
            stall_threshold: Duration::from_millis(100),
        }
    }

    /// How many worker threads (at least one).
    pub fn workers(mut self, n: usize) -> Builder {
        self.workers = n.max(1);
        self
    }

    /// The settings of each worker's `LocalReactor`.
    pub fn worker(mut self, worker: executor::Builder) -> Builder {
        self.worker = worker;
        self
    }

    /// How long a worker that is not parked may go without a crank before
    /// it is reported as stalled (default 100 ms; at least 4 ms).
    pub fn stall_threshold(mut self, threshold: Duration) -> Builder {
        self.stall_threshold = threshold.max(Duration::from_millis(4));
        self
    }

    /// The prefix of the worker threads' names.
    pub fn thread_name(mut self, name: impl Into<String>) -> Builder {
        self.name = name.into();
        self
    }

    /// Starts the workers; returns once each has built its reactor.
    ///
    /// # Errors
    ///
    /// A worker's reactor cannot be built (as
    /// [`Builder::build`](crate::Builder::build)), or its thread cannot be
    /// spawned. The workers already started are shut down and joined.
    pub fn build(self) -> io::Result<Runtime> {
        let (exit_tx, exits) = mpsc::channel();
        let mut rt = Runtime {
            workers: Vec::new(),
            exits,
            failure: None,
            handle: None,
            coordinator: None,
            stats: Arc::new(Vec::new()),
        };
        let mut heartbeats = Vec::new();
        for index in 0..self.workers {
            let (ready_tx, ready) = mpsc::sync_channel(1);
            let heartbeat = Arc::new(Heartbeat::default());
            heartbeats.push(heartbeat.clone());
            let builder = self.worker.clone().heartbeat(heartbeat);
            let exit_tx = exit_tx.clone();
            let thread = thread::Builder::new()
                .name(format!("{}-{index}", self.name))
                .spawn(move || worker_main(index, builder, ready_tx, exit_tx))?;
            match ready.recv() {
                Ok(Ok((inbox, backend))) => {
                    rt.workers.push(Worker { inbox, backend, thread: Some(thread) })
                }
                Ok(Err(e)) => {
                    let _ = thread.join();
                    return Err(e);
                }
                Err(_) => {
                    let _ = thread.join();
                    return Err(io::Error::other(format!("worker {index} died while starting")));
                }
            }
        }
        let inboxes = rt.workers.iter().map(|w| w.inbox.clone()).collect();
        rt.handle = Some(Handle { inner: Arc::new(Shared { inboxes, next: AtomicUsize::new(0) }) });
        rt.stats = Arc::new(heartbeats.iter().map(|_| Stalls::default()).collect());
        let (stop, stopped) = mpsc::channel();
        let (stats, threshold) = (rt.stats.clone(), self.stall_threshold);
        let thread = thread::Builder::new()
            .name(format!("{}-coord", self.name))
            .spawn(move || coordinate(&heartbeats, &stats, threshold, &stopped))?;
        rt.coordinator = Some((stop, thread));
        Ok(rt)
    }
}

/// How a worker thread ended.
type Exit = (usize, Result<(), String>);

fn worker_main(
    index: usize,
    builder: executor::Builder,
    ready: mpsc::SyncSender<io::Result<(Arc<Inbox>, Backend)>>,
    exits: mpsc::Sender<Exit>,
) {
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let control = rt.register();
    let inbox = Arc::new(Inbox {
        jobs: Mutex::new(VecDeque::new()),
        shutdown: Mutex::new(None),
        wake: control.signaler(),
    });
    if ready.send(Ok((inbox.clone(), rt.metrics().backend))).is_err() {
        return;
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        let deadline = rt.block_on(async {
            loop {
                // One packet for any number of raises since the last look.
                let _ = control.packets().await;
                let jobs = std::mem::take(&mut *inbox.jobs.lock());
                for job in jobs {
                    job();
                }
                if let Some(deadline) = *inbox.shutdown.lock() {
                    return deadline;
                }
            }
        });
        // Jobs that raced the shutdown flag run too: their handles then
        // see their tasks end at the deadline at the latest.
        for job in std::mem::take(&mut *inbox.jobs.lock()) {
            job();
        }
        rt.block_on(async {
            while rt.live_tasks() > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                crate::time::sleep(left.min(Duration::from_millis(1))).await;
            }
        });
    }));
    // Whatever is left is dropped with the reactor, on this thread.
    let result = match result {
        Ok(()) => {
            drop(rt);
            Ok(())
        }
        Err(payload) => {
            let dropped = catch_unwind(AssertUnwindSafe(move || drop(rt)));
            drop(dropped);
            Err(match JoinError::from_panic(payload) {
                JoinError::Panicked(msg) => msg,
                JoinError::Cancelled => String::new(),
            })
        }
    };
    let _ = exits.send((index, result));
}

/// Sets each inbox's shutdown deadline, `grace` from now, unless it has
/// one, and wakes its worker.
fn shut_down<'a>(inboxes: impl IntoIterator<Item = &'a Arc<Inbox>>, grace: Duration) {
    let deadline = Instant::now() + grace;
    for inbox in inboxes {
        let mut at = inbox.shutdown.lock();
        if at.is_none() {
            *at = Some(deadline);
            drop(at);
            // A worker that is gone needs no kick.
            let _ = inbox.kick();
        }
    }
}

/// A worker's stall record, written by the coordinator.
#[derive(Default)]
struct Stalls {
    count: AtomicU64,
    longest_us: AtomicU64,
}

/// The coordinator's loop: samples every heartbeat each quarter threshold
/// until `stop` says to end (or its sender is dropped).
fn coordinate(
    heartbeats: &[Arc<Heartbeat>],
    stats: &[Stalls],
    threshold: Duration,
    stop: &mpsc::Receiver<()>,
) {
    /// Per worker: the count last seen, since when, and whether this
    /// stall was reported.
    struct Seen {
        cranks: u64,
        since: Instant,
        reported: bool,
    }
    let now = Instant::now();
    let mut seen: Vec<Seen> = heartbeats
        .iter()
        .map(|h| Seen { cranks: h.cranks.load(Ordering::Relaxed), since: now, reported: false })
        .collect();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(threshold / 4) {
        let now = Instant::now();
        for (i, ((hb, s), st)) in heartbeats.iter().zip(&mut seen).zip(stats).enumerate() {
            let cranks = hb.cranks.load(Ordering::Relaxed);
            if cranks != s.cranks || hb.parked.load(Ordering::Relaxed) {
                *s = Seen { cranks, since: now, reported: false };
                continue;
            }
            let stuck = now - s.since;
            if stuck < threshold {
                continue;
            }
            st.longest_us.fetch_max(stuck.as_micros() as u64, Ordering::Relaxed);
            if !s.reported {
                s.reported = true;
                st.count.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "tally: worker {i} stalled: no crank for {stuck:?} while not parked (a task \
                     or a spawn closure is blocking its thread); cranks stuck at {cranks}"
                );
            }
        }
    }
}

/// What the coordinator knows of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    /// The backend its reactor runs on.
    pub backend: Backend,
    /// Stalls reported (see the module doc, "Liveness").
    pub stalls: u64,
    /// The longest stall seen, as sampled (to a quarter threshold).
    pub longest_stall: Duration,
}

/// One worker, as the runtime sees it.
struct Worker {
    inbox: Arc<Inbox>,
    backend: Backend,
    thread: Option<thread::JoinHandle<()>>,
}

struct Shared {
    inboxes: Vec<Arc<Inbox>>,
    next: AtomicUsize,
}

/// A multi-thread runtime: a [`LocalReactor`] per worker thread.
///
/// # Examples
///
/// ```
/// let rt = tally::Runtime::builder().workers(2).build().unwrap();
/// let handle = rt.handle();
/// let out = rt.block_on(async move {
///     let a = handle.spawn(|| async { 20 }).unwrap();
///     let b = handle.spawn(|| async { 22 }).unwrap();
///     a.await.unwrap() + b.await.unwrap()
/// });
/// assert_eq!(out, 42);
/// rt.shutdown(std::time::Duration::from_secs(1)).unwrap();
/// ```
pub struct Runtime {
    workers: Vec<Worker>,
    exits: mpsc::Receiver<Exit>,
    /// The first failure seen, kept for `join`.
    failure: Option<RuntimeError>,
    /// `None` only while building.
    handle: Option<Handle>,
    /// Stops and joins the coordinator thread.
    coordinator: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
    stats: Arc<Vec<Stalls>>,
}

/// A `Send + Sync` handle to a [`Runtime`]'s workers, for spawning from
/// any thread (inside tasks too) and for shutting down.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Shared>,
}

impl Handle {
    /// Spawns the future `make` builds on the next worker in turn (see the
    /// module doc). `make` runs on that worker, so the future need not be
    /// `Send`; its output must be, to come back.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` once the runtime is shutting down or gone.
    pub fn spawn<M, F>(&self, make: M) -> io::Result<RemoteHandle<F::Output>>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let n = self.inner.inboxes.len();
        let worker = self.inner.next.fetch_add(1, Ordering::Relaxed) % n;
        self.spawn_on(worker, make)
    }

    /// Spawns the future `make` builds on worker `worker`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a worker that does not exist; `BrokenPipe` once
    /// the runtime is shutting down or gone.
    pub fn spawn_on<M, F>(&self, worker: usize, make: M) -> io::Result<RemoteHandle<F::Output>>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let inbox = self.inner.inboxes.get(worker).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no worker {worker}: the runtime has {}", self.inner.inboxes.len()),
            )
        })?;
        let (tx, rx) = oneshot::channel();
        inbox.push(Box::new(move || {
            let future = AssertUnwindSafe(make()).catch_unwind();
            drop(crate::spawn(async move {
                let _ = tx.send(future.await.map_err(JoinError::from_panic));
            }));
        }))?;
        Ok(RemoteHandle { rx })
    }

    /// How many workers the runtime has.
    pub fn workers(&self) -> usize {
        self.inner.inboxes.len()
    }

    /// Starts a graceful shutdown: no more spawns are taken, and each
    /// worker lets its tasks run for up to `grace`, then drops those left.
    /// Returns at once; [`Runtime::join`] waits for the end.
    pub fn shutdown(&self, grace: Duration) {
        shut_down(&self.inner.inboxes, grace);
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("workers", &self.workers()).finish()
    }
}

/// The output of a task spawned through a [`Handle`], awaitable from any
/// thread. Dropping it detaches the task.
pub struct RemoteHandle<T> {
    rx: oneshot::Receiver<Result<T, JoinError>>,
}

impl<T> Future for RemoteHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A dropped sender is a task dropped unfinished: at the shutdown
        // deadline, or with a worker that failed.
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(JoinError::Cancelled)))
    }
}

impl<T> fmt::Debug for RemoteHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteHandle").finish_non_exhaustive()
    }
}

/// A worker thread that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeError {
    /// The worker's index.
    pub worker: usize,
    /// Its panic message.
    pub message: String,
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tally worker {} panicked: {}", self.worker, self.message)
    }
}

impl std::error::Error for RuntimeError {}

impl Runtime {
    /// A builder.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A handle for spawning and shutting down, from any thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone().expect("a built runtime has a handle")
    }

    /// The backend each worker's reactor runs on, by worker index.
    pub fn backends(&self) -> Vec<Backend> {
        self.workers.iter().map(|w| w.backend).collect()
    }

    /// Each worker's backend and stall record, by worker index.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.workers
            .iter()
            .zip(self.stats.iter())
            .map(|(w, s)| WorkerStats {
                backend: w.backend,
                stalls: s.count.load(Ordering::Relaxed),
                longest_stall: Duration::from_micros(s.longest_us.load(Ordering::Relaxed)),
            })
            .collect()
    }

    /// Runs `future` on the calling thread, on a `LocalReactor` of its own
    /// made for the call, and returns its output. Move a [`Handle`] into
    /// the future to spawn on the workers.
    ///
    /// # Panics
    ///
    /// When the calling thread's reactor cannot be built, or as
    /// [`LocalReactor::block_on`].
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let local = LocalReactor::new().expect("tally: building block_on's LocalReactor");
        local.block_on(future)
    }

    /// Waits until every worker has ended: after [`Handle::shutdown`], or
    /// when one fails, in which case the others are shut down at once.
    ///
    /// # Errors
    ///
    /// The first worker that failed, with its panic message.
    pub fn join(mut self) -> Result<(), RuntimeError> {
        self.join_all();
        self.failure.take().map_or(Ok(()), Err)
    }

    /// [`Handle::shutdown`] with `grace`, then [`join`](Self::join).
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub fn shutdown(self, grace: Duration) -> Result<(), RuntimeError> {
        self.handle().shutdown(grace);
        self.join()
    }

    fn join_all(&mut self) {
        let mut running = self.workers.iter().filter(|w| w.thread.is_some()).count();
        while running > 0 {
            let (worker, result) = match self.exits.recv_timeout(Duration::from_millis(100)) {
                Ok(exit) => exit,
                // A thread that ended without reporting (it cannot, short
                // of an abort) must not hang the join.
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let alive = self.workers.iter().flat_map(|w| &w.thread);
                    if alive.clone().all(thread::JoinHandle::is_finished) {
                        break;
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            running -= 1;
            if let Err(message) = result {
                if self.failure.is_none() {
                    self.failure = Some(RuntimeError { worker, message });
                }
                shut_down(self.workers.iter().map(|w| &w.inbox), Duration::ZERO);
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        if let Some((stop, thread)) = self.coordinator.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        shut_down(self.workers.iter().map(|w| &w.inbox), Duration::ZERO);
        self.join_all();
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("workers", &self.workers.len()).finish_non_exhaustive()
    }
}
