//! The CoAP message layer and endpoint state machine (classification, options, Block1/Block2,
//! dedup, reply encoding). The input is a sequence of datagrams, each prefixed by its length as
//! a big-endian u16, so that block-wise transfers and retransmissions get exercised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisiond::transport::coap::fuzzing;

fuzz_target!(|data: &[u8]| {
    let mut datagrams = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        datagrams.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    fuzzing::run(&datagrams);
});
