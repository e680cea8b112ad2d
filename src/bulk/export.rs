//! CSV export of a profile's devices (or the whole fleet) in the format `import` reads back and
//! ThingsBoard's importer can map: reserved names for the fixed columns, `KIND:key` headers for
//! attributes and telemetry. Read from one store snapshot, so the file is consistent.

use std::collections::BTreeSet;
use std::io::Write;

use super::columns::{PROVISION_STATE, cell_text};
use crate::store::record::{Credentials, DeviceRecord};
use crate::store::{Store, StoreError};

/// Export failures.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error("writing the export failed: {0}")]
    Write(#[from] csv::Error),
    /// Writing the output failed.
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the devices of `profile` (all devices when `None`, with a profile column) as CSV.
/// Returns the number of devices written.
pub fn export(store: &Store, profile: Option<&str>, out: impl Write) -> Result<u64, ExportError> {
    let snapshot = store.snapshot();
    let wanted = |d: &DeviceRecord| profile.is_none_or(|p| d.profile == p);
    // First pass: which attribute and telemetry keys exist, for the header.
    let (mut server, mut shared, mut telemetry) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    snapshot.for_each_device(|d| {
        if wanted(&d) {
            server.extend(d.server_attributes.iter().map(|(k, _)| k.clone()));
            shared.extend(d.shared_attributes.iter().map(|(k, _)| k.clone()));
            telemetry.extend(d.telemetry.iter().map(|(k, _)| k.clone()));
        }
        Ok(())
    })?;
    server.remove(PROVISION_STATE);
    let mut writer = csv::WriterBuilder::new().from_writer(out);
    let mut header: Vec<String> = ["name", "type", "label", "description", "isGateway"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if profile.is_none() {
        header.push("profile".into());
    }
    header.extend(
        [
            "accessToken",
            "x509",
            "mqttClientId",
            "mqttUserName",
            "mqttPassword",
            PROVISION_STATE,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    header.extend(server.iter().map(|k| format!("SERVER_ATTRIBUTE:{k}")));
    header.extend(shared.iter().map(|k| format!("SHARED_ATTRIBUTE:{k}")));
    header.extend(telemetry.iter().map(|k| format!("TIMESERIES:{k}")));
    writer.write_record(&header)?;
    let mut written = 0u64;
    let mut row = Vec::with_capacity(header.len());
    let mut failure = None;
    snapshot
        .for_each_device(|d| {
            if !wanted(&d) {
                return Ok(());
            }
            row.clear();
            row.push(d.name.clone());
            row.push(d.device_type.clone());
            row.push(d.label.clone().unwrap_or_default());
            row.push(d.description.clone().unwrap_or_default());
            row.push(d.gateway.to_string());
            if profile.is_none() {
                row.push(d.profile.clone());
            }
            let (mut token, mut cert, mut client, mut user, mut password) = (
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            );
            match &d.credentials {
                Some(Credentials::AccessToken { token: t }) => token = t.clone(),
                Some(Credentials::X509 { value }) => cert = value.clone(),
                Some(Credentials::MqttBasic {
                    client_id,
                    user_name,
                    password: p,
                }) => (client, user, password) = (client_id.clone(), user_name.clone(), p.clone()),
                None => {}
            }
            row.extend([token, cert, client, user, password]);
            row.push(if d.provisioned {
                "provisioned".into()
            } else {
                String::new()
            });
            for (keys, values) in [
                (&server, &d.server_attributes),
                (&shared, &d.shared_attributes),
                (&telemetry, &d.telemetry),
            ] {
                for key in keys {
                    let value = values
                        .iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| cell_text(v));
                    row.push(value.unwrap_or_default());
                }
            }
            if let Err(e) = writer.write_record(&row) {
                failure = Some(e);
                return Err(StoreError::Corrupt("export output failed".into()));
            }
            written += 1;
            Ok(())
        })
        .map_err(|e| match failure.take() {
            Some(write_error) => ExportError::Write(write_error),
            None => ExportError::Store(e),
        })?;
    writer.flush()?;
    Ok(written)
}
