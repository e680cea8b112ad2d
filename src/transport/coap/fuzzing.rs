//! Entry point for the `coap_message` fuzz target (`fuzz/`): drives the endpoint state machine
//! with a sequence of datagrams, exactly as the socket loop does, minus the socket and the
//! engine. Every request that would be decided is decoded as the decision task would and
//! answered with a fixed reply, so block-wise transfers, dedup and the reply encoder run too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::CoapOptions;
use super::endpoint::{Action, Endpoint};
use super::message::{Reply, code};
use crate::engine::provision::Transport;
use crate::transport::proto;

/// Feeds `datagrams` from two peers (alternating by the first byte) through one endpoint.
/// Must never panic, whatever the bytes.
pub fn run(datagrams: &[&[u8]]) {
    let options = CoapOptions {
        max_in_flight: 4,
        exchange_lifetime: Duration::from_secs(247),
        dedup_cache_entries: 16,
        max_request_bytes: 4096,
        shutdown_timeout: Duration::from_secs(1),
    };
    let mut endpoint = Endpoint::new(&options);
    let peers: [SocketAddr; 2] = [
        "127.0.0.1:5683".parse().expect("a socket address"),
        "127.0.0.2:5684".parse().expect("a socket address"),
    ];
    let mut now = Instant::now();
    for datagram in datagrams {
        let peer = peers[datagram.first().map_or(0, |b| usize::from(b & 1))];
        now += Duration::from_millis(10);
        if let Action::Decide(job) = endpoint.datagram(peer, datagram, now) {
            let reply = match proto::decode_payload(&job.payload, Transport::Coap) {
                Ok(_) => Reply::json(code::CREATED, "{\"status\":\"SUCCESS\"}".into()),
                Err(_) => Reply::json(code::BAD_REQUEST, "{\"status\":\"FAILURE\"}".into()),
            };
            endpoint.decided(&job.exchange, reply, job.block1, job.block2_szx, now);
        }
    }
    endpoint.sweep(now + Duration::from_secs(600));
}
