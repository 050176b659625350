//! Real failures of io_uring, as containers make them: a child process
//! installs a seccomp filter (classic BPF, through `prctl`) that makes
//! `io_uring_setup` fail with `EPERM` (Docker's default profile), then with
//! `ENOSYS` (gVisor, kernels without io_uring), and runs a socket workload
//! there.
//!
//! * `Backend::Auto` falls back to epoll, the workload completes, and
//!   `metrics()` names epoll and the reason.
//! * A forced io_uring (`TALLY_BACKEND=io_uring`, or `Backend::IoUring`)
//!   fails with an error that names `io_uring_setup`, the errno and the way
//!   out.
//!
//! `harness = false`: each case forks, and a fork is only safe from a
//! process with one thread, which the default harness is not.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tally_reactor::{Backend, Builder, Fallback, Op, Reactor};

/// `AUDIT_ARCH_X86_64`: the filter allows every syscall of any other ABI.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

fn main() {
    if !cfg!(target_arch = "x86_64") {
        println!("SKIPPED seccomp: the filter is written for x86-64");
        return;
    }
    let mut failed = 0;
    for errno in [libc::EPERM, libc::ENOSYS] {
        for case in [Case::AutoFallsBack, Case::ForcedByEnv, Case::ForcedByBuilder] {
            let name = format!("{case:?} with io_uring_setup -> {}", errname(errno));
            match in_child(errno, case) {
                0 => println!("test {name} ... ok"),
                code => {
                    println!("test {name} ... FAILED (child exit {code})");
                    failed += 1;
                }
            }
        }
    }
    if failed > 0 {
        println!("seccomp: {failed} failed");
        std::process::exit(1);
    }
    println!("seccomp: 6 passed");
}

#[derive(Clone, Copy, Debug)]
enum Case {
    AutoFallsBack,
    ForcedByEnv,
    ForcedByBuilder,
}

fn errname(errno: i32) -> &'static str {
    if errno == libc::EPERM { "EPERM" } else { "ENOSYS" }
}

/// Runs `case` in a child whose `io_uring_setup` fails with `errno`, and
/// returns the child's exit code (0: passed).
fn in_child(errno: i32, case: Case) -> i32 {
    // SAFETY: this process has one thread (harness = false, and no case
    // leaves a thread behind), so the child may run any code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match std::panic::catch_unwind(|| child(errno, case)) {
            Ok(()) => 0,
            Err(_) => 1,
        };
        // SAFETY: _exit ends the child without running the parent's
        // destructors or atexit handlers twice.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `status` is valid for writes; `pid` is our child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) }
}

fn child(errno: i32, case: Case) {
    // SAFETY: the child has one thread; nothing reads the environment
    // concurrently. (CI runs the suite a second time with
    // TALLY_BACKEND=epoll, which would hide the fallback.)
    unsafe { std::env::remove_var("TALLY_BACKEND") };
    forbid_io_uring(errno);
    match case {
        Case::AutoFallsBack => {
            let reactor = Reactor::new().expect("Auto must fall back to epoll");
            let m = reactor.metrics();
            assert_eq!(m.backend, Backend::Epoll, "{m:?}");
            let fallback = m.fallback.expect("the metrics say why");
            assert_eq!(fallback.step, "io_uring_setup", "{fallback}");
            assert_eq!(fallback.errno, errno, "{fallback}");
            let _: Fallback = fallback;
            println!("  fallback: {fallback}");
            socket_workload(&reactor);
        }
        Case::ForcedByEnv => {
            // SAFETY: the child has one thread; nothing reads the
            // environment concurrently.
            unsafe { std::env::set_var("TALLY_BACKEND", "io_uring") };
            check_forced_error(Reactor::new().expect_err("a forced io_uring must fail"), errno);
        }
        Case::ForcedByBuilder => {
            let err = Builder::new().backend(Backend::IoUring).build();
            check_forced_error(err.expect_err("a forced io_uring must fail"), errno);
        }
    }
}

fn check_forced_error(err: std::io::Error, errno: i32) {
    let text = err.to_string();
    println!("  error: {text}");
    assert!(text.contains("io_uring_setup"), "{text}");
    assert!(text.contains(&std::io::Error::from_raw_os_error(errno).to_string()), "{text}");
    assert!(text.contains("TALLY_BACKEND=epoll"), "{text}");
    let cause = if errno == libc::EPERM { "seccomp" } else { "without io_uring" };
    assert!(text.contains(cause), "{text}");
    assert_eq!(err.kind(), std::io::Error::from_raw_os_error(errno).kind());
}

/// Accepts a loopback connection with a multishot accept, then echoes 100
/// messages through multishot recv into a buffer group and sends, on the
/// reactor alone; every byte is checked. Bounded at 10 s.
fn socket_workload(reactor: &Reactor) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reg = reactor.register();
    reg.submit(Op::accept_multi(listener.as_raw_fd())).unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let server = loop {
        assert!(Instant::now() < deadline, "no connection accepted");
        reactor.turn(Some(Duration::from_millis(10))).unwrap();
        let packets = reg.try_drain();
        let fd = packets
            .iter()
            .filter_map(|p| p.as_completion())
            .find_map(|c| reg.take_fd(&c))
            .map(TcpStream::from);
        if let Some(s) = fd {
            break s;
        }
    };
    let group = reactor.buf_ring(16, 256).unwrap();
    let rd = reactor.register();
    let wr = reactor.register();
    rd.submit(Op::recv_multi(server.as_raw_fd(), group)).unwrap();
    for i in 0..100u32 {
        let msg = format!("message {i}");
        client.write_all(msg.as_bytes()).unwrap();
        let mut got = Vec::new();
        while got.len() < msg.len() {
            assert!(Instant::now() < deadline, "message {i} never arrived");
            reactor.turn(Some(Duration::from_millis(10))).unwrap();
            for c in rd.try_drain().iter().filter_map(|p| p.as_completion()) {
                assert!(c.result > 0, "recv: {}", c.result);
                got.extend_from_slice(&rd.buffer(&c).expect("the recv's buffer"));
            }
        }
        assert_eq!(got, msg.as_bytes());
        let send = wr.submit(Op::send(server.as_raw_fd(), got, 0)).unwrap();
        let sent = loop {
            assert!(Instant::now() < deadline, "send {i} never completed");
            reactor.turn(Some(Duration::from_millis(10))).unwrap();
            let done =
                wr.try_drain().iter().filter_map(|p| p.as_completion()).find(|c| c.op() == send);
            if let Some(c) = done {
                break c.result;
            }
        };
        assert_eq!(sent as usize, msg.len());
        let mut back = vec![0; msg.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
        let _ = wr.reclaim(send);
    }
    let m = reactor.metrics();
    assert_eq!(m.backend, Backend::Epoll);
    println!("  100 echoes on {}: {m:?}", m.backend);
}

/// Installs a seccomp filter under which `io_uring_setup` fails with
/// `errno` and every other syscall runs.
fn forbid_io_uring(errno: i32) {
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    // struct seccomp_data { int nr; __u32 arch; ... }: nr at 0, arch at 4.
    let mut filter = [
        stmt(load, 4),
        jump(AUDIT_ARCH_X86_64, 0, 3),
        stmt(load, 0),
        jump(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | (errno as u32 & 0xffff)),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integers only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error());
    // SAFETY: `prog` points at `filter`, valid for `len` instructions, both
    // alive across the call (the kernel copies the program).
    let rc = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) };
    assert_eq!(rc, 0, "PR_SET_SECCOMP: {}", std::io::Error::last_os_error());
}
