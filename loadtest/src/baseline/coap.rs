//! Baseline CoAP: like provisiond's, one thread with a small tokio runtime owning the UDP socket;
//! each confirmable POST is parsed with coap-lite and answered by a piggybacked 2.01 ACK with the
//! fixed body.

use std::net::UdpSocket;
use std::thread::JoinHandle;

use coap_lite::{MessageClass, MessageType, Packet, ResponseType};

use super::FIXED_RESPONSE;

/// Starts the socket loop on a thread of its own.
pub(super) fn spawn(socket: UdpSocket, _workers: usize) -> std::io::Result<JoinHandle<()>> {
    socket.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("baseline-coap".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                let socket = tokio::net::UdpSocket::from_std(socket).expect("a tokio socket");
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                        continue;
                    };
                    let Ok(request) = Packet::from_bytes(&buf[..n]) else {
                        continue;
                    };
                    let mut reply = Packet::new();
                    reply.header.set_type(match request.header.get_type() {
                        MessageType::Confirmable => MessageType::Acknowledgement,
                        _ => MessageType::NonConfirmable,
                    });
                    reply.header.message_id = request.header.message_id;
                    reply.header.code = MessageClass::Response(ResponseType::Created);
                    reply.set_token(request.get_token().to_vec());
                    reply.set_content_format(coap_lite::ContentFormat::ApplicationJSON);
                    reply.payload = FIXED_RESPONSE.as_bytes().to_vec();
                    if let Ok(bytes) = reply.to_bytes() {
                        let _ = socket.send_to(&bytes, peer).await;
                    }
                }
            });
        })
}
