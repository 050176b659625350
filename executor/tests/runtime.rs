//! The multi-thread `Runtime`: placement, outputs and panics coming back,
//! a failing worker, graceful shutdown with a deadline, no thread left
//! behind, and a cross-worker flood of user packets and raises.

mod util;

use std::io;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use tally::runtime::{OnFailure, RestartPolicy, ServiceFailure};
use tally::{JoinError, PacketKind, Runtime, Signals};
use util::{Watchdog, yield_now};

/// Names of this process's threads, from `/proc/self/task`.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_string())
        .collect()
}

/// Worker threads named `<prefix>-<i>`. (The coordinator,
/// `<prefix>-coord`, may not have named itself yet when a test first
/// counts.)
fn threads(prefix: &str) -> usize {
    let want = format!("{prefix}-");
    let is_worker = |n: &String| n.strip_prefix(&want).is_some_and(|i| i.parse::<usize>().is_ok());
    thread_names().iter().filter(|n| is_worker(n)).count()
}

/// Threads of a runtime named `prefix`: workers and coordinator.
fn all_threads(prefix: &str) -> usize {
    let want = format!("{prefix}-");
    thread_names().iter().filter(|n| n.starts_with(&want)).count()
}

/// Waits for `fut` on a fresh `LocalReactor` of this thread.
fn wait<F: std::future::Future>(fut: F) -> F::Output {
    tally::LocalReactor::new().unwrap().block_on(fut)
}

fn worker_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

#[test]
fn spawns_go_round_robin_and_their_outputs_come_back() {
    let _dog = Watchdog::new("round robin", Duration::from_secs(30));
    let rt = Runtime::builder().workers(2).thread_name("rr").build().unwrap();
    assert_eq!(rt.backends().len(), 2);
    let handle = rt.handle();
    let names = rt.block_on(async move {
        let mut handles = Vec::new();
        for i in 0..8u32 {
            // The future is built on the worker: an Rc is fine in it.
            handles.push(
                handle
                    .spawn(move || async move {
                        let local = std::rc::Rc::new(i);
                        yield_now().await;
                        (*local, worker_name())
                    })
                    .unwrap(),
            );
        }
        let mut names = Vec::new();
        for (i, h) in handles.into_iter().enumerate() {
            let (out, name) = h.await.unwrap();
            assert_eq!(out, i as u32);
            names.push(name);
        }
        names
    });
    assert_eq!(names, ["rr-0", "rr-1", "rr-0", "rr-1", "rr-0", "rr-1", "rr-0", "rr-1"]);
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn spawn_on_picks_the_worker_and_refuses_one_that_does_not_exist() {
    let _dog = Watchdog::new("spawn_on", Duration::from_secs(30));
    let rt = Runtime::builder().workers(2).thread_name("on").build().unwrap();
    let handle = rt.handle();
    let name = rt.block_on(handle.spawn_on(1, || async { worker_name() }).unwrap()).unwrap();
    assert_eq!(name, "on-1");
    let err = handle.spawn_on(2, || async {}).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn a_task_that_panics_reports_it_and_the_worker_goes_on() {
    let _dog = Watchdog::new("task panic", Duration::from_secs(30));
    let rt = Runtime::builder().workers(1).build().unwrap();
    let handle = rt.handle();
    let (failed, ok) = rt.block_on(async move {
        let failed = handle.spawn(|| async { panic!("task boom") }).unwrap().await;
        let ok = handle.spawn(|| async { 7 }).unwrap().await;
        (failed, ok)
    });
    assert_eq!(failed, Err::<(), _>(JoinError::Panicked("task boom".into())));
    assert_eq!(ok, Ok(7));
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn a_failing_worker_stops_the_others_and_join_names_it() {
    let _dog = Watchdog::new("worker failure", Duration::from_secs(30));
    let rt = Runtime::builder().workers(3).thread_name("fail").build().unwrap();
    assert_eq!(threads("fail"), 3);
    let handle = rt.handle();
    // A long task on worker 0, which the failure must cut short.
    let long = handle.spawn_on(0, std::future::pending::<()>).unwrap();
    // Building the future panics on worker 2: outside any task, so the
    // worker itself fails.
    drop(handle.spawn_on(2, || -> std::future::Ready<()> { panic!("worker boom") }).unwrap());
    let err = rt.join().unwrap_err();
    assert_eq!(err.worker, 2);
    assert_eq!(err.message, "worker boom");
    assert_eq!(err.to_string(), "tally worker 2 panicked: worker boom");
    assert_eq!(wait(long), Err(JoinError::Cancelled));
    assert_eq!(all_threads("fail"), 0, "no thread is left behind");
    let refused = handle.spawn(|| async {}).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::BrokenPipe);
}

#[test]
fn shutdown_lets_tasks_finish_within_the_grace_and_drops_the_rest_at_it() {
    let _dog = Watchdog::new("graceful shutdown", Duration::from_secs(30));
    let rt = Runtime::builder().workers(2).thread_name("grace").build().unwrap();
    assert_eq!(threads("grace"), 2);
    let handle = rt.handle();
    let quick = handle
        .spawn(|| async {
            tally::time::sleep(Duration::from_millis(20)).await;
            "done"
        })
        .unwrap();
    let stubborn = handle.spawn(std::future::pending::<()>).unwrap();
    // Let both start before the shutdown.
    std::thread::sleep(Duration::from_millis(5));
    let grace = Duration::from_millis(300);
    let start = Instant::now();
    rt.shutdown(grace).unwrap();
    let took = start.elapsed();
    assert!(took >= grace, "the stubborn task holds the shutdown to its deadline: {took:?}");
    assert!(took < grace + Duration::from_secs(2), "shutdown overran its deadline: {took:?}");
    assert_eq!(wait(quick), Ok("done"));
    assert_eq!(wait(stubborn), Err(JoinError::Cancelled));
    assert_eq!(all_threads("grace"), 0);
}

#[test]
fn dropping_the_runtime_joins_every_worker() {
    let rt = Runtime::builder().workers(2).thread_name("dropped").build().unwrap();
    assert_eq!(threads("dropped"), 2);
    let handle = rt.handle();
    drop(handle.spawn(std::future::pending::<()>).unwrap());
    drop(rt);
    assert_eq!(all_threads("dropped"), 0);
}

/// Packets that must cross from worker 0 to worker 1.
const FLOOD: u32 = 20_000;

#[test]
fn a_cross_worker_flood_of_user_packets_and_raises_loses_nothing() {
    let _dog = Watchdog::new("cross-worker flood", Duration::from_secs(60));
    let rt = Runtime::builder().workers(2).build().unwrap();
    let handle = rt.handle();
    let (tx, rx) = std::sync::mpsc::channel();
    // The receiving registration lives on worker 1; its Sender and
    // Signaler go to worker 0.
    let receiver = handle
        .spawn_on(1, move || async move {
            let reg = tally::reactor().register();
            tx.send((reg.sender(), reg.signaler())).unwrap();
            let (mut next, mut raised) = (0u32, 0u32);
            while next < FLOOD || raised < FLOOD {
                for p in reg.packets().await {
                    match p.kind() {
                        PacketKind::User(payload) => {
                            let got = u32::from_le_bytes(payload[..4].try_into().unwrap());
                            assert_eq!(got, next, "user packets arrive in order, none lost");
                            next += 1;
                        }
                        PacketKind::Signal(s) => raised += s.count.get(),
                        other => panic!("unexpected packet {other:?}"),
                    }
                }
            }
            (next, raised)
        })
        .unwrap();
    let (sender, signaler) = rx.recv().unwrap();
    let producer = handle
        .spawn_on(0, move || async move {
            let mut refused = 0u32;
            for i in 0..FLOOD {
                let mut payload = [0u8; 32];
                payload[..4].copy_from_slice(&i.to_le_bytes());
                loop {
                    match sender.send(payload) {
                        Ok(()) => break,
                        // Back pressure, reported to the sender: wait and
                        // send again.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            refused += 1;
                            yield_now().await;
                        }
                        Err(e) => panic!("send failed: {e}"),
                    }
                }
                signaler.raise(Signals::user(1), 1).unwrap();
            }
            refused
        })
        .unwrap();
    let (refused, (next, raised)) = rt.block_on(async {
        let refused = producer.await.unwrap();
        (refused, receiver.await.unwrap())
    });
    assert_eq!((next, raised), (FLOOD, FLOOD));
    println!("{refused} sends refused with WouldBlock and retried");
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn workers_name_their_backends() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let backends = rt.backends();
    assert_eq!(backends.len(), 2);
    assert!(backends.iter().all(|b| *b != tally::Backend::Auto), "{backends:?}");
    rt.shutdown(Duration::ZERO).unwrap();
}

#[test]
fn a_worker_blocked_in_a_task_is_reported_stalled_and_an_idle_one_is_not() {
    let _dog = Watchdog::new("stall", Duration::from_secs(30));
    let rt = Runtime::builder().workers(2).build().unwrap();
    let handle = rt.handle();
    // Both idle for three thresholds: parked, so not stalled.
    std::thread::sleep(Duration::from_millis(300));
    assert!(rt.worker_stats().iter().all(|s| s.stalls == 0), "{:?}", rt.worker_stats());
    // Worker 1 blocks its thread for 300 ms inside a task.
    let blocked = handle
        .spawn_on(1, || async {
            std::thread::sleep(Duration::from_millis(300));
        })
        .unwrap();
    rt.block_on(blocked).unwrap();
    let stats = rt.worker_stats();
    assert_eq!(stats[0].stalls, 0, "{stats:?}");
    assert_eq!(stats[1].stalls, 1, "one stall, reported once: {stats:?}");
    // Sampled every 25 ms: at least the threshold, and about the 300 ms
    // block (with room for a late sample on a loaded machine).
    let longest = stats[1].longest_stall;
    assert!(longest >= Duration::from_millis(100), "{longest:?}");
    assert!(longest <= Duration::from_millis(500), "{longest:?}");
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

/// The coordinator thread of the runtime named `prefix`, by thread id,
/// once it has named itself (within 5 s).
fn coordinator_tid(prefix: &str) -> libc::pid_t {
    let want = format!("{prefix}-coord");
    let start = Instant::now();
    loop {
        for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == want {
                return t.file_name().to_str().unwrap().parse().unwrap();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no thread {want}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `signo` to thread `tid` of this process. Thread-directed, so that
/// no other thread of the test binary (which does not block it) takes it.
fn tgkill(tid: libc::pid_t, signo: i32) {
    // SAFETY: tgkill with this process's id, a live thread id and a signal
    // number; it has no memory effects.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signo) };
    assert_eq!(r, 0, "tgkill: {}", io::Error::last_os_error());
}

#[test]
fn a_storm_of_real_signals_reaches_every_receiver_with_counts_that_add_up() {
    let _dog = Watchdog::new("signal storm", Duration::from_secs(30));
    // A real-time signal: deliveries queue instead of coalescing in the
    // kernel, so every receiver must count exactly what was sent.
    let rt_signal = libc::SIGRTMIN() + 1;
    const SENT: u32 = 200;
    let rt =
        Runtime::builder().workers(2).thread_name("storm").signals(&[rt_signal]).build().unwrap();
    let handle = rt.handle();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let receivers: Vec<_> = (0..2)
        .map(|w| {
            let (h, ready_tx) = (handle.clone(), ready_tx.clone());
            handle
                .spawn_on(w, move || async move {
                    let mut rx = h.signals(&[rt_signal]).unwrap();
                    ready_tx.send(()).unwrap();
                    let (mut seen, mut packets) = (0u32, 0u32);
                    while seen < SENT {
                        for p in rx.recv().await {
                            let PacketKind::ProcessSignal(s) = p.kind() else { panic!("{p:?}") };
                            assert_eq!(s.signo, rt_signal);
                            seen += s.count.get();
                            packets += 1;
                        }
                    }
                    (seen, packets)
                })
                .unwrap()
        })
        .collect();
    ready.recv().unwrap();
    ready.recv().unwrap();
    let coord = coordinator_tid("storm");
    for _ in 0..SENT {
        tgkill(coord, rt_signal);
    }
    let outs = rt.block_on(async {
        let mut outs = Vec::new();
        for r in receivers {
            outs.push(r.await.unwrap());
        }
        outs
    });
    for (seen, packets) in outs {
        assert_eq!(seen, SENT);
        assert!(packets <= SENT, "counts coalesce: {packets} packets for {seen} signals");
    }
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn sigterm_with_no_receiver_shuts_down_within_the_grace() {
    let _dog = Watchdog::new("sigterm", Duration::from_secs(30));
    let grace = Duration::from_millis(200);
    let rt = Runtime::builder()
        .workers(2)
        .thread_name("term")
        .signals(&[libc::SIGTERM, libc::SIGUSR2])
        .shutdown_grace(grace)
        .build()
        .unwrap();
    let handle = rt.handle();
    let stubborn = handle.spawn(std::future::pending::<()>).unwrap();
    let coord = coordinator_tid("term");
    // A snapshot first: printed, and the runtime goes on.
    tgkill(coord, libc::SIGUSR2);
    assert_eq!(rt.block_on(handle.spawn(|| async { 5 }).unwrap()), Ok(5));
    let start = Instant::now();
    tgkill(coord, libc::SIGTERM);
    rt.join().unwrap();
    let took = start.elapsed();
    assert!(took >= grace - Duration::from_millis(50), "{took:?}");
    assert!(took < grace + Duration::from_secs(2), "{took:?}");
    assert_eq!(wait(stubborn), Err(JoinError::Cancelled));
    assert_eq!(all_threads("term"), 0);
}

#[test]
fn a_signal_the_runtime_does_not_read_is_refused() {
    let rt = Runtime::builder().workers(1).signals(&[]).build().unwrap();
    let handle = rt.handle();
    let err = rt.block_on(async move { handle.signals(&[libc::SIGUSR1]).unwrap_err() });
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    rt.shutdown(Duration::ZERO).unwrap();
}

/// A policy for tests: 40 ms, doubling, at most `max` restarts in 10 s.
fn policy(max: u32) -> RestartPolicy {
    RestartPolicy {
        delay: Duration::from_millis(40),
        backoff: 2.0,
        max_delay: Duration::from_secs(1),
        max_restarts: max,
        window: Duration::from_secs(10),
    }
}

#[test]
fn a_supervised_service_restarts_after_its_delay_with_back_off_and_its_resources_dropped() {
    let _dog = Watchdog::new("supervise", Duration::from_secs(30));
    let rt = Runtime::builder().workers(1).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, bool)>();
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = runs.clone();
    rt.handle()
        .supervise(
            "flaky",
            0,
            move || {
                let (tx, run) = (tx.clone(), counter.fetch_add(1, Ordering::SeqCst));
                // What a run owns: a registration, captured by the future,
                // so that only dropping the future drops it. The worker's
                // own control registration is the other one.
                let clean = tally::reactor().metrics().registrations == 1;
                let reg = tally::reactor().register();
                async move {
                    let _owned = &reg;
                    tx.send((Instant::now(), clean)).unwrap();
                    match run {
                        0 => Err("first failure"),
                        1 => panic!("second failure"),
                        _ => Ok(()),
                    }
                }
            },
            policy(5),
            OnFailure::FailRuntime,
        )
        .unwrap();
    let starts: Vec<(Instant, bool)> = (0..3).map(|_| rx.recv().unwrap()).collect();
    assert!(starts.iter().all(|(_, clean)| *clean), "each run starts with no leftovers");
    let gaps = [starts[1].0 - starts[0].0, starts[2].0 - starts[1].0];
    assert!(gaps[0] >= Duration::from_millis(40), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(80), "the back-off doubles the delay: {gaps:?}");
    assert!(gaps[1] < Duration::from_secs(2), "{gaps:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(runs.load(Ordering::SeqCst), 3, "a service that returns Ok is not restarted");
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn a_service_past_max_restarts_fails_the_runtime_or_calls_back() {
    let _dog = Watchdog::new("max restarts", Duration::from_secs(30));
    let rt = Runtime::builder().workers(2).thread_name("svc").build().unwrap();
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = runs.clone();
    let start = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>("always") }
    };
    rt.handle().supervise("doomed", 1, start, policy(2), OnFailure::FailRuntime).unwrap();
    let err = rt.join().unwrap_err();
    assert_eq!(err.service.as_deref(), Some("doomed"));
    assert_eq!((err.worker, err.message.as_str()), (1, "always"));
    assert_eq!(err.to_string(), "tally service \"doomed\" on worker 1 failed: always");
    assert_eq!(runs.load(Ordering::SeqCst), 3, "the first run and two restarts");
    assert_eq!(all_threads("svc"), 0);

    // The same with a callback: the runtime runs on.
    let rt = Runtime::builder().workers(1).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let report = OnFailure::Callback(std::sync::Arc::new(move |f: &ServiceFailure| {
        tx.lock().unwrap().send(f.clone()).unwrap();
    }));
    let start = || async { Err::<(), _>("again") };
    rt.handle().supervise("called", 0, start, policy(1), report).unwrap();
    let failure = rx.recv().unwrap();
    assert_eq!((failure.name.as_str(), failure.restarts), ("called", 1));
    assert_eq!(rt.block_on(rt.handle().spawn(|| async { 1 }).unwrap()), Ok(1));
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

/// The CPUs the calling thread may run on.
fn affinity() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a cpu_set_t of its own size.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(r, 0);
    // SAFETY: `set` is a valid cpu_set_t and every index < CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

#[test]
fn pinned_workers_each_run_on_one_cpu_in_turn() {
    let cpus = affinity();
    let rt = Runtime::builder().workers(3).pin_workers(true).signals(&[]).build().unwrap();
    let handle = rt.handle();
    let pinned: Vec<Vec<usize>> = (0..3)
        .map(|w| rt.block_on(handle.spawn_on(w, || async { affinity() }).unwrap()).unwrap())
        .collect();
    for (w, set) in pinned.iter().enumerate() {
        assert_eq!(set, &[cpus[w % cpus.len()]], "worker {w}");
    }
    rt.shutdown(Duration::ZERO).unwrap();
}

#[test]
fn a_full_inbox_pushes_back_on_spawners() {
    let _dog = Watchdog::new("inbox back pressure", Duration::from_secs(30));
    let rt = Runtime::builder().workers(1).inbox_capacity(4).signals(&[]).build().unwrap();
    let handle = rt.handle();
    // Hold the worker in a blocking job so its inbox fills.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    drop(
        handle
            .spawn(move || {
                started_tx.send(()).unwrap();
                held.recv().unwrap();
                async {}
            })
            .unwrap(),
    );
    started.recv().unwrap();
    let mut accepted = Vec::new();
    let refused = loop {
        match handle.spawn(|| async { 1u32 }) {
            Ok(h) => accepted.push(h),
            Err(e) => break e,
        }
        assert!(accepted.len() <= 4, "the inbox holds 4 jobs");
    };
    assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(accepted.len(), 4);
    release.send(()).unwrap();
    let sum = rt.block_on(async move {
        let mut sum = 0;
        for h in accepted {
            sum += h.await.unwrap();
        }
        sum
    });
    assert_eq!(sum, 4, "every accepted spawn ran: nothing dropped");
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn reuseport_listeners_on_two_workers_share_the_connections() {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    let _dog = Watchdog::new("reuseport", Duration::from_secs(30));
    const CONNS: usize = 64;
    let rt = Runtime::builder().workers(2).signals(&[]).build().unwrap();
    let handle = rt.handle();
    // Each worker accepts on a listener of its own, both bound to one
    // port; each connection is told which worker took it. The shutdown
    // at the end drops both loops.
    let serve = |w: usize, addr: std::net::SocketAddr, bound: std::sync::mpsc::Sender<_>| {
        move || async move {
            let l = tally::net::TcpListener::bind_reuseport(addr).unwrap();
            bound.send(l.local_addr().unwrap()).unwrap();
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&[w as u8]).await.unwrap();
            }
        }
    };
    let (bound_tx, bound) = std::sync::mpsc::channel();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    drop(handle.spawn_on(0, serve(0, any, bound_tx.clone())).unwrap());
    let addr = bound.recv().unwrap();
    drop(handle.spawn_on(1, serve(1, addr, bound_tx)).unwrap());
    assert_eq!(bound.recv().unwrap(), addr);
    let per_worker = rt.block_on(async {
        let mut per_worker = [0usize; 2];
        for _ in 0..CONNS {
            let mut c = tally::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(&[1]).await.unwrap();
            let mut w = [0u8; 1];
            c.read_exact(&mut w).await.unwrap();
            per_worker[w[0] as usize] += 1;
        }
        per_worker
    });
    assert_eq!(per_worker.iter().sum::<usize>(), CONNS);
    assert!(per_worker.iter().all(|&n| n > 0), "the kernel spread them: {per_worker:?}");
    rt.shutdown(Duration::ZERO).unwrap();
}

#[test]
fn an_accept_loop_that_selects_on_shutdown_requested_ends_the_shutdown_early() {
    let _dog = Watchdog::new("shutdown_requested", Duration::from_secs(30));
    let rt = Runtime::builder().workers(2).signals(&[]).build().unwrap();
    let handle = rt.handle();
    let loops: Vec<_> = (0..2)
        .map(|w| {
            let h = handle.clone();
            handle
                .spawn_on(w, move || async move {
                    let l = tally::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let accept = std::pin::pin!(l.accept());
                    let stop = std::pin::pin!(h.shutdown_requested());
                    // Ends on the shutdown, not on a connection.
                    matches!(
                        futures::future::select(accept, stop).await,
                        futures::future::Either::Right(_)
                    )
                })
                .unwrap()
        })
        .collect();
    // A waiter outside any worker too, on another thread.
    let outside = {
        let h = handle.clone();
        std::thread::spawn(move || wait(h.shutdown_requested()))
    };
    std::thread::sleep(Duration::from_millis(20));
    let start = Instant::now();
    rt.shutdown(Duration::from_secs(10)).unwrap();
    let took = start.elapsed();
    println!("shutdown took {took:?}");
    assert!(took < Duration::from_secs(2), "the loops ended long before the 10 s grace: {took:?}");
    for l in loops {
        assert_eq!(wait(l), Ok(true));
    }
    outside.join().unwrap();
    // Asked after the start: ready at once.
    wait(handle.shutdown_requested());
}
