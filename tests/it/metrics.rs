//! `/metrics` scraped from a real server process after traffic over every transport: every metric
//! the dashboard and the alert rules use exists, the counters moved by exactly what the traffic
//! implies, and the debug log of the whole run holds none of the secrets it used.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{ADMIN_TOKEN, ServerProcess, admin_call, agent};

/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A parsed Prometheus text exposition.
struct Scrape(Vec<Sample>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value of {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, vec![]),
            };
            samples.push((name.to_string(), labels, value));
        }
        Scrape(samples)
    }

    fn names(&self) -> BTreeSet<&str> {
        self.0.iter().map(|(name, _, _)| name.as_str()).collect()
    }

    /// The sum of the samples of `name` whose labels include all of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, value)| value)
            .sum()
    }
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    // Label values written by provisiond never contain `",` or escaped quotes.
    text.split("\",")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("label is key=value");
            (key.to_string(), value.trim_matches('"').to_string())
        })
        .collect()
}

fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let mut response = agent()
        .get(format!("http://{addr}/metrics"))
        .call()
        .expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    Scrape::parse(&response.body_mut().read_to_string().unwrap())
}

/// Every `provisiond_*` and `process_*` series name in PromQL expressions.
fn referenced_names(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        let bytes = expr.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let rest = &expr[i..];
            let starts_name = rest.starts_with("provisiond_") || rest.starts_with("process_");
            let boundary =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if starts_name && boundary {
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                names.insert(rest[..len].to_string());
                i += len;
            } else {
                i += 1;
            }
        }
    }
    names
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/provisiond.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    exprs
}

fn alert_exprs() -> Vec<String> {
    // The rules file is YAML; every expression is an `expr:` value, one line or a `|` block.
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(expr) = line.trim_start().strip_prefix("expr:") {
            let mut expr = expr.trim().to_string();
            if expr == "|" {
                expr.clear();
                while let Some(next) = lines.peek() {
                    if next.trim_start().starts_with("for:") {
                        break;
                    }
                    expr.push_str(lines.next().unwrap().trim());
                    expr.push(' ');
                }
            }
            exprs.push(expr);
        }
    }
    assert!(exprs.len() >= 10, "alert expressions found: {exprs:?}");
    exprs
}

fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn curl_provision(addr: std::net::SocketAddr, body: &str) -> Value {
    let output = Command::new("curl")
        .args(["-sS", "-X", "POST", "-H", "Content-Type: application/json"])
        .args(["--data-binary", body])
        .arg(format!("http://{addr}/api/v1/provision"))
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON answer")
}

fn mosquitto_rr(addr: std::net::SocketAddr, version: &str, body: &str) -> Value {
    let output = Command::new("mosquitto_rr")
        .args(["-V", version, "-h", &addr.ip().to_string()])
        .args(["-p", &addr.port().to_string()])
        .args(["-u", "provision", "-t", "/provision/request"])
        .args(["-e", "/provision/response", "-m", body, "-W", "20"])
        .output()
        .expect("mosquitto_rr runs (Debian package mosquitto-clients)");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON answer")
}

fn coap_client(addr: std::net::SocketAddr, body: &str) -> Value {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let binary = ["coap-client", "coap-client-notls"]
        .into_iter()
        .find(|name| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .expect("coap-client on the PATH (Debian: libcoap3-bin)");
    let output = Command::new(binary)
        .args(["-m", "POST", "-t", "application/json", "-e", body])
        .arg(format!("coap://{addr}/api/v1/provision"))
        .output()
        .expect("coap-client runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    serde_json::from_str(line).expect("JSON answer")
}

fn body(key: &str, secret: &str, name: &str) -> String {
    json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret, "deviceName": name })
        .to_string()
}

#[test]
fn scrape_has_every_dashboard_and_alert_metric_and_counts_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = ServerProcess::start_with(&dir.path().join("data"), |command| {
        command.env("RUST_LOG", "debug").stderr(Stdio::from(log));
    });
    let http = server.addr;
    let admin = |method: &str, path: &str, body: Option<Value>| {
        admin_call(
            &agent(),
            &format!("http://{http}{path}"),
            method,
            Some(ADMIN_TOKEN),
            body,
        )
    };
    // Secrets chosen here so that the log can be searched for them afterwards.
    let (key, secret) = ("metrics-key-8c1f27", "metrics-secret-5e0a9d41");
    let (status, reply) = admin(
        "POST",
        "/api/admin/profiles",
        Some(
            json!({ "name": "fleet", "strategy": "ALLOW_CREATE_NEW_DEVICES",
            "provisionDeviceKey": key, "provisionDeviceSecret": secret }),
        ),
    );
    assert_eq!(status, 201, "{reply}");
    let (pre_key, pre_secret) = ("metrics-pre-key-44b0", "metrics-pre-secret-90d3c2");
    let (status, reply) = admin(
        "POST",
        "/api/admin/profiles",
        Some(
            json!({ "name": "factory", "strategy": "CHECK_PRE_PROVISIONED_DEVICES",
            "provisionDeviceKey": pre_key, "provisionDeviceSecret": pre_secret }),
        ),
    );
    assert_eq!(status, 201, "{reply}");

    // Bulk import: three good rows, one with an access token that is too long.
    let long_token = "x".repeat(5000);
    let csv = format!(
        "name,accessToken\npre-1,tok-import-secret-1\npre-2,tok-import-secret-2\npre-3,\nbad,{long_token}\n"
    );
    let mut response = agent()
        .post(format!("http://{http}/api/admin/import?profile=factory"))
        .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send(csv.as_bytes())
        .expect("import goes through");
    let import: Value = response.body_mut().read_json().unwrap();
    assert_eq!(
        (import["created"].as_u64(), import["failed"].as_u64()),
        (Some(3), Some(1)),
        "{import}"
    );

    // HTTP through curl: 3 new devices (one with its own token), 1 replay, 2 pre-provisioned,
    // 2 wrong secrets, 1 unknown key, 1 unparsable body.
    let supplied_token = "tok-supplied-secret-71aa";
    for name in ["http-1", "http-2"] {
        assert_eq!(
            curl_provision(http, &body(key, secret, name))["status"],
            "SUCCESS"
        );
    }
    let with_token = json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret,
        "deviceName": "http-3", "credentialsType": "ACCESS_TOKEN", "token": supplied_token });
    assert_eq!(
        curl_provision(http, &with_token.to_string())["status"],
        "SUCCESS"
    );
    assert_eq!(
        curl_provision(http, &body(key, secret, "http-1"))["status"],
        "SUCCESS"
    );
    for name in ["pre-1", "pre-2"] {
        assert_eq!(
            curl_provision(http, &body(pre_key, pre_secret, name))["status"],
            "SUCCESS"
        );
    }
    for guess in ["guess-1", "guess-2"] {
        assert_eq!(
            curl_provision(http, &body(key, guess, "x"))["status"],
            "NOT_FOUND"
        );
    }
    assert_eq!(
        curl_provision(http, &body("no-such-key", "s", "x"))["status"],
        "NOT_FOUND"
    );
    assert_eq!(curl_provision(http, "{not json")["status"], "FAILURE");

    // MQTT through mosquitto_rr, 3.1.1 and 5; one device brings MQTT basic credentials.
    let mqtt_password = "mqtt-password-secret-3f9e";
    assert_eq!(
        mosquitto_rr(server.mqtt_addr, "mqttv311", &body(key, secret, "mqtt-1"))["status"],
        "SUCCESS"
    );
    let basic = json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret,
        "deviceName": "mqtt-2", "credentialsType": "MQTT_BASIC", "clientId": "c-mqtt-2",
        "username": "u-mqtt-2", "password": mqtt_password });
    assert_eq!(
        mosquitto_rr(server.mqtt_addr, "mqttv5", &basic.to_string())["status"],
        "SUCCESS"
    );

    // CoAP through coap-client.
    for name in ["coap-1", "coap-2"] {
        assert_eq!(
            coap_client(server.coap_addr, &body(key, secret, name))["status"],
            "SUCCESS"
        );
    }

    // One MQTT connection held open while scraping (counted from TCP accept).
    let _held = TcpStream::connect(server.mqtt_addr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = scrape(http);
        if metrics.sum("provisiond_open_connections", &[("transport", "MQTT")]) >= 1.0
            || Instant::now() > deadline
        {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    // Every name the dashboard and the alerts use is in the scrape.
    let names = metrics.names();
    let mut wanted = referenced_names(&dashboard_exprs());
    wanted.extend(referenced_names(&alert_exprs()));
    assert!(wanted.len() >= 20, "{wanted:?}");
    let missing: Vec<_> = wanted
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "referenced but not scraped: {missing:?}\nscraped: {names:?}"
    );

    // The counters moved by exactly what the traffic implies.
    let req = |transport: &str, status: &str| {
        metrics.sum(
            "provisiond_requests_total",
            &[("transport", transport), ("status", status)],
        )
    };
    assert_eq!(req("HTTP", "SUCCESS"), 6.0);
    assert_eq!(req("HTTP", "NOT_FOUND"), 3.0);
    assert_eq!(req("HTTP", "FAILURE"), 1.0);
    assert_eq!(req("MQTT", "SUCCESS"), 2.0);
    assert_eq!(req("COAP", "SUCCESS"), 2.0);
    let reason = |reason: &str| metrics.sum("provisiond_requests_total", &[("reason", reason)]);
    assert_eq!(reason("wrong_secret"), 2.0);
    assert_eq!(reason("unknown_key"), 1.0);
    assert_eq!(reason("unparsable"), 1.0);
    let per_profile = |profile: &str, status: &str| {
        metrics.sum(
            "provisiond_profile_requests_total",
            &[("profile", profile), ("status", status)],
        )
    };
    assert_eq!(per_profile("fleet", "SUCCESS"), 8.0);
    assert_eq!(per_profile("fleet", "NOT_FOUND"), 2.0);
    assert_eq!(per_profile("factory", "SUCCESS"), 2.0);
    let durations = |transport: &str| {
        metrics.sum(
            "provisiond_request_duration_seconds_count",
            &[("transport", transport)],
        )
    };
    assert_eq!(durations("HTTP"), 10.0);
    assert_eq!(durations("MQTT"), 2.0);
    assert_eq!(durations("COAP"), 2.0);
    let devices = |name: &str, profile: &str| metrics.sum(name, &[("profile", profile)]);
    assert_eq!(devices("provisiond_devices_stored", "fleet"), 7.0);
    assert_eq!(devices("provisiond_devices_provisioned", "fleet"), 7.0);
    assert_eq!(devices("provisiond_devices_stored", "factory"), 3.0);
    assert_eq!(devices("provisiond_devices_provisioned", "factory"), 2.0);
    let rows = |result: &str| metrics.sum("provisiond_import_rows_total", &[("result", result)]);
    assert_eq!(
        (rows("created"), rows("updated"), rows("failed")),
        (3.0, 0.0, 1.0)
    );
    assert_eq!(
        metrics.sum("provisiond_open_connections", &[("transport", "MQTT")]),
        1.0
    );
    assert!(metrics.sum("provisiond_open_connections", &[("transport", "HTTP")]) >= 1.0);
    assert!(metrics.sum("provisiond_shard_batch_size_count", &[]) >= 1.0);
    // Batch sizes have buckets of their own (powers of two), not the seconds buckets.
    assert!(
        metrics.0.iter().any(
            |(name, labels, _)| name == "provisiond_shard_batch_size_bucket"
                && labels.iter().any(|(k, v)| k == "le" && v == "1024")
        ),
        "batch size buckets go up to 1024"
    );
    assert!(metrics.sum("provisiond_store_sync_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(
        metrics.sum("provisiond_shard_mailbox_capacity", &[]),
        4096.0
    );
    assert_eq!(metrics.sum("provisiond_store_healthy", &[]), 1.0);
    assert!(metrics.sum("provisiond_disk_free_bytes", &[]) > 0.0);
    assert!(metrics.sum("process_resident_memory_bytes", &[]) > 0.0);
    assert_eq!(
        metrics.sum("provisiond_coap_retransmissions_total", &[]),
        0.0
    );

    // The counters of devices survive a restart (they live in the store, not in memory).
    server.kill();
    let server = ServerProcess::start(&dir.path().join("data"));
    let after = scrape(server.addr);
    assert_eq!(
        after.sum("provisiond_devices_stored", &[("profile", "fleet")]),
        7.0
    );
    assert_eq!(
        after.sum("provisiond_devices_provisioned", &[("profile", "factory")]),
        2.0
    );
    server.kill();

    // The debug log of the run names requests but none of the secrets they carried.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("provisioned"),
        "the debug log has request lines:\n{log}"
    );
    for secret in [
        secret,
        pre_secret,
        supplied_token,
        mqtt_password,
        "tok-import-secret-1",
        ADMIN_TOKEN,
    ] {
        assert!(
            !log.contains(secret),
            "the log contains a secret ({secret})"
        );
    }
}

#[test]
fn healthz_and_readyz_answer_once_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    for path in ["/healthz", "/readyz"] {
        let mut response = agent()
            .get(format!("http://{}{path}", server.addr))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let text = response.body_mut().read_to_string().unwrap();
        if path == "/readyz" {
            let ready: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                ready,
                json!({ "listeners": true, "shards": true, "store": true })
            );
        }
    }
    server.kill();
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = ServerProcess::start_with(&dir.path().join("data"), |command| {
        command
            .args(["--log-format", "json"])
            .env("RUST_LOG", "debug")
            .stderr(Stdio::from(log));
    });
    let reply = curl_provision(server.addr, &body("no-such-key", "s", "x"));
    assert_eq!(reply["status"], "NOT_FOUND");
    server.kill();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let mut refusals = 0;
    for line in text.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            event["timestamp"].is_string() && event["level"].is_string(),
            "{line}"
        );
        if event["fields"]["reason"] == "unknown_key" {
            refusals += 1;
        }
    }
    assert_eq!(
        refusals, 1,
        "the refusal is logged with its reason:\n{text}"
    );
}
