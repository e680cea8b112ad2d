//! CoAP `POST /api/v1/provision`, confirmable, from one UDP socket per worker (messages built
//! and read with coap-lite). A lost datagram is retransmitted as RFC 7252 §4.2 says: after 2 s,
//! then doubling, at most 4 times, within the request timeout.

use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use tokio::net::UdpSocket;

use super::{Outcome, io_reason};

/// RFC 7252 ACK_TIMEOUT.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// RFC 7252 MAX_RETRANSMIT.
const MAX_RETRANSMIT: u32 = 4;

/// One UDP socket, bound on first use.
#[derive(Debug)]
pub struct CoapClient {
    addr: SocketAddr,
    socket: Option<UdpSocket>,
    message_id: u16,
    token: u32,
}

impl CoapClient {
    /// A client for `addr`; `seed` spreads message ids and tokens across workers.
    pub fn new(addr: SocketAddr, seed: u32) -> CoapClient {
        CoapClient {
            addr,
            socket: None,
            message_id: seed as u16,
            token: seed.wrapping_mul(0x9E37_79B9),
        }
    }

    /// Sends one request and waits for its piggybacked answer.
    pub async fn provision(&mut self, body: &[u8], timeout: Duration) -> Outcome {
        if self.socket.is_none() {
            let bind: SocketAddr = if self.addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("address")
            } else {
                "[::]:0".parse().expect("address")
            };
            let socket = match UdpSocket::bind(bind).await {
                Ok(s) => s,
                Err(e) => return Outcome::ConnectFailed(io_reason(&e)),
            };
            if let Err(e) = socket.connect(self.addr).await {
                return Outcome::ConnectFailed(io_reason(&e));
            }
            self.socket = Some(socket);
        }
        self.message_id = self.message_id.wrapping_add(1);
        self.token = self.token.wrapping_add(1);
        let token = self.token.to_be_bytes().to_vec();
        let mut packet = Packet::new();
        packet.header.set_type(MessageType::Confirmable);
        packet.header.code = MessageClass::Request(RequestType::Post);
        packet.header.message_id = self.message_id;
        packet.set_token(token.clone());
        for segment in ["api", "v1", "provision"] {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        packet.set_content_format(coap_lite::ContentFormat::ApplicationJSON);
        packet.payload = body.to_vec();
        let datagram = match packet.to_bytes() {
            Ok(d) => d,
            Err(e) => return Outcome::Failed(format!("cannot encode: {e:?}")),
        };
        let socket = self.socket.as_ref().expect("bound above");
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = ACK_TIMEOUT;
        let mut buf = vec![0u8; 65_536];
        for _attempt in 0..=MAX_RETRANSMIT {
            if let Err(e) = socket.send(&datagram).await {
                return Outcome::Failed(io_reason(&e));
            }
            let until = (tokio::time::Instant::now() + wait).min(deadline);
            loop {
                match tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Outcome::Failed(io_reason(&e)),
                    Ok(Ok(n)) => {
                        let Ok(reply) = Packet::from_bytes(&buf[..n]) else {
                            continue;
                        };
                        if reply.header.message_id != self.message_id || reply.get_token() != token
                        {
                            // A late answer to an earlier, timed-out request.
                            continue;
                        }
                        return answer(&reply);
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            wait *= 2;
        }
        Outcome::Failed("timeout".into())
    }
}

fn answer(reply: &Packet) -> Outcome {
    match reply.header.code {
        MessageClass::Response(ResponseType::Created) => Outcome::from_body(&reply.payload),
        MessageClass::Response(ResponseType::BadRequest) => {
            match Outcome::from_body(&reply.payload) {
                Outcome::Success(_) => Outcome::Refused("coap 4.00 with a SUCCESS body".into()),
                other => other,
            }
        }
        code => Outcome::Refused(format!("coap {code}")),
    }
}
