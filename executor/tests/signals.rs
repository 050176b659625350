//! Process signals as counted packets.
//!
//! This file runs without the test harness (`harness = false`): a signalfd
//! only sees a signal that is blocked in every thread, and the harness
//! spawns threads. `main` blocks the signals first, then runs each test.

mod util;

use std::time::Duration;

use tally::signal::ProcessSignals;
use tally::{LocalReactor, PacketKind, PacketList};

const N: u32 = 20;

/// Adds up the counts of `signo` in one packet list, checking that every
/// packet is a process-signal packet for one of `expected`.
fn count(list: &PacketList, signo: i32, expected: &[i32]) -> u32 {
    let mut n = 0;
    for p in list {
        let PacketKind::ProcessSignal(s) = p.kind() else { panic!("not a signal packet: {p:?}") };
        assert!(expected.contains(&s.signo), "unexpected signal {}", s.signo);
        assert!(s.count.get() > 0, "a signal packet with a zero count");
        if s.signo == signo {
            n += s.count.get();
        }
    }
    n
}

/// Receives until `signo` has been counted `want` times in all (bounded).
async fn recv_until(sigs: &mut ProcessSignals, signo: i32, seen: &mut u32, want: u32) {
    while *seen < want {
        let list = tally::time::timeout(Duration::from_secs(10), sigs.recv())
            .await
            .unwrap_or_else(|_| panic!("signal {signo}: {seen} of {want} after 10 s"))
            .expect("read the signalfd");
        *seen += count(&list, signo, &[signo]);
    }
    assert_eq!(*seen, want, "signal {signo}: more deliveries than were sent");
}

/// A signal sent to the whole process, not to a thread.
fn kill_self(signo: i32) {
    // SAFETY: kill(2) with our own pid and a valid signal number, which
    // every thread blocks.
    let rc = unsafe { libc::kill(libc::getpid(), signo) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

fn standard_signals_sent_one_at_a_time_add_up() {
    let rt = LocalReactor::new().unwrap();
    util::bounded(&rt, "SIGUSR1 x N", async {
        let mut sigs = tally::signal::signals(&[libc::SIGUSR1]).unwrap();
        let mut seen = 0;
        for i in 0..N {
            // Standard signals coalesce in the kernel: wait until each one
            // is counted before sending the next.
            if i % 2 == 0 {
                kill_self(libc::SIGUSR1);
            } else {
                // From another thread, which inherited the mask.
                std::thread::spawn(|| kill_self(libc::SIGUSR1)).join().unwrap();
            }
            recv_until(&mut sigs, libc::SIGUSR1, &mut seen, i + 1).await;
        }
        // Nothing more arrives.
        let extra = tally::time::timeout(Duration::from_millis(20), sigs.recv()).await;
        assert!(extra.is_err(), "an extra SIGUSR1 packet: {extra:?}");
        assert_eq!(seen, N);
    });
}

fn realtime_signals_queue_and_add_up() {
    let rt = LocalReactor::new().unwrap();
    let signo = libc::SIGRTMIN();
    util::bounded(&rt, "SIGRTMIN x N", async {
        let mut sigs = tally::signal::signals(&[signo]).unwrap();
        // All at once: real-time signals queue rather than coalesce.
        for i in 0..N {
            let value = libc::sigval { sival_ptr: i as usize as *mut libc::c_void };
            // SAFETY: sigqueue(3) with our own pid, a valid signal number
            // that every thread blocks, and a plain value.
            let rc = unsafe { libc::sigqueue(libc::getpid(), signo, value) };
            assert_eq!(rc, 0, "sigqueue: {}", std::io::Error::last_os_error());
        }
        let mut seen = 0;
        recv_until(&mut sigs, signo, &mut seen, N).await;
        let extra = tally::time::timeout(Duration::from_millis(20), sigs.recv()).await;
        assert!(extra.is_err(), "an extra real-time signal packet: {extra:?}");
    });
}

fn two_signals_one_stream_separate_counts() {
    let rt = LocalReactor::new().unwrap();
    let rt_sig = libc::SIGRTMIN() + 1;
    util::bounded(&rt, "two signals", async {
        let both = [libc::SIGUSR1, rt_sig];
        let mut sigs = tally::signal::signals(&both).unwrap();
        kill_self(libc::SIGUSR1);
        for _ in 0..3 {
            kill_self(rt_sig);
        }
        let (mut usr1, mut rtn) = (0, 0);
        while usr1 < 1 || rtn < 3 {
            let list = tally::time::timeout(Duration::from_secs(10), sigs.recv())
                .await
                .expect("both signals within 10 s")
                .unwrap();
            usr1 += count(&list, libc::SIGUSR1, &both);
            rtn += count(&list, rt_sig, &both);
        }
        assert_eq!((usr1, rtn), (1, 3));
    });
}

fn invalid_signals_are_refused() {
    let rt = LocalReactor::new().unwrap();
    rt.block_on(async {
        for bad in [libc::SIGKILL, libc::SIGSTOP, 0, 1000] {
            let e = tally::signal::signals(&[bad]).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "signal {bad}");
        }
    });
}

fn main() {
    // First, before any thread exists.
    let rt_signals = [libc::SIGRTMIN(), libc::SIGRTMIN() + 1];
    tally::signal::block(&[libc::SIGUSR1, rt_signals[0], rt_signals[1]]).unwrap();
    let tests: [(&str, fn()); 4] = [
        ("standard_signals_sent_one_at_a_time_add_up", standard_signals_sent_one_at_a_time_add_up),
        ("realtime_signals_queue_and_add_up", realtime_signals_queue_and_add_up),
        ("two_signals_one_stream_separate_counts", two_signals_one_stream_separate_counts),
        ("invalid_signals_are_refused", invalid_signals_are_refused),
    ];
    // Answer the harness's common flags: NAME filters, `--list` lists, and
    // `--ignored` runs nothing (none of these tests is ignored).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    if args.iter().any(|a| a == "--ignored") {
        println!("signals: 0 passed (none is ignored)");
        return;
    }
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        print!("test {name} ... ");
        test();
        println!("ok");
        ran += 1;
    }
    println!("\nsignals: {ran} passed (each signal sent {N} times)");
}
