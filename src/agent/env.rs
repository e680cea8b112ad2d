//! The ThingsBoard gateway's environment variables (TB-REFERENCE §12.1): what to ask for, and
//! where. An empty variable counts as unset, as in the gateway.

use std::path::PathBuf;

use rand::Rng;

use super::error::AgentError;

/// The gateway's default config directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/thingsboard-gateway/config/";

/// The credentials the device asks for, chosen by which variables are set.
#[derive(Clone, PartialEq, Eq)]
pub enum Wanted {
    /// `..._ACCESS_TOKEN` set, or nothing set (the server then generates a token).
    AccessToken(Option<String>),
    /// Any of `..._USERNAME`, `..._PASSWORD`, `..._CLIENT_ID`.
    MqttBasic {
        /// Client id.
        client_id: Option<String>,
        /// User name.
        username: Option<String>,
        /// Password.
        password: Option<String>,
    },
    /// `..._CA_CERT_FILENAME`: a self-signed certificate; the file names the server's CA.
    X509 {
        /// The CA file name, kept as `caCert` in `.credentials`.
        ca_cert: String,
    },
}

impl std::fmt::Debug for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wanted::AccessToken(_) => f.write_str("AccessToken(***)"),
            Wanted::MqttBasic { .. } => f.write_str("MqttBasic(***)"),
            Wanted::X509 { ca_cert } => write!(f, "X509({ca_cert})"),
        }
    }
}

/// What the environment asks for.
#[derive(Clone)]
pub struct Provisioning {
    /// `TB_GW_PROVISIONING_DEVICE_KEY`.
    pub key: String,
    /// `TB_GW_PROVISIONING_DEVICE_SECRET`.
    pub secret: String,
    /// `TB_GW_PROVISIONING_DEVICE_NAME`, or the gateway's default `Gateway xxxxx`.
    pub device_name: String,
    /// The credentials type and values.
    pub wanted: Wanted,
}

impl std::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioning")
            .field("device_name", &self.device_name)
            .field("wanted", &self.wanted)
            .finish_non_exhaustive()
    }
}

/// Reads the environment through `lookup` (a function, so that tests need not touch the
/// process environment).
#[derive(Debug)]
pub struct Environment<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Environment<F> {
    /// Wraps a lookup function, e.g. `|name| std::env::var(name).ok()`.
    pub fn new(lookup: F) -> Self {
        Environment { lookup }
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.is_empty())
    }

    /// `TB_GW_CONFIG_DIR`, else the gateway's default.
    pub fn config_dir(&self) -> PathBuf {
        PathBuf::from(
            self.var("TB_GW_CONFIG_DIR")
                .unwrap_or_else(|| DEFAULT_CONFIG_DIR.into()),
        )
    }

    /// `TB_GW_HOST`, else `host`.
    pub fn host(&self) -> Option<String> {
        self.var("TB_GW_HOST").or_else(|| self.var("host"))
    }

    /// `TB_GW_PORT`, else `port`.
    pub fn port(&self) -> Result<Option<u16>, AgentError> {
        let Some((name, text)) = self
            .var("TB_GW_PORT")
            .map(|v| ("TB_GW_PORT", v))
            .or_else(|| self.var("port").map(|v| ("port", v)))
        else {
            return Ok(None);
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| AgentError::NotConfigured(format!("{name}={text:?} is not a port number")))
    }

    /// The provisioning request the variables describe. Key and secret are both required;
    /// the credentials type follows the gateway's precedence: access token, then MQTT basic,
    /// then X.509.
    pub fn provisioning(&self) -> Result<Provisioning, AgentError> {
        let key = self.var("TB_GW_PROVISIONING_DEVICE_KEY");
        let secret = self.var("TB_GW_PROVISIONING_DEVICE_SECRET");
        let (key, secret) = match (key, secret) {
            (Some(key), Some(secret)) => (key, secret),
            (None, None) => {
                return Err(AgentError::NotConfigured(
                    "no stored credentials and provisioning is not configured: set TB_GW_PROVISIONING_DEVICE_KEY and TB_GW_PROVISIONING_DEVICE_SECRET".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(AgentError::NotConfigured(
                    "TB_GW_PROVISIONING_DEVICE_KEY is not set (the profile's provision key)".into(),
                ));
            }
            (Some(_), None) => {
                return Err(AgentError::NotConfigured(
                    "TB_GW_PROVISIONING_DEVICE_SECRET is not set (the profile's provision secret)"
                        .into(),
                ));
            }
        };
        let device_name = self
            .var("TB_GW_PROVISIONING_DEVICE_NAME")
            .unwrap_or_else(default_device_name);
        Ok(Provisioning {
            key,
            secret,
            device_name,
            wanted: self.wanted()?,
        })
    }

    fn wanted(&self) -> Result<Wanted, AgentError> {
        if let Some(token) = self.var("TB_GW_PROVISIONING_DEVICE_ACCESS_TOKEN") {
            return Ok(Wanted::AccessToken(Some(token)));
        }
        let client_id = self.var("TB_GW_PROVISIONING_DEVICE_CLIENT_ID");
        let username = self.var("TB_GW_PROVISIONING_DEVICE_USERNAME");
        let password = self.var("TB_GW_PROVISIONING_DEVICE_PASSWORD");
        if client_id.is_some() || username.is_some() || password.is_some() {
            // The server refuses basic credentials without a client id and user name, or a
            // client id and password without a user name (SPEC §2); the gateway fills every
            // missing field with random letters. Here only the user name is filled, and only
            // when the request would otherwise be refused, so that a request made of the
            // variables alone stays the same on every start (an idempotent replay).
            let username = match (&client_id, username, &password) {
                (_, Some(u), _) => Some(u),
                (None, None, _) | (Some(_), None, Some(_)) => Some(random_lowercase(15)),
                (Some(_), None, None) => None,
            };
            return Ok(Wanted::MqttBasic {
                client_id,
                username,
                password,
            });
        }
        if let Some(ca_cert) = self.var("TB_GW_PROVISIONING_DEVICE_CA_CERT_FILENAME") {
            return Ok(Wanted::X509 { ca_cert });
        }
        // Deviation from the gateway, which generates 15 lowercase letters here: the server's
        // generated token is stronger, and a reset device with a fixed name gets it back
        // under RETURN_EXISTING instead of a FAILURE for asking for a different token.
        Ok(Wanted::AccessToken(None))
    }
}

/// The gateway's default name: `Gateway ` and 5 random lowercase letters.
fn default_device_name() -> String {
    format!("Gateway {}", random_lowercase(5))
}

fn random_lowercase(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| rng.random_range(b'a'..=b'z') as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment<impl Fn(&str) -> Option<String>> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Environment::new(move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    const KS: [(&str, &str); 2] = [
        ("TB_GW_PROVISIONING_DEVICE_KEY", "k"),
        ("TB_GW_PROVISIONING_DEVICE_SECRET", "s"),
    ];

    #[test]
    fn key_and_secret_are_both_required() {
        for pairs in [&KS[..0], &KS[..1], &KS[1..]] {
            assert!(matches!(
                env(pairs).provisioning(),
                Err(AgentError::NotConfigured(_))
            ));
        }
        let p = env(&KS).provisioning().unwrap();
        assert!(p.device_name.starts_with("Gateway ") && p.device_name.len() == 13);
        assert_eq!(p.wanted, Wanted::AccessToken(None));
    }

    #[test]
    fn precedence_is_token_then_basic_then_x509() {
        let mut all = KS.to_vec();
        all.extend([
            ("TB_GW_PROVISIONING_DEVICE_ACCESS_TOKEN", "t"),
            ("TB_GW_PROVISIONING_DEVICE_USERNAME", "u"),
            ("TB_GW_PROVISIONING_DEVICE_CA_CERT_FILENAME", "ca.pem"),
        ]);
        assert_eq!(
            env(&all).provisioning().unwrap().wanted,
            Wanted::AccessToken(Some("t".into()))
        );
        all.remove(2);
        assert!(matches!(
            env(&all).provisioning().unwrap().wanted,
            Wanted::MqttBasic { .. }
        ));
        all.remove(2);
        assert_eq!(
            env(&all).provisioning().unwrap().wanted,
            Wanted::X509 {
                ca_cert: "ca.pem".into()
            }
        );
    }

    #[test]
    fn a_user_name_is_filled_in_only_where_the_server_would_refuse() {
        let basic = |pairs: &[(&str, &str)]| {
            let mut all = KS.to_vec();
            all.extend_from_slice(pairs);
            match env(&all).provisioning().unwrap().wanted {
                Wanted::MqttBasic { username, .. } => username,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(basic(&[("TB_GW_PROVISIONING_DEVICE_CLIENT_ID", "c")]), None);
        assert_eq!(
            basic(&[("TB_GW_PROVISIONING_DEVICE_USERNAME", "u")]),
            Some("u".into())
        );
        assert_eq!(
            basic(&[("TB_GW_PROVISIONING_DEVICE_PASSWORD", "p")])
                .unwrap()
                .len(),
            15
        );
    }

    #[test]
    fn host_port_and_dir_fall_back_in_order() {
        let e = env(&[("host", "h"), ("port", "1884"), ("TB_GW_PORT", "")]);
        assert_eq!(e.host().as_deref(), Some("h"));
        assert_eq!(e.port().unwrap(), Some(1884));
        assert_eq!(e.config_dir(), PathBuf::from(DEFAULT_CONFIG_DIR));
        let e = env(&[("TB_GW_HOST", "g"), ("host", "h"), ("TB_GW_PORT", "x")]);
        assert_eq!(e.host().as_deref(), Some("g"));
        assert!(e.port().is_err());
    }
}
