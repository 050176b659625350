//! [`Packet`]: the 48-byte unit the reactor delivers, and its kinds.
//!
//! A packet is plain data, modelled on Zircon's `zx_port_packet_t`: the key of
//! the registration it belongs to, a status, and one of a few kinds whose
//! payload fits in 32 bytes. Packets are `Copy`. The few that carry ownership
//! (an accepted fd, a provided buffer) say so in their docs; the reactor
//! reclaims those resources itself when a packet is never handed over.

use crate::{Count, Signals, Token};

/// A `u64` stored as two `u32`s, so that payloads stay 4-byte aligned and the
/// whole packet fits in 48 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
struct SplitU64([u32; 2]);

impl SplitU64 {
    #[inline]
    const fn new(v: u64) -> Self {
        SplitU64([v as u32, (v >> 32) as u32])
    }
    #[inline]
    const fn get(self) -> u64 {
        self.0[0] as u64 | ((self.0[1] as u64) << 32)
    }
}

/// One delivered event.
///
/// ```text
///  bytes 0..8    key     Token of the registration
///  bytes 8..12   status  0, or a negated errno
///  bytes 12..48  kind    PacketKind: a tag and at most 32 bytes of payload
/// ```
///
/// # Examples
///
/// ```
/// use tally_packets::{Count, Packet, PacketKind, Signals, Token};
///
/// let key = Token::new(1, 1);
/// let p = Packet::signal(key, Signals::READABLE, Signals::READABLE, Count::new(3));
/// match p.kind() {
///     PacketKind::Signal(s) => assert_eq!(s.count, Count::new(3)),
///     _ => unreachable!(),
/// }
/// assert!(std::mem::size_of::<Packet>() <= 48);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Packet {
    key: Token,
    status: i32,
    kind: PacketKind,
}

const _: () = assert!(std::mem::size_of::<Packet>() <= 48, "a Packet must fit in 48 bytes");
const _: () = assert!(std::mem::size_of::<PacketKind>() <= 36, "tag plus 32 bytes of payload");

impl Packet {
    /// A packet of any kind.
    #[inline]
    pub const fn new(key: Token, status: i32, kind: PacketKind) -> Packet {
        Packet { key, status, kind }
    }

    /// A signal packet with status 0.
    #[inline]
    pub const fn signal(key: Token, trigger: Signals, observed: Signals, count: Count) -> Packet {
        Packet::new(key, 0, PacketKind::Signal(SignalPacket { trigger, observed, count }))
    }

    /// A completion packet; its status is the result when the result is a
    /// negated errno, and 0 otherwise.
    #[inline]
    pub const fn completion(key: Token, completion: CompletionPacket) -> Packet {
        let status = if completion.result < 0 { completion.result } else { 0 };
        Packet::new(key, status, PacketKind::Completion(completion))
    }

    /// A user packet with status 0.
    #[inline]
    pub const fn user(key: Token, payload: [u8; 32]) -> Packet {
        Packet::new(key, 0, PacketKind::User(payload))
    }

    /// The key of the registration this packet was delivered to.
    #[inline]
    pub const fn key(&self) -> Token {
        self.key
    }

    /// 0, or a negated errno.
    #[inline]
    pub const fn status(&self) -> i32 {
        self.status
    }

    /// The kind and its payload.
    #[inline]
    pub const fn kind(&self) -> PacketKind {
        self.kind
    }

    /// A mutable view of the kind, for folding signals in place.
    #[inline]
    pub fn kind_mut(&mut self) -> &mut PacketKind {
        &mut self.kind
    }

    /// The signal payload, if this is a signal packet.
    #[inline]
    pub const fn as_signal(&self) -> Option<SignalPacket> {
        match self.kind {
            PacketKind::Signal(s) => Some(s),
            _ => None,
        }
    }

    /// The completion payload, if this is a completion packet.
    #[inline]
    pub const fn as_completion(&self) -> Option<CompletionPacket> {
        match self.kind {
            PacketKind::Completion(c) => Some(c),
            _ => None,
        }
    }
}

/// The kinds of packet, each with its payload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PacketKind {
    /// Signal bits were raised, `count` times in all since the last drain.
    Signal(SignalPacket),
    /// An operation finished, as every backend reports it.
    Completion(CompletionPacket),
    /// 32 bytes sent by a user, possibly from another thread.
    User([u8; 32]),
    /// A timer fired.
    Timer(TimerPacket),
    /// A process signal arrived, `count` times since the last drain.
    ProcessSignal(ProcessSignalPacket),
}

/// The payload of a [`PacketKind::Signal`] packet, as `zx_packet_signal_t`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SignalPacket {
    /// The bits the registration asked to be told about.
    pub trigger: Signals,
    /// The bits that were raised.
    pub observed: Signals,
    /// How many raises were folded into this packet. Saturates at
    /// [`Count::UNBOUNDED`].
    pub count: Count,
}

/// Which operation a completion reports. The same on every backend: the
/// io_uring opcode and CQE flags stay inside the reactor's io_uring backend.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum OpTag {
    /// A no-op.
    Nop,
    /// A read (at an offset or the file position).
    Read,
    /// A write (at an offset or the file position).
    Write,
    /// A receive, into the op's own buffer or a provided one.
    Recv,
    /// A send.
    Send,
    /// An accept: a non-negative result is a new fd, lent to the drainer.
    Accept,
    /// A connect.
    Connect,
    /// A close.
    Close,
    /// A shutdown.
    Shutdown,
    /// A timeout.
    Timeout,
    /// A poll for readiness (its edges arrive as signal packets; a
    /// completion packet reports how it ended).
    Poll,
    /// An open: a non-negative result is a new fd, lent to the drainer as
    /// an accept's is.
    Open,
    /// An fsync or fdatasync.
    Fsync,
    /// A statx: the status is in the op's buffer.
    Statx,
    /// An unlink (of a file or an empty directory).
    Unlink,
    /// A rename.
    Rename,
    /// A mkdir.
    Mkdir,
    /// An ftruncate.
    Ftruncate,
}

/// A provided buffer named by a completion: its group, its id in the group,
/// and which delivery of that id this is (ids are reused; the reactor
/// counts deliveries from 1, and lends a buffer only against its current
/// one).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BufferRef {
    /// The buffer group.
    pub group: u16,
    /// The buffer's id within its group.
    pub id: u16,
    /// Which delivery of the buffer; 0 names none.
    pub generation: u32,
}

/// The payload of a [`PacketKind::Completion`] packet.
///
/// When the [`tag`](CompletionPacket::tag) is [`OpTag::Accept`] and
/// `result >= 0`, `result` is a new fd; when
/// [`buffer`](CompletionPacket::buffer) is `Some`, the packet names a
/// provided buffer. The packet is plain data and owns neither: the reactor
/// lends them to whoever drained the packet, until that registration's next
/// drain, which closes the fd or returns the buffer unless it was taken (in
/// tally's reactor, with `Registration::take_fd` and `Registration::buffer`).
/// So a dropped packet loses nothing for good, and nothing is freed twice.
///
/// A buffer id is reused: once given back, the buffer is filled again and a
/// later completion names the same id. Each delivery of a buffer gets a new
/// [generation](BufferRef::generation), and the reactor lends the buffer
/// only against the packet of its current delivery, so a stale copy of an
/// older packet (packets are `Copy`) cannot claim a later delivery's data.
///
/// # Examples
///
/// ```
/// use tally_packets::{BufferRef, CompletionPacket, OpTag, Token};
///
/// let buf = BufferRef { group: 0, id: 7, generation: 3 };
/// let c = CompletionPacket::new(Token::new(1, 1), OpTag::Recv, 64).with_more(true).with_buffer(buf);
/// assert_eq!((c.tag(), c.more(), c.buffer()), (OpTag::Recv, true, Some(buf)));
/// assert_eq!(c.accepted_fd(), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CompletionPacket {
    /// Bytes transferred, a new fd, or a negated errno.
    pub result: i32,
    op: SplitU64,
    buf_generation: u32,
    buf_group: u16,
    buf_id: u16,
    tag: OpTag,
    more: bool,
    has_buffer: bool,
}

impl CompletionPacket {
    /// The final completion of operation `op`, naming no buffer.
    #[inline]
    pub const fn new(op: Token, tag: OpTag, result: i32) -> Self {
        CompletionPacket {
            result,
            op: SplitU64::new(op.as_u64()),
            buf_generation: 0,
            buf_group: 0,
            buf_id: 0,
            tag,
            more: false,
            has_buffer: false,
        }
    }

    /// This completion, saying whether more completions of its (multishot)
    /// operation follow.
    #[inline]
    pub const fn with_more(mut self, more: bool) -> Self {
        self.more = more;
        self
    }

    /// This completion, naming provided buffer `buffer`.
    #[inline]
    pub const fn with_buffer(mut self, buffer: BufferRef) -> Self {
        self.buf_group = buffer.group;
        self.buf_id = buffer.id;
        self.buf_generation = buffer.generation;
        self.has_buffer = true;
        self
    }

    /// The token of the operation that completed.
    #[inline]
    pub const fn op(&self) -> Token {
        Token::from_u64(self.op.get())
    }

    /// Which operation it was.
    #[inline]
    pub const fn tag(&self) -> OpTag {
        self.tag
    }

    /// Whether the operation will post more completions.
    #[inline]
    pub const fn more(&self) -> bool {
        self.more
    }

    /// The provided buffer this completion filled, if any.
    #[inline]
    pub const fn buffer(&self) -> Option<BufferRef> {
        if self.has_buffer {
            Some(BufferRef {
                group: self.buf_group,
                id: self.buf_id,
                generation: self.buf_generation,
            })
        } else {
            None
        }
    }

    /// The new fd a successful accept's (or open's) result is, lent to
    /// whoever drained the packet.
    #[inline]
    pub const fn accepted_fd(&self) -> Option<i32> {
        if matches!(self.tag, OpTag::Accept | OpTag::Open) && self.result >= 0 {
            Some(self.result)
        } else {
            None
        }
    }
}

/// The payload of a [`PacketKind::Timer`] packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TimerPacket {
    id: SplitU64,
    /// How many expirations this packet stands for (more than one when an
    /// interval fell behind).
    pub expirations: Count,
}

impl TimerPacket {
    /// A timer packet for timer `id`.
    #[inline]
    pub const fn new(id: u64, expirations: Count) -> Self {
        TimerPacket { id: SplitU64::new(id), expirations }
    }

    /// The timer's id, as its owner chose it.
    #[inline]
    pub const fn id(&self) -> u64 {
        self.id.get()
    }
}

/// The payload of a [`PacketKind::ProcessSignal`] packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProcessSignalPacket {
    /// The signal number (`SIGINT`, …).
    pub signo: i32,
    /// How many times it arrived since the last drain.
    pub count: Count,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_is_at_most_48_bytes() {
        assert!(std::mem::size_of::<Packet>() <= 48);
        assert_eq!(std::mem::align_of::<Packet>(), 8);
    }

    #[test]
    fn completion_round_trips_op_and_buffer() {
        let op = Token::new(u32::MAX, 0xdead_beef);
        let buf = BufferRef { group: 2, id: 513, generation: 1 };
        let c = CompletionPacket::new(op, OpTag::Recv, 64).with_more(true).with_buffer(buf);
        assert_eq!(c.op(), op);
        assert_eq!(c.buffer(), Some(buf));
        assert!(c.more());
        let p = Packet::completion(Token::new(1, 1), c);
        assert_eq!(p.status(), 0);
        let e = Packet::completion(Token::new(1, 1), CompletionPacket::new(op, OpTag::Recv, -9));
        assert_eq!(e.status(), -9);
        assert_eq!(e.as_completion().unwrap().buffer(), None);
        assert!(!e.as_completion().unwrap().more());
    }

    #[test]
    fn buffer_generation_tells_deliveries_apart() {
        let op = Token::new(3, 4);
        let old = CompletionPacket::new(op, OpTag::Recv, 64).with_buffer(BufferRef {
            group: 1,
            id: 9,
            generation: 1,
        });
        let new = old.with_buffer(BufferRef { group: 1, id: 9, generation: u32::MAX });
        assert_eq!(new.buffer().map(|b| (b.id, b.generation)), Some((9, u32::MAX)));
        assert_ne!(old, new, "two deliveries of one buffer are different packets");
        let p = Packet::completion(Token::new(1, 1), new);
        assert_eq!(p.as_completion(), Some(new));
    }

    #[test]
    fn only_a_successful_accept_carries_an_fd() {
        let op = Token::new(1, 1);
        assert_eq!(CompletionPacket::new(op, OpTag::Accept, 7).accepted_fd(), Some(7));
        assert_eq!(CompletionPacket::new(op, OpTag::Accept, -24).accepted_fd(), None);
        assert_eq!(CompletionPacket::new(op, OpTag::Read, 7).accepted_fd(), None);
    }

    #[test]
    fn timer_id_round_trips() {
        let t = TimerPacket::new(u64::MAX - 1, Count::new(2));
        assert_eq!(t.id(), u64::MAX - 1);
    }
}
