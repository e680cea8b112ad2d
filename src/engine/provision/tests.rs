//! One row per rule of SPEC §4.

use super::*;

const NOW: u64 = 1_700_000_000_000;

fn profile(strategy: Strategy, policy: ReprovisionPolicy) -> ProfileRecord {
    ProfileRecord {
        name: "fleet".into(),
        provision_key: "key".into(),
        provision_secret: "secret".into(),
        strategy,
        reprovision_policy: policy,
        device_type: None,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn token(t: &str) -> Credentials {
    Credentials::AccessToken { token: t.into() }
}

fn request(name: Option<&str>, creds: RequestedCredentials) -> Request {
    Request {
        provision_key: "key".into(),
        provision_secret: Secret("secret".into()),
        device_name: name.map(str::to_string),
        credentials: creds,
        gateway: false,
        transport: Transport::Http,
    }
}

fn device(
    name: &str,
    profile: &str,
    creds: Option<Credentials>,
    provisioned: bool,
) -> DeviceRecord {
    DeviceRecord {
        provisioned,
        credentials: creds,
        provisioned_at_ms: provisioned.then_some(2),
        ..DeviceRecord::new(name, profile, profile, 1)
    }
}

struct Case {
    what: &'static str,
    request: Request,
    profile: Option<ProfileRecord>,
    existing: Option<DeviceRecord>,
    claim: Claim,
    expect: Result<Credentials, ProvisionError>,
    writes: bool,
}

fn run(case: &Case) -> Decision {
    let name = resolve_name(case.request.device_name.as_deref(), || {
        "GENERATEDname0000000".into()
    })
    .expect("cases here have resolvable names");
    let facts = Facts {
        name: &name,
        profile: case.profile.as_ref(),
        existing: case.existing.as_ref(),
        claim: case.claim,
        now_ms: NOW,
    };
    decide(&case.request, &facts, &mut || "FRESHtoken0000000000".into())
}

#[test]
fn every_rule_of_spec_section_4() {
    use ProvisionError::*;
    use ReprovisionPolicy::{Reject, ReturnExisting};
    use Strategy::{AllowCreateNewDevices as Allow, CheckPreProvisionedDevices as Check, Disabled};
    let none = RequestedCredentials::None;
    let want = |t: &str| RequestedCredentials::Valid(token(t));
    let fresh = || Ok(token("FRESHtoken0000000000"));
    let mut wrong_secret = request(Some("d"), none.clone());
    wrong_secret.provision_secret = Secret("nope".into());
    let mut empty_key = request(Some("d"), none.clone());
    empty_key.provision_key = String::new();
    let mut empty_secret = request(Some("d"), none.clone());
    empty_secret.provision_secret = Secret(String::new());

    let cases = vec![
        // Rule 2
        Case {
            what: "empty key",
            request: empty_key,
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: Err(EmptyKeyOrSecret),
            writes: false,
        },
        Case {
            what: "empty secret",
            request: empty_secret,
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: Err(EmptyKeyOrSecret),
            writes: false,
        },
        Case {
            what: "unknown key",
            request: request(Some("d"), none.clone()),
            profile: None,
            existing: None,
            claim: Claim::NotRequested,
            expect: Err(UnknownKey),
            writes: false,
        },
        Case {
            what: "disabled profile",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Disabled, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: Err(ProfileDisabled),
            writes: false,
        },
        Case {
            what: "wrong secret",
            request: wrong_secret,
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: Err(WrongSecret),
            writes: false,
        },
        // Rule 3
        Case {
            what: "invalid credentials",
            request: request(
                Some("d"),
                RequestedCredentials::Invalid(
                    crate::engine::credentials::InvalidCredentials::MissingToken,
                ),
            ),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: Err(InvalidCredentials(
                crate::engine::credentials::InvalidCredentials::MissingToken,
            )),
            writes: false,
        },
        // Rule 4: ALLOW_CREATE_NEW_DEVICES
        Case {
            what: "new device gets generated token",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: fresh(),
            writes: true,
        },
        Case {
            what: "new device without name gets generated name",
            request: request(None, none.clone()),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: fresh(),
            writes: true,
        },
        Case {
            what: "new device gets requested token",
            request: request(Some("d"), want("mine")),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::Free,
            expect: Ok(token("mine")),
            writes: true,
        },
        Case {
            what: "requested token taken",
            request: request(Some("d"), want("mine")),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::Taken,
            expect: Err(CredentialsTaken),
            writes: false,
        },
        Case {
            what: "name too long",
            request: request(Some(&"x".repeat(256)), none.clone()),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: Err(InvalidName),
            writes: false,
        },
        Case {
            what: "name of 255 chars is fine",
            request: request(Some(&"é".repeat(255)), none.clone()),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: fresh(),
            writes: true,
        },
        Case {
            what: "control character in name",
            request: request(Some("a\u{1}b"), none.clone()),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: Err(InvalidName),
            writes: false,
        },
        Case {
            what: "replay without credentials",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: Some(device("d", "fleet", Some(token("old")), true)),
            claim: Claim::NotRequested,
            expect: Ok(token("old")),
            writes: false,
        },
        Case {
            what: "replay with same credentials",
            request: request(Some("d"), want("old")),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: Some(device("d", "fleet", Some(token("old")), true)),
            claim: Claim::Free,
            expect: Ok(token("old")),
            writes: false,
        },
        Case {
            what: "replay with other credentials",
            request: request(Some("d"), want("new")),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: Some(device("d", "fleet", Some(token("old")), true)),
            claim: Claim::Free,
            expect: Err(CredentialsMismatch),
            writes: false,
        },
        Case {
            what: "reject policy refuses second request",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Allow, Reject)),
            existing: Some(device("d", "fleet", Some(token("old")), true)),
            claim: Claim::NotRequested,
            expect: Err(AlreadyProvisioned),
            writes: false,
        },
        Case {
            what: "device in another profile",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Allow, ReturnExisting)),
            existing: Some(device("d", "other", Some(token("old")), true)),
            claim: Claim::NotRequested,
            expect: Err(DeviceInOtherProfile),
            writes: false,
        },
        Case {
            what: "imported device under allow-create provisions with stored credentials",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Allow, Reject)),
            existing: Some(device("d", "fleet", Some(token("imp")), false)),
            claim: Claim::NotRequested,
            expect: Ok(token("imp")),
            writes: true,
        },
        // Rule 5: CHECK_PRE_PROVISIONED_DEVICES
        Case {
            what: "check-pre without name",
            request: request(None, none.clone()),
            profile: Some(profile(Check, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: Err(NameRequired),
            writes: false,
        },
        Case {
            what: "check-pre unknown device",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Check, ReturnExisting)),
            existing: None,
            claim: Claim::NotRequested,
            expect: Err(NotPreProvisioned),
            writes: false,
        },
        Case {
            what: "check-pre device in other profile",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Check, ReturnExisting)),
            existing: Some(device("d", "other", None, false)),
            claim: Claim::NotRequested,
            expect: Err(DeviceInOtherProfile),
            writes: false,
        },
        Case {
            what: "check-pre returns stored credentials, ignoring requested",
            request: request(Some("d"), want("mine")),
            profile: Some(profile(Check, ReturnExisting)),
            existing: Some(device("d", "fleet", Some(token("imp")), false)),
            claim: Claim::Free,
            expect: Ok(token("imp")),
            writes: true,
        },
        Case {
            what: "check-pre assigns requested credentials",
            request: request(Some("d"), want("mine")),
            profile: Some(profile(Check, ReturnExisting)),
            existing: Some(device("d", "fleet", None, false)),
            claim: Claim::Free,
            expect: Ok(token("mine")),
            writes: true,
        },
        Case {
            what: "check-pre requested credentials taken",
            request: request(Some("d"), want("mine")),
            profile: Some(profile(Check, ReturnExisting)),
            existing: Some(device("d", "fleet", None, false)),
            claim: Claim::Taken,
            expect: Err(CredentialsTaken),
            writes: false,
        },
        Case {
            what: "check-pre generates token",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Check, ReturnExisting)),
            existing: Some(device("d", "fleet", None, false)),
            claim: Claim::NotRequested,
            expect: fresh(),
            writes: true,
        },
        Case {
            what: "check-pre replay returns stored",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Check, ReturnExisting)),
            existing: Some(device("d", "fleet", Some(token("imp")), true)),
            claim: Claim::NotRequested,
            expect: Ok(token("imp")),
            writes: false,
        },
        Case {
            what: "check-pre reject policy",
            request: request(Some("d"), none.clone()),
            profile: Some(profile(Check, Reject)),
            existing: Some(device("d", "fleet", Some(token("imp")), true)),
            claim: Claim::NotRequested,
            expect: Err(AlreadyProvisioned),
            writes: false,
        },
    ];
    for case in &cases {
        let decision = run(case);
        assert_eq!(decision.outcome, case.expect, "{}", case.what);
        assert_eq!(decision.write.is_some(), case.writes, "{}", case.what);
        if let Some(write) = &decision.write {
            // Rule 6: provisionState, time and transport recorded on every success that writes.
            assert!(write.record.provisioned, "{}", case.what);
            assert_eq!(write.record.provisioned_at_ms, Some(NOW), "{}", case.what);
            assert_eq!(
                write.record.provisioned_via.as_deref(),
                Some("HTTP"),
                "{}",
                case.what
            );
            assert_eq!(
                write.record.credentials.as_ref(),
                case.expect.as_ref().ok(),
                "{}",
                case.what
            );
        }
    }
}

#[test]
fn blank_name_is_refused_before_anything_else() {
    assert_eq!(
        resolve_name(Some("   "), String::new),
        Err(ProvisionError::BlankName)
    );
    assert_eq!(
        resolve_name(Some("  dev  "), String::new),
        Ok(DeviceName::Given("dev".into()))
    );
    assert_eq!(
        resolve_name(Some(""), || "gen".into()),
        Ok(DeviceName::Generated("gen".into()))
    );
}

#[test]
fn new_device_write_claims_its_credentials_id_and_takes_profile_type() {
    let mut p = profile(
        Strategy::AllowCreateNewDevices,
        ReprovisionPolicy::ReturnExisting,
    );
    p.device_type = Some("sensor".into());
    let mut req = request(Some("d"), RequestedCredentials::None);
    req.gateway = true;
    let name = DeviceName::Given("d".into());
    let facts = Facts {
        name: &name,
        profile: Some(&p),
        existing: None,
        claim: Claim::NotRequested,
        now_ms: NOW,
    };
    let decision = decide(&req, &facts, &mut || "tok".into());
    let write = decision.write.unwrap();
    assert_eq!(write.claimed_id.as_deref(), Some("tok"));
    assert_eq!(write.record.device_type, "sensor");
    assert!(write.record.gateway);
    assert_eq!(write.record.created_at_ms, NOW);
}

#[test]
fn refusal_statuses_follow_spec_section_3() {
    for e in [
        ProvisionError::EmptyKeyOrSecret,
        ProvisionError::UnknownKey,
        ProvisionError::ProfileDisabled,
        ProvisionError::WrongSecret,
    ] {
        assert_eq!(e.status(), Status::NotFound, "{e:?}");
    }
    for e in [
        ProvisionError::BlankName,
        ProvisionError::CredentialsTaken,
        ProvisionError::AlreadyProvisioned,
        ProvisionError::NotPreProvisioned,
        ProvisionError::Storage,
    ] {
        assert_eq!(e.status(), Status::Failure, "{e:?}");
    }
}

#[test]
fn device_name_rule_is_the_same_on_the_ascii_path_and_the_general_one() {
    // ASCII names take a byte-wise path; the rule (at most 255 characters, no control
    // character) must not depend on which path a name takes.
    assert!(valid_device_name(&"x".repeat(255)));
    assert!(!valid_device_name(&"x".repeat(256)));
    assert!(valid_device_name(&"é".repeat(255)));
    assert!(!valid_device_name(&"é".repeat(256)));
    assert!(valid_device_name(&format!("{}é", "x".repeat(254))));
    assert!(!valid_device_name(&format!("{}é", "x".repeat(255))));
    for control in ['\u{0}', '\t', '\u{1f}', '\u{7f}', '\u{85}', '\u{9f}'] {
        assert!(!valid_device_name(&format!("a{control}b")), "{control:?}");
    }
    assert!(valid_device_name(
        "sensor 1 ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./"
    ));
    assert!(valid_device_name("\u{a0}"));
}
