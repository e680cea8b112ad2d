//! Bulk import and export: the seed's example, every malformed-row kind, large files, import
//! under provisioning load, the export round trip, and the CLI.

use std::collections::{HashMap, HashSet};
use std::process::Command;

use serde_json::{Value, json};

use super::{ADMIN_TOKEN, ServerProcess, TestServer, binary, request};

const SEED: &str = "name,type,label,serialNumber,accessToken
Sensor-001,Temperature Sensor,Warehouse A,SN-4A21F,tok-a1b2c3d4
Sensor-002,Temperature Sensor,Warehouse B,SN-4A22F,tok-e5f6g7h8
Gateway-001,IoT Gateway,Main Hub,GW-0010A,tok-i9j0k1l2
";

impl TestServer {
    /// Uploads a CSV to the admin import endpoint.
    pub fn import(&self, csv: &[u8], query: &str) -> (u16, Value) {
        let mut response = super::agent()
            .post(self.url(&format!("/api/admin/import?{query}")))
            .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send(csv)
            .expect("import request goes through");
        let status = response.status().as_u16();
        (status, response.body_mut().read_json().expect("JSON reply"))
    }

    /// Downloads the export.
    pub fn export(&self, query: &str) -> String {
        let mut response = super::agent()
            .get(self.url(&format!("/api/admin/export?{query}")))
            .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
            .call()
            .expect("export request goes through");
        assert_eq!(response.status().as_u16(), 200);
        response.body_mut().read_to_string().unwrap()
    }
}

fn summary(reply: &Value) -> (u64, u64, u64) {
    (
        reply["created"].as_u64().unwrap(),
        reply["updated"].as_u64().unwrap(),
        reply["failed"].as_u64().unwrap(),
    )
}

fn errors(reply: &Value) -> Vec<(u64, String)> {
    reply["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_seed_example_imports_and_only_those_devices_provision() {
    let server = TestServer::start();
    let (key, secret) = server.profile(
        "warehouse",
        "CHECK_PRE_PROVISIONED_DEVICES",
        "RETURN_EXISTING",
    );
    // serialNumber is not a reserved column: unmapped it is an error, mapped it is an attribute.
    let (status, reply) = server.import(SEED.as_bytes(), "profile=warehouse");
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("serialNumber"),
        "{reply}"
    );
    assert!(server.device_names("warehouse").is_empty());
    let (status, reply) = server.import(
        SEED.as_bytes(),
        "profile=warehouse&map=serialNumber%3DSERVER_ATTRIBUTE",
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(summary(&reply), (3, 0, 0));
    let sensor = server.device("Sensor-001").unwrap();
    assert_eq!(sensor["type"], "Temperature Sensor");
    assert_eq!(sensor["label"], "Warehouse A");
    assert_eq!(sensor["serverAttributes"]["serialNumber"], "SN-4A21F");
    assert_eq!(sensor["credentialsValue"], "tok-a1b2c3d4");
    assert_eq!(
        sensor["provisionState"],
        Value::Null,
        "imported devices are unprovisioned"
    );
    // The listed devices provision and get their imported tokens; an unlisted name is refused.
    let (_, reply) = server.provision(&request(&key, &secret, "Gateway-001"));
    assert_eq!(reply["credentialsValue"], "tok-i9j0k1l2");
    assert_eq!(
        server.device("Gateway-001").unwrap()["provisionState"],
        "provisioned"
    );
    let (_, reply) = server.provision(&request(&key, &secret, "Sensor-999"));
    assert_eq!(reply["status"], "FAILURE");
    assert!(server.device("Sensor-999").is_none());
    // Importing the same file again without update: every row is an error, nothing changes.
    let (_, reply) = server.import(
        SEED.as_bytes(),
        "profile=warehouse&map=serialNumber%3DSERVER_ATTRIBUTE",
    );
    assert_eq!(summary(&reply), (0, 0, 3));
    assert!(errors(&reply)[0].1.starts_with("device already exists"));
    // With update, labels change, credentials are swapped, provisionState is kept.
    let changed = "name,label,accessToken\nGateway-001,Roof,tok-new\n";
    let (_, reply) = server.import(changed.as_bytes(), "profile=warehouse&update=true");
    assert_eq!(summary(&reply), (0, 1, 0), "{reply}");
    let gateway = server.device("Gateway-001").unwrap();
    assert_eq!(gateway["label"], "Roof");
    assert_eq!(gateway["credentialsValue"], "tok-new");
    assert_eq!(gateway["provisionState"], "provisioned");
    assert_eq!(gateway["serverAttributes"]["serialNumber"], "GW-0010A");
    let mut reuse = request(&key, &secret, "x");
    reuse["token"] = json!("tok-i9j0k1l2");
    let (okey, osecret) = server.profile("open", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    reuse["provisionDeviceKey"] = json!(okey);
    reuse["provisionDeviceSecret"] = json!(osecret);
    let (_, reply) = server.provision(&reuse);
    assert_eq!(
        reply["status"], "SUCCESS",
        "the replaced token is free again"
    );
}

#[test]
fn every_malformed_row_is_reported_and_skipped() {
    let server = TestServer::start();
    server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let long = "n".repeat(256);
    let mut csv = format!(
        "name,type,accessToken\n\
         good-1,t,tok-1\n\
         good-1,t,tok-x\n\
         thief,t,tok-1\n\
         {long},t,\n\
         too,many,columns,here\n\
         short\n\
         \"unbalanced,t,tok-u\n\
         good-2,t,tok-2\n"
    )
    .into_bytes();
    csv.extend_from_slice(b"bad-\xff-utf8,t,tok-3\n");
    csv.extend_from_slice(b"good-3,t,tok-4\n");
    let (status, reply) = server.import(&csv, "profile=fleet");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(summary(&reply), (3, 0, 7), "{reply}");
    let reasons: HashMap<u64, String> = errors(&reply).into_iter().collect();
    assert_eq!(reasons[&3], "duplicate name in the file");
    assert_eq!(reasons[&4], "credentials already belong to another device");
    assert!(reasons[&5].contains("255 characters"));
    assert_eq!(reasons[&6], "expected 3 columns, found 4");
    assert_eq!(reasons[&7], "expected 3 columns, found 1");
    assert_eq!(reasons[&8], "unbalanced quotes");
    assert_eq!(reasons[&10], "the row is not valid UTF-8");
    let mut names = server.device_names("fleet");
    names.sort();
    assert_eq!(names, ["good-1", "good-2", "good-3"]);
    assert_eq!(
        server.device("good-1").unwrap()["credentialsValue"],
        "tok-1",
        "the duplicate row changed nothing"
    );
    assert!(server.device("thief").is_none());
}

#[test]
fn bom_crlf_quotes_newlines_delimiters_and_empty_files() {
    let server = TestServer::start();
    server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let csv = b"\xEF\xBB\xBFname;label;SHARED_ATTRIBUTE:note\r\n\"semi;colon\";\"two\r\nlines\";\"say \"\"hi\"\"\"\r\nplain;x;42\r\n";
    let (status, reply) = server.import(csv, "profile=fleet&delimiter=%3B");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(summary(&reply), (2, 0, 0), "{reply}");
    let odd = server.device("semi;colon").unwrap();
    assert_eq!(odd["label"], "two\r\nlines");
    assert_eq!(odd["sharedAttributes"]["note"], "say \"hi\"");
    assert_eq!(
        server.device("plain").unwrap()["sharedAttributes"]["note"],
        42
    );
    // A 0-byte file has no header: a clear error. A header-only file imports nothing.
    let (status, reply) = server.import(b"", "profile=fleet");
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("empty"),
        "{reply}"
    );
    let (status, reply) = server.import(b"name,type\n", "profile=fleet");
    assert_eq!((status, summary(&reply)), (200, (0, 0, 0)));
    // No header: columns by position.
    let (status, reply) = server.import(
        b"p1,ptype\n",
        "profile=fleet&header=false&map=1%3DNAME%2C2%3DTYPE",
    );
    assert_eq!((status, summary(&reply)), (200, (1, 0, 0)), "{reply}");
    assert_eq!(server.device("p1").unwrap()["type"], "ptype");
    let (status, _) = server.import(b"p2,t\n", "profile=fleet&header=false");
    assert_eq!(status, 400, "without a header every column must be mapped");
    let (status, reply) = server.import(b"name\nx\n", "profile=nobody");
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap().contains("nobody"));
}

#[test]
fn a_large_file_with_one_bad_row_imports_everything_else() {
    let server = TestServer::start();
    server.profile("fleet", "CHECK_PRE_PROVISIONED_DEVICES", "RETURN_EXISTING");
    let mut csv = String::from("name,accessToken\n");
    for i in 0..100_000 {
        if i == 50_000 {
            csv.push_str("broken,row,extra\n");
        }
        csv.push_str(&format!("dev-{i:06},token-{i:06}\n"));
    }
    let (status, reply) = server.import(csv.as_bytes(), "profile=fleet");
    assert_eq!(status, 200);
    assert_eq!(summary(&reply), (100_000, 0, 1));
    assert_eq!(
        errors(&reply),
        [(50_002, "expected 2 columns, found 3".to_string())]
    );
    assert_eq!(
        server.device("dev-099999").unwrap()["credentialsValue"],
        "token-099999"
    );
}

#[test]
fn import_during_provisioning_traffic_loses_and_duplicates_nothing() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    // Provisioning clients claim tokens that the import also carries, and create other devices.
    let url = server.url("/api/v1/provision");
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (url, key, secret) = (url.clone(), key.clone(), secret.clone());
            std::thread::spawn(move || {
                let agent = super::agent();
                let mut told = Vec::new();
                for i in 0..500 {
                    let mut body = request(&key, &secret, &format!("live-{c}-{i}"));
                    if i % 5 == 0 {
                        body["token"] = json!(format!("shared-{c}-{i}"));
                    }
                    let mut response = agent.post(&url).send_json(&body).unwrap();
                    let reply: Value = response.body_mut().read_json().unwrap();
                    if reply["status"] == "SUCCESS" {
                        told.push((format!("live-{c}-{i}"), reply["credentialsValue"].clone()));
                    }
                }
                told
            })
        })
        .collect();
    let mut csv = String::from("name,accessToken\n");
    for c in 0..4 {
        for i in 0..2000 {
            let token = if i % 5 == 0 && i < 500 {
                format!("shared-{c}-{i}")
            } else {
                format!("imp-{c}-{i}")
            };
            csv.push_str(&format!("imported-{c}-{i},{token}\n"));
        }
    }
    let (status, reply) = server.import(csv.as_bytes(), "profile=fleet");
    assert_eq!(status, 200);
    let told: Vec<(String, Value)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let (created, _, failed) = summary(&reply);
    assert_eq!(created + failed, 8000);
    // Every device a client was told about exists with those credentials.
    for (name, value) in &told {
        assert_eq!(
            &server.device(name).unwrap()["credentialsValue"],
            value,
            "{name}"
        );
    }
    // No credentials id belongs to two devices, and the count of devices adds up.
    let names = server.device_names("fleet");
    assert_eq!(names.len() as u64, told.len() as u64 + created);
    let mut ids = HashSet::new();
    for name in &names {
        let id = server.device(name).unwrap()["credentialsId"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(ids.insert(id.clone()), "{id} belongs to two devices");
    }
}

#[test]
fn export_then_import_into_an_empty_store_reproduces_the_fleet() {
    let source = TestServer::start();
    let (key, secret) = source.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let csv = "name,type,label,description,isGateway,serialNumber,SHARED_ATTRIBUTE:fw,TIMESERIES:temp,mqttClientId,mqttUserName,mqttPassword\n\
               a,meter,L1,first,true,SN1,1.2,21.5,,,\n\
               b,meter,,,false,SN2,,,cid,user,pw\n";
    let (_, reply) = source.import(
        csv.as_bytes(),
        "profile=fleet&map=serialNumber%3DSERVER_ATTRIBUTE",
    );
    assert_eq!(summary(&reply), (2, 0, 0), "{reply}");
    let mut cert = request(&key, &secret, "c");
    cert["credentialsType"] = json!("X509_CERTIFICATE");
    cert["hash"] = json!("-----BEGIN CERTIFICATE-----\nQUJDRA==\n-----END CERTIFICATE-----\n");
    source.provision(&cert);
    source.provision(&request(&key, &secret, "a"));
    let exported = source.export("profile=fleet");
    assert!(
        exported.starts_with("name,type,label,description,isGateway,accessToken,x509,"),
        "{exported}"
    );

    let target = TestServer::start();
    target.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let (status, reply) = target.import(exported.as_bytes(), "profile=fleet");
    assert_eq!((status, summary(&reply)), (200, (3, 0, 0)), "{reply}");
    let strip = |mut d: Value| {
        d.as_object_mut().unwrap().remove("createdAt");
        d.as_object_mut().unwrap().remove("provisionedAt");
        d
    };
    for name in ["a", "b", "c"] {
        assert_eq!(
            strip(source.device(name).unwrap()),
            strip(target.device(name).unwrap()),
            "{name}"
        );
    }
    assert_eq!(
        target.export("profile=fleet"),
        exported,
        "a second round trip is byte-identical"
    );
}

#[test]
fn cli_imports_locally_with_an_error_report_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(binary())
            .args(args)
            .env_remove("PROVISIOND_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let out = run(&[
        "profile",
        "create",
        "fleet",
        "--strategy",
        "CHECK_PRE_PROVISIONED_DEVICES",
        "--data-dir",
        d,
    ]);
    assert!(out.status.success());
    let file = dir.path().join("fleet.csv");
    std::fs::write(&file, "name,accessToken\nd1,t1\nd2,t1\nd3,t3\n").unwrap();
    let report = dir.path().join("errors.csv");
    let out = run(&[
        "import",
        file.to_str().unwrap(),
        "--profile",
        "fleet",
        "--errors",
        report.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    assert!(
        !out.status.success(),
        "a failed row makes the exit non-zero"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("created 2, updated 0, failed 1"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3: credentials already belong to another device"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "line,reason\n3,credentials already belong to another device\n"
    );
    let out = run(&[
        "import",
        "/nonexistent.csv",
        "--profile",
        "fleet",
        "--data-dir",
        d,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent.csv"));
    let exported = dir.path().join("out.csv");
    let out = run(&[
        "export",
        "--profile",
        "fleet",
        exported.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&exported).unwrap();
    assert!(
        text.contains("\nd1,fleet,,,false,t1,") && text.contains("\nd3,fleet,,,false,t3,"),
        "{text}"
    );
    // The same against a running server.
    let server = ServerProcess::start(&data);
    let url = format!("http://{}", server.addr);
    std::fs::write(&file, "name,accessToken\nd4,t4\n").unwrap();
    let out = run(&[
        "import",
        file.to_str().unwrap(),
        "--profile",
        "fleet",
        "--server",
        &url,
        "--admin-token",
        ADMIN_TOKEN,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["export", "--server", &url, "--admin-token", ADMIN_TOKEN]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("name,type,label,description,isGateway,profile,"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 4, "{text}");
    server.kill();
}

#[test]
fn export_over_http_is_valid_chunked_encoding() {
    // curl checks chunked framing strictly; 3,000 devices make a body of many chunks.
    let server = TestServer::start();
    server.profile("fleet", "CHECK_PRE_PROVISIONED_DEVICES", "RETURN_EXISTING");
    let mut csv = String::from("name,type,accessToken\n");
    for i in 0..3000 {
        csv.push_str(&format!("dev-{i:05},meter,tok-{i:05}-0123456789\n"));
    }
    let (status, reply) = server.import(csv.as_bytes(), "profile=fleet");
    assert_eq!((status, summary(&reply)), (200, (3000, 0, 0)), "{reply}");
    let output = Command::new("curl")
        .args(["-sS", "--fail", "-H"])
        .arg(format!("Authorization: Bearer {ADMIN_TOKEN}"))
        .arg(server.url("/api/admin/export?profile=fleet"))
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl rejected the export: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 CSV");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3001, "header and every device");
    assert!(lines[0].starts_with("name,type,"), "{}", lines[0]);
    assert!(
        lines[3000].starts_with("dev-02999,meter,"),
        "{}",
        lines[3000]
    );
    assert!(!text.contains('\0'));
}
