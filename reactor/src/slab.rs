//! A generational slab: O(1) insert, lookup and remove by [`Token`], where a
//! token whose generation no longer matches its slot finds nothing.

use tally_packets::Token;

#[derive(Debug)]
struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

/// Slots per chunk: 2^8. A chunk is allocated whole (its capacity fixed)
/// and never moves, so the slab grows without copying and its slack is at
/// most one partly filled chunk, not a doubling vector's up-to-half.
const CHUNK_SHIFT: u32 = 8;
const CHUNK: usize = 1 << CHUNK_SHIFT;

/// Slots reused LIFO, each with a generation bumped on every removal.
///
/// Slot `s` lives at `chunks[s >> CHUNK_SHIFT][s % CHUNK]`: two indexings,
/// no hashing. Every chunk but the last is full.
#[derive(Debug)]
pub(crate) struct GenSlab<T> {
    chunks: Vec<Vec<Entry<T>>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> GenSlab<T> {
    pub(crate) fn new() -> Self {
        GenSlab { chunks: Vec::new(), free: Vec::new(), len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Inserts `value` and returns its token, or `None` when every one of the
    /// 2^32 slots is taken.
    pub(crate) fn insert(&mut self, value: T) -> Option<Token> {
        self.insert_mut(value).map(|(token, _)| token)
    }

    /// As [`insert`](Self::insert), also lending the value where it now
    /// lives, which saves a second lookup.
    #[inline]
    pub(crate) fn insert_mut(&mut self, value: T) -> Option<(Token, &mut T)> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => self.push_vacant()?,
        };
        self.len += 1;
        let entry = self.entry_mut(slot)?;
        let token = token(slot, entry.generation);
        Some((token, entry.value.insert(value)))
    }

    /// Appends a never-used slot, starting a chunk when the last is full.
    fn push_vacant(&mut self) -> Option<u32> {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            // The new chunk's first slot must fit a token; so do the rest,
            // as 2^32 is a multiple of CHUNK.
            u32::try_from(self.chunks.len() * CHUNK).ok()?;
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let last = self.chunks.len() - 1;
        let chunk = &mut self.chunks[last];
        let slot = u32::try_from(last * CHUNK + chunk.len()).ok()?;
        chunk.push(Entry { generation: 1, value: None });
        Some(slot)
    }

    #[inline]
    fn entry(&self, slot: u32) -> Option<&Entry<T>> {
        self.chunks.get((slot >> CHUNK_SHIFT) as usize)?.get(slot as usize % CHUNK)
    }

    #[inline]
    fn entry_mut(&mut self, slot: u32) -> Option<&mut Entry<T>> {
        self.chunks.get_mut((slot >> CHUNK_SHIFT) as usize)?.get_mut(slot as usize % CHUNK)
    }

    /// The entry `token` names, if its generation is current.
    #[inline]
    pub(crate) fn get(&self, token: Token) -> Option<&T> {
        let entry = self.entry(token.slot())?;
        if entry.generation == token.generation() { entry.value.as_ref() } else { None }
    }

    /// The entry `token` names, if its generation is current.
    #[inline]
    pub(crate) fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let entry = self.entry_mut(token.slot())?;
        if entry.generation == token.generation() { entry.value.as_mut() } else { None }
    }

    /// Removes the entry `token` names, bumping the slot's generation so that
    /// `token` never matches again.
    pub(crate) fn remove(&mut self, token: Token) -> Option<T> {
        let entry = self.entry_mut(token.slot())?;
        if entry.generation != token.generation() {
            return None;
        }
        let value = entry.value.take()?;
        entry.generation = Token::next_generation(entry.generation);
        self.free.push(token.slot());
        self.len -= 1;
        Some(value)
    }

    /// Drops the entry `token` names in place (no move out of the slab),
    /// bumping the slot's generation. Returns whether there was one.
    #[inline]
    pub(crate) fn discard(&mut self, token: Token) -> bool {
        let Some(entry) = self.entry_mut(token.slot()) else { return false };
        if entry.generation != token.generation() || entry.value.is_none() {
            return false;
        }
        entry.value = None;
        entry.generation = Token::next_generation(entry.generation);
        self.free.push(token.slot());
        self.len -= 1;
        true
    }

    /// Every live entry with its token.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Token, &T)> {
        self.chunks.iter().flatten().enumerate().filter_map(|(slot, e)| {
            e.value.as_ref().map(|v| (Token::new(slot as u32, e.generation), v))
        })
    }
}

/// `Token::new(slot, generation)` for a generation known to be non-zero
/// (slots start at 1 and `next_generation` skips 0), packed here so that
/// the hot insert path needs no out-of-line call into the packets crate.
/// The layout is `Token`'s documented one: generation high, slot low.
#[inline]
fn token(slot: u32, generation: u32) -> Token {
    debug_assert_ne!(generation, 0, "generation 0 is reserved");
    let token = Token::from_u64((u64::from(generation) << 32) | u64::from(slot));
    debug_assert_eq!((token.slot(), token.generation()), (slot, generation));
    token
}

/// The bytes one slot of a `GenSlab<T>` takes, for size tests.
#[cfg(test)]
#[allow(dead_code, reason = "the fuzz crate includes this file without core's size test")]
pub(crate) const fn entry_size<T>() -> usize {
    std::mem::size_of::<Entry<T>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_span_chunks() {
        let mut slab = GenSlab::new();
        let t: Vec<_> = (0..3 * CHUNK + 5).map(|i| slab.insert(i).unwrap()).collect();
        for (i, tok) in t.iter().enumerate() {
            assert_eq!((tok.slot() as usize, slab.get(*tok)), (i, Some(&i)));
        }
        assert_eq!(slab.chunks.len(), 4);
        assert!(slab.chunks.iter().all(|c| c.capacity() == CHUNK), "chunks never grow");
        assert_eq!(slab.remove(t[CHUNK]), Some(CHUNK));
        let again = slab.insert(7).unwrap();
        assert_eq!((again.slot(), slab.get(t[CHUNK])), (CHUNK as u32, None));
        assert_eq!(slab.iter().count(), 3 * CHUNK + 5);
    }

    #[test]
    fn stale_tokens_find_nothing_after_reuse() {
        let mut slab = GenSlab::new();
        let a = slab.insert("a").unwrap();
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b").unwrap();
        assert_eq!(a.slot(), b.slot(), "LIFO reuse");
        assert_ne!(a, b);
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(slab.len(), 1);
        assert!(!slab.discard(a));
        assert!(slab.discard(b));
        assert!(!slab.discard(b));
        let c = slab.insert("c").unwrap();
        assert_eq!((c.slot(), slab.get(b)), (b.slot(), None));
    }

    #[test]
    fn iter_yields_live_tokens() {
        let mut slab = GenSlab::new();
        let t: Vec<_> = (0..4).map(|i| slab.insert(i).unwrap()).collect();
        slab.remove(t[1]);
        let live: Vec<_> = slab.iter().map(|(tok, v)| (tok, *v)).collect();
        assert_eq!(live, vec![(t[0], 0), (t[2], 2), (t[3], 3)]);
    }
}
