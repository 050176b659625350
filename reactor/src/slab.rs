//! A generational slab: O(1) insert, lookup and remove by [`Token`], where a
//! token whose generation no longer matches its slot finds nothing.

use tally_packets::Token;

#[derive(Debug)]
struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

/// Slots reused LIFO, each with a generation bumped on every removal.
#[derive(Debug)]
pub(crate) struct GenSlab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> GenSlab<T> {
    pub(crate) fn new() -> Self {
        GenSlab { entries: Vec::new(), free: Vec::new(), len: 0 }
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
            None => {
                let slot = u32::try_from(self.entries.len()).ok()?;
                self.entries.push(Entry { generation: 1, value: None });
                slot
            }
        };
        self.len += 1;
        let entry = &mut self.entries[slot as usize];
        let token = token(slot, entry.generation);
        Some((token, entry.value.insert(value)))
    }

    /// The entry `token` names, if its generation is current.
    #[inline]
    pub(crate) fn get(&self, token: Token) -> Option<&T> {
        let entry = self.entries.get(token.slot() as usize)?;
        if entry.generation == token.generation() { entry.value.as_ref() } else { None }
    }

    /// The entry `token` names, if its generation is current.
    #[inline]
    pub(crate) fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let entry = self.entries.get_mut(token.slot() as usize)?;
        if entry.generation == token.generation() { entry.value.as_mut() } else { None }
    }

    /// Removes the entry `token` names, bumping the slot's generation so that
    /// `token` never matches again.
    pub(crate) fn remove(&mut self, token: Token) -> Option<T> {
        let entry = self.entries.get_mut(token.slot() as usize)?;
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
        let Some(entry) = self.entries.get_mut(token.slot() as usize) else { return false };
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
        self.entries.iter().enumerate().filter_map(|(slot, e)| {
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

#[cfg(test)]
mod tests {
    use super::*;

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
