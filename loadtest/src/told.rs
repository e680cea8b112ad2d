//! What devices were told, kept past the run: `run --told FILE` writes it, `loadtest verify` reads
//! any number of such files and checks them against the server after crashes and restarts.
//! One JSON object per line: `{"profile", "device", "credentialsType", "credentialsValue"}`.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::admin::Admin;
use crate::args::VerifyArgs;
use crate::fleet::Creds;

/// Writes the told credentials, synced, so a crash of this process right after keeps them too.
pub fn write<'a>(
    path: &Path,
    profile: &str,
    records: impl Iterator<Item = (String, &'a Creds)>,
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for (device, creds) in records {
        let line = json!({
            "profile": profile,
            "device": device,
            "credentialsType": creds.kind,
            "credentialsValue": creds.value,
        });
        writeln!(out, "{line}")?;
    }
    out.into_inner()?.sync_all()?;
    Ok(())
}

/// A told credential.
struct Record {
    profile: String,
    device: String,
    creds: Creds,
}

fn read(path: &Path) -> anyhow::Result<Vec<Record>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .with_context(|| format!("{}:{}: no {k}", path.display(), n + 1))
        };
        out.push(Record {
            profile: field("profile")?,
            device: field("device")?,
            creds: Creds {
                kind: field("credentialsType")?,
                value: v["credentialsValue"].clone(),
            },
        });
    }
    Ok(out)
}

/// `loadtest verify`: prints the counts; exit 1 when anything told is missing or changed, or a
/// credentials id belongs to two devices.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<i32> {
    let mut records = Vec::new();
    for path in &args.told {
        records.extend(read(path)?);
    }
    if records.is_empty() && args.profiles.is_empty() {
        bail!("no credentials in the --told files and no --profile: nothing to verify");
    }
    let admin = Admin::new(&args.server, &args.admin_token);
    let mut stored = HashMap::new();
    let profiles = records.iter().map(|r| r.profile.as_str());
    for profile in profiles.chain(args.profiles.iter().map(String::as_str)) {
        if !stored.contains_key(profile) {
            stored.insert(profile.to_string(), admin.devices(profile)?);
        }
    }
    let (mut verified, mut missing, mut differ) = (0u64, 0u64, 0u64);
    for r in &records {
        match stored[&r.profile].get(&r.device) {
            None => {
                missing += 1;
                eprintln!("verify: {} ({}): not stored", r.device, r.profile);
            }
            Some(s) if !s.provisioned || s.creds.as_ref() != Some(&r.creds) => {
                differ += 1;
                eprintln!(
                    "verify: {} ({}): told {:?}, stored {:?} (provisioned: {})",
                    r.device, r.profile, r.creds, s.creds, s.provisioned
                );
            }
            Some(_) => verified += 1,
        }
    }
    // Every device of the profiles involved, not only told ones: a credentials id must never
    // belong to two devices, whoever was told what.
    let mut owners: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut devices = 0u64;
    for profile in stored.values() {
        for (name, s) in profile {
            devices += 1;
            if let Some(id) = &s.credentials_id {
                owners.entry(id).or_default().push(name);
            }
        }
    }
    let shared: Vec<_> = owners.iter().filter(|(_, o)| o.len() > 1).collect();
    for (_, names) in &shared {
        eprintln!("verify: one credentials id belongs to {names:?}");
    }
    println!(
        "told {} credentials in {} profiles: verified {verified}, missing {missing}, changed {differ}; \
         {devices} devices stored in those profiles, {} credentials ids, {} held by two or more devices",
        records.len(),
        stored.len(),
        owners.len(),
        shared.len()
    );
    Ok(if missing + differ > 0 || !shared.is_empty() {
        1
    } else {
        0
    })
}
