//! Child processes: [`Command`] spawns a [`Child`] whose exit is watched
//! through a pidfd, and whose stdin, stdout and stderr are tally pipe
//! streams ([`ChildStdin`], [`ChildStdout`], [`ChildStderr`]) with the
//! `futures-io` traits (and tokio's, with the `tokio-io` feature).
//!
//! # How an exit is seen
//!
//! `spawn` opens a pidfd for the child (`pidfd_open(2)`, close-on-exec) and
//! spawns a small *reaper* task on the current executor. The reaper owns
//! one registration, submits a one-shot poll for the pidfd's readability
//! (which the kernel reports when the child exits) and, when it fires,
//! reaps the child with `waitpid(pid, WNOHANG)`. It then
//!
//! * wakes [`Child::wait`], and
//! * sends one user packet, an [`ExitPacket`], to every registration that
//!   [`Child::watch`] named, carrying the key the watcher chose, the pid and
//!   the exit status.
//!
//! So a supervisor watches any number of children from **one registration**:
//! it drains one packet list, and [`ExitPacket::from_packet`] maps each
//! packet back to the child by its key (say, an index into the
//! supervisor's table). The status rides in the packet: nothing is scanned.
//! (A poll's readiness folds into its registration's counted signal, which
//! would say *how many* children exited but not *which*; hence one
//! registration per reaper, and user packets for the watchers.)
//!
//! # No zombies
//!
//! The reaper runs whether or not anyone waits, so a `Child` dropped
//! without `wait` is reaped in the background when it exits (and killed
//! first if [`Command::kill_on_drop`] was set). If the executor is dropped
//! before the child exits, the reaper goes with it; the last of the
//! reaper and the `Child` to go then puts the pid on a process-wide orphan
//! list, which every later [`Command::spawn`] and every later reaped exit,
//! on any thread, reaps without blocking. A program that spawns nothing
//! more keeps such a zombie until it exits itself.
//!
//! # Limits
//!
//! * Linux 5.3 or later (`pidfd_open`); on older kernels `spawn` kills the
//!   new child, reaps it, and returns an error saying so. There is no
//!   fallback to `SIGCHLD`.
//! * A child reaped by someone else (a `waitpid(-1)` elsewhere in the
//!   program, or `SIGCHLD` set to `SIG_IGN`) makes `wait` return the
//!   `ECHILD` error, and its [`ExitPacket`] has no status. If it is gone
//!   before `spawn` could open its pidfd (a pidfd is opened just after the
//!   fork, as std's stable API gives no race-free way), `spawn` returns an
//!   error saying so.
//! * The pipes' parent ends are made non-blocking; a write to a pipe whose
//!   reader is gone gets `EPIPE` (Rust programs ignore `SIGPIPE` unless
//!   they ask otherwise).
//!
//! # Example
//!
//! ```
//! use futures::io::AsyncReadExt;
//! use std::process::Stdio;
//! use tally::process::Command;
//!
//! let rt = tally::LocalReactor::new().unwrap();
//! rt.block_on(async {
//!     let mut child = Command::new("echo").arg("hello").stdout(Stdio::piped()).spawn().unwrap();
//!     let mut out = String::new();
//!     child.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
//!     assert_eq!(out, "hello\n");
//!     assert!(child.wait().await.unwrap().success());
//! });
//! ```

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tally_reactor::{Op, Packet, PacketKind, Registration, Sender, Signals};

use crate::context;
use crate::net::{StreamIo, stream_traits};
use crate::sys::syscall;

/// A command to spawn as a child process: [`std::process::Command`], whose
/// [`spawn`](Command::spawn) gives a [`Child`] driven by the executor.
///
/// Builder methods forward to std's and return `&mut Command`, so they
/// chain as std's do.
pub struct Command {
    std: std::process::Command,
    kill_on_drop: bool,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("std", &self.std)
            .field("kill_on_drop", &self.kill_on_drop)
            .finish()
    }
}

impl From<std::process::Command> for Command {
    fn from(std: std::process::Command) -> Command {
        Command { std, kill_on_drop: false }
    }
}

impl Command {
    /// A command that runs `program`, found on `PATH` as std finds it.
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command::from(std::process::Command::new(program))
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.std.arg(arg);
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Command {
        self.std.env(key, val);
        self
    }

    /// Sets several environment variables for the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.std.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.std.env_remove(key);
        self
    }

    /// Clears the child's environment.
    pub fn env_clear(&mut self) -> &mut Command {
        self.std.env_clear();
        self
    }

    /// Sets the child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.std.current_dir(dir);
        self
    }

    /// The child's stdin; [`Stdio::piped`] gives [`Child::stdin`].
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdin(cfg);
        self
    }

    /// The child's stdout; [`Stdio::piped`] gives [`Child::stdout`].
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdout(cfg);
        self
    }

    /// The child's stderr; [`Stdio::piped`] gives [`Child::stderr`].
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stderr(cfg);
        self
    }

    /// Whether dropping the [`Child`] before it was reaped sends it
    /// `SIGKILL` (default: no, as std). Either way it is reaped.
    pub fn kill_on_drop(&mut self, kill: bool) -> &mut Command {
        self.kill_on_drop = kill;
        self
    }

    /// The std command, for settings this type does not forward
    /// (`std::os::unix::process::CommandExt`, say).
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.std
    }

    /// Spawns the child. Must run inside an executor, which reaps it.
    ///
    /// # Errors
    ///
    /// What std's `spawn` returns (`NotFound` for a missing program,
    /// `PermissionDenied`, ...); an error outside an executor; and, on
    /// kernels without `pidfd_open` (before 5.3), an error saying so, after
    /// the child was killed and reaped.
    pub fn spawn(&mut self) -> io::Result<Child> {
        reap_orphans();
        if context::try_current().is_none() {
            return Err(io::Error::other(
                "tally::process::Command::spawn needs a tally executor on this thread \
                 (call it inside LocalReactor::block_on)",
            ));
        }
        let mut std_child = self.std.spawn()?;
        let pid = std_child.id();
        let built = pidfd_open(pid).and_then(|pidfd| {
            let stdin = std_child.stdin.take().map(|p| StreamIo::pipe(p.into())).transpose()?;
            let stdout = std_child.stdout.take().map(|p| StreamIo::pipe(p.into())).transpose()?;
            let stderr = std_child.stderr.take().map(|p| StreamIo::pipe(p.into())).transpose()?;
            Ok((pidfd, stdin, stdout, stderr))
        });
        let (pidfd, stdin, stdout, stderr) = match built {
            Ok(parts) => parts,
            Err(e) => {
                // Not ours to run without a pidfd: stop it now. A killed
                // child is reaped at once.
                let _ = std_child.kill();
                let _ = std_child.wait();
                return Err(e);
            }
        };
        let state = Rc::new(State {
            pid,
            pidfd,
            status: Cell::new(None),
            error: RefCell::new(None),
            waiter: RefCell::new(None),
            watchers: RefCell::new(Vec::new()),
            reaper_alive: Cell::new(true),
        });
        // Detached: dropping its handle leaves it running.
        drop(crate::spawn(reaper(state.clone())));
        Ok(Child {
            state,
            kill_on_drop: self.kill_on_drop,
            stdin: stdin.map(|io| ChildStdin { io }),
            stdout: stdout.map(|io| ChildStdout { io }),
            stderr: stderr.map(|io| ChildStderr { io }),
        })
    }

    /// Spawns the child and waits for it to exit; its stdin is closed
    /// first if piped.
    ///
    /// # Errors
    ///
    /// As [`Command::spawn`] and [`Child::wait`].
    pub async fn status(&mut self) -> io::Result<ExitStatus> {
        self.spawn()?.wait().await
    }

    /// Spawns the child with stdout and stderr piped (whatever was set
    /// before, as tokio's `output` does), and collects both and the exit
    /// status, as [`Child::wait_with_output`].
    ///
    /// # Errors
    ///
    /// As [`Command::spawn`] and [`Child::wait_with_output`].
    pub async fn output(&mut self) -> io::Result<Output> {
        self.std.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.spawn()?.wait_with_output().await
    }
}

/// A spawned child process.
///
/// Dropping it does not wait for the child, nor kill it unless
/// [`Command::kill_on_drop`] was set; it is reaped in the background when
/// it exits (see the module doc).
///
/// It is `!Send`, as tally's streams are: it belongs to the thread whose
/// executor spawned it, which reaps it. To hear of its exit on another
/// thread's registration, give that registration's [`Sender`] to
/// [`watch_sender`](Child::watch_sender).
pub struct Child {
    state: Rc<State>,
    kill_on_drop: bool,
    /// The child's stdin, if it was [`Stdio::piped`].
    pub stdin: Option<ChildStdin>,
    /// The child's stdout, if it was [`Stdio::piped`].
    pub stdout: Option<ChildStdout>,
    /// The child's stderr, if it was [`Stdio::piped`].
    pub stderr: Option<ChildStderr>,
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.state.pid)
            .field("status", &self.state.status.get())
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}

impl Child {
    /// The child's pid; `None` once it has been reaped (the number may then
    /// name another process).
    pub fn id(&self) -> Option<u32> {
        match self.state.status.get() {
            Some(_) => None,
            None => Some(self.state.pid),
        }
    }

    /// Waits for the child to exit. Closes its stdin first (if piped), so
    /// that a child reading it to the end is not left waiting for more.
    ///
    /// # Errors
    ///
    /// `ECHILD` if something else reaped the child; an error if the
    /// executor that spawned it is gone and the child still runs (use
    /// [`Child::try_wait`] then).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        poll_fn(|cx| self.state.poll_status(cx)).await
    }

    /// The exit status if the child has exited, reaping it now if need be;
    /// `None` if it still runs. Never blocks.
    ///
    /// # Errors
    ///
    /// `ECHILD` if something else reaped the child.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.state.reap_now()
    }

    /// Sends the child `SIGKILL` through its pidfd (so never to a process
    /// that reused its pid). Returns at once: [`wait`](Child::wait) for the
    /// exit. A child that has already exited is left alone, with `Ok`.
    ///
    /// # Errors
    ///
    /// Any error of `pidfd_send_signal(2)` but `ESRCH` (already exited).
    pub fn kill(&mut self) -> io::Result<()> {
        self.state.kill()
    }

    /// Has the child's exit delivered to `reg` as a user packet, an
    /// [`ExitPacket`] carrying `key`; at once if it has already been
    /// reaped. Many children may be watched from one registration, each
    /// with its own key, and one child by several registrations.
    ///
    /// If the registration's user packet queue is full (1024 by default),
    /// the reaper retries every millisecond for up to ten seconds, then
    /// gives up; [`Child::try_wait`] still has the status.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` if the child has already exited and `reg` is closed.
    pub fn watch(&self, reg: &Registration, key: u64) -> io::Result<()> {
        self.watch_sender(reg.sender(), key)
    }

    /// As [`watch`](Child::watch), for the registration `sender` sends to,
    /// which may be on another thread's reactor.
    ///
    /// # Errors
    ///
    /// As [`watch`](Child::watch).
    pub fn watch_sender(&self, sender: Sender, key: u64) -> io::Result<()> {
        let state = &self.state;
        // Once the reaper has ended, nobody else will send the packet.
        if state.status.get().is_none() && state.reaper_alive.get() {
            state.watchers.borrow_mut().push((sender, key));
            return Ok(());
        }
        let status = state.reap_now().ok().flatten();
        deliver(&sender, ExitPacket { key, pid: state.pid, status })
    }

    /// Closes stdin, reads stdout and stderr to the end (those that are
    /// piped; the others come back empty), and waits for the exit.
    ///
    /// # Errors
    ///
    /// A read's error, or [`Child::wait`]'s.
    pub async fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (stdout, stderr) = (self.stdout.take(), self.stderr.take());
        let read_out = async {
            match stdout {
                Some(mut s) => read_all(&mut s, &mut out).await,
                None => Ok(()),
            }
        };
        let read_err = async {
            match stderr {
                Some(mut s) => read_all(&mut s, &mut err).await,
                None => Ok(()),
            }
        };
        let (r1, r2) = futures::future::join(read_out, read_err).await;
        r1?;
        r2?;
        let status = self.wait().await?;
        Ok(Output { status, stdout: out, stderr: err })
    }
}

/// Appends everything `r` gives until end of file to `out`: one copy per
/// received chunk, and no zeroing of spare capacity first (as
/// `read_to_end` does).
async fn read_all<R: futures::io::AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    use futures::io::AsyncBufReadExt;

    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        out.extend_from_slice(chunk);
        r.consume_unpin(n);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.kill_on_drop && self.state.status.get().is_none() {
            let _ = self.state.kill();
        }
    }
}

/// A child's exit, as a user packet on a registration that
/// [`Child::watch`] named.
///
/// Layout of the 32-byte payload (native endian): bytes 0..8 a tag
/// ([`ExitPacket::TAG`]), 8..16 the key, 16..20 the pid, 20..24 the raw
/// wait status, 24 whether there is one (1) or not (0); the rest zero.
///
/// # Examples
///
/// ```
/// use tally::process::{Command, ExitPacket};
///
/// let rt = tally::LocalReactor::new().unwrap();
/// let reg = rt.register();
/// rt.block_on(async {
///     let children: Vec<_> = (0..3).map(|_| Command::new("true").spawn().unwrap()).collect();
///     for (key, child) in children.iter().enumerate() {
///         child.watch(&reg, key as u64).unwrap();
///     }
///     let mut exited = [false; 3];
///     while exited.contains(&false) {
///         for packet in reg.packets().await {
///             let exit = ExitPacket::from_packet(&packet).unwrap();
///             assert!(exit.status.unwrap().success());
///             exited[exit.key as usize] = true;
///         }
///     }
/// });
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ExitPacket {
    /// The key given to [`Child::watch`].
    pub key: u64,
    /// The child's pid (already reaped: it may name another process now).
    pub pid: u32,
    /// How it exited; `None` if its status is lost: something else reaped
    /// it (`waitpid` failed with `ECHILD`, say, with `SIGCHLD` ignored),
    /// or its executor went away while it ran and it was not reaped yet.
    pub status: Option<ExitStatus>,
}

impl ExitPacket {
    /// The first eight bytes of an exit packet's payload: `b"tallyexi"`.
    pub const TAG: [u8; 8] = *b"tallyexi";

    /// The payload this packet is sent as.
    pub fn to_payload(&self) -> [u8; 32] {
        let mut p = [0u8; 32];
        p[..8].copy_from_slice(&Self::TAG);
        p[8..16].copy_from_slice(&self.key.to_ne_bytes());
        p[16..20].copy_from_slice(&self.pid.to_ne_bytes());
        if let Some(status) = self.status {
            p[20..24].copy_from_slice(&status.into_raw().to_ne_bytes());
            p[24] = 1;
        }
        p
    }

    /// Decodes a user payload; `None` if it is not an exit packet's.
    pub fn from_payload(p: &[u8; 32]) -> Option<ExitPacket> {
        if p[..8] != Self::TAG {
            return None;
        }
        Some(ExitPacket {
            key: u64::from_ne_bytes(p[8..16].try_into().ok()?),
            pid: u32::from_ne_bytes(p[16..20].try_into().ok()?),
            status: (p[24] == 1)
                .then(|| p[20..24].try_into().ok())
                .flatten()
                .map(|raw| ExitStatus::from_raw(i32::from_ne_bytes(raw))),
        })
    }

    /// Decodes a packet; `None` if it is not an exit packet.
    pub fn from_packet(packet: &Packet) -> Option<ExitPacket> {
        match packet.kind() {
            PacketKind::User(p) => ExitPacket::from_payload(&p),
            _ => None,
        }
    }
}

/// What a `Child` and its reaper share. Single-threaded: both live on
/// the executor's thread.
struct State {
    pid: u32,
    /// Close-on-exec (pidfds always are); open until both are gone.
    pidfd: OwnedFd,
    status: Cell<Option<ExitStatus>>,
    /// Why the reaper stopped without a status, for `wait`.
    error: RefCell<Option<io::Error>>,
    /// `wait`'s waker.
    waiter: RefCell<Option<Waker>>,
    /// Registrations to send the exit to, with their keys.
    watchers: RefCell<Vec<(Sender, u64)>>,
    /// Cleared when the reaper task ends or is dropped.
    reaper_alive: Cell<bool>,
}

impl State {
    /// Reaps the child if it has exited (`waitpid` with `WNOHANG`; the pid
    /// is ours until reaped, so it names no other process).
    fn reap_now(&self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status.get() {
            return Ok(Some(status));
        }
        let mut raw = 0;
        let pid = self.pid as libc::pid_t;
        loop {
            // waitpid(2) writes one int to `raw`, a live local.
            match syscall!(waitpid(pid, &mut raw, libc::WNOHANG)) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    let status = ExitStatus::from_raw(raw);
                    self.status.set(Some(status));
                    return Ok(Some(status));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn kill(&self) -> io::Result<()> {
        if self.status.get().is_some() {
            return Ok(());
        }
        // pidfd_send_signal(2) with a null siginfo and no flags reads no
        // memory of ours.
        let r = syscall!(syscall(
            libc::SYS_pidfd_send_signal,
            self.pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0
        ));
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn poll_status(&self, cx: &mut Context<'_>) -> Poll<io::Result<ExitStatus>> {
        if let Some(status) = self.status.get() {
            return Poll::Ready(Ok(status));
        }
        if let Some(e) = &*self.error.borrow() {
            // The same error for every wait: errno as it was, or its text.
            return Poll::Ready(Err(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            }));
        }
        if !self.reaper_alive.get() {
            return Poll::Ready(match self.reap_now() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err(io::Error::other(
                    "the executor that spawned this child is gone, and the child still runs; \
                     use Child::try_wait",
                )),
                Err(e) => Err(e),
            });
        }
        let mut waiter = self.waiter.borrow_mut();
        if !waiter.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waiter = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Wakes `wait` and tells the watchers; called once, when the reaper
    /// ends.
    fn finish(&self, error: Option<io::Error>) {
        if let Some(e) = error {
            *self.error.borrow_mut() = Some(e);
        }
        let waiter = self.waiter.borrow_mut().take();
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

impl Drop for State {
    /// The last of the child and its reaper is gone: a child not reaped by
    /// now joins the orphan list.
    fn drop(&mut self) {
        if let Ok(None) = self.reap_now() {
            ORPHANS.lock().push(self.pid);
        }
    }
}

/// Marks the reaper gone, however its task ends (finished, or dropped with
/// its executor).
struct ReaperAlive(Rc<State>);

impl Drop for ReaperAlive {
    fn drop(&mut self) {
        self.0.reaper_alive.set(false);
        if self.0.status.get().is_none() {
            // Dropped with the executor: let a pending `wait` see it.
            self.0.finish(None);
        }
    }
}

/// The reaper task: polls the pidfd for readability (the child exited),
/// reaps, then wakes `wait` and sends the exit to the watchers.
async fn reaper(state: Rc<State>) {
    let alive = ReaperAlive(state);
    let state = &alive.0;
    let reg = context::current().reactor.register();
    // Only a failed `waitpid` ends the loop without a status. A poll that
    // cannot be made or fails (no memory, a full ring) falls back to
    // looking again after a back-off, from 1 ms up to 1 s: the child is
    // reaped late, never left behind.
    let mut backoff = Duration::from_millis(1);
    let error = loop {
        match state.reap_now() {
            Ok(Some(_)) => break None,
            Ok(None) => {}
            Err(e) => break Some(e),
        }
        let polled = match reg.submit(Op::poll(state.pidfd.as_raw_fd(), Signals::READABLE)) {
            // A signal packet (the pidfd is readable: look again), or a
            // completion that ends the poll with an error.
            Ok(_) => !reg.packets().await.iter().any(|p| p.as_completion().is_some()),
            Err(_) => false,
        };
        if !polled {
            crate::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    };
    drop(reg);
    state.finish(error);
    reap_orphans();
    let watchers = std::mem::take(&mut *state.watchers.borrow_mut());
    for (sender, key) in watchers {
        let exit = ExitPacket { key, pid: state.pid, status: state.status.get() };
        let mut tries = 0;
        loop {
            match deliver(&sender, exit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < 10_000 => {
                    tries += 1;
                    crate::time::sleep(Duration::from_millis(1)).await;
                }
                _ => break,
            }
        }
    }
}

fn deliver(sender: &Sender, exit: ExitPacket) -> io::Result<()> {
    sender.send(exit.to_payload())
}

/// Children whose executor and `Child` both went before they exited:
/// reaped, without blocking, at every spawn and every reaped exit.
static ORPHANS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Reaps every orphan that has exited; the others stay on the list.
fn reap_orphans() {
    let mut orphans = ORPHANS.lock();
    orphans.retain(|&pid| {
        let mut raw = 0;
        // waitpid(2) writes one int to `raw`, a live local. An error
        // (ECHILD: reaped elsewhere) drops it from the list too.
        matches!(syscall!(waitpid(pid as libc::pid_t, &mut raw, libc::WNOHANG)), Ok(0))
    });
}

/// A pidfd for child `pid` (close-on-exec, as the kernel always makes
/// pidfds).
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // pidfd_open(2) takes a pid and flags, no pointers.
    match syscall!(syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0)) {
        Ok(fd) => {
            // SAFETY: pidfd_open just returned `fd`, and nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "pidfd_open(2) is missing: tally::process needs Linux 5.3 or later",
        )),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(io::Error::other(
            "the child exited and was reaped by something else before tally opened its pidfd \
             (is SIGCHLD ignored, or does something call waitpid(-1)?)",
        )),
        Err(e) => Err(e),
    }
}

/// The parent's end of a child's stdin: [`futures::io::AsyncWrite`] (and
/// tokio's, with the `tokio-io` feature). Closing it (`close`, or dropping
/// it) gives the child end of file; `close` flushes first. Bytes a write
/// reported written are never lost: dropped (or closed by [`Child::wait`])
/// with a write still in flight, the write finishes in a background task
/// on the executor before the pipe closes (unless the child closes its
/// end first, or the executor is no longer running).
pub struct ChildStdin {
    io: StreamIo,
}

/// The parent's end of a child's stdout: [`futures::io::AsyncRead`] and
/// [`futures::io::AsyncBufRead`] (and tokio's `AsyncRead`, with the
/// `tokio-io` feature).
pub struct ChildStdout {
    io: StreamIo,
}

/// The parent's end of a child's stderr, as [`ChildStdout`].
pub struct ChildStderr {
    io: StreamIo,
}

macro_rules! pipe_debug {
    ($($ty:ident),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty)).field("fd", &self.io.raw_fd()).finish()
            }
        }

        impl std::os::fd::AsRawFd for $ty {
            /// The pipe's fd; -1 once closed.
            fn as_raw_fd(&self) -> RawFd {
                self.io.raw_fd()
            }
        }
    )*};
}
pipe_debug!(ChildStdin, ChildStdout, ChildStderr);

stream_traits!(write: ChildStdin);
stream_traits!(read: ChildStdout);
stream_traits!(read: ChildStderr);
