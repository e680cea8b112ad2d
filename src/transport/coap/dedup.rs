//! RFC 7252 §4.5 message deduplication: which (peer, message id) exchanges are being decided,
//! and the answers of decided ones, kept for the exchange lifetime and bounded in number.
//! Clock passed in, no IO.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// An exchange: the peer and the message id it chose.
pub(super) type Key = (SocketAddr, u16);

/// What is known of an exchange.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen<'a> {
    /// Never seen (or forgotten): decide it.
    New,
    /// Its first copy is being decided; the answer will cover this copy too.
    Deciding,
    /// Decided: the datagram to send again (for a confirmable request), or `None` for a
    /// non-confirmable one, whose duplicates are silently ignored (§4.5).
    Answered(Option<&'a [u8]>),
}

/// Exchanges being decided and answers of decided ones.
///
/// Exchanges being decided are few (each holds an in-flight permit), so they live in a set of
/// their own and are never evicted: a retransmission can never slip past one. Answers are kept
/// for `lifetime` after they were sent, at most `capacity` of them; when full, the oldest answer
/// is forgotten first and the eviction is counted.
#[derive(Debug)]
pub(super) struct Dedup {
    deciding: HashSet<Key>,
    answers: HashMap<Key, Option<Vec<u8>>>,
    /// Answer keys in the order they were stored; one entry per key of `answers`.
    order: VecDeque<(Instant, Key)>,
    capacity: usize,
    lifetime: Duration,
}

impl Dedup {
    /// Empty; at most `capacity` answers, each kept for `lifetime`.
    pub(super) fn new(capacity: usize, lifetime: Duration) -> Dedup {
        Dedup {
            deciding: HashSet::new(),
            answers: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            lifetime,
        }
    }

    /// Looks an exchange up.
    pub(super) fn seen(&mut self, key: Key, now: Instant) -> Seen<'_> {
        self.expire(now);
        if self.deciding.contains(&key) {
            return Seen::Deciding;
        }
        match self.answers.get(&key) {
            Some(answer) => Seen::Answered(answer.as_deref()),
            None => Seen::New,
        }
    }

    /// Marks an exchange as being decided.
    pub(super) fn deciding(&mut self, key: Key) {
        self.deciding.insert(key);
    }

    /// Stores the answer of an exchange (`None`: nothing to send again). Returns how many
    /// answers were evicted before their lifetime to make room.
    pub(super) fn answered(&mut self, key: Key, answer: Option<Vec<u8>>, now: Instant) -> usize {
        self.deciding.remove(&key);
        self.expire(now);
        if let Some(slot) = self.answers.get_mut(&key) {
            // Only possible if a copy was decided twice, which `seen` prevents; keep one entry.
            *slot = answer;
            return 0;
        }
        let mut evicted = 0;
        while self.answers.len() >= self.capacity {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.answers.remove(&old);
                    evicted += 1;
                }
                None => break,
            }
        }
        self.answers.insert(key, answer);
        self.order.push_back((now, key));
        evicted
    }

    /// Forgets answers older than the lifetime.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((stored, key)) = self.order.front().copied() {
            if now.saturating_duration_since(stored) < self.lifetime {
                break;
            }
            self.order.pop_front();
            self.answers.remove(&key);
        }
    }

    /// Answers kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.answers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16, mid: u16) -> Key {
        (SocketAddr::from(([127, 0, 0, 1], port)), mid)
    }

    #[test]
    fn a_copy_seen_while_deciding_and_after_is_never_new() {
        let mut dedup = Dedup::new(10, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(dedup.seen(key(1, 7), now), Seen::New);
        dedup.deciding(key(1, 7));
        assert_eq!(dedup.seen(key(1, 7), now), Seen::Deciding);
        assert_eq!(dedup.seen(key(2, 7), now), Seen::New, "another peer");
        assert_eq!(dedup.seen(key(1, 8), now), Seen::New, "another message id");
        dedup.answered(key(1, 7), Some(vec![1, 2]), now);
        assert_eq!(
            dedup.seen(key(1, 7), now),
            Seen::Answered(Some(&[1, 2][..]))
        );
        dedup.answered(key(1, 9), None, now);
        assert_eq!(dedup.seen(key(1, 9), now), Seen::Answered(None));
    }

    #[test]
    fn answers_expire_after_the_lifetime() {
        let mut dedup = Dedup::new(10, Duration::from_secs(60));
        let start = Instant::now();
        dedup.answered(key(1, 1), Some(vec![1]), start);
        dedup.answered(key(1, 2), Some(vec![2]), start + Duration::from_secs(30));
        let later = start + Duration::from_secs(60);
        assert_eq!(dedup.seen(key(1, 1), later), Seen::New);
        assert_eq!(dedup.seen(key(1, 2), later), Seen::Answered(Some(&[2][..])));
        assert_eq!(dedup.len(), 1);
    }

    #[test]
    fn a_full_cache_forgets_the_oldest_answer_but_never_an_exchange_being_decided() {
        let mut dedup = Dedup::new(2, Duration::from_secs(60));
        let now = Instant::now();
        dedup.deciding(key(9, 9));
        assert_eq!(dedup.answered(key(1, 1), Some(vec![1]), now), 0);
        assert_eq!(dedup.answered(key(1, 2), Some(vec![2]), now), 0);
        assert_eq!(dedup.answered(key(1, 3), Some(vec![3]), now), 1);
        assert_eq!(dedup.seen(key(1, 1), now), Seen::New);
        assert_eq!(dedup.seen(key(1, 3), now), Seen::Answered(Some(&[3][..])));
        assert_eq!(dedup.seen(key(9, 9), now), Seen::Deciding);
        assert_eq!(dedup.len(), 2);
    }
}
