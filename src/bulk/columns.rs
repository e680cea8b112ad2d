//! Column kinds of ThingsBoard's bulk import, header aliases, `--map`, and turning one row's
//! cells into an `ImportRow`.

use crate::engine::credentials::{
    MAX_CERTIFICATE_BYTES, MAX_CREDENTIAL_FIELD_BYTES, check_field, x509_value,
};
use crate::engine::import::ImportRow;
use crate::store::record::Credentials;

/// What a column holds (ThingsBoard's importer kinds, plus `Profile` for multi-profile files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// `NAME`
    Name,
    /// `TYPE`
    Type,
    /// `LABEL`
    Label,
    /// `DESCRIPTION`
    Description,
    /// `SHARED_ATTRIBUTE` with its key.
    SharedAttribute(String),
    /// `SERVER_ATTRIBUTE` with its key.
    ServerAttribute(String),
    /// `TIMESERIES` with its key.
    Timeseries(String),
    /// `ACCESS_TOKEN`
    AccessToken,
    /// `X509`
    X509,
    /// `MQTT_CLIENT_ID`
    MqttClientId,
    /// `MQTT_USER_NAME`
    MqttUserName,
    /// `MQTT_PASSWORD`
    MqttPassword,
    /// `IS_GATEWAY`
    IsGateway,
    /// The device's profile (provisiond's own, written by a whole-fleet export).
    Profile,
}

/// The server attribute that carries `provisionState`.
pub const PROVISION_STATE: &str = "provisionState";

/// Parses a kind as given to `--map`: `NAME`, `SERVER_ATTRIBUTE`, `SERVER_ATTRIBUTE:key`, …
/// Attribute kinds without a key take the column's header as the key.
pub fn parse_kind(text: &str, header: &str) -> Option<ColumnKind> {
    let (kind, key) = match text.split_once(':') {
        Some((kind, key)) => (kind, key.to_string()),
        None => (text, header.to_string()),
    };
    Some(match kind.to_ascii_uppercase().as_str() {
        "NAME" => ColumnKind::Name,
        "TYPE" => ColumnKind::Type,
        "LABEL" => ColumnKind::Label,
        "DESCRIPTION" => ColumnKind::Description,
        "SHARED_ATTRIBUTE" => ColumnKind::SharedAttribute(key),
        "SERVER_ATTRIBUTE" => ColumnKind::ServerAttribute(key),
        "TIMESERIES" | "TELEMETRY" => ColumnKind::Timeseries(key),
        "ACCESS_TOKEN" => ColumnKind::AccessToken,
        "X509" => ColumnKind::X509,
        "MQTT_CLIENT_ID" => ColumnKind::MqttClientId,
        "MQTT_USER_NAME" => ColumnKind::MqttUserName,
        "MQTT_PASSWORD" => ColumnKind::MqttPassword,
        "IS_GATEWAY" => ColumnKind::IsGateway,
        "PROFILE" => ColumnKind::Profile,
        _ => return None,
    })
    .filter(|k| match k {
        ColumnKind::SharedAttribute(key)
        | ColumnKind::ServerAttribute(key)
        | ColumnKind::Timeseries(key) => !key.trim().is_empty(),
        _ => true,
    })
}

/// The kind a header names by itself: the reserved names and credential aliases
/// (case-insensitive), or the self-describing `KIND:key` form that `export` writes.
pub fn kind_from_header(header: &str) -> Option<ColumnKind> {
    if let Some((kind, key)) = header.split_once(':')
        && let Some(parsed) = parse_kind(&format!("{kind}:{key}"), header)
        && matches!(
            parsed,
            ColumnKind::SharedAttribute(_)
                | ColumnKind::ServerAttribute(_)
                | ColumnKind::Timeseries(_)
        )
    {
        return Some(parsed);
    }
    let folded: String = header
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    Some(match folded.as_str() {
        "name" | "devicename" => ColumnKind::Name,
        "type" | "devicetype" => ColumnKind::Type,
        "label" => ColumnKind::Label,
        "description" => ColumnKind::Description,
        "accesstoken" | "token" => ColumnKind::AccessToken,
        "x509" | "certificate" | "x509certificate" => ColumnKind::X509,
        "mqttclientid" | "clientid" => ColumnKind::MqttClientId,
        "mqttusername" | "username" => ColumnKind::MqttUserName,
        "mqttpassword" | "password" => ColumnKind::MqttPassword,
        "isgateway" | "gateway" => ColumnKind::IsGateway,
        "profile" => ColumnKind::Profile,
        "provisionstate" => ColumnKind::ServerAttribute(PROVISION_STATE.into()),
        _ => return None,
    })
}

/// Turns one row's cells into an `ImportRow`; `Err` is the reason for the error report.
pub fn build_row(
    columns: &[ColumnKind],
    cells: &[&str],
    line: u64,
    default_profile: Option<&str>,
) -> Result<ImportRow, String> {
    let mut row = ImportRow {
        line,
        ..ImportRow::default()
    };
    let (mut token, mut cert) = (None, None);
    let (mut client_id, mut user_name, mut password) =
        (String::new(), String::new(), String::new());
    let mut profile = None;
    for (kind, cell) in columns.iter().zip(cells) {
        if cell.is_empty() {
            continue;
        }
        match kind {
            ColumnKind::Name => row.name = cell.trim().to_string(),
            ColumnKind::Type => row.device_type = Some(cell.to_string()),
            ColumnKind::Label => row.label = Some(cell.to_string()),
            ColumnKind::Description => row.description = Some(cell.to_string()),
            ColumnKind::Profile => profile = Some(cell.to_string()),
            ColumnKind::ServerAttribute(key) if key == PROVISION_STATE => {
                if *cell != "provisioned" {
                    return Err(format!(
                        "{PROVISION_STATE} must be \"provisioned\" or empty"
                    ));
                }
                row.provisioned = Some(true);
            }
            ColumnKind::ServerAttribute(key) => {
                row.server_attributes.push((key.clone(), json_value(cell)))
            }
            ColumnKind::SharedAttribute(key) => {
                row.shared_attributes.push((key.clone(), json_value(cell)))
            }
            ColumnKind::Timeseries(key) => row.telemetry.push((key.clone(), json_value(cell))),
            ColumnKind::AccessToken => token = Some(cell.to_string()),
            ColumnKind::X509 => cert = Some(cell.to_string()),
            ColumnKind::MqttClientId => client_id = cell.to_string(),
            ColumnKind::MqttUserName => user_name = cell.to_string(),
            ColumnKind::MqttPassword => password = cell.to_string(),
            ColumnKind::IsGateway => {
                row.gateway = Some(match cell.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err("isGateway must be true or false".into()),
                })
            }
        }
    }
    if row.name.is_empty() {
        return Err("the name is empty".into());
    }
    row.profile = match profile.as_deref().or(default_profile) {
        Some(p) => p.to_string(),
        None => return Err("no profile: give --profile or a profile column".into()),
    };
    let basic = !(client_id.is_empty() && user_name.is_empty() && password.is_empty());
    let kinds = usize::from(token.is_some()) + usize::from(cert.is_some()) + usize::from(basic);
    if kinds > 1 {
        return Err("a row may carry one kind of credentials only".into());
    }
    row.credentials = if let Some(token) = token {
        check_field(&token, MAX_CREDENTIAL_FIELD_BYTES)
            .map_err(|e| format!("access token: {e:?}"))?;
        Some(Credentials::AccessToken { token })
    } else if let Some(cert) = cert {
        let value = x509_value(&cert);
        if value.len() > MAX_CERTIFICATE_BYTES {
            return Err(format!(
                "certificate is longer than {MAX_CERTIFICATE_BYTES} bytes"
            ));
        }
        Some(Credentials::X509 { value })
    } else if basic {
        if client_id.is_empty() && user_name.is_empty() {
            return Err("MQTT credentials need a client id or a user name".into());
        }
        if !client_id.is_empty() && !password.is_empty() && user_name.is_empty() {
            return Err("an MQTT password needs a user name".into());
        }
        for field in [&client_id, &user_name, &password] {
            check_field(field, MAX_CREDENTIAL_FIELD_BYTES)
                .map_err(|e| format!("MQTT credentials: {e:?}"))?;
        }
        Some(Credentials::MqttBasic {
            client_id,
            user_name,
            password,
        })
    } else {
        None
    };
    Ok(row)
}

/// A cell as a JSON value, typed the way ThingsBoard's importer guesses: booleans and numbers
/// as such, everything else a string.
pub fn json_value(cell: &str) -> String {
    if cell == "true" || cell == "false" {
        return cell.to_string();
    }
    if let Ok(n) = cell.parse::<i64>() {
        return n.to_string();
    }
    if let Ok(f) = cell.parse::<f64>()
        && f.is_finite()
        && cell
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        return serde_json::Number::from_f64(f)
            .map_or_else(|| json_string(cell), |n| n.to_string());
    }
    json_string(cell)
}

/// The text a JSON attribute value is written back as (strings unquoted).
pub fn cell_text(json: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => json.to_string(),
    }
}

fn json_string(cell: &str) -> String {
    serde_json::to_string(cell).expect("a string always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_map_by_alias_case_insensitively() {
        assert_eq!(kind_from_header("Name"), Some(ColumnKind::Name));
        assert_eq!(
            kind_from_header("accessToken"),
            Some(ColumnKind::AccessToken)
        );
        assert_eq!(
            kind_from_header("ACCESS_TOKEN"),
            Some(ColumnKind::AccessToken)
        );
        assert_eq!(
            kind_from_header("mqtt user name"),
            Some(ColumnKind::MqttUserName)
        );
        assert_eq!(kind_from_header("serialNumber"), None);
        assert_eq!(
            kind_from_header("SERVER_ATTRIBUTE:serialNumber"),
            Some(ColumnKind::ServerAttribute("serialNumber".into()))
        );
        assert_eq!(
            kind_from_header("timeseries:temp"),
            Some(ColumnKind::Timeseries("temp".into()))
        );
    }

    #[test]
    fn map_kinds_take_the_header_as_key_unless_given() {
        assert_eq!(
            parse_kind("server_attribute", "sn"),
            Some(ColumnKind::ServerAttribute("sn".into()))
        );
        assert_eq!(
            parse_kind("SHARED_ATTRIBUTE:fw", "x"),
            Some(ColumnKind::SharedAttribute("fw".into()))
        );
        assert_eq!(parse_kind("BOGUS", "x"), None);
        assert_eq!(parse_kind("SERVER_ATTRIBUTE:", "x"), None);
    }

    #[test]
    fn cells_become_typed_values() {
        assert_eq!(json_value("42"), "42");
        assert_eq!(json_value("2.5"), "2.5");
        assert_eq!(json_value("true"), "true");
        assert_eq!(json_value("SN-4A21F"), "\"SN-4A21F\"");
        assert_eq!(json_value("inf"), "\"inf\"");
        assert_eq!(cell_text("\"SN\""), "SN");
        assert_eq!(cell_text("42"), "42");
    }

    #[test]
    fn rows_with_mixed_or_invalid_credentials_are_refused() {
        let cols = [
            ColumnKind::Name,
            ColumnKind::AccessToken,
            ColumnKind::MqttUserName,
        ];
        assert!(build_row(&cols, &["d", "t", "u"], 2, Some("p")).is_err());
        let row = build_row(&cols, &["d", "", "u"], 2, Some("p")).unwrap();
        assert!(matches!(
            row.credentials,
            Some(Credentials::MqttBasic { .. })
        ));
        assert!(build_row(&cols, &["", "t", ""], 2, Some("p")).is_err());
        assert!(build_row(&cols, &["d", "t", ""], 2, None).is_err());
        let state = [
            ColumnKind::Name,
            ColumnKind::ServerAttribute(PROVISION_STATE.into()),
        ];
        assert_eq!(
            build_row(&state, &["d", "provisioned"], 2, Some("p"))
                .unwrap()
                .provisioned,
            Some(true)
        );
        assert!(build_row(&state, &["d", "maybe"], 2, Some("p")).is_err());
    }
}
