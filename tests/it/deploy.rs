//! Every file in `deploy/` is checked with the tool that would consume it: promtool for the
//! Prometheus configuration, rules and their unit tests; docker-compose's schema for the compose
//! file; the Kubernetes OpenAPI schemas for the manifests; systemd-analyze for the unit. The
//! Dockerfile's build stage must build the way README.md says.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(path: &str) -> PathBuf {
    root().join("deploy").join(path)
}

fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs ({e}); .ci/run installs it"))
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn prometheus_config_rules_and_rule_unit_tests_pass_promtool() {
    let dir = deploy("prometheus");
    assert_ok(
        &run("promtool", &["check", "config", "prometheus.yml"], &dir),
        "promtool check config",
    );
    assert_ok(
        &run("promtool", &["check", "rules", "alerts.yml"], &dir),
        "promtool check rules",
    );
    let tests = run("promtool", &["test", "rules", "alerts.test.yml"], &dir);
    assert_ok(&tests, "promtool test rules");
    // Every alert has at least one unit test.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let unit_tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                unit_tests.contains(&format!("alertname: {name}")),
                "alert {name} has no promtool unit test"
            );
        }
    }
}

#[test]
fn compose_file_is_valid_and_wires_prometheus_and_grafana() {
    let output = run("docker-compose", &["config", "-q"], &deploy(""));
    assert_ok(&output, "docker-compose config");
    let compose = std::fs::read_to_string(deploy("docker-compose.yml")).unwrap();
    for needle in [
        "dockerfile: deploy/Dockerfile",
        "./prometheus:/etc/prometheus",
        "./grafana/provisioning:/etc/grafana/provisioning",
        "./grafana/provisiond.json:/var/lib/grafana/dashboards/provisiond.json",
    ] {
        assert!(compose.contains(needle), "compose file lacks {needle:?}");
    }
    let prometheus = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
    assert!(
        prometheus.contains("provisiond:8080"),
        "Prometheus scrapes the compose service"
    );
    let provider =
        std::fs::read_to_string(deploy("grafana/provisioning/dashboards/provisiond.yml")).unwrap();
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));
    let datasource =
        std::fs::read_to_string(deploy("grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert!(datasource.contains("url: http://prometheus:9090"));
}

#[test]
fn dashboard_json_parses_and_every_panel_queries_prometheus() {
    let text = std::fs::read_to_string(deploy("grafana/provisiond.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert_eq!(dashboard["uid"], "provisiond");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut queried = 0;
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(panel["description"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(panel["datasource"]["uid"], "${datasource}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            assert!(target["expr"].as_str().is_some_and(|e| e.contains('(')));
        }
        queried += 1;
    }
    assert!(queried >= 15, "{queried} panels");
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let output = run(
        "kubernetes-validate",
        &["--strict", "k8s/provisiond.yaml"],
        &deploy(""),
    );
    assert_ok(&output, "kubernetes-validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for kind in [
        "statefulset/provisiond",
        "service/provisiond-mqtt",
        "service/provisiond-coap",
    ] {
        assert!(
            stdout.contains(&format!("passed for resource {kind}")),
            "{stdout}"
        );
    }
    let manifest = std::fs::read_to_string(deploy("k8s/provisiond.yaml")).unwrap();
    for needle in [
        "kind: ServiceMonitor",
        "path: /healthz",
        "path: /readyz",
        "protocol: UDP",
    ] {
        assert!(manifest.contains(needle), "manifest lacks {needle:?}");
    }
    assert!(
        manifest.contains("volumeClaimTemplates:"),
        "data on a PersistentVolumeClaim"
    );
}

#[test]
fn systemd_unit_verifies_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    // systemd-analyze checks that ExecStart exists: point it at the binary under test.
    let unit = std::fs::read_to_string(deploy("systemd/provisiond.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/provisiond",
            env!("CARGO_BIN_EXE_provisiond"),
        );
    let path = dir.path().join("provisiond.service");
    std::fs::write(&path, unit).unwrap();
    let output = run(
        "systemd-analyze",
        &["verify", path.to_str().unwrap()],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about_unit: Vec<_> = stderr
        .lines()
        .filter(|line| line.contains("provisiond.service"))
        .collect();
    assert!(output.status.success() && about_unit.is_empty(), "{stderr}");
}

#[test]
fn dockerfile_builds_with_the_readme_build_command() {
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    // Stages split at FROM lines: [comments, build stage, runtime stage].
    let build_stage = dockerfile.split("\nFROM ").nth(1).expect("a build stage");
    assert!(build_stage.contains(" AS build"), "{build_stage}");
    let cargo_runs: Vec<&str> = build_stage
        .lines()
        .filter_map(|line| line.strip_prefix("RUN "))
        .filter(|cmd| cmd.starts_with("cargo "))
        .collect();
    assert_eq!(cargo_runs.len(), 1, "one cargo command in the build stage");
    let readme_build = readme
        .lines()
        .find(|line| line.starts_with("cargo build"))
        .expect("README.md names its build command");
    assert_eq!(cargo_runs[0], readme_build);
    // The runtime stage: non-root, a data volume, a health check.
    let runtime = dockerfile.split("\nFROM ").nth(2).expect("a runtime stage");
    for needle in [
        "USER provisiond",
        "VOLUME",
        "HEALTHCHECK",
        "/readyz",
        "EXPOSE",
    ] {
        assert!(runtime.contains(needle), "runtime stage lacks {needle}");
    }
}
