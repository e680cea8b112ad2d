//! provisiond's admin API (SPEC §6), over HTTP like any operator: create the run's profile,
//! import the pre-provisioned fleet, export it for verification.

use std::collections::HashMap;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::fleet::Creds;

/// An admin API client.
#[derive(Debug)]
pub struct Admin {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// What the export says about one device.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its credentials, as the wire would state them (None: it has none).
    pub creds: Option<Creds>,
    /// Whether `provisionState` is `provisioned`.
    pub provisioned: bool,
    /// The credentials id the server indexes it by (token, MQTT basic id, certificate hash).
    pub credentials_id: Option<String>,
}

impl Admin {
    /// A client for the server at `base` (`http://host:port`).
    pub fn new(base: &str, token: &str) -> Admin {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Admin {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent,
        }
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Creates a profile; returns its key and secret.
    pub fn create_profile(&self, name: &str, strategy: &str) -> anyhow::Result<(String, String)> {
        let mut response = self
            .agent
            .post(format!("{}/api/admin/profiles", self.base))
            .header("Authorization", self.auth())
            .send_json(json!({ "name": name, "strategy": strategy }))
            .context("admin API unreachable")?;
        let status = response.status().as_u16();
        let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        if status != 201 {
            bail!("creating profile {name:?} was answered {status}: {body}");
        }
        let field = |k: &str| {
            body[k]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("no {k} in {body}"))
        };
        Ok((
            field("provisionDeviceKey")?,
            field("provisionDeviceSecret")?,
        ))
    }

    /// Imports a CSV (with a header line) into `profile`; returns the number created.
    pub fn import(&self, profile: &str, csv: Vec<u8>) -> anyhow::Result<u64> {
        let mut response = self
            .agent
            .post(format!(
                "{}/api/admin/import?profile={profile}&header=true",
                self.base
            ))
            .header("Authorization", self.auth())
            .header("Content-Type", "text/csv")
            .send(&csv[..])
            .context("admin API unreachable")?;
        let status = response.status().as_u16();
        let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        if status != 200 || body["failed"].as_u64() != Some(0) {
            bail!("the import was answered {status}: {body}");
        }
        body["created"]
            .as_u64()
            .context("no created count in the import summary")
    }

    /// Every device of `profile`, by name, through the paged device listing (1000 per page).
    /// (The device listing carries the credentials id too, which the CSV export does not.)
    pub fn devices(&self, profile: &str) -> anyhow::Result<HashMap<String, Stored>> {
        let mut out = HashMap::new();
        let mut cursor = String::new();
        loop {
            let mut response = self
                .agent
                .get(format!(
                    "{}/api/admin/devices?profile={profile}&limit=1000&cursor={cursor}",
                    self.base
                ))
                .header("Authorization", self.auth())
                .call()
                .context("admin API unreachable")?;
            let status = response.status().as_u16();
            let page: Value = response
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_json()
                .context("unreadable device page")?;
            if status != 200 {
                bail!("the device listing was answered {status}: {page}");
            }
            for d in page["devices"]
                .as_array()
                .context("no devices in the page")?
            {
                let creds = d["credentialsType"].as_str().map(|kind| Creds {
                    kind: kind.to_string(),
                    value: d["credentialsValue"].clone(),
                });
                let name = d["name"].as_str().context("device without a name")?;
                out.insert(
                    name.to_string(),
                    Stored {
                        creds,
                        provisioned: d["provisionState"] == "provisioned",
                        credentials_id: d["credentialsId"].as_str().map(str::to_string),
                    },
                );
            }
            match page["nextCursor"].as_str() {
                Some(next) => cursor = next.to_string(),
                None => return Ok(out),
            }
        }
    }
}
