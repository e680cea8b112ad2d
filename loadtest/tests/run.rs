//! The load tester's own tests: small embedded runs over every transport, each ending with every
//! credential verified against the server's export; the JSON report's fields; the baseline
//! server; bad flags. They need provisiond built next to loadtest (`cargo test --workspace`
//! builds both).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("loadtest runs")
}

/// Runs an embedded load test and returns its JSON report; it must exit 0.
fn embedded_run(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let mut all = vec![
        "run",
        "--quiet",
        "--json",
        path(&json),
        "--html",
        path(&html),
    ];
    all.extend_from_slice(args);
    let out = loadtest(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed:\n{stdout}\n{stderr}");
    let html = std::fs::read_to_string(&html).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        3,
        "three plots in the HTML report"
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every request succeeded and every device's credentials were verified.
fn assert_all_verified(report: &Value, devices: u64) {
    assert_eq!(report["requests"], devices, "{report:#}");
    assert_eq!(report["succeeded"], devices, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    let v = &report["verification"];
    assert_eq!(v["missing"], 0, "{v:#}");
    assert_eq!(v["differ"], 0, "{v:#}");
    assert!(v["verified"].as_u64().unwrap() > 0);
    assert_eq!(v["verified"], v["checked"], "{v:#}");
    assert_eq!(report["replays"]["mismatched"], 0);
}

#[test]
fn http_with_every_credentials_kind_and_replays_is_verified() {
    let report = embedded_run(&[
        "--embedded",
        "--transport",
        "http",
        "--devices",
        "400",
        "--concurrency",
        "16",
        "--credentials",
        "token,supplied,basic,x509",
        "--replay",
        "0.2",
    ]);
    assert_all_verified(&report, 400);
    assert!(report["replays"]["sent"].as_u64().unwrap() > 0);
}

#[test]
fn mqtt_311_and_5_over_tcp_and_tls_are_verified() {
    let report = embedded_run(&[
        "--embedded",
        "--transport",
        "mqtt,mqtt5,mqtts,mqtts5",
        "--devices",
        "200",
        "--concurrency",
        "8",
        "--credentials",
        "token,basic",
    ]);
    assert_all_verified(&report, 200);
    for t in ["mqtt", "mqtt5", "mqtts", "mqtts5"] {
        assert_eq!(report["by_transport"][t]["succeeded"], 50, "{t}");
    }
}

#[test]
fn coap_open_loop_is_verified() {
    let report = embedded_run(&[
        "--embedded",
        "--transport",
        "coap",
        "--devices",
        "200",
        "--rate",
        "400",
        "--ramp",
        "0.2",
        "--credentials",
        "token,x509",
    ]);
    assert_all_verified(&report, 200);
    assert_eq!(report["config"]["mode"], "open");
    assert_eq!(report["never_sent"], 0);
}

#[test]
fn preprovisioned_fleet_over_a_transport_mix_is_verified() {
    let report = embedded_run(&[
        "--embedded",
        "--scenario",
        "preprovisioned",
        "--transport",
        "http:2,mqtt:1,coap:1",
        "--devices",
        "200",
        "--credentials",
        "token,supplied,basic,x509",
    ]);
    assert_all_verified(&report, 200);
}

#[test]
fn the_json_report_has_every_field() {
    let report = embedded_run(&["--embedded", "--devices", "50", "--concurrency", "4"]);
    for key in [
        "tool",
        "version",
        "target",
        "machine",
        "config",
        "elapsed_s",
        "requests",
        "succeeded",
        "failed",
        "throughput_per_s",
        "latency_ms",
        "errors",
        "connect_failures",
        "never_sent",
        "by_transport",
        "replays",
        "verification",
        "server_rss_mib",
        "timeline",
    ] {
        assert!(report.get(key).is_some(), "missing {key}: {report:#}");
    }
    for key in [
        "p50",
        "p90",
        "p99",
        "p999",
        "max",
        "mean",
        "measured",
        "warmup_excluded",
    ] {
        assert!(
            report["latency_ms"][key].as_f64().is_some(),
            "latency {key}"
        );
    }
    for key in ["cores", "memory_mib"] {
        assert!(report["machine"][key].as_u64().is_some(), "machine {key}");
    }
    let timeline = report["timeline"].as_array().unwrap();
    assert!(!timeline.is_empty());
    let total: u64 = timeline
        .iter()
        .map(|s| s["succeeded"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 50);
}

#[test]
fn the_baseline_server_answers_every_transport() {
    let report = embedded_run(&[
        "--embedded-baseline",
        "--transport",
        "http,mqtt,mqtt5,coap",
        "--devices",
        "200",
    ]);
    assert_eq!(report["succeeded"], 200, "{report:#}");
    assert!(report["verification"].is_null());
    assert!(report["target"].as_str().unwrap().contains("baseline"));
}

#[test]
fn a_warmup_leaves_its_requests_out_of_the_percentiles_only() {
    let report = embedded_run(&[
        "--embedded",
        "--devices",
        "100000",
        "--rate",
        "300",
        "--duration",
        "2",
        "--warmup",
        "1",
    ]);
    let requests = report["requests"].as_u64().unwrap();
    let measured = report["latency_ms"]["measured"].as_u64().unwrap();
    let excluded = report["latency_ms"]["warmup_excluded"].as_u64().unwrap();
    // About 300 requests start in each of the two seconds.
    assert!(excluded > 200 && measured > 200, "{report:#}");
    assert_eq!(measured + excluded, requests);
    assert_eq!(report["config"]["warmup_s"], 1.0);
    // Every request is still verified and plotted.
    assert_all_verified(&report, requests);
    let plotted: u64 = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["succeeded"].as_u64().unwrap())
        .sum();
    assert_eq!(plotted, requests);
}

#[test]
fn bad_flags_are_refused_with_one_clear_line() {
    for (args, says) in [
        (vec!["run", "--replay", "1.5"], "replay share"),
        (
            vec!["run", "--transport", "gopher"],
            "unknown choice \"gopher\"",
        ),
        (vec!["run", "--transport", "http:0"], "weight"),
        (vec!["run", "--rate", "0"], "rate must be above 0"),
        (vec!["run", "--ramp", "5"], "--rate"),
        (vec!["run", "--devices", "0"], "devices"),
        (
            vec!["run", "--warmup", "5", "--duration", "5"],
            "--warmup (5 s) must be shorter than --duration (5 s)",
        ),
        (
            vec![
                "run",
                "--server",
                "https://x:1",
                "--key",
                "k",
                "--secret",
                "s",
            ],
            "http://",
        ),
        (
            vec![
                "run",
                "--embedded",
                "--server-bin",
                "/nonexistent/provisiond",
            ],
            "is not a file",
        ),
    ] {
        let out = loadtest(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn a_cpu_without_the_build_features_gets_one_line_naming_them() {
    // QEMU's user-mode emulation of its qemu64 model: no SSE4, no PCLMULQDQ.
    let output = Command::new("qemu-x86_64")
        .args(["-cpu", "qemu64", env!("CARGO_BIN_EXE_loadtest"), "--help"])
        .output()
        .expect("qemu-x86_64 runs (Debian package qemu-user)");
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(output.stdout.is_empty());
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(
            "loadtest: this CPU lacks pclmulqdq, ssse3, sse4.1, sse4.2, popcnt, which this build uses"
        ),
        "{text}"
    );
}
