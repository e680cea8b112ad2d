//! `POST /api/v1/provision` over real HTTP: every SPEC §4 rule, byte-exact bodies, malformed
//! input, limits, methods, keep-alive, and curl exactly as a user types it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use serde_json::{Value, json};

use super::{TestServer, request};

const NOT_FOUND: &str = r#"{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}"#;
const FAILURE: &str = r#"{"errorMsg":"Failed to provision device!","status":"FAILURE"}"#;

/// Sends `body`, expects HTTP 200 and exactly `expected`.
fn check(server: &TestServer, body: Value, expected: &str) {
    let (status, text) = server.provision_raw(body.to_string().as_bytes());
    assert_eq!((status, text.as_str()), (200, expected), "request {body}");
}

/// Sends `body`, expects SUCCESS and returns the credentials value.
fn success(server: &TestServer, body: Value) -> Value {
    let (status, reply) = server.provision(&body);
    assert_eq!(status, 200);
    assert_eq!(reply["status"], "SUCCESS", "request {body} got {reply}");
    reply["credentialsValue"].clone()
}

#[test]
fn allow_create_rules_over_the_wire() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let (rkey, rsecret) = server.profile("strict", "ALLOW_CREATE_NEW_DEVICES", "REJECT");
    let (dkey, dsecret) = server.profile("off", "DISABLED", "RETURN_EXISTING");

    // Rule 1: blank name.
    check(&server, request(&key, &secret, "   "), FAILURE);
    // Rule 2: NOT_FOUND for empty key/secret, unknown key, wrong secret, disabled profile.
    check(&server, request("", &secret, "a"), NOT_FOUND);
    check(&server, request(&key, "", "a"), NOT_FOUND);
    check(&server, request("no-such-key", &secret, "a"), NOT_FOUND);
    check(&server, request(&key, "wrong", "a"), NOT_FOUND);
    check(&server, request(&dkey, &dsecret, "a"), NOT_FOUND);
    // Rule 3: invalid credentials.
    let mut bad = request(&key, &secret, "a");
    bad["credentialsType"] = json!("MQTT_BASIC");
    bad["password"] = json!("p");
    check(&server, bad, FAILURE);
    assert!(server.device("a").is_none(), "no refusal creates a device");

    // Rule 4: a new device gets a generated 20-character token.
    let token = success(&server, request(&key, &secret, "dev-1"));
    let token = token.as_str().unwrap().to_string();
    assert_eq!(token.len(), 20);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
    let expected = format!(
        r#"{{"credentialsValue":"{token}","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}}"#
    );
    // Idempotent replay: same credentials, byte for byte, and no second device.
    check(&server, request(&key, &secret, "dev-1"), &expected);
    check(&server, request(&key, &secret, "  dev-1  "), &expected);
    let mut same = request(&key, &secret, "dev-1");
    same["token"] = json!(token);
    check(&server, same, &expected);
    let mut other = request(&key, &secret, "dev-1");
    other["token"] = json!("another-token");
    check(&server, other, FAILURE);
    assert_eq!(server.device_names("fleet"), ["dev-1"]);
    let stored = server.device("dev-1").unwrap();
    assert_eq!(stored["provisionState"], "provisioned");
    assert_eq!(stored["serverAttributes"]["provisionState"], "provisioned");
    assert_eq!(stored["credentialsValue"], json!(token));
    assert_eq!(stored["type"], "fleet");

    // Requested token; then the same token for another device is refused and leaves nothing.
    let mut mine = request(&key, &secret, "dev-2");
    mine["token"] = json!("my-token-2");
    check(
        &server,
        mine,
        r#"{"credentialsValue":"my-token-2","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}"#,
    );
    let mut thief = request(&key, &secret, "dev-3");
    thief["token"] = json!("my-token-2");
    check(&server, thief, FAILURE);
    assert!(server.device("dev-3").is_none());

    // REJECT policy: the second request fails.
    success(&server, request(&rkey, &rsecret, "strict-1"));
    check(&server, request(&rkey, &rsecret, "strict-1"), FAILURE);
    // A device of another profile.
    check(&server, request(&rkey, &rsecret, "dev-1"), FAILURE);
    // A 10,000-character name and control characters are refused; nothing is stored.
    check(
        &server,
        request(&key, &secret, &"n".repeat(10_000)),
        FAILURE,
    );
    check(&server, request(&key, &secret, "bad\u{7}name"), FAILURE);
    // No name: a generated one (not returned), a new device each time.
    let generated = success(
        &server,
        json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret }),
    );
    assert_eq!(generated.as_str().unwrap().len(), 20);
    assert_eq!(server.device_names("fleet").len(), 3);
}

#[test]
fn every_credentials_type_is_answered_byte_exact() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut basic = request(&key, &secret, "basic");
    basic["credentialsType"] = json!("MQTT_BASIC");
    basic["clientId"] = json!("test_clientId");
    basic["username"] = json!("test_username");
    basic["password"] = json!("pw");
    check(
        &server,
        basic,
        r#"{"credentialsValue":{"clientId":"test_clientId","userName":"test_username","password":"pw"},"credentialsType":"MQTT_BASIC","status":"SUCCESS"}"#,
    );
    assert_eq!(
        server.device("basic").unwrap()["credentialsId"],
        "b9f1b0bf238dddae689babba0a210fe42bc97ddb07620b5a07d7208dd5528db2"
    );
    // The Python SDK sends null for the MQTT basic fields it was not given.
    let sdk = json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret, "deviceName": "sdk",
        "credentialsType": "MQTT_BASIC", "username": "u-only", "password": null, "clientId": null });
    check(
        &server,
        sdk,
        r#"{"credentialsValue":{"clientId":"","userName":"u-only","password":""},"credentialsType":"MQTT_BASIC","status":"SUCCESS"}"#,
    );
    assert_eq!(server.device("sdk").unwrap()["credentialsId"], "u-only");
    let mut x509 = request(&key, &secret, "cert");
    x509["credentialsType"] = json!("X509_CERTIFICATE");
    x509["hash"] = json!("testHash");
    check(
        &server,
        x509,
        r#"{"credentialsValue":"testHash","credentialsType":"X509_CERTIFICATE","status":"SUCCESS"}"#,
    );
    assert_eq!(
        server.device("cert").unwrap()["credentialsId"],
        "57f6600424d6553263f1f32e0117012894a36fbf07e3e9c3c556272f86b7d985"
    );
    // A credentials type with no credential field gets a server token, as ThingsBoard does.
    let mut bare = request(&key, &secret, "bare");
    bare["credentialsType"] = json!("X509_CERTIFICATE");
    let (_, reply) = server.provision(&bare);
    assert_eq!(reply["credentialsType"], "ACCESS_TOKEN");
}

#[test]
fn check_pre_provisioned_rules_over_the_wire() {
    let server = TestServer::start();
    let (key, secret) = server.profile("pre", "CHECK_PRE_PROVISIONED_DEVICES", "RETURN_EXISTING");
    let (okey, osecret) = server.profile("open", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    // A device of another profile, then reset to unprovisioned.
    success(&server, request(&okey, &osecret, "elsewhere"));
    check(&server, request(&key, &secret, "elsewhere"), FAILURE);
    // Unknown device and missing name.
    check(&server, request(&key, &secret, "unlisted"), FAILURE);
    check(
        &server,
        json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret }),
        FAILURE,
    );
    // A device that exists in the profile without being provisioned: create it through the
    // allow-create profile, move nothing; instead reset a device of this profile's strategy.
    let (pkey, psecret) = server.profile("staging", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut wanted = request(&pkey, &psecret, "sensor-1");
    wanted["token"] = json!("sensor-1-token");
    success(&server, wanted);
    let (status, _) = server.admin("POST", "/api/admin/devices/sensor-1/reset", None);
    assert_eq!(status, 200);
    assert_eq!(
        server.device("sensor-1").unwrap()["provisionState"],
        Value::Null
    );
    let (status, _) = server.admin(
        "PUT",
        "/api/admin/profiles/staging",
        Some(json!({ "strategy": "CHECK_PRE_PROVISIONED_DEVICES" })),
    );
    assert_eq!(status, 200);
    // Requested credentials are ignored: the stored ones come back, and the device is provisioned.
    let mut ignored = request(&pkey, &psecret, "sensor-1");
    ignored["token"] = json!("something-else");
    let expected = r#"{"credentialsValue":"sensor-1-token","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}"#;
    check(&server, ignored, expected);
    assert_eq!(
        server.device("sensor-1").unwrap()["provisionState"],
        "provisioned"
    );
    // RETURN_EXISTING replays; REJECT refuses.
    check(&server, request(&pkey, &psecret, "sensor-1"), expected);
    let (status, _) = server.admin(
        "PUT",
        "/api/admin/profiles/staging",
        Some(json!({ "reprovisionPolicy": "REJECT" })),
    );
    assert_eq!(status, 200);
    check(&server, request(&pkey, &psecret, "sensor-1"), FAILURE);
    // Reset with credentials dropped: the next request assigns new ones.
    let (status, _) = server.admin(
        "POST",
        "/api/admin/devices/sensor-1/reset?credentials=drop",
        None,
    );
    assert_eq!(status, 200);
    let fresh = success(&server, request(&pkey, &psecret, "sensor-1"));
    assert_ne!(fresh, json!("sensor-1-token"));
    // The dropped token is free again.
    let mut reuse = request(&okey, &osecret, "reuser");
    reuse["token"] = json!("sensor-1-token");
    success(&server, reuse);
}

#[test]
fn malformed_bodies_get_400_and_change_nothing() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "request body is not a JSON object"),
        (b"[1,2]".to_vec(), "request body is not a JSON object"),
        (b"".to_vec(), "request body is empty; expected a JSON object"),
        (br#"{"provisionDeviceSecret":"s"}"#.to_vec(), "provisionDeviceKey is missing"),
        (
            format!(r#"{{"provisionDeviceKey":"{key}","provisionDeviceSecret":"{secret}","credentialsType":"OAUTH"}}"#).into_bytes(),
            "credentialsType must be ACCESS_TOKEN, MQTT_BASIC or X509_CERTIFICATE",
        ),
        (
            format!("{{\"provisionDeviceKey\":\"{key}\",\"provisionDeviceSecret\":\"{secret}\",\"deviceName\":\"\u{0}\"").into_bytes(),
            "request body is not a valid provisioning request: invalid JSON",
        ),
    ];
    for (body, message) in cases {
        let (status, text) = server.provision_raw(&body);
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply["status"], "FAILURE");
        assert!(
            reply["errorMsg"].as_str().unwrap().starts_with(message),
            "{text}"
        );
    }
    // Invalid UTF-8 inside a string.
    let mut invalid = format!(
        r#"{{"provisionDeviceKey":"{key}","provisionDeviceSecret":"{secret}","deviceName":""#
    )
    .into_bytes();
    invalid.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
    let (status, _) = server.provision_raw(&invalid);
    assert_eq!(status, 400);
    // A 1 MiB body is refused as too large.
    let mut huge = request(&key, &secret, "big");
    huge["padding"] = json!("x".repeat(1 << 20));
    let (status, text) = server.provision_raw(huge.to_string().as_bytes());
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("exceeds the limit of 65536 bytes"), "{text}");
    assert!(
        server.device_names("fleet").is_empty(),
        "nothing was stored"
    );
}

#[test]
fn other_methods_get_405_and_unknown_paths_404() {
    let server = TestServer::start();
    let agent = super::agent();
    let response = agent.get(server.url("/api/v1/provision")).call().unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let response = agent.get(server.url("/api/v1/nothing")).call().unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let response = agent.get(server.url("/healthz")).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let response = agent.get(server.url("/readyz")).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[test]
fn curl_provisions_exactly_as_the_seed_shows() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let body = format!(
        r#"{{"deviceName": "DEVICE_NAME", "provisionDeviceKey": "{key}", "provisionDeviceSecret": "{secret}"}}"#
    );
    let output = Command::new("curl")
        .args([
            "-s",
            "-S",
            "-i",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &body,
        ])
        .arg(server.url("/api/v1/provision"))
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );
    let json_body = text.split("\r\n\r\n").nth(1).unwrap();
    let reply: Value = serde_json::from_str(json_body).unwrap();
    assert_eq!(reply["status"], "SUCCESS");
    assert_eq!(reply["credentialsType"], "ACCESS_TOKEN");
    assert_eq!(
        server.device("DEVICE_NAME").unwrap()["credentialsValue"],
        reply["credentialsValue"]
    );
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    for i in 0..3 {
        let body = request(&key, &secret, &format!("ka-{i}")).to_string();
        write!(
            stream,
            "POST /api/v1/provision HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let reply = read_response(&mut stream);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains(r#""status":"SUCCESS""#), "{reply}");
    }
    assert_eq!(server.device_names("fleet").len(), 3);
}

#[test]
fn a_body_in_several_pieces_is_joined_before_it_is_parsed() {
    // The server takes a body that arrives in one piece as it is, and joins one that arrives
    // in several: a Content-Length body written in two parts with a pause between them, then
    // a chunked body of three chunks, then one that crosses the limit only in its last piece.
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let pause = || std::thread::sleep(std::time::Duration::from_millis(100));
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_nodelay(true).unwrap();
    let body = request(&key, &secret, "in-two-parts").to_string();
    let (first, second) = body.split_at(body.len() / 2);
    write!(
        stream,
        "POST /api/v1/provision HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    pause();
    stream.write_all(second.as_bytes()).unwrap();
    let reply = read_response(&mut stream);
    assert!(reply.contains(r#""status":"SUCCESS""#), "{reply}");

    let body = request(&key, &secret, "in-three-chunks").to_string();
    let (a, rest) = body.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    write!(
        stream,
        "POST /api/v1/provision HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for piece in [a, b, c] {
        write!(stream, "{:x}\r\n{piece}\r\n", piece.len()).unwrap();
        stream.flush().unwrap();
        pause();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let reply = read_response(&mut stream);
    assert!(reply.contains(r#""status":"SUCCESS""#), "{reply}");

    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut big = request(&key, &secret, "too-big-in-pieces");
    big["padding"] = json!("x".repeat(70_000));
    let body = big.to_string();
    stream
        .write_all(
            b"POST /api/v1/provision HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
    for piece in body.as_bytes().chunks(20_000) {
        write!(stream, "{:x}\r\n", piece.len()).unwrap();
        stream.write_all(piece).unwrap();
        stream.write_all(b"\r\n").unwrap();
        stream.flush().unwrap();
        pause();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let reply = read_response(&mut stream);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    assert_eq!(
        server.device_names("fleet"),
        vec!["in-three-chunks".to_string(), "in-two-parts".to_string()]
    );
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}
