//! `loadtest run`: sets up the target (embedded or external), the profile and the fleet, drives
//! the load with worker tasks, verifies what devices were told, and reports.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::admin::Admin;
use crate::args::{MqttFlow, RunArgs, Scenario, Transport};
use crate::client::coap::CoapClient;
use crate::client::http::HttpClient;
use crate::client::mqtt::{self, Connect};
use crate::client::{Outcome, Targets};
use crate::embedded::{Embedded, find_provisiond};
use crate::fleet::{Creds, Fleet};
use crate::ledger::Ledger;
use crate::report::{self, Report, Verification};
use crate::stats::Stats;

/// What the device tasks share.
struct Shared {
    args: RunArgs,
    fleet: Fleet,
    targets: Targets,
    /// Next request sequence number.
    next: AtomicU64,
    /// Next fresh device index.
    fresh: AtomicU64,
    start: Instant,
    stop_at: Instant,
    stats: Mutex<Stats>,
    told: Mutex<Told>,
    stopping: AtomicBool,
}

/// What each device was told on its first SUCCESS.
type Told = Ledger<Creds>;

/// Runs the whole thing; returns the process exit code (1 if verification found problems or
/// nothing succeeded).
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    if args.warmup >= args.duration {
        bail!(
            "--warmup ({} s) must be shorter than --duration ({} s)",
            args.warmup.as_secs_f64(),
            args.duration.as_secs_f64()
        );
    }
    let needs_tls = args.transport.iter().any(Transport::is_tls);
    let embedded = if args.embedded {
        let bin = find_provisiond(args.server_bin.as_deref())?;
        Some(Embedded::provisiond(
            &bin,
            args.data_dir.as_deref(),
            needs_tls,
            &args.server_arg,
        )?)
    } else if args.embedded_baseline {
        if needs_tls {
            bail!("the baseline server has no TLS listener; use mqtt or mqtt5");
        }
        Some(Embedded::baseline()?)
    } else {
        None
    };
    let baseline = args.embedded_baseline;
    let (base_url, targets) = targets(&args, embedded.as_ref())?;
    let admin_token = embedded
        .as_ref()
        .filter(|_| !baseline)
        .map(|e| e.admin_token.clone())
        .or_else(|| args.admin_token.clone());
    let admin = admin_token.as_deref().map(|t| Admin::new(&base_url, t));
    let prefix = args.prefix.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        format!("lt{secs}")
    });

    let (key, secret) = match (&args.key, &args.secret, &admin) {
        (Some(k), Some(s), _) => (k.clone(), s.clone()),
        _ if baseline => ("baseline-key".into(), "baseline-secret".into()),
        (_, _, Some(admin)) => {
            let strategy = match args.scenario {
                Scenario::New => "ALLOW_CREATE_NEW_DEVICES",
                Scenario::Preprovisioned => "CHECK_PRE_PROVISIONED_DEVICES",
            };
            admin.create_profile(&prefix, strategy)?
        }
        _ => bail!(
            "give --key and --secret of a profile, or --admin-token to create one, or --embedded"
        ),
    };
    let fleet = Fleet::new(
        prefix.clone(),
        key,
        secret,
        args.scenario,
        args.credentials.clone(),
    )?;

    if args.scenario == Scenario::Preprovisioned && !baseline {
        let admin = admin.as_ref().context(
            "the preprovisioned scenario imports through the admin API: give --admin-token",
        )?;
        if args.key.is_some() {
            bail!("the preprovisioned scenario creates its own profile; drop --key and --secret");
        }
        let mut csv = String::from(Fleet::CSV_HEADER);
        for i in 0..args.devices {
            fleet.csv_row(i, &mut csv);
        }
        let started = Instant::now();
        let created = admin.import(&prefix, csv.into_bytes())?;
        eprintln!(
            "imported {created} pre-provisioned devices in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        args.threads
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let rss_before = embedded.as_ref().and_then(Embedded::rss_mib);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        stop_at: start + args.duration,
        args,
        fleet,
        targets,
        next: AtomicU64::new(0),
        fresh: AtomicU64::new(0),
        start,
        stats: Mutex::new(Stats::default()),
        told: Mutex::new(Told::default()),
        stopping: AtomicBool::new(false),
    });
    let elapsed = runtime.block_on(drive(shared.clone()));
    drop(runtime);
    if let Some(path) = &shared.args.told {
        let told = shared.told.lock().expect("not poisoned");
        let records = told
            .iter()
            .map(|(index, creds)| (shared.fleet.name(index), creds));
        crate::told::write(path, &shared.fleet.prefix, records)?;
    }

    let verification = match (&admin, shared.args.no_verify || baseline) {
        (Some(admin), false) => Some(verify(admin, &shared)?),
        _ => None,
    };
    let server_peak_rss = embedded.as_ref().and_then(Embedded::peak_rss_mib);
    if let Some(e) = embedded {
        e.stop()?;
    }
    let mut stats = shared.stats.lock().expect("not poisoned");
    stats.never_sent = due_requests(&shared.args).map(|due| due.saturating_sub(stats.completed()));
    let report = Report {
        args: &shared.args,
        target: if baseline {
            "embedded baseline server".into()
        } else if shared.args.embedded {
            "embedded provisiond".into()
        } else {
            base_url.clone()
        },
        elapsed,
        stats: &stats,
        verification: verification.as_ref(),
        server_rss_mib: (rss_before, server_peak_rss),
        prefix: &shared.fleet.prefix,
    };
    report::print_summary(&report);
    if let Some(path) = &shared.args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report::json(&report))?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &shared.args.html {
        std::fs::write(path, crate::html::render(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Non-zero exit when a device was told something the server does not hold, a replay was
    // answered differently, or nothing succeeded at all (a wrong address or key, say).
    let bad = verification.is_some_and(|v| v.missing + v.differ > 0)
        || stats.replay_mismatches > 0
        || stats.succeeded == 0;
    if stats.succeeded == 0 {
        eprintln!("loadtest: no request succeeded");
    }
    Ok(if bad { 1 } else { 0 })
}

/// Resolves the addresses, and the TLS client configuration if a TLS transport is used.
fn targets(args: &RunArgs, embedded: Option<&Embedded>) -> anyhow::Result<(String, Targets)> {
    let uses = |f: fn(Transport) -> bool| args.transport.iter().any(f);
    let tls_config = |extra_pem: Option<&str>| -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        let mut pems: Vec<u8> = Vec::new();
        if let Some(p) = extra_pem {
            pems.extend_from_slice(p.as_bytes());
        }
        if let Some(f) = &args.ca_file {
            pems.extend(
                std::fs::read(f)
                    .with_context(|| format!("cannot read --ca-file {}", f.display()))?,
            );
        }
        for cert in rustls_pemfile::certs(&mut &pems[..]) {
            roots.add(cert.context("unreadable certificate in --ca-file")?)?;
        }
        if roots.is_empty() {
            bail!("MQTT over TLS needs --ca-file with the server's CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ))
    };
    if let Some(e) = embedded {
        let tls = match (e.mqtt_tls, uses(Transport::is_tls)) {
            (Some(addr), true) => Some((
                addr,
                tls_config(e.tls_cert_pem.as_deref())?,
                rustls::pki_types::ServerName::try_from("localhost")?.to_owned(),
            )),
            _ => None,
        };
        return Ok((
            format!("http://{}", e.http),
            Targets {
                http: Some((e.http, e.http.to_string())),
                mqtt: Some(e.mqtt),
                mqtt_tls: tls,
                coap: Some(e.coap),
            },
        ));
    }
    let base = args
        .server
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let authority = base
        .strip_prefix("http://")
        .with_context(|| {
            format!("--server {base:?} must start with http:// (HTTPS is not supported)")
        })?
        .trim_end_matches('/');
    if authority.contains('/') {
        bail!("--server {base:?} must be only http://host:port");
    }
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_string();
    let with_port = |a: &str, port: u16| {
        if a.contains(':') {
            a.to_string()
        } else {
            format!("{a}:{port}")
        }
    };
    let http_addr = resolve(&with_port(authority, 80))?;
    let mqtt_addr = resolve(&args.mqtt.clone().unwrap_or_else(|| format!("{host}:1883")))?;
    let coap_addr = resolve(&args.coap.clone().unwrap_or_else(|| format!("{host}:5683")))?;
    let mqtt_tls = if uses(Transport::is_tls) {
        let text = args
            .mqtt_tls
            .clone()
            .unwrap_or_else(|| format!("{host}:8883"));
        let name = args.tls_server_name.clone().unwrap_or_else(|| {
            text.rsplit_once(':')
                .map_or(text.as_str(), |(h, _)| h)
                .to_string()
        });
        Some((
            resolve(&text)?,
            tls_config(None)?,
            rustls::pki_types::ServerName::try_from(name.clone())
                .with_context(|| format!("bad TLS server name {name:?}"))?,
        ))
    } else {
        None
    };
    Ok((
        base.trim_end_matches('/').to_string(),
        Targets {
            http: Some((http_addr, authority.to_string())),
            mqtt: Some(mqtt_addr),
            mqtt_tls,
            coap: Some(coap_addr),
        },
    ))
}

fn resolve(text: &str) -> anyhow::Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("cannot resolve {text:?}"))?
        .next()
        .with_context(|| format!("{text:?} resolves to no address"))
}

/// Starts the workers and the progress line; returns when all workers are done, with the time
/// from the start to the last answer.
async fn drive(shared: Arc<Shared>) -> Duration {
    let progress = tokio::spawn(progress(shared.clone()));
    let mut workers = Vec::new();
    for w in 0..shared.args.concurrency {
        workers.push(tokio::spawn(worker(w, shared.clone())));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = shared.start.elapsed();
    shared.stopping.store(true, Ordering::Relaxed);
    progress.abort();
    if !shared.args.quiet && std::io::stderr().is_terminal() {
        eprintln!();
    }
    elapsed
}

/// When request `seq` is meant to start, in the open loop.
fn intended_offset(seq: u64, rate: f64, ramp: Option<Duration>) -> Duration {
    let i = seq as f64;
    let secs = match ramp {
        None => i / rate,
        Some(ramp) => {
            // The rate rises linearly to `rate` over `ramp`: n(t) = rate t² / (2 ramp).
            let r = ramp.as_secs_f64();
            let during_ramp = rate * r / 2.0;
            if i < during_ramp {
                (2.0 * r * i / rate).sqrt()
            } else {
                r + (i - during_ramp) / rate
            }
        }
    };
    Duration::from_secs_f64(secs)
}

async fn worker(w: u32, shared: Arc<Shared>) {
    let args = &shared.args;
    let mut http = shared
        .targets
        .http
        .clone()
        .map(|(addr, host)| HttpClient::new(addr, host));
    let mut coap = shared
        .targets
        .coap
        .map(|a| CoapClient::new(a, w.wrapping_mul(7919)));
    loop {
        let seq = shared.next.fetch_add(1, Ordering::Relaxed);
        if seq >= args.devices {
            break;
        }
        let intended = args
            .rate
            .map(|rate| shared.start + intended_offset(seq, rate, args.ramp));
        // The open loop also stops at the deadline when it has fallen behind schedule, so that a
        // slow server cannot stretch the run; what was due and never sent is reported.
        if intended.unwrap_or_else(Instant::now) >= shared.stop_at
            || Instant::now() >= shared.stop_at
        {
            break;
        }
        let (index, replay) = pick_device(&shared);
        let transport = args.transport.pick(seq);
        let body = shared.fleet.request(index);
        if let Some(at) = intended {
            tokio::time::sleep_until(at.into()).await;
        }
        let started = intended.unwrap_or_else(Instant::now);
        let timeout = args.timeout;
        let outcome = match transport {
            Transport::Http => match http.as_mut() {
                Some(c) => c.provision(&body, timeout).await,
                None => Outcome::ConnectFailed("no HTTP address".into()),
            },
            Transport::Coap => match coap.as_mut() {
                Some(c) => c.provision(&body, timeout).await,
                None => Outcome::ConnectFailed("no CoAP address".into()),
            },
            mqtt_kind => {
                let v5 = matches!(mqtt_kind, Transport::Mqtt5 | Transport::Mqtts5);
                let connect = if mqtt_kind.is_tls() {
                    shared
                        .targets
                        .mqtt_tls
                        .clone()
                        .map(|(a, c, n)| Connect::Tls(a, c, n))
                } else {
                    shared.targets.mqtt.map(Connect::Tcp)
                };
                match connect {
                    Some(c) => {
                        let body = (args.mqtt_flow == MqttFlow::Full).then_some(&body[..]);
                        mqtt::flow(&c, v5, &format!("lt{seq}"), body, timeout).await
                    }
                    None => Outcome::ConnectFailed("no MQTT address".into()),
                }
            }
        };
        let done = Instant::now();
        record(&shared, index, replay, transport, started, done, outcome);
    }
}

/// Requests the open loop's schedule had due before the deadline (at most --devices).
fn due_requests(args: &RunArgs) -> Option<u64> {
    let rate = args.rate?;
    let (mut lo, mut hi) = (0u64, args.devices);
    // The first sequence number not due before the deadline (offsets grow with the number).
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if intended_offset(mid, rate, args.ramp) < args.duration {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// A replay of a provisioned device (with probability --replay), else the next fresh one.
fn pick_device(shared: &Shared) -> (u64, bool) {
    if shared.args.replay > 0.0 && rand::random::<f64>() < shared.args.replay {
        let told = shared.told.lock().expect("not poisoned");
        if !told.is_empty() {
            let pick = told.nth_index(rand::random_range(0..told.len()));
            return (pick, true);
        }
    }
    (shared.fresh.fetch_add(1, Ordering::Relaxed), false)
}

fn record(
    shared: &Shared,
    index: u64,
    replay: bool,
    transport: Transport,
    started: Instant,
    done: Instant,
    outcome: Outcome,
) {
    let name = transport.name();
    let error = match outcome {
        Outcome::Success(creds) => {
            if let Some(creds) = creds {
                let mut told = shared.told.lock().expect("not poisoned");
                // Only a replay compares with the first answer; a fresh device's lookup happens
                // once, inside record_first.
                let differs = if replay {
                    told.first(index).map(|first| *first != creds)
                } else {
                    None
                };
                match differs {
                    Some(differs) => {
                        drop(told);
                        let mut stats = shared.stats.lock().expect("not poisoned");
                        stats.replays += 1;
                        if differs {
                            stats.replay_mismatches += 1;
                        }
                    }
                    None => {
                        told.record_first(index, creds);
                    }
                }
            }
            None
        }
        Outcome::Refused(r) => Some((format!("{name}: {r}"), false)),
        Outcome::Failed(r) => Some((format!("{name}: {r}"), false)),
        Outcome::ConnectFailed(r) => Some((format!("{name}: connect: {r}"), true)),
    };
    let mut stats = shared.stats.lock().expect("not poisoned");
    if replay && error.is_some() {
        stats.replays += 1;
    }
    let warmup = started.saturating_duration_since(shared.start) < shared.args.warmup;
    stats.record(done - shared.start, done - started, warmup, name, error);
}

/// Prints a progress line every second (rewritten in place on a terminal).
async fn progress(shared: Arc<Shared>) {
    if shared.args.quiet {
        return;
    }
    let tty = std::io::stderr().is_terminal();
    let mut last = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while !shared.stopping.load(Ordering::Relaxed) {
        tick.tick().await;
        let (done, failed) = {
            let s = shared.stats.lock().expect("not poisoned");
            (s.completed(), s.failed())
        };
        let now = Instant::now();
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, done);
        let line = format!(
            "[{:>5.0} s] done {done}/{}  {rate:.0}/s  errors {failed}",
            (now - shared.start).as_secs_f64(),
            shared.args.devices
        );
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
}

/// Checks every device's told credentials against what the server stores (admin API).
fn verify(admin: &Admin, shared: &Shared) -> anyhow::Result<Verification> {
    let stored = admin.devices(&shared.fleet.prefix)?;
    let told = shared.told.lock().expect("not poisoned");
    let mut v = Verification::default();
    for (index, creds) in told.iter() {
        v.checked += 1;
        let name = shared.fleet.name(index);
        let own = shared.fleet.own_credentials(index);
        match stored.get(&name) {
            None => {
                v.missing += 1;
                v.note(format!("{name}: not stored"));
            }
            Some(s) if !s.provisioned => {
                v.differ += 1;
                v.note(format!("{name}: stored but not provisioned"));
            }
            Some(s) if s.creds.as_ref() != Some(creds) => {
                v.differ += 1;
                v.note(format!("{name}: told {creds:?}, stored {:?}", s.creds));
            }
            Some(_) if own.as_ref().is_some_and(|o| o != creds) => {
                v.differ += 1;
                v.note(format!("{name}: told {creds:?}, brought {own:?}"));
            }
            Some(_) => v.verified += 1,
        }
    }
    Ok(v)
}
