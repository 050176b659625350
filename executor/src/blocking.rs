//! The blocking pool behind `task::spawn_blocking`: threads made on demand, up
//! to a cap, that run closures which would block a reactor thread (file
//! system calls on epoll, name resolution, CPU-heavy work).
//!
//! Each executor has its own pool, made on first use. A job queues; an
//! idle thread takes it, or a new thread starts if fewer than the cap
//! exist; past the cap, jobs wait their turn. A thread idle for the
//! keep-alive (default 10 s) exits, so an idle pool shrinks to nothing, and
//! dropping the executor tells idle threads to exit at once. A result comes
//! back through a oneshot channel, whose wake is the executor's ordinary
//! cross-thread wake (its remote queue and eventfd).

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// A job for the pool.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// How big a pool may grow and how long an idle thread waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolConfig {
    pub(crate) max_threads: usize,
    pub(crate) keep_alive: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { max_threads: 64, keep_alive: Duration::from_secs(10) }
    }
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    /// Set when the executor is dropped: idle threads exit.
    closed: bool,
}

/// One executor's blocking pool.
pub(crate) struct Pool {
    config: PoolConfig,
    state: Mutex<State>,
    work: Condvar,
}

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Arc<Pool> {
        Arc::new(Pool { config, state: Mutex::new(State::default()), work: Condvar::new() })
    }

    /// Queues `job`; wakes an idle thread or starts one.
    pub(crate) fn run(self: &Arc<Self>, job: Job) {
        let mut state = self.state.lock();
        state.jobs.push_back(job);
        // An idle thread counts as idle until it wakes and takes the lock,
        // so compare the queue with the idle threads: each queued job
        // needs one of its own. (Testing `idle > 0` alone would hand a
        // whole burst, queued before the woken thread runs, to that one
        // thread, one job after another.)
        if state.jobs.len() <= state.idle {
            drop(state);
            self.work.notify_one();
            return;
        }
        if state.threads >= self.config.max_threads.max(1) {
            // Past the cap: the job waits for a busy thread to finish.
            return;
        }
        state.threads += 1;
        drop(state);
        let pool = self.clone();
        let spawned =
            thread::Builder::new().name("tally-blocking".into()).spawn(move || pool.serve());
        if spawned.is_err() {
            // No thread: the job waits for one that exists, or, if none
            // does, runs here rather than never.
            let mut state = self.state.lock();
            state.threads -= 1;
            if state.threads == 0 {
                let jobs: Vec<Job> = state.jobs.drain(..).collect();
                drop(state);
                jobs.into_iter().for_each(|job| job());
            }
        }
    }

    /// A pool thread: runs jobs until it has been idle for the keep-alive,
    /// or the pool is closed.
    fn serve(&self) {
        let mut state = self.state.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                job();
                state = self.state.lock();
                continue;
            }
            if state.closed {
                break;
            }
            state.idle += 1;
            let timed_out = self.work.wait_for(&mut state, self.config.keep_alive).timed_out();
            state.idle -= 1;
            if timed_out && state.jobs.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }

    /// The executor is gone: idle threads exit now, busy ones after their
    /// job (queued jobs still run: their results may be awaited elsewhere).
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.work.notify_all();
    }

    /// Threads that exist now (busy or idle).
    pub(crate) fn threads(&self) -> usize {
        self.state.lock().threads
    }
}
