//! CoAP over real UDP: `coap-client` exactly as the seed shows it (confirmable and not), a Rust
//! client for every SPEC rule and credentials type, retransmissions, block-wise transfers both
//! ways, malformed datagrams, the in-flight bound, and the port check at start.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet};
use serde_json::{Value, json};
use sha3::{Digest, Sha3_256};

use super::{ServerProcess, TestServer, admin_call, agent, request, test_config};

const NOT_FOUND: &str = r#"{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}"#;
const FAILURE: &str = r#"{"errorMsg":"Failed to provision device!","status":"FAILURE"}"#;
const PROVISION: &str = "/api/v1/provision";

const GET: u8 = 0x01;
const POST: u8 = 0x02;
const PUT: u8 = 0x03;

const ETAG: u16 = 4;
const MAX_AGE: u16 = 14;
const CONTENT_FORMAT: u16 = 12;
const BLOCK2: u16 = 23;
const BLOCK1: u16 = 27;
const SIZE2: u16 = 28;
const SIZE1: u16 = 60;

/// How long a reply may take before the test fails: a deadline, not a measurement.
const REPLY_DEADLINE: Duration = Duration::from_secs(20);

/// A CoAP client on a real UDP socket, one exchange at a time.
struct Client {
    socket: UdpSocket,
    next_message_id: u16,
    next_token: u32,
}

impl Client {
    fn connect(server: SocketAddr) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        // Connected: only the server's datagrams are received.
        socket.connect(server).expect("connect");
        socket.set_read_timeout(Some(REPLY_DEADLINE)).unwrap();
        Client {
            socket,
            next_message_id: 0x2000,
            next_token: 0x0100_0000,
        }
    }

    /// A request with a fresh message id and token.
    fn request(&mut self, confirmable: bool, method: u8, path: &str, payload: &[u8]) -> Packet {
        let mut packet = Packet::new();
        packet.header.set_type(if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        packet.header.code = MessageClass::from(method);
        self.next_message_id = self.next_message_id.wrapping_add(1);
        packet.header.message_id = self.next_message_id;
        self.next_token += 1;
        packet.set_token(self.next_token.to_be_bytes().to_vec());
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        packet.payload = payload.to_vec();
        packet
    }

    fn send(&self, datagram: &[u8]) {
        self.socket.send(datagram).expect("datagram sent");
    }

    fn receive(&self) -> Vec<u8> {
        let mut buffer = vec![0; 65_536];
        let len = self
            .socket
            .recv(&mut buffer)
            .expect("a datagram from the server before the deadline");
        buffer.truncate(len);
        buffer
    }

    /// Sends a request and returns its reply, checking the message layer on the way: a
    /// piggybacked ACK with the request's message id for a confirmable request, a NON for a
    /// non-confirmable one, and the token echoed.
    fn exchange(&self, request: &Packet) -> Packet {
        self.send(&encode(request));
        let reply = Packet::from_bytes(&self.receive()).expect("a well-formed reply");
        if request.header.get_type() == MessageType::Confirmable {
            assert_eq!(reply.header.get_type(), MessageType::Acknowledgement);
            assert_eq!(reply.header.message_id, request.header.message_id);
        } else {
            assert_eq!(reply.header.get_type(), MessageType::NonConfirmable);
        }
        assert_eq!(reply.get_token(), request.get_token(), "token echoed");
        reply
    }

    /// A confirmable POST to /api/v1/provision.
    fn post(&mut self, payload: &[u8]) -> Packet {
        let request = self.request(true, POST, PROVISION, payload);
        self.exchange(&request)
    }

    /// Proves that the server sent nothing back for what came before: the next datagram is the
    /// 4.04 answering a fresh probe (the server handles datagrams in order on one socket).
    fn assert_nothing_came_back(&mut self) {
        let probe = self.request(true, GET, "/probe", b"");
        let reply = self.exchange(&probe);
        assert_eq!(code(&reply), "4.04");
    }
}

fn encode(packet: &Packet) -> Vec<u8> {
    packet.to_bytes_unlimited().expect("encodable")
}

fn code(packet: &Packet) -> String {
    packet.header.code.to_string()
}

fn text(packet: &Packet) -> String {
    String::from_utf8(packet.payload.clone()).expect("UTF-8 payload")
}

fn option(packet: &Packet, number: u16) -> Option<Vec<u8>> {
    packet
        .get_option(CoapOption::from(number))
        .and_then(|values| values.front().cloned())
}

fn uint(value: &[u8]) -> u32 {
    value.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b))
}

fn uint_option(packet: &Packet, number: u16) -> Option<u32> {
    option(packet, number).map(|v| uint(&v))
}

fn block(num: usize, more: bool, szx: u8) -> Vec<u8> {
    let value = ((num as u32) << 4) | (u32::from(more) << 3) | u32::from(szx);
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

fn parse_block(value: &[u8]) -> (usize, bool, u8) {
    let scalar = uint(value);
    ((scalar >> 4) as usize, scalar & 8 != 0, (scalar & 7) as u8)
}

/// Sends `body` as a confirmable request, expects `expected_code` with exactly `expected`.
fn check(client: &mut Client, confirmable: bool, body: Value, expected_code: &str, expected: &str) {
    let request = client.request(confirmable, POST, PROVISION, body.to_string().as_bytes());
    let reply = client.exchange(&request);
    assert_eq!(
        (code(&reply).as_str(), text(&reply).as_str()),
        (expected_code, expected),
        "request {body}"
    );
    assert_eq!(
        uint_option(&reply, CONTENT_FORMAT),
        Some(50),
        "application/json"
    );
}

/// Sends `body`, expects 2.01 SUCCESS and returns the credentials value.
fn success(client: &mut Client, body: Value) -> Value {
    let reply = client.post(body.to_string().as_bytes());
    assert_eq!(code(&reply), "2.01", "request {body} got {}", text(&reply));
    let reply: Value = serde_json::from_str(&text(&reply)).unwrap();
    assert_eq!(reply["status"], "SUCCESS");
    reply["credentialsValue"].clone()
}

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

/// The value of a counter on /metrics (0 while it was never incremented).
fn counter(server: &TestServer, name: &str) -> u64 {
    let mut response = agent().get(server.url("/metrics")).call().unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    text.lines()
        .filter(|line| line.split([' ', '{']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A self-signed certificate far larger than one CoAP block: its PEM, and the base64 of its DER
/// (what ThingsBoard stores and returns).
fn big_certificate(name: &str) -> (String, String) {
    let names: Vec<String> = (0..120)
        .map(|i| format!("{name}-{i:03}.devices.example.com"))
        .collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("certificate");
    let base64 = base64::engine::general_purpose::STANDARD.encode(certified.cert.der());
    (certified.cert.pem(), base64)
}

fn sha3_hex(text: &str) -> String {
    hex::encode(Sha3_256::digest(text.as_bytes()))
}

fn x509_body(value: &str) -> String {
    format!(
        r#"{{"credentialsValue":"{value}","credentialsType":"X509_CERTIFICATE","status":"SUCCESS"}}"#
    )
}

/// `coap-client` from libcoap; Debian's libcoap3-bin may install only `coap-client-notls`.
fn coap_client_binary() -> &'static str {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["coap-client", "coap-client-notls"] {
        if std::env::split_paths(&path).any(|dir| dir.join(name).is_file()) {
            return name;
        }
    }
    panic!("neither coap-client nor coap-client-notls is on the PATH (Debian: libcoap3-bin)");
}

/// Runs coap-client with `args`; returns the payload line it printed on standard output.
fn run_coap_client(args: &[&str]) -> String {
    let output = Command::new(coap_client_binary())
        .args(args)
        .output()
        .expect("coap-client runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "coap-client failed: {stderr}");
    stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_else(|| panic!("coap-client printed no payload; stderr: {stderr}"))
        .to_string()
}

const SEED_KEY: &str = "PUT_PROVISION_KEY_HERE";
const SEED_SECRET: &str = "PUT_PROVISION_SECRET_HERE";
/// The seed's first request, byte for byte.
const SEED_GENERATED: &str = r#"{"deviceName":"DEVICE_NAME","provisionDeviceKey":"PUT_PROVISION_KEY_HERE","provisionDeviceSecret":"PUT_PROVISION_SECRET_HERE"}"#;
/// The seed's second request, byte for byte.
const SEED_TOKEN: &str = r#"{"deviceName":"DEVICE_NAME","provisionDeviceKey":"PUT_PROVISION_KEY_HERE","provisionDeviceSecret":"PUT_PROVISION_SECRET_HERE","credentialsType":"ACCESS_TOKEN","token":"DEVICE_ACCESS_TOKEN"}"#;

/// A profile with the seed's key and secret, so that its commands run unchanged.
fn seed_profile(server: &TestServer) {
    let (status, body) = server.admin(
        "POST",
        "/api/admin/profiles",
        Some(json!({ "name": "seed", "provisionDeviceKey": SEED_KEY, "provisionDeviceSecret": SEED_SECRET })),
    );
    assert_eq!(status, 201, "{body}");
}

/// The seed's command: `coap-client -v 6 -m POST -t "application/json" -e '<payload>'
/// "coap://$THINGSBOARD_HOST:5683/api/v1/provision"`, with `-N` for non-confirmable.
fn seed_command(server: &TestServer, payload: &str, confirmable: bool) -> String {
    let uri = format!("coap://{}/api/v1/provision", server.coap_addr());
    let mut args = vec![];
    if !confirmable {
        args.push("-N");
    }
    args.extend([
        "-v",
        "6",
        "-m",
        "POST",
        "-t",
        "application/json",
        "-e",
        payload,
        &uri,
    ]);
    run_coap_client(&args)
}

#[test]
fn coap_client_provisions_exactly_as_the_seed_shows() {
    // The first seed command: a generated token, confirmable; non-confirmable replays it.
    let server = TestServer::start();
    seed_profile(&server);
    let line = seed_command(&server, SEED_GENERATED, true);
    let reply: Value = serde_json::from_str(&line).expect("the payload is JSON");
    let token = reply["credentialsValue"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 20);
    assert_eq!(
        line,
        format!(
            r#"{{"credentialsValue":"{token}","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}}"#
        )
    );
    assert_eq!(seed_command(&server, SEED_GENERATED, false), line);
    assert_eq!(
        server.device("DEVICE_NAME").unwrap()["credentialsValue"],
        json!(token)
    );
    let stored = server.device("DEVICE_NAME").unwrap();
    assert_eq!(stored["provisionState"], "provisioned");

    // The second seed command: the device's own token, non-confirmable first, then confirmable.
    let server = TestServer::start();
    seed_profile(&server);
    let expected = r#"{"credentialsValue":"DEVICE_ACCESS_TOKEN","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}"#;
    assert_eq!(seed_command(&server, SEED_TOKEN, false), expected);
    assert_eq!(seed_command(&server, SEED_TOKEN, true), expected);
    assert_eq!(server.device_names("seed"), ["DEVICE_NAME"]);
}

#[test]
fn coap_client_sends_a_large_x509_certificate_block_wise() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("coap://{}/api/v1/provision", server.coap_addr());
    // Without -b, libcoap itself switches to 1024-byte blocks for a body this large; with
    // -b 64 a constrained device's small blocks are used, both ways.
    for (name, block_args) in [("cert-auto", vec![]), ("cert-64", vec!["-b", "64"])] {
        let (pem, value) = big_certificate(name);
        let mut body = request(&key, &secret, name);
        body["credentialsType"] = json!("X509_CERTIFICATE");
        body["hash"] = json!(pem);
        let body = body.to_string();
        assert!(
            body.len() > 4096,
            "more than one datagram: {} bytes",
            body.len()
        );
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, &body).unwrap();
        let mut args = vec!["-m", "POST", "-t", "application/json"];
        args.extend(block_args);
        args.extend(["-f", file.to_str().unwrap(), &uri]);
        assert_eq!(run_coap_client(&args), x509_body(&value), "{name}");
        let device = server.device(name).expect("stored");
        assert_eq!(device["credentialsId"], json!(sha3_hex(&value)));
        assert_eq!(device["credentialsValue"], json!(value));
    }
}

#[test]
fn every_rule_gets_its_code_and_body_over_coap() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let (rkey, rsecret) = server.profile("strict", "ALLOW_CREATE_NEW_DEVICES", "REJECT");
    let (dkey, dsecret) = server.profile("off", "DISABLED", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    for confirmable in [true, false] {
        let c = &mut client;
        // Rule 1: blank name.
        check(
            c,
            confirmable,
            request(&key, &secret, "   "),
            "4.00",
            FAILURE,
        );
        // Rule 2: empty key or secret, unknown key, wrong secret, disabled profile.
        check(c, confirmable, request("", &secret, "a"), "4.00", NOT_FOUND);
        check(c, confirmable, request(&key, "", "a"), "4.00", NOT_FOUND);
        check(
            c,
            confirmable,
            request("no-such-key", &secret, "a"),
            "4.00",
            NOT_FOUND,
        );
        check(
            c,
            confirmable,
            request(&key, "wrong", "a"),
            "4.00",
            NOT_FOUND,
        );
        check(
            c,
            confirmable,
            request(&dkey, &dsecret, "a"),
            "4.00",
            NOT_FOUND,
        );
        // Rule 3: invalid credentials.
        let mut bad = request(&key, &secret, "a");
        bad["credentialsType"] = json!("MQTT_BASIC");
        bad["password"] = json!("p");
        check(c, confirmable, bad, "4.00", FAILURE);
    }
    assert!(server.device("a").is_none(), "no refusal creates a device");

    // Rule 4: a new device gets a generated token; a replay gets it again, byte for byte.
    let token = success(&mut client, request(&key, &secret, "dev-1"));
    let token = token.as_str().unwrap().to_string();
    assert_eq!(token.len(), 20);
    let expected = format!(
        r#"{{"credentialsValue":"{token}","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}}"#
    );
    check(
        &mut client,
        true,
        request(&key, &secret, "dev-1"),
        "2.01",
        &expected,
    );
    check(
        &mut client,
        false,
        request(&key, &secret, " dev-1 "),
        "2.01",
        &expected,
    );
    let mut other = request(&key, &secret, "dev-1");
    other["token"] = json!("another-token");
    check(&mut client, true, other, "4.00", FAILURE);
    // A requested token; the same token for another device is refused and leaves nothing.
    let mut mine = request(&key, &secret, "dev-2");
    mine["token"] = json!("my-token-2");
    check(
        &mut client,
        true,
        mine,
        "2.01",
        r#"{"credentialsValue":"my-token-2","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}"#,
    );
    let mut thief = request(&key, &secret, "dev-3");
    thief["token"] = json!("my-token-2");
    check(&mut client, true, thief, "4.00", FAILURE);
    assert!(server.device("dev-3").is_none());
    // REJECT policy, and a device of another profile.
    success(&mut client, request(&rkey, &rsecret, "strict-1"));
    check(
        &mut client,
        true,
        request(&rkey, &rsecret, "strict-1"),
        "4.00",
        FAILURE,
    );
    check(
        &mut client,
        true,
        request(&rkey, &rsecret, "dev-1"),
        "4.00",
        FAILURE,
    );
    assert_eq!(server.device_names("fleet"), ["dev-1", "dev-2"]);
    // Rule 6: provisioned, and the transport recorded.
    let stored = server.device("dev-1").unwrap();
    assert_eq!(stored["provisionState"], "provisioned");
    assert_eq!(stored["credentialsValue"], json!(token));
}

#[test]
fn check_pre_provisioned_rules_hold_over_coap() {
    let server = TestServer::start();
    let (key, secret) = server.profile("staging", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    let mut wanted = request(&key, &secret, "sensor-1");
    wanted["token"] = json!("sensor-1-token");
    success(&mut client, wanted);
    let (status, _) = server.admin("POST", "/api/admin/devices/sensor-1/reset", None);
    assert_eq!(status, 200);
    let (status, _) = server.admin(
        "PUT",
        "/api/admin/profiles/staging",
        Some(json!({ "strategy": "CHECK_PRE_PROVISIONED_DEVICES" })),
    );
    assert_eq!(status, 200);
    // Unknown device and missing name.
    check(
        &mut client,
        true,
        request(&key, &secret, "unlisted"),
        "4.00",
        FAILURE,
    );
    let nameless = json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret });
    check(&mut client, true, nameless, "4.00", FAILURE);
    // The listed device: its stored credentials, whatever the request asks for.
    let mut ignored = request(&key, &secret, "sensor-1");
    ignored["token"] = json!("something-else");
    let expected = r#"{"credentialsValue":"sensor-1-token","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}"#;
    check(&mut client, true, ignored, "2.01", expected);
    assert_eq!(
        server.device("sensor-1").unwrap()["provisionState"],
        "provisioned"
    );
    check(
        &mut client,
        false,
        request(&key, &secret, "sensor-1"),
        "2.01",
        expected,
    );
    let (status, _) = server.admin(
        "PUT",
        "/api/admin/profiles/staging",
        Some(json!({ "reprovisionPolicy": "REJECT" })),
    );
    assert_eq!(status, 200);
    check(
        &mut client,
        true,
        request(&key, &secret, "sensor-1"),
        "4.00",
        FAILURE,
    );
}

#[test]
fn every_credentials_type_is_answered_byte_exact_over_coap() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    let mut basic = request(&key, &secret, "basic");
    basic["credentialsType"] = json!("MQTT_BASIC");
    basic["clientId"] = json!("test_clientId");
    basic["username"] = json!("test_username");
    basic["password"] = json!("pw");
    check(
        &mut client,
        true,
        basic,
        "2.01",
        r#"{"credentialsValue":{"clientId":"test_clientId","userName":"test_username","password":"pw"},"credentialsType":"MQTT_BASIC","status":"SUCCESS"}"#,
    );
    assert_eq!(
        server.device("basic").unwrap()["credentialsId"],
        "b9f1b0bf238dddae689babba0a210fe42bc97ddb07620b5a07d7208dd5528db2"
    );
    // The Python SDK sends null for the fields it was not given.
    let sdk = json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret, "deviceName": "sdk",
        "credentialsType": "MQTT_BASIC", "username": "u-only", "password": null, "clientId": null });
    check(
        &mut client,
        false,
        sdk,
        "2.01",
        r#"{"credentialsValue":{"clientId":"","userName":"u-only","password":""},"credentialsType":"MQTT_BASIC","status":"SUCCESS"}"#,
    );
    let mut x509 = request(&key, &secret, "cert");
    x509["credentialsType"] = json!("X509_CERTIFICATE");
    x509["hash"] = json!("testHash");
    check(&mut client, true, x509, "2.01", &x509_body("testHash"));
    assert_eq!(
        server.device("cert").unwrap()["credentialsId"],
        "57f6600424d6553263f1f32e0117012894a36fbf07e3e9c3c556272f86b7d985"
    );
    // ThingsBoard's own test posts to /api/v1/<token>/provision: the segment is ignored.
    let request_body = request(&key, &secret, "via-token-path").to_string();
    let with_token = client.request(
        true,
        POST,
        "/api/v1/SOME_TOKEN/provision",
        request_body.as_bytes(),
    );
    let reply = client.exchange(&with_token);
    assert_eq!(code(&reply), "2.01", "{}", text(&reply));
    assert!(server.device("via-token-path").is_some());
}

#[test]
fn protobuf_requests_get_protobuf_replies() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    // ProvisionDeviceRequestMsg { deviceName = 1, provisionDeviceCredentialsMsg = 3 { key = 1,
    // secret = 2 } }, encoded by hand so that the test shares no code with the server.
    let field = |tag: u8, bytes: &[u8]| {
        let mut out = vec![tag, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    };
    let proto = |name: &str, secret: &str| {
        let mut credentials = field(0x0a, key.as_bytes());
        credentials.extend(field(0x12, secret.as_bytes()));
        let mut msg = field(0x0a, name.as_bytes());
        msg.extend(field(0x1a, &credentials));
        msg
    };
    let reply = client.post(&proto("proto-dev", &secret));
    assert_eq!(code(&reply), "2.01");
    assert_eq!(
        option(&reply, CONTENT_FORMAT),
        None,
        "protobuf replies carry none"
    );
    // status = SUCCESS, credentialsType = ACCESS_TOKEN (default, omitted), credentialsValue.
    assert_eq!(&reply.payload[..4], &[0x08, 0x01, 0x1a, 20]);
    let token = String::from_utf8(reply.payload[4..].to_vec()).unwrap();
    assert_eq!(
        server.device("proto-dev").unwrap()["credentialsValue"],
        json!(token)
    );
    let refused = client.post(&proto("proto-dev", "wrong"));
    assert_eq!(code(&refused), "4.00");
    assert_eq!(refused.payload, [0x08, 0x02], "NOT_FOUND");
    // An empty payload is an empty proto3 message: NOT_FOUND, as ThingsBoard answers it.
    let empty = client.post(b"");
    assert_eq!(
        (code(&empty), empty.payload),
        ("4.00".to_string(), vec![0x08, 0x02])
    );
}

#[test]
fn unparsable_payloads_get_4_00_with_the_parse_error_body() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"not json".to_vec(),
            "payload is neither a JSON object nor a ProvisionDeviceRequestMsg",
        ),
        (br#"{"provisionDeviceSecret":"s"}"#.to_vec(), "provisionDeviceKey is missing"),
        (
            format!(r#"{{"provisionDeviceKey":"{key}","provisionDeviceSecret":"{secret}","credentialsType":"OAUTH"}}"#)
                .into_bytes(),
            "credentialsType must be ACCESS_TOKEN, MQTT_BASIC or X509_CERTIFICATE",
        ),
        (
            format!(r#"{{"provisionDeviceKey":"{key}","provisionDeviceSecret":"{secret}","deviceName":"x""#)
                .into_bytes(),
            "request body is not a valid provisioning request: invalid JSON",
        ),
    ];
    for (body, message) in cases {
        let reply = client.post(&body);
        assert_eq!(code(&reply), "4.00", "{}", String::from_utf8_lossy(&body));
        assert_eq!(uint_option(&reply, CONTENT_FORMAT), Some(50));
        let reply: Value = serde_json::from_str(&text(&reply)).unwrap();
        assert_eq!(reply["status"], "FAILURE");
        assert!(
            reply["errorMsg"].as_str().unwrap().starts_with(message),
            "{reply}"
        );
    }
    assert!(server.device_names("fleet").is_empty(), "nothing stored");
}

#[test]
fn other_methods_paths_and_options_get_their_codes() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut client = Client::connect(server.coap_addr());
    let body = request(&key, &secret, "dev").to_string();
    for method in [GET, PUT, 0x08] {
        let wrong = client.request(true, method, PROVISION, body.as_bytes());
        let reply = client.exchange(&wrong);
        assert_eq!(code(&reply), "4.05");
        assert!(text(&reply).contains("use POST"), "{}", text(&reply));
    }
    for path in [
        "/api/v1/nothing",
        "/api/v2/provision",
        "/api/v1/provision/extra",
        "/",
    ] {
        let lost = client.request(true, POST, path, body.as_bytes());
        assert_eq!(code(&client.exchange(&lost)), "4.04", "{path}");
    }
    // An unrecognized critical option (If-Match): 4.02 when confirmable, ignored when not.
    let mut critical = client.request(true, POST, PROVISION, body.as_bytes());
    critical.add_option(CoapOption::IfMatch, vec![1]);
    let reply = client.exchange(&critical);
    assert_eq!(code(&reply), "4.02");
    assert!(
        text(&reply).contains("critical option 1"),
        "{}",
        text(&reply)
    );
    let mut critical = client.request(false, POST, PROVISION, body.as_bytes());
    critical.add_option(CoapOption::IfMatch, vec![1]);
    client.send(&encode(&critical));
    client.assert_nothing_came_back();
    // A proxy request: this server is no proxy.
    let mut proxied = client.request(true, POST, PROVISION, body.as_bytes());
    proxied.add_option(CoapOption::ProxyUri, b"coap://elsewhere/".to_vec());
    assert_eq!(code(&client.exchange(&proxied)), "5.05");
    assert!(
        server.device("dev").is_none(),
        "none of these was provisioned"
    );
    // Options that are recognized or elective are accepted: Uri-Host, Uri-Query, Accept,
    // Content-Format, an ETag and an unknown elective option.
    let mut decorated = client.request(true, POST, PROVISION, body.as_bytes());
    decorated.add_option(CoapOption::UriHost, b"provisiond.local".to_vec());
    decorated.add_option(CoapOption::UriQuery, b"x=1".to_vec());
    decorated.add_option(CoapOption::Accept, vec![50]);
    decorated.add_option(CoapOption::ContentFormat, vec![50]);
    decorated.add_option(CoapOption::ETag, vec![7]);
    decorated.add_option(CoapOption::Unknown(2048), vec![1]);
    assert_eq!(code(&client.exchange(&decorated)), "2.01");
}

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

#[test]
fn the_binary_serves_coap_on_the_address_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let (status, profile) = admin_call(
        &agent(),
        &format!("http://{}/api/admin/profiles", server.addr),
        "POST",
        Some(super::ADMIN_TOKEN),
        Some(json!({ "name": "fleet" })),
    );
    assert_eq!(status, 201, "{profile}");
    let key = profile["provisionDeviceKey"].as_str().unwrap();
    let secret = profile["provisionDeviceSecret"].as_str().unwrap();
    let mut client = Client::connect(server.coap_addr);
    success(&mut client, request(key, secret, "from-the-binary"));
    server.kill();
}
