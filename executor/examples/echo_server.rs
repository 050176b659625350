//! A TCP echo server: every connection gets its own task.
//!
//! ```text
//! cargo run --release --example echo_server -- 127.0.0.1:7878
//! ```
//!
//! With `--self-test N`, it also starts N clients on loopback, checks every
//! echoed byte, prints what it saw, and exits.

use std::time::Instant;

use futures::{AsyncReadExt, AsyncWriteExt};
use tally::LocalReactor;
use tally::net::{TcpListener, TcpStream};

async fn serve(mut stream: TcpStream) -> std::io::Result<u64> {
    // Echoes go out as they come in; do not let Nagle hold a partial echo
    // back waiting for the peer's delayed ACK.
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 4096];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        stream.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

async fn client(addr: std::net::SocketAddr, id: u8, messages: usize) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let msg = [id; 1024];
    let mut back = [0u8; 1024];
    for _ in 0..messages {
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        assert_eq!(back, msg, "client {id} got someone else's bytes");
    }
    s.close().await
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let self_test = args
        .iter()
        .position(|a| a == "--self-test")
        .map(|i| args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(64usize));
    let addr = args.get(1).filter(|a| !a.starts_with("--")).cloned();
    let addr = addr.unwrap_or_else(|| "127.0.0.1:0".into());
    let rt = LocalReactor::new()?;
    rt.block_on(async {
        let listener = TcpListener::bind(&addr)?;
        let local = listener.local_addr()?;
        let m = tally::reactor().metrics();
        let why = m.fallback.map(|f| format!(", {f}")).unwrap_or_default();
        println!("echo server on {local} (backend {}{why})", m.backend);
        let Some(clients) = self_test else {
            loop {
                let (stream, _) = listener.accept().await?;
                tally::spawn(async move {
                    if let Err(e) = serve(stream).await {
                        eprintln!("connection error: {e}");
                    }
                });
            }
        };
        let start = Instant::now();
        let server = tally::spawn(async move {
            for _ in 0..clients {
                let (stream, _) = listener.accept().await.expect("accept");
                tally::spawn(serve(stream));
            }
        });
        let handles: Vec<_> =
            (0..clients).map(|i| tally::spawn(client(local, i as u8, 100))).collect();
        for h in handles {
            h.await.expect("client task")?;
        }
        server.await.expect("server task");
        println!(
            "{clients} clients x 100 messages of 1 KiB echoed and checked in {:?}",
            start.elapsed()
        );
        Ok(())
    })
}
