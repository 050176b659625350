//! The budget: a task that always wakes itself cannot starve I/O, timers
//! or other tasks.

mod util;

use std::cell::Cell;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::AsyncReadExt;
use tally::{LocalReactor, Signals};
use util::{bounded, yield_now};

/// A task that keeps waking itself, counting its polls. It gives up after
/// [`util::BUDGET`], so that an executor without a budget fails these tests
/// (the others' deadlines are then blown) instead of hanging them.
async fn spinner(polls: Rc<Cell<u64>>) {
    let start = Instant::now();
    while start.elapsed() < util::BUDGET {
        polls.set(polls.get() + 1);
        yield_now().await;
    }
}

/// The ring settings the starvation test runs under: with DEFER_TASKRUN,
/// completions are posted only by an enter with GETEVENTS, and without
/// COOP_TASKRUN's flag nothing tells a non-waiting turn that they wait.
fn ring_settings() -> [(&'static str, tally_reactor::Builder); 3] {
    [
        ("default", tally_reactor::Builder::new()),
        ("coop_taskrun(false)", tally_reactor::Builder::new().coop_taskrun(false)),
        ("defer_taskrun(false)", tally_reactor::Builder::new().defer_taskrun(false)),
    ]
}

#[test]
fn a_spinning_task_cannot_starve_timers_pipes_or_sockets() {
    for ((ring, settings), budget) in
        ring_settings().into_iter().flat_map(|s| [1, 4, 128].map(|b| (s.clone(), b)))
    {
        let budget_name = format!("{ring}, budget {budget}");
        let rt = LocalReactor::builder().reactor(settings).budget(budget).build().unwrap();
        let polls = Rc::new(Cell::new(0));
        let spin = rt.spawn(spinner(polls.clone()));
        let (rx, mut tx) = std::io::pipe().unwrap();
        let (sock, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.write_all(b"p").unwrap();
            peer.write_all(b"socket").unwrap();
            // Keep the peer open until the reader is done.
            std::thread::sleep(Duration::from_millis(200));
        });
        let start = Instant::now();
        let turns_before = rt.metrics().turns;
        let (slept, piped, read) = bounded(&rt, "I/O beside a spinner", async {
            let timer = tally::spawn(async {
                tally::time::sleep(Duration::from_millis(10)).await;
                Instant::now()
            });
            let pipe = tally::spawn(async move {
                let reg = tally::reactor().register_fd(rx.as_raw_fd(), Signals::READABLE).unwrap();
                let packets = reg.packets().await;
                assert!(packets[0].as_signal().unwrap().observed.contains(Signals::READABLE));
                Instant::now()
            });
            let socket = tally::spawn(async move {
                let mut s = tally::net::UnixStream::from_std(sock);
                let mut buf = [0u8; 6];
                s.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"socket");
                Instant::now()
            });
            (timer.await.unwrap(), pipe.await.unwrap(), socket.await.unwrap())
        });
        writer.join().unwrap();
        spin.abort();
        let turns = rt.metrics().turns - turns_before;
        for (what, at) in [("timer", slept), ("pipe", piped), ("socket", read)] {
            let took = at - start;
            assert!(took < Duration::from_secs(2), "{budget_name}: the {what} took {took:?}");
        }
        assert!(slept - start >= Duration::from_millis(10));
        let spins = polls.get();
        assert!(spins > 0, "{budget_name}: the spinner never ran");
        // Each crank runs at most `budget` polls, then turns the reactor.
        assert!(
            spins <= (turns + 1) * budget as u64,
            "{budget_name}: {spins} spinner polls in {turns} turns"
        );
    }
}

#[test]
fn many_spinners_share_the_cranks_with_a_woken_task() {
    let budget = 4;
    let rt = LocalReactor::builder().budget(budget).build().unwrap();
    let counts: Vec<Rc<Cell<u64>>> = (0..10).map(|_| Rc::default()).collect();
    let spinners: Vec<_> = counts.iter().map(|c| rt.spawn(spinner(c.clone()))).collect();
    let woke_after = bounded(&rt, "a timer beside ten spinners", async {
        let mut ticks = 0;
        let start = Instant::now();
        while ticks < 20 {
            let t = tally::spawn(tally::time::sleep(Duration::from_millis(1)));
            t.await.unwrap();
            ticks += 1;
        }
        start.elapsed()
    });
    assert!(woke_after < Duration::from_secs(5), "20 one-ms sleeps took {woke_after:?}");
    // Round robin: every spinner got its turns, and about equally many.
    let spins: Vec<u64> = counts.iter().map(|c| c.get()).collect();
    let (min, max) = (*spins.iter().min().unwrap(), *spins.iter().max().unwrap());
    assert!(min > 0, "a spinner starved: {spins:?}");
    assert!(max - min <= 1, "spinners were not served round robin: {spins:?}");
    for s in spinners {
        s.abort();
    }
    util::crank(&rt);
}

#[test]
fn a_spinning_main_future_still_lets_io_and_tasks_run() {
    let rt = LocalReactor::builder().budget(2).build().unwrap();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let (rx, mut tx) = std::io::pipe().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        tx.write_all(b"x").unwrap();
    });
    let _task = rt.spawn(async move {
        let reg = tally::reactor().register_fd(rx.as_raw_fd(), Signals::READABLE).unwrap();
        reg.packets().await;
        tally::time::sleep(Duration::from_millis(1)).await;
        d.set(true);
    });
    let start = Instant::now();
    let spins = rt.block_on(async {
        let mut spins = 0u64;
        while !done.get() {
            assert!(start.elapsed() < util::BUDGET, "the main future starved the task");
            spins += 1;
            yield_now().await;
        }
        spins
    });
    writer.join().unwrap();
    assert!(spins > 0);
    assert!(start.elapsed() < Duration::from_secs(2));
}
