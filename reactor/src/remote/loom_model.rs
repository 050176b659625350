//! loom models of the remote-wake handshake: [`Signaler`], [`Sender`] and
//! [`RemoteWaker`] on other threads against a reactor that takes the remote
//! queue and blocks, with the eventfd modelled as a flag (`WakeFd` under
//! loom). A lost wake-up leaves the reactor blocked with every notifier
//! done, which loom reports as a deadlock.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p tally-reactor --release
//! --lib loom_model`.

use std::sync::Arc;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use tally_packets::{Signals, Token};

use super::{ModelReactor, Sender, Shared, Signaler};

/// Explores every interleaving with up to four preemptions: enough for
/// each handshake step of each thread to land between any two of the
/// reactor's, and it keeps the three-thread models to seconds.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(4);
    builder.check(f);
}

fn shared(reactor: &ModelReactor, slot: u32) -> Arc<Shared> {
    Arc::new(Shared::new(Token::new(slot, 1), reactor.remote().clone(), 4))
}

#[test]
fn loom_model_raises_from_two_threads_reach_a_sleeping_reactor() {
    model(|| {
        let mut reactor = ModelReactor::new();
        let reg = shared(&reactor, 1);
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let signaler = Signaler::new(reg.clone());
                thread::spawn(move || {
                    signaler.raise(Signals::user(0), 1).unwrap();
                })
            })
            .collect();
        let mut seen = 0u32;
        while seen < 2 {
            for &token in reactor.crank(true) {
                assert_eq!(token, reg.token);
                seen += reg.signal.take().1.get();
            }
        }
        assert_eq!(seen, 2);
        for p in producers {
            p.join().unwrap();
        }
    });
}

#[test]
fn loom_model_a_remote_wake_is_not_lost() {
    model(|| {
        let mut reactor = ModelReactor::new();
        // What a task waker publishes before it wakes the reactor.
        let work = Arc::new(AtomicBool::new(false));
        let waker = reactor.remote_waker();
        let w = work.clone();
        let t = thread::spawn(move || {
            w.store(true, Ordering::Release);
            waker.wake().unwrap();
        });
        while !work.load(Ordering::Acquire) {
            assert!(reactor.crank(true).is_empty());
        }
        t.join().unwrap();
    });
}

#[test]
fn loom_model_a_send_and_a_raise_on_two_registrations_both_arrive() {
    model(|| {
        let mut reactor = ModelReactor::new();
        let a = shared(&reactor, 1);
        let b = shared(&reactor, 2);
        let sender = Sender::new(a.clone());
        let signaler = Signaler::new(b.clone());
        let t1 = thread::spawn(move || sender.send([7; 32]).unwrap());
        let t2 = thread::spawn(move || {
            signaler.raise(Signals::READABLE, 3).unwrap();
        });
        let (mut payloads, mut count) = (0, 0);
        while payloads < 1 || count < 3 {
            for &token in reactor.crank(true) {
                if token == a.token {
                    a.drain_user(|p| {
                        assert_eq!(p, [7; 32]);
                        payloads += 1;
                    });
                } else {
                    assert_eq!(token, b.token);
                    count += b.signal.take().1.get();
                }
            }
        }
        assert_eq!((payloads, count), (1, 3));
        t1.join().unwrap();
        t2.join().unwrap();
    });
}

#[test]
fn loom_model_raises_after_shut_down_fail_and_none_is_half_delivered() {
    model(|| {
        let mut reactor = ModelReactor::new();
        let reg = shared(&reactor, 1);
        let signaler = Signaler::new(reg.clone());
        let t = thread::spawn(move || signaler.raise(Signals::user(1), 1).is_ok());
        reactor.crank(false);
        // As the reactor's drop does: the remote first, then every
        // registration.
        reactor.remote().shut_down();
        reg.close();
        let delivered = t.join().unwrap();
        // After the join, a raise is refused outright.
        assert!(Signaler::new(reg.clone()).raise(Signals::user(1), 1).is_err());
        if !delivered {
            // A refused raise may have been counted in the word before the
            // notify saw the shut-down; it never reached the queue.
            assert!(reactor.crank(false).is_empty());
        }
    });
}

#[test]
fn loom_model_litmus_sb_fences() {
    use loom::sync::atomic::fence;
    loom::model(|| {
        let x = Arc::new(AtomicBool::new(false));
        let y = Arc::new(AtomicBool::new(false));
        let (x1, y1) = (x.clone(), y.clone());
        let t = thread::spawn(move || {
            x1.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            y1.load(Ordering::Relaxed)
        });
        y.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let a = x.load(Ordering::Relaxed);
        let b = t.join().unwrap();
        assert!(a || b);
    });
}
