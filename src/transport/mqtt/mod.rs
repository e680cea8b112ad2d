//! MQTT 3.1.1 and 5 provisioning (SPEC §5) with ntex-mqtt, on a plain and an optional TLS
//! listener of one ntex server. `listener.rs` admits connections, `session.rs` holds what a
//! session is and does, `v3.rs` and `v5.rs` map packets to it. No broker: nothing is routed
//! between sessions, and a response only ever goes to the connection that asked.

mod listener;
mod session;
mod v3;
mod v5;

use std::rc::Rc;
use std::sync::Arc;

use ntex::io::{Filter, Io, IoConfig};
use ntex::service::{Service, State};
use ntex::time::{Millis, Seconds};
use ntex::tls::TlsConfig;
use ntex::tls::rustls::TlsAcceptor;
use ntex_mqtt::{MqttError, MqttServiceConfig, QoS, Reason, v3 as mqtt3, v5 as mqtt5};

use self::listener::{Conn, Plain, Tls, Worker};
use self::session::Settings;
use crate::engine::Engine;

/// The topic requests are published to.
pub const REQUEST_TOPIC: &str = "/provision/request";
/// The topic responses are published on.
pub const RESPONSE_TOPIC: &str = "/provision/response";
/// The user name or client id that makes a provisioning session.
pub const PROVISION_LOGIN: &str = "provision";

/// PUBLISH packets from one client that may wait for their decision at once: the 3.1.1 read
/// pause threshold and the MQTT 5 Receive Maximum advertised in CONNACK. Requests of a session
/// are decided one after the other, so more would only queue.
pub const MAX_INFLIGHT_REQUESTS: u16 = 16;
/// QoS 1 responses a client may leave unacknowledged before the next one waits (also capped by
/// an MQTT 5 client's own Receive Maximum).
pub const MAX_INFLIGHT_RESPONSES: u16 = 16;
/// The idle limit of a session whose client disabled keep-alive (keep-alive 0), in seconds.
/// Clients that set a keep-alive get 1.5 times it, as MQTT specifies.
pub const IDLE_WITHOUT_KEEP_ALIVE_S: u16 = 60;
/// Concurrent TLS handshakes per worker; more wait for one to finish.
pub const MAX_CONCURRENT_TLS_HANDSHAKES: usize = 256;

/// The sockets to serve, bound by the caller (so that bind errors surface at start).
#[derive(Debug)]
pub struct MqttListeners {
    /// Plain MQTT.
    pub plain: std::net::TcpListener,
    /// MQTT over TLS, with its rustls configuration.
    pub tls: Option<(std::net::TcpListener, Arc<rustls::ServerConfig>)>,
}

/// Settings of the MQTT listeners (from `config::MqttConfig`).
#[derive(Clone, Copy, Debug)]
pub struct MqttListenerOptions {
    /// Worker threads.
    pub workers: usize,
    /// Connections per worker, plain and TLS together.
    pub max_connections_per_worker: usize,
    /// Largest packet accepted.
    pub max_packet_bytes: u32,
    /// TLS handshake plus CONNECT deadline from the TCP accept.
    pub connect_timeout_ms: u64,
    /// A session is closed this long after its last response.
    pub close_after_response_ms: u64,
    /// Graceful stop deadline.
    pub shutdown_timeout_ms: u64,
}

/// Starts serving; must run inside an ntex system.
pub fn serve(
    engine: Engine,
    listeners: MqttListeners,
    options: MqttListenerOptions,
) -> std::io::Result<ntex::server::Server> {
    let cfg = shared_cfg(&options);
    let limits = Limits::from(&options);
    let mut builder = ntex::server::build()
        .name("mqtt")
        .workers(options.workers)
        .shutdown_timeout(Millis(clamp_u32(options.shutdown_timeout_ms)))
        .disable_signals();
    // ntex's own per-worker connection cap (`maxconn`) is process-wide and already set by the
    // HTTP listener; the MQTT limit is enforced by `listener::Worker` instead.
    let plain_engine = engine.clone();
    builder = builder.listen("mqtt", listeners.plain, cfg.clone(), async move |_| Plain {
        worker: Worker::current(limits.max_connections_per_worker),
        connect_timeout: limits.connect_timeout,
        mqtt: mqtt_service::<ntex::io::Base>(plain_engine.clone(), limits),
    })?;
    if let Some((listener, tls)) = listeners.tls {
        builder = builder.listen("mqtt-tls", listener, cfg, async move |_| {
            ntex::tls::max_concurrent_ssl_accept(MAX_CONCURRENT_TLS_HANDSHAKES);
            Tls {
                worker: Worker::current(limits.max_connections_per_worker),
                connect_timeout: limits.connect_timeout,
                acceptor: TlsAcceptor::new(tls.clone()),
                mqtt: mqtt_service(engine.clone(), limits),
            }
        })?;
    }
    Ok(builder.run())
}

/// Every ntex and ntex-mqtt setting, chosen rather than defaulted: ntex-mqtt's defaults are an
/// unlimited packet size and no CONNECT timeout.
fn shared_cfg(options: &MqttListenerOptions) -> ntex::SharedCfg {
    let connect = seconds_ceil(options.connect_timeout_ms);
    ntex::SharedCfg::new("MQTT")
        .add(
            IoConfig::new()
                // Replaced per session by the keep-alive rule at CONNACK.
                .set_keepalive_timeout(Seconds(IDLE_WITHOUT_KEEP_ALIVE_S))
                .set_disconnect_timeout(Seconds(1))
                // A packet that has started to arrive must be complete within the connect
                // timeout: the maximum equals the period, so it is never extended.
                .set_frame_read_rate(connect, connect, 0),
        )
        .add(
            MqttServiceConfig::new()
                .set_max_qos(QoS::AtLeastOnce)
                .set_max_size(options.max_packet_bytes)
                // `listener` enforces the exact deadline from the TCP accept; these are the
                // same bound applied by ntex-mqtt to its own phases.
                .protocol_version_timeout(connect)
                .set_connect_timeout(connect)
                .set_handshake_timeout(connect)
                .set_max_receive(MAX_INFLIGHT_REQUESTS)
                .set_max_receive_size(options.max_packet_bytes as usize)
                .set_max_topic_alias(0)
                .set_max_send(MAX_INFLIGHT_RESPONSES)
                .set_max_send_size(options.max_packet_bytes)
                // A whole request payload arrives in one piece, never as a stream.
                .set_min_chunk_size(options.max_packet_bytes)
                .set_max_payload_buffer_size(options.max_packet_bytes as usize)
                // A request still queued when its client disconnects is dropped, not decided.
                .set_handle_qos_after_disconnect(None),
        )
        .add(TlsConfig::new().set_handshake_timeout(connect))
        .into()
}

/// Limits the phase handlers need, copied into every worker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    max_connections_per_worker: usize,
    connect_timeout: Millis,
    close_after_response: Millis,
    max_packet_bytes: u32,
    max_inflight_requests: u16,
    max_inflight_responses: u16,
    idle_without_keep_alive: Seconds,
}

impl From<&MqttListenerOptions> for Limits {
    fn from(options: &MqttListenerOptions) -> Limits {
        Limits {
            max_connections_per_worker: options.max_connections_per_worker,
            connect_timeout: Millis(clamp_u32(options.connect_timeout_ms)),
            close_after_response: Millis(clamp_u32(options.close_after_response_ms)),
            max_packet_bytes: options.max_packet_bytes,
            max_inflight_requests: MAX_INFLIGHT_REQUESTS,
            max_inflight_responses: MAX_INFLIGHT_RESPONSES,
            idle_without_keep_alive: Seconds(IDLE_WITHOUT_KEEP_ALIVE_S),
        }
    }
}

/// The MQTT service of one listener on one worker: version detection, then 3.1.1 or 5.
fn mqtt_service<F: Filter>(
    engine: Engine,
    limits: Limits,
) -> impl Service<(), State<Rc<Conn>, Io<F>>, Res = (), Error = MqttError<Refusal>> {
    let settings = Rc::new(Settings {
        engine,
        close_after_response: limits.close_after_response,
    });
    let settings_v5 = settings.clone();
    ntex_mqtt::MqttServer::new()
        .v3(
            mqtt3::MqttServer::with(async |session: &mqtt3::Session<v3::SessionV3>, publish| {
                v3::publish_v3(session, publish).await
            })
            .protocol(async |session: &mqtt3::Session<v3::SessionV3>, message| {
                v3::protocol_v3(session, message).await
            })
            .control(v3::control_v3)
            .build(async move |connect| v3::handshake_v3(&settings, &limits, connect).await),
        )
        .v5(
            mqtt5::MqttServer::with(async |session: &mqtt5::Session<v5::SessionV5>, publish| {
                v5::publish_v5(session, publish).await
            })
            .protocol(async |session: &mqtt5::Session<v5::SessionV5>, message| {
                v5::protocol_v5(session, message).await
            })
            .control(v5::control_v5)
            .build(async move |connect| v5::handshake_v5(&settings_v5, &limits, connect).await),
        )
}

/// Why a session was ended by the server after its CONNACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// A PUBLISH to a topic other than [`REQUEST_TOPIC`].
    #[error("publish to a topic other than {REQUEST_TOPIC}")]
    Topic,
    /// The payload of a PUBLISH could not be read (the client went away mid-packet).
    #[error("the request payload could not be read")]
    Payload,
}

impl Refusal {
    /// The MQTT 5 DISCONNECT reason code.
    pub(crate) fn disconnect_reason(self) -> mqtt5::codec::DisconnectReasonCode {
        match self {
            Refusal::Topic => mqtt5::codec::DisconnectReasonCode::TopicNameInvalid,
            Refusal::Payload => mqtt5::codec::DisconnectReasonCode::ImplementationSpecificError,
        }
    }
}

/// A refusal is never turned into a PUBACK: the session ends (see `v5::control_v5`).
impl TryFrom<Refusal> for mqtt5::PublishAck {
    type Error = Refusal;

    fn try_from(refusal: Refusal) -> Result<Self, Refusal> {
        Err(refusal)
    }
}

/// One log line per session that ends otherwise than by the client's choice.
pub(crate) fn log_stop(version: &'static str, reason: &Reason<Refusal>) {
    match reason {
        Reason::Error(error) => {
            tracing::debug!(version, error = %error.get_ref(), "MQTT session ended by a refusal");
        }
        Reason::Protocol(error) => {
            tracing::debug!(version, error = %error.get_ref(), "MQTT session ended by a protocol error");
        }
        Reason::PeerGone(_) => tracing::trace!(version, "MQTT client went away"),
    }
}

fn seconds_ceil(ms: u64) -> Seconds {
    Seconds(u16::try_from(ms.div_ceil(1000).max(1)).unwrap_or(u16::MAX))
}

fn clamp_u32(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_seconds_and_never_to_zero() {
        assert_eq!(seconds_ceil(0), Seconds(1));
        assert_eq!(seconds_ceil(1), Seconds(1));
        assert_eq!(seconds_ceil(1000), Seconds(1));
        assert_eq!(seconds_ceil(1001), Seconds(2));
        assert_eq!(seconds_ceil(u64::MAX), Seconds(u16::MAX));
    }

    #[test]
    fn refusals_carry_thingsboards_reason_codes() {
        assert_eq!(u8::from(Refusal::Topic.disconnect_reason()), 0x90);
        assert_eq!(u8::from(Refusal::Payload.disconnect_reason()), 0x83);
    }
}
