//! A connection reset while it waits in the accept queue must not fail the
//! listener's `accept`: a server written `listener.accept().await?` would
//! exit on one port scan.

mod util;

use std::os::fd::AsRawFd;

use tally::LocalReactor;
use tally::net::TcpListener;
use util::bounded;

/// Closes `s` with `SO_LINGER` 0: the kernel sends RST instead of FIN.
fn reset(s: std::net::TcpStream) {
    util::linger_zero(s.as_raw_fd());
    drop(s);
}

#[test]
fn accept_skips_a_connection_reset_in_the_queue_and_returns_the_next() {
    let rt = LocalReactor::new().unwrap();
    bounded(&rt, "accept after a reset connection", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Both wait in the kernel's accept queue before any accept runs.
        reset(std::net::TcpStream::connect(addr).unwrap());
        let good = std::net::TcpStream::connect(addr).unwrap();
        let (_s, peer) = listener.accept().await.expect("accept must not fail on a reset");
        assert_eq!(peer, good.local_addr().unwrap());
    });
}
