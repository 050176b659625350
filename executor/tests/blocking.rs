//! The blocking pool: many jobs finish with no more threads than the cap,
//! the pool shrinks to nothing when idle, and a job's panic is its
//! handle's `JoinError`.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tally::task::spawn_blocking;
use tally::{JoinError, LocalReactor};

#[test]
fn many_jobs_finish_on_no_more_threads_than_the_cap() {
    let rt = LocalReactor::builder().blocking_threads(4).build().unwrap();
    let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sum = util::bounded(&rt, "64 blocking jobs", async {
        let handles: Vec<_> = (0..64u64)
            .map(|i| {
                let (running, peak) = (running.clone(), peak.clone());
                spawn_blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                })
            })
            .collect();
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        sum
    });
    assert_eq!(sum, (0..64).sum::<u64>());
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 4, "at most the cap at once: {peak}");
    assert!(peak >= 2, "jobs do run side by side: {peak}");
    assert!(rt.blocking_threads() <= 4, "{}", rt.blocking_threads());
}

#[test]
fn an_idle_pool_shrinks_to_nothing() {
    let rt =
        LocalReactor::builder().blocking_keep_alive(Duration::from_millis(30)).build().unwrap();
    assert_eq!(rt.blocking_threads(), 0, "no pool before the first job");
    util::bounded(&rt, "jobs", async {
        let a = spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)));
        let b = spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)));
        a.await.unwrap();
        b.await.unwrap();
    });
    assert!(rt.blocking_threads() >= 1);
    let start = Instant::now();
    while rt.blocking_threads() > 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "the idle threads never exited");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_panic_in_a_job_is_its_handles_join_error_and_the_pool_goes_on() {
    let rt = LocalReactor::new().unwrap();
    let (failed, ok) = util::bounded(&rt, "panicking job", async {
        let failed = spawn_blocking(|| -> u32 { panic!("job boom") }).await;
        let ok = spawn_blocking(|| 7).await;
        (failed, ok)
    });
    assert_eq!(failed, Err(JoinError::Panicked("job boom".into())));
    assert_eq!(ok, Ok(7));
}

#[test]
fn dropping_the_executor_lets_idle_threads_exit_at_once() {
    let rt = LocalReactor::builder().blocking_keep_alive(Duration::from_secs(60)).build().unwrap();
    util::bounded(&rt, "one job", async { spawn_blocking(|| ()).await.unwrap() });
    let named = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|c| c.trim_end() == "tally-blocking")
            .count()
    };
    assert!(named() >= 1);
    drop(rt);
    // Other tests' pools may be alive meanwhile: wait for the count to
    // drop by this pool's thread, well before its 60 s keep-alive.
    let start = Instant::now();
    while named() > 0 && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(start.elapsed() < Duration::from_secs(2), "the idle thread did not exit on close");
}

/// A burst queued while one pool thread is idle gets a thread per job (up
/// to the cap), not that one thread: an idle thread stays counted as idle
/// until it wakes, and every job queued before then used to be handed to
/// it. Sixteen jobs that meet at a rendezvous must all run side by side.
#[test]
fn a_burst_of_jobs_gets_threads_while_one_is_idle() {
    use std::sync::{Condvar, Mutex};
    const N: usize = 16;
    // The window is the idle thread's wake-up latency: look a few times,
    // each on a fresh executor (a fresh pool).
    for round in 0..6 {
        let rt = LocalReactor::builder().blocking_threads(32).build().unwrap();
        let met = util::bounded(&rt, "rendezvous on the pool", async {
            spawn_blocking(|| ()).await.unwrap();
            // The pool's one thread is now idle on its condvar.
            tally::time::sleep(Duration::from_millis(50)).await;
            let gate = Arc::new((Mutex::new(0usize), Condvar::new()));
            let jobs: Vec<_> = (0..N)
                .map(|_| {
                    let gate = gate.clone();
                    spawn_blocking(move || {
                        let (count, cv) = &*gate;
                        let mut c = count.lock().unwrap();
                        *c += 1;
                        cv.notify_all();
                        let wait = Duration::from_millis(1000);
                        let (c, _) = cv.wait_timeout_while(c, wait, |c| *c < N).unwrap();
                        *c >= N
                    })
                })
                .collect();
            let mut met = 0;
            for j in jobs {
                met += usize::from(j.await.unwrap());
            }
            met
        });
        assert_eq!(met, N, "round {round}: only {met} of {N} jobs ran side by side, cap 32");
    }
}
