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
//! A coordinator thread (`coordinator.rs`) watches the workers' liveness,
//! reads the process's signals and relays them; its module doc says how.
//! Build the runtime at the top of `main`, before any other thread: the
//! runtime's signals are blocked in the building thread, so that every
//! thread spawned after inherits the mask.
//!
//! A worker's thread ends when the runtime shuts down, or when it fails: a
//! panic outside any task (a task's own panic is its `JoinError`, as on a
//! `LocalReactor`), or a reactor that cannot be built. [`Runtime::join`]
//! then shuts the other workers down and returns a [`RuntimeError`] that
//! names the failed worker. No worker thread outlives the `Runtime`: its
//! drop shuts down at once and joins them all.

mod coordinator;
mod inbox;
mod supervise;

use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::channel::oneshot;
use tally_reactor::{Backend, Signaler, Signals};

pub use coordinator::{SignalReceiver, WorkerStats};
pub use supervise::{OnFailure, RestartPolicy, ServiceFailure};

use crate::executor::{self, Heartbeat, LocalReactor};
use crate::task::JoinError;
use coordinator::Watched;
use inbox::{Inbox, shut_down};

/// Builds a [`Runtime`].
#[derive(Debug, Clone)]
pub struct Builder {
    workers: usize,
    worker: executor::Builder,
    name: String,
    stall_threshold: Duration,
    signals: Vec<i32>,
    grace: Duration,
    pin: bool,
    inbox_cap: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: one worker per available CPU, each a `LocalReactor` with
    /// default settings, threads named `tally-worker-<i>`; the runtime
    /// reads `SIGINT`, `SIGTERM` and `SIGUSR2`, and a signal-started
    /// shutdown gives tasks 5 s.
    pub fn new() -> Builder {
        let workers = thread::available_parallelism().map_or(1, usize::from);
        Builder {
            workers,
            worker: executor::Builder::new(),
            name: "tally-worker".into(),
            stall_threshold: Duration::from_millis(100),
            signals: vec![libc::SIGINT, libc::SIGTERM, libc::SIGUSR2],
            grace: Duration::from_secs(5),
            pin: false,
            inbox_cap: 65_536,
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

    /// The signals the runtime reads (replacing the default three): they
    /// are blocked in the building thread and read by the coordinator.
    /// Empty: the runtime touches no signal.
    pub fn signals(mut self, signos: &[i32]) -> Builder {
        self.signals = signos.to_vec();
        self
    }

    /// How long a shutdown started by `SIGINT` or `SIGTERM` lets tasks run
    /// (default 5 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Builder {
        self.grace = grace;
        self
    }

    /// Pins worker `i` to CPU `i` (modulo the CPUs this process may run
    /// on), with `sched_setaffinity`; off by default. A worker that cannot
    /// be pinned fails the build.
    pub fn pin_workers(mut self, pin: bool) -> Builder {
        self.pin = pin;
        self
    }

    /// Spawns a worker's inbox holds before `spawn` refuses with
    /// `WouldBlock` (default 65,536): a worker that falls behind pushes
    /// back on its spawners instead of growing without bound.
    pub fn inbox_capacity(mut self, cap: usize) -> Builder {
        self.inbox_cap = cap.max(1);
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
        // Before any worker starts, so that every one inherits the mask.
        crate::signal::block(&self.signals)?;
        let (exit_tx, exits) = mpsc::channel();
        let mut rt = Runtime { workers: Vec::new(), exits, failure: None, shared: None };
        let mut watched = Vec::new();
        for index in 0..self.workers {
            let (ready_tx, ready) = mpsc::sync_channel(1);
            let heartbeat = Arc::new(Heartbeat::default());
            let builder = self.worker.clone().heartbeat(heartbeat.clone());
            let (exit_tx, beat) = (exit_tx.clone(), heartbeat.clone());
            let (pin, inbox_cap) = (self.pin.then_some(index), self.inbox_cap);
            let thread =
                thread::Builder::new().name(format!("{}-{index}", self.name)).spawn(move || {
                    if let Some(Err(e)) = pin.map(pin_to) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                    let result = worker_main(builder, inbox_cap, &ready_tx);
                    // An ended worker is idle for good, not stalled.
                    beat.parked.store(true, Ordering::Relaxed);
                    if let Some(result) = result {
                        let _ = exit_tx.send(Exit::Worker(index, result));
                    }
                })?;
            match ready.recv() {
                Ok(Ok((inbox, backend))) => {
                    rt.workers.push(Worker { inbox, thread: Some(thread) });
                    watched.push(Watched { heartbeat, stalls: Default::default(), backend });
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
        let shared = Arc::new(coordinator::Shared::new(watched, inboxes, self.signals));
        let (threshold, grace) = (self.stall_threshold, self.grace);
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let for_thread = shared.clone();
        let thread = thread::Builder::new().name(format!("{}-coord", self.name)).spawn(
            move || -> io::Result<()> {
                let local = LocalReactor::new()?;
                let stop = local.register();
                let _ = ready_tx.send(stop.signaler());
                local.block_on(coordinator::run(&for_thread, threshold, grace, stop))
            },
        )?;
        let Ok(stop) = ready.recv() else {
            let err = thread.join().map_err(|_| io::Error::other("the coordinator panicked"))?;
            return Err(err.err().unwrap_or_else(|| io::Error::other("the coordinator ended")));
        };
        rt.shared = Some(RuntimeShared {
            handle: Handle { shared, next: Arc::new(AtomicUsize::new(0)), exits: exit_tx },
            coordinator: Some((stop, thread)),
        });
        Ok(rt)
    }
}

/// What ends a runtime's run: a worker's thread ending (with its panic
/// message if it failed), or a supervised service failing for good.
enum Exit {
    Worker(usize, Result<(), String>),
    Service(ServiceFailure),
}

/// Pins the calling thread to the `index`th CPU it may run on (modulo
/// their number).
fn pin_to(index: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: a valid pointer to a cpu_set_t of `size` bytes; 0 is this
    // thread.
    if unsafe { libc::sched_getaffinity(0, size, &mut allowed) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `allowed` is a valid cpu_set_t and `c` < CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &allowed) })
        .collect();
    let Some(&cpu) = cpus.get(index % cpus.len().max(1)) else {
        return Err(io::Error::other("this thread may run on no CPU"));
    };
    // SAFETY: as above: plain data, zeroed is the empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `one` is a valid cpu_set_t and `cpu` < CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: a valid pointer to a cpu_set_t of `size` bytes.
    if unsafe { libc::sched_setaffinity(0, size, &one) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A worker's thread: builds its reactor, reports to `ready`, and runs
/// until shut down. Returns how it ended, or `None` if it never started.
fn worker_main(
    builder: executor::Builder,
    inbox_cap: usize,
    ready: &mpsc::SyncSender<io::Result<(Arc<Inbox>, Backend)>>,
) -> Option<Result<(), String>> {
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return None;
        }
    };
    let control = rt.register();
    let inbox = Arc::new(Inbox::new(control.signaler(), inbox_cap));
    if ready.send(Ok((inbox.clone(), rt.metrics().backend))).is_err() {
        return None;
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
    Some(result)
}

/// One worker, as the runtime sees it.
struct Worker {
    inbox: Arc<Inbox>,
    thread: Option<thread::JoinHandle<()>>,
}

/// What a built runtime has besides its workers.
struct RuntimeShared {
    handle: Handle,
    /// Stops (with a raise) and joins the coordinator thread.
    coordinator: Option<(Signaler, thread::JoinHandle<io::Result<()>>)>,
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
    shared: Option<RuntimeShared>,
}

/// A `Send + Sync` handle to a [`Runtime`]'s workers, for spawning from
/// any thread (inside tasks too) and for shutting down.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<coordinator::Shared>,
    /// The round-robin cursor.
    next: Arc<AtomicUsize>,
    /// Where a service that fails for good reports, to end the run.
    exits: mpsc::Sender<Exit>,
}

impl Handle {
    /// Spawns the future `make` builds on the next worker in turn (see the
    /// module doc). `make` runs on that worker, so the future need not be
    /// `Send`; its output must be, to come back.
    ///
    /// # Errors
    ///
    /// As [`spawn_on`](Self::spawn_on).
    pub fn spawn<M, F>(&self, make: M) -> io::Result<RemoteHandle<F::Output>>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let n = self.shared.inboxes.len();
        let worker = self.next.fetch_add(1, Ordering::Relaxed) % n;
        self.spawn_on(worker, make)
    }

    /// Spawns the future `make` builds on worker `worker`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a worker that does not exist; `WouldBlock` when
    /// its inbox is full ([`Builder::inbox_capacity`]); `BrokenPipe` once
    /// the runtime is shutting down or gone.
    pub fn spawn_on<M, F>(&self, worker: usize, make: M) -> io::Result<RemoteHandle<F::Output>>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let inbox = self.shared.inboxes.get(worker).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no worker {worker}: the runtime has {}", self.shared.inboxes.len()),
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

    /// Completes once the runtime's shutdown has started (by
    /// [`shutdown`](Self::shutdown), a signal, or a failure), from any
    /// thread or executor: an accept loop that selects on it stops taking
    /// connections at once instead of holding the shutdown to its
    /// deadline.
    pub async fn shutdown_requested(&self) {
        let inbox = &self.shared.inboxes[0];
        std::future::poll_fn(|cx| inbox.poll_shutdown(cx)).await;
    }

    /// Process signals relayed by the coordinator, received on the reactor
    /// of the executor running on this thread (a worker's task, or
    /// [`Runtime::block_on`]). Receiving `SIGINT` or `SIGTERM` turns off
    /// the shutdown they would start, and `SIGUSR2` the snapshot.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a signal the runtime does not read (see
    /// [`Builder::signals`]).
    ///
    /// # Panics
    ///
    /// Outside a running tally executor.
    pub fn signals(&self, signos: &[i32]) -> io::Result<SignalReceiver> {
        self.shared.receiver(signos)
    }

    /// Each worker's backend, cranks and stall record, by worker index.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.shared.workers.iter().map(Watched::stats).collect()
    }

    /// Runs the service `start` builds on worker `worker`, restarting it
    /// by `policy` when it ends with an error or a panic (see
    /// [`RestartPolicy`]); once it fails more often than the policy allows,
    /// does what `on_failure` says. `start` is called on the worker, once
    /// per run.
    ///
    /// # Errors
    ///
    /// As [`spawn_on`](Self::spawn_on).
    pub fn supervise<M, F, E>(
        &self,
        name: impl Into<String>,
        worker: usize,
        start: M,
        policy: RestartPolicy,
        on_failure: OnFailure,
    ) -> io::Result<()>
    where
        M: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<(), E>> + 'static,
        E: fmt::Display + 'static,
    {
        let (name, exits) = (name.into(), self.exits.clone());
        let service = self.spawn_on(worker, move || async move {
            let Some(failure) = supervise::run(name, worker, start, policy).await else { return };
            eprintln!("tally: {failure}");
            match on_failure {
                OnFailure::FailRuntime => drop(exits.send(Exit::Service(failure))),
                OnFailure::Callback(f) => f(&failure),
            }
        })?;
        drop(service);
        Ok(())
    }

    /// How many workers the runtime has.
    pub fn workers(&self) -> usize {
        self.shared.inboxes.len()
    }

    /// Starts a graceful shutdown: no more spawns are taken, and each
    /// worker lets its tasks run for up to `grace`, then drops those left.
    /// Returns at once; [`Runtime::join`] waits for the end.
    pub fn shutdown(&self, grace: Duration) {
        shut_down(&self.shared.inboxes, grace);
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

/// Why a runtime's run ended in failure: a worker thread that panicked,
/// or a supervised service that failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeError {
    /// The worker's index.
    pub worker: usize,
    /// The failed service's name, if it was a service.
    pub service: Option<String>,
    /// The worker's panic message, or the service's last error.
    pub message: String,
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.service {
            None => write!(f, "tally worker {} panicked: {}", self.worker, self.message),
            Some(name) => write!(
                f,
                "tally service {name:?} on worker {} failed: {}",
                self.worker, self.message
            ),
        }
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
        self.shared.as_ref().expect("a built runtime has a handle").handle.clone()
    }

    /// The backend each worker's reactor runs on, by worker index.
    pub fn backends(&self) -> Vec<Backend> {
        self.worker_stats().iter().map(|s| s.backend).collect()
    }

    /// Each worker's backend, cranks and stall record, by worker index.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.handle().worker_stats()
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
                Ok(Exit::Worker(worker, result)) => (worker, result.map_err(|m| (None, m))),
                Ok(Exit::Service(f)) => {
                    // Not a thread's end: the workers run on until shut
                    // down, which starts now.
                    running += 1;
                    (f.worker, Err((Some(f.name), f.reason)))
                }
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
            if let Err((service, message)) = result {
                if self.failure.is_none() {
                    self.failure = Some(RuntimeError { worker, service, message });
                }
                shut_down(self.workers.iter().map(|w| &w.inbox), Duration::ZERO);
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        if let Some((stop, thread)) = self.shared.as_mut().and_then(|s| s.coordinator.take()) {
            let _ = stop.raise(Signals::user(0), 1);
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
