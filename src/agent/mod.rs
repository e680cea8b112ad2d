//! The device-side agent (SPEC §8, TB-REFERENCE §12): provision on first start the way the
//! ThingsBoard IoT Gateway does, keep what the server returned in `<config dir>/.credentials`
//! in the gateway's own format, and forget it on reset.
//!
//! - `env`: the gateway's environment variables → what to ask for;
//! - `request`: the request body; `transport`: one exchange over MQTT, HTTP or CoAP;
//! - `retry`: backoff between attempts; `store`: `.credentials`; `x509`: `cert.pem`/`key.pem`;
//! - `pyjson`: JSON with its key order kept, written as Python writes it; `error`: exit codes;
//! - `check`: what is stored, and optionally whether an MQTT server accepts it.

pub mod check;
pub mod env;
pub mod error;
pub mod pyjson;
pub mod request;
pub mod retry;
pub mod store;
pub mod transport;
pub mod x509;

use std::path::{Path, PathBuf};
use std::time::Duration;

use env::{Provisioning, Wanted};
use error::AgentError;
use pyjson::Node;
use retry::Backoff;
use store::{Pending, Stored};
use transport::{Endpoint, Kind, tls::ServerCheck};

/// How the agent reaches the server and how hard it tries.
#[derive(Debug, Clone)]
pub struct Reach {
    /// Transport.
    pub kind: Kind,
    /// Host (flag, else `TB_GW_HOST`/`host`, else localhost).
    pub host: String,
    /// Port (flag, else `TB_GW_PORT`/`port`, else the transport's default).
    pub port: u16,
    /// MQTT over TLS (the flag, or port 8883 as in the gateway).
    pub tls: bool,
    /// CA file to check the server's certificate with (else it is not checked).
    pub ca_file: Option<PathBuf>,
    /// One exchange's bound.
    pub timeout: Duration,
    /// Retries and their delays.
    pub backoff: Backoff,
}

/// What a start did.
#[derive(Debug)]
pub enum Started {
    /// `.credentials` existed; nothing was sent.
    UsedStored(Stored),
    /// Provisioned and stored.
    Provisioned {
        /// The device name asked for.
        device_name: String,
        /// What was stored.
        stored: Stored,
    },
}

/// The start-up: stored credentials if any, else provision and store (TB-REFERENCE §12.2).
/// `progress` hears of every failed attempt.
pub fn start(
    config_dir: &Path,
    provisioning: Result<Provisioning, AgentError>,
    reach: &Reach,
    mut progress: impl FnMut(&str),
) -> Result<Started, AgentError> {
    if let Some(stored) = store::load(config_dir)? {
        return Ok(Started::UsedStored(stored));
    }
    let provisioning = provisioning?;
    // Fails now, before the server is asked, if the directory cannot be written.
    let pending = Pending::create(store::path(config_dir), 0o600)?;
    let (certificate, ca_cert) = match &provisioning.wanted {
        Wanted::X509 { ca_cert } => (
            Some(x509::load_or_generate(config_dir)?),
            Some(ca_cert.clone()),
        ),
        _ => (None, None),
    };
    let body = request::body(&provisioning, certificate.as_deref());
    let endpoint = endpoint(reach, config_dir, ca_cert.as_deref())?;
    let answer = with_retries(reach, &endpoint, &body, &mut progress)?;
    let response = Node::parse(&answer).map_err(|_| {
        AgentError::Unreachable(format!(
            "the server's answer is not JSON: {}",
            answer.chars().take(200).collect::<String>()
        ))
    })?;
    let message = || {
        response
            .get("errorMsg")
            .and_then(Node::as_str)
            .unwrap_or("no errorMsg")
            .to_string()
    };
    match response.get("status").and_then(Node::as_str) {
        Some("SUCCESS") => {}
        Some("NOT_FOUND") => return Err(AgentError::NotFound(message())),
        Some("FAILURE") => return Err(AgentError::Refused(message())),
        _ => {
            return Err(AgentError::Unreachable(format!(
                "the server's answer has no provisioning status: {}",
                answer.chars().take(200).collect::<String>()
            )));
        }
    }
    let stored = Stored::from_node(&response).map_err(|why| {
        AgentError::Unreachable(format!("the server's SUCCESS answer is unusable: {why}"))
    })?;
    pending.commit(&store::file_bytes(&response, ca_cert.as_deref()))?;
    let stored = if let Stored::X509 { .. } = stored {
        Stored::X509 { ca_cert }
    } else {
        stored
    };
    Ok(Started::Provisioned {
        device_name: provisioning.device_name,
        stored,
    })
}

/// The endpoint for `reach`; a CA file named relative to the config directory.
pub(crate) fn endpoint(
    reach: &Reach,
    config_dir: &Path,
    ca_cert: Option<&str>,
) -> Result<Endpoint, AgentError> {
    let tls = (reach.kind == Kind::Mqtt && reach.tls).then(|| {
        let named = ca_cert
            .map(|name| config_dir.join(name))
            .filter(|path| path.is_file());
        match reach.ca_file.clone().or(named) {
            Some(path) => ServerCheck::Ca(path),
            None => ServerCheck::None,
        }
    });
    if reach.tls && reach.kind != Kind::Mqtt {
        return Err(AgentError::NotConfigured(
            "TLS is available for MQTT only (--transport mqtt)".into(),
        ));
    }
    Ok(Endpoint {
        host: reach.host.clone(),
        port: reach.port,
        tls,
        timeout: reach.timeout,
    })
}

/// Exchanges until an answer arrives or the retries are spent.
fn with_retries(
    reach: &Reach,
    endpoint: &Endpoint,
    body: &str,
    progress: &mut impl FnMut(&str),
) -> Result<String, AgentError> {
    let mut retry = 0;
    loop {
        match transport::exchange(reach.kind, endpoint, body) {
            Ok(answer) => return Ok(answer),
            Err(why) if retry >= reach.backoff.retries => {
                return Err(AgentError::Unreachable(format!(
                    "no answer after {} attempt(s): {why}",
                    retry + 1
                )));
            }
            Err(why) => {
                let delay = reach.backoff.delay(retry);
                progress(&format!(
                    "attempt {} failed: {why}; retrying in {:.1} s",
                    retry + 1,
                    delay.as_secs_f64()
                ));
                std::thread::sleep(delay);
                retry += 1;
            }
        }
    }
}

/// Removes the stored credentials; false if there were none (the gateway's
/// `gateway_remove_provisioned_credentials`).
pub fn reset(config_dir: &Path) -> Result<bool, AgentError> {
    store::remove(config_dir)
}
