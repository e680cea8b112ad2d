//! Every SPEC §4 rule and credentials type over CoAP, protobuf, parse errors, and the codes for
//! other methods, paths and options.

use coap_lite::CoapOption;
use serde_json::{Value, json};

use super::{
    CONTENT_FORMAT, Client, FAILURE, GET, NOT_FOUND, POST, PROVISION, PUT, check, code, encode,
    option, success, text, uint_option, x509_body,
};
use crate::{TestServer, request};

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
