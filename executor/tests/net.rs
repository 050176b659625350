//! Sockets: Unix streams and listeners, UDP and Unix datagrams, buffered
//! reads, close and shutdown, and the promise that a dropped read loses no
//! data.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::task::Poll;
use std::time::Duration;

use futures::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tally::LocalReactor;
use tally::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream};
use util::{bounded, socket_path};

/// `len` bytes that say who wrote them and where in the stream they sit.
fn pattern(seed: u8, start: usize, len: usize) -> Vec<u8> {
    (start..start + len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn unix_listener_and_stream_round_trip() {
    let rt = LocalReactor::new().unwrap();
    let path = socket_path("listener");
    bounded(&rt, "unix round trip", async {
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(listener.local_addr().unwrap().as_pathname(), Some(path.as_path()));
        let server = tally::spawn(async move {
            for _ in 0..3 {
                let (mut s, _) = listener.accept().await.unwrap();
                tally::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let n = s.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        s.write_all(&buf[..n]).await.unwrap();
                    }
                    s.close().await.unwrap();
                });
            }
        });
        for seed in 0..3u8 {
            let c = UnixStream::connect(&path).await.unwrap();
            assert!(c.peer_addr().unwrap().as_pathname().is_some());
            let sent = pattern(seed, 0, 100_000);
            // Write everything before reading back: 100 KB is more than the
            // socket buffers hold, so write and read in two tasks.
            let mut back = Vec::new();
            let (mut r, mut w) = c.split();
            let writer = async {
                w.write_all(&sent).await.unwrap();
                w.flush().await.unwrap();
                w.close().await.unwrap();
            };
            let reader = async { r.read_to_end(&mut back).await.unwrap() };
            futures::future::join(writer, reader).await;
            assert_eq!(back.len(), sent.len());
            assert!(back == sent, "client {seed}: echoed bytes differ");
        }
        server.await.unwrap();
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_unix_pair_round_trip() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "pair", async {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        b.write_all(b"pong").await.unwrap();
        a.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    });
}

#[test]
fn udp_round_trip() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "udp", async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let echo = tally::spawn(async move {
            let mut buf = [0u8; 1500];
            for _ in 0..100 {
                let (n, from) = b.recv_from(&mut buf).await.unwrap();
                b.send_to(&buf[..n], from).await.unwrap();
            }
        });
        let mut buf = [0u8; 1500];
        for i in 0..100u8 {
            let msg = pattern(i, 0, 1 + i as usize * 10);
            assert_eq!(a.send_to(&msg, ba).await.unwrap(), msg.len());
            let (n, from) = a.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (&msg[..], ba));
        }
        echo.await.unwrap();
        // Connected sockets.
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.connect(aa).unwrap();
        a.connect(c.local_addr().unwrap()).unwrap();
        c.send(b"connected").await.unwrap();
        let n = a.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"connected");
    });
}

#[test]
fn unix_datagram_round_trip() {
    let rt = LocalReactor::new().unwrap();
    let (pa, pb) = (socket_path("dgram-a"), socket_path("dgram-b"));
    bounded(&rt, "unix datagrams", async {
        let a = UnixDatagram::bind(&pa).unwrap();
        let b = UnixDatagram::bind(&pb).unwrap();
        let echo = tally::spawn(async move {
            let mut buf = [0u8; 2048];
            for _ in 0..50 {
                let (n, from) = b.recv_from(&mut buf).await.unwrap();
                let to = from.as_pathname().unwrap().to_owned();
                b.send_to(&buf[..n], to).await.unwrap();
            }
        });
        let mut buf = [0u8; 2048];
        for i in 0..50u8 {
            let msg = pattern(i, 0, 1 + i as usize * 40);
            a.send_to(&msg, &pb).await.unwrap();
            let (n, from) = a.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &msg[..]);
            assert_eq!(from.as_pathname(), Some(pb.as_path()));
        }
        echo.await.unwrap();
        let (x, y) = UnixDatagram::pair().unwrap();
        x.send(b"pair").await.unwrap();
        let n = y.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"pair");
        let u = UnixDatagram::unbound().unwrap();
        u.send_to(b"unbound", &pa).await.unwrap();
        let n = a.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"unbound");
    });
    std::fs::remove_file(&pa).unwrap();
    std::fs::remove_file(&pb).unwrap();
}

#[test]
fn a_datagram_send_that_would_block_waits_for_room() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "blocked datagram sends", async {
        let (tx, rx) = UnixDatagram::pair().unwrap();
        // The receiver's queue holds a bounded number of datagrams: sends
        // beyond it would block until the reader makes room.
        const N: usize = 2000;
        let reader = tally::spawn(async move {
            tally::time::sleep(Duration::from_millis(20)).await;
            let mut buf = [0u8; 64];
            for i in 0..N {
                let n = rx.recv(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], &(i as u32).to_le_bytes(), "datagram {i}");
            }
        });
        for i in 0..N {
            tx.send(&(i as u32).to_le_bytes()).await.unwrap();
        }
        reader.await.unwrap();
    });
}

#[test]
fn read_line_through_async_buf_read() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "read_line", async {
        let (a, mut b) = UnixStream::pair().unwrap();
        let writer = tally::spawn(async move {
            for i in 0..200 {
                b.write_all(format!("line {i}: {}\n", "x".repeat(i)).as_bytes()).await.unwrap();
                if i % 7 == 0 {
                    tally::time::sleep(Duration::from_micros(200)).await;
                }
            }
            b.write_all(b"no newline at the end").await.unwrap();
            b.close().await.unwrap();
        });
        let mut reader = futures::io::BufReader::with_capacity(16, a);
        let mut line = String::new();
        for i in 0..200 {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            assert_eq!(line, format!("line {i}: {}\n", "x".repeat(i)));
        }
        line.clear();
        assert_eq!(reader.read_line(&mut line).await.unwrap(), 21);
        assert_eq!(line, "no newline at the end");
        line.clear();
        assert_eq!(reader.read_line(&mut line).await.unwrap(), 0, "EOF");
        writer.await.unwrap();

        // The stream itself is an AsyncBufRead, with no extra buffer.
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut b = b;
        a.write_all(b"one\ntwo\nthree").await.unwrap();
        a.close().await.unwrap();
        let mut lines = Vec::new();
        let mut line = String::new();
        while b.read_line(&mut line).await.unwrap() > 0 {
            lines.push(std::mem::take(&mut line));
        }
        assert_eq!(lines, ["one\n", "two\n", "three"]);
    });
}

#[test]
fn close_and_shutdown_give_the_peer_eof() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "EOF", async {
        // TCP close(): the peer reads what was sent, then EOF, and can
        // still write back.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tally::spawn(async move { listener.accept().await.unwrap().0 });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut s = accept.await.unwrap();
        assert_eq!(c.peer_addr().unwrap(), addr);
        assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
        c.set_nodelay(true).unwrap();
        c.write_all(b"last words").await.unwrap();
        c.close().await.unwrap();
        assert!(c.write_all(b"more").await.is_err(), "writing after close fails");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
        assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 0, "EOF stays EOF");
        s.write_all(b"reply").await.unwrap();
        s.close().await.unwrap();
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply");

        // Dropping a stream closes it.
        let (a, mut b) = UnixStream::pair().unwrap();
        drop(a);
        assert_eq!(b.read(&mut [0u8; 8]).await.unwrap(), 0);

        // A std peer shutting down its write half.
        let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut mine = UnixStream::from_std(mine);
        (&theirs).write_all(b"bye").unwrap();
        theirs.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        mine.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        // And the other way round: our close() is the std peer's EOF.
        mine.close().await.unwrap();
        let mut rest = Vec::new();
        (&theirs).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    });
}

#[test]
fn a_dropped_read_does_not_lose_data() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "dropped reads", async {
        let (mut a, theirs) = UnixStream::pair().unwrap();
        let mut theirs = theirs;
        for round in 0..20u8 {
            // Start a read, poll it once (nothing there yet), drop it.
            let mut buf = [0u8; 64];
            {
                let mut read = a.read(&mut buf);
                let polled = std::future::poll_fn(|cx| {
                    Poll::Ready(std::pin::Pin::new(&mut read).poll(cx).is_pending())
                })
                .await;
                assert!(polled, "round {round}: nothing was sent yet");
            }
            // Now the peer sends, in pieces, and the bytes land while no
            // read is waiting for them.
            let sent = pattern(round, 0, 3 * (round as usize + 1));
            for piece in sent.chunks(round as usize + 1) {
                theirs.write_all(piece).await.unwrap();
                tally::time::sleep(Duration::from_millis(1)).await;
            }
            let mut got = vec![0u8; sent.len()];
            a.read_exact(&mut got).await.unwrap();
            assert_eq!(got, sent, "round {round}");
        }
    });
}

#[test]
fn a_dropped_read_on_tcp_does_not_lose_data() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "dropped TCP reads", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut go = [0u8; 1];
            for round in 0..10u8 {
                s.read_exact(&mut go).unwrap();
                s.write_all(&pattern(round, 0, 1000)).unwrap();
            }
        });
        let (mut s, _) = listener.accept().await.unwrap();
        for round in 0..10u8 {
            let mut buf = [0u8; 1000];
            // A read that times out is a read future dropped mid-flight.
            let r = tally::time::timeout(Duration::from_millis(2), s.read(&mut buf)).await;
            assert!(r.is_err(), "round {round}: the peer has not sent yet");
            s.write_all(&[round]).await.unwrap();
            // Let the bytes arrive and be received with nobody reading.
            tally::time::sleep(Duration::from_millis(5)).await;
            s.read_exact(&mut buf).await.unwrap();
            assert!(buf[..] == pattern(round, 0, 1000)[..], "round {round}");
        }
        drop(s);
        peer.join().unwrap();
    });
}

#[test]
fn many_chunks_queued_before_a_read_all_arrive_in_order() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "queued chunks", async {
        let (mut a, theirs) = UnixStream::pair().unwrap();
        let mut theirs = theirs;
        let mut sent = Vec::new();
        // Each write (with a pause after it) arrives as its own completion
        // of the multishot receive; none is read until the end.
        for i in 0..200usize {
            let piece = pattern(i as u8, sent.len(), 1 + i % 13);
            theirs.write_all(&piece).await.unwrap();
            sent.extend_from_slice(&piece);
            if i % 3 == 0 {
                tally::time::sleep(Duration::from_micros(100)).await;
            }
            if i == 0 {
                // Arm the receive.
                let mut b = [0u8; 1];
                a.read_exact(&mut b).await.unwrap();
                sent.remove(0);
            }
        }
        theirs.close().await.unwrap();
        let mut got = Vec::new();
        a.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "bytes were lost or reordered");
    });
}

#[test]
fn a_listener_queues_a_burst_of_connects() {
    // More connects than std's backlog of 128, none accepted yet: with too
    // short an accept queue the kernel drops the SYNs beyond it, and those
    // connects stall for a second (the SYN retry) and time out here.
    const BURST: usize = 300;
    let rt = LocalReactor::new().unwrap();
    let path = socket_path("backlog");
    bounded(&rt, "connect burst", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let unix = UnixListener::bind(&path).unwrap();
        let mut tcp_clients = Vec::new();
        let mut unix_clients = Vec::new();
        for i in 0..BURST {
            let c = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))
                .unwrap_or_else(|e| panic!("TCP connect {i} of {BURST}: {e}"));
            tcp_clients.push(c);
            // (A Unix connect beyond the backlog would block; the TCP
            // connect before it fails first.)
            let u = std::os::unix::net::UnixStream::connect(&path).unwrap();
            unix_clients.push(u);
        }
        for i in 0..BURST {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(&(i as u32).to_le_bytes()).await.unwrap();
            s.flush().await.unwrap();
            let (mut u, _) = unix.accept().await.unwrap();
            u.write_all(&(i as u32).to_le_bytes()).await.unwrap();
            u.flush().await.unwrap();
        }
        // Flushed: the bytes are in the kernel, so blocking reads are safe.
        for (i, mut c) in tcp_clients.into_iter().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).unwrap();
            assert_eq!(u32::from_le_bytes(b), i as u32, "accepted out of order");
        }
        for (i, mut u) in unix_clients.into_iter().enumerate() {
            u.set_nonblocking(false).unwrap();
            u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 4];
            u.read_exact(&mut b).unwrap();
            assert_eq!(u32::from_le_bytes(b), i as u32, "accepted out of order");
        }
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn several_tasks_can_accept_on_one_listener() {
    const TASKS: usize = 4;
    const EACH: usize = 10;
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "concurrent accepts", async {
        let listener = std::rc::Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let acceptors: Vec<_> = (0..TASKS)
            .map(|_| {
                let listener = listener.clone();
                tally::spawn(async move {
                    let mut streams = Vec::new();
                    for _ in 0..EACH {
                        streams.push(listener.accept().await.unwrap().0);
                    }
                    streams.len()
                })
            })
            .collect();
        // Let every acceptor wait before anyone connects, then connect in
        // small bursts.
        tally::time::sleep(Duration::from_millis(5)).await;
        let mut clients = Vec::new();
        for _ in 0..TASKS * EACH / 2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            clients.push(TcpStream::connect(addr).await.unwrap());
            tally::time::sleep(Duration::from_micros(200)).await;
        }
        for a in acceptors {
            assert_eq!(a.await.unwrap(), EACH);
        }
    });
}

#[test]
fn a_unix_connect_to_a_full_accept_queue_waits_without_blocking_the_thread() {
    // A listener that queues 16 connections: a blocking connect beyond that
    // would block this thread, and the accepting task with it, for good.
    const CLIENTS: u32 = 200;
    let _watchdog = util::Watchdog::new("a Unix connect", util::BUDGET * 2);
    let rt = LocalReactor::new().unwrap();
    let path = socket_path("full-queue");
    bounded(&rt, "connects to a full queue", async {
        let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // SAFETY: listen(2) on a listening socket we own; no pointers.
        assert_eq!(unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&std_listener), 16) }, 0);
        let listener = UnixListener::from_std(std_listener);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let path = path.clone();
                tally::spawn(async move {
                    let mut c = UnixStream::connect(&path).await.unwrap();
                    c.write_all(&i.to_le_bytes()).await.unwrap();
                    let mut b = [0u8; 4];
                    c.read_exact(&mut b).await.unwrap();
                    assert_eq!(u32::from_le_bytes(b), i, "client {i} got another's echo");
                })
            })
            .collect();
        // Let every client try before anything is accepted.
        tally::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..CLIENTS {
            let (mut s, _) = listener.accept().await.unwrap();
            tally::spawn(async move {
                let mut b = [0u8; 4];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
                s.flush().await.unwrap();
            });
        }
        for c in clients {
            c.await.unwrap();
        }
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_dropped_listener_frees_its_address_at_once() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "rebind", async {
        let mut listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for round in 0..3 {
            // Arm the multishot accept, then drop the listener with it armed.
            let r = tally::time::timeout(Duration::from_millis(2), listener.accept()).await;
            assert!(r.is_err(), "round {round}: nobody connected");
            drop(listener);
            listener = TcpListener::bind(addr)
                .unwrap_or_else(|e| panic!("round {round}: rebinding {addr}: {e}"));
            let client = tally::spawn(async move { TcpStream::connect(addr).await.unwrap() });
            let (mut s, _) = listener.accept().await.unwrap();
            let mut c = client.await.unwrap();
            s.write_all(&[round]).await.unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(b, [round]);
        }
    });
}

#[test]
fn connect_errors_are_reported() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "connect errors", async {
        // A port nobody listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let e = TcpStream::connect(port).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        let missing = socket_path("missing");
        let e = UnixStream::connect(&missing).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        let long = std::path::PathBuf::from("/tmp/".to_string() + &"x".repeat(200));
        let e = UnixStream::connect(&long).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        // A path bound by nobody listening: refused.
        let path = socket_path("not-listening");
        let _bound = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        assert!(UnixStream::connect(&path).await.is_err());
        std::fs::remove_file(&path).unwrap();
    });
}

#[test]
fn connect_parses_addresses_in_place_and_looks_names_up_on_the_blocking_pool() {
    let rt = LocalReactor::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        }
    });
    let round_trip = |mut s: TcpStream, byte: u8| async move {
        s.write_all(&[byte]).await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(b, [byte]);
    };
    bounded(&rt, "connect by address and by name", async {
        // An address string: parsed here, no thread.
        let s = TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
        assert_eq!(rt.blocking_threads(), 0, "an address must not need a lookup");
        round_trip(s, 1).await;
        // A name: looked up on the pool.
        let s = TcpStream::connect(("localhost", port)).await.unwrap();
        assert!(rt.blocking_threads() >= 1, "a host name must be looked up on the pool");
        round_trip(s, 2).await;
    });
    server.join().unwrap();
}

#[test]
fn connect_tries_each_address_in_turn_and_reports_lookup_errors() {
    let rt = LocalReactor::new().unwrap();
    // A port nothing listens on: bind one, note it, close it.
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap();
    bounded(&rt, "connect fallbacks", async {
        let err = TcpStream::connect(refused).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        let s = TcpStream::connect(&[refused, open][..]).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), open);
        let err = TcpStream::connect(&[][..]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        // Not "host:port": std's lookup rejects it, and so do we, with an
        // error rather than a panic.
        assert!(TcpStream::connect("no port here").await.is_err());
    });
    drop(listener);
}

/// Bytes and the peer's close that arrive together, while a read waits,
/// raise one readiness edge on epoll, which says both. A read shorter than
/// asked normally means "empty until the next edge", but no edge follows
/// the end of file: small reads must still reach it. (On epoll this hung
/// before reads on readiness treated a closed peer as always readable.)
#[test]
fn small_reads_reach_an_end_of_file_that_came_with_the_last_bytes() {
    let rt = LocalReactor::new().unwrap();
    for tcp in [false, true] {
        let what = if tcp { "tcp" } else { "unix" };
        bounded(&rt, "the end of file after the last bytes", async {
            let (mut peer, mut stream): (Box<dyn Write>, Box<dyn futures::AsyncRead + Unpin>) =
                if tcp {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                    let (s, _) = l.accept().unwrap();
                    (Box::new(c), Box::new(TcpStream::from_std(s)))
                } else {
                    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
                    (Box::new(a), Box::new(UnixStream::from_std(b)))
                };
            // A first byte, read short: the stream is empty until an edge.
            peer.write_all(b"x").unwrap();
            let mut buf = [0u8; 100];
            assert_eq!(stream.read(&mut buf).await.unwrap(), 1, "{what}");
            // A read that waits, so that the reactor watches for the edge.
            let mut waiting = stream.read(&mut buf);
            assert!(util::poll_once(&mut waiting).is_pending(), "{what}");
            drop(waiting);
            // More bytes than one read takes, then the close, both before
            // the reactor looks again.
            let body = pattern(7, 0, 40_000);
            peer.write_all(&body).unwrap();
            drop(peer);
            let mut got = Vec::new();
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got.len(), body.len(), "{what}");
            assert!(got == body, "{what}: the bytes differ");
        });
    }
}

/// A task that reads, in a loop, a socket whose peer writes faster than it
/// reads never finds it empty. On epoll, where reads are made inline on
/// readiness, it would then never return `Pending`, and no other task
/// would run until the stream ends; reads there yield once a crank's
/// share is spent, as a drained chunk queue makes them wait on io_uring.
#[test]
fn a_reader_that_never_catches_up_lets_other_tasks_run() {
    const TOTAL: usize = 16 << 20;
    let rt = LocalReactor::new().unwrap();
    let (a, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
    // The whole stream is queued before the reader starts, so that it never
    // catches up: a send buffer that large needs SO_SNDBUFFORCE (root).
    let size: libc::c_int = 64 << 20;
    // SAFETY: setsockopt reads one c_int from a live local.
    let forced = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced != 0 {
        println!(
            "skipped: SO_SNDBUFFORCE needs CAP_NET_ADMIN ({})",
            std::io::Error::last_os_error()
        );
        return;
    }
    peer.write_all(&vec![0x5au8; TOTAL]).unwrap();
    let (read, others_ran) = bounded(&rt, "a firehose reader", async {
        let ran = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let other = tally::spawn({
            let ran = ran.clone();
            async move {
                loop {
                    ran.set(ran.get() + 1);
                    util::yield_now().await;
                }
            }
        });
        let mut stream = UnixStream::from_std(a);
        let mut buf = [0u8; 1024];
        let mut read = 0;
        while read < TOTAL {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "end of file after {read} bytes");
            read += n;
        }
        let others_ran = ran.get();
        other.abort();
        (read, others_ran)
    });
    drop(peer);
    assert_eq!(read, TOTAL);
    assert!(others_ran > 1, "the other task ran {others_ran} times while 16 MiB were read");
}
