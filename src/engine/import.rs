//! The bulk-import decision for one CSV row, as a pure function: (row, stored device, claim) →
//! (outcome, write). Like `provision::decide`, no IO.

use crate::engine::credentials::credentials_id;
use crate::engine::provision::{Claim, valid_device_name};
use crate::store::record::{Credentials, DeviceRecord};

/// One parsed row of an import file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportRow {
    /// Physical line the row starts on (1-based, header included), for the error report.
    pub line: u64,
    /// Target profile.
    pub profile: String,
    /// Device name (trimmed).
    pub name: String,
    /// Device type; the profile's default for new devices when absent.
    pub device_type: Option<String>,
    /// Label.
    pub label: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Gateway flag.
    pub gateway: Option<bool>,
    /// Server attributes (key, JSON text).
    pub server_attributes: Vec<(String, String)>,
    /// Shared attributes (key, JSON text).
    pub shared_attributes: Vec<(String, String)>,
    /// Telemetry (key, JSON text).
    pub telemetry: Vec<(String, String)>,
    /// Credentials given in the row.
    pub credentials: Option<Credentials>,
    /// `provisionState` given in the row (`provisioned` → true, empty → absent).
    pub provisioned: Option<bool>,
}

/// What happened to a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowOutcome {
    /// A new device.
    Created,
    /// An existing device changed (`update` mode).
    Updated,
    /// Skipped, with the reason for the error report.
    Failed(String),
}

/// How an import treats existing devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportMode {
    /// Rows naming existing devices update them instead of failing.
    pub update: bool,
    /// Identifies this import run, so a name repeated within the file is caught without
    /// remembering every name (memory stays bounded for any file size).
    pub import_id: u64,
}

/// The write an accepted row needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportWrite {
    /// The device's new state.
    pub record: DeviceRecord,
    /// A credentials id newly owned by the device.
    pub claimed_id: Option<String>,
    /// A credentials id the device no longer owns.
    pub released_id: Option<String>,
}

/// Decides one row.
pub fn decide_import(
    row: &ImportRow,
    default_type: &str,
    existing: Option<&DeviceRecord>,
    claim: Claim,
    mode: ImportMode,
    now_ms: u64,
) -> (RowOutcome, Option<ImportWrite>) {
    let fail = |reason: &str| (RowOutcome::Failed(reason.to_string()), None);
    if !valid_device_name(&row.name) {
        return fail("device name is longer than 255 characters or contains control characters");
    }
    let wanted_id = row.credentials.as_ref().map(credentials_id);
    let Some(existing) = existing else {
        if claim == Claim::Taken {
            return fail("credentials already belong to another device");
        }
        let device_type = row.device_type.as_deref().unwrap_or(default_type);
        let mut record = DeviceRecord::new(&row.name, &row.profile, device_type, now_ms);
        apply(&mut record, row, mode, now_ms);
        return (
            RowOutcome::Created,
            Some(ImportWrite {
                record,
                claimed_id: wanted_id,
                released_id: None,
            }),
        );
    };
    if existing.import_id == Some(mode.import_id) {
        return fail("duplicate name in the file");
    }
    if !mode.update {
        return fail("device already exists (import with update to change it)");
    }
    if existing.profile != row.profile {
        return fail("device belongs to another profile");
    }
    let old_id = existing.credentials.as_ref().map(credentials_id);
    let changes_credentials = wanted_id.is_some() && wanted_id != old_id;
    if changes_credentials && claim == Claim::Taken {
        return fail("credentials already belong to another device");
    }
    let mut record = existing.clone();
    if let Some(device_type) = &row.device_type {
        record.device_type = device_type.clone();
    }
    apply(&mut record, row, mode, now_ms);
    let (claimed_id, released_id) = if changes_credentials {
        (wanted_id, old_id)
    } else {
        (None, None)
    };
    (
        RowOutcome::Updated,
        Some(ImportWrite {
            record,
            claimed_id,
            released_id,
        }),
    )
}

/// Copies the row's given fields onto the record; absent cells leave fields as they are.
fn apply(record: &mut DeviceRecord, row: &ImportRow, mode: ImportMode, now_ms: u64) {
    if row.label.is_some() {
        record.label = row.label.clone();
    }
    if row.description.is_some() {
        record.description = row.description.clone();
    }
    if let Some(gateway) = row.gateway {
        record.gateway = gateway;
    }
    merge(&mut record.server_attributes, &row.server_attributes);
    merge(&mut record.shared_attributes, &row.shared_attributes);
    merge(&mut record.telemetry, &row.telemetry);
    if row.credentials.is_some() {
        record.credentials = row.credentials.clone();
    }
    if let Some(provisioned) = row.provisioned
        && provisioned != record.provisioned
    {
        record.provisioned = provisioned;
        record.provisioned_at_ms = provisioned.then_some(now_ms);
        record.provisioned_via = None;
    }
    record.import_id = Some(mode.import_id);
}

/// Sets each (key, value); keys keep their first position.
fn merge(into: &mut Vec<(String, String)>, from: &[(String, String)]) {
    for (key, value) in from {
        match into.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => into.push((key.clone(), value.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODE: ImportMode = ImportMode {
        update: false,
        import_id: 7,
    };

    fn row(name: &str) -> ImportRow {
        ImportRow {
            line: 2,
            profile: "p".into(),
            name: name.into(),
            credentials: Some(Credentials::AccessToken { token: "t".into() }),
            server_attributes: vec![("sn".into(), "\"A1\"".into())],
            ..ImportRow::default()
        }
    }

    #[test]
    fn new_row_creates_an_unprovisioned_device_claiming_its_token() {
        let (outcome, write) = decide_import(&row("d"), "p", None, Claim::Free, MODE, 5);
        assert_eq!(outcome, RowOutcome::Created);
        let write = write.unwrap();
        assert_eq!(write.claimed_id.as_deref(), Some("t"));
        assert!(!write.record.provisioned);
        assert_eq!(write.record.device_type, "p");
        assert_eq!(write.record.import_id, Some(7));
        assert_eq!(
            write.record.server_attributes,
            [("sn".to_string(), "\"A1\"".to_string())]
        );
    }

    #[test]
    fn bad_rows_are_refused_without_a_write() {
        let taken = decide_import(&row("d"), "p", None, Claim::Taken, MODE, 5);
        assert_eq!(
            taken,
            (
                RowOutcome::Failed("credentials already belong to another device".into()),
                None
            )
        );
        let long = decide_import(&row(&"x".repeat(256)), "p", None, Claim::Free, MODE, 5);
        assert!(matches!(long.0, RowOutcome::Failed(_)) && long.1.is_none());
        let (_, first) = decide_import(&row("d"), "p", None, Claim::Free, MODE, 5);
        let stored = first.unwrap().record;
        let again = decide_import(&row("d"), "p", Some(&stored), Claim::Free, MODE, 6);
        assert_eq!(
            again.0,
            RowOutcome::Failed("duplicate name in the file".into())
        );
        let later = ImportMode {
            import_id: 8,
            ..MODE
        };
        let exists = decide_import(&row("d"), "p", Some(&stored), Claim::Free, later, 6);
        assert!(
            matches!(exists.0, RowOutcome::Failed(ref r) if r.starts_with("device already exists"))
        );
    }

    #[test]
    fn update_changes_fields_and_swaps_credentials() {
        let (_, first) = decide_import(&row("d"), "p", None, Claim::Free, MODE, 5);
        let mut stored = first.unwrap().record;
        stored.provisioned = true;
        let mut change = row("d");
        change.credentials = Some(Credentials::AccessToken { token: "t2".into() });
        change.label = Some("L".into());
        change.server_attributes = vec![("sn".into(), "\"B2\"".into())];
        let mode = ImportMode {
            update: true,
            import_id: 9,
        };
        let (outcome, write) = decide_import(&change, "p", Some(&stored), Claim::Free, mode, 6);
        assert_eq!(outcome, RowOutcome::Updated);
        let write = write.unwrap();
        assert_eq!(write.claimed_id.as_deref(), Some("t2"));
        assert_eq!(write.released_id.as_deref(), Some("t"));
        assert_eq!(write.record.label.as_deref(), Some("L"));
        assert!(
            write.record.provisioned,
            "update keeps provisionState unless the row sets it"
        );
        assert_eq!(
            write.record.server_attributes,
            [("sn".to_string(), "\"B2\"".to_string())]
        );
        let mut other = stored.clone();
        other.profile = "q".into();
        let (outcome, _) = decide_import(&change, "p", Some(&other), Claim::Free, mode, 6);
        assert_eq!(
            outcome,
            RowOutcome::Failed("device belongs to another profile".into())
        );
    }
}
