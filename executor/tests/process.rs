//! Child processes on real kernels objects: exits and signals through a
//! pidfd, stdout and stdin as pipe streams, many children watched from one
//! registration, no zombies left behind, kill-on-drop and clear errors.

mod util;

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::io::{AsyncReadExt, AsyncWriteExt};
use tally::LocalReactor;
use tally::process::{Command, ExitPacket};

/// The state letter and parent pid of process `pid`, from `/proc/PID/stat`;
/// `None` once it is gone.
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may hold spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a zombie child of this process.
fn is_our_zombie(pid: u32) -> bool {
    proc_state(pid) == Some(('Z', std::process::id()))
}

/// Whether `pid` is a child of this process, alive or a zombie.
fn is_our_child(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(_, ppid)| ppid == std::process::id())
}

/// Every zombie child of this process, scanning `/proc/*/stat`.
fn our_zombies() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| is_our_zombie(pid))
        .collect()
}

/// Runs the executor until `done` holds, for at most `limit`; whether it
/// did.
fn run_until(rt: &LocalReactor, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    rt.block_on(async {
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            tally::time::sleep(Duration::from_millis(5)).await;
        }
        done()
    })
}

#[test]
fn true_exits_with_success() {
    let rt = LocalReactor::new().unwrap();
    let status = util::bounded(&rt, "true", async { Command::new("true").status().await.unwrap() });
    assert!(status.success());
    assert_eq!(status.code(), Some(0));
}

#[test]
fn false_exits_with_code_1() {
    let rt = LocalReactor::new().unwrap();
    let status =
        util::bounded(&rt, "false", async { Command::new("false").status().await.unwrap() });
    assert!(!status.success());
    assert_eq!(status.code(), Some(1));
}

#[test]
fn exit_codes_and_the_pid_come_through() {
    let rt = LocalReactor::new().unwrap();
    util::bounded(&rt, "sh -c 'exit 3'", async {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let pid = child.id().expect("a running child has a pid");
        assert!(pid > 0);
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(child.id(), None, "a reaped child has no pid");
        // Waiting again gives the same status.
        assert_eq!(child.wait().await.unwrap().code(), Some(3));
        assert_eq!(child.try_wait().unwrap().and_then(|s| s.code()), Some(3));
    });
}

#[test]
fn a_killed_child_shows_signal_9() {
    let rt = LocalReactor::new().unwrap();
    let started = Instant::now();
    let status = util::bounded(&rt, "kill sleep 10", async {
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        assert_eq!(child.try_wait().unwrap(), None, "sleep 10 still runs");
        child.kill().unwrap();
        let status = child.wait().await.unwrap();
        // Killing an exited, reaped child is no error.
        child.kill().unwrap();
        status
    });
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(status.code(), None);
    assert!(started.elapsed() < Duration::from_secs(5), "the kill took {:?}", started.elapsed());
}

#[test]
fn ten_mib_of_stdout_are_read_fully() {
    const LEN: usize = 10 * 1024 * 1024;
    let rt = LocalReactor::new().unwrap();
    let started = Instant::now();
    let (bytes, status) = util::bounded(&rt, "head -c 10 MiB", async {
        let mut child = Command::new("head")
            .args(["-c", &LEN.to_string(), "/dev/zero"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // A plain read loop: `read_to_end` zeroes its spare capacity byte
        // by byte, which takes seconds for 10 MiB in a debug build.
        let mut stdout = child.stdout.take().unwrap();
        let (mut buf, mut len, mut nonzero) = (vec![0u8; 64 * 1024], 0, 0);
        loop {
            match stdout.read(&mut buf).await.unwrap() {
                0 => break,
                n => {
                    len += n;
                    nonzero += buf[..n].iter().filter(|&&b| b != 0).count();
                }
            }
        }
        ((len, nonzero), child.wait().await.unwrap())
    });
    let took = started.elapsed();
    assert!(status.success());
    assert_eq!(bytes, (LEN, 0), "(bytes read, bytes not zero)");
    eprintln!("10 MiB through a pipe in {took:?} on {:?}", rt.metrics().backend);
}

#[test]
fn stdin_piped_to_cat_comes_back() {
    // More than a pipe holds (64 KiB) both ways, so that writes must wait
    // for cat and reads must run while writing.
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let rt = LocalReactor::new().unwrap();
    let (back, status) = util::bounded(&rt, "cat", async {
        let mut child =
            Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let (mut stdin, mut stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let write = async {
            stdin.write_all(&data).await.unwrap();
            stdin.close().await.unwrap();
            // Closed: further writes fail clearly.
            assert!(stdin.write(b"x").await.is_err());
        };
        let read = async {
            let mut back = Vec::new();
            stdout.read_to_end(&mut back).await.unwrap();
            back
        };
        let ((), back) = futures::future::join(write, read).await;
        (back, child.wait().await.unwrap())
    });
    assert!(status.success());
    assert_eq!(back.len(), data.len());
    assert!(back == data, "cat gave back different bytes");
}

#[test]
fn a_dropped_read_on_a_pipe_loses_nothing() {
    let rt = LocalReactor::new().unwrap();
    let out = util::bounded(&rt, "a late writer", async {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 0.2; echo late"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut buf = [0u8; 64];
        // The read is armed, then dropped by the timeout before any byte.
        let early = tally::time::timeout(Duration::from_millis(20), stdout.read(&mut buf)).await;
        assert!(early.is_err(), "nothing was written yet: {early:?}");
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.unwrap();
        assert!(child.wait().await.unwrap().success());
        out
    });
    assert_eq!(out, "late\n");
}

#[test]
fn writing_to_a_child_that_closed_its_stdin_is_broken_pipe() {
    let rt = LocalReactor::new().unwrap();
    let err = util::bounded(&rt, "write to a closed pipe", async {
        // The child never reads, and exits: its end of the pipe closes.
        let mut child = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        assert!(child.wait().await.unwrap().success());
        let chunk = vec![7u8; 64 * 1024];
        // A megabyte at most: the first write after the close fails.
        let mut result = Ok(());
        for _ in 0..16 {
            result = stdin.write_all(&chunk).await;
            if result.is_err() {
                break;
            }
        }
        result.err().or(stdin.flush().await.err()).expect("writes to a closed pipe fail")
    });
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
}

#[test]
fn wait_with_output_collects_stdout_and_stderr() {
    let rt = LocalReactor::new().unwrap();
    let out = util::bounded(&rt, "wait_with_output", async {
        Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output()
            .await
            .unwrap()
    });
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    // `output` pipes both itself.
    let out = util::bounded(&rt, "output", async {
        Command::new("sh").args(["-c", "echo o; echo e >&2"]).output().await.unwrap()
    });
    assert_eq!(
        (out.status.code(), &out.stdout[..], &out.stderr[..]),
        (Some(0), &b"o\n"[..], &b"e\n"[..])
    );
}

#[test]
fn wait_with_output_reads_both_pipes_at_once() {
    // A megabyte to stderr before any to stdout: reading stdout alone
    // first would leave the child blocked on a full stderr pipe.
    const LEN: usize = 1_000_000;
    let rt = LocalReactor::new().unwrap();
    let script = format!("head -c {LEN} /dev/zero >&2; head -c {LEN} /dev/zero");
    let out = util::bounded(&rt, "stderr first", async {
        Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output()
            .await
            .unwrap()
    });
    assert!(out.status.success());
    assert_eq!((out.stdout.len(), out.stderr.len()), (LEN, LEN));
}

/// With `tokio-io`, the pipes are tokio `AsyncRead`/`AsyncWrite` too.
#[cfg(feature = "tokio-io")]
#[test]
fn tokio_io_reads_and_writes_the_pipes() {
    let rt = LocalReactor::new().unwrap();
    let back = util::bounded(&rt, "tokio-io cat", async {
        let mut child =
            Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let (mut stdin, mut stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        tokio::io::AsyncWriteExt::write_all(&mut stdin, b"through tokio-io\n").await.unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut stdin).await.unwrap();
        let mut back = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut back).await.unwrap();
        assert!(child.wait().await.unwrap().success());
        back
    });
    assert_eq!(back, "through tokio-io\n");
}

#[test]
fn a_hundred_children_are_watched_from_one_registration() {
    const N: usize = 100;
    let rt = LocalReactor::new().unwrap();
    let reg = rt.register();
    let started = Instant::now();
    let (exits, pids) = util::bounded(&rt, "100 children", async {
        let mut children = Vec::new();
        for i in 0..N {
            // Every tenth fails, so that keys and statuses must match up.
            let program = if i % 10 == 0 { "false" } else { "true" };
            let child = Command::new(program).spawn().unwrap();
            child.watch(&reg, i as u64).unwrap();
            children.push(child);
        }
        let pids: Vec<u32> = children.iter().map(|c| c.id().unwrap()).collect();
        let mut exits = vec![None; N];
        let mut seen = 0;
        while seen < N {
            for packet in reg.packets().await {
                let exit = ExitPacket::from_packet(&packet).expect("only exit packets");
                let slot = &mut exits[exit.key as usize];
                assert!(slot.is_none(), "child {} reported twice", exit.key);
                *slot = Some(exit);
                seen += 1;
            }
        }
        // Each child's own wait agrees with its packet.
        for (i, child) in children.iter_mut().enumerate() {
            let status = child.wait().await.unwrap();
            assert_eq!(Some(status), exits[i].and_then(|e| e.status));
        }
        (exits, pids)
    });
    eprintln!(
        "100 children spawned and reaped in {:?} on {:?}",
        started.elapsed(),
        rt.metrics().backend
    );
    for (i, exit) in exits.iter().enumerate() {
        let exit = exit.expect("every child reported");
        assert_eq!(exit.pid, pids[i], "child {i}'s packet names its pid");
        let code = exit.status.and_then(|s| s.code());
        assert_eq!(code, Some(if i % 10 == 0 { 1 } else { 0 }), "child {i}");
    }
    assert!(pids.iter().all(|&pid| !is_our_zombie(pid)), "every child was reaped");
}

#[test]
fn watching_an_exited_child_reports_at_once() {
    let rt = LocalReactor::new().unwrap();
    let reg = rt.register();
    let exit = util::bounded(&rt, "watch after exit", async {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id().unwrap();
        child.wait().await.unwrap();
        child.watch(&reg, 7).unwrap();
        let packets = reg.packets().await;
        let exit = ExitPacket::from_packet(&packets[0]).unwrap();
        assert_eq!(exit.pid, pid);
        exit
    });
    assert_eq!(exit.key, 7);
    assert!(exit.status.unwrap().success());
}

#[test]
fn an_exit_reaches_a_registration_on_another_thread() {
    let (tx, rx) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        let rt = LocalReactor::new().unwrap();
        let reg = rt.register();
        tx.send(reg.sender()).unwrap();
        util::bounded(&rt, "the exit on another thread", async {
            loop {
                if let Some(exit) = reg.packets().await.iter().find_map(ExitPacket::from_packet) {
                    return exit;
                }
            }
        })
    });
    let rt = LocalReactor::new().unwrap();
    let sender = rx.recv_timeout(util::BUDGET).unwrap();
    let pid = util::bounded(&rt, "sh -c 'exit 9'", async {
        let mut child = Command::new("sh").args(["-c", "exit 9"]).spawn().unwrap();
        child.watch_sender(sender, 42).unwrap();
        let pid = child.id().unwrap();
        child.wait().await.unwrap();
        pid
    });
    let exit = watcher.join().unwrap();
    assert_eq!((exit.key, exit.pid), (42, pid));
    assert_eq!(exit.status.and_then(|s| s.code()), Some(9));
}

#[test]
fn dropped_children_leave_no_zombies() {
    let rt = LocalReactor::new().unwrap();
    let pids: Vec<u32> = rt.block_on(async {
        (0..20)
            .map(|i| {
                let program = if i % 2 == 0 { "true" } else { "false" };
                let child = Command::new(program).spawn().unwrap();
                child.id().unwrap()
                // Dropped here, never waited for.
            })
            .collect()
    });
    let reaped = run_until(&rt, util::BUDGET, || pids.iter().all(|&pid| !is_our_child(pid)));
    let left: Vec<u32> = pids.iter().copied().filter(|&pid| is_our_zombie(pid)).collect();
    assert!(reaped && left.is_empty(), "zombies left: {left:?}");
    // None of ours anywhere in /proc (other tests' children may be
    // zombies for a moment, between their exit and their reaping).
    let ours: Vec<u32> = our_zombies().into_iter().filter(|p| pids.contains(p)).collect();
    assert!(ours.is_empty(), "zombies left: {ours:?}");
}

#[test]
fn kill_on_drop_kills_and_reaps() {
    let rt = LocalReactor::new().unwrap();
    let pid = rt.block_on(async {
        let child = Command::new("sleep").arg("10").kill_on_drop(true).spawn().unwrap();
        child.id().unwrap()
    });
    let gone = run_until(&rt, Duration::from_secs(5), || !is_our_child(pid));
    assert!(gone, "the child still runs or is a zombie: {:?}", proc_state(pid));
}

#[test]
fn without_kill_on_drop_a_dropped_child_runs_on() {
    let rt = LocalReactor::new().unwrap();
    let pid =
        rt.block_on(async { Command::new("sleep").arg("0.3").spawn().unwrap().id().unwrap() });
    // Dropped: it still runs, and is reaped when it exits.
    assert!(matches!(proc_state(pid), Some(('S' | 'R', _))), "{:?}", proc_state(pid));
    let gone = run_until(&rt, Duration::from_secs(5), || !is_our_child(pid));
    assert!(gone, "not reaped: {:?}", proc_state(pid));
}

#[test]
fn an_orphan_of_a_dropped_executor_is_reaped_at_the_next_spawn() {
    let pid = {
        let rt = LocalReactor::new().unwrap();
        rt.block_on(async { Command::new("sleep").arg("0.1").spawn().unwrap().id().unwrap() })
        // The executor goes first, with the reaper: the child is an orphan.
    };
    // It exits unreaped: a zombie (or already reaped, by a spawn of a
    // test running beside this one).
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(proc_state(pid), Some((s, _)) if s != 'Z') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        matches!(proc_state(pid), None | Some(('Z', _))),
        "the orphan should have exited: {:?}",
        proc_state(pid)
    );
    let rt = LocalReactor::new().unwrap();
    util::bounded(&rt, "next spawn", async {
        Command::new("true").status().await.unwrap();
    });
    assert!(!is_our_child(pid), "the orphan was not reaped by the next spawn");
}

#[test]
fn a_missing_program_is_not_found() {
    let rt = LocalReactor::new().unwrap();
    let err = rt
        .block_on(async { Command::new("/nonexistent/tally-no-such-program").spawn() })
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

#[test]
fn spawn_outside_an_executor_is_an_error() {
    let err = Command::new("true").spawn().unwrap_err();
    assert!(err.to_string().contains("executor"), "{err}");
}

#[test]
fn the_child_inherits_no_fd_of_ours() {
    // Read a sleeping child's fd table from here: only stdin, stdout and
    // stderr may be there; pidfds, pipes, the ring and every other fd of
    // ours (and of the tests running beside this one) are close-on-exec.
    let rt = LocalReactor::new().unwrap();
    let fds = util::bounded(&rt, "sleep's fds", async {
        let mut child = Command::new("sleep")
            .arg("10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        // Until the exec is done the table is the fork's, and until the
        // dynamic loader is done it may hold a library it is mapping: wait
        // for `sleep` to sleep (in clock_nanosleep), with the same table
        // twice running.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut fds = Vec::new();
        let mut last = Vec::new();
        while Instant::now() < deadline {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            if exe.to_string_lossy().contains("sleep") && wchan.contains("nanosleep") {
                let now: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        let fd = e.file_name().to_str().unwrap().parse::<u32>().unwrap();
                        let to = std::fs::read_link(e.path()).unwrap_or_default();
                        (fd, to.to_string_lossy().into_owned())
                    })
                    .collect();
                if now == last {
                    fds = now;
                    break;
                }
                last = now;
            }
            tally::time::sleep(Duration::from_millis(10)).await;
        }
        child.kill().unwrap();
        assert_eq!(child.wait().await.unwrap().signal(), Some(libc::SIGKILL));
        fds
    });
    // Beyond 0, 1 and 2, only fds this test process itself inherited and
    // left open (from cargo, or a shell) may pass on; none of tally's.
    let inherited_by_us = |fd: u32| {
        // SAFETY: fcntl(F_GETFD) on a number takes no pointers.
        let flags = unsafe { libc::fcntl(fd as i32, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC == 0
    };
    let leaked: Vec<&(u32, String)> =
        fds.iter().filter(|(fd, _)| *fd > 2 && !inherited_by_us(*fd)).collect();
    assert!(fds.len() >= 3 && leaked.is_empty(), "the child's fds {fds:?}, leaked {leaked:?}");
}

#[test]
fn a_child_reaped_elsewhere_is_a_clear_error_and_a_packet_without_status() {
    const NAME: &str = "a_child_reaped_elsewhere_is_a_clear_error_and_a_packet_without_status";
    const ENV: &str = "TALLY_TEST_SIGCHLD_IGNORED";
    if std::env::var_os(ENV).is_none() {
        // Ignoring SIGCHLD is process-wide (the kernel then reaps every
        // child at once), so this runs alone, in a fresh test process.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--test-threads=1"])
            .env(ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}");
        return;
    }
    // SAFETY: setting SIGCHLD's disposition to SIG_IGN installs no handler.
    assert_ne!(unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) }, libc::SIG_ERR);
    let rt = LocalReactor::new().unwrap();
    let reg = rt.register();
    let (err, exit) = util::bounded(&rt, "a child the kernel reaped", async {
        // Not `true`: a child gone before its pidfd is opened is another
        // error (`spawn`'s).
        let mut child = Command::new("sleep").arg("0.1").spawn().unwrap();
        child.watch(&reg, 5).unwrap();
        let err = child.wait().await.unwrap_err();
        let packets = reg.packets().await;
        (err, ExitPacket::from_packet(&packets[0]).unwrap())
    });
    assert_eq!(err.raw_os_error(), Some(libc::ECHILD), "{err}");
    assert_eq!((exit.key, exit.status), (5, None));
}

/// Every fd of this process whose `/proc/self/fd` link or fdinfo matches
/// `what`.
fn our_fds_matching(what: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let link = std::fs::read_link(format!("/proc/self/fd/{name}")).ok()?;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{name}")).unwrap_or_default();
        let link = link.to_string_lossy().into_owned();
        what(&link, &info).then(|| format!("{name} -> {link}"))
    })
    .collect()
}

#[test]
fn a_finished_child_leaves_no_fd_open() {
    let rt = LocalReactor::new().unwrap();
    let (pid, pipes) = util::bounded(&rt, "a child with three pipes", async {
        let child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        // Each pipe's inode names it uniquely, whatever fd numbers the
        // tests running beside this one reuse.
        let link = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let pipes: Vec<_> = [
            child.stdin.as_ref().unwrap().as_raw_fd(),
            child.stdout.as_ref().unwrap().as_raw_fd(),
            child.stderr.as_ref().unwrap().as_raw_fd(),
        ]
        .map(|fd| link(fd).to_string_lossy().into_owned())
        .into();
        // The pidfd is there while the child runs: fdinfo names its pid.
        let pid_line = format!("Pid:\t{pid}\n");
        assert_eq!(our_fds_matching(|_, info| info.contains(&pid_line)).len(), 1);
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success());
        (pid, pipes)
    });
    // Closes through the ring run at the next turns.
    let pid_line = format!("Pid:\t{pid}\n");
    let open = || {
        our_fds_matching(|link, info| pipes.iter().any(|p| p == link) || info.contains(&pid_line))
    };
    let closed = run_until(&rt, Duration::from_secs(5), || open().is_empty());
    assert!(closed, "fds left open: {:?}", open());
}

/// Bytes that `write_all` reported written reach the child even when
/// stdin is dropped with the last write still in flight (the pipe was
/// full): the write finishes in the background, then the pipe closes, as
/// with tokio's pipes, whose writes are in the kernel before `Ready`.
/// Both the explicit drop and `wait`'s own drop of stdin are covered.
#[test]
fn bytes_written_to_stdin_reach_the_child_after_it_is_dropped() {
    let rt = LocalReactor::new().unwrap();
    for drop_in_wait in [false, true] {
        let (sent, counted) = util::bounded(&rt, "stdin then wc", async {
            let mut child = Command::new("sh")
                .args(["-c", "sleep 0.3; wc -c"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            // SAFETY: F_GETPIPE_SZ takes no pointers.
            let cap = unsafe { libc::fcntl(stdin.as_raw_fd(), libc::F_GETPIPE_SZ) };
            let cap = if cap > 0 { cap as usize } else { 65536 };
            let data = vec![b'x'; cap + 1000];
            stdin.write_all(&data).await.unwrap();
            let mut stdout = child.stdout.take().unwrap();
            if drop_in_wait {
                child.stdin = Some(stdin);
                let reader = tally::spawn(async move {
                    let mut out = String::new();
                    stdout.read_to_string(&mut out).await.unwrap();
                    out
                });
                assert!(child.wait().await.unwrap().success());
                (data.len(), reader.await.unwrap().trim().parse::<usize>().unwrap())
            } else {
                drop(stdin);
                let mut out = String::new();
                stdout.read_to_string(&mut out).await.unwrap();
                assert!(child.wait().await.unwrap().success());
                (data.len(), out.trim().parse::<usize>().unwrap())
            }
        });
        assert_eq!(counted, sent, "drop in wait {drop_in_wait}: the child got {counted} of {sent}");
    }
}
