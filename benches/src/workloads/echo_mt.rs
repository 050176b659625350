//! W4 `echo 2-workers` (`--only W4MT`): W4's echo server, the same client
//! process, connections, messages and steady state, with every server on
//! [`WORKERS`] threads.
//!
//! * **tally**: a [`tally::Runtime`] with two workers (its signals left
//!   alone, `.signals(&[])`). Each worker has its own listener, all bound
//!   to one address with `SO_REUSEPORT` ([`sys::reuseport_listener`]), so
//!   the kernel hashes each connection to one worker; the worker accepts
//!   and serves each connection with one local task doing `read` +
//!   `write_all`, as W4's tally case.
//! * **tokio**: a `multi_thread` runtime with two worker threads, one
//!   listener and a spawned task per connection, as tokio's docs write a
//!   server: the accept loop runs in `block_on` (the calling thread, as
//!   `#[tokio::main]` does) and the work-stealing workers run the
//!   connections.
//! * **monoio**: one monoio runtime per worker thread
//!   ([`monoio_runtime`]), each with its own `SO_REUSEPORT` listener, and
//!   W4's monoio task per connection. The listeners are made as tally's
//!   (`from_std`), the same socket `TcpListener::bind_with_config` with
//!   `reuse_port` makes, because all of them must listen before the client
//!   starts. Threads are not pinned, as tally's workers are not.
//!
//! Every listener exists before the client connects, so the kernel's hash
//! sees all of them. The CPU per message is the bench process's CPU time
//! (`CLOCK_PROCESS_CPUTIME_ID`, every server thread; the client is another
//! process) from the last accept on any worker to the first close
//! (`Steady::process`). How the connections split between the workers is
//! recorded per run ([`Splits`]) and shown under the table; tokio's one
//! listener and work stealing have no split.
//!
//! A server stops when its last connection closes. On tally and tokio that
//! connection's task fires every accept loop's stop signal (`Done`). A
//! monoio runtime built without its `sync` feature (not a dependency here)
//! is not woken from another thread, so each monoio worker stops itself
//! when its own last connection closes after all [`CONNS`] were accepted
//! (every accept precedes every close: the client closes only after its
//! last echo). A worker that got no connection at all would wait for
//! W4's deadline (odds 2^-255 with two workers).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{Either, select};

use super::echo::{
    CONNS, DEADLINE, Steady, monoio_conn, tally_conn, timed_out, tokio_conn, with_client_on,
};
use super::{Config, monoio_runtime};
use crate::harness::{Case, Engine, Run, Spec};
use crate::sys;

/// Server threads per engine.
pub const WORKERS: usize = 2;

/// Connections accepted by each worker, one list per run, by engine.
#[derive(Clone, Debug, Default)]
pub struct Splits(Arc<Mutex<BTreeMap<Engine, Vec<Vec<usize>>>>>);

impl Splits {
    fn push(&self, engine: Engine, split: Vec<usize>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(engine)
            .or_default()
            .push(split);
    }

    /// One line for the notes under the table: each engine's split of
    /// every run (warm-up first), as `a/b`; `None` before any run.
    pub fn note(&self, workload: &str) -> Option<String> {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if all.is_empty() {
            return None;
        }
        let engines: Vec<String> = all
            .iter()
            .map(|(e, runs)| {
                let runs: Vec<String> = runs
                    .iter()
                    .map(|s| s.iter().map(usize::to_string).collect::<Vec<_>>().join("/"))
                    .collect();
                format!("{e} {}", runs.join(", "))
            })
            .collect();
        Some(format!("{workload}: connections per worker, by run: {}", engines.join("; ")))
    }
}

/// How a multi-thread server ends: the count of closed connections, and
/// one stop signal per accept loop, all fired by the last close.
#[derive(Debug)]
struct Done {
    closed: AtomicUsize,
    stops: Mutex<Vec<oneshot::Sender<()>>>,
}

impl Done {
    /// A `Done` and the stop signal of each of `loops` accept loops.
    fn new(loops: usize) -> (Arc<Done>, Vec<oneshot::Receiver<()>>) {
        let (txs, rxs) = (0..loops).map(|_| oneshot::channel()).unzip();
        (Arc::new(Done { closed: AtomicUsize::new(0), stops: Mutex::new(txs) }), rxs)
    }

    /// A connection closed; the [`CONNS`]th stops every accept loop.
    fn close(&self, steady: &Steady) {
        steady.end();
        if self.closed.fetch_add(1, Ordering::Relaxed) + 1 == CONNS {
            let stops =
                std::mem::take(&mut *self.stops.lock().unwrap_or_else(PoisonError::into_inner));
            for stop in stops {
                let _ = stop.send(());
            }
        }
    }
}

/// Runs `accept` (a loop that ends only on an error) until `stop` fires.
async fn until_stopped(
    accept: impl Future<Output = io::Result<()>>,
    stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    match select(pin!(accept), stop).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Ok(()),
    }
}

/// A multi-thread server: its listeners, W4's marks, the per-worker
/// accept counters.
type Server = fn(Vec<TcpListener>, Arc<Steady>, &[AtomicUsize]) -> io::Result<()>;

/// The W4 2-workers spec; each run's split goes to `splits`.
pub fn spec(cfg: Config, splits: &Splits) -> Spec {
    let per_conn = cfg.pick(300, 1000);
    let case = |engine, listeners, server: Server| {
        let splits = splits.clone();
        Case::new(engine, move |n| {
            let (run, split) = with_listeners(n, listeners, server)?;
            if listeners > 1 {
                splits.push(engine, split);
            }
            Ok(run)
        })
    };
    Spec {
        name: "W4 echo 2-workers".into(),
        unit: "msgs/s",
        count: per_conn * CONNS as u64,
        warmup: 20 * CONNS as u64,
        cases: vec![
            case(Engine::Tally, WORKERS, tally),
            case(Engine::Tokio, 1, tokio),
            case(Engine::Monoio, WORKERS, monoio),
        ],
    }
}

/// `n` listeners on one fresh loopback port, with `SO_REUSEPORT`.
fn listeners(n: usize) -> io::Result<Vec<TcpListener>> {
    let first = sys::reuseport_listener(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 1024)?;
    let SocketAddr::V4(addr) = first.local_addr()? else {
        return Err(io::Error::other("a loopback IPv4 listener has an IPv6 address"));
    };
    let mut all = vec![first];
    for _ in 1..n {
        all.push(sys::reuseport_listener(addr, 1024)?);
    }
    Ok(all)
}

/// Runs `server` on `n` listeners against the client process; returns the
/// run and each worker's accepted connections.
fn with_listeners(messages: u64, n: usize, server: Server) -> io::Result<(Run, Vec<usize>)> {
    let all = listeners(n)?;
    let addr = all[0].local_addr()?;
    let steady = Arc::new(Steady::process());
    let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    let run = with_client_on(messages, addr, steady.clone(), || server(all, steady, &counts))?;
    Ok((run, counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()))
}

fn tally(
    listeners: Vec<TcpListener>,
    steady: Arc<Steady>,
    counts: &[AtomicUsize],
) -> io::Result<()> {
    let rt = tally::Runtime::builder().workers(listeners.len()).signals(&[]).build()?;
    let (done, stops) = Done::new(listeners.len());
    let handle = rt.handle();
    let mut workers = Vec::with_capacity(listeners.len());
    for (i, (listener, stop)) in listeners.into_iter().zip(stops).enumerate() {
        let (steady, done) = (steady.clone(), done.clone());
        workers.push(handle.spawn_on(i, move || async move {
            listener.set_nonblocking(true)?;
            let listener = tally::net::TcpListener::from_std(listener);
            let mut accepted = 0;
            let accept = async {
                loop {
                    let (stream, _) = listener.accept().await?;
                    stream.set_nodelay(true)?;
                    accepted += 1;
                    steady.accepted();
                    let (steady, done) = (steady.clone(), done.clone());
                    drop(tally::spawn(async move {
                        tally_conn(stream).await;
                        done.close(&steady);
                    }));
                }
            };
            let served = tally::time::timeout(DEADLINE, until_stopped(accept, stop)).await;
            served.map_err(|_| timed_out())??;
            Ok::<usize, io::Error>(accepted)
        })?);
    }
    let served = rt.block_on(async {
        let mut accepted = Vec::with_capacity(workers.len());
        for w in workers {
            accepted.push(w.await.map_err(io::Error::other)??);
        }
        Ok::<Vec<usize>, io::Error>(accepted)
    });
    rt.shutdown(Duration::ZERO).map_err(io::Error::other)?;
    for (count, n) in counts.iter().zip(served?) {
        count.store(n, Ordering::Relaxed);
    }
    Ok(())
}

fn tokio(listeners: Vec<TcpListener>, steady: Arc<Steady>, _: &[AtomicUsize]) -> io::Result<()> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(WORKERS).enable_all().build()?;
    let (done, mut stops) = Done::new(1);
    let (Some(listener), Some(stop)) = (listeners.into_iter().next(), stops.pop()) else {
        return Err(io::Error::other("the tokio server needs one listener"));
    };
    rt.block_on(async {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let accept = async {
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                steady.accepted();
                let (steady, done) = (steady.clone(), done.clone());
                tokio::spawn(async move {
                    tokio_conn(stream).await;
                    done.close(&steady);
                });
            }
        };
        let served = tokio::time::timeout(DEADLINE, until_stopped(accept, stop)).await;
        served.map_err(|_| timed_out())?
    })
}

fn monoio(
    listeners: Vec<TcpListener>,
    steady: Arc<Steady>,
    counts: &[AtomicUsize],
) -> io::Result<()> {
    std::thread::scope(|scope| {
        let threads: Vec<_> = listeners
            .into_iter()
            .zip(counts)
            .map(|(listener, count)| {
                let steady = steady.clone();
                scope.spawn(move || monoio_worker(listener, &steady, count))
            })
            .collect();
        let mut result = Ok(());
        for t in threads {
            let r = t.join().unwrap_or_else(|_| Err(io::Error::other("a monoio worker panicked")));
            result = result.and(r);
        }
        result
    })
}

fn monoio_worker(
    listener: TcpListener,
    steady: &Arc<Steady>,
    count: &AtomicUsize,
) -> io::Result<()> {
    let mut rt = monoio_runtime()?;
    rt.block_on(async {
        listener.set_nonblocking(true)?;
        let listener = monoio::net::TcpListener::from_std(listener)?;
        // This worker's open connections and its own stop signal, fired on
        // this thread (see the module doc).
        let (stop_tx, stop) = oneshot::channel::<()>();
        let stop_tx = Rc::new(Cell::new(Some(stop_tx)));
        let open = Rc::new(Cell::new(0usize));
        let accept = async {
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                count.fetch_add(1, Ordering::Relaxed);
                open.set(open.get() + 1);
                steady.accepted();
                let (steady, open, stop_tx) = (steady.clone(), open.clone(), stop_tx.clone());
                drop(monoio::spawn(async move {
                    monoio_conn(stream).await;
                    steady.end();
                    open.set(open.get() - 1);
                    if open.get() == 0 && steady.all_accepted() {
                        if let Some(tx) = stop_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }));
            }
        };
        let served = monoio::time::timeout(DEADLINE, until_stopped(accept, stop)).await;
        served.map_err(|_| timed_out())?
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::time::Instant;

    use super::*;

    #[test]
    fn reuseport_listeners_share_one_port_and_its_connections() {
        let all = listeners(WORKERS).unwrap();
        let addr = all[0].local_addr().unwrap();
        assert_eq!(all[1].local_addr().unwrap(), addr);
        let clients: Vec<_> =
            (0..32).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        for l in &all {
            l.set_nonblocking(true).unwrap();
        }
        let mut per = [0usize; WORKERS];
        let deadline = Instant::now() + Duration::from_secs(5);
        while per.iter().sum::<usize>() < clients.len() && Instant::now() < deadline {
            for (i, l) in all.iter().enumerate() {
                if let Ok((mut s, _)) = l.accept() {
                    s.write_all(&[i as u8]).unwrap();
                    per[i] += 1;
                }
            }
        }
        assert_eq!(per.iter().sum::<usize>(), clients.len(), "split {per:?}");
        // Each client hears from the listener that took it.
        let mut heard = [0usize; WORKERS];
        for mut c in clients {
            let mut b = [0u8];
            c.read_exact(&mut b).unwrap();
            heard[b[0] as usize] += 1;
        }
        assert_eq!(heard, per);
    }

    #[test]
    fn the_last_close_stops_every_accept_loop_once() {
        let steady = Steady::process();
        let (done, mut stops) = Done::new(2);
        for _ in 0..CONNS - 1 {
            done.close(&steady);
        }
        assert!(stops.iter_mut().all(|s| s.try_recv() == Ok(None)));
        done.close(&steady);
        assert!(stops.iter_mut().all(|s| s.try_recv() == Ok(Some(()))));
        done.close(&steady);
    }

    #[test]
    fn the_split_note_lists_each_run_by_engine() {
        let splits = Splits::default();
        assert_eq!(splits.note("W"), None);
        splits.push(Engine::Monoio, vec![130, 126]);
        splits.push(Engine::Tally, vec![128, 128]);
        splits.push(Engine::Tally, vec![120, 136]);
        assert_eq!(
            splits.note("W").unwrap(),
            "W: connections per worker, by run: tally 128/128, 120/136; monoio 130/126"
        );
    }

    #[test]
    fn process_marks_count_every_thread() {
        let steady = Steady::process();
        for _ in 0..CONNS {
            steady.accepted();
        }
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    // 30 ms of this thread's CPU, however busy the machine.
                    let (t, cpu) = (Instant::now(), sys::thread_cpu_time());
                    while sys::thread_cpu_time() - cpu < Duration::from_millis(30)
                        && t.elapsed() < Duration::from_secs(10)
                    {
                        std::hint::black_box(0u64);
                    }
                });
            }
        });
        steady.end();
        // Two threads spun 30 ms of CPU each; the calling thread only waited.
        assert!(steady.cpu().unwrap() >= Duration::from_millis(60), "{:?}", steady.cpu());
    }
}
