//! Writes are first tried inline, by a non-blocking `send(2)`, and go
//! through the reactor only when the socket buffer is full: the bytes must
//! still arrive in order across the switch, and a reset peer must give an
//! error, never `SIGPIPE`.

mod util;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use tally::LocalReactor;
use tally::net::{TcpListener, TcpStream, UnixStream};
use util::bounded;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + i / 509) as u8).collect()
}

#[test]
fn small_writes_that_fill_the_socket_buffer_arrive_in_order_through_the_ring() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "inline then ring", async {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        // Far more than the socket buffers hold, in small writes: the
        // first ones go inline, then one hits EAGAIN and waits in the
        // ring, and the next write waits for it.
        let sent = pattern(3 << 20);
        let writer = async {
            for chunk in sent.chunks(1000) {
                a.write_all(chunk).await.unwrap();
            }
            a.close().await.unwrap();
        };
        let reader = async {
            // Let the buffer fill before reading anything.
            tally::time::sleep(Duration::from_millis(20)).await;
            let mut back = Vec::new();
            b.read_to_end(&mut back).await.unwrap();
            back
        };
        let ((), back) = futures::future::join(writer, reader).await;
        assert_eq!(back.len(), sent.len());
        assert!(back == sent, "bytes out of order");
    });
}

#[test]
fn writing_to_a_reset_peer_is_an_error_not_sigpipe() {
    // Rust programs ignore SIGPIPE; restore its default (which kills the
    // process) so a send without MSG_NOSIGNAL would fail this test.
    // SAFETY: signal(2) with a valid signal number and SIG_DFL.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "reset peer", async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (peer, _) = listener.accept().unwrap();
        util::linger_zero(peer.as_raw_fd());
        drop(peer);
        // The RST reaches our socket at once on loopback; keep writing
        // until the error shows, within bounds.
        let start = Instant::now();
        let err = loop {
            match stream.write_all(b"after the reset").await {
                Ok(()) => {}
                Err(e) => break e,
            }
            assert!(start.elapsed() < Duration::from_secs(5), "no error after the reset");
            tally::time::sleep(Duration::from_millis(1)).await;
        };
        assert!(
            matches!(err.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET)),
            "unexpected error: {err:?}"
        );
        // The stream stays usable as a value: a flush reports, not panics.
        let _ = stream.flush().await;
    });
    // SAFETY: as above, back to what Rust programs run with.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

#[test]
fn a_tcp_round_trip_of_small_writes() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "tcp small writes", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (c, s) = futures::future::join(TcpStream::connect(addr), listener.accept()).await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap().0);
        for i in 0..1000u32 {
            c.write_all(&i.to_le_bytes()).await.unwrap();
            let mut got = [0u8; 4];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(u32::from_le_bytes(got), i);
        }
    });
}
