//! The RFC 7252 message layer: retransmissions decided once, non-confirmable duplicates,
//! malformed datagrams, the in-flight bound, and the port check at start.

use std::net::UdpSocket;

use coap_lite::{CoapOption, Packet};
use serde_json::{Value, json};

use super::{
    Client, GET, MAX_AGE, POST, PROVISION, block, code, counter, encode, success, text, uint_option,
};
use crate::{TestServer, request, test_config};

/// Starts a block-wise request and leaves it unfinished: with `max_in_flight = 1` it holds the
/// only in-flight permit, so any request that is (wrongly) decided gets an immediate 5.03.
fn hold_the_only_permit(client: &mut Client, key: &str, secret: &str) {
    let body = request(key, secret, "holder").to_string();
    let mut first = client.request(true, POST, PROVISION, &body.as_bytes()[..32]);
    first.add_option(CoapOption::Block1, block(0, true, 1));
    assert_eq!(code(&client.exchange(&first)), "2.31");
}

#[test]
fn retransmitted_confirmable_request_is_answered_from_the_cache_and_decided_once() {
    // One permit: a copy that slipped past deduplication while the first copy is being decided
    // would need it and be answered 5.03 at once, which the test would see.
    let server = TestServer::start_with(|c| c.coap.max_in_flight = 1);
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    // No device name: deciding a copy twice would create a second device.
    let nameless =
        json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret }).to_string();
    let before = counter(&server, "provisiond_coap_retransmissions_total");
    let datagram = encode(&client.request(true, POST, PROVISION, nameless.as_bytes()));
    client.send(&datagram);
    let first = client.receive();
    client.send(&datagram);
    let second = client.receive();
    assert_eq!(first, second, "the same ACK, byte for byte");
    assert_eq!(code(&Packet::from_bytes(&first).unwrap()), "2.01");
    assert_eq!(server.device_names("fleet").len(), 1);

    // Five copies back to back: the later ones arrive while the first is being decided (or
    // just after). Every answer is the same datagram; one device more.
    let burst = encode(&client.request(true, POST, PROVISION, nameless.as_bytes()));
    for _ in 0..5 {
        client.send(&burst);
    }
    let probe = client.request(true, GET, "/probe", b"");
    client.send(&encode(&probe));
    let (mut answers, mut probe_seen) = (Vec::new(), false);
    while !probe_seen || answers.is_empty() {
        let datagram = client.receive();
        let packet = Packet::from_bytes(&datagram).unwrap();
        if packet.header.message_id == probe.header.message_id {
            probe_seen = true;
        } else {
            answers.push(datagram);
        }
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "one answer for every copy"
    );
    assert_eq!(code(&Packet::from_bytes(&answers[0]).unwrap()), "2.01");
    assert_eq!(
        server.device_names("fleet").len(),
        2,
        "each exchange decided once"
    );
    let after = counter(&server, "provisiond_coap_retransmissions_total");
    assert!(after >= before + 5, "counted: {before} -> {after}");
}

#[test]
fn non_confirmable_duplicates_are_ignored_and_decided_once() {
    let server = TestServer::start_with(|c| c.coap.max_in_flight = 1);
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    let nameless =
        json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret }).to_string();
    let request = client.request(false, POST, PROVISION, nameless.as_bytes());
    let reply = client.exchange(&request);
    assert_eq!(code(&reply), "2.01");
    // RFC 7252 §4.5: a duplicate non-confirmable message is silently ignored. Were one decided
    // again, it would find the only permit held and be answered 5.03 before the probe.
    hold_the_only_permit(&mut client, &key, &secret);
    client.send(&encode(&request));
    client.send(&encode(&request));
    client.assert_nothing_came_back();
    assert_eq!(server.device_names("fleet").len(), 1);
}

#[test]
fn malformed_datagrams_are_dropped_or_reset_and_nothing_is_stored() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    let before = counter(&server, "provisiond_coap_malformed_total");
    let body = request(&key, &secret, "never").to_string();
    let mut valid = encode(&client.request(true, POST, PROVISION, body.as_bytes()));
    valid[2..4].copy_from_slice(&[0x77, 0x01]);

    // Silently dropped (RFC 7252 §3, §4.3): truncated header, unknown version, a malformed
    // non-confirmable message, and a 64 KiB datagram that is not CoAP at all.
    client.send(&valid[..3]);
    let mut version_2 = valid.clone();
    version_2[0] = (version_2[0] & 0x3f) | 0x80;
    client.send(&version_2);
    client.send(&[0x50, 0x02, 0x77, 0x02, 0xb5, b'a']);
    client.send(&vec![0xff; 65_507]);
    client.assert_nothing_came_back();

    // A confirmable message with a format error is rejected with a Reset of its message id
    // (§4.2): a token length of 9, an option running past the end, option delta 15, a payload
    // marker with no payload, bytes after an Empty message, a response code; and a 64 KiB
    // datagram whose options are garbage.
    let mut huge_garbage = vec![0x40, 0x02, 0x77, 0x19];
    huge_garbage.extend(std::iter::repeat_n(0xee, 65_507 - 4));
    let rejected: Vec<(Vec<u8>, u16)> = vec![
        (vec![0x49, 0x02, 0x77, 0x11, 1, 2, 3], 0x7711),
        (vec![0x40, 0x02, 0x77, 0x12, 0xb5, b'a'], 0x7712),
        (vec![0x40, 0x02, 0x77, 0x13, 0xf1, 0], 0x7713),
        (
            vec![0x40, 0x02, 0x77, 0x14, 0xb3, b'a', b'p', b'i', 0xff],
            0x7714,
        ),
        (vec![0x40, 0x00, 0x77, 0x15, 0xff, 1], 0x7715),
        (vec![0x40, 0x45, 0x77, 0x16], 0x7716),
        (huge_garbage, 0x7719),
    ];
    for (datagram, message_id) in &rejected {
        client.send(datagram);
        let reset = client.receive();
        let [high, low] = message_id.to_be_bytes();
        assert_eq!(
            reset,
            [0x70, 0x00, high, low],
            "Reset for {message_id:#06x}"
        );
    }
    // An Empty confirmable message is a CoAP ping, answered by a Reset (not counted as malformed).
    client.send(&[0x40, 0x00, 0x77, 0x17]);
    assert_eq!(client.receive(), [0x70, 0x00, 0x77, 0x17]);
    // A well-formed 64 KiB request whose payload is neither JSON nor protobuf: 4.00.
    let junk = client.request(true, POST, PROVISION, &vec![0xff; 65_000]);
    let reply = client.exchange(&junk);
    assert_eq!(code(&reply), "4.00");
    assert!(
        text(&reply).contains("neither a JSON object"),
        "{}",
        text(&reply)
    );

    assert!(server.device_names("fleet").is_empty(), "nothing stored");
    let after = counter(&server, "provisiond_coap_malformed_total");
    assert!(after >= before + 11, "counted: {before} -> {after}");
    // The server is unharmed.
    success(&mut client, request(&key, &secret, "after-the-storm"));
}

#[test]
fn requests_beyond_max_in_flight_get_5_03_with_max_age() {
    let server = TestServer::start_with(|c| c.coap.max_in_flight = 1);
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    let before = counter(&server, "provisiond_coap_overload_total");
    // A block-wise request in progress holds the only in-flight permit.
    let body = request(&key, &secret, "slow-sender").to_string();
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(32).collect();
    let mut first = client.request(true, POST, PROVISION, chunks[0]);
    first.add_option(CoapOption::Block1, block(0, true, 1));
    assert_eq!(code(&client.exchange(&first)), "2.31");

    let reply = client.post(request(&key, &secret, "refused").to_string().as_bytes());
    assert_eq!(code(&reply), "5.03");
    assert_eq!(uint_option(&reply, MAX_AGE), Some(2), "when to retry");
    let refusal: Value = serde_json::from_str(&text(&reply)).unwrap();
    assert_eq!(refusal["status"], "FAILURE");
    assert!(counter(&server, "provisiond_coap_overload_total") > before);
    assert!(server.device("refused").is_none());

    // The transfer completes, the permit comes back, and the next request is served.
    for (num, chunk) in chunks.iter().enumerate().skip(1) {
        let mut request = client.request(true, POST, PROVISION, chunk);
        request.add_option(CoapOption::Block1, block(num, num + 1 < chunks.len(), 1));
        client.exchange(&request);
    }
    assert!(server.device("slow-sender").is_some());
    success(&mut client, request(&key, &secret, "served"));
}

#[test]
fn coap_port_in_use_is_refused_at_start() {
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.coap.port = port;
    let error = provisiond::server::start(&config, false)
        .map(|_| ())
        .expect_err("the port is taken");
    let text = error.to_string();
    assert!(
        text.contains(&format!("cannot listen on 127.0.0.1:{port} (coap)")),
        "{text}"
    );
    assert!(text.contains("in use"), "{text}");
}
