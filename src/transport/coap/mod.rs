//! CoAP over UDP (SPEC §5, TB-REFERENCE §8): `POST /api/v1/provision`, confirmable or not,
//! with RFC 7252 deduplication, RFC 7959 block-wise transfers both ways and a bound on the
//! requests in flight. One thread runs a small tokio runtime: a socket loop that alone owns the
//! endpoint state, and one task per request being decided by the engine.

mod block;
mod dedup;
mod endpoint;
#[doc(hidden)]
pub mod fuzzing;
mod message;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};

use crate::config::CoapConfig;
use crate::engine::Engine;
use crate::engine::provision::{ProvisionError, Transport};
use crate::transport::proto::{self, Encoding};
use crate::transport::wire;
use endpoint::{Action, Endpoint, Job};
use message::{Exchange, Reply, code};

/// Max-Age of a 5.03 (seconds): when a client refused for overload should try again.
pub const RETRY_AFTER_S: u32 = 2;

/// Receive buffer: larger than any UDP payload (65,507 bytes on IPv4, 65,527 on IPv6), so a
/// datagram is never silently truncated into something that might parse.
const DATAGRAM_BUFFER_BYTES: usize = 65_536;

/// The socket's receive buffer: room for a burst of devices powering on together.
pub const RECV_BUFFER_BYTES: usize = 4 << 20;

/// How often expired exchanges, transfers and kept bodies are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of the CoAP listener (from `[coap]`).
#[derive(Clone, Debug)]
pub struct CoapOptions {
    /// Requests in flight at once (being decided, or block-wise bodies being assembled).
    pub max_in_flight: usize,
    /// How long answers are kept for retransmissions (RFC 7252 EXCHANGE_LIFETIME), and how long
    /// an idle block-wise transfer or a block-wise response is kept.
    pub exchange_lifetime: Duration,
    /// Most answers kept for retransmissions.
    pub dedup_cache_entries: usize,
    /// Largest request body, whole or assembled from blocks.
    pub max_request_bytes: usize,
    /// How long a stop waits for requests being decided.
    pub shutdown_timeout: Duration,
}

impl CoapOptions {
    /// The options of a `[coap]` section, with the server's shutdown deadline.
    pub fn from_config(config: &CoapConfig, shutdown_timeout: Duration) -> CoapOptions {
        CoapOptions {
            max_in_flight: config.max_in_flight,
            exchange_lifetime: Duration::from_millis(config.exchange_lifetime_ms),
            dedup_cache_entries: config.dedup_cache_entries,
            max_request_bytes: config.max_request_bytes,
            shutdown_timeout,
        }
    }
}

/// A running CoAP listener.
#[derive(Debug)]
pub struct CoapServer {
    local_addr: SocketAddr,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

/// Asks a [`CoapServer`] to stop; cheap to clone and usable from any thread.
#[derive(Clone, Debug)]
pub struct CoapStopper(Arc<Notify>);

impl CoapStopper {
    /// Stops receiving; requests being decided are still answered (up to the deadline).
    pub fn stop(&self) {
        // notify_one keeps the wake-up if the loop is not waiting at this instant.
        self.0.notify_one();
    }
}

impl CoapServer {
    /// Serves on an already bound, non-blocking socket, on a thread of its own.
    pub fn spawn(
        socket: std::net::UdpSocket,
        engine: Engine,
        options: CoapOptions,
    ) -> std::io::Result<CoapServer> {
        let local_addr = socket.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let socket = {
            let _context = runtime.enter();
            UdpSocket::from_std(socket)?
        };
        let stop = Arc::new(Notify::new());
        let loop_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("coap".into())
            .spawn(move || runtime.block_on(run(socket, engine, options, loop_stop)))?;
        Ok(CoapServer {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops it.
    pub fn stopper(&self) -> CoapStopper {
        CoapStopper(self.stop.clone())
    }

    /// Stops it and waits until its requests in flight are answered (or the deadline passed).
    pub fn stop(mut self) {
        self.stopper().stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the CoAP thread panicked");
        }
    }
}

impl Drop for CoapServer {
    /// A server dropped without [`CoapServer::stop`] still stops receiving.
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// A decided request on its way back to the socket loop.
struct Decided {
    exchange: Exchange,
    reply: Reply,
    block1: Option<block::Block>,
    block2_szx: u8,
    /// Released once the answer is sent: a request is in flight until then.
    permit: OwnedSemaphorePermit,
}

/// The socket loop: the only owner of the endpoint state.
async fn run(socket: UdpSocket, engine: Engine, options: CoapOptions, stop: Arc<Notify>) {
    let mut endpoint = Endpoint::new(&options);
    // Every message carries an in-flight permit, so it never holds more than there are permits.
    let (done_tx, mut done_rx) = mpsc::channel::<Decided>(options.max_in_flight);
    let mut buffer = vec![0u8; DATAGRAM_BUFFER_BYTES];
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut deciding = 0usize;
    loop {
        tokio::select! {
            () = stop.notified() => break,
            received = socket.recv_from(&mut buffer) => {
                let (len, peer) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        tracing::debug!(%error, "CoAP receive failed");
                        continue;
                    }
                };
                match endpoint.datagram(peer, &buffer[..len], Instant::now()) {
                    Action::Nothing => {}
                    Action::Send(bytes) => send(&socket, &bytes, peer).await,
                    Action::Decide(job) => {
                        deciding += 1;
                        tokio::spawn(decide(engine.clone(), job, done_tx.clone()));
                    }
                }
            }
            Some(done) = done_rx.recv() => {
                deciding -= 1;
                answer(&socket, &mut endpoint, done).await;
            }
            _ = sweep.tick() => endpoint.sweep(Instant::now()),
        }
    }
    // Stopping: no new datagrams are read; half-received transfers are dropped; requests being
    // decided are answered until the deadline, so that the engine stops with nothing in hand.
    endpoint.drop_transfers();
    let deadline = tokio::time::Instant::now() + options.shutdown_timeout;
    while deciding > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(done)) => {
                deciding -= 1;
                answer(&socket, &mut endpoint, done).await;
            }
            _ => {
                tracing::warn!(
                    deciding,
                    "CoAP requests still being decided at the shutdown deadline"
                );
                break;
            }
        }
    }
}

async fn answer(socket: &UdpSocket, endpoint: &mut Endpoint, done: Decided) {
    let bytes = endpoint.decided(
        &done.exchange,
        done.reply,
        done.block1,
        done.block2_szx,
        Instant::now(),
    );
    send(socket, &bytes, done.exchange.peer).await;
    drop(done.permit);
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, peer).await {
        tracing::debug!(%error, %peer, "CoAP send failed");
    }
}

/// Decodes and provisions one request; the reply (and the permit) go back to the socket loop.
async fn decide(engine: Engine, job: Job, done: mpsc::Sender<Decided>) {
    let Job {
        exchange,
        payload,
        block1,
        block2_szx,
        permit,
    } = job;
    let reply = provision(&engine, &payload, exchange.peer.ip()).await;
    let _ = done
        .send(Decided {
            exchange,
            reply,
            block1,
            block2_szx,
            permit,
        })
        .await;
}

/// SPEC §5: SUCCESS → 2.01; NOT_FOUND and FAILURE → 4.00 with the §3 body; unparsable → 4.00
/// with the parse-error body. A protobuf request gets a protobuf reply without Content-Format,
/// as ThingsBoard sends it.
async fn provision(engine: &Engine, payload: &[u8], source: IpAddr) -> Reply {
    let started = Instant::now();
    let (request, encoding) = match proto::decode_payload(payload, Transport::Coap) {
        Ok((request, encoding)) => (Box::new(request), encoding),
        Err(error) => {
            super::count_unparsable(Transport::Coap.as_str(), started);
            return Reply::json(code::BAD_REQUEST, wire::parse_error_json(&error));
        }
    };
    let result = super::provision(engine, request, || Some(source)).await;
    // Engine overloaded or stopping: nothing was written; 5.03 with Max-Age, like a full
    // in-flight table, so that the device retries later instead of at once.
    let unavailable = matches!(
        result,
        Err(ProvisionError::Overloaded | ProvisionError::ShuttingDown)
    );
    let code = match (&result, unavailable) {
        (Ok(_), _) => code::CREATED,
        (Err(_), true) => code::SERVICE_UNAVAILABLE,
        (Err(_), false) => code::BAD_REQUEST,
    };
    let max_age = unavailable.then_some(RETRY_AFTER_S);
    let reply = match encoding {
        Encoding::Json => Reply::json(code, wire::outcome_json(&result).into_owned()),
        Encoding::Protobuf => Reply {
            code,
            payload: proto::encode_outcome(&result),
            ..Reply::default()
        },
    };
    Reply { max_age, ..reply }
}
