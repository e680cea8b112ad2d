//! What each device was told on its first SUCCESS, held in memory through a run.
//!
//! Stored in fixed-size chunks, so that growing never moves what is already stored. A hash map
//! rehashed everything at each doubling (229,376 entries at 20,000/s came 11.5 s into a run),
//! under the lock every client task records through, and the stall showed up as a latency spike
//! in every open-loop run, against provisiond and the baseline server alike.

/// Entries per chunk: 16,384 told credentials are under 1 MiB, one allocation each.
const CHUNK: usize = 16_384;

pub struct Ledger<T> {
    /// Chunk `c` holds device indexes `c * CHUNK ..`; allocated when its first index arrives.
    by_index: Vec<Option<Box<[Option<T>]>>>,
    /// Device indexes in the order of their first SUCCESS, `CHUNK` to a vector.
    order: Vec<Vec<u64>>,
    len: usize,
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Ledger {
            by_index: Vec::new(),
            order: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Ledger<T> {
    /// What device `index` was told first, if it has succeeded.
    pub fn first(&self, index: u64) -> Option<&T> {
        let (chunk, slot) = split(index);
        self.by_index.get(chunk)?.as_ref()?[slot].as_ref()
    }

    /// Records what device `index` was told, unless it already has a record; returns whether
    /// this was its first.
    pub fn record_first(&mut self, index: u64, told: T) -> bool {
        let (chunk, slot) = split(index);
        if self.by_index.len() <= chunk {
            self.by_index.resize_with(chunk + 1, || None);
        }
        let chunk = self.by_index[chunk].get_or_insert_with(|| (0..CHUNK).map(|_| None).collect());
        if chunk[slot].is_some() {
            return false;
        }
        chunk[slot] = Some(told);
        if self.len.is_multiple_of(CHUNK) {
            self.order.push(Vec::with_capacity(CHUNK));
        }
        self.order.last_mut().expect("pushed above").push(index);
        self.len += 1;
        true
    }

    /// How many devices have a record.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index of the `n`th device to succeed (`n < len()`).
    pub fn nth_index(&self, n: usize) -> u64 {
        self.order[n / CHUNK][n % CHUNK]
    }

    /// Every record, in the order of first SUCCESS.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.order
            .iter()
            .flatten()
            .map(|&index| (index, self.first(index).expect("recorded")))
    }
}

fn split(index: u64) -> (usize, usize) {
    let index = usize::try_from(index).expect("a device index fits in memory");
    (index / CHUNK, index % CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_record_stays_and_order_is_kept_across_chunks() {
        let mut l = Ledger::default();
        let far = 3 * CHUNK as u64 + 7;
        assert!(l.record_first(far, "far"));
        assert!(l.record_first(0, "zero"));
        assert!(
            !l.record_first(far, "again"),
            "a second record for the same device is refused"
        );
        for i in 1..(CHUNK as u64 + 2) {
            assert!(l.record_first(i, "n"));
        }
        assert_eq!(l.len(), CHUNK + 3);
        assert_eq!(l.first(far), Some(&"far"));
        assert_eq!(l.first(0), Some(&"zero"));
        assert_eq!(l.first(far + 1), None);
        assert_eq!(
            l.first(100 * CHUNK as u64),
            None,
            "an index past every chunk is absent"
        );
        assert_eq!(
            (l.nth_index(0), l.nth_index(1), l.nth_index(CHUNK + 2)),
            (far, 0, CHUNK as u64 + 1)
        );
        let all: Vec<_> = l.iter().collect();
        assert_eq!(all.len(), CHUNK + 3);
        assert_eq!(all[0], (far, &"far"));
        assert_eq!(all[CHUNK + 2], (CHUNK as u64 + 1, &"n"));
    }
}
