//! Brute-force protection for provision keys and secrets: token buckets of *failed* attempts
//! per source address and per profile. Pure bookkeeping with the clock passed in; the transport
//! wrapper (`transport::provision`) asks before a request reaches the engine and charges after
//! a refusal.
//!
//! The rules, and why:
//! - Every source address has a bucket of `per_source_burst` tokens refilled at
//!   `per_source_per_minute`. An unknown key, a wrong secret or a disabled profile costs one
//!   token. A source with an empty bucket is answered NOT_FOUND before its secret is compared.
//!   Sources that never fail never get a bucket, so honest devices are never slowed by others.
//! - Every profile has a bucket of `per_profile_burst` tokens refilled at
//!   `per_profile_per_minute`, charged by wrong secrets for it from any address (a guesser
//!   spread over many addresses). When it is empty, only sources that have *themselves* failed
//!   recently are refused; a device that has never failed is still checked. So an attacker
//!   cannot lock honest devices out of their profile, and a distributed guesser gets one free
//!   attempt per fresh address, then the profile's rate.
//! - IPv6 sources are grouped by /64 (one host usually owns a whole /64).
//! - Memory is bounded: at most `max_tracked` buckets. A bucket that has refilled carries no
//!   information and is swept when the table is full (at most once a second); if the table is
//!   still full, a new source is not tracked (counted), and its attempts are only limited by
//!   its profile's bucket.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Brute-force protection settings (from `config::ThrottleConfig`).
#[derive(Clone, Copy, Debug)]
pub struct ThrottleOptions {
    /// Off: nothing is counted or refused.
    pub enabled: bool,
    /// Failed attempts one source may make at once.
    pub per_source_burst: u32,
    /// Failed attempts per minute one source regains.
    pub per_source_per_minute: u32,
    /// Wrong secrets one profile may see at once, from all sources.
    pub per_profile_burst: u32,
    /// Wrong secrets per minute one profile regains.
    pub per_profile_per_minute: u32,
    /// Most buckets (sources and profiles together) kept in memory.
    pub max_tracked: usize,
}

impl ThrottleOptions {
    /// No protection (the CLI's local mode, which has no network clients).
    pub fn disabled() -> ThrottleOptions {
        ThrottleOptions {
            enabled: false,
            per_source_burst: 1,
            per_source_per_minute: 1,
            per_profile_burst: 1,
            per_profile_per_minute: 1,
            max_tracked: 1,
        }
    }
}

/// What a failed attempt was, for charging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Unknown key or disabled profile: charged to the source.
    Key,
    /// Wrong secret for an existing profile: charged to the source and the profile.
    Secret,
}

/// Why a request was refused without being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttled {
    /// Its source address failed too often.
    Source,
    /// Its profile saw too many wrong secrets and its source failed recently.
    Profile,
}

impl Throttled {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Throttled::Source => "source",
            Throttled::Profile => "profile",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Rate {
    burst: f64,
    per_second: f64,
}

impl Rate {
    fn new(burst: u32, per_minute: u32) -> Rate {
        Rate {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute) / 60.0,
        }
    }

    /// Tokens in `bucket` at `now`.
    fn level(self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }
}

/// The bucket tables.
#[derive(Debug)]
pub struct Throttle {
    options: ThrottleOptions,
    source_rate: Rate,
    profile_rate: Rate,
    sources: DashMap<IpAddr, Bucket>,
    /// Entries of `sources`, kept beside it so that [`Throttle::watches_sources`] is one load
    /// instead of a read lock on every shard of the table.
    source_count: AtomicUsize,
    profiles: DashMap<String, Bucket>,
    last_sweep: Mutex<Option<Instant>>,
}

/// How often a full table may be swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What a source is tracked as: IPv4 as is (also when IPv4-mapped), IPv6 by its /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// What [`Throttle::take`] did with a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    /// A new bucket was created for the key (its first failure on record).
    Created,
    /// The key's bucket lost a token.
    Charged,
    /// The key has no bucket and the table is at `max_tracked`: the attempt is not recorded.
    TableFull,
}

impl Throttle {
    /// Empty tables.
    pub fn new(options: ThrottleOptions) -> Throttle {
        Throttle {
            options,
            source_rate: Rate::new(options.per_source_burst, options.per_source_per_minute),
            profile_rate: Rate::new(options.per_profile_burst, options.per_profile_per_minute),
            sources: DashMap::new(),
            source_count: AtomicUsize::new(0),
            profiles: DashMap::new(),
            last_sweep: Mutex::new(None),
        }
    }

    /// Whether protection is on.
    pub fn enabled(&self) -> bool {
        self.options.enabled
    }

    /// Whether any source has a bucket. While none has, [`Throttle::admit`] admits every request
    /// whatever its source, so a transport need not look its peer's address up (a system call
    /// per HTTP request) until then.
    pub fn watches_sources(&self) -> bool {
        self.options.enabled && self.source_count.load(Ordering::Relaxed) > 0
    }

    /// Whether a request from `source` for profile key `key` may be checked at all.
    pub fn admit(&self, source: IpAddr, key: &str, now: Instant) -> Result<(), Throttled> {
        if !self.options.enabled {
            return Ok(());
        }
        let Some(bucket) = self.sources.get(&source_key(source)).map(|b| *b) else {
            // Never failed (or long since refilled): always checked.
            return Ok(());
        };
        if self.source_rate.level(&bucket, now) < 1.0 {
            return Err(Throttled::Source);
        }
        let profile = self.profiles.get(key).map(|b| *b);
        if profile.is_some_and(|p| self.profile_rate.level(&p, now) < 1.0) {
            return Err(Throttled::Profile);
        }
        Ok(())
    }

    /// Charges a failed attempt. Returns false if the source could not be tracked (table full).
    pub fn charge(&self, source: IpAddr, key: &str, failure: Failure, now: Instant) -> bool {
        if !self.options.enabled {
            return true;
        }
        let taken = self.take(&self.sources, source_key(source), self.source_rate, now);
        if taken == Taken::Created {
            self.source_count.fetch_add(1, Ordering::Relaxed);
        }
        if failure == Failure::Secret {
            self.take(&self.profiles, key.to_string(), self.profile_rate, now);
        }
        taken != Taken::TableFull
    }

    /// Buckets in memory (sources and profiles).
    pub fn tracked(&self) -> usize {
        self.sources.len() + self.profiles.len()
    }

    /// Takes a token from `key`'s bucket, creating the bucket if needed.
    fn take<K>(&self, table: &DashMap<K, Bucket>, key: K, rate: Rate, now: Instant) -> Taken
    where
        K: Eq + std::hash::Hash,
    {
        if let Some(mut bucket) = table.get_mut(&key) {
            bucket.tokens = (rate.level(&bucket, now) - 1.0).max(0.0);
            bucket.updated = now;
            return Taken::Charged;
        }
        if self.tracked() >= self.options.max_tracked {
            self.sweep(now);
            if self.tracked() >= self.options.max_tracked {
                return Taken::TableFull;
            }
        }
        // Two first failures of one key racing here both insert; only the first one creates.
        let replaced = table.insert(
            key,
            Bucket {
                tokens: rate.burst - 1.0,
                updated: now,
            },
        );
        if replaced.is_none() {
            Taken::Created
        } else {
            Taken::Charged
        }
    }

    /// Forgets the buckets that have refilled; at most once per [`SWEEP_INTERVAL`], so that a
    /// full table of active sources does not cost a scan per request.
    fn sweep(&self, now: Instant) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| now.saturating_duration_since(t) < SWEEP_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        let (source_rate, profile_rate) = (self.source_rate, self.profile_rate);
        let mut forgotten = 0;
        self.sources.retain(|_, b| {
            let keep = source_rate.level(b, now) < source_rate.burst;
            forgotten += usize::from(!keep);
            keep
        });
        self.source_count.fetch_sub(forgotten, Ordering::Relaxed);
        self.profiles
            .retain(|_, b| profile_rate.level(b, now) < profile_rate.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ThrottleOptions {
        ThrottleOptions {
            enabled: true,
            per_source_burst: 3,
            per_source_per_minute: 60,
            per_profile_burst: 5,
            per_profile_per_minute: 60,
            max_tracked: 4,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_is_refused_after_its_burst_and_regains_one_attempt_per_refill() {
        let t = Throttle::new(options());
        let now = Instant::now();
        let guesser = ip("10.0.0.1");
        for _ in 0..3 {
            assert_eq!(t.admit(guesser, "k", now), Ok(()));
            t.charge(guesser, "k", Failure::Key, now);
        }
        assert_eq!(t.admit(guesser, "k", now), Err(Throttled::Source));
        // Another address is not affected.
        assert_eq!(t.admit(ip("10.0.0.2"), "k", now), Ok(()));
        // One per second comes back.
        let later = now + Duration::from_secs(1);
        assert_eq!(t.admit(guesser, "k", later), Ok(()));
        t.charge(guesser, "k", Failure::Key, later);
        assert_eq!(t.admit(guesser, "k", later), Err(Throttled::Source));
    }

    #[test]
    fn an_empty_profile_bucket_refuses_failed_sources_only() {
        let t = Throttle::new(ThrottleOptions {
            max_tracked: 100,
            ..options()
        });
        let now = Instant::now();
        for i in 1..=5 {
            let source = ip(&format!("10.0.1.{i}"));
            assert_eq!(t.admit(source, "k", now), Ok(()));
            t.charge(source, "k", Failure::Secret, now);
        }
        // A sixth address gets its first attempt: it has never failed.
        let fresh = ip("10.0.1.6");
        assert_eq!(t.admit(fresh, "k", now), Ok(()));
        t.charge(fresh, "k", Failure::Secret, now);
        // Then it, like the others, waits for the profile's bucket.
        assert_eq!(t.admit(fresh, "k", now), Err(Throttled::Profile));
        assert_eq!(t.admit(ip("10.0.1.1"), "k", now), Err(Throttled::Profile));
        // Another profile, and honest devices of this one, are not affected.
        assert_eq!(t.admit(ip("10.0.1.1"), "other", now), Ok(()));
        assert_eq!(t.admit(ip("10.0.9.9"), "k", now), Ok(()));
    }

    #[test]
    fn ipv6_sources_are_grouped_by_their_64_prefix() {
        let t = Throttle::new(options());
        let now = Instant::now();
        for i in 0..3 {
            t.charge(ip(&format!("2001:db8::{i}")), "k", Failure::Key, now);
        }
        assert_eq!(
            t.admit(ip("2001:db8::ffff"), "k", now),
            Err(Throttled::Source)
        );
        assert_eq!(t.admit(ip("2001:db8:0:1::1"), "k", now), Ok(()));
        assert_eq!(source_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn the_table_is_bounded_and_refilled_buckets_are_swept() {
        let t = Throttle::new(options());
        let now = Instant::now();
        for i in 0..4 {
            assert!(t.charge(ip(&format!("10.0.2.{i}")), "k", Failure::Key, now));
        }
        assert!(!t.charge(ip("10.0.2.9"), "k", Failure::Key, now));
        assert_eq!(t.tracked(), 4);
        assert!(t.watches_sources());
        // Three seconds later every bucket has refilled: the sweep makes room.
        let later = now + Duration::from_secs(3);
        assert!(t.charge(ip("10.0.2.9"), "k", Failure::Key, later));
        assert_eq!(t.tracked(), 1);
        assert_eq!(t.source_count.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn sources_are_watched_from_their_first_failure_until_swept() {
        let t = Throttle::new(options());
        let now = Instant::now();
        assert!(!t.watches_sources());
        // A wrong secret charges the profile too, but only sources make a peer worth asking.
        t.charge(ip("10.0.3.1"), "k", Failure::Secret, now);
        assert!(t.watches_sources());
        t.charge(ip("10.0.3.1"), "k", Failure::Secret, now);
        assert_eq!(t.source_count.load(Ordering::Relaxed), 1);
        // Fill the table, then let every bucket refill: the sweep forgets them all.
        for i in 2..4 {
            t.charge(ip(&format!("10.0.3.{i}")), "k", Failure::Key, now);
        }
        let later = now + Duration::from_secs(10);
        t.sweep(later);
        assert_eq!(t.tracked(), 0);
        assert!(!t.watches_sources());
    }

    #[test]
    fn disabled_protection_refuses_nothing() {
        let t = Throttle::new(ThrottleOptions::disabled());
        let now = Instant::now();
        for _ in 0..10 {
            t.charge(ip("10.0.0.1"), "k", Failure::Secret, now);
        }
        assert_eq!(t.admit(ip("10.0.0.1"), "k", now), Ok(()));
        assert_eq!(t.tracked(), 0);
        assert!(!t.watches_sources());
    }
}
