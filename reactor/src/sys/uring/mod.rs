//! The io_uring backend: ring setup with feature step-down, SQE building,
//! one `io_uring_enter` per crank, and CQE reaping.

mod buf_ring;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::types::{Fd, Timespec};
use io_uring::{IoUring, Probe, opcode, squeue};
use tally_packets::Token;

pub(crate) use buf_ring::KernelRing;

use super::{Cqe, Features, poll_mask};
use crate::op::{KernelTimespec, OpKind, RenameArgs, StatxArgs};

const _: () = assert!(
    std::mem::size_of::<KernelTimespec>() == std::mem::size_of::<Timespec>()
        && std::mem::align_of::<KernelTimespec>() == std::mem::align_of::<Timespec>(),
    "KernelTimespec must have io_uring's Timespec layout"
);
use crate::config::{CANCEL_TOKEN, Config};

pub(crate) struct Uring {
    ring: IoUring,
    features: Features,
    /// SQEs that found the SQ full while the kernel was busy: flushed, in
    /// order, before the next enter. Never grows in steady state.
    backlog: Vec<squeue::Entry>,
    /// Buffer groups registered with the ring, unregistered on drop.
    buf_groups: Vec<u16>,
    /// `io_uring_enter` calls made so far, for metrics.
    enters: u64,
    /// Whether the last enter's wait was cut short by a signal handler.
    interrupted: bool,
    /// DEFER_TASKRUN without COOP_TASKRUN's TASKRUN_FLAG: completions wait
    /// as deferred task work that only an enter with GETEVENTS posts, and
    /// no flag says when there is some, so every turn must enter.
    defer_unflagged: bool,
    /// The ring's index in this thread's table of registered rings
    /// (`IORING_REGISTER_RING_FDS`, Linux 5.18), when the kernel took it:
    /// every enter then passes the index with `IORING_ENTER_REGISTERED_RING`
    /// and the kernel skips the fd lookup (`fdget`/`fdput`). The table is
    /// per thread, so only a SINGLE_ISSUER ring, which the kernel binds to
    /// the thread that made it, registers: a ring that may change threads
    /// (compat-mio's) would enter another thread's ring by that index.
    registered_ring: Option<u32>,
}

/// A ring that could not be set up: which step failed, and how.
pub(crate) struct SetupError {
    pub(crate) step: &'static str,
    pub(crate) error: io::Error,
}

/// The opcodes tally submits; a ring without one of them is not used.
const REQUIRED: [(&str, u8); 12] = [
    ("NOP", opcode::Nop::CODE),
    ("READ", opcode::Read::CODE),
    ("WRITE", opcode::Write::CODE),
    ("RECV", opcode::Recv::CODE),
    ("SEND", opcode::Send::CODE),
    ("ACCEPT", opcode::Accept::CODE),
    ("CONNECT", opcode::Connect::CODE),
    ("CLOSE", opcode::Close::CODE),
    ("SHUTDOWN", opcode::Shutdown::CODE),
    ("TIMEOUT", opcode::Timeout::CODE),
    ("POLL_ADD", opcode::PollAdd::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
];

/// The file opcodes, probed as one optional feature (`Features::file_ops`):
/// unlinkat, renameat and mkdirat arrived in 5.11 and 5.15, later than
/// the ring itself.
const FILE_OPS: [u8; 6] = [
    opcode::OpenAt::CODE,
    opcode::Fsync::CODE,
    opcode::Statx::CODE,
    opcode::UnlinkAt::CODE,
    opcode::RenameAt::CODE,
    opcode::MkDirAt::CODE,
];

/// `IORING_ENTER_GETEVENTS`: run deferred task work and post completions.
const ENTER_GETEVENTS: u32 = 1;
/// `IORING_ENTER_EXT_ARG`: the argument is an `io_uring_getevents_arg`.
const ENTER_EXT_ARG: u32 = 8;
/// `IORING_ENTER_REGISTERED_RING`: the fd is a registered-ring index.
const ENTER_REGISTERED_RING: u32 = 16;
/// `IORING_REGISTER_RING_FDS` and `IORING_UNREGISTER_RING_FDS`.
const REGISTER_RING_FDS: u32 = 20;
const UNREGISTER_RING_FDS: u32 = 21;

/// The kernel's `struct io_uring_getevents_arg`, for an enter with a
/// timeout.
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// The kernel's `struct io_uring_rsrc_update`, for ring-fd registration.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// The setup flags we try, richest first; each step drops what an older
/// kernel answers EINVAL to.
const STEPS: [(bool, bool, bool); 4] = [
    // (single_issuer + defer_taskrun, coop_taskrun + taskrun_flag, submit_all)
    (true, true, true),
    (false, true, true),
    (false, false, true),
    (false, false, false),
];

impl Uring {
    /// Sets up a ring with the size and flags the reactor will use, stepping
    /// down through the flags an older kernel refuses, and checks that it
    /// has every opcode tally submits.
    pub(crate) fn new(config: &Config) -> Result<Uring, SetupError> {
        let setup = |error| SetupError { step: "io_uring_setup", error };
        let mut last_err = None;
        for &(defer, coop, submit_all) in &STEPS {
            let defer = defer && config.defer_taskrun;
            let coop = coop && config.coop_taskrun;
            let mut builder = IoUring::builder();
            if defer {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
            if coop {
                builder.setup_coop_taskrun().setup_taskrun_flag();
            }
            if submit_all {
                builder.setup_submit_all();
            }
            builder.setup_cqsize(config.entries.saturating_mul(2)).setup_clamp();
            match builder.build(config.entries) {
                Ok(ring) => return Uring::finish(ring, defer, coop, submit_all),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
                Err(e) => return Err(setup(e)),
            }
        }
        Err(setup(last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))))
    }

    fn finish(
        ring: IoUring,
        defer: bool,
        coop: bool,
        submit_all: bool,
    ) -> Result<Uring, SetupError> {
        let probe_error = |what: String| SetupError {
            step: "probe",
            error: io::Error::new(io::ErrorKind::Unsupported, what),
        };
        let params = ring.params();
        if !params.is_feature_ext_arg() {
            // The crank's timeout rides on IORING_ENTER_EXT_ARG (Linux 5.11).
            return Err(probe_error(
                "io_uring lacks IORING_FEAT_EXT_ARG (needs Linux 5.11 or later)".into(),
            ));
        }
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|error| SetupError { step: "probe", error })?;
        if let Some((name, _)) = REQUIRED.iter().find(|(_, code)| !probe.is_supported(*code)) {
            return Err(probe_error(format!("io_uring lacks the {name} opcode")));
        }
        let features = Features {
            single_issuer_defer_taskrun: defer,
            coop_taskrun: coop,
            submit_all,
            nodrop: params.is_feature_nodrop(),
            skip_success: params.is_feature_skip_cqe_on_success(),
            // Multishot accept arrived in 5.19 with the IORING_OP_SOCKET
            // opcode, multishot recv in 6.0 with IORING_OP_SEND_ZC: the
            // probe's newest opcodes stand in for the flags it cannot show.
            multishot_accept: probe.is_supported(opcode::Socket::CODE),
            multishot_recv: probe.is_supported(opcode::SendZc::CODE),
            multishot_poll: probe.is_supported(opcode::PollAdd::CODE)
                && params.is_feature_fast_poll(),
            buf_ring: probe.is_supported(opcode::Socket::CODE),
            registered_ring: false,
            file_ops: FILE_OPS.iter().all(|code| probe.is_supported(*code)),
            ftruncate: probe.is_supported(opcode::Ftruncate::CODE),
        };
        let registered_ring = if defer { register_ring_fd(ring.as_raw_fd()) } else { None };
        let features = Features { registered_ring: registered_ring.is_some(), ..features };
        Ok(Uring {
            ring,
            features,
            backlog: Vec::new(),
            buf_groups: Vec::new(),
            enters: 0,
            interrupted: false,
            defer_unflagged: defer && !coop,
            registered_ring,
        })
    }

    pub(crate) fn features(&self) -> Features {
        self.features
    }

    pub(crate) fn enters(&self) -> u64 {
        self.enters
    }

    pub(crate) fn interrupted(&self) -> bool {
        self.interrupted
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Queues `entry`. When the SQ is full it flushes to the kernel and
    /// retries; when the kernel is busy too, the entry waits in the backlog.
    ///
    /// # Safety
    ///
    /// Every pointer in `entry` must stay valid until its final completion.
    #[inline(always)]
    unsafe fn push(&mut self, entry: squeue::Entry) {
        // Only the fast path is inlined (into each of `submit`'s arms): an
        // out-of-line push would take the entry through memory again.
        // SAFETY: forwarded from this function's contract.
        if self.backlog.is_empty() && unsafe { self.ring.submission().push(&entry) }.is_ok() {
            return;
        }
        // SAFETY: as above.
        unsafe { self.push_slow(entry) };
    }

    /// [`push`](Self::push) when the SQ is full or a backlog waits.
    ///
    /// # Safety
    ///
    /// As [`push`](Self::push).
    #[cold]
    #[inline(never)]
    unsafe fn push_slow(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() {
            // SQ full: hand what is queued to the kernel, then retry once.
            self.enters += 1;
            let _ = self.ring.submit();
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push(entry);
    }

    fn flush_backlog(&mut self) {
        let mut sent = 0;
        while sent < self.backlog.len() {
            let mut sq = self.ring.submission();
            while sent < self.backlog.len() {
                // SAFETY: backlog entries were pushed under `push`'s contract.
                if unsafe { sq.push(&self.backlog[sent]) }.is_err() {
                    break;
                }
                sent += 1;
            }
            drop(sq);
            if sent < self.backlog.len() {
                self.enters += 1;
                if self.ring.submit().is_err() {
                    break;
                }
            }
        }
        self.backlog.drain(..sent);
    }

    /// Builds and queues the SQE for `kind`, tagged with `token`.
    ///
    /// # Safety
    ///
    /// `kind` must stay where it is (its heap resources unmoved and alive)
    /// until the operation's final completion.
    #[inline]
    pub(crate) unsafe fn submit(&mut self, token: Token, kind: &mut OpKind) {
        const ACCEPT_FLAGS: i32 = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        let ud = token.as_u64();
        // Each arm queues its own entry, so that it is written out from
        // constants and registers; one `build` returning the entry made
        // every arm's fields merge through stack slots first.
        // SAFETY: every entry points into `kind` (its buffer, address or
        // timespec), which this function's contract keeps in place.
        unsafe {
            match kind {
                OpKind::Nop => self.queue(opcode::Nop::new().build(), ud),
                OpKind::Read { fd, buf, offset } => {
                    let spare = buf.spare_capacity_mut();
                    let (ptr, len) = (spare.as_mut_ptr().cast(), len32(spare.len()));
                    self.queue(opcode::Read::new(Fd(*fd), ptr, len).offset(*offset).build(), ud)
                }
                OpKind::Write { fd, buf, offset } => {
                    let (ptr, len) = (buf.as_ptr(), len32(buf.len()));
                    self.queue(opcode::Write::new(Fd(*fd), ptr, len).offset(*offset).build(), ud)
                }
                OpKind::Recv { fd, buf, flags } => {
                    let spare = buf.spare_capacity_mut();
                    let (ptr, len) = (spare.as_mut_ptr().cast(), len32(spare.len()));
                    self.queue(opcode::Recv::new(Fd(*fd), ptr, len).flags(*flags).build(), ud)
                }
                OpKind::Send { fd, buf, flags } => {
                    let (ptr, len) = (buf.as_ptr(), len32(buf.len()));
                    self.queue(opcode::Send::new(Fd(*fd), ptr, len).flags(*flags).build(), ud)
                }
                OpKind::Accept { fd, multishot: false } => {
                    let (addr, len) = (std::ptr::null_mut(), std::ptr::null_mut());
                    let accept = opcode::Accept::new(Fd(*fd), addr, len);
                    self.queue(accept.flags(ACCEPT_FLAGS).build(), ud)
                }
                OpKind::Accept { fd, multishot: true } => {
                    self.queue(opcode::AcceptMulti::new(Fd(*fd)).flags(ACCEPT_FLAGS).build(), ud)
                }
                OpKind::Connect { fd, addr } => {
                    let ptr = (&addr.storage as *const libc::sockaddr_storage).cast();
                    self.queue(opcode::Connect::new(Fd(*fd), ptr, addr.len).build(), ud)
                }
                OpKind::Close { fd } => {
                    let fd = Fd(fd.as_ref().map_or(-1, AsRawFd::as_raw_fd));
                    self.queue(opcode::Close::new(fd).build(), ud)
                }
                OpKind::Shutdown { fd, how } => {
                    self.queue(opcode::Shutdown::new(Fd(*fd), *how).build(), ud)
                }
                OpKind::Timeout { ts } => {
                    // io_uring's Timespec is a transparent wrapper of the
                    // kernel's __kernel_timespec, as KernelTimespec is
                    // (their sizes are checked below); the kernel reads the
                    // 16 bytes behind the pointer, nothing else.
                    let ts = (&**ts as *const KernelTimespec).cast::<Timespec>();
                    self.queue(opcode::Timeout::new(ts).build(), ud)
                }
                OpKind::Poll { fd, interest, multishot } => {
                    let poll = opcode::PollAdd::new(Fd(*fd), poll_mask(*interest));
                    self.queue(poll.multi(*multishot).build(), ud)
                }
                OpKind::RecvMulti { fd, group } => {
                    self.queue(opcode::RecvMulti::new(Fd(*fd), group.0).build(), ud)
                }
                OpKind::OpenAt { dir, path, flags, mode } => {
                    let open = opcode::OpenAt::new(Fd(*dir), path.as_ptr());
                    self.queue(open.flags(*flags).mode(*mode).build(), ud)
                }
                OpKind::Fsync { fd, datasync } => {
                    let flags = if *datasync {
                        io_uring::types::FsyncFlags::DATASYNC
                    } else {
                        io_uring::types::FsyncFlags::empty()
                    };
                    self.queue(opcode::Fsync::new(Fd(*fd)).flags(flags).build(), ud)
                }
                OpKind::Statx(args) => {
                    let StatxArgs { dir, path, flags, mask, buf } = &mut **args;
                    // The spare capacity holds a whole `struct statx`
                    // (`Op::statx` reserved it); the kernel writes nothing
                    // else.
                    let out =
                        buf.spare_capacity_mut().as_mut_ptr().cast::<io_uring::types::statx>();
                    let statx = opcode::Statx::new(Fd(*dir), path.as_ptr(), out);
                    self.queue(statx.flags(*flags).mask(*mask).build(), ud)
                }
                OpKind::UnlinkAt { dir, path, flags } => {
                    let unlink = opcode::UnlinkAt::new(Fd(*dir), path.as_ptr());
                    self.queue(unlink.flags(*flags).build(), ud)
                }
                OpKind::RenameAt(args) => {
                    let RenameArgs { old_dir, old, new_dir, new, flags } = &**args;
                    let rename = opcode::RenameAt::new(
                        Fd(*old_dir),
                        old.as_ptr(),
                        Fd(*new_dir),
                        new.as_ptr(),
                    );
                    self.queue(rename.flags(*flags).build(), ud)
                }
                OpKind::MkdirAt { dir, path, mode } => {
                    let mkdir = opcode::MkDirAt::new(Fd(*dir), path.as_ptr());
                    self.queue(mkdir.mode(*mode).build(), ud)
                }
                OpKind::Ftruncate { fd, len } => {
                    self.queue(opcode::Ftruncate::new(Fd(*fd), *len).build(), ud)
                }
            }
        }
    }

    /// Tags `entry` with `user_data` and queues it.
    ///
    /// # Safety
    ///
    /// As [`push`](Self::push).
    #[inline(always)]
    unsafe fn queue(&mut self, entry: squeue::Entry, user_data: u64) {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.push(entry.user_data(user_data)) };
    }

    /// Asks the kernel to cancel the operation tagged `target`. The cancel's
    /// own completion is skipped on success and ignored otherwise.
    ///
    /// io_uring resolves an op's fd only when the kernel consumes its SQE.
    /// If anything is still queued, the target may be too, and the caller
    /// may close the fd as soon as this returns and let the number be
    /// reused: the op would then run on the new file at the next turn
    /// (read its bytes, accept its connections). So whatever is queued,
    /// this cancel last, goes to the kernel now: the op binds to the file
    /// it was made for, and the cancel behind it stops it. One
    /// `io_uring_enter` (submit only) per cancel made while submissions
    /// wait; none when the queue is empty.
    pub(crate) fn cancel(&mut self, target: Token) {
        let unsent = !self.backlog.is_empty() || !self.ring.submission().is_empty();
        let mut entry = opcode::AsyncCancel::new(target.as_u64()).build().user_data(CANCEL_TOKEN);
        if self.features.skip_success {
            entry = entry.flags(squeue::Flags::SKIP_SUCCESS);
        }
        // SAFETY: a cancel references no memory.
        unsafe { self.push(entry) };
        if unsent {
            self.flush_backlog();
            self.enters += 1;
            // Best effort: a busy kernel (`EBUSY`, a full CQ) leaves entries
            // queued, as any submit does; the next turn sends them.
            let _ = self.ring.submit();
        }
    }

    /// Submits what is queued and, if `wait`, blocks for one completion or
    /// until `timeout`. Returns whether it entered the kernel.
    pub(crate) fn enter(&mut self, wait: bool, timeout: Option<Duration>) -> io::Result<bool> {
        self.interrupted = false;
        self.flush_backlog();
        let (queued, kernel_wants_us) = {
            let sq = self.ring.submission();
            (sq.len(), sq.taskrun() || sq.cq_overflow())
        };
        if !wait && queued == 0 && !kernel_wants_us && !self.defer_unflagged {
            return Ok(false);
        }
        self.enters += 1;
        // A timeout longer than a timespec holds means "no timeout":
        // `Timespec::from` casts the seconds to i64, and a negative tv_sec
        // would answer ETIME at once, turning every wait into a busy loop.
        let timeout = timeout.filter(|t| i64::try_from(t.as_secs()).is_ok());
        // GETEVENTS to wait, and whenever the kernel asks for an enter
        // (task work, overflow) or, without the TASKRUN flag, may need one.
        let getevents = wait || kernel_wants_us || self.defer_unflagged;
        let flags = if getevents { ENTER_GETEVENTS } else { 0 };
        let res = match (wait, timeout) {
            (true, Some(t)) => {
                let ts = Timespec::from(t);
                let arg = GeteventsArg {
                    sigmask: 0,
                    sigmask_sz: 0,
                    min_wait_usec: 0,
                    ts: (&ts as *const Timespec) as u64,
                };
                // SAFETY: `arg` and the timespec it points to outlive the
                // call, and the SQEs submitted were pushed under `push`'s
                // contract.
                unsafe { self.sys_enter(queued as u32, 1, flags | ENTER_EXT_ARG, Some(&arg)) }
            }
            // SAFETY: no argument; the SQEs as above.
            (true, None) => unsafe { self.sys_enter(queued as u32, 1, flags, None) },
            // SAFETY: as above.
            (false, _) => unsafe { self.sys_enter(queued as u32, 0, flags, None) },
        };
        match res {
            Ok(_) => Ok(true),
            // Interrupted, timed out, or the kernel wants its CQ reaped
            // first: all mean "go reap"; unsent SQEs stay queued.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::ETIME | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                self.interrupted = e.raw_os_error() == Some(libc::EINTR);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// `io_uring_enter` on this ring, by its registered index when it has
    /// one.
    ///
    /// # Safety
    ///
    /// Every SQE it submits must have been pushed under `push`'s contract,
    /// and `arg`, when given, must be a valid `io_uring_getevents_arg` with
    /// `ENTER_EXT_ARG` in `flags`.
    #[inline]
    unsafe fn sys_enter(
        &self,
        to_submit: u32,
        min_complete: u32,
        flags: u32,
        arg: Option<&GeteventsArg>,
    ) -> io::Result<()> {
        let (fd, flags) = match self.registered_ring {
            Some(index) => (index as libc::c_int, flags | ENTER_REGISTERED_RING),
            None => (self.ring.as_raw_fd(), flags),
        };
        let (arg, size) = match arg {
            Some(a) => {
                ((a as *const GeteventsArg).cast::<libc::c_void>(), size_of::<GeteventsArg>())
            }
            None => (std::ptr::null(), 0),
        };
        // SAFETY: `fd` names this ring (its fd, or its index in this
        // thread's table: a SINGLE_ISSUER ring never leaves its thread);
        // the rest is forwarded from this function's contract.
        let res = unsafe {
            libc::syscall(libc::SYS_io_uring_enter, fd, to_submit, min_complete, flags, arg, size)
        };
        if res < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Copies every available CQE into `out`. The kernel's CQE flags use
    /// the bits [`Cqe`] defines (see the test below), so they are copied
    /// unchanged.
    pub(crate) fn reap(&mut self, out: &mut Vec<Cqe>) {
        let cq = self.ring.completion();
        out.reserve(cq.len());
        for e in cq {
            out.push(Cqe { user_data: e.user_data(), result: e.result(), flags: e.flags() });
        }
    }

    /// Whether completions wait in the kernel's overflow list; if so, asks
    /// the kernel to flush them into the CQ.
    pub(crate) fn flush_overflow(&mut self) -> bool {
        if !self.ring.submission().cq_overflow() {
            return false;
        }
        // submit() enters with GETEVENTS while the overflow flag is set.
        self.enters += 1;
        let _ = self.ring.submit();
        true
    }

    /// Whether the CQ holds completions not yet reaped.
    pub(crate) fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Registers a new provided-buffer ring and returns its group id.
    /// Registers `ring` as buffer group `group`.
    ///
    /// # Safety
    ///
    /// `ring` must stay mapped until this backend is dropped (the io_uring
    /// closed).
    pub(crate) unsafe fn register_buf_ring(
        &mut self,
        ring: &KernelRing,
        group: u16,
    ) -> io::Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            self.ring.submitter().register_buf_ring_with_flags(
                ring.addr(),
                ring.entries(),
                group,
                0,
            )?
        };
        self.buf_groups.push(group);
        Ok(())
    }

    /// The buffer groups' memory was leaked: leave them registered.
    pub(crate) fn forget_buf_groups(&mut self) {
        self.buf_groups.clear();
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Unregister before the ring memory goes; the io_uring fd closes
        // after this body, and the buffer rings (the Driver's) after that.
        for &group in &self.buf_groups {
            let _ = self.ring.submitter().unregister_buf_ring(group);
        }
        if let Some(index) = self.registered_ring {
            // The table entry holds a reference to the ring's file: without
            // this the ring would live on until the thread exits.
            let mut update = RsrcUpdate { offset: index, resv: 0, data: 0 };
            // SAFETY: `update` outlives the call; the ring is SINGLE_ISSUER
            // (never moved off the thread that registered it), so `index`
            // names this ring in this thread's table.
            let _ = unsafe { register(self.ring.as_raw_fd(), UNREGISTER_RING_FDS, &mut update) };
        }
    }
}

/// Registers the ring `fd` in this thread's table of registered rings and
/// returns its index, or `None` when the kernel refuses (before 5.18, or
/// the table is full).
fn register_ring_fd(fd: RawFd) -> Option<u32> {
    // `offset: u32::MAX` lets the kernel pick a free slot.
    let mut update = RsrcUpdate { offset: u32::MAX, resv: 0, data: fd as u64 };
    // SAFETY: `update` outlives the call, and the kernel writes the slot
    // it picked into it.
    match unsafe { register(fd, REGISTER_RING_FDS, &mut update) } {
        Ok(1) => Some(update.offset),
        _ => None,
    }
}

/// `io_uring_register(fd, opcode, update, 1)`.
///
/// # Safety
///
/// `opcode` must take one `io_uring_rsrc_update`, which the kernel may
/// write back into.
unsafe fn register(fd: RawFd, opcode: u32, update: &mut RsrcUpdate) -> io::Result<i64> {
    let arg = update as *mut RsrcUpdate;
    // SAFETY: `arg` points to a live `RsrcUpdate`, as `opcode` (this
    // function's contract) expects; the kernel writes only into it.
    let res = unsafe { libc::syscall(libc::SYS_io_uring_register, fd, opcode, arg, 1u32) };
    if res < 0 { Err(io::Error::last_os_error()) } else { Ok(res) }
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use io_uring::cqueue;
    use tally_packets::Token;

    use super::{Cqe, Uring};
    use crate::config::{Backend, Config};
    use crate::op::OpKind;

    fn config() -> Config {
        Config {
            entries: 8,
            queue_cap: 8,
            user_cap: 8,
            buf_cap: 8,
            defer_taskrun: true,
            coop_taskrun: true,
            assert_drained: false,
            backend: Backend::IoUring,
        }
    }

    /// A thread's table holds 16 registered rings (`IO_RINGFD_REG_MAX`):
    /// the rings past it enter by their fd, every ring still submits and
    /// reaps, and dropping a ring frees its slot.
    #[test]
    fn rings_past_the_registered_table_enter_by_fd() {
        let mut rings = Vec::new();
        for _ in 0..20 {
            match Uring::new(&config()) {
                Ok(ring) => rings.push(ring),
                Err(e) => {
                    println!("skipped: {} failed: {}", e.step, e.error);
                    return;
                }
            }
        }
        if !rings[0].features.single_issuer_defer_taskrun {
            println!("skipped: no SINGLE_ISSUER, so no ring registers its fd");
            return;
        }
        let registered = rings.iter().filter(|r| r.registered_ring.is_some()).count();
        assert!(registered == 16 || registered == 0, "{registered} rings registered");
        for (i, ring) in rings.iter_mut().enumerate() {
            let token = Token::new(i as u32, 1);
            // SAFETY: a NOP references no memory.
            unsafe { ring.submit(token, &mut OpKind::Nop) };
            assert!(ring.enter(true, Some(Duration::from_secs(5))).unwrap());
            let mut cqes = Vec::new();
            ring.reap(&mut cqes);
            assert_eq!(cqes.len(), 1, "ring {i}");
            assert_eq!((cqes[0].user_data, cqes[0].result), (token.as_u64(), 0), "ring {i}");
        }
        rings.truncate(1);
        let again = Uring::new(&config()).ok().expect("a ring like the first 20");
        assert_eq!(again.registered_ring.is_some(), registered > 0, "a freed slot is reused");
    }

    /// `reap` copies the kernel's CQE flags unchanged into `Cqe`: the
    /// neutral bits must be io_uring's.
    #[test]
    fn cqe_flags_are_io_urings() {
        assert!(cqueue::more(Cqe::MORE) && !cqueue::more(Cqe::BUFFER));
        let flags = Cqe::BUFFER | (513 << 16);
        assert_eq!(cqueue::buffer_select(flags), Some(513));
        assert_eq!(Cqe { user_data: 0, result: 0, flags }.buffer_id(), Some(513));
        assert_eq!(cqueue::buffer_select(Cqe::MORE), None);
    }
}
