//! Per-profile device counters (stored, provisioned), kept in the `profile_stats` column family.
//! Every device write stages the counter deltas in its own batch as RocksDB merge operands, so the
//! counts are exactly as durable and as atomic as the devices, and reading them is a few point
//! lookups instead of a scan: `/metrics` can show them for a fleet of millions on every scrape.

use std::collections::BTreeMap;

use foldhash::HashMap;

use rocksdb::MergeOperands;

use super::keys::{Stat, parse_stat_key};
use super::record::DeviceRecord;

/// Name under which the merge operator is registered; stored in RocksDB's OPTIONS file, so it must
/// never change.
pub const ADD_I64_MERGE: &str = "provisiond.add_i64";

/// The devices of one profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileCounts {
    /// Devices stored.
    pub stored: i64,
    /// Devices whose `provisionState` is `provisioned`.
    pub provisioned: i64,
}

/// Associative merge: the sum of the existing value and every operand (i64, little endian).
/// A value of the wrong length counts as 0 rather than failing the read of a whole column family.
pub fn add_i64(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut total = existing.map(decode_i64).unwrap_or(0);
    for operand in operands.iter() {
        total = total.wrapping_add(decode_i64(operand));
    }
    Some(total.to_le_bytes().to_vec())
}

/// Decodes a counter value.
pub fn decode_i64(bytes: &[u8]) -> i64 {
    bytes.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

/// Counter changes summed over the device writes of one batch, per profile. The batch writes
/// them as one merge operand per profile and counter when it commits, not two per device.
#[derive(Debug, Default)]
pub struct CountDeltas(HashMap<String, ProfileCounts>);

impl CountDeltas {
    /// Adds one device write: what `previous` counted is taken away, what `next` counts is added.
    pub fn add(&mut self, previous: Option<&DeviceRecord>, next: Option<&DeviceRecord>) {
        for (device, sign) in [(previous, -1), (next, 1)] {
            let Some(device) = device else { continue };
            // A profile's name is copied once per batch, not once per device, and looked up
            // once per device in the common case.
            let apply = |counts: &mut ProfileCounts| {
                counts.stored += sign;
                if device.provisioned {
                    counts.provisioned += sign;
                }
            };
            match self.0.get_mut(&device.profile) {
                Some(counts) => apply(counts),
                None => apply(self.0.entry(device.profile.clone()).or_default()),
            }
        }
    }

    /// The changes that did not cancel out, as (profile, counter, delta), in profile order.
    pub fn into_changes(self) -> Vec<(String, Stat, i64)> {
        let mut profiles: Vec<_> = self.0.into_iter().collect();
        profiles.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut changes = Vec::new();
        for (profile, counts) in profiles {
            if counts.stored != 0 {
                changes.push((profile.clone(), Stat::Stored, counts.stored));
            }
            if counts.provisioned != 0 {
                changes.push((profile, Stat::Provisioned, counts.provisioned));
            }
        }
        changes
    }
}

/// Adds one stored counter to a per-profile table.
pub fn accumulate(table: &mut BTreeMap<String, ProfileCounts>, key: &[u8], value: &[u8]) {
    if let Some((profile, stat)) = parse_stat_key(key) {
        let counts = table.entry(profile.to_string()).or_default();
        match stat {
            Stat::Stored => counts.stored = decode_i64(value),
            Stat::Provisioned => counts.provisioned = decode_i64(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changes of one device write alone.
    fn deltas(
        previous: Option<&DeviceRecord>,
        next: Option<&DeviceRecord>,
    ) -> Vec<(String, Stat, i64)> {
        let mut counts = CountDeltas::default();
        counts.add(previous, next);
        counts.into_changes()
    }

    /// The store tests' device, in `profile`, provisioned or not.
    fn device(profile: &str, provisioned: bool) -> DeviceRecord {
        DeviceRecord {
            provisioned,
            ..crate::store::tests::device("d", profile)
        }
    }

    #[test]
    fn deltas_count_creation_provisioning_reset_move_and_deletion() {
        let new = deltas(None, Some(&device("a", true)));
        assert_eq!(
            new,
            [
                ("a".into(), Stat::Stored, 1),
                ("a".into(), Stat::Provisioned, 1)
            ]
        );
        let provisioned = deltas(Some(&device("a", false)), Some(&device("a", true)));
        assert_eq!(provisioned, [("a".into(), Stat::Provisioned, 1)]);
        let reset = deltas(Some(&device("a", true)), Some(&device("a", false)));
        assert_eq!(reset, [("a".into(), Stat::Provisioned, -1)]);
        let unchanged = deltas(Some(&device("a", true)), Some(&device("a", true)));
        assert!(unchanged.is_empty());
        let moved = deltas(Some(&device("a", false)), Some(&device("b", false)));
        assert_eq!(
            moved,
            [
                ("a".into(), Stat::Stored, -1),
                ("b".into(), Stat::Stored, 1)
            ]
        );
        let deleted = deltas(Some(&device("a", true)), None);
        assert_eq!(
            deleted,
            [
                ("a".into(), Stat::Stored, -1),
                ("a".into(), Stat::Provisioned, -1)
            ]
        );
    }

    #[test]
    fn counter_values_decode_and_tolerate_garbage() {
        assert_eq!(decode_i64(&(-3i64).to_le_bytes()), -3);
        assert_eq!(decode_i64(b"bad"), 0);
    }
}
