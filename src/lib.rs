//! provisiond: a high-throughput IoT device provisioning engine, wire-compatible with
//! ThingsBoard's device provisioning API. See ARCHITECTURE.md for the map.

#![forbid(unsafe_code)]
#![deny(unreachable_pub, missing_debug_implementations, rust_2018_idioms)]

pub mod admin;
pub mod agent;
pub mod bulk;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod server;
pub mod store;
pub mod transport;
