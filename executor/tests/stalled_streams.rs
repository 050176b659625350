//! Review finding 6: every stream's receive shares one ring of provided
//! buffers, so streams whose peers keep sending while the application does
//! not read them must not hold every buffer and starve the others. Each
//! stream holds at most its share; past it, that stream alone pauses.

mod util;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use tally::LocalReactor;
use tally::net::TcpListener;
use util::bounded;

const FLOODED: usize = 4;
const ROUND_TRIPS: usize = 1000;

/// A peer that writes as fast as the socket takes it until told to stop
/// (or the connection goes), bounded at 30 s.
fn flood(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
        let chunk = [0x5au8; 64 * 1024];
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
            match s.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
    })
}

#[test]
fn four_flooded_unread_streams_do_not_starve_a_fifth() {
    let rt = LocalReactor::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    bounded(&rt, "ping-pong beside flooded streams", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let flooders: Vec<_> = (0..FLOODED).map(|_| flood(addr, stop.clone())).collect();
        let mut flooded = Vec::new();
        for _ in 0..FLOODED {
            let (mut s, _) = listener.accept().await.unwrap();
            // One read arms the stream's receive; then nobody reads it.
            let mut first = [0u8; 1];
            s.read_exact(&mut first).await.unwrap();
            flooded.push(s);
        }
        // Let the floods fill whatever receive buffers they may hold.
        tally::time::sleep(Duration::from_millis(300)).await;

        let pinger = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut byte = [0u8; 1];
            for i in 0..ROUND_TRIPS {
                s.write_all(&[i as u8]).unwrap();
                s.read_exact(&mut byte).unwrap();
                assert_eq!(byte[0], i as u8);
            }
        });
        let (mut s, _) = listener.accept().await.unwrap();
        let start = Instant::now();
        let mut byte = [0u8; 1];
        for _ in 0..ROUND_TRIPS {
            let read = tally::time::timeout(Duration::from_secs(5), s.read_exact(&mut byte)).await;
            read.expect("the fifth stream's read starved: the flooded streams hold every buffer")
                .unwrap();
            s.write_all(&byte).await.unwrap();
            s.flush().await.unwrap();
        }
        println!(
            "{ROUND_TRIPS} round trips beside {FLOODED} flooded streams: {:?}",
            start.elapsed()
        );
        pinger.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        drop(flooded);
        for f in flooders {
            f.join().unwrap();
        }
    });
}
