//! Key layout of the column families (also in ARCHITECTURE.md).
//!
//! | column family | key | value |
//! |---|---|---|
//! | `profiles` | profile name | `ProfileRecord` |
//! | `devices` | device name | `DeviceRecord` |
//! | `credentials` | credentials id | `CredentialsOwner` |
//! | `profile_devices` | profile name, 0x00, device name | empty |
//! | `profile_stats` | profile name, 0x00, `s` (stored) or `p` (provisioned) | i64 LE, merged by addition |
//! | `profile_stats` | 0x00 `counted` | marker: the counters cover every device |
//!
//! Names never contain control characters (validated before they reach the store), so 0x00 is a
//! safe separator and a prefix scan of `profile name, 0x00` lists exactly that profile's devices in
//! name order.

/// Column family of profiles by name.
pub const CF_PROFILES: &str = "profiles";
/// Column family of devices by name.
pub const CF_DEVICES: &str = "devices";
/// Column family mapping a credentials id to its owning device.
pub const CF_CREDENTIALS: &str = "credentials";
/// Column family indexing devices per profile, for listing and export.
pub const CF_PROFILE_DEVICES: &str = "profile_devices";

/// Column family of per-profile device counters, kept in the same batches as the devices.
pub const CF_PROFILE_STATS: &str = "profile_stats";

/// Every column family, in the order they are opened.
pub const ALL_CFS: [&str; 5] = [
    CF_PROFILES,
    CF_DEVICES,
    CF_CREDENTIALS,
    CF_PROFILE_DEVICES,
    CF_PROFILE_STATS,
];

/// Marker key in `profile_stats`: present once the counters were built from the devices. It starts
/// with 0x00, which no profile name does.
pub const STATS_COUNTED_KEY: &[u8] = b"\0counted";

/// Which per-profile counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Devices stored in the profile.
    Stored,
    /// Of those, devices whose `provisionState` is `provisioned`.
    Provisioned,
}

impl Stat {
    fn tag(self) -> u8 {
        match self {
            Stat::Stored => b's',
            Stat::Provisioned => b'p',
        }
    }
}

/// Key of a per-profile counter.
pub fn stat_key(profile: &str, stat: Stat) -> Vec<u8> {
    let mut key = profile_prefix(profile);
    key.push(stat.tag());
    key
}

/// The profile and counter of a `profile_stats` key (`None` for the marker or a foreign key).
pub fn parse_stat_key(key: &[u8]) -> Option<(&str, Stat)> {
    let (&tag, rest) = key.split_last()?;
    let profile = rest.strip_suffix(&[0])?;
    let stat = match tag {
        b's' => Stat::Stored,
        b'p' => Stat::Provisioned,
        _ => return None,
    };
    if profile.is_empty() {
        return None;
    }
    Some((std::str::from_utf8(profile).ok()?, stat))
}

/// Key of a device in the per-profile index.
pub fn profile_device_key(profile: &str, device: &str) -> Vec<u8> {
    let mut key = profile_prefix(profile);
    key.extend_from_slice(device.as_bytes());
    key
}

/// The prefix shared by every index key of one profile.
pub fn profile_prefix(profile: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(profile.len() + 1 + 32);
    key.extend_from_slice(profile.as_bytes());
    key.push(0);
    key
}

/// The device name part of a per-profile index key, given that key's profile prefix length.
pub fn device_from_profile_key(key: &[u8], prefix_len: usize) -> Option<&str> {
    key.get(prefix_len..)
        .and_then(|rest| std::str::from_utf8(rest).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_index_key_is_prefix_then_name() {
        let key = profile_device_key("fleet", "dev-1");
        assert_eq!(key, b"fleet\0dev-1");
        assert!(key.starts_with(&profile_prefix("fleet")));
        assert!(!key.starts_with(&profile_prefix("flee")));
        assert_eq!(device_from_profile_key(&key, 6), Some("dev-1"));
    }

    #[test]
    fn stat_keys_round_trip_and_the_marker_is_no_stat() {
        let key = stat_key("fleet", Stat::Provisioned);
        assert_eq!(key, b"fleet\0p");
        assert_eq!(parse_stat_key(&key), Some(("fleet", Stat::Provisioned)));
        assert_eq!(
            parse_stat_key(&stat_key("a", Stat::Stored)),
            Some(("a", Stat::Stored))
        );
        assert_eq!(parse_stat_key(STATS_COUNTED_KEY), None);
    }
}
