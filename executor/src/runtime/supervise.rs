//! Supervised services: a service future restarted, on its worker, when it
//! ends with an error or a panic, after a delay that grows by a back-off,
//! until too many restarts fall within a window (juju's dependency-engine
//! rule, at service level: a worker is never restarted whole).
//!
//! Each start builds a fresh future with the service's start function, and
//! the failed one is dropped, with everything it owned (sockets,
//! registrations, tasks' handles), before the delay begins: nothing of a
//! failed run survives into the next. A service that returns `Ok(())` has
//! finished and is not restarted.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;

use crate::task::JoinError;

/// When and how often a supervised service is restarted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// The wait before the first restart.
    pub delay: Duration,
    /// What each further wait is multiplied by (1.0: a constant delay).
    pub backoff: f64,
    /// The longest wait, however many restarts came before.
    pub max_delay: Duration,
    /// Restarts allowed within `window`; one more failure and the service
    /// is reported as failed instead.
    pub max_restarts: u32,
    /// The window `max_restarts` counts over.
    pub window: Duration,
}

impl Default for RestartPolicy {
    /// 100 ms, doubling up to 10 s; at most 5 restarts in a minute.
    fn default() -> Self {
        RestartPolicy {
            delay: Duration::from_millis(100),
            backoff: 2.0,
            max_delay: Duration::from_secs(10),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// A service that failed more often than its policy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFailure {
    /// The service's name.
    pub name: String,
    /// The worker it ran on.
    pub worker: usize,
    /// Its restarts before it was given up on.
    pub restarts: u32,
    /// Why its last run ended: its error, or its panic message.
    pub reason: String,
}

impl fmt::Display for ServiceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service {:?} on worker {} failed after {} restarts: {}",
            self.name, self.worker, self.restarts, self.reason
        )
    }
}

/// What to do with a service that failed for good.
#[derive(Clone)]
pub enum OnFailure {
    /// Shut the runtime down, and make [`Runtime::join`](super::Runtime::join)
    /// return the failure.
    FailRuntime,
    /// Call this (on the service's worker), and let the runtime run on.
    Callback(Arc<dyn Fn(&ServiceFailure) + Send + Sync>),
}

impl fmt::Debug for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnFailure::FailRuntime => f.write_str("FailRuntime"),
            OnFailure::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

/// Runs the service `start` builds until it finishes, or fails for good;
/// returns the failure in that case.
pub(super) async fn run<M, F, E>(
    name: String,
    worker: usize,
    mut start: M,
    policy: RestartPolicy,
) -> Option<ServiceFailure>
where
    M: FnMut() -> F,
    F: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    let mut restarts_at: Vec<Instant> = Vec::new();
    let mut restarts = 0u32;
    let mut delay = policy.delay;
    loop {
        // The future is consumed by its run: whatever it owned is dropped
        // before the delay below.
        let reason = match AssertUnwindSafe(start()).catch_unwind().await {
            Ok(Ok(())) => return None,
            Ok(Err(e)) => e.to_string(),
            Err(panic) => match JoinError::from_panic(panic) {
                JoinError::Panicked(msg) => format!("panicked: {msg}"),
                JoinError::Cancelled => "cancelled".into(),
            },
        };
        let now = crate::time::now();
        restarts_at.retain(|&at| now.duration_since(at) < policy.window);
        if restarts_at.len() >= policy.max_restarts as usize {
            return Some(ServiceFailure { name, worker, restarts, reason });
        }
        eprintln!(
            "tally: service {name:?} on worker {worker} ended ({reason}); restarting in {delay:?}"
        );
        crate::time::sleep(delay).await;
        restarts_at.push(crate::time::now());
        restarts += 1;
        // A back-off that is not a finite number >= 1 keeps the delay.
        let grown = Duration::try_from_secs_f64(delay.as_secs_f64() * policy.backoff);
        delay = grown.map_or(policy.max_delay, |d| d.max(delay)).min(policy.max_delay);
    }
}
