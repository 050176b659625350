//! Loopback echo: 200 concurrent clients each send 1,000 messages to a
//! tally `TcpListener` echo server on the same `LocalReactor`, and every
//! echoed byte is checked.
//!
//! Each message carries its client's id and its sequence number, and its
//! body is a pattern that depends on both, so a byte that went to the wrong
//! client, was reordered, lost or duplicated fails the test. Half the
//! clients run in lock step (one message in flight); the other half write
//! all their messages from one task while another reads the echoes, so that
//! many receive completions queue up between two reads.

mod util;

use std::time::Instant;

use futures::{AsyncReadExt, AsyncWriteExt};
use tally::LocalReactor;
use tally::net::{TcpListener, TcpStream};

const CLIENTS: usize = 200;
const MESSAGES: u32 = 1000;
const SIZE: usize = 128;

fn message(client: u16, seq: u32) -> [u8; SIZE] {
    let mut m = [0u8; SIZE];
    m[..2].copy_from_slice(&client.to_le_bytes());
    m[2..6].copy_from_slice(&seq.to_le_bytes());
    let seed = (client as u32).wrapping_mul(2_654_435_761) ^ seq.wrapping_mul(40_503);
    for (i, b) in m[6..].iter_mut().enumerate() {
        *b = (seed >> (i % 4 * 8)) as u8 ^ i as u8;
    }
    m
}

#[track_caller]
fn check(client: u16, seq: u32, got: &[u8; SIZE]) {
    if got != &message(client, seq) {
        let from = u16::from_le_bytes([got[0], got[1]]);
        let at = u32::from_le_bytes([got[2], got[3], got[4], got[5]]);
        panic!("client {client}, message {seq}: got bytes of client {from}, message {at}");
    }
}

async fn serve(mut stream: TcpStream) -> u64 {
    let mut buf = vec![0u8; 4096];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await.expect("server read");
        if n == 0 {
            stream.close().await.expect("server close");
            return total;
        }
        stream.write_all(&buf[..n]).await.expect("server write");
        total += n as u64;
    }
}

async fn lock_step(addr: std::net::SocketAddr, client: u16) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).unwrap();
    let mut back = [0u8; SIZE];
    for seq in 0..MESSAGES {
        s.write_all(&message(client, seq)).await.expect("client write");
        s.read_exact(&mut back).await.expect("client read");
        check(client, seq, &back);
    }
    s.close().await.expect("client close");
    assert_eq!(s.read(&mut back).await.expect("read EOF"), 0, "client {client}: EOF");
}

async fn streaming(addr: std::net::SocketAddr, client: u16) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = s.split();
    let writer = async move {
        for seq in 0..MESSAGES {
            w.write_all(&message(client, seq)).await.expect("client write");
        }
        w.close().await.expect("client close");
    };
    let reader = async move {
        let mut back = [0u8; SIZE];
        for seq in 0..MESSAGES {
            r.read_exact(&mut back).await.expect("client read");
            check(client, seq, &back);
        }
        assert_eq!(r.read(&mut back).await.expect("read EOF"), 0, "client {client}: EOF");
    };
    futures::future::join(writer, reader).await;
}

#[test]
fn two_hundred_clients_a_thousand_messages_each() {
    let rt = LocalReactor::new().unwrap();
    let start = Instant::now();
    let served = util::bounded(&rt, "the echo test", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tally::spawn(async move {
            let mut conns = Vec::new();
            for _ in 0..CLIENTS {
                let (stream, _) = listener.accept().await.expect("accept");
                conns.push(tally::spawn(serve(stream)));
            }
            let mut total = 0;
            for c in conns {
                total += c.await.expect("server task");
            }
            total
        });
        let clients: Vec<_> = (0..CLIENTS as u16)
            .map(|c| {
                if c % 2 == 0 {
                    tally::spawn(lock_step(addr, c))
                } else {
                    tally::spawn(streaming(addr, c))
                }
            })
            .collect();
        for (i, c) in clients.into_iter().enumerate() {
            c.await.unwrap_or_else(|e| panic!("client {i}: {e}"));
        }
        server.await.expect("server")
    });
    assert_eq!(served, (CLIENTS as u64) * u64::from(MESSAGES) * SIZE as u64);
    let m = rt.metrics();
    println!(
        "{CLIENTS} clients x {MESSAGES} messages of {SIZE} bytes in {:?}; {} turns, {} kernel \
         entries, {} completions, {} queue overflows",
        start.elapsed(),
        m.turns,
        m.enters,
        m.completions,
        m.queue_overflows
    );
}
