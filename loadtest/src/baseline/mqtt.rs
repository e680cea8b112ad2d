//! Baseline MQTT: ntex-mqtt's 3.1.1 and 5 servers; every CONNECT is accepted, and a PUBLISH
//! is answered on `/provision/response` at QoS 1 with the fixed body, as provisiond answers.

use ntex_mqtt::{MqttServer, v3, v5};

use super::FIXED_RESPONSE;

const RESPONSE_TOPIC: &str = "/provision/response";

/// Never raised: the baseline refuses nothing.
#[derive(Debug)]
pub(super) struct Never;

impl From<()> for Never {
    fn from(_: ()) -> Self {
        Never
    }
}

impl TryFrom<Never> for v5::PublishAck {
    type Error = Never;

    fn try_from(err: Never) -> Result<Self, Self::Error> {
        Err(err)
    }
}

/// Starts the MQTT server on `listener`.
pub(super) fn serve(
    listener: std::net::TcpListener,
    workers: usize,
) -> std::io::Result<ntex::server::Server> {
    Ok(ntex::server::build()
        .workers(workers)
        .listen("mqtt", listener, ntex::SharedCfg::default(), async |_| {
            MqttServer::new()
                .v3(v3::MqttServer::new(
                    async |sink: &v3::Session<v3::MqttSink>, _publish: v3::Publish| {
                        let _ = sink
                            .publish(RESPONSE_TOPIC)
                            .send_at_least_once_no_block(FIXED_RESPONSE.into());
                        Ok::<_, Never>(())
                    },
                )
                .protocol(async |_: &v3::Session<v3::MqttSink>, message| {
                    Ok::<_, Never>(match message {
                        v3::ProtocolMessage::Subscribe(mut subscribe) => {
                            for mut filter in subscribe.iter_mut() {
                                let qos = filter.qos();
                                filter.confirm(qos);
                            }
                            subscribe.ack()
                        }
                        other => other.ack(),
                    })
                })
                .build(async |connect: v3::Connect| {
                    let sink = connect.sink();
                    sink.publish_ack_cb(|_, _| {});
                    Ok::<_, Never>(connect.ack(sink, false))
                }))
                .v5(v5::MqttServer::new(
                    async |sink: &v5::Session<v5::MqttSink>, publish: v5::Publish| {
                        let _ = sink
                            .publish(RESPONSE_TOPIC)
                            .send_at_least_once_no_block(FIXED_RESPONSE.into());
                        Ok::<_, Never>(publish.ack())
                    },
                )
                .protocol(async |_: &v5::Session<v5::MqttSink>, message| {
                    Ok::<_, Never>(match message {
                        v5::ProtocolMessage::Subscribe(mut subscribe) => {
                            for mut filter in subscribe.iter_mut() {
                                let qos = filter.options().qos;
                                filter.confirm(qos);
                            }
                            subscribe.ack()
                        }
                        other => other.ack(),
                    })
                })
                .build(async |connect: v5::Connect| {
                    let sink = connect.sink();
                    sink.publish_ack_cb(|_, _| {});
                    Ok::<_, Never>(connect.ack(sink))
                }))
        })?
        .run())
}
