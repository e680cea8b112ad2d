//! ThingsBoard's protobuf `ProvisionDeviceRequestMsg` parser, and the JSON-or-protobuf choice
//! MQTT and CoAP make on every payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisiond::engine::provision::Transport;
use provisiond::transport::proto;

fuzz_target!(|data: &[u8]| {
    let _ = proto::decode_protobuf(data, Transport::Mqtt);
    let _ = proto::decode_payload(data, Transport::Coap);
});
