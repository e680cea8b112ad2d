//! The protocol front ends. Thin: decode, call the engine, encode. Never import rocksdb.

pub mod coap;
pub mod http;
pub mod mqtt;
pub mod proto;
pub mod streams;
pub mod tls;
pub mod wire;

use std::net::IpAddr;
use std::time::Instant;

use crate::engine::provision::{ProvisionError, Request, Status};
use crate::engine::throttle::Failure;
use crate::engine::{Engine, Provisioned};
use crate::metrics as m;
use crate::store::record::Credentials;

/// Runs a decoded request through the brute-force protection and the engine, with the metrics
/// and the log line every transport owes. The log names the reason of a refusal, never a secret.
///
/// `source` tells the peer's address (`None` only if the socket cannot tell, and then the
/// request is not throttled). It is asked only when the protection needs it: while no source
/// has failed, and for every success, it is not asked at all.
pub async fn provision(
    engine: &Engine,
    request: Box<Request>,
    source: impl Fn() -> Option<IpAddr>,
) -> Result<Credentials, ProvisionError> {
    let transport = request.transport.as_str();
    let started = Instant::now();
    let throttle = engine.throttle();
    if throttle.watches_sources()
        && let Some(source) = source()
        && let Err(bucket) = throttle.admit(source, &request.provision_key, started)
    {
        // Refused before the secret is compared or any shard is asked: as for a wrong secret.
        m::provision_throttled(transport, bucket.as_str());
        m::request(transport, "NOT_FOUND", "throttled", started.elapsed());
        tracing::debug!(transport, %source, bucket = bucket.as_str(), "provisioning throttled");
        return Err(ProvisionError::WrongSecret);
    }
    let key = throttle.enabled().then(|| request.provision_key.clone());
    // Per-profile counts need the profile's name; an unknown key has none and is counted only
    // under reason="unknown_key".
    let Provisioned { profile, result } = engine.provision(request).await;
    let took = started.elapsed();
    let failure = match &result {
        Err(ProvisionError::UnknownKey | ProvisionError::ProfileDisabled) => Some(Failure::Key),
        Err(ProvisionError::WrongSecret) => Some(Failure::Secret),
        _ => None,
    };
    if let (Some(failure), Some(key)) = (failure, key)
        && let Some(source) = source()
        && !throttle.charge(source, &key, failure, Instant::now())
    {
        m::throttle_untracked();
    }
    match &result {
        Ok(_) => {
            m::request(transport, "SUCCESS", "none", took);
            if let Some(profile) = &profile {
                m::profile_request(&profile.name, "SUCCESS");
            }
            tracing::debug!(transport, "provisioned");
        }
        Err(error) => {
            let status = match error.status() {
                Status::NotFound => "NOT_FOUND",
                Status::Failure => "FAILURE",
            };
            m::request(transport, status, error.reason(), took);
            if let Some(profile) = &profile {
                m::profile_request(&profile.name, status);
            }
            match error.status() {
                Status::NotFound => tracing::debug!(
                    transport,
                    status,
                    reason = error.reason(),
                    "provisioning refused"
                ),
                Status::Failure => tracing::info!(
                    transport,
                    status,
                    reason = error.reason(),
                    "provisioning refused"
                ),
            }
        }
    }
    result
}

/// Counts a request that could not be parsed.
pub fn count_unparsable(transport: &'static str, started: Instant) {
    m::request(transport, "FAILURE", "unparsable", started.elapsed());
}
