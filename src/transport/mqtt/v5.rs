//! MQTT 5 phases: handshake (with the CONNACK properties that advertise every limit), publish,
//! protocol messages and connection control, which gives each refusal its reason code.

use std::num::NonZeroU16;
use std::rc::Rc;

use ntex::util::{ByteString, Bytes};
use ntex_mqtt::v5::{self, codec};
use ntex_mqtt::{Control, QoS, Reason};

use super::listener::Conn;
use super::session::{ResponseSink, Session, Settings, is_provisioning};
use super::{Limits, REQUEST_TOPIC, RESPONSE_TOPIC, Refusal, log_stop};
use crate::engine::credentials::generate_alphanumeric;
use crate::metrics as m;

/// The state behind every MQTT 5 connection.
pub(crate) type SessionV5 = Rc<Session<v5::MqttSink>>;

impl ResponseSink for v5::MqttSink {
    async fn send_response(&self, payload: Bytes, qos: QoS) -> bool {
        let publish = self.publish(RESPONSE_TOPIC);
        match qos {
            // Checked first: ntex-mqtt logs an error for a QoS 0 send on a closed connection.
            QoS::AtMostOnce => self.is_open() && publish.send_at_most_once(payload).is_ok(),
            _ => {
                // Waits while the client's Receive Maximum is used up.
                self.ready().await
                    && self.is_ready()
                    && publish.send_at_least_once_no_block(payload).is_ok()
            }
        }
    }

    fn close_quietly(&self) {
        self.close_with_no_reason();
    }
}

/// CONNECT: a provisioning session is accepted with CONNACK properties stating every limit;
/// any other is refused with 0x87, "not authorized".
pub(crate) async fn handshake_v5(
    settings: &Rc<Settings>,
    limits: &Limits,
    connect: v5::Connect<Rc<Conn>>,
) -> Result<v5::ConnectAck<SessionV5>, Refusal> {
    connect.st().mark_connected();
    let packet = connect.packet();
    if !is_provisioning(packet.username.as_deref(), &packet.client_id) {
        // The user name may be a device's access token: it is never logged.
        m::mqtt_refused("not_provisioning");
        tracing::debug!("MQTT 5 CONNECT refused: not a provisioning session");
        return Ok(connect.failed(codec::ConnectAckReason::NotAuthorized));
    }
    if settings.engine.overloaded() {
        m::mqtt_refused("overloaded");
        tracing::debug!("MQTT 5 CONNECT refused: engine overloaded");
        return Ok(connect.failed(codec::ConnectAckReason::ServerBusy));
    }
    let keep_alive = packet.keep_alive;
    // MQTT-3.2.2-16: an empty client id gets one assigned in the CONNACK.
    let assigned_id = packet
        .client_id
        .is_empty()
        .then(|| ByteString::from(format!("provision-{}", generate_alphanumeric())));
    let sink = connect.sink();
    // Responses go out without waiting for the client's PUBACK; its arrival needs no action.
    sink.publish_ack_cb(|_, _| {});
    let session = Session::new(settings.clone(), connect.st().clone(), sink);
    let receive_max = NonZeroU16::new(limits.max_inflight_requests).unwrap_or(NonZeroU16::MIN);
    let ack = connect
        .ack(session)
        .max_send(Some(limits.max_inflight_responses))
        .with(|ack| {
            ack.max_qos = QoS::AtLeastOnce;
            ack.receive_max = receive_max;
            ack.max_packet_size = Some(limits.max_packet_bytes);
            // A provisioning session publishes to one topic; aliases buy nothing.
            ack.topic_alias_max = 0;
            // Only the exact response topic is ever granted.
            ack.wildcard_subscription_available = false;
            ack.shared_subscription_available = false;
            ack.assigned_client_id = assigned_id;
            // A client without keep-alive is told the server's, so that it pings rather than
            // being dropped as idle.
            if keep_alive == 0 {
                ack.server_keepalive_sec = Some(limits.idle_without_keep_alive.0);
            }
        });
    Ok(if keep_alive == 0 {
        ack.keep_alive(limits.idle_without_keep_alive.0)
    } else {
        ack
    })
}

/// PUBLISH: `/provision/request` is decided and answered (PUBACK 0x00, or 0x99 when the payload
/// could not be decoded); any other topic gets PUBACK 0x90 and DISCONNECT 0x90.
pub(crate) async fn publish_v5(
    session: &v5::Session<SessionV5>,
    publish: v5::Publish,
) -> Result<v5::PublishAck, Refusal> {
    let session: &SessionV5 = session;
    let _turn = session.turn().await;
    if publish.publish_topic() != REQUEST_TOPIC {
        m::mqtt_refused("topic");
        tracing::debug!("MQTT 5 PUBLISH to another topic; disconnecting");
        let sink = session.sink().clone();
        // Spawned so that the DISCONNECT follows the PUBACK this handler returns.
        ntex::rt::spawn(async move {
            sink.close_with_reason(codec::Disconnect::new(
                codec::DisconnectReasonCode::TopicNameInvalid,
            ));
        });
        return Ok(publish
            .ack()
            .reason_code(codec::PublishAckReason::TopicNameInvalid));
    }
    let in_flight = session.begin_request();
    let payload = publish.read_all().await.map_err(|_| Refusal::Payload)?;
    let answer = session.answer(&payload).await;
    // Returning makes ntex-mqtt write the PUBACK (QoS 1) before the spawned response.
    session.respond(answer.payload, in_flight);
    let ack = publish.ack();
    Ok(if answer.decoded {
        ack
    } else {
        ack.reason_code(codec::PublishAckReason::PayloadFormatInvalid)
    })
}

/// SUBSCRIBE (refused filters get 0x80, as SPEC §5 says; ThingsBoard itself sends 0x8F), UNSUBSCRIBE (0x11 for a filter
/// that was not subscribed), PINGREQ, DISCONNECT; AUTH ends the session (0x8C).
pub(crate) async fn protocol_v5(
    session: &v5::Session<SessionV5>,
    message: v5::ProtocolMessage,
) -> Result<v5::ProtocolMessageAck, Refusal> {
    let session: &SessionV5 = session;
    Ok(match message {
        v5::ProtocolMessage::Subscribe(mut subscribe) => {
            for mut filter in subscribe.iter_mut() {
                match session.subscribe(filter.topic(), filter.options().qos) {
                    Some(qos) => filter.confirm(qos),
                    None => filter.fail(codec::SubscribeAckReason::UnspecifiedError),
                }
            }
            subscribe.ack()
        }
        v5::ProtocolMessage::Unsubscribe(mut unsubscribe) => {
            for mut filter in unsubscribe.iter_mut() {
                if session.unsubscribe(filter.topic()) {
                    filter.success();
                } else {
                    filter.fail(codec::UnsubscribeAckReason::NoSubscriptionExisted);
                }
            }
            unsubscribe.ack()
        }
        // Enhanced authentication is not offered; ntex-mqtt's default would log an error.
        auth @ v5::ProtocolMessage::Auth(_) => {
            let disconnect =
                codec::Disconnect::new(codec::DisconnectReasonCode::BadAuthenticationMethod);
            // Written through the sink: ntex-mqtt closes the connection before it would write
            // a DISCONNECT returned from here.
            session.sink().close_with_reason(disconnect.clone());
            auth.disconnect_with(disconnect)
        }
        other => other.ack(),
    })
}

/// Connection control: the DISCONNECT reason of a refusal, and one log line per ended session.
/// Installing it also keeps ntex-mqtt from logging a warning per connection.
pub(crate) async fn control_v5(
    control: Control<Refusal>,
) -> Result<Option<codec::Encoded>, Refusal> {
    let Control::Stop(reason) = &control else {
        return Ok(None);
    };
    log_stop("5", reason);
    Ok(match reason {
        Reason::Error(error) => Some(
            codec::Packet::from(codec::Disconnect::new(error.get_ref().disconnect_reason())).into(),
        ),
        // ntex-mqtt derives the DISCONNECT reason of a protocol error itself (0x95 for a packet
        // over the size limit, 0x9B for QoS 2, …).
        Reason::Protocol(_) | Reason::PeerGone(_) => None,
    })
}
