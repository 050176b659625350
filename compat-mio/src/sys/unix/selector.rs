//! tally's selector: mio's `Selector`, `Waker` and `IoSourceState`,
//! answered by a tally reactor.
//!
//! The selector has two halves:
//!
//! - [`Selector`], inside every [`Registry`](crate::Registry): `Send +
//!   Sync`, cheap to clone. It validates each call at once and keeps the
//!   registration table (fd → id, token, interest) under a lock, so
//!   `register`, `reregister` and `deregister` answer synchronously from
//!   any thread. What the kernel must change (arm a poll, cancel one) is
//!   queued for the poller, and a poller blocked in [`Driver::select`] is
//!   woken to apply it: a `register` from another thread takes effect in
//!   the blocked `poll` without a user `Waker`.
//! - [`Driver`], inside the [`Poll`](crate::Poll): the reactor and one
//!   [`Registration`] per watched fd, each watched by a multishot poll.
//!   `select` applies the queued changes, runs one crank, drains every
//!   registration the crank woke in one call, and turns each source's
//!   counted signal into at most one `epoll_event`. Readiness that arrives
//!   again before the user polls folds into that signal.
//!
//! Every event is checked against the table, under its lock, as it is
//! emitted: an fd whose registration was removed or replaced since its
//! readiness arrived yields nothing, so a token never outlives its
//! `deregister` and a reused fd never inherits an old registration.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker as TaskWaker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tally_reactor::{
    PacketKind, PacketList, Reactor, Registration, Signaler, Signals, Token as RegToken,
};

use crate::{Interest, Registry, Token};

/// An event, as epoll reports it: mio's `event` helpers decode it.
pub type Event = libc::epoll_event;
/// The events of one poll.
pub type Events = Vec<Event>;

/// Raised on the `Poll`'s own registration by [`Waker::wake`].
const WAKE: Signals = Signals::USER_0;
/// Raised on it when a change is queued while the poller is blocked.
const CHANGED: Signals = Signals::user(1);

/// The registry half: the table and the way to the poller.
#[derive(Clone)]
pub(crate) struct Selector {
    shared: Arc<Shared>,
}

struct Shared {
    table: Mutex<Table>,
    /// Changes are queued in `table` and not yet applied.
    dirty: AtomicBool,
    /// The poller is (about to be) blocked: a queued change must wake it.
    parked: AtomicBool,
    /// Reaches the `Poll`'s own registration from any thread.
    signaler: Signaler,
    /// The `Waker`'s token, once one is made.
    waker_token: AtomicU64,
    /// A duplicate of the reactor's fd (the ring, or the epoll fd), for
    /// `AsRawFd`/`AsFd`.
    fd: OwnedFd,
}

#[derive(Default)]
struct Table {
    /// The registration of each fd, by fd number.
    entries: Vec<Option<Entry>>,
    /// What the poller must do in the kernel, in order.
    changes: Vec<Change>,
    next_id: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    /// Tells this registration of the fd from earlier and later ones.
    id: u64,
    token: Token,
}

#[derive(Clone, Copy)]
enum Change {
    /// Watch `fd` for `interest` as registration `id`, in place of any
    /// earlier registration of it.
    Watch { fd: RawFd, id: u64, interest: Interest },
    /// Stop watching `fd` if registration `id` still watches it.
    Unwatch { fd: RawFd, id: u64 },
}

impl Selector {
    /// The registry half of a new `Poll`, and the driver half.
    pub(crate) fn new() -> io::Result<(Selector, Driver)> {
        // No SINGLE_ISSUER or DEFER_TASKRUN: the `Poll` moves between
        // threads (tokio's workers take turns at it), and those flags tie
        // submissions, or the task work that posts completions, to one
        // thread. COOP_TASKRUN stays: it only spares the submitting thread
        // an interrupt per completion (a sleeping one is still woken). See
        // compat-mio/README.md.
        let reactor = Reactor::builder().defer_taskrun(false).build()?;
        // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` on the reactor's live fd returns a
        // new fd that nothing else owns, or -1 (checked by `syscall!`).
        let fd = syscall!(fcntl(reactor.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0))?;
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let own = reactor.register();
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::default()),
            dirty: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            signaler: own.signaler(),
            waker_token: AtomicU64::new(0),
            fd,
        });
        let mut driver = Driver {
            reactor,
            own,
            sources: Vec::new(),
            by_slot: Vec::new(),
            packets: PacketList::new(),
            backlog: VecDeque::new(),
            changes: Vec::new(),
            rearm: Vec::new(),
            wake_pending: false,
        };
        driver.install_waker_own();
        Ok((Selector { shared }, driver))
    }

    /// Another handle on the same table.
    pub(crate) fn try_clone(&self) -> io::Result<Selector> {
        Ok(self.clone())
    }

    /// Registers `fd`; see [`Registry::register`](crate::Registry::register).
    pub(crate) fn register(&self, fd: RawFd, token: Token, interests: Interest) -> io::Result<()> {
        self.register_id(fd, token, interests).map(drop)
    }

    /// As `register`, returning the registration's id.
    pub(crate) fn register_id(
        &self,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<u64> {
        tally_reactor::check_pollable(fd)?;
        let mut table = self.shared.table.lock();
        let index = fd as usize;
        if table.entries.get(index).is_some_and(Option::is_some) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        if table.entries.len() <= index {
            table.entries.resize(index + 1, None);
        }
        let id = table.watch(fd, token, interest);
        drop(table);
        self.shared.notify();
        Ok(id)
    }

    /// Replaces the token and interest of `fd`'s registration, and re-arms
    /// its poll (which reports the fd's current readiness, as
    /// `EPOLL_CTL_MOD` does).
    pub(crate) fn reregister(
        &self,
        fd: RawFd,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.reregister_id(fd, None, token, interests).map(drop)
    }

    /// As `reregister`; with `id`, only if that registration is `fd`'s.
    pub(crate) fn reregister_id(
        &self,
        fd: RawFd,
        id: Option<u64>,
        token: Token,
        interest: Interest,
    ) -> io::Result<u64> {
        let mut table = self.shared.table.lock();
        table.current(fd, id)?;
        let id = table.watch(fd, token, interest);
        drop(table);
        self.shared.notify();
        Ok(id)
    }

    /// Removes `fd`'s registration: from the moment this returns, its token
    /// is never reported again.
    pub(crate) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.deregister_id(fd, None)
    }

    /// As `deregister`; with `id`, only if that registration is `fd`'s.
    pub(crate) fn deregister_id(&self, fd: RawFd, id: Option<u64>) -> io::Result<()> {
        let mut table = self.shared.table.lock();
        let entry = table.current(fd, id)?;
        table.entries[fd as usize] = None;
        table.changes.push(Change::Unwatch { fd, id: entry.id });
        drop(table);
        self.shared.notify();
        Ok(())
    }

    /// Whether `other` is a handle on the same table.
    fn same(&self, other: &Arc<Shared>) -> bool {
        Arc::ptr_eq(&self.shared, other)
    }
}

impl Table {
    /// Records a new registration of `fd` and queues its watch.
    fn watch(&mut self, fd: RawFd, token: Token, interest: Interest) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.entries[fd as usize] = Some(Entry { id, token });
        self.changes.push(Change::Watch { fd, id, interest });
        id
    }

    /// `fd`'s registration (registration `id`, if given), or `ENOENT`.
    fn current(&self, fd: RawFd, id: Option<u64>) -> io::Result<Entry> {
        let entry = usize::try_from(fd).ok().and_then(|i| self.entries.get(i).copied().flatten());
        match entry {
            Some(e) if id.is_none_or(|id| id == e.id) => Ok(e),
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
}

impl Shared {
    /// Tells the poller that changes are queued, waking it if it is blocked.
    fn notify(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        // Pairs with `Driver::select`: it stores `parked` and then loads
        // `dirty`, both SeqCst, so either it sees this change before it
        // blocks, or we see it parked and wake it.
        if self.parked.load(Ordering::SeqCst) {
            // Fails only once the `Poll` is gone, when nobody waits.
            let _ = self.signaler.raise(CHANGED, 1);
        }
    }
}

impl AsRawFd for Selector {
    fn as_raw_fd(&self) -> RawFd {
        self.shared.fd.as_raw_fd()
    }
}

impl AsFd for Selector {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.fd.as_fd()
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector").field("fd", &self.shared.fd).finish()
    }
}

/// The poll half: the reactor, and a registration per watched fd.
pub(crate) struct Driver {
    reactor: Reactor,
    /// Receives `WAKE` and `CHANGED`.
    own: Registration,
    /// The watched fds, by fd number.
    sources: Vec<Option<Source>>,
    /// The fd each registration watches, by its token's slot.
    by_slot: Vec<(RegToken, RawFd)>,
    packets: PacketList,
    /// Fds with readiness not yet reported (`-1` for the waker), each
    /// once, in arrival order; what one poll's `Events` cannot hold waits
    /// here for the next.
    backlog: VecDeque<RawFd>,
    changes: Vec<Change>,
    /// Sources whose poll the kernel cancelled, to be armed again.
    rearm: Vec<RawFd>,
    /// The waker was raised and is in `backlog`.
    wake_pending: bool,
}

struct Source {
    id: u64,
    interest: Interest,
    /// `None` once its poll failed for good (the error was reported).
    reg: Option<Registration>,
    /// Readiness not yet reported; non-empty iff the fd is in `backlog`.
    ready: Signals,
}

// SAFETY: `Driver` owns its `Reactor` and every `Rc` handle on it (the
// registrations), and hands none of them out: they are only touched through
// `&mut Driver`, by one thread at a time, so their non-atomic reference
// counts are never shared between threads. The reactor keeps no
// thread-local state, and its ring is built without SINGLE_ISSUER and
// DEFER_TASKRUN, so any thread may submit to it and enter it. The wakers
// stored in the registrations are `Waker::noop`.
unsafe impl Send for Driver {}

impl Driver {
    /// The `Poll`'s own registration must hold a waker to be drained by
    /// `drain_woken`.
    fn install_waker_own(&mut self) {
        let mut cx = Context::from_waker(TaskWaker::noop());
        let _ = self.own.poll_drain_into(&mut cx, &mut self.packets);
        self.packets.clear();
    }

    /// Waits for readiness and fills `events` with at most its capacity.
    pub(crate) fn select(
        &mut self,
        selector: &Selector,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        events.clear();
        let shared = &*selector.shared;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let wait = match deadline {
                _ if !self.backlog.is_empty() => Some(Duration::ZERO),
                Some(d) => Some(d.saturating_duration_since(Instant::now())),
                None => None,
            };
            // Pairs with `Shared::notify`, which stores `dirty` and then
            // loads `parked`: either we see its change here, or it sees us
            // parked and wakes the crank below.
            shared.parked.store(wait != Some(Duration::ZERO), Ordering::SeqCst);
            if shared.dirty.swap(false, Ordering::SeqCst) {
                // Applied before the wait, so that a new source's readiness
                // at arming is reported by this very poll.
                self.apply(shared);
            }
            let turned = self.reactor.turn(wait);
            shared.parked.store(false, Ordering::SeqCst);
            turned?;
            let interrupted = self.reactor.interrupted();
            self.collect();
            self.emit(shared, events);
            if !events.is_empty() {
                return Ok(());
            }
            if interrupted {
                return Err(io::Error::from_raw_os_error(libc::EINTR));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            // Woken by a queued change, by readiness that was dropped (its
            // registration is gone), or by nothing the user can see: wait
            // again for what is left of the timeout.
        }
    }

    /// Applies the queued changes, in order.
    fn apply(&mut self, shared: &Shared) {
        std::mem::swap(&mut self.changes, &mut shared.table.lock().changes);
        let mut changes = std::mem::take(&mut self.changes);
        for change in changes.drain(..) {
            match change {
                Change::Watch { fd, id, interest } => self.watch(fd, id, interest),
                Change::Unwatch { fd, id } => {
                    let index = fd as usize;
                    if self
                        .sources
                        .get(index)
                        .is_some_and(|s| s.as_ref().is_some_and(|s| s.id == id))
                    {
                        self.unwatch(fd);
                    }
                }
            }
        }
        self.changes = changes;
    }

    /// Drops `fd`'s registration, which cancels its poll; whatever it
    /// still reports is swallowed by the reactor.
    fn unwatch(&mut self, fd: RawFd) {
        // Its backlog entry, if any, is skipped at emission.
        self.sources.get_mut(fd as usize).and_then(Option::take);
    }

    /// Watches `fd` as registration `id`, in place of any earlier one.
    fn watch(&mut self, fd: RawFd, id: u64, interest: Interest) {
        self.unwatch(fd);
        let index = fd as usize;
        if self.sources.len() <= index {
            self.sources.resize_with(index + 1, || None);
        }
        let reg = self.arm(fd, interest);
        let failed = reg.is_none();
        self.sources[index] = Some(Source { id, interest, reg, ready: Signals::NONE });
        if failed {
            // The fd was closed (or replaced by one that cannot wait) after
            // `register` checked it: report an error rather than nothing.
            self.ready(fd, Signals::ERROR);
        }
    }

    /// A registration watching `fd`, holding a waker so that
    /// `drain_woken` collects it.
    fn arm(&mut self, fd: RawFd, interest: Interest) -> Option<Registration> {
        let reg = self.reactor.register_fd(fd, signals(interest)).ok()?;
        let slot = reg.token().slot() as usize;
        if self.by_slot.len() <= slot {
            self.by_slot.resize(slot + 1, (RegToken::from_u64(0), -1));
        }
        self.by_slot[slot] = (reg.token(), fd);
        let mut cx = Context::from_waker(TaskWaker::noop());
        // Anything already queued lands in `packets`, which `collect` reads.
        let _ = reg.poll_drain_into(&mut cx, &mut self.packets);
        Some(reg)
    }

    /// Folds the packets of the last crank into the sources' readiness.
    fn collect(&mut self) {
        self.reactor.drain_woken(TaskWaker::noop(), &mut self.packets);
        let mut packets = std::mem::take(&mut self.packets);
        for packet in packets.drain(..) {
            let key = packet.key();
            if key == self.own.token() {
                if let PacketKind::Signal(s) = packet.kind() {
                    if s.observed.contains(WAKE) && !self.wake_pending {
                        self.wake_pending = true;
                        self.backlog.push_back(-1);
                    }
                }
                continue;
            }
            let Some(&(token, fd)) = self.by_slot.get(key.slot() as usize) else { continue };
            if token != key {
                continue;
            }
            match packet.kind() {
                PacketKind::Signal(s) => self.ready(fd, s.observed),
                // Only a poll's end reaches us as a completion: the reactor
                // re-arms an arming that ended healthy. ECANCELED means the
                // kernel cancelled it (the thread that armed it exited):
                // arm it again from this thread. Anything else is the fd's
                // error: report it, and stop watching.
                PacketKind::Completion(c) if !c.more() => {
                    if c.result == -libc::ECANCELED {
                        self.rearm.push(fd);
                    } else if let Some(Some(source)) = self.sources.get_mut(fd as usize) {
                        source.reg = None;
                        self.ready(fd, Signals::ERROR);
                    }
                }
                _ => {}
            }
        }
        self.packets = packets;
        let mut rearm = std::mem::take(&mut self.rearm);
        for fd in rearm.drain(..) {
            if let Some(Some(source)) = self.sources.get_mut(fd as usize) {
                let interest = source.interest;
                source.reg = None;
                let reg = self.arm(fd, interest);
                if let Some(Some(source)) = self.sources.get_mut(fd as usize) {
                    source.reg = reg;
                }
            }
        }
        self.rearm = rearm;
    }

    /// Adds `bits` to `fd`'s unreported readiness.
    fn ready(&mut self, fd: RawFd, bits: Signals) {
        if let Some(Some(source)) = self.sources.get_mut(fd as usize) {
            if source.ready.is_empty() {
                self.backlog.push_back(fd);
            }
            source.ready |= bits;
        }
    }

    /// Moves backlog entries into `events`, checking each against the
    /// table, until `events` is full.
    fn emit(&mut self, shared: &Shared, events: &mut Events) {
        if self.backlog.is_empty() {
            return;
        }
        let table = shared.table.lock();
        while events.len() < events.capacity() {
            let Some(fd) = self.backlog.pop_front() else { break };
            if fd < 0 {
                self.wake_pending = false;
                let token = shared.waker_token.load(Ordering::Acquire);
                events.push(libc::epoll_event { events: libc::EPOLLIN as u32, u64: token });
                continue;
            }
            let Some(Some(source)) = self.sources.get_mut(fd as usize) else { continue };
            let bits = std::mem::replace(&mut source.ready, Signals::NONE);
            let entry = table.entries.get(fd as usize).copied().flatten();
            let Some(entry) = entry.filter(|e| e.id == source.id) else { continue };
            let mask = epoll_mask(bits);
            if mask != 0 {
                events.push(libc::epoll_event { events: mask, u64: entry.token.0 as u64 });
            }
        }
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("backlog", &self.backlog.len()).finish_non_exhaustive()
    }
}

/// What tally watches for `interest`: what mio's epoll selector asks for
/// (`EPOLLIN | EPOLLRDHUP`, `EPOLLOUT`, `EPOLLPRI`); errors and hang-ups
/// are always reported.
fn signals(interest: Interest) -> Signals {
    let mut s = Signals::NONE;
    if interest.is_readable() {
        s |= Signals::READABLE | Signals::READ_CLOSED;
    }
    if interest.is_writable() {
        s |= Signals::WRITABLE;
    }
    if interest.is_priority() {
        s |= Signals::PRIORITY;
    }
    s
}

/// The epoll bits that mio's `event` helpers read, for `bits` (tally maps
/// `POLLHUP` to both closed bits and `POLLRDHUP` to `READ_CLOSED`).
fn epoll_mask(bits: Signals) -> u32 {
    let map = [
        (Signals::READABLE, libc::EPOLLIN),
        (Signals::WRITABLE, libc::EPOLLOUT),
        (Signals::PRIORITY, libc::EPOLLPRI),
        (Signals::ERROR, libc::EPOLLERR),
        (Signals::READ_CLOSED, libc::EPOLLRDHUP),
        (Signals::WRITE_CLOSED, libc::EPOLLHUP),
    ];
    map.iter().filter(|(s, _)| bits.contains(*s)).fold(0, |m, (_, e)| m | *e as u32)
}

/// mio's `event` helpers, over `epoll_event`.
pub mod event {
    use std::fmt;

    use crate::sys::Event;
    use crate::Token;

    pub fn token(event: &Event) -> Token {
        Token(event.u64 as usize)
    }

    pub fn is_readable(event: &Event) -> bool {
        (event.events as libc::c_int & libc::EPOLLIN) != 0
            || (event.events as libc::c_int & libc::EPOLLPRI) != 0
    }

    pub fn is_writable(event: &Event) -> bool {
        (event.events as libc::c_int & libc::EPOLLOUT) != 0
    }

    pub fn is_error(event: &Event) -> bool {
        (event.events as libc::c_int & libc::EPOLLERR) != 0
    }

    pub fn is_read_closed(event: &Event) -> bool {
        // Both halves of the socket have closed
        event.events as libc::c_int & libc::EPOLLHUP != 0
            // Socket has received FIN or called shutdown(SHUT_RD)
            || (event.events as libc::c_int & libc::EPOLLIN != 0
                && event.events as libc::c_int & libc::EPOLLRDHUP != 0)
    }

    pub fn is_write_closed(event: &Event) -> bool {
        // Both halves of the socket have closed
        event.events as libc::c_int & libc::EPOLLHUP != 0
            // Unix pipe write end has closed
            || (event.events as libc::c_int & libc::EPOLLOUT != 0
                && event.events as libc::c_int & libc::EPOLLERR != 0)
            // The other side (read end) of a Unix pipe has closed.
            || event.events as libc::c_int == libc::EPOLLERR
    }

    pub fn is_priority(event: &Event) -> bool {
        (event.events as libc::c_int & libc::EPOLLPRI) != 0
    }

    pub fn is_aio(_: &Event) -> bool {
        false
    }

    pub fn is_lio(_: &Event) -> bool {
        false
    }

    pub fn debug_details(f: &mut fmt::Formatter<'_>, event: &Event) -> fmt::Result {
        #[allow(clippy::trivially_copy_pass_by_ref)]
        fn check_events(got: &u32, want: &libc::c_int) -> bool {
            (*got as libc::c_int & want) != 0
        }
        debug_detail!(
            EventsDetails(u32),
            check_events,
            libc::EPOLLIN,
            libc::EPOLLPRI,
            libc::EPOLLOUT,
            libc::EPOLLERR,
            libc::EPOLLHUP,
            libc::EPOLLRDHUP,
        );

        // Can't reference fields in packed structures.
        let e_u64 = event.u64;
        f.debug_struct("epoll_event")
            .field("events", &EventsDetails(event.events))
            .field("u64", &e_u64)
            .finish()
    }
}

/// mio's `Waker`: raises `WAKE` on the `Poll`'s own registration.
#[derive(Debug)]
pub(crate) struct Waker {
    shared: Arc<Shared>,
}

impl Waker {
    pub(crate) fn new(selector: &Selector, token: Token) -> io::Result<Waker> {
        selector.shared.waker_token.store(token.0 as u64, Ordering::Release);
        Ok(Waker { shared: selector.shared.clone() })
    }

    /// Wakes the poller; several wakes before a poll collapse into one
    /// event. Never fails: once the `Poll` is gone there is nobody to wake.
    pub(crate) fn wake(&self) -> io::Result<()> {
        let _ = self.shared.signaler.raise(WAKE, 1);
        Ok(())
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("fd", &self.fd).finish_non_exhaustive()
    }
}

/// What an `IoSource` (every `net` type, and pipes) remembers of its
/// registration: which table, and which registration of its fd, so that
/// dropping it deregisters (cancelling its poll, so that the fd really
/// closes and the peer sees EOF). No heap state.
pub(crate) struct IoSourceState {
    registered: Option<(Arc<Shared>, RawFd, u64)>,
}

impl IoSourceState {
    pub(crate) fn new() -> IoSourceState {
        IoSourceState { registered: None }
    }

    pub(crate) fn do_io<T, F, R>(&self, f: F, io: &T) -> io::Result<R>
    where
        F: FnOnce(&T) -> io::Result<R>,
    {
        f(io)
    }

    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
        fd: RawFd,
    ) -> io::Result<()> {
        if let Some((shared, fd, id)) = &self.registered {
            // Still registered (with this registry or another)?
            if shared.table.lock().current(*fd, Some(*id)).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "I/O source already registered with a `Registry`",
                ));
            }
        }
        let selector = registry.selector();
        let id = selector.register_id(fd, token, interests)?;
        self.registered = Some((selector.shared.clone(), fd, id));
        Ok(())
    }

    pub(crate) fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
        fd: RawFd,
    ) -> io::Result<()> {
        let selector = registry.selector();
        match &mut self.registered {
            Some((shared, at, id)) if selector.same(shared) && *at == fd => {
                *id = selector.reregister_id(fd, Some(*id), token, interests)?;
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    pub(crate) fn deregister(&mut self, registry: &Registry, fd: RawFd) -> io::Result<()> {
        let selector = registry.selector();
        match &self.registered {
            Some((shared, at, id)) if selector.same(shared) && *at == fd => {
                let result = selector.deregister_id(fd, Some(*id));
                self.registered = None;
                result
            }
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
}

impl Drop for IoSourceState {
    fn drop(&mut self) {
        if let Some((shared, fd, id)) = self.registered.take() {
            // Not registered any more (deregistered by fd) is fine.
            let _ = Selector { shared }.deregister_id(fd, Some(id));
        }
    }
}
