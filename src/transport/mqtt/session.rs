//! One provisioning session, whatever the MQTT version: who may open one, its subscription, its
//! sticky encoding, the order of its requests, its response and its close timer. Version-specific
//! packet handling lives in `v3.rs` and `v5.rs`; this file never sees a packet.

use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::time::Instant;

use ntex::time::{Millis, sleep};
use ntex::util::Bytes;
use ntex_mqtt::QoS;

use super::listener::{Conn, InFlight, TimerSlot};
use super::{PROVISION_LOGIN, RESPONSE_TOPIC};
use crate::engine::Engine;
use crate::engine::provision::Transport;
use crate::transport::proto::{self, Encoding};
use crate::transport::wire;

/// What every session of a listener shares.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The engine every request goes to.
    pub(crate) engine: Engine,
    /// The session is closed this long after its last response.
    pub(crate) close_after_response: Millis,
}

/// The half of a version's sink that a session needs.
pub(crate) trait ResponseSink: 'static {
    /// Encodes `payload` on [`RESPONSE_TOPIC`] at `qos` once the client's receive window has
    /// room; false if the connection is gone.
    async fn send_response(&self, payload: Bytes, qos: QoS) -> bool;

    /// Closes the connection without a DISCONNECT packet, as ThingsBoard does after its timer.
    fn close_quietly(&self);
}

/// SPEC §5: a session is a provisioning session if its user name or client id is `provision`
/// (exactly, case-sensitive); the password is ignored.
pub(crate) fn is_provisioning(username: Option<&str>, client_id: &str) -> bool {
    username == Some(PROVISION_LOGIN) || client_id == PROVISION_LOGIN
}

/// The QoS granted to a SUBSCRIBE filter: only the exact response topic, at most QoS 1; `None`
/// refuses it (wildcards included, even those that would match).
pub(crate) fn grant(filter: &str, requested: QoS) -> Option<QoS> {
    (filter == RESPONSE_TOPIC).then_some(match requested {
        QoS::AtMostOnce => QoS::AtMostOnce,
        QoS::AtLeastOnce | QoS::ExactlyOnce => QoS::AtLeastOnce,
    })
}

/// The answer to one request, ready to publish.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The response payload, in the session's encoding.
    pub(crate) payload: Bytes,
    /// False when the payload could not be decoded at all (the body is then the parse error).
    pub(crate) decoded: bool,
}

/// Per-connection state, created at the handshake.
#[derive(Debug)]
pub(crate) struct Session<S> {
    settings: Rc<Settings>,
    conn: Rc<Conn>,
    sink: S,
    encoding: Cell<Encoding>,
    subscription: Cell<Option<QoS>>,
    /// Requests are decided one at a time, in arrival order, so that each PUBACK is the head of
    /// ntex-mqtt's ordered reply queue when its publish handler returns, and is therefore
    /// written before the response that the handler spawns.
    turn: tokio::sync::Mutex<()>,
    close_timer: TimerSlot,
}

impl<S: ResponseSink> Session<S> {
    /// A fresh session: JSON, not subscribed.
    pub(crate) fn new(settings: Rc<Settings>, conn: Rc<Conn>, sink: S) -> Rc<Session<S>> {
        Rc::new(Session {
            settings,
            conn,
            sink,
            encoding: Cell::new(Encoding::Json),
            subscription: Cell::new(None),
            turn: tokio::sync::Mutex::new(()),
            close_timer: TimerSlot::default(),
        })
    }

    /// Handles one filter of a SUBSCRIBE; see [`grant`].
    pub(crate) fn subscribe(&self, filter: &str, requested: QoS) -> Option<QoS> {
        let granted = grant(filter, requested);
        if granted.is_some() {
            self.subscription.set(granted);
        }
        granted
    }

    /// Handles one filter of an UNSUBSCRIBE; returns whether that subscription existed.
    pub(crate) fn unsubscribe(&self, filter: &str) -> bool {
        filter == RESPONSE_TOPIC && self.subscription.take().is_some()
    }

    /// SPEC §5: the response goes at min(subscription QoS, 1), or at QoS 1 without one.
    pub(crate) fn response_qos(&self) -> QoS {
        self.subscription.get().unwrap_or(QoS::AtLeastOnce)
    }

    /// Waits for this session's turn; hold the guard until the publish handler returns.
    pub(crate) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Marks a request in flight (for a graceful stop) until its response is encoded.
    pub(crate) fn begin_request(&self) -> InFlight {
        self.conn.begin_request()
    }

    /// The sink of this connection.
    pub(crate) fn sink(&self) -> &S {
        &self.sink
    }

    /// Decodes a request payload (JSON object, else protobuf), decides it and encodes the
    /// outcome in the session's encoding, which turns protobuf for good once a payload is not
    /// JSON (ThingsBoard's sticky per-session format).
    pub(crate) async fn answer(&self, payload: &[u8]) -> Answer {
        let started = Instant::now();
        if proto::payload_encoding(payload) == Encoding::Protobuf {
            self.encoding.set(Encoding::Protobuf);
        }
        match proto::decode_payload(payload, Transport::Mqtt) {
            Ok((request, _)) => {
                let request = Box::new(request);
                let result = crate::transport::provision(&self.settings.engine, request, || {
                    self.conn.peer()
                })
                .await;
                let payload = match self.encoding.get() {
                    Encoding::Json => Bytes::from(wire::outcome_json(&result).into_owned()),
                    Encoding::Protobuf => Bytes::from(proto::encode_outcome(&result)),
                };
                Answer {
                    payload,
                    decoded: true,
                }
            }
            Err(error) => {
                crate::transport::count_unparsable(Transport::Mqtt.as_str(), started);
                tracing::debug!(%error, "unparsable MQTT provisioning request");
                let payload = match self.encoding.get() {
                    Encoding::Json => Bytes::from(wire::parse_error_json(&error)),
                    Encoding::Protobuf => Bytes::from(proto::encode_parse_error()),
                };
                Answer {
                    payload,
                    decoded: false,
                }
            }
        }
    }

    /// Publishes the response after the caller's PUBACK, then (re)arms the close timer.
    ///
    /// Called from the publish handler just before it returns: the spawned task runs only after
    /// ntex-mqtt has written the PUBACK that the handler's return produces (SPEC §5: PUBACK
    /// before the response).
    pub(crate) fn respond(self: &Rc<Self>, payload: Bytes, in_flight: InFlight) {
        let session = self.clone();
        let qos = self.response_qos();
        ntex::rt::spawn(async move {
            if session.sink.send_response(payload, qos).await {
                session.arm_close_timer();
            }
            drop(in_flight);
        });
    }

    /// ThingsBoard closes a provisioning session a fixed time after its response; every new
    /// response restarts the wait, so the close comes that long after the last one.
    fn arm_close_timer(self: &Rc<Self>) {
        // A weak handle: a session that ends earlier is freed at once, not when the timer fires.
        let weak: Weak<Self> = Rc::downgrade(self);
        let after = self.settings.close_after_response;
        let timer = ntex::rt::spawn(async move {
            sleep(after).await;
            if let Some(session) = weak.upgrade() {
                tracing::debug!("closing the provisioning session after its last response");
                session.sink.close_quietly();
            }
        });
        self.close_timer.replace(timer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_sessions_are_recognised_by_user_name_or_client_id() {
        assert!(is_provisioning(Some("provision"), ""));
        assert!(is_provisioning(None, "provision"));
        assert!(is_provisioning(Some("someone"), "provision"));
        assert!(!is_provisioning(Some("Provision"), "device-1"));
        assert!(!is_provisioning(None, ""));
        assert!(!is_provisioning(Some("provision "), "provision-1"));
    }

    #[test]
    fn only_the_exact_response_topic_is_granted_at_most_qos_1() {
        assert_eq!(
            grant("/provision/response", QoS::AtMostOnce),
            Some(QoS::AtMostOnce)
        );
        assert_eq!(
            grant("/provision/response", QoS::AtLeastOnce),
            Some(QoS::AtLeastOnce)
        );
        assert_eq!(
            grant("/provision/response", QoS::ExactlyOnce),
            Some(QoS::AtLeastOnce)
        );
        for refused in [
            "#",
            "/provision/#",
            "/provision/+",
            "+/provision/response",
            "/provision/request",
            "provision/response",
            "/provision/response/",
        ] {
            assert_eq!(grant(refused, QoS::AtMostOnce), None, "{refused}");
        }
    }
}
