//! Secrets never leak: `Debug` of every secret-bearing type prints `***`, and a full run over
//! every transport, logged at trace level, mentions none of the secrets, tokens and passwords it
//! used or handed out.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};
use provisiond::config::{Config, Overrides};
use provisiond::engine::profile::{NewProfile, ProfileUpdate};
use provisiond::engine::provision::{Request, RequestedCredentials, Secret, Transport};
use provisiond::store::record::{Credentials, ProfileRecord, ReprovisionPolicy, Strategy};
use provisiond::transport::proto;
use provisiond::transport::wire::CredentialFields;
use serde_json::{Value, json};

use super::mqtt::{Client, Connect, Version};
use super::{ADMIN_TOKEN, admin_call, agent};

const SECRET: &str = "profile-secret-Zq81";
const TOKEN: &str = "requested-token-Hw27";
const PASSWORD: &str = "mqtt-basic-password-Lx55";
const CONNECT_PASSWORD: &str = "connect-password-Pe09";
const WRONG: &str = "wrong-secret-Yy40";
const CSV_TOKEN: &str = "imported-token-Rk63";
const CSV_PASSWORD: &str = "imported-password-Mb12";

#[test]
fn debug_of_every_secret_bearing_type_prints_stars() {
    let mut config = Config::load(None, &Overrides::default()).unwrap();
    config.admin_token = Some(ADMIN_TOKEN.into());
    let basic = Credentials::MqttBasic {
        client_id: "c".into(),
        user_name: "u".into(),
        password: PASSWORD.into(),
    };
    let record = ProfileRecord {
        name: "p".into(),
        provision_key: "k".into(),
        provision_secret: SECRET.into(),
        strategy: Strategy::AllowCreateNewDevices,
        reprovision_policy: ReprovisionPolicy::ReturnExisting,
        device_type: None,
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    let new_profile = NewProfile {
        provision_secret: Some(SECRET.into()),
        ..NewProfile::default()
    };
    let update = ProfileUpdate {
        provision_secret: Some(SECRET.into()),
        ..ProfileUpdate::default()
    };
    let request = Request {
        provision_key: "k".into(),
        provision_secret: Secret(SECRET.into()),
        device_name: Some("d".into()),
        credentials: RequestedCredentials::Valid(Credentials::AccessToken {
            token: TOKEN.into(),
        }),
        gateway: false,
        transport: Transport::Http,
    };
    let fields = CredentialFields {
        token: TOKEN.into(),
        password: PASSWORD.into(),
        ..CredentialFields::default()
    };
    let proto_secret = proto::ProvisionDeviceCredentialsMsg {
        provision_device_key: "k".into(),
        provision_device_secret: SECRET.into(),
    };
    let proto_token = proto::ValidateDeviceTokenRequestMsg {
        token: TOKEN.into(),
    };
    let proto_basic = proto::ValidateBasicMqttCredRequestMsg {
        client_id: "c".into(),
        user_name: "u".into(),
        password: PASSWORD.into(),
    };
    let proto_response = proto::ProvisionDeviceResponseMsg {
        status: 0,
        credentials_type: 0,
        credentials_value: TOKEN.into(),
    };
    let printed = [
        format!("{:?}", Secret(SECRET.into())),
        format!("{config:?}"),
        format!("{basic:?}"),
        format!(
            "{:?}",
            Credentials::AccessToken {
                token: TOKEN.into()
            }
        ),
        format!("{record:?}"),
        format!("{new_profile:?}"),
        format!("{update:?}"),
        format!("{request:?}"),
        format!("{fields:?}"),
        format!("{proto_secret:?}"),
        format!("{proto_token:?}"),
        format!("{proto_basic:?}"),
        format!("{proto_response:?}"),
    ];
    for text in printed {
        assert!(text.contains("***"), "{text}");
        for secret in [SECRET, TOKEN, PASSWORD, ADMIN_TOKEN] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

/// provisiond as a child, logging everything at trace level into files under `dir`.
struct LoggedServer {
    child: Child,
    http: SocketAddr,
    mqtt: SocketAddr,
    coap: SocketAddr,
}

impl LoggedServer {
    // The child is waited for in `stop`.
    #[allow(clippy::zombie_processes)]
    fn start(dir: &Path) -> LoggedServer {
        let mut child = super::serve_command(&dir.join("data"))
            .env("RUST_LOG", "trace")
            .stdout(File::create(dir.join("stdout.log")).unwrap())
            .stderr(File::create(dir.join("stderr.log")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("binary starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
            let find = |prefix: &str| -> Option<SocketAddr> {
                out.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            };
            if let (Some(http), Some(mqtt), Some(coap)) = (
                find("provisiond: serving HTTP on "),
                find("provisiond: serving MQTT on "),
                find("provisiond: serving CoAP on "),
            ) {
                return LoggedServer {
                    child,
                    http,
                    mqtt,
                    coap,
                };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not start: {out}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// SIGTERM, then waits for the exit.
    fn stop(mut self) {
        // SAFETY: kill(2) with a valid pid of our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert!(self.child.wait().unwrap().success());
    }
}

fn http_provision(server: &LoggedServer, body: &Value) -> Value {
    let text = agent()
        .post(server.url("/api/v1/provision"))
        .send(body.to_string())
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn coap_provision(server: &LoggedServer, body: &Value) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server.coap).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.code = MessageClass::from(2u8);
    packet.header.message_id = 7;
    packet.set_token(vec![1, 2, 3]);
    for segment in ["api", "v1", "provision"] {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    packet.payload = body.to_string().into_bytes();
    socket.send(&packet.to_bytes().unwrap()).unwrap();
    let mut buffer = vec![0; 65_536];
    let len = socket.recv(&mut buffer).expect("a CoAP reply");
    Packet::from_bytes(&buffer[..len]).unwrap().payload
}

#[test]
fn a_full_run_logged_at_trace_level_leaks_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let server = LoggedServer::start(dir.path());
    let agent = agent();
    let admin = |method: &str, path: &str, body: Option<Value>| {
        admin_call(&agent, &server.url(path), method, Some(ADMIN_TOKEN), body)
    };
    let (status, profile) = admin(
        "POST",
        "/api/admin/profiles",
        Some(json!({"name": "p", "provisionDeviceKey": "key-p", "provisionDeviceSecret": SECRET})),
    );
    assert_eq!(status, 201, "{profile}");
    let mut handed_out: Vec<String> = Vec::new();
    let request = |name: &str| json!({"deviceName": name, "provisionDeviceKey": "key-p", "provisionDeviceSecret": SECRET});
    // HTTP: a generated token, a requested token, MQTT basic credentials, a wrong secret.
    let answer = http_provision(&server, &request("http-1"));
    handed_out.push(answer["credentialsValue"].as_str().unwrap().to_string());
    let mut with_token = request("http-2");
    with_token["credentialsType"] = json!("ACCESS_TOKEN");
    with_token["token"] = json!(TOKEN);
    assert_eq!(http_provision(&server, &with_token)["status"], "SUCCESS");
    let mut basic = request("http-3");
    basic["credentialsType"] = json!("MQTT_BASIC");
    basic["clientId"] = json!("client-3");
    basic["username"] = json!("user-3");
    basic["password"] = json!(PASSWORD);
    assert_eq!(http_provision(&server, &basic)["status"], "SUCCESS");
    let mut wrong = request("http-4");
    wrong["provisionDeviceSecret"] = json!(WRONG);
    assert_eq!(http_provision(&server, &wrong)["status"], "NOT_FOUND");
    // MQTT, with a password in CONNECT (ignored, and never to be logged).
    let mut client = Client::open(server.mqtt, Version::V5);
    let connect = Connect {
        password: Some(CONNECT_PASSWORD.as_bytes()),
        ..Connect::provision()
    };
    assert_eq!(client.handshake(&connect), 0);
    let answer: Value =
        serde_json::from_slice(&client.request(1, 1, request("mqtt-1").to_string().as_bytes()))
            .unwrap();
    handed_out.push(answer["credentialsValue"].as_str().unwrap().to_string());
    // CoAP.
    let answer: Value =
        serde_json::from_slice(&coap_provision(&server, &request("coap-1"))).unwrap();
    handed_out.push(answer["credentialsValue"].as_str().unwrap().to_string());
    // Bulk import and export.
    let csv = format!("name,accessToken\nimported-1,{CSV_TOKEN}\n");
    let response = agent
        .post(server.url("/api/admin/import?profile=p"))
        .header("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send(csv)
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let csv =
        format!("name,mqttClientId,mqttUserName,mqttPassword\nimported-2,c2,u2,{CSV_PASSWORD}\n");
    agent
        .post(server.url("/api/admin/import?profile=p"))
        .header("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send(csv)
        .unwrap();
    let export = agent
        .get(server.url("/api/admin/export?profile=p"))
        .header("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(export.contains(CSV_TOKEN) && export.contains(CSV_PASSWORD));
    // A refused admin call with a wrong token.
    let (status, _) = admin_call(
        &agent,
        &server.url("/api/admin/profiles"),
        "GET",
        Some(WRONG),
        None,
    );
    assert_eq!(status, 401);
    server.stop();

    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap()
        + &std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "logged at trace level"
    );
    let mut secrets = vec![
        ADMIN_TOKEN.to_string(),
        SECRET.into(),
        TOKEN.into(),
        PASSWORD.into(),
        CONNECT_PASSWORD.into(),
        WRONG.into(),
        CSV_TOKEN.into(),
        CSV_PASSWORD.into(),
    ];
    secrets.extend(handed_out);
    for secret in secrets {
        assert!(!log.contains(&secret), "{secret} appears in the log");
    }
}
