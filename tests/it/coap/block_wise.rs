//! RFC 7959 block-wise transfers: Block1 assembly, Block2 replies, retransmitted blocks, and
//! every block-wise error.

use coap_lite::{CoapOption, Packet};
use serde_json::{Value, json};

use super::{
    BLOCK1, BLOCK2, CONTENT_FORMAT, Client, ETAG, POST, PROVISION, SIZE1, SIZE2, big_certificate,
    block, code, encode, option, parse_block, sha3_hex, text, uint_option, x509_body,
};
use crate::{TestServer, request};

/// Sends `body` block-wise in blocks of 2^(szx+4) bytes; checks each 2.31 and the Block1 echoes;
/// fetches the rest of a block-wise reply. Returns the last reply and the whole reply body.
fn post_block_wise(client: &mut Client, body: &[u8], szx: u8) -> (Packet, Vec<u8>) {
    let chunks: Vec<&[u8]> = body.chunks(16 << szx).collect();
    let mut last = None;
    for (num, chunk) in chunks.iter().enumerate() {
        let more = num + 1 < chunks.len();
        let mut request = client.request(true, POST, PROVISION, chunk);
        request.add_option(CoapOption::Block1, block(num, more, szx));
        let reply = client.exchange(&request);
        let echoed = option(&reply, BLOCK1).expect("Block1 echoed");
        assert_eq!(parse_block(&echoed), (num, more, szx));
        if more {
            assert_eq!(code(&reply), "2.31", "block {num}: {}", text(&reply));
        } else {
            last = Some(reply);
        }
    }
    let last = last.expect("at least one block");
    let whole = fetch_rest(client, &last);
    (last, whole)
}

/// Fetches the blocks after the first of a Block2 reply (RFC 7959 §3.3: POST with Block2 and
/// no payload); returns the whole body.
fn fetch_rest(client: &mut Client, first: &Packet) -> Vec<u8> {
    let mut whole = first.payload.clone();
    let Some(value) = option(first, BLOCK2) else {
        return whole;
    };
    let (mut num, mut more, szx) = parse_block(&value);
    assert_eq!(num, 0);
    let etag = option(first, ETAG);
    assert!(etag.is_some(), "a block-wise reply carries an ETag");
    while more {
        num += 1;
        let mut request = client.request(true, POST, PROVISION, b"");
        request.add_option(CoapOption::Block2, block(num, false, szx));
        let reply = client.exchange(&request);
        assert_eq!(code(&reply), code(first));
        assert_eq!(option(&reply, ETAG), etag, "every block is of one body");
        let (got, m, _) = parse_block(&option(&reply, BLOCK2).expect("Block2"));
        assert_eq!(got, num);
        more = m;
        whole.extend_from_slice(&reply.payload);
    }
    assert_eq!(uint_option(first, SIZE2), Some(whole.len() as u32));
    whole
}

#[test]
fn block_wise_request_is_assembled_and_its_reply_sent_block_wise() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    let (pem, value) = big_certificate("blocky");
    let mut body = request(&key, &secret, "blocky");
    body["credentialsType"] = json!("X509_CERTIFICATE");
    body["hash"] = json!(pem);
    // 64-byte blocks; the reply then comes in 64-byte blocks too.
    let (last, whole) = post_block_wise(&mut client, body.to_string().as_bytes(), 2);
    assert_eq!(code(&last), "2.01");
    assert_eq!(uint_option(&last, CONTENT_FORMAT), Some(50));
    assert_eq!(parse_block(&option(&last, BLOCK2).unwrap()), (0, true, 2));
    assert_eq!(String::from_utf8(whole).unwrap(), x509_body(&value));
    assert_eq!(
        server.device("blocky").unwrap()["credentialsId"],
        json!(sha3_hex(&value))
    );

    // A retransmitted block (same message id) gets the same 2.31 and is not appended twice.
    let small = request(&key, &secret, "twice-sent-block").to_string();
    let chunks: Vec<&[u8]> = small.as_bytes().chunks(32).collect();
    let mut replies = Vec::new();
    for (num, chunk) in chunks.iter().enumerate() {
        let mut request = client.request(true, POST, PROVISION, chunk);
        request.add_option(CoapOption::Block1, block(num, num + 1 < chunks.len(), 1));
        let datagram = encode(&request);
        client.send(&datagram);
        replies.push(client.receive());
        if num == 1 {
            client.send(&datagram);
            assert_eq!(client.receive(), replies[1]);
        }
    }
    let last = Packet::from_bytes(replies.last().unwrap()).unwrap();
    assert_eq!(code(&last), "2.01", "{}", text(&last));
    assert!(server.device("twice-sent-block").is_some());

    // A client's Block2 wish in a plain request: the reply comes in 16-byte blocks.
    let mut wish = client.request(true, POST, PROVISION, small.as_bytes());
    wish.add_option(CoapOption::Block2, block(0, false, 0));
    let first = client.exchange(&wish);
    assert_eq!(parse_block(&option(&first, BLOCK2).unwrap()), (0, true, 0));
    let whole = fetch_rest(&mut client, &first);
    let reply: Value = serde_json::from_slice(&whole).unwrap();
    assert_eq!(reply["status"], "SUCCESS");
}

#[test]
fn block_wise_errors_name_the_problem_and_the_limit() {
    let server = TestServer::start_with(|c| c.coap.max_request_bytes = 1024);
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    let too_large = |reply: &Packet| {
        assert_eq!(code(reply), "4.13");
        assert_eq!(
            uint_option(reply, SIZE1),
            Some(1024),
            "Size1 names the limit"
        );
        assert!(
            text(reply).contains("exceeds the limit of 1024 bytes"),
            "{}",
            text(reply)
        );
    };
    let mut big = request(&key, &secret, "big");
    big["padding"] = json!("x".repeat(1500));
    let big = big.to_string();
    // In one datagram.
    too_large(&client.post(big.as_bytes()));
    // Announced in Size1 with the first block.
    let mut announced = client.request(true, POST, PROVISION, &big.as_bytes()[..64]);
    announced.add_option(CoapOption::Block1, block(0, true, 2));
    announced.add_option(CoapOption::Size1, (big.len() as u32).to_be_bytes().to_vec());
    too_large(&client.exchange(&announced));
    // Not announced: refused at the block that crosses the limit.
    let mut refused = None;
    for (num, chunk) in big.as_bytes().chunks(64).enumerate() {
        let mut request = client.request(true, POST, PROVISION, chunk);
        request.add_option(CoapOption::Block1, block(num, true, 2));
        let reply = client.exchange(&request);
        if code(&reply) != "2.31" {
            assert_eq!(num, 16, "the block at offset 1024");
            refused = Some(reply);
            break;
        }
    }
    too_large(&refused.expect("refused"));
    // A block that continues nothing.
    let mut orphan = client.request(true, POST, PROVISION, &[b'x'; 64]);
    orphan.add_option(CoapOption::Block1, block(3, true, 2));
    let reply = client.exchange(&orphan);
    assert_eq!(code(&reply), "4.08");
    assert!(text(&reply).contains("block 3"), "{}", text(&reply));
    // A block shorter than its size, with more to come.
    let mut short = client.request(true, POST, PROVISION, &[b'x'; 10]);
    short.add_option(CoapOption::Block1, block(0, true, 2));
    assert_eq!(code(&client.exchange(&short)), "4.00");
    // Size exponent 7 (BERT) does not exist on UDP.
    let mut bert = client.request(true, POST, PROVISION, &[b'x'; 64]);
    bert.add_option(CoapOption::Block1, block(0, true, 7));
    assert_eq!(code(&client.exchange(&bert)), "4.02");
    // A Block2 follow-up with no block-wise reply pending.
    let mut follow_up = client.request(true, POST, PROVISION, b"");
    follow_up.add_option(CoapOption::Block2, block(1, false, 6));
    assert_eq!(code(&client.exchange(&follow_up)), "4.08");
    assert!(server.device_names("fleet").is_empty(), "nothing stored");
}
