//! The CoAP server endpoint as a state machine: a datagram in, an action out (send, ignore, or
//! decide through the engine). It owns the dedup cache, the block-wise state and the in-flight
//! permits; the socket loop in `mod.rs` owns it. Clock passed in, no IO.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use coap_lite::Packet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::block::{Accepted, Assemblies, Block, Bodies, MAX_SZX};
use super::dedup::{Dedup, Seen};
use super::message::{self, Exchange, Inbound, Reply, code, option};
use super::{CoapOptions, RETRY_AFTER_S};
use crate::metrics as m;

/// What the socket loop must do with a datagram.
#[derive(Debug)]
pub(super) enum Action {
    /// Nothing.
    Nothing,
    /// Send these bytes back to the peer.
    Send(Vec<u8>),
    /// Decide this request through the engine, then hand the reply to [`Endpoint::decided`].
    Decide(Job),
}

/// A request to decide: its whole body and what its reply needs.
#[derive(Debug)]
pub(super) struct Job {
    /// Who asked.
    pub(super) exchange: Exchange,
    /// The request body (assembled, if it came block-wise).
    pub(super) payload: Vec<u8>,
    /// Echoed in the reply to the last block of a block-wise request.
    pub(super) block1: Option<Block>,
    /// Block size exponent of the reply, should it need Block2.
    pub(super) block2_szx: u8,
    /// Held while the request is in flight.
    pub(super) permit: OwnedSemaphorePermit,
}

/// The dedup cache, the block-wise state and the in-flight permits of one CoAP socket.
#[derive(Debug)]
pub(super) struct Endpoint {
    dedup: Dedup,
    assemblies: Assemblies,
    bodies: Bodies,
    permits: Arc<Semaphore>,
    max_request_bytes: usize,
    next_message_id: u16,
}

impl Endpoint {
    /// A fresh endpoint with the configured bounds.
    pub(super) fn new(options: &CoapOptions) -> Endpoint {
        Endpoint {
            dedup: Dedup::new(options.dedup_cache_entries, options.exchange_lifetime),
            assemblies: Assemblies::new(options.max_request_bytes, options.exchange_lifetime),
            bodies: Bodies::new(options.max_in_flight, options.exchange_lifetime),
            permits: Arc::new(Semaphore::new(options.max_in_flight)),
            max_request_bytes: options.max_request_bytes,
            next_message_id: rand::random(),
        }
    }

    /// Handles one datagram from `peer`.
    pub(super) fn datagram(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) -> Action {
        let packet = match message::classify(datagram) {
            Inbound::Request(packet) => packet,
            Inbound::Reset {
                message_id,
                malformed,
            } => {
                if malformed {
                    m::coap_malformed();
                    tracing::debug!(%peer, "malformed CoAP message rejected with a Reset");
                }
                return Action::Send(message::reset(message_id));
            }
            Inbound::Ignore { malformed } => {
                if malformed {
                    m::coap_malformed();
                    tracing::debug!(%peer, len = datagram.len(), "malformed CoAP datagram dropped");
                }
                return Action::Nothing;
            }
        };
        let exchange = Exchange::of(peer, &packet);
        let key = (peer, exchange.message_id);
        match self.dedup.seen(key, now) {
            Seen::New => {}
            Seen::Deciding => {
                m::coap_retransmission();
                return Action::Nothing;
            }
            Seen::Answered(answer) => {
                m::coap_retransmission();
                return match (exchange.confirmable, answer) {
                    (true, Some(bytes)) => Action::Send(bytes.to_vec()),
                    _ => Action::Nothing,
                };
            }
        }
        match self.route(&exchange, &packet, now) {
            Routed::Reply(reply, block2_szx) => {
                let bytes = self.encode(&exchange, reply, block2_szx, now);
                self.remember(&exchange, &bytes, now);
                Action::Send(bytes)
            }
            Routed::Reject => {
                // RFC 7252 §5.4.1: a confirmable request with an unrecognized critical option
                // gets 4.02 (handled as a reply); a non-confirmable one is rejected, i.e. ignored.
                Action::Nothing
            }
            Routed::Decide(job) => {
                self.dedup.deciding(key);
                Action::Decide(job)
            }
        }
    }

    /// Encodes the decided reply of `job`, remembers it for retransmissions, and returns it.
    pub(super) fn decided(
        &mut self,
        exchange: &Exchange,
        mut reply: Reply,
        block1: Option<Block>,
        block2_szx: u8,
        now: Instant,
    ) -> Vec<u8> {
        reply.block1 = block1;
        let bytes = self.encode(exchange, reply, block2_szx, now);
        self.remember(exchange, &bytes, now);
        bytes
    }

    /// Forgets what has outlived the exchange lifetime.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.dedup.expire(now);
        self.assemblies.expire(now);
        self.bodies.expire(now);
    }

    /// Drops every half-received block-wise request (at shutdown).
    pub(super) fn drop_transfers(&mut self) {
        self.assemblies.clear();
    }

    /// Decides what a well-formed, new request gets.
    fn route(&mut self, exchange: &Exchange, packet: &Packet, now: Instant) -> Routed {
        let peer = exchange.peer;
        if message::first_option(packet, option::PROXY_URI).is_some()
            || message::first_option(packet, option::PROXY_SCHEME).is_some()
        {
            return Routed::reply(Reply::empty(code::PROXYING_NOT_SUPPORTED));
        }
        if let Some(number) = message::unrecognized_critical_option(packet) {
            return self.bad_option(exchange, format!("unsupported critical option {number}"));
        }
        if !message::is_provision_path(packet) {
            return Routed::reply(Reply::empty(code::NOT_FOUND));
        }
        if u8::from(packet.header.code) != code::POST {
            return Routed::reply(Reply::refusal(
                code::METHOD_NOT_ALLOWED,
                "method not allowed; use POST",
            ));
        }
        let block2 = match message::first_option(packet, option::BLOCK2).map(Block::parse) {
            None => None,
            Some(Some(block)) if block.szx <= MAX_SZX => Some(block),
            Some(_) => return self.bad_option(exchange, "invalid Block2 option"),
        };
        if let Some(block) = block2.filter(|b| b.num > 0) {
            return self.follow_up(peer, block, now);
        }
        let block1 = match message::first_option(packet, option::BLOCK1).map(Block::parse) {
            None => None,
            Some(Some(block)) if block.szx <= MAX_SZX => Some(block),
            Some(_) => return self.bad_option(exchange, "invalid Block1 option"),
        };
        // The reply's block size: the client's Block2 wish; else, for a device that sends in
        // small blocks, the same size (it likely cannot take larger ones); else 1024.
        let block2_szx = block2.or(block1).map_or(MAX_SZX, |b| b.szx);
        let Some(block1) = block1 else {
            return self.whole_request(exchange, packet, block2_szx);
        };
        // RFC 7959 §4: Size1 in the first block announces the whole body; refuse it at once.
        let announced = message::first_option(packet, option::SIZE1).and_then(message::uint);
        if block1.num == 0 && announced.is_some_and(|size| size as usize > self.max_request_bytes) {
            self.assemblies.forget(peer);
            return Routed::reply(self.too_large());
        }
        match self
            .assemblies
            .accept(peer, block1, &packet.payload, &self.permits, now)
        {
            Accepted::Continue => Routed::reply(Reply {
                block1: Some(Block {
                    more: true,
                    ..block1
                }),
                ..Reply::empty(code::CONTINUE)
            }),
            Accepted::Complete { body, permit } => Routed::Decide(Job {
                exchange: exchange.clone(),
                payload: body,
                block1: Some(block1),
                block2_szx,
                permit,
            }),
            Accepted::TooLarge => Routed::reply(self.too_large()),
            Accepted::Incomplete => Routed::reply(Reply::refusal(
                code::REQUEST_ENTITY_INCOMPLETE,
                format!(
                    "block {} does not continue a block-wise request this server holds; start again from block 0",
                    block1.num
                ),
            )),
            Accepted::WrongSize => Routed::reply(Reply::refusal(
                code::BAD_REQUEST,
                format!(
                    "block {} carries {} bytes, which does not match its block size of {}",
                    block1.num,
                    packet.payload.len(),
                    block1.size()
                ),
            )),
            Accepted::Busy => Routed::reply(overloaded()),
        }
    }

    /// A request that came in one datagram.
    fn whole_request(&mut self, exchange: &Exchange, packet: &Packet, block2_szx: u8) -> Routed {
        if packet.payload.len() > self.max_request_bytes {
            return Routed::reply(self.too_large());
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Routed::reply(overloaded());
        };
        Routed::Decide(Job {
            exchange: exchange.clone(),
            payload: packet.payload.clone(),
            block1: None,
            block2_szx,
            permit,
        })
    }

    /// A Block2 follow-up: the next block of a response kept in `bodies`.
    fn follow_up(&mut self, peer: SocketAddr, block: Block, now: Instant) -> Routed {
        let Some(body) = self.bodies.get(peer, now) else {
            return Routed::reply(Reply::refusal(
                code::REQUEST_ENTITY_INCOMPLETE,
                "no block-wise response is pending for this client; send the request again",
            ));
        };
        let start = block.offset();
        if start >= body.payload.len() {
            return Routed::reply(Reply::refusal(
                code::BAD_OPTION,
                format!("block {} is beyond the end of the response", block.num),
            ));
        }
        let end = (start + block.size()).min(body.payload.len());
        let reply = Reply {
            code: body.code,
            content_format: body.content_format,
            payload: body.payload[start..end].to_vec(),
            block2: Some(Block {
                more: end < body.payload.len(),
                ..block
            }),
            size2: Some(body.payload.len() as u32),
            etag: Some(body.etag),
            ..Reply::default()
        };
        Routed::Reply(reply, block.szx)
    }

    /// 4.02 for a confirmable request; a non-confirmable one is rejected (RFC 7252 §5.4.1).
    fn bad_option(&self, exchange: &Exchange, message: impl Into<String>) -> Routed {
        if exchange.confirmable {
            Routed::reply(Reply::refusal(code::BAD_OPTION, message))
        } else {
            Routed::Reject
        }
    }

    /// 4.13 with Size1 naming the limit (RFC 7959 §2.9.3).
    fn too_large(&self) -> Reply {
        Reply {
            size1: Some(self.max_request_bytes as u32),
            ..Reply::refusal(
                code::REQUEST_ENTITY_TOO_LARGE,
                format!(
                    "request body exceeds the limit of {} bytes",
                    self.max_request_bytes
                ),
            )
        }
    }

    /// Encodes a reply; a payload larger than one block is kept and its first block sent
    /// (RFC 7959 Block2), the rest served by [`Endpoint::follow_up`].
    fn encode(
        &mut self,
        exchange: &Exchange,
        mut reply: Reply,
        block2_szx: u8,
        now: Instant,
    ) -> Vec<u8> {
        let block = Block {
            num: 0,
            more: true,
            szx: block2_szx,
        };
        if reply.block2.is_none() && reply.payload.len() > block.size() {
            let whole = std::mem::take(&mut reply.payload);
            reply.payload = whole[..block.size()].to_vec();
            reply.size2 = Some(whole.len() as u32);
            reply.block2 = Some(block);
            let etag =
                self.bodies
                    .keep(exchange.peer, reply.code, reply.content_format, whole, now);
            reply.etag = Some(etag);
        }
        self.next_message_id = self.next_message_id.wrapping_add(1);
        message::encode(exchange, &reply, self.next_message_id)
    }

    /// Stores the answer of an exchange for its retransmissions.
    fn remember(&mut self, exchange: &Exchange, bytes: &[u8], now: Instant) {
        // A non-confirmable request's duplicates are ignored (RFC 7252 §4.5), so only the fact
        // that it was answered is kept.
        let answer = exchange.confirmable.then(|| bytes.to_vec());
        let evicted = self
            .dedup
            .answered((exchange.peer, exchange.message_id), answer, now);
        for _ in 0..evicted {
            m::coap_dedup_eviction();
        }
    }
}

/// Where a new request goes.
enum Routed {
    /// Answer at once, with this Block2 size exponent should the payload need blocks.
    Reply(Reply, u8),
    /// Reject a non-confirmable message: no answer.
    Reject,
    /// Decide through the engine.
    Decide(Job),
}

impl Routed {
    fn reply(reply: Reply) -> Routed {
        Routed::Reply(reply, MAX_SZX)
    }
}

/// 5.03 with Max-Age: too many requests in flight.
fn overloaded() -> Reply {
    m::coap_overload();
    Reply {
        max_age: Some(RETRY_AFTER_S),
        ..Reply::refusal(
            code::SERVICE_UNAVAILABLE,
            format!("too many CoAP requests in flight; retry after {RETRY_AFTER_S} s"),
        )
    }
}
