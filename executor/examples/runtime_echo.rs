//! A TCP echo server on a 2-worker `tally::Runtime`: each worker accepts
//! on a listener of its own, all bound to one port with `SO_REUSEPORT`
//! (the kernel spreads the connections), and serves its connections with
//! a task each. `kill -USR2 <pid>` prints the runtime's snapshot on stderr;
//! `kill -TERM <pid>` (or Ctrl-C) shuts it down gracefully.
//!
//! ```text
//! cargo run --release --example runtime_echo -- 127.0.0.1:7879
//! ```
//!
//! With `--self-test N`, it also runs N loopback clients, checks every
//! echoed byte, then sends itself SIGUSR2 and SIGTERM and exits.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use tally::Runtime;
use tally::net::{TcpListener, TcpStream};

/// One worker's accept loop, on a listener of its own bound to `addr`;
/// sends the bound address to `bound` first.
/// It stops accepting when the runtime's shutdown starts; connections
/// already open get the shutdown's grace to finish.
async fn accept_loop(
    addr: SocketAddr,
    worker: usize,
    bound: mpsc::Sender<std::io::Result<SocketAddr>>,
    runtime: tally::Handle,
) -> std::io::Result<()> {
    let listener = TcpListener::bind_reuseport(addr);
    let _ = bound.send(listener.as_ref().map_err(clone_err).and_then(TcpListener::local_addr));
    let listener = listener?;
    let mut stop = std::pin::pin!(runtime.shutdown_requested());
    loop {
        let accept = std::pin::pin!(listener.accept());
        let (stream, peer) = match futures::future::select(accept, stop.as_mut()).await {
            futures::future::Either::Left((accepted, _)) => accepted?,
            futures::future::Either::Right(_) => return Ok(()),
        };
        tally::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (mut rd, mut wr) = stream.split();
            match futures::io::copy(&mut rd, &mut wr).await {
                Ok(n) => eprintln!("worker {worker}: {peer} done after {n} bytes"),
                Err(e) => eprintln!("worker {worker}: {peer}: {e}"),
            }
        });
    }
}

fn clone_err(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

/// Sends `signo` to this process.
fn signal_self(signo: i32) {
    // SAFETY: kill(2) on our own pid has no memory effects.
    unsafe { libc::kill(libc::getpid(), signo) };
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let self_test = args
        .iter()
        .position(|a| a == "--self-test")
        .map(|i| args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(8u8));
    let addr = args.get(1).filter(|a| !a.starts_with("--")).cloned();
    // First thing in main: the runtime blocks its signals in this thread,
    // and every thread started later inherits the mask.
    let rt = Runtime::builder().workers(2).shutdown_grace(Duration::from_secs(2)).build()?;
    let mut local: SocketAddr =
        addr.as_deref().unwrap_or("127.0.0.1:0").parse().map_err(std::io::Error::other)?;
    let handle = rt.handle();
    // The first worker binds (port 0: any free port), the others bind to
    // the port it got.
    for worker in 0..handle.workers() {
        let (bound_tx, bound) = mpsc::channel();
        let runtime = handle.clone();
        drop(handle.spawn_on(worker, move || accept_loop(local, worker, bound_tx, runtime))?);
        local = bound.recv().map_err(std::io::Error::other)??;
    }
    println!("echo server on {local}, pid {}, workers on {:?}", std::process::id(), rt.backends());
    if let Some(clients) = self_test {
        let checked = rt.block_on(async move {
            for id in 0..clients {
                let mut s = TcpStream::connect(local).await?;
                let msg = [id; 1024];
                let mut back = [0u8; 1024];
                for _ in 0..100 {
                    s.write_all(&msg).await?;
                    s.read_exact(&mut back).await?;
                    assert_eq!(back, msg, "client {id} got someone else's bytes");
                }
            }
            Ok::<_, std::io::Error>(clients)
        })?;
        println!("{checked} clients echoed 100 KiB each; sending SIGUSR2, then SIGTERM");
        signal_self(libc::SIGUSR2);
        std::thread::sleep(Duration::from_millis(100));
        signal_self(libc::SIGTERM);
    }
    rt.join().map_err(std::io::Error::other)?;
    println!("shut down");
    Ok(())
}
