//! A stream shared by two tasks, one reading and one writing: both sides'
//! completions arrive on the stream's one registration, and neither task
//! may miss its wake-up, whichever polled last or went away.

mod util;

use std::time::Duration;

use futures::future::Either;
use futures::{AsyncReadExt, AsyncWriteExt};
use tally::LocalReactor;
use tally::net::{TcpListener, TcpStream};
use util::bounded;

/// A connected pair on loopback.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (c, s) = futures::future::join(TcpStream::connect(addr), listener.accept()).await;
    (c.unwrap(), s.unwrap().0)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn a_stream_split_between_a_reader_task_and_a_writer_task_moves_every_byte() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "split tasks", async {
        let (client, mut server) = tcp_pair().await;
        // Echo on the server side, in its own task.
        let echo = tally::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                let n = server.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                server.write_all(&buf[..n]).await.unwrap();
            }
            server.close().await.unwrap();
        });
        // 4 MB each way is more than the socket buffers hold: both the
        // reader and the writer stall and wait on the one registration.
        let sent = pattern(4 << 20);
        let (mut r, mut w) = client.split();
        let reader = tally::spawn(async move {
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            back
        });
        let expected = sent.clone();
        let writer = tally::spawn(async move {
            for chunk in sent.chunks(10_000) {
                w.write_all(chunk).await.unwrap();
            }
            w.close().await.unwrap();
        });
        writer.await.unwrap();
        let back = reader.await.unwrap();
        echo.await.unwrap();
        assert_eq!(back.len(), expected.len());
        assert!(back == expected, "echoed bytes differ");
    });
}

#[test]
fn a_writer_task_that_gives_up_waiting_leaves_the_reader_task_woken() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "abandoned writer", async {
        let (client, mut peer) = tcp_pair().await;
        let (mut r, mut w) = client.split();
        // The reader waits first: the registration holds its waker.
        let reader = tally::spawn(async move {
            let mut buf = [0u8; 2];
            r.read_exact(&mut buf).await.unwrap();
            buf
        });
        util::yield_now().await;
        // The writer fills the socket buffers (the peer does not read),
        // waits on the registration, then gives up and sleeps long.
        let writer = tally::spawn(async move {
            let big = pattern(8 << 20);
            let write = w.write_all(&big);
            let give_up = tally::time::sleep(Duration::from_millis(50));
            futures::pin_mut!(write, give_up);
            if let Either::Left((r, _)) = futures::future::select(write, give_up).await {
                panic!("8 MB fit in the socket buffers: {r:?}");
            }
            tally::time::sleep(Duration::from_secs(30)).await;
        });
        tally::time::sleep(Duration::from_millis(100)).await;
        // Now the peer sends: the reader must wake although the writer
        // polled the registration last.
        peer.write_all(b"hi").await.unwrap();
        peer.flush().await.unwrap();
        assert_eq!(&reader.await.unwrap(), b"hi");
        drop(writer);
    });
}
