//! `provisiond profile create|list|show|update|delete`, locally or against a server.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::{Remote, Target, local_engine, percent_encode};
use provisiond::admin;

/// Profile subcommands.
#[derive(Subcommand)]
pub enum ProfileAction {
    /// Create a profile; key and secret are generated when not given.
    Create {
        /// Profile name.
        name: String,
        /// ALLOW_CREATE_NEW_DEVICES (default), CHECK_PRE_PROVISIONED_DEVICES or DISABLED.
        #[arg(long)]
        strategy: Option<String>,
        /// Provision key.
        #[arg(long)]
        key: Option<String>,
        /// Provision secret.
        #[arg(long)]
        secret: Option<String>,
        /// RETURN_EXISTING (default) or REJECT.
        #[arg(long)]
        reprovision_policy: Option<String>,
        /// Device type of new devices (default: the profile name).
        #[arg(long)]
        device_type: Option<String>,
    },
    /// List profiles.
    List,
    /// Show one profile, key and secret included.
    Show {
        /// Profile name.
        name: String,
    },
    /// Change a profile's strategy, secret, policy or device type.
    Update {
        /// Profile name.
        name: String,
        /// New strategy.
        #[arg(long)]
        strategy: Option<String>,
        /// New secret.
        #[arg(long)]
        secret: Option<String>,
        /// New re-provision policy.
        #[arg(long)]
        reprovision_policy: Option<String>,
        /// New device type.
        #[arg(long)]
        device_type: Option<String>,
    },
    /// Delete a profile.
    Delete {
        /// Profile name.
        name: String,
        /// Also delete the profile's devices.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a profile command and prints its result.
pub fn run(action: ProfileAction, target: Target) -> anyhow::Result<()> {
    let reply = match &target.server {
        Some(url) => remote(&action, &Remote::new(url, &target)?)?,
        None => local(&action, &target)?,
    };
    if reply.status >= 400 {
        let message = reply.body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| reply.body.to_string());
        bail!("{message}");
    }
    match (&action, &reply.body) {
        (ProfileAction::List, Value::Array(profiles)) => {
            println!("{:<32} {:<30} {:<16} KEY", "NAME", "STRATEGY", "POLICY");
            for p in profiles {
                println!(
                    "{:<32} {:<30} {:<16} {}",
                    p["name"].as_str().unwrap_or_default(),
                    p["strategy"].as_str().unwrap_or_default(),
                    p["reprovisionPolicy"].as_str().unwrap_or_default(),
                    p["provisionDeviceKey"].as_str().unwrap_or_default()
                );
            }
        }
        (_, body) => println!("{}", serde_json::to_string_pretty(body)?),
    }
    Ok(())
}

fn body(action: &ProfileAction) -> Value {
    let mut body = json!({});
    let fields: [(&str, &Option<String>); 4] = match action {
        ProfileAction::Create {
            name,
            strategy,
            key,
            secret,
            reprovision_policy,
            device_type,
        } => {
            body["name"] = json!(name);
            if let Some(key) = key {
                body["provisionDeviceKey"] = json!(key);
            }
            [
                ("strategy", strategy),
                ("provisionDeviceSecret", secret),
                ("reprovisionPolicy", reprovision_policy),
                ("deviceType", device_type),
            ]
        }
        ProfileAction::Update {
            strategy,
            secret,
            reprovision_policy,
            device_type,
            ..
        } => [
            ("strategy", strategy),
            ("provisionDeviceSecret", secret),
            ("reprovisionPolicy", reprovision_policy),
            ("deviceType", device_type),
        ],
        _ => return Value::Null,
    };
    for (key, value) in fields {
        if let Some(value) = value {
            body[key] = json!(value);
        }
    }
    body
}

fn local(action: &ProfileAction, target: &Target) -> anyhow::Result<admin::Reply> {
    let engine = local_engine(&target.settings)?;
    let body = serde_json::to_vec(&body(action))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = runtime.block_on(async {
        match action {
            ProfileAction::Create { .. } => admin::create_profile(&engine, &body),
            ProfileAction::List => admin::list_profiles(&engine),
            ProfileAction::Show { name } => admin::get_profile(&engine, name),
            ProfileAction::Update { name, .. } => admin::update_profile(&engine, name, &body),
            ProfileAction::Delete { name, force } => {
                admin::delete_profile(&engine, name, *force).await
            }
        }
    });
    drop(runtime);
    engine.shutdown();
    Ok(reply)
}

fn remote(action: &ProfileAction, remote: &Remote) -> anyhow::Result<admin::Reply> {
    let profiles = format!("{}/api/admin/profiles", remote.base);
    let one = |name: &str| format!("{profiles}/{}", percent_encode(name));
    let (agent, auth) = (&remote.agent, remote.auth.as_str());
    let body = body(action);
    let response = match action {
        ProfileAction::Create { .. } => agent
            .post(&profiles)
            .header("Authorization", auth)
            .send_json(&body),
        ProfileAction::List => agent.get(&profiles).header("Authorization", auth).call(),
        ProfileAction::Show { name } => agent.get(one(name)).header("Authorization", auth).call(),
        ProfileAction::Update { name, .. } => agent
            .put(one(name))
            .header("Authorization", auth)
            .send_json(&body),
        ProfileAction::Delete { name, force } => agent
            .delete(format!("{}?force={force}", one(name)))
            .header("Authorization", auth)
            .call(),
    };
    let mut response = response.with_context(|| format!("cannot reach {}", remote.base))?;
    let status = response.status().as_u16();
    let body: Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("{} answered {status} without a JSON body", remote.base))?;
    Ok(admin::Reply { status, body })
}
