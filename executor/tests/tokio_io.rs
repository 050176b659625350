//! With the `tokio-io` feature: tokio-io libraries on tally streams. A
//! `tokio_util::codec::LinesCodec` framed over a tally `TcpStream`, both
//! ways, and tokio's own `AsyncReadExt`/`AsyncWriteExt` on a `UnixStream`.
//!
//! Run with `cargo test -p tally --features tokio-io --test tokio_io`.

mod util;

use futures::{SinkExt as _, StreamExt as _};
use tally::LocalReactor;
use tally::net::{TcpListener, TcpStream, UnixStream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::codec::{Framed, LinesCodec};

/// Lines each way.
const LINES: usize = 2_000;

#[test]
fn lines_codec_framed_over_a_tally_tcp_stream() {
    let rt = LocalReactor::new().unwrap();
    util::bounded(&rt, "LinesCodec echo", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The server answers each line with its length, then the line.
        let server = tally::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut framed = Framed::new(stream, LinesCodec::new());
            let mut served = 0;
            while let Some(line) = framed.next().await {
                let line = line.unwrap();
                framed.send(format!("{} {line}", line.len())).await.unwrap();
                served += 1;
            }
            served
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut framed = Framed::new(stream, LinesCodec::new());
        for i in 0..LINES {
            // Lines of growing length, so that some span several reads.
            let line = format!("line {i} {}", "x".repeat(i % 700));
            framed.send(line.clone()).await.unwrap();
            let back = framed.next().await.unwrap().unwrap();
            assert_eq!(back, format!("{} {line}", line.len()));
        }
        // Closing the sink shuts the write half down: the server sees the
        // end of its stream and returns.
        futures::SinkExt::<String>::close(&mut framed).await.unwrap();
        assert_eq!(server.await.unwrap(), LINES);
    });
}

#[test]
fn tokio_read_and_write_ext_on_a_unix_pair() {
    let rt = LocalReactor::new().unwrap();
    util::bounded(&rt, "tokio io-util on a UnixStream", async {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tally::spawn(async move {
            a.write_all(&data).await.unwrap();
            a.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrive in order");
        // A zero-length read buffer answers at once.
        let mut empty = [0u8; 0];
        assert_eq!(b.read(&mut empty).await.unwrap(), 0);
    });
}
