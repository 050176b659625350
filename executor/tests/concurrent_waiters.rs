//! Several tasks waiting on one socket at once (review finding 4): the
//! reactor keeps only the last poller's waker, so when that poller goes
//! away (a `timeout` or `select!` drops it) or takes the readiness the
//! others needed, the others must still be woken.

mod util;

use std::future::Future;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use tally::LocalReactor;
use tally::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use util::{bounded, poll_once, socket_path, yield_now};

/// How long a task that should finish may take, far shorter than the
/// whole test's [`util::BUDGET`], so that a lost wake fails quickly.
const WAIT: Duration = Duration::from_secs(5);

/// How long the poller that is dropped waits before its timeout drops it.
const BRIEF: Duration = Duration::from_millis(20);

/// Awaits `fut`, failing with `what` if it takes longer than [`WAIT`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tally::time::timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} was never woken (waited {WAIT:?})"),
    }
}

/// Lets the spawned tasks run until they wait.
async fn settle() {
    for _ in 0..3 {
        yield_now().await;
    }
}

#[test]
fn an_accept_left_waiting_when_the_last_poller_times_out_gets_the_connection() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "tcp accept", async {
        let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let l = listener.clone();
        let first = tally::spawn(async move { l.accept().await.map(|(_, peer)| peer) });
        settle().await;
        // The second accept polls last, so the registration holds its
        // waker; then its timeout drops it.
        let l = listener.clone();
        let second = tally::spawn(async move { tally::time::timeout(BRIEF, l.accept()).await });
        assert!(
            second.await.unwrap().is_err(),
            "no connection yet, so the second accept times out"
        );
        let client = std::net::TcpStream::connect(addr).unwrap();
        let peer = within("the first accept", first).await.unwrap().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    });
}

#[test]
fn a_unix_accept_left_waiting_when_the_last_poller_is_dropped_gets_the_connection() {
    let rt = LocalReactor::new().unwrap();
    let path = socket_path("concurrent-accept");
    bounded(&rt, "unix accept", async {
        let listener = Rc::new(UnixListener::bind(&path).unwrap());
        let l = listener.clone();
        let first = tally::spawn(async move { l.accept().await.map(|_| ()) });
        settle().await;
        // Polled once, last, then dropped: a `select!` losing branch.
        let mut second = Box::pin(listener.accept());
        assert!(poll_once(&mut second).is_pending());
        drop(second);
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        within("the first accept", first).await.unwrap().unwrap();
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn three_accepts_waiting_at_once_each_get_one_of_three_connections() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "three accepts", async {
        let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let accepts: Vec<_> = (0..3)
            .map(|_| {
                let l = listener.clone();
                tally::spawn(async move { l.accept().await.map(|(_, peer)| peer) })
            })
            .collect();
        settle().await;
        // All three connect before the reactor next turns: one drain
        // queues them all, and each accept hands on to the next.
        let clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let mut peers = Vec::new();
        for (i, accept) in accepts.into_iter().enumerate() {
            peers.push(within(&format!("accept {i}"), accept).await.unwrap().unwrap());
        }
        peers.sort();
        let mut want: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        want.sort();
        assert_eq!(peers, want);
    });
}

#[test]
fn a_udp_recv_left_waiting_when_the_last_poller_times_out_gets_the_datagram() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "udp recv, last poller dropped", async {
        let sock = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let to = sock.local_addr().unwrap();
        let s = sock.clone();
        let first = tally::spawn(async move {
            let mut buf = [0u8; 16];
            let (n, _) = s.recv_from(&mut buf).await.unwrap();
            buf[..n].to_vec()
        });
        settle().await;
        let s = sock.clone();
        let second = tally::spawn(async move {
            let mut buf = [0u8; 16];
            tally::time::timeout(BRIEF, s.recv_from(&mut buf)).await.map(|r| r.map(|(n, _)| n))
        });
        assert!(second.await.unwrap().is_err(), "nothing sent yet, so the second recv times out");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"one", to).unwrap();
        assert_eq!(within("the first recv", first).await.unwrap(), b"one");
    });
}

#[test]
fn two_udp_recvs_waiting_at_once_both_get_a_datagram() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "two udp recvs", async {
        let sock = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let to = sock.local_addr().unwrap();
        let recv = |s: Rc<UdpSocket>| async move {
            let mut buf = [0u8; 16];
            let (n, _) = s.recv_from(&mut buf).await.unwrap();
            buf[..n].to_vec()
        };
        let first = tally::spawn(recv(sock.clone()));
        let second = tally::spawn(recv(sock.clone()));
        settle().await;
        // Both datagrams arrive before the reactor next turns: one
        // readable signal, drained by whichever recv the reactor wakes.
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"a", to).unwrap();
        peer.send_to(b"b", to).unwrap();
        let mut got = vec![
            within("the first recv", first).await.unwrap(),
            within("the second recv", second).await.unwrap(),
        ];
        got.sort();
        assert_eq!(got, [b"a".to_vec(), b"b".to_vec()]);
    });
}

#[test]
fn a_unix_datagram_recv_left_waiting_when_the_last_poller_is_dropped_gets_the_datagram() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "unix datagram recv", async {
        let (a, b) = UnixDatagram::pair().unwrap();
        let b = Rc::new(b);
        let s = b.clone();
        let first = tally::spawn(async move {
            let mut buf = [0u8; 16];
            let (n, _) = s.recv_from(&mut buf).await.unwrap();
            buf[..n].to_vec()
        });
        settle().await;
        let mut buf = [0u8; 16];
        let mut second = Box::pin(b.recv_from(&mut buf));
        assert!(poll_once(&mut second).is_pending());
        drop(second);
        a.send(b"one").await.unwrap();
        assert_eq!(within("the first recv", first).await.unwrap(), b"one");
    });
}

/// Sets `SO_SNDBUF` of `fd` to `bytes` (the kernel doubles it).
fn set_send_buffer(fd: i32, bytes: libc::c_int) {
    // SAFETY: setsockopt(2) reads `size_of::<c_int>()` bytes from a live
    // `c_int`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_SNDBUF): {}", std::io::Error::last_os_error());
}

#[test]
fn a_unix_datagram_send_left_waiting_when_the_last_poller_times_out_completes() {
    let rt = LocalReactor::new().unwrap();
    let path = socket_path("concurrent-send");
    bounded(&rt, "unix datagram send", async {
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        receiver.set_nonblocking(true).unwrap();
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        set_send_buffer(sender.as_raw_fd(), 4096);
        sender.set_nonblocking(true).unwrap();
        // Fill the sender's buffer: queued datagrams count against it
        // until the receiver reads them.
        let payload = vec![7u8; 4096];
        let mut queued = 0;
        loop {
            match sender.send_to(&payload, &path) {
                Ok(_) => queued += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the send buffer: {e}"),
            }
            assert!(queued < 1000, "the send buffer never filled");
        }
        let sender = Rc::new(UnixDatagram::from_std(sender).unwrap());

        let (s, p) = (sender.clone(), path.clone());
        let first = tally::spawn(async move { s.send_to(b"first", &p).await.unwrap() });
        settle().await;
        let (s, p) = (sender.clone(), path.clone());
        let second =
            tally::spawn(
                async move { tally::time::timeout(BRIEF, s.send_to(b"second", &p)).await },
            );
        assert!(second.await.unwrap().is_err(), "the buffer is full, so the second send times out");

        // Make room.
        let mut buf = vec![0u8; 8192];
        let mut read = 0;
        while read < queued {
            match receiver.recv(&mut buf) {
                Ok(_) => read += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading the queued datagrams: {e}"),
            }
        }
        assert_eq!(read, queued);
        assert_eq!(within("the first send", first).await.unwrap(), 5);
        let mut got = Poll::Pending;
        for _ in 0..100 {
            match receiver.recv(&mut buf) {
                Ok(n) => {
                    got = Poll::Ready(buf[..n].to_vec());
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => yield_now().await,
                Err(e) => panic!("reading the first send: {e}"),
            }
        }
        assert_eq!(got, Poll::Ready(b"first".to_vec()));
    });
    std::fs::remove_file(&path).unwrap();
}
