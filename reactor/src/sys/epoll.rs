//! The epoll backend: the same operations and the same completions as the
//! io_uring one, made from readiness, for kernels and containers where
//! io_uring is missing or forbidden (seccomp profiles, gVisor,
//! `kernel.io_uring_disabled`).
//!
//! Each operation is tried at once, as a non-blocking syscall. If it would
//! block, it waits on its fd, which is registered edge-triggered with
//! epoll, and runs again when the fd becomes ready. A multishot operation
//! (accept, recv into a buffer group, poll) runs until `EAGAIN` or a budget
//! of [`MULTISHOT_BUDGET`] completions, and then waits for the next edge
//! (or, when the budget ran out, runs again at the next enter). Timeouts
//! wait in a heap and bound `epoll_wait`'s timeout. Cancelling a pending
//! operation completes it with `ECANCELED`, as io_uring does.
//!
//! Differences from io_uring, which the tests name where they matter:
//! * Every fd an operation waits on is put in non-blocking mode
//!   (`O_NONBLOCK`), as a readiness reactor needs. Code that shares such an
//!   fd and expects blocking I/O will see `EAGAIN`.
//! * Regular files, which epoll cannot watch, are read and written directly,
//!   blocking the thread for the duration of the disk I/O.
//! * Regular files cannot be polled at all, so the file operations (open,
//!   fsync, statx, unlink, rename, mkdir, ftruncate) are plain system calls
//!   made inside `submit`, which posts their completion at once. That
//!   blocks the reactor's thread for as long as the file system takes (an
//!   fsync can take seconds), so `Features::file_ops` is false here, and
//!   `tally::fs` sends those operations to its blocking pool instead; only
//!   positional reads and writes, fast on the page cache, come here.
//! * The kernel keeps no operation: everything runs on this thread, inside
//!   `submit` (the first attempt) and `enter`.
//! * Timeouts have millisecond resolution (`epoll_wait`), rounded up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use tally_packets::Token;

use super::buffers::{BufPool, Feed};
use super::{Cqe, Features, poll_mask};
use crate::op::{KernelTimespec, OpKind, RenameArgs, StatxArgs};

/// Completions one multishot operation makes per readiness edge before it
/// lets the others run (io_uring retries a multishot recv up to 32 times).
pub(crate) const MULTISHOT_BUDGET: usize = 32;

/// Events asked of every fd: all of them, edge-triggered.
const WATCH: u32 = (libc::EPOLLIN
    | libc::EPOLLOUT
    | libc::EPOLLPRI
    | libc::EPOLLRDHUP
    | libc::EPOLLERR
    | libc::EPOLLHUP
    | libc::EPOLLET) as u32;

/// What wakes a waiting operation that reads, and one that writes.
const READ_EVENTS: u32 =
    (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
const WRITE_EVENTS: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// An edge that says the peer closed, or the fd failed.
const CLOSED_EVENTS: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;

pub(crate) struct Epoll {
    epfd: OwnedFd,
    /// Operations not yet finished, by token.
    pending: PendingTable,
    /// Which pending operations wait on each fd, by fd number, oldest
    /// first; and whether the fd is registered with epoll.
    fds: Vec<FdState>,
    /// Completions made and not yet reaped.
    ready: Vec<Cqe>,
    /// Multishot operations that ran out of budget: they run again at the
    /// next enter without waiting for an edge.
    runnable: Vec<u64>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Timeouts pending (the heap may also hold cancelled ones).
    live_timers: usize,
    events: Vec<libc::epoll_event>,
    /// Scratch for the waiters an event retries.
    scratch: Vec<u64>,
    enters: u64,
    /// Whether the last enter's wait was cut short by a signal handler.
    interrupted: bool,
}

#[derive(Default)]
struct FdState {
    registered: bool,
    /// A byte stream (a stream socket, a pipe): a read shorter than asked
    /// means it is empty for now, and new bytes will raise a new edge.
    stream: bool,
    waiters: Vec<u64>,
}

/// The pending operations, by token, in a table indexed by the token's
/// slot: a completion finds its operation with one index and one compare,
/// no hashing (DESIGN.md's crank). Op tokens come from the core's slab, so
/// their slots are dense and the table is as long as the most operations
/// ever pending at once. Reserved tokens (generation 0) get the first
/// [`Token::RESERVED_COUNT`] entries, the others follow, so the two never
/// share an entry.
#[derive(Default)]
struct PendingTable {
    entries: Vec<Option<(u64, Pending)>>,
}

impl PendingTable {
    fn index(ud: u64) -> usize {
        let token = Token::from_u64(ud);
        let reserved = if token.is_reserved() { 0 } else { Token::RESERVED_COUNT };
        token.slot() as usize + reserved as usize
    }

    fn insert(&mut self, ud: u64, op: Pending) {
        let i = Self::index(ud);
        if self.entries.len() <= i {
            self.entries.resize_with(i + 1, || None);
        }
        // The core reuses an op's slot only after its final completion,
        // when its entry here is gone: only the same op is re-parked.
        debug_assert!(self.entries[i].as_ref().is_none_or(|(at, _)| *at == ud));
        self.entries[i] = Some((ud, op));
    }

    fn get(&self, ud: u64) -> Option<&Pending> {
        match self.entries.get(Self::index(ud))? {
            Some((at, op)) if *at == ud => Some(op),
            _ => None,
        }
    }

    fn get_mut(&mut self, ud: u64) -> Option<&mut Pending> {
        match self.entries.get_mut(Self::index(ud))? {
            Some((at, op)) if *at == ud => Some(op),
            _ => None,
        }
    }

    fn remove(&mut self, ud: u64) -> Option<Pending> {
        let entry = self.entries.get_mut(Self::index(ud))?;
        match entry {
            Some((at, _)) if *at == ud => entry.take().map(|(_, op)| op),
            _ => None,
        }
    }
}

/// One pending operation: what to do, with pointers into the op's own
/// buffers, which the core keeps in place until the final completion (the
/// contract of `Driver::submit`), exactly as an io_uring SQE would.
struct Pending {
    fd: RawFd,
    work: Work,
    /// Which events retry it.
    events: u32,
    /// Whether its fd is a byte stream (see [`FdState::stream`]).
    stream: bool,
}

enum Work {
    Read { ptr: *mut u8, len: usize, offset: u64 },
    Write { ptr: *const u8, len: usize, offset: u64 },
    Recv { ptr: *mut u8, len: usize, flags: i32 },
    Send { ptr: *const u8, len: usize, flags: i32 },
    Accept { multishot: bool },
    Connect { addr: *const libc::sockaddr, len: libc::socklen_t, started: bool },
    Poll { mask: u32, multishot: bool },
    RecvMulti { group: u16 },
    Timeout,
}

/// What one attempt at an operation came to.
enum Attempt {
    /// Finished: post this completion.
    Done(i32, u32),
    /// A multishot op made a completion and goes on.
    More(i32, u32),
    /// A multishot op made a completion and emptied its byte stream: it
    /// waits for the next edge without another try (which would only say
    /// EAGAIN).
    Drained(i32, u32),
    /// Would block: wait for the fd.
    Wait,
}

/// `u64::MAX` as an offset means "the file position" (see op.rs).
const CURRENT_POSITION: u64 = u64::MAX;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// A syscall's return as a completion result: the value, or `-errno`.
fn result(ret: isize) -> i32 {
    if ret < 0 { -errno() } else { i32::try_from(ret).unwrap_or(i32::MAX) }
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: epoll_create1 just returned this fd; nothing else owns it.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: PendingTable::default(),
            fds: Vec::new(),
            ready: Vec::new(),
            runnable: Vec::new(),
            timers: BinaryHeap::new(),
            live_timers: 0,
            events: Vec::with_capacity(256),
            scratch: Vec::new(),
            enters: 0,
            interrupted: false,
        })
    }

    pub(crate) fn features(&self) -> Features {
        Features {
            multishot_poll: true,
            multishot_accept: true,
            multishot_recv: true,
            buf_ring: true,
            nodrop: true,
            ..Features::default()
        }
    }

    pub(crate) fn enters(&self) -> u64 {
        self.enters
    }

    pub(crate) fn interrupted(&self) -> bool {
        self.interrupted
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }

    /// Starts `kind`: runs it at once if it can, else leaves it waiting.
    ///
    /// # Safety
    ///
    /// As `Driver::submit`: `kind`'s buffers and address stay in place until
    /// the operation's final completion has been reaped.
    pub(crate) unsafe fn submit(&mut self, token: Token, kind: &mut OpKind, pools: &mut [BufPool]) {
        let ud = token.as_u64();
        let (fd, work, events) = match kind {
            OpKind::Nop => return self.post(ud, 0, 0),
            OpKind::Read { fd, buf, offset } => {
                let spare = buf.spare_capacity_mut();
                let work = Work::Read {
                    ptr: spare.as_mut_ptr().cast(),
                    len: spare.len(),
                    offset: *offset,
                };
                (*fd, work, READ_EVENTS)
            }
            OpKind::Write { fd, buf, offset } => (
                *fd,
                Work::Write { ptr: buf.as_ptr(), len: buf.len(), offset: *offset },
                WRITE_EVENTS,
            ),
            OpKind::Recv { fd, buf, flags } => {
                let spare = buf.spare_capacity_mut();
                let work =
                    Work::Recv { ptr: spare.as_mut_ptr().cast(), len: spare.len(), flags: *flags };
                (*fd, work, READ_EVENTS)
            }
            OpKind::Send { fd, buf, flags } => {
                (*fd, Work::Send { ptr: buf.as_ptr(), len: buf.len(), flags: *flags }, WRITE_EVENTS)
            }
            OpKind::Accept { fd, multishot } => {
                (*fd, Work::Accept { multishot: *multishot }, READ_EVENTS)
            }
            OpKind::Connect { fd, addr } => {
                let ptr = (&addr.storage as *const libc::sockaddr_storage).cast();
                (*fd, Work::Connect { addr: ptr, len: addr.len, started: false }, WRITE_EVENTS)
            }
            OpKind::Close { fd } => {
                let raw = fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
                return self.close(ud, raw);
            }
            OpKind::Shutdown { fd, how } => {
                // SAFETY: shutdown(2) takes no pointers.
                let ret = unsafe { libc::shutdown(*fd, *how) };
                return self.post(ud, result(ret as isize), 0);
            }
            OpKind::Timeout { ts } => {
                self.live_timers += 1;
                self.timers.push(Reverse((deadline(ts), ud)));
                let op = Pending { fd: -1, work: Work::Timeout, events: 0, stream: false };
                self.pending.insert(ud, op);
                return;
            }
            OpKind::Poll { fd, interest, multishot } => {
                let mask = poll_mask(*interest);
                (
                    *fd,
                    Work::Poll { mask, multishot: *multishot },
                    mask | (libc::EPOLLERR | libc::EPOLLHUP) as u32,
                )
            }
            OpKind::RecvMulti { fd, group } => {
                (*fd, Work::RecvMulti { group: group.0 }, READ_EVENTS)
            }
            OpKind::OpenAt { .. }
            | OpKind::Fsync { .. }
            | OpKind::Statx(_)
            | OpKind::UnlinkAt { .. }
            | OpKind::RenameAt(_)
            | OpKind::MkdirAt { .. }
            | OpKind::Ftruncate { .. } => return self.post(ud, file_op(kind), 0),
        };
        let mut op = Pending { fd, work, events, stream: false };
        let pollable = match self.prepare(fd) {
            Ok(()) => true,
            // epoll cannot watch it (a regular file, /dev/null): run it
            // directly.
            Err(libc::EPERM) => false,
            Err(e) => return self.post(ud, -e, 0),
        };
        op.stream = pollable && self.fds.get(fd as usize).is_some_and(|s| s.stream);
        if let Work::Poll { mask, multishot } = op.work {
            // A poll reports readiness as it stands now, as io_uring's does;
            // later edges come from epoll. One on a file that epoll refused
            // then ends with EPERM, as epoll would.
            let now = poll_now(fd, mask);
            if now != 0 && !multishot {
                return self.post(ud, now as i32, 0);
            }
            if now != 0 {
                self.post(ud, now as i32, Cqe::MORE);
            }
            if !pollable {
                return self.post(ud, -libc::EPERM, 0);
            }
            return self.park(ud, op);
        }
        match run(&mut op, pools) {
            Attempt::Done(res, flags) => self.post(ud, res, flags),
            // Not known to be drained even after a short read: an end of
            // file that came with the bytes raised its edge before the fd
            // was watched. Try again at the next enter.
            Attempt::More(res, flags) | Attempt::Drained(res, flags) => {
                self.post(ud, res, flags | Cqe::MORE);
                self.runnable.push(ud);
                self.park(ud, op);
            }
            Attempt::Wait if pollable => self.park(ud, op),
            Attempt::Wait => self.post(ud, -libc::EAGAIN, 0),
        }
    }

    fn post(&mut self, user_data: u64, result: i32, flags: u32) {
        self.ready.push(Cqe { user_data, result, flags });
    }

    /// Makes sure `fd` is watched by epoll and non-blocking before an
    /// operation tries it. An fd with operations already waiting is (the
    /// fds an operation names outlive it). Otherwise one `EPOLL_CTL_MOD`
    /// checks that the registration is still this file's (it fails with
    /// `ENOENT` once the fd was closed, and its number may have been reused
    /// since); an fd not yet watched is made non-blocking and added.
    /// Returns the errno on failure: `EPERM` for a file epoll cannot watch.
    fn prepare(&mut self, fd: RawFd) -> Result<(), i32> {
        let Ok(index) = usize::try_from(fd) else { return Err(libc::EBADF) };
        if self.fds.len() <= index {
            // Only an open fd grows the table (so it stays below the fd
            // limit): checked, and made non-blocking, first.
            set_nonblocking(fd)?;
            self.fds.resize_with(index + 1, FdState::default);
        }
        let epfd = self.epfd.as_raw_fd();
        let state = &mut self.fds[index];
        if state.registered && !state.waiters.is_empty() {
            return Ok(());
        }
        let mut ev = libc::epoll_event { events: WATCH, u64: fd as u64 };
        if state.registered {
            // SAFETY: `ev` is a valid epoll_event for the call.
            if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, &mut ev) } == 0 {
                return Ok(());
            }
            state.registered = false;
        }
        set_nonblocking(fd)?;
        // SAFETY: as above.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            let e = errno();
            if e != libc::EEXIST {
                return Err(e);
            }
        }
        state.registered = true;
        state.stream = is_byte_stream(fd);
        Ok(())
    }

    /// Leaves `op` waiting on its fd (timeouts wait in the heap instead).
    fn park(&mut self, ud: u64, op: Pending) {
        if let Some(state) = usize::try_from(op.fd).ok().and_then(|i| self.fds.get_mut(i)) {
            state.waiters.push(ud);
        }
        self.pending.insert(ud, op);
    }

    /// Takes `ud` off its fd's waiter list.
    fn unpark(&mut self, ud: u64, fd: RawFd) {
        if let Some(state) = usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)) {
            state.waiters.retain(|&w| w != ud);
        }
    }

    fn close(&mut self, ud: u64, fd: RawFd) {
        if let Some(state) = usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)) {
            // Operations still waiting on the fd would never hear from it
            // again: end them, as a cancel would.
            for waiter in std::mem::take(&mut state.waiters) {
                if self.pending.remove(waiter).is_some() {
                    self.ready.push(Cqe { user_data: waiter, result: -libc::ECANCELED, flags: 0 });
                }
            }
            if state.registered {
                // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
                unsafe {
                    libc::epoll_ctl(
                        self.epfd.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        fd,
                        std::ptr::null_mut(),
                    )
                };
                state.registered = false;
            }
        }
        // SAFETY: the op owned `fd` (an `OwnedFd` it gives up when this
        // completion settles it), so nothing else closes it.
        let ret = unsafe { libc::close(fd) };
        self.post(ud, result(ret as isize), 0);
    }

    /// Ends operation `token` early with `ECANCELED`, if it is pending.
    pub(crate) fn cancel(&mut self, token: Token) {
        let ud = token.as_u64();
        if let Some(op) = self.pending.remove(ud) {
            self.unpark(ud, op.fd);
            self.post(ud, -libc::ECANCELED, 0);
            if let Work::Timeout = op.work {
                self.live_timers -= 1;
                // A cancelled timer's heap entry stays until its deadline;
                // drop such entries once they are most of the heap, so
                // that cancelling long timeouts cannot grow it for ever.
                if self.timers.len() > 64 && self.timers.len() > 2 * self.live_timers {
                    let pending = &self.pending;
                    self.timers.retain(|Reverse((_, t))| pending.get(*t).is_some());
                }
            }
        }
    }

    /// Waits (if `wait` and nothing is ready) for readiness or the nearest
    /// timeout, then runs what became ready. An edge that no operation
    /// waits for (epoll watches every event of an fd) does not end a wait:
    /// it waits again for what is left of the timeout.
    pub(crate) fn enter(
        &mut self,
        wait: bool,
        timeout: Option<Duration>,
        pools: &mut [BufPool],
    ) -> io::Result<bool> {
        self.interrupted = false;
        let until = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let busy = !self.ready.is_empty() || !self.runnable.is_empty();
            // The clock is read only when a deadline needs it.
            let now = (until.is_some() || !self.timers.is_empty()).then(Instant::now);
            let mut ms: i32 = match (wait && !busy, until, now) {
                (false, ..) => 0,
                (true, Some(at), Some(now)) => ms_up(at.saturating_duration_since(now)),
                (true, ..) => -1,
            };
            if let (Some(Reverse((at, _))), Some(now)) = (self.timers.peek(), now) {
                // A timer too far off for an i32 of milliseconds bounds
                // nothing.
                let left = ms_up(at.saturating_duration_since(now));
                if left >= 0 {
                    ms = if ms < 0 { left } else { ms.min(left) };
                }
            }
            self.enters += 1;
            self.events.clear();
            let cap = self.events.capacity() as i32;
            // SAFETY: `events` has room for `cap` entries, which epoll_wait
            // writes; the length is set from its return below.
            let n = unsafe {
                libc::epoll_wait(self.epfd.as_raw_fd(), self.events.as_mut_ptr(), cap, ms)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    self.interrupted = true;
                    return Ok(true);
                }
                return Err(e);
            }
            // SAFETY: epoll_wait initialised the first `n` entries.
            unsafe { self.events.set_len(n as usize) };
            // Operations that ran out of budget before this enter run again
            // now; those that run out in this one wait for the next.
            let mut runnable = std::mem::take(&mut self.runnable);
            let events = std::mem::take(&mut self.events);
            for ev in &events {
                self.on_ready(ev.u64 as RawFd, ev.events, pools);
            }
            self.events = events;
            for &ud in &runnable {
                self.retry(ud, u32::MAX, pools);
            }
            runnable.clear();
            if self.runnable.is_empty() {
                self.runnable = runnable;
            }
            self.expire_timers();
            if ms == 0 || !self.ready.is_empty() || !self.runnable.is_empty() {
                return Ok(true);
            }
            // Woken by an edge nobody waits for: wait again, unless the
            // time is up.
            if ms > 0 && until.is_none_or(|at| Instant::now() >= at) {
                return Ok(true);
            }
        }
    }

    /// Runs every operation waiting on `fd` that `events` concerns.
    fn on_ready(&mut self, fd: RawFd, events: u32, pools: &mut [BufPool]) {
        let Some(state) = usize::try_from(fd).ok().and_then(|i| self.fds.get(i)) else { return };
        if let [ud] = state.waiters[..] {
            // One waiter (the usual case): nothing to copy.
            return self.retry(ud, events, pools);
        }
        // A copy, in a scratch list that keeps its allocation: running an
        // op changes the waiter list.
        let mut waiters = std::mem::take(&mut self.scratch);
        waiters.extend_from_slice(&state.waiters);
        for &ud in &waiters {
            self.retry(ud, events, pools);
        }
        waiters.clear();
        self.scratch = waiters;
    }

    /// Runs pending operation `ud` again after `events` (`u32::MAX`: its
    /// budget ran out last time). It stays on its fd's waiter list until it
    /// finishes.
    fn retry(&mut self, ud: u64, events: u32, pools: &mut [BufPool]) {
        let Some(op) = self.pending.get_mut(ud) else { return };
        if op.events & events == 0 {
            return;
        }
        let fd = op.fd;
        if let Work::Poll { mask, multishot } = op.work {
            let seen = events & (mask | (libc::EPOLLERR | libc::EPOLLHUP) as u32);
            if multishot {
                return self.post(ud, seen as i32, Cqe::MORE);
            }
            self.pending.remove(ud);
            self.unpark(ud, fd);
            return self.post(ud, seen as i32, 0);
        }
        for _ in 0..MULTISHOT_BUDGET {
            let Some(op) = self.pending.get_mut(ud) else { return };
            match run(op, pools) {
                Attempt::Done(res, flags) => {
                    self.pending.remove(ud);
                    self.unpark(ud, fd);
                    return self.post(ud, res, flags);
                }
                Attempt::More(res, flags) => self.post(ud, res, flags | Cqe::MORE),
                // Drained, unless the edge also said the peer closed or
                // failed: then read on to the end of file or the error,
                // which raises no later edge.
                Attempt::Drained(res, flags) if events & CLOSED_EVENTS == 0 => {
                    return self.post(ud, res, flags | Cqe::MORE);
                }
                Attempt::Drained(res, flags) => self.post(ud, res, flags | Cqe::MORE),
                Attempt::Wait => return,
            }
        }
        // Out of budget: more may wait, and no new edge will say so.
        self.runnable.push(ud);
    }

    fn expire_timers(&mut self) {
        if self.timers.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(&Reverse((at, ud))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(Pending { work: Work::Timeout, .. }) = self.pending.get(ud) {
                self.pending.remove(ud);
                self.live_timers -= 1;
                self.post(ud, -libc::ETIME, 0);
            }
        }
    }

    pub(crate) fn reap(&mut self, out: &mut Vec<Cqe>) {
        if out.is_empty() {
            // The usual case: trade the lists, each keeping its allocation,
            // rather than copy.
            std::mem::swap(out, &mut self.ready);
        } else {
            out.append(&mut self.ready);
        }
    }

    /// Whether completions wait to be reaped, or operations to run again.
    pub(crate) fn has_completions(&self) -> bool {
        !self.ready.is_empty() || !self.runnable.is_empty()
    }

    /// A buffer group's feed: a list of free buffer ids.
    pub(crate) fn feed() -> Feed {
        Feed::User(Vec::new())
    }
}

/// One attempt at `op`, non-blocking.
fn run(op: &mut Pending, pools: &mut [BufPool]) -> Attempt {
    let (fd, stream) = (op.fd, op.stream);
    let once = |ret: isize| -> Attempt {
        if ret < 0 && would_block() { Attempt::Wait } else { Attempt::Done(result(ret), 0) }
    };
    match &mut op.work {
        Work::Read { ptr, len, offset } => {
            let mut ret = -1;
            if *offset != CURRENT_POSITION {
                // SAFETY: as below.
                ret = unsafe { libc::pread(fd, ptr.cast(), *len, *offset as libc::off_t) };
            }
            // A stream (pipe, socket, eventfd) has no offset: io_uring
            // reads it from where it is, and so do we.
            if *offset == CURRENT_POSITION || (ret < 0 && errno() == libc::ESPIPE) {
                // SAFETY: `ptr` is valid for `len` bytes of writes until
                // the final completion (the op's spare capacity, in place).
                ret = unsafe { libc::read(fd, ptr.cast(), *len) };
            }
            once(ret)
        }
        Work::Write { ptr, len, offset } => {
            let mut ret = -1;
            if *offset != CURRENT_POSITION {
                // SAFETY: as below.
                ret = unsafe { libc::pwrite(fd, ptr.cast(), *len, *offset as libc::off_t) };
            }
            if *offset == CURRENT_POSITION || (ret < 0 && errno() == libc::ESPIPE) {
                // SAFETY: `ptr` is valid for `len` bytes of reads until the
                // final completion (the op's buffer, kept in place).
                ret = unsafe { libc::write(fd, ptr.cast(), *len) };
            }
            once(ret)
        }
        Work::Recv { ptr, len, flags } => {
            // SAFETY: as for Read.
            once(unsafe { libc::recv(fd, ptr.cast(), *len, *flags | libc::MSG_DONTWAIT) })
        }
        Work::Send { ptr, len, flags } => {
            // SAFETY: as for Write.
            once(unsafe { libc::send(fd, ptr.cast(), *len, *flags | libc::MSG_DONTWAIT) })
        }
        Work::Accept { multishot } => {
            let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
            // SAFETY: null address pointers are allowed: no peer address.
            let ret =
                unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), flags) };
            match (ret < 0 && would_block(), *multishot) {
                (true, _) => Attempt::Wait,
                (false, true) if ret >= 0 => Attempt::More(ret, 0),
                _ => Attempt::Done(result(ret as isize), 0),
            }
        }
        Work::Connect { addr, len, started } => {
            if *started {
                return Attempt::Done(socket_error(fd), 0);
            }
            *started = true;
            // SAFETY: `addr` points at a sockaddr valid for `len` bytes,
            // kept in the op until its final completion.
            let ret = unsafe { libc::connect(fd, *addr, *len) };
            if ret < 0 && matches!(errno(), libc::EINPROGRESS | libc::EAGAIN) {
                Attempt::Wait
            } else {
                Attempt::Done(result(ret as isize), 0)
            }
        }
        Work::RecvMulti { group } => {
            let Some(pool) = pools.get_mut(*group as usize) else {
                return Attempt::Done(-libc::ENOBUFS, 0);
            };
            let Some(bid) = pool.feed.take_free() else {
                return Attempt::Done(-libc::ENOBUFS, 0);
            };
            let (Some(ptr), size) = (pool.buf_ptr(bid), pool.buf_size as usize) else {
                pool.feed.give_back(bid);
                return Attempt::Done(-libc::ENOBUFS, 0);
            };
            // SAFETY: buffer `bid` is free (the feed held it), so nobody
            // reads or writes it until its completion delivers it; it is
            // `size` bytes long.
            let ret = unsafe { libc::recv(fd, ptr.as_ptr().cast(), size, libc::MSG_DONTWAIT) };
            if ret <= 0 {
                // Nothing was written into it: back to the free list.
                pool.feed.give_back(bid);
                if ret < 0 && would_block() {
                    return Attempt::Wait;
                }
                return Attempt::Done(result(ret), 0);
            }
            let flags = Cqe::BUFFER | (u32::from(bid) << 16);
            if stream && (ret as usize) < size {
                Attempt::Drained(result(ret), flags)
            } else {
                Attempt::More(result(ret), flags)
            }
        }
        Work::Poll { .. } | Work::Timeout => Attempt::Wait,
    }
}

/// A file operation, made at once as a blocking system call (regular files
/// cannot be polled): its completion result.
fn file_op(kind: &mut OpKind) -> i32 {
    // SAFETY (every call below): the paths are NUL-terminated `CString`s
    // owned by the op, and a statx's output is the spare capacity of its
    // buffer, which `Op::statx` made at least one `struct statx` long; the
    // kernel writes nothing else.
    let ret = match kind {
        OpKind::OpenAt { dir, path, flags, mode } => {
            // SAFETY: see above.
            unsafe { libc::openat(*dir, path.as_ptr(), *flags, *mode) }
        }
        // SAFETY: fdatasync(2) and fsync(2) take no pointers.
        OpKind::Fsync { fd, datasync: true } => unsafe { libc::fdatasync(*fd) },
        // SAFETY: as above.
        OpKind::Fsync { fd, datasync: false } => unsafe { libc::fsync(*fd) },
        OpKind::Statx(args) => {
            let StatxArgs { dir, path, flags, mask, buf } = &mut **args;
            let out = buf.spare_capacity_mut().as_mut_ptr().cast::<libc::statx>();
            // SAFETY: see above.
            unsafe { libc::statx(*dir, path.as_ptr(), *flags, *mask, out) }
        }
        OpKind::UnlinkAt { dir, path, flags } => {
            // SAFETY: see above.
            unsafe { libc::unlinkat(*dir, path.as_ptr(), *flags) }
        }
        OpKind::RenameAt(args) => {
            let RenameArgs { old_dir, old, new_dir, new, flags } = &**args;
            // SAFETY: see above.
            unsafe { libc::renameat2(*old_dir, old.as_ptr(), *new_dir, new.as_ptr(), *flags) }
        }
        OpKind::MkdirAt { dir, path, mode } => {
            // SAFETY: see above.
            unsafe { libc::mkdirat(*dir, path.as_ptr(), *mode) }
        }
        OpKind::Ftruncate { fd, len } => match libc::off_t::try_from(*len) {
            // SAFETY: ftruncate(2) takes no pointers.
            Ok(len) => unsafe { libc::ftruncate(*fd, len) },
            Err(_) => return -libc::EFBIG,
        },
        _ => return -libc::EINVAL,
    };
    result(ret as isize)
}

/// Whether `fd` is a stream socket or a pipe, whose short reads mean
/// "empty for now" (a datagram socket's do not: each read is one datagram).
fn is_byte_stream(fd: RawFd) -> bool {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer for the call.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return false;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => true,
        libc::S_IFSOCK => {
            let mut ty: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: `ty` and `len` are valid for writes of the sizes given.
            let ret = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_TYPE,
                    (&raw mut ty).cast(),
                    &mut len,
                )
            };
            ret == 0 && ty == libc::SOCK_STREAM
        }
        _ => false,
    }
}

fn would_block() -> bool {
    let e = errno();
    e == libc::EAGAIN || e == libc::EWOULDBLOCK
}

/// A connect's outcome once its socket is writable: 0 or `-SO_ERROR`.
fn socket_error(fd: RawFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for writes of the sizes given.
    let ret = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&raw mut err).cast(), &mut len)
    };
    if ret < 0 { -errno() } else { -err }
}

fn set_nonblocking(fd: RawFd) -> Result<(), i32> {
    // SAFETY: fcntl(F_GETFL) takes no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(errno());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: fcntl(F_SETFL) takes no pointers.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// The readiness `fd` shows now, among `mask` (and errors), by `poll(2)`.
fn poll_now(fd: RawFd, mask: u32) -> u32 {
    let mut p = libc::pollfd { fd, events: mask as i16, revents: 0 };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n <= 0 {
        0
    } else {
        p.revents as u16 as u32 & (mask | (libc::POLLERR | libc::POLLHUP) as u32)
    }
}

fn deadline(ts: &KernelTimespec) -> Instant {
    let d = Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32);
    // Past what an Instant holds: about never.
    Instant::now()
        .checked_add(d)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(u32::MAX as u64))
}

/// Milliseconds for epoll_wait, rounded up so that a wait never ends early
/// and spins; past `i32::MAX` means "no timeout".
fn ms_up(d: Duration) -> i32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    i32::try_from(ms).unwrap_or(-1)
}
