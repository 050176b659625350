//! A dropped listener's fd is closed through the ring, after the accept it
//! queued this crank: that accept must never run against a new socket that
//! reused the fd number and take its client.

mod util;

use std::os::fd::AsRawFd;
use std::task::Poll;

use tally::LocalReactor;
use tally::net::{TcpListener, UnixListener};
use util::{bounded, poll_once, socket_path};

#[test]
fn a_dropped_tcp_listeners_queued_accept_does_not_take_the_next_listeners_client() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "tcp accept after a dropped listener", async {
        let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd1 = l1.as_raw_fd();
        // Queue l1's multishot accept (no turn runs in between), then drop
        // the future and the listener.
        assert!(poll_once(&mut Box::pin(l1.accept())).is_pending());
        drop(l1);
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let reused = l2.as_raw_fd() == fd1;
        // A blocking connect completes through the kernel's backlog before
        // any accept runs.
        let client = std::net::TcpStream::connect(l2.local_addr().unwrap()).unwrap();
        let (_s, peer) = l2.accept().await.expect("l2 gets its client");
        assert_eq!(peer, client.local_addr().unwrap(), "fd reused: {reused}");
    });
}

#[test]
fn a_dropped_unix_listeners_queued_accept_does_not_take_the_next_listeners_client() {
    let rt = LocalReactor::new().unwrap();
    let (p1, p2) = (socket_path("reuse-a"), socket_path("reuse-b"));
    bounded(&rt, "unix accept after a dropped listener", async {
        let l1 = UnixListener::bind(&p1).unwrap();
        let mut accept = Box::pin(l1.accept());
        assert!(matches!(poll_once(&mut accept), Poll::Pending));
        drop(accept);
        drop(l1);
        let l2 = UnixListener::bind(&p2).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(&p2).unwrap();
        l2.accept().await.expect("l2 gets its client");
    });
}
