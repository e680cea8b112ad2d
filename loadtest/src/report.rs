//! The summary table on standard output and the JSON report.

use std::time::Duration;

use serde_json::{Value, json};

use crate::args::RunArgs;
use crate::stats::Stats;

/// Examples of verification problems kept for the report.
const MAX_NOTES: usize = 20;

/// What the verification found.
#[derive(Debug, Default)]
pub struct Verification {
    /// Devices told credentials.
    pub checked: u64,
    /// Stored, provisioned, with exactly the credentials told.
    pub verified: u64,
    /// Not stored at all.
    pub missing: u64,
    /// Stored otherwise than told.
    pub differ: u64,
    /// The first few problems.
    pub notes: Vec<String>,
}

impl Verification {
    /// Keeps a problem as an example.
    pub fn note(&mut self, note: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(note);
        }
    }
}

/// Everything a report shows.
#[derive(Debug)]
pub struct Report<'a> {
    /// The flags.
    pub args: &'a RunArgs,
    /// What was load-tested.
    pub target: String,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// The measurements.
    pub stats: &'a Stats,
    /// The verification, if done.
    pub verification: Option<&'a Verification>,
    /// The embedded server's resident memory before the run and at its peak, in MiB.
    pub server_rss_mib: (Option<f64>, Option<f64>),
    /// The device name prefix.
    pub prefix: &'a str,
}

impl Report<'_> {
    /// Successful requests per second over the whole run.
    pub fn throughput(&self) -> f64 {
        self.stats.succeeded as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.stats.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// The machine: cores and memory.
pub fn machine() -> Value {
    let mem_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
    });
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_mib": mem_kib.map(|k| k / 1024),
        "loadavg": std::fs::read_to_string("/proc/loadavg").ok().map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
    })
}

/// The JSON report.
pub fn json(r: &Report<'_>) -> Value {
    let a = r.args;
    let s = r.stats;
    let timeline: Vec<Value> = s
        .timeline
        .iter()
        .enumerate()
        .map(|(i, sec)| {
            let q = |q: f64| sec.latency.value_at_quantile(q) as f64 / 1000.0;
            json!({
                "second": i,
                "succeeded": sec.succeeded,
                "errors": sec.errors,
                "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": sec.latency.max() as f64 / 1000.0,
            })
        })
        .collect();
    json!({
        "tool": "loadtest",
        "version": env!("CARGO_PKG_VERSION"),
        "target": r.target,
        "machine": machine(),
        "config": {
            "transports": a.transport.choices.iter().map(|(t, w)| json!({"transport": t.name(), "weight": w})).collect::<Vec<_>>(),
            "mqtt_flow": format!("{:?}", a.mqtt_flow).to_lowercase(),
            "mode": if a.rate.is_some() { "open" } else { "closed" },
            "concurrency": a.concurrency,
            "rate": a.rate,
            "ramp_s": a.ramp.map(|d| d.as_secs_f64()),
            "devices": a.devices,
            "duration_s": a.duration.as_secs_f64(),
            "warmup_s": a.warmup.as_secs_f64(),
            "timeout_s": a.timeout.as_secs_f64(),
            "scenario": format!("{:?}", a.scenario).to_lowercase(),
            "replay": a.replay,
            "credentials": a.credentials.choices.iter().map(|(c, w)| json!({"kind": c.name(), "weight": w})).collect::<Vec<_>>(),
            "prefix": r.prefix,
        },
        "elapsed_s": r.elapsed.as_secs_f64(),
        "requests": s.completed(),
        "succeeded": s.succeeded,
        "failed": s.failed(),
        "throughput_per_s": r.throughput(),
        "latency_ms": {
            "p50": r.ms(0.5), "p90": r.ms(0.9), "p99": r.ms(0.99), "p999": r.ms(0.999),
            "max": s.latency.max() as f64 / 1000.0, "mean": s.latency.mean() / 1000.0,
            "measured": s.latency.len(), "warmup_excluded": s.warmup_requests,
        },
        "errors": s.errors,
        "connect_failures": s.connect_failures,
        "never_sent": s.never_sent,
        "by_transport": s.by_transport.iter().map(|(t, (n, ok))| (t.to_string(), json!({"requests": n, "succeeded": ok}))).collect::<serde_json::Map<_, _>>(),
        "replays": { "sent": s.replays, "mismatched": s.replay_mismatches },
        "verification": r.verification.map(|v| json!({
            "checked": v.checked, "verified": v.verified, "missing": v.missing, "differ": v.differ, "examples": v.notes,
        })),
        "server_rss_mib": { "before": r.server_rss_mib.0, "peak": r.server_rss_mib.1 },
        "timeline": timeline,
    })
}

/// The summary table.
pub fn print_summary(r: &Report<'_>) {
    let s = r.stats;
    println!("target          {}", r.target);
    println!(
        "load            {} loop, {} in flight at most{}",
        if r.args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        r.args.concurrency,
        r.args
            .rate
            .map(|x| format!(", {x} requests/s"))
            .unwrap_or_default()
    );
    println!("elapsed         {:.2} s", r.elapsed.as_secs_f64());
    println!(
        "requests        {} ({} succeeded, {} failed)",
        s.completed(),
        s.succeeded,
        s.failed()
    );
    println!("throughput      {:.0} provisions/s", r.throughput());
    println!(
        "latency (ms)    p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        r.ms(0.5),
        r.ms(0.9),
        r.ms(0.99),
        r.ms(0.999),
        s.latency.max() as f64 / 1000.0
    );
    if s.warmup_requests > 0 {
        println!(
            "                (the {} requests started in the first {} s of warm-up are left out)",
            s.warmup_requests,
            r.args.warmup.as_secs_f64()
        );
    }
    for (t, (n, ok)) in &s.by_transport {
        println!("  {t:<13} {n} requests, {ok} succeeded");
    }
    println!("connect fails   {}", s.connect_failures);
    if let Some(n) = s.never_sent.filter(|n| *n > 0) {
        println!(
            "never sent      {n} requests were due but every worker was busy (behind schedule)"
        );
    }
    for (reason, n) in &s.errors {
        println!("  error         {n} × {reason}");
    }
    if s.replays > 0 {
        println!(
            "replays         {} ({} answered differently)",
            s.replays, s.replay_mismatches
        );
    }
    match r.verification {
        Some(v) => {
            println!(
                "verified        {} of {} devices ({} missing, {} differ)",
                v.verified, v.checked, v.missing, v.differ
            );
            for n in &v.notes {
                println!("  problem       {n}");
            }
        }
        None => println!("verified        not checked"),
    }
    if let (Some(before), Some(peak)) = r.server_rss_mib {
        println!("server RSS      {before:.0} MiB before, {peak:.0} MiB peak");
    }
}
