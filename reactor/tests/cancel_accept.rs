//! Cancelling accepts whose connections the kernel already accepted: the
//! accepted fds are closed, never leaked. Counted in `/proc/self/fd`, so
//! this binary holds exactly one test and nothing else opens fds meanwhile.

mod util;

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tally_reactor::{Cancel, Op, Reactor};
use util::{TICK, completions, open_fds, turn_until};

#[test]
fn accepted_fds_of_cancelled_accepts_are_closed() {
    let baseline = open_fds();
    {
        let reactor = Reactor::new().unwrap();
        let (listener, addr) = util::loopback_listener();
        let with_reactor = open_fds();

        // 1. The accept completed and its packet is queued, undrained; then
        //    the op is cancelled. The cancel hands the packet back and the
        //    drain does not deliver it; nobody takes its fd, so that drain
        //    closes it.
        let reg = reactor.register();
        let op = reg.submit(Op::accept(listener.as_raw_fd())).unwrap();
        reactor.turn(Some(Duration::ZERO)).unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let before = reactor.metrics().completions;
        turn_until(&reactor, "the accept to complete", || reactor.metrics().completions > before);
        assert_eq!(open_fds(), with_reactor + 2, "client + accepted socket");
        assert!(matches!(reg.cancel(op), Cancel::AlreadyCompleted(ref p) if p.len() == 1));
        let got = reg.try_drain();
        assert!(completions(&got).is_empty(), "a cancelled accept was delivered: {got:?}");
        assert_eq!(open_fds(), with_reactor + 1, "the accepted fd was not closed on cancel");
        drop(client);
        drop(reg);

        // 2. Same, but the registration is dropped instead.
        let reg = reactor.register();
        reg.submit(Op::accept(listener.as_raw_fd())).unwrap();
        reactor.turn(Some(Duration::ZERO)).unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let before = reactor.metrics().completions;
        turn_until(&reactor, "the accept to complete", || reactor.metrics().completions > before);
        assert_eq!(open_fds(), with_reactor + 2);
        drop(reg);
        assert_eq!(open_fds(), with_reactor + 1, "the accepted fd was not closed on drop");
        drop(client);

        // 3. A multishot accept with three connections queued, dropped.
        if reactor.features().multishot_accept {
            let reg = reactor.register();
            reg.submit(Op::accept_multi(listener.as_raw_fd())).unwrap();
            reactor.turn(Some(Duration::ZERO)).unwrap();
            let before = reactor.metrics().completions;
            let clients: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
            turn_until(&reactor, "three accepts", || reactor.metrics().completions >= before + 3);
            assert_eq!(open_fds(), with_reactor + 6);
            drop(reg);
            assert_eq!(open_fds(), with_reactor + 3, "multishot accepted fds leaked");
            drop(clients);
        } else {
            util::skip("multishot part", "the running kernel lacks multishot accept");
        }

        // 4. A connection arrives while the cancel is on its way: whichever
        //    wins, nothing leaks once the dust settles.
        let reg = reactor.register();
        let op = reg.submit(Op::accept(listener.as_raw_fd())).unwrap();
        reactor.turn(Some(Duration::ZERO)).unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let _ = reg.cancel(op);
        turn_until(&reactor, "the cancel to settle", || reactor.metrics().ops_in_flight == 0);
        for _ in 0..3 {
            reactor.turn(Some(TICK)).unwrap();
        }
        assert!(completions(&reg.try_drain()).is_empty());
        assert_eq!(open_fds(), with_reactor + 1);
        drop(client);
        drop(reg);

        // 5. The reactor itself is dropped with an accept in flight and a
        //    connection waiting for it.
        let reg = reactor.register();
        reg.submit(Op::accept(listener.as_raw_fd())).unwrap();
        reactor.turn(Some(Duration::ZERO)).unwrap();
        let client = TcpStream::connect(addr).unwrap();
        drop(reg);
        drop(reactor);
        assert_eq!(open_fds(), with_reactor - 2 + 1, "ring + eventfd closed, client open");
        drop(client);
        drop(listener);
    }
    assert_eq!(open_fds(), baseline, "fds leaked");
}
