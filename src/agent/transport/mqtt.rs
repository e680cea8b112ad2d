//! MQTT 3.1.1 with rumqttc, as the gateway's `TBDeviceMqttClient.provision` does it: user name
//! `provision`, subscribe to `/provision/response`, publish the request on `/provision/request`
//! at QoS 1, wait for the answer. Also a bare CONNECT with a device's own credentials (`check`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, ConnectReturnCode, Connection, ConnectionError, Event, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};

use super::Endpoint;
use super::tls;

const REQUEST_TOPIC: &str = "/provision/request";
const RESPONSE_TOPIC: &str = "/provision/response";
/// provisiond's and ThingsBoard's default packet limit.
const MAX_PACKET_BYTES: usize = 64 * 1024;

/// A device's own MQTT login, for `check --connect`.
pub struct Login {
    /// Client id (a random one when None).
    pub client_id: Option<String>,
    /// User name.
    pub user_name: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// TLS client identity for X.509.
    pub identity: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Login(***)")
    }
}

/// Provisions over one MQTT session.
pub fn exchange(endpoint: &Endpoint, body: &str) -> Result<String, String> {
    let login = Login {
        client_id: Some("provision".into()),
        user_name: Some("provision".into()),
        password: None,
        identity: None,
    };
    let (client, mut connection) = open(endpoint, &login)?;
    let target = format!("MQTT {}:{}", endpoint.host, endpoint.port);
    client
        .subscribe(RESPONSE_TOPIC, QoS::AtLeastOnce)
        .and_then(|()| client.publish(REQUEST_TOPIC, QoS::AtLeastOnce, false, body))
        .map_err(|e| format!("{target}: {e}"))?;
    let deadline = Instant::now() + endpoint.timeout;
    let answer = loop {
        match next(&mut connection, deadline, &target)? {
            Packet::Publish(publish) if publish.topic == RESPONSE_TOPIC => {
                break String::from_utf8(publish.payload.to_vec())
                    .map_err(|_| format!("{target}: the answer is not UTF-8"))?;
            }
            Packet::ConnAck(ack) if ack.code != ConnectReturnCode::Success => {
                return Err(format!(
                    "{target} refused the provisioning session: {:?}",
                    ack.code
                ));
            }
            _ => {}
        }
    };
    close(client, connection);
    Ok(answer)
}

/// CONNECTs with `login`; Ok(()) on CONNACK 0, Err((refused?, why)).
pub fn connect(endpoint: &Endpoint, login: &Login) -> Result<(), (bool, String)> {
    let (client, mut connection) = open(endpoint, login).map_err(|e| (false, e))?;
    let target = format!("MQTT {}:{}", endpoint.host, endpoint.port);
    let deadline = Instant::now() + endpoint.timeout;
    loop {
        match connection.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                return Err((
                    true,
                    format!(
                        "{target} refused the stored credentials: {code:?} (a provisioning-only server such as provisiond refuses every device session)"
                    ),
                ));
            }
            Ok(Err(e)) => return Err((false, format!("{target}: {e}"))),
            Err(_) => return Err((false, format!("{target}: no CONNACK in time"))),
        }
    }
    close(client, connection);
    Ok(())
}

fn open(endpoint: &Endpoint, login: &Login) -> Result<(Client, Connection), String> {
    let client_id = login
        .client_id
        .clone()
        .unwrap_or_else(|| format!("provisiond-agent-{}", std::process::id()));
    let mut options = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some(user) = &login.user_name {
        options.set_credentials(user.clone(), login.password.clone().unwrap_or_default());
    }
    if let Some(check) = &endpoint.tls {
        let config = tls::client_config(
            check,
            login
                .identity
                .as_ref()
                .map(|(chain, key)| (chain.clone(), key.clone_key())),
        )?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::clone(&config),
        )));
    }
    Ok(Client::new(options, 10))
}

/// The next incoming packet before `deadline`.
fn next(connection: &mut Connection, deadline: Instant, target: &str) -> Result<Packet, String> {
    loop {
        match connection.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(Event::Incoming(packet))) => return Ok(packet),
            Ok(Ok(Event::Outgoing(_))) => {}
            Ok(Err(e)) => return Err(format!("{target}: {e}")),
            Err(_) => return Err(format!("{target}: no answer in time")),
        }
    }
}

/// DISCONNECT politely, giving the event loop a moment to write it.
fn close(client: Client, mut connection: Connection) {
    let _ = client.disconnect();
    for _ in 0..4 {
        match connection.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
    }
}
