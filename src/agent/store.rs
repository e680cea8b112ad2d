//! `<config dir>/.credentials`, in the gateway's format (TB-REFERENCE §12.4): the server's
//! response as received, Python-JSON-dumped, plus `caCert` for X.509. Written atomically
//! (temporary file, fsync, rename, fsync of the directory) with mode 0600.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::error::AgentError;
use super::pyjson::Node;

/// The file name the gateway uses.
pub const CREDENTIALS_FILE: &str = ".credentials";

/// The stored credentials, mapped as the gateway maps them back (`_get_provisioned_creds`).
#[derive(Clone, PartialEq, Eq)]
pub enum Stored {
    /// `credentialsValue` is the access token.
    AccessToken(String),
    /// `credentialsValue` holds `clientId`, `userName`, `password` (each may be absent).
    MqttBasic {
        /// Client id.
        client_id: Option<String>,
        /// User name.
        user_name: Option<String>,
        /// Password.
        password: Option<String>,
    },
    /// `cert.pem` and `key.pem` in the config directory; `caCert` names the server's CA.
    X509 {
        /// The CA file name, if stored.
        ca_cert: Option<String>,
    },
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Stored {
    /// One line for people: the type and what is not secret.
    pub fn describe(&self) -> String {
        match self {
            Stored::AccessToken(token) => {
                format!("ACCESS_TOKEN ({} characters)", token.chars().count())
            }
            Stored::MqttBasic {
                client_id,
                user_name,
                password,
            } => format!(
                "MQTT_BASIC (clientId {}, userName {}, {})",
                shown(client_id),
                shown(user_name),
                if password.is_some() {
                    "with a password"
                } else {
                    "no password"
                }
            ),
            Stored::X509 { ca_cert } => format!(
                "X509_CERTIFICATE (cert.pem and key.pem, server CA {})",
                ca_cert.as_deref().unwrap_or("none")
            ),
        }
    }

    /// Reads the gateway's mapping out of a stored response.
    pub fn from_node(node: &Node) -> Result<Stored, String> {
        if !matches!(node, Node::Object(_)) {
            return Err("it is not a JSON object".into());
        }
        let kind = node
            .get("credentialsType")
            .and_then(Node::as_str)
            .ok_or("credentialsType is missing")?;
        let value = node.get("credentialsValue");
        let text = |n: Option<&Node>| n.and_then(Node::as_str).map(str::to_string);
        match kind {
            "ACCESS_TOKEN" => Ok(Stored::AccessToken(
                text(value).ok_or("credentialsValue is not a token")?,
            )),
            "MQTT_BASIC" => {
                let value = value
                    .filter(|v| matches!(v, Node::Object(_)))
                    .ok_or("credentialsValue is not an object")?;
                Ok(Stored::MqttBasic {
                    client_id: text(value.get("clientId")),
                    user_name: text(value.get("userName")),
                    password: text(value.get("password")),
                })
            }
            "X509_CERTIFICATE" => Ok(Stored::X509 {
                ca_cert: text(node.get("caCert")),
            }),
            other => Err(format!(
                "credentialsType {other:?} is not one the gateway uses"
            )),
        }
    }
}

/// A non-secret field for people: `none` when absent or empty.
fn shown(field: &Option<String>) -> &str {
    field.as_deref().filter(|v| !v.is_empty()).unwrap_or("none")
}

/// `<dir>/.credentials`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(CREDENTIALS_FILE)
}

/// The stored credentials, or None if there is no file.
pub fn load(dir: &Path) -> Result<Option<Stored>, AgentError> {
    let path = path(dir);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AgentError::CorruptCredentials(format!(
                "cannot read stored credentials {}: {e}",
                path.display()
            )));
        }
    };
    let corrupt = |why: String| {
        AgentError::CorruptCredentials(format!(
            "stored credentials {} are corrupt: {why}; `provisiond agent reset` removes them so the next start provisions again",
            path.display()
        ))
    };
    let text = String::from_utf8(text).map_err(|_| corrupt("not UTF-8".into()))?;
    let node = Node::parse(&text).map_err(|e| corrupt(format!("not JSON ({e})")))?;
    Stored::from_node(&node).map(Some).map_err(corrupt)
}

/// Removes the stored credentials; false if there were none.
pub fn remove(dir: &Path) -> Result<bool, AgentError> {
    let path = path(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            sync_dir(dir).map_err(|e| storage(dir, &e))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(AgentError::Storage(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

/// A file about to be written atomically. Created before the server is contacted, so that a
/// directory the agent cannot write to fails before a device is provisioned for nothing.
#[derive(Debug)]
pub struct Pending {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl Pending {
    /// Creates `<target>.tmp.<pid>` with `mode`.
    pub fn create(target: PathBuf, mode: u32) -> Result<Pending, AgentError> {
        let dir = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| storage(dir, &e))?;
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let temp = dir.join(format!("{name}.tmp.{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .map_err(|e| storage(dir, &e))?;
        Ok(Pending {
            file: Some(file),
            temp,
            target,
        })
    }

    /// Writes `bytes`, fsyncs, renames over the target and fsyncs the directory.
    pub fn commit(mut self, bytes: &[u8]) -> Result<(), AgentError> {
        let dir = self.target.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut file = self.file.take().expect("committed once");
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&self.temp, &self.target))
            .and_then(|()| sync_dir(&dir))
            .map_err(|e| {
                AgentError::Storage(format!("cannot write {}: {e}", self.target.display()))
            })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `target` atomically with `mode`.
pub fn write_atomic(target: PathBuf, bytes: &[u8], mode: u32) -> Result<(), AgentError> {
    Pending::create(target, mode)?.commit(bytes)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn storage(dir: &Path, e: &std::io::Error) -> AgentError {
    AgentError::Storage(format!(
        "cannot write to the config directory {}: {e}",
        dir.display()
    ))
}

/// The bytes the gateway would store for `response` (with `caCert` for X.509).
pub fn file_bytes(response: &Node, ca_cert: Option<&str>) -> Vec<u8> {
    let mut node = response.clone();
    if let (Node::Object(members), Some(ca)) = (&mut node, ca_cert) {
        members.retain(|(k, _)| k != "caCert");
        members.push(("caCert".into(), Node::String(ca.into())));
    }
    node.to_python().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_mapping_is_read_back() {
        let token = Node::parse(r#"{"credentialsValue": "abc", "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"}"#).unwrap();
        assert_eq!(
            Stored::from_node(&token).unwrap(),
            Stored::AccessToken("abc".into())
        );
        let x509 = Node::parse(r#"{"credentialsValue":"MIIB","credentialsType":"X509_CERTIFICATE","status":"SUCCESS"}"#).unwrap();
        assert_eq!(
            String::from_utf8(file_bytes(&x509, Some("ca.pem"))).unwrap(),
            r#"{"credentialsValue": "MIIB", "credentialsType": "X509_CERTIFICATE", "status": "SUCCESS", "caCert": "ca.pem"}"#
        );
        for bad in [
            r#"[]"#,
            r#"{"credentialsType":"X"}"#,
            r#"{"credentialsType":"MQTT_BASIC","credentialsValue":"x"}"#,
        ] {
            assert!(
                Stored::from_node(&Node::parse(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn atomic_write_leaves_mode_0600_and_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        write_atomic(path(dir.path()), b"{}", 0o600).unwrap();
        let meta = std::fs::metadata(path(dir.path())).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let abandoned = Pending::create(dir.path().join("x"), 0o600).unwrap();
        drop(abandoned);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
