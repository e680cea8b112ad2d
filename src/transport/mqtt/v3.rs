//! MQTT 3.1.1 phases: handshake, publish, protocol messages (SUBSCRIBE, UNSUBSCRIBE, PINGREQ,
//! DISCONNECT) and connection control. Each decision is delegated to `session.rs`.

use std::rc::Rc;

use ntex_mqtt::Control;
use ntex_mqtt::v3;

use super::listener::Conn;
use super::session::{ResponseSink, Session, Settings, is_provisioning};
use super::{Limits, REQUEST_TOPIC, RESPONSE_TOPIC, Refusal, log_stop};
use crate::metrics as m;

/// The state behind every 3.1.1 connection.
pub(crate) type SessionV3 = Rc<Session<v3::MqttSink>>;

impl ResponseSink for v3::MqttSink {
    async fn send_response(&self, payload: ntex::util::Bytes, qos: ntex_mqtt::QoS) -> bool {
        let publish = self.publish(RESPONSE_TOPIC);
        match qos {
            // Checked first: ntex-mqtt logs an error for a QoS 0 send on a closed connection.
            ntex_mqtt::QoS::AtMostOnce => {
                self.is_open() && publish.send_at_most_once(payload).is_ok()
            }
            _ => {
                // Waits while the client holds `MAX_INFLIGHT_RESPONSES` responses unacknowledged.
                self.ready().await
                    && self.is_ready()
                    && publish.send_at_least_once_no_block(payload).is_ok()
            }
        }
    }

    fn close_quietly(&self) {
        self.close();
    }
}

/// CONNECT: a provisioning session is accepted (return code 0); any other is refused with
/// return code 5, "not authorized".
pub(crate) async fn handshake_v3(
    settings: &Rc<Settings>,
    limits: &Limits,
    connect: v3::Connect<Rc<Conn>>,
) -> Result<v3::ConnectAck<SessionV3>, Refusal> {
    connect.st().mark_connected();
    let packet = connect.packet();
    if !is_provisioning(packet.username.as_deref(), &packet.client_id) {
        // The user name may be a device's access token: it is never logged.
        m::mqtt_refused("not_provisioning");
        tracing::debug!("MQTT 3.1.1 CONNECT refused: not a provisioning session");
        return Ok(connect.not_authorized());
    }
    if settings.engine.overloaded() {
        m::mqtt_refused("overloaded");
        tracing::debug!("MQTT 3.1.1 CONNECT refused: engine overloaded");
        return Ok(connect.service_unavailable());
    }
    let keep_alive = packet.keep_alive;
    let sink = connect.sink();
    // Responses go out without waiting for the client's PUBACK; its arrival needs no action.
    sink.publish_ack_cb(|_, _| {});
    let session = Session::new(settings.clone(), connect.st().clone(), sink);
    // No session state is kept, so it is never "present", whatever clean_session says.
    let ack = connect
        .ack(session, false)
        .max_send(Some(limits.max_inflight_responses));
    Ok(if keep_alive == 0 {
        ack.idle_timeout(limits.idle_without_keep_alive)
    } else {
        ack
    })
}

/// PUBLISH: `/provision/request` is decided and answered; any other topic ends the session
/// without a PUBACK (3.1.1 has no reason code to say why).
pub(crate) async fn publish_v3(
    session: &v3::Session<SessionV3>,
    publish: v3::Publish,
) -> Result<(), Refusal> {
    let session: &SessionV3 = session;
    let _turn = session.turn().await;
    if publish.publish_topic() != REQUEST_TOPIC {
        m::mqtt_refused("topic");
        return Err(Refusal::Topic);
    }
    let in_flight = session.begin_request();
    let payload = publish.read_all().await.map_err(|_| Refusal::Payload)?;
    let answer = session.answer(&payload).await;
    // Returning Ok makes ntex-mqtt write the PUBACK (QoS 1) before the spawned response.
    session.respond(answer.payload, in_flight);
    Ok(())
}

/// SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT. ntex-mqtt's default handler would disconnect
/// on SUBSCRIBE, so this one is always installed.
pub(crate) async fn protocol_v3(
    session: &v3::Session<SessionV3>,
    message: v3::ProtocolMessage,
) -> Result<v3::ProtocolMessageAck, Refusal> {
    let session: &SessionV3 = session;
    Ok(match message {
        v3::ProtocolMessage::Subscribe(mut subscribe) => {
            for mut filter in subscribe.iter_mut() {
                match session.subscribe(filter.topic(), filter.qos()) {
                    Some(qos) => filter.confirm(qos),
                    None => filter.fail(),
                }
            }
            subscribe.ack()
        }
        v3::ProtocolMessage::Unsubscribe(unsubscribe) => {
            for filter in unsubscribe.iter() {
                session.unsubscribe(filter);
            }
            unsubscribe.ack()
        }
        other => other.ack(),
    })
}

/// Connection control: logs why the connection ends. 3.1.1 has nothing to send at that point.
pub(crate) async fn control_v3(
    control: Control<Refusal>,
) -> Result<Option<v3::codec::Encoded>, Refusal> {
    if let Control::Stop(reason) = &control {
        log_stop("3.1.1", reason);
    }
    Ok(None)
}
