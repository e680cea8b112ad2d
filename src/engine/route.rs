//! Which shard owns a key: `blake3(key) mod n_shards`.
//! The only place that hashes a device name or credentials id for routing.

/// Index of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// Maps keys (device names, credentials ids) to shards.
#[derive(Clone, Copy, Debug)]
pub struct Router {
    n_shards: u16,
}

impl Router {
    /// A router over `n_shards` shards (at least one).
    pub fn new(n_shards: u16) -> Router {
        assert!(
            n_shards > 0,
            "config validation guarantees at least one shard"
        );
        Router { n_shards }
    }

    /// Number of shards.
    pub fn n_shards(&self) -> u16 {
        self.n_shards
    }

    /// The shard that owns `key`. Stable across restarts and versions: the data on disk does not
    /// depend on it, but claims in flight do, and a stable hash keeps benchmarks comparable.
    pub fn shard_for(&self, key: &str) -> ShardId {
        // One shard owns every key: no hash needed (BLAKE3 of a short key was 2% of the CPU).
        if self.n_shards == 1 {
            return ShardId(0);
        }
        let hash = blake3::hash(key.as_bytes());
        let bytes: [u8; 8] = hash.as_bytes()[..8]
            .try_into()
            .expect("a blake3 hash has 32 bytes");
        ShardId((u64::from_le_bytes(bytes) % u64::from(self.n_shards)) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_stable_and_spreads_keys() {
        let router = Router::new(4);
        assert_eq!(router.shard_for("device-1"), router.shard_for("device-1"));
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[router.shard_for(&format!("device-{i}")).0 as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(Router::new(1).shard_for("anything"), ShardId(0));
    }
}
