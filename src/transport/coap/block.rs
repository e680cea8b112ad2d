//! RFC 7959 block-wise transfers: the Block1/Block2 option value, the Block1 request bodies being
//! assembled, and the response bodies kept for Block2 follow-ups. Bounded, clock passed in, no IO.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The largest block size exponent on UDP: 2^(6+4) = 1024 bytes. 7 is BERT, TCP only.
pub(super) const MAX_SZX: u8 = 6;

/// A Block1 or Block2 option value: block number, more flag, size exponent (RFC 7959 §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Block {
    /// NUM: which block, in units of this block's size (20 bits at most).
    pub(super) num: u32,
    /// M: more blocks follow.
    pub(super) more: bool,
    /// SZX: the block size is 2^(szx+4).
    pub(super) szx: u8,
}

impl Block {
    /// Decodes an option value: an unsigned integer of 0 to 3 bytes.
    pub(super) fn parse(value: &[u8]) -> Option<Block> {
        if value.len() > 3 {
            return None;
        }
        let scalar = value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        Some(Block {
            num: scalar >> 4,
            more: scalar & 0x8 != 0,
            szx: (scalar & 0x7) as u8,
        })
    }

    /// Encodes the option value, minimal length.
    pub(super) fn encode(self) -> Vec<u8> {
        let scalar = (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx & 0x7);
        super::message::uint_bytes(scalar)
    }

    /// Block size in bytes.
    pub(super) fn size(self) -> usize {
        16 << self.szx
    }

    /// Offset of this block in the whole body.
    pub(super) fn offset(self) -> usize {
        self.num as usize * self.size()
    }
}

/// What became of one Block1 block.
#[derive(Debug)]
pub(super) enum Accepted {
    /// Stored; more blocks are expected (answer 2.31 Continue).
    Continue,
    /// The last block: the whole body, and the in-flight permit its transfer held.
    Complete {
        /// The assembled request body.
        body: Vec<u8>,
        /// Held until the request is decided.
        permit: OwnedSemaphorePermit,
    },
    /// The body would exceed the limit (answer 4.13); the transfer is dropped.
    TooLarge,
    /// The block does not continue a transfer this server holds (answer 4.08).
    Incomplete,
    /// A block whose payload does not match its size (answer 4.00); the transfer is dropped.
    WrongSize,
    /// No in-flight permit left for a new transfer (answer 5.03).
    Busy,
}

/// Request bodies being assembled from Block1 transfers, at most one per peer.
///
/// Each transfer holds an in-flight permit from its first block until its last block has been
/// decided (or it expires), so `coap.max_in_flight` also bounds the memory held here to
/// `max_in_flight × max_request_bytes`.
#[derive(Debug)]
pub(super) struct Assemblies {
    by_peer: HashMap<SocketAddr, Assembly>,
    max_body_bytes: usize,
    idle_lifetime: Duration,
}

#[derive(Debug)]
struct Assembly {
    body: Vec<u8>,
    updated: Instant,
    permit: OwnedSemaphorePermit,
}

impl Assemblies {
    /// No transfers; bodies up to `max_body_bytes`; a transfer idle for `idle_lifetime` is dropped.
    pub(super) fn new(max_body_bytes: usize, idle_lifetime: Duration) -> Assemblies {
        Assemblies {
            by_peer: HashMap::new(),
            max_body_bytes,
            idle_lifetime,
        }
    }

    /// Takes one block from `peer`. Block 0 starts a new transfer (replacing any older one of the
    /// same peer, whose client evidently gave up on it); later blocks must continue where the
    /// transfer stands.
    pub(super) fn accept(
        &mut self,
        peer: SocketAddr,
        block: Block,
        payload: &[u8],
        permits: &Arc<Semaphore>,
        now: Instant,
    ) -> Accepted {
        // RFC 7959 §2.3: every block but the last carries exactly the block size.
        let size_ok = if block.more {
            payload.len() == block.size()
        } else {
            payload.len() <= block.size()
        };
        if !size_ok {
            self.by_peer.remove(&peer);
            return Accepted::WrongSize;
        }
        if block.num == 0 {
            // Drop the old transfer first, so that its permit can serve the new one.
            self.by_peer.remove(&peer);
            if payload.len() > self.max_body_bytes {
                return Accepted::TooLarge;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                return Accepted::Busy;
            };
            if !block.more {
                return Accepted::Complete {
                    body: payload.to_vec(),
                    permit,
                };
            }
            self.by_peer.insert(
                peer,
                Assembly {
                    body: payload.to_vec(),
                    updated: now,
                    permit,
                },
            );
            return Accepted::Continue;
        }
        let Some(assembly) = self.by_peer.get_mut(&peer) else {
            return Accepted::Incomplete;
        };
        if block.offset() != assembly.body.len() {
            self.by_peer.remove(&peer);
            return Accepted::Incomplete;
        }
        if assembly.body.len() + payload.len() > self.max_body_bytes {
            self.by_peer.remove(&peer);
            return Accepted::TooLarge;
        }
        assembly.body.extend_from_slice(payload);
        assembly.updated = now;
        if block.more {
            return Accepted::Continue;
        }
        match self.by_peer.remove(&peer) {
            Some(done) => Accepted::Complete {
                body: done.body,
                permit: done.permit,
            },
            None => Accepted::Incomplete,
        }
    }

    /// Forgets the transfer of `peer`, if any (its client sent something that ends it).
    pub(super) fn forget(&mut self, peer: SocketAddr) {
        self.by_peer.remove(&peer);
    }

    /// Drops transfers idle for longer than the lifetime, releasing their permits.
    pub(super) fn expire(&mut self, now: Instant) {
        let lifetime = self.idle_lifetime;
        self.by_peer
            .retain(|_, a| now.saturating_duration_since(a.updated) < lifetime);
    }

    /// Drops every transfer (at shutdown).
    pub(super) fn clear(&mut self) {
        self.by_peer.clear();
    }

    /// Transfers in progress.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_peer.len()
    }
}

/// A response too large for one block, kept so that Block2 follow-ups can fetch the rest.
#[derive(Clone, Debug)]
pub(super) struct Body {
    /// The response code of every block.
    pub(super) code: u8,
    /// The Content-Format of every block.
    pub(super) content_format: Option<u16>,
    /// The whole payload.
    pub(super) payload: Vec<u8>,
    /// Lets the client check that every block belongs to one representation.
    pub(super) etag: [u8; 4],
}

/// Response bodies awaiting Block2 follow-ups, at most one per peer and `capacity` in all
/// (the oldest is forgotten first).
#[derive(Debug)]
pub(super) struct Bodies {
    by_peer: HashMap<SocketAddr, (Instant, Body)>,
    capacity: usize,
    lifetime: Duration,
    next_etag: u32,
}

impl Bodies {
    /// Empty; at most `capacity` bodies, each kept for `lifetime`.
    pub(super) fn new(capacity: usize, lifetime: Duration) -> Bodies {
        Bodies {
            by_peer: HashMap::new(),
            capacity: capacity.max(1),
            lifetime,
            next_etag: rand::random(),
        }
    }

    /// Keeps `payload` for `peer` and returns the ETag its blocks carry.
    pub(super) fn keep(
        &mut self,
        peer: SocketAddr,
        code: u8,
        content_format: Option<u16>,
        payload: Vec<u8>,
        now: Instant,
    ) -> [u8; 4] {
        self.next_etag = self.next_etag.wrapping_add(1);
        let etag = self.next_etag.to_be_bytes();
        if !self.by_peer.contains_key(&peer) && self.by_peer.len() >= self.capacity {
            // A linear scan: the store holds at most `max_in_flight` bodies.
            let oldest = self
                .by_peer
                .iter()
                .min_by_key(|(_, (stored, _))| *stored)
                .map(|(peer, _)| *peer);
            if let Some(oldest) = oldest {
                self.by_peer.remove(&oldest);
            }
        }
        let body = Body {
            code,
            content_format,
            payload,
            etag,
        };
        self.by_peer.insert(peer, (now, body));
        etag
    }

    /// The body kept for `peer`, if it has not expired.
    pub(super) fn get(&self, peer: SocketAddr, now: Instant) -> Option<&Body> {
        self.by_peer
            .get(&peer)
            .filter(|(stored, _)| now.saturating_duration_since(*stored) < self.lifetime)
            .map(|(_, body)| body)
    }

    /// Drops expired bodies.
    pub(super) fn expire(&mut self, now: Instant) {
        let lifetime = self.lifetime;
        self.by_peer
            .retain(|_, (stored, _)| now.saturating_duration_since(*stored) < lifetime);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn block(num: u32, more: bool, szx: u8) -> Block {
        Block { num, more, szx }
    }

    #[test]
    fn block_values_round_trip_in_minimal_bytes() {
        assert_eq!(block(0, false, 0).encode(), Vec::<u8>::new());
        assert_eq!(block(0, true, 2).encode(), vec![0x0a]);
        assert_eq!(block(1, false, 6).encode(), vec![0x16]);
        assert_eq!(block(0xfffff, true, 6).encode(), vec![0xff, 0xff, 0xfe]);
        for b in [
            block(0, true, 2),
            block(300, false, 6),
            block(0xfffff, true, 0),
        ] {
            assert_eq!(Block::parse(&b.encode()), Some(b));
        }
        assert_eq!(Block::parse(&[1, 2, 3, 4]), None, "more than 3 bytes");
        assert_eq!(block(3, true, 2).offset(), 192);
    }

    #[test]
    fn blocks_assemble_in_order_and_hold_one_permit() {
        let permits = Arc::new(Semaphore::new(1));
        let mut assemblies = Assemblies::new(1000, Duration::from_secs(60));
        let now = Instant::now();
        let p = peer(1);
        let first = assemblies.accept(p, block(0, true, 0), &[1; 16], &permits, now);
        assert!(matches!(first, Accepted::Continue));
        assert_eq!(
            permits.available_permits(),
            0,
            "the transfer holds the permit"
        );
        let other = assemblies.accept(peer(2), block(0, true, 0), &[1; 16], &permits, now);
        assert!(matches!(other, Accepted::Busy));
        let second = assemblies.accept(p, block(1, true, 0), &[2; 16], &permits, now);
        assert!(matches!(second, Accepted::Continue));
        match assemblies.accept(p, block(2, false, 0), &[3; 5], &permits, now) {
            Accepted::Complete { body, permit } => {
                assert_eq!(body.len(), 37);
                assert_eq!(&body[16..32], &[2; 16]);
                drop(permit);
            }
            other => panic!("expected the whole body, got {other:?}"),
        }
        assert_eq!(permits.available_permits(), 1);
        assert_eq!(assemblies.len(), 0);
    }

    #[test]
    fn gaps_oversize_and_wrong_sizes_end_the_transfer() {
        let permits = Arc::new(Semaphore::new(4));
        let mut assemblies = Assemblies::new(40, Duration::from_secs(60));
        let now = Instant::now();
        let p = peer(1);
        let orphan = assemblies.accept(p, block(1, true, 0), &[0; 16], &permits, now);
        assert!(matches!(orphan, Accepted::Incomplete));
        assemblies.accept(p, block(0, true, 0), &[0; 16], &permits, now);
        let gap = assemblies.accept(p, block(2, true, 0), &[0; 16], &permits, now);
        assert!(matches!(gap, Accepted::Incomplete));
        assert_eq!(assemblies.len(), 0);
        assemblies.accept(p, block(0, true, 0), &[0; 16], &permits, now);
        assemblies.accept(p, block(1, true, 0), &[0; 16], &permits, now);
        let big = assemblies.accept(p, block(2, true, 0), &[0; 16], &permits, now);
        assert!(matches!(big, Accepted::TooLarge));
        let short = assemblies.accept(p, block(0, true, 0), &[0; 15], &permits, now);
        assert!(matches!(short, Accepted::WrongSize));
        assert_eq!(assemblies.len(), 0);
        assert_eq!(permits.available_permits(), 4, "every permit came back");
    }

    #[test]
    fn idle_transfers_expire_and_release_their_permits() {
        let permits = Arc::new(Semaphore::new(1));
        let mut assemblies = Assemblies::new(1000, Duration::from_secs(10));
        let start = Instant::now();
        assemblies.accept(peer(1), block(0, true, 0), &[0; 16], &permits, start);
        assemblies.expire(start + Duration::from_secs(9));
        assert_eq!(permits.available_permits(), 0);
        assemblies.expire(start + Duration::from_secs(10));
        assert_eq!(permits.available_permits(), 1);
    }

    #[test]
    fn kept_bodies_are_bounded_and_expire() {
        let mut bodies = Bodies::new(2, Duration::from_secs(10));
        let start = Instant::now();
        let a = bodies.keep(peer(1), 0x41, None, vec![1], start);
        bodies.keep(peer(2), 0x41, None, vec![2], start + Duration::from_secs(1));
        bodies.keep(peer(3), 0x41, None, vec![3], start + Duration::from_secs(2));
        assert!(
            bodies.get(peer(1), start).is_none(),
            "the oldest went first"
        );
        assert_eq!(bodies.get(peer(3), start).map(|b| b.payload[0]), Some(3));
        let b = bodies.keep(peer(3), 0x41, None, vec![4], start + Duration::from_secs(2));
        assert_ne!(a, b, "every body gets its own ETag");
        assert!(
            bodies
                .get(peer(2), start + Duration::from_secs(11))
                .is_none()
        );
        bodies.expire(start + Duration::from_secs(12));
        assert!(bodies.get(peer(3), start).is_none());
    }
}
