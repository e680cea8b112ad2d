//! The pure, in-memory steps of a request, each beside its baseline in the same run:
//! `decide` per SPEC §4 case (baseline: rule 2 alone, the floor of any decision), request
//! parsing (baseline: serde_json into an untyped `Value`), shard routing (baseline: std's
//! SipHash of the name).
//!
//! `cargo bench --bench pure`

use std::hash::{BuildHasher, RandomState};
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use provisiond::engine::provision::{
    Claim, Facts, Request, RequestedCredentials, Secret, Transport, authenticate, decide,
    resolve_name,
};
use provisiond::engine::route::Router;
use provisiond::store::record::{
    Credentials, DeviceRecord, ProfileRecord, ReprovisionPolicy, Strategy,
};
use provisiond::transport::wire;

fn profile(strategy: Strategy) -> ProfileRecord {
    ProfileRecord {
        name: "fleet".into(),
        provision_key: "key".into(),
        provision_secret: "secret".into(),
        strategy,
        reprovision_policy: ReprovisionPolicy::ReturnExisting,
        device_type: None,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn request(secret: &str, creds: RequestedCredentials) -> Request {
    Request {
        provision_key: "key".into(),
        provision_secret: Secret(secret.into()),
        device_name: Some("sensor-000001".into()),
        credentials: creds,
        gateway: false,
        transport: Transport::Http,
    }
}

fn device(profile: &str, provisioned: bool) -> DeviceRecord {
    DeviceRecord {
        provisioned,
        credentials: Some(Credentials::AccessToken {
            token: "stored-token".into(),
        }),
        provisioned_at_ms: provisioned.then_some(2),
        ..DeviceRecord::new("sensor-000001", profile, profile, 1)
    }
}

fn bench_decide(c: &mut Criterion) {
    let allow = profile(Strategy::AllowCreateNewDevices);
    let check = profile(Strategy::CheckPreProvisionedDevices);
    let token = RequestedCredentials::Valid(Credentials::AccessToken {
        token: "device-token".into(),
    });
    let cases: Vec<(&str, Request, &ProfileRecord, Option<DeviceRecord>, Claim)> = vec![
        (
            "rule2_wrong_secret",
            request("wrong", RequestedCredentials::None),
            &allow,
            None,
            Claim::NotRequested,
        ),
        (
            "rule4_new_generated_token",
            request("secret", RequestedCredentials::None),
            &allow,
            None,
            Claim::NotRequested,
        ),
        (
            "rule4_new_requested_token",
            request("secret", token.clone()),
            &allow,
            None,
            Claim::Free,
        ),
        (
            "rule4_token_taken",
            request("secret", token.clone()),
            &allow,
            None,
            Claim::Taken,
        ),
        (
            "rule4_replay_return_existing",
            request("secret", RequestedCredentials::None),
            &allow,
            Some(device("fleet", true)),
            Claim::NotRequested,
        ),
        (
            "rule4_other_profile",
            request("secret", RequestedCredentials::None),
            &allow,
            Some(device("other", true)),
            Claim::NotRequested,
        ),
        (
            "rule5_preprovisioned",
            request("secret", RequestedCredentials::None),
            &check,
            Some(device("fleet", false)),
            Claim::NotRequested,
        ),
        (
            "rule5_unknown",
            request("secret", RequestedCredentials::None),
            &check,
            None,
            Claim::NotRequested,
        ),
    ];
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    let baseline = request("secret", RequestedCredentials::None);
    group.bench_function("baseline_rule2_only", |b| {
        b.iter(|| authenticate(black_box(&baseline), Some(black_box(&allow))))
    });
    for (what, req, profile, existing, claim) in &cases {
        let name = resolve_name(req.device_name.as_deref(), || "generated".into()).unwrap();
        group.bench_function(*what, |b| {
            b.iter(|| {
                let facts = Facts {
                    name: &name,
                    profile: Some(profile),
                    existing: existing.as_ref(),
                    claim: *claim,
                    now_ms: 1_700_000_000_000,
                };
                decide(black_box(req), &facts, &mut || {
                    "GENERATEDtoken000000".into()
                })
            })
        });
    }
    group.finish();
}

fn bench_parse(c: &mut Criterion) {
    let bodies = [
        ("token", br#"{"deviceName":"sensor-000001","provisionDeviceKey":"u7piawkboq8v32dmcmpp","provisionDeviceSecret":"jpmwdn8ptlswmf4m29bw"}"#.to_vec()),
        ("mqtt_basic", br#"{"deviceName":"sensor-000001","provisionDeviceKey":"u7piawkboq8v32dmcmpp","provisionDeviceSecret":"jpmwdn8ptlswmf4m29bw","credentialsType":"MQTT_BASIC","clientId":"c-1","username":"u-1","password":"p-1"}"#.to_vec()),
    ];
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (what, body) in &bodies {
        group.bench_function(format!("wire_parse_json/{what}"), |b| {
            b.iter(|| wire::parse_json(black_box(body), Transport::Http).unwrap())
        });
        group.bench_function(format!("baseline_serde_json_value/{what}"), |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(body)).unwrap())
        });
    }
    group.finish();
}

fn bench_route(c: &mut Criterion) {
    let router = Router::new(16);
    let names: Vec<String> = (0..1024).map(|i| format!("sensor-{i:09}")).collect();
    let sip = RandomState::new();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(names.len() as u64));
    group.bench_function("router_shard_for", |b| {
        b.iter(|| {
            names
                .iter()
                .map(|n| router.shard_for(black_box(n)).0 as u64)
                .sum::<u64>()
        })
    });
    group.bench_function("baseline_std_siphash_mod", |b| {
        b.iter(|| {
            names
                .iter()
                .map(|n| sip.hash_one(black_box(n)) % 16)
                .sum::<u64>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decide, bench_parse, bench_route);
criterion_main!(benches);
