//! Wiring: open the store → spawn the shards → bind and start the transports → wait for a stop
//! signal → stop listeners (in-flight requests finish) → stop shards (last batches commit) → close
//! the store. Tests, benches and the binary all start the server through [`start`].

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::Config;
use crate::engine::credentials::generate_alphanumeric;
use crate::engine::provision::Secret;
use crate::engine::{Engine, EngineOptions};
use crate::store::{Store, StoreError};
use crate::transport::coap::{self, CoapOptions, CoapServer};
use crate::transport::http::{self, HttpListenerOptions, HttpState};
use crate::transport::mqtt::{self, MqttListenerOptions, MqttListeners};
use crate::transport::tls::{self, TlsError, TlsFiles};

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The TLS listener's certificate, key or client CA could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A port could not be bound.
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        reason: String,
    },
    /// The admin token file could not be read or written.
    #[error("admin token file {path}: {reason}")]
    AdminToken {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The runtime failed.
    #[error("server runtime failed: {0}")]
    Runtime(String),
}

/// A started server. Dropping it does not stop it; call [`RunningServer::stop`] or wait.
#[derive(Debug)]
pub struct RunningServer {
    http_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    mqtt_tls_addr: Option<SocketAddr>,
    coap_addr: SocketAddr,
    engine: Engine,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl RunningServer {
    /// Where `/api/v1/provision` and the admin API listen.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where plain MQTT (3.1.1 and 5) listens.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// Where MQTT over TLS listens, when a certificate is configured.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.mqtt_tls_addr
    }

    /// Where CoAP (UDP) `POST /api/v1/provision` listens.
    pub fn coap_addr(&self) -> SocketAddr {
        self.coap_addr
    }

    /// The engine (for in-process tests and benches).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops gracefully: listeners close, requests in flight finish, shards commit and stop,
    /// the store closes. Returns when the data directory is free again.
    pub fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    /// Waits until the server stops by itself (SIGTERM or Ctrl-C when signals are handled).
    pub fn wait(mut self) -> Result<(), ServerError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), ServerError> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| ServerError::Runtime("server thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

/// Opens everything and starts serving on a thread of its own. With `handle_signals`, SIGTERM and
/// SIGINT stop the server gracefully.
pub fn start(config: &Config, handle_signals: bool) -> Result<RunningServer, ServerError> {
    let store = Arc::new(Store::open(&config.data_dir, &config.store.options())?);
    let admin_token = admin_token(config)?;
    let http_listener = bind(config, config.http.port, "http")?;
    let http_addr = local_addr(&http_listener)?;
    let mqtt_listeners = bind_mqtt(config)?;
    let mqtt_addr = local_addr(&mqtt_listeners.plain)?;
    let mqtt_tls_addr = match &mqtt_listeners.tls {
        Some((listener, _)) => Some(local_addr(listener)?),
        None => None,
    };
    let coap_socket = bind_udp(config, config.coap.port, "coap")?;
    let coap_addr = coap_socket
        .local_addr()
        .map_err(|e| ServerError::Runtime(e.to_string()))?;
    let engine = Engine::spawn(
        store.clone(),
        EngineOptions {
            shards: config.shard_count(),
            mailbox_capacity: config.engine.mailbox_capacity,
            max_batch: config.engine.max_batch,
            enqueue_timeout: config.enqueue_timeout(),
            throttle: config.throttle_options(),
        },
    )?;
    let ready = Arc::new(AtomicBool::new(false));
    let state = Arc::new(HttpState {
        engine: engine.clone(),
        admin_token,
        max_body_bytes: config.http.max_body_bytes,
        metrics: crate::metrics::install(),
        http_port: http_addr.port(),
        ready: ready.clone(),
    });
    // After the recorder is installed (HttpState's `metrics`), or the value would be lost.
    crate::metrics::shard_mailbox_capacity(config.engine.mailbox_capacity);
    let coap = match CoapServer::spawn(
        coap_socket,
        engine.clone(),
        CoapOptions::from_config(
            &config.coap,
            Duration::from_millis(config.shutdown_timeout_ms),
        ),
    ) {
        Ok(coap) => coap,
        Err(e) => {
            engine.shutdown();
            return Err(ServerError::Runtime(format!("cannot start CoAP: {e}")));
        }
    };
    let coap_stopper = coap.stopper();
    let options = HttpListenerOptions {
        workers: config.http_workers(),
        max_connections_per_worker: config.http.max_connections_per_worker,
        keep_alive_s: config.http.keep_alive_s,
        shutdown_timeout_ms: config.shutdown_timeout_ms,
    };
    let mqtt_options = MqttListenerOptions {
        workers: config.mqtt_workers(),
        max_connections_per_worker: config.mqtt.max_connections_per_worker,
        max_packet_bytes: config.mqtt.max_packet_bytes,
        connect_timeout_ms: config.mqtt.connect_timeout_ms,
        close_after_response_ms: config.mqtt.close_after_response_ms,
        shutdown_timeout_ms: config.shutdown_timeout_ms,
    };
    let mqtt_engine = engine.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let thread_engine = engine.clone();
    let thread = std::thread::Builder::new()
        .name("provisiond-main".into())
        .spawn(move || {
            let outcome = ntex::rt::System::build()
                .name("provisiond")
                .disable_signals()
                .build(ntex::rt::DefaultRuntime)
                .block_on(async move {
                    let servers = http::serve(state, http_listener, options).and_then(|http| {
                        let mqtt = mqtt::serve(mqtt_engine, mqtt_listeners, mqtt_options)?;
                        Ok((http, mqtt))
                    });
                    let (http_server, mqtt_server) = match servers {
                        Ok(servers) => servers,
                        Err(e) => {
                            let _ = started_tx.send(Err(e.to_string()));
                            return Err(ServerError::Runtime(e.to_string()));
                        }
                    };
                    ready.store(true, Ordering::Release);
                    let _ = started_tx.send(Ok(()));
                    wait_for_stop(stop_rx, handle_signals).await;
                    tracing::info!("stopping: listeners close, requests in flight finish");
                    ready.store(false, Ordering::Release);
                    coap_stopper.stop();
                    // The listeners stop together; each finishes its requests in flight.
                    ntex::util::join(mqtt_server.stop(true), http_server.stop(true)).await;
                    Ok(())
                });
            // CoAP answers what it is deciding (HTTP already has); only then may the engine stop.
            coap.stop();
            // Listeners are down; let the shards commit what they hold, then close the store.
            thread_engine.shutdown();
            if let Err(error) = thread_engine.store().flush() {
                tracing::warn!(%error, "flushing the store at shutdown failed; the WAL has it");
            }
            drop(thread_engine);
            tracing::info!("stopped");
            outcome
        });
    let thread = match thread {
        Ok(thread) => thread,
        Err(e) => {
            // Nothing was served: stop the shards so the data directory is free again.
            engine.shutdown();
            return Err(ServerError::Runtime(format!(
                "cannot start the server thread: {e}"
            )));
        }
    };
    match started_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return Err(ServerError::Runtime(reason)),
        Err(_) => {
            return Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => ServerError::Runtime("server thread ended during start".into()),
            });
        }
    }
    tracing::info!(
        http = %http_addr,
        mqtt = %mqtt_addr,
        mqtt_tls = ?mqtt_tls_addr,
        coap = %coap_addr,
        shards = engine.n_shards(),
        data_dir = %config.data_dir.display(),
        "provisiond serving"
    );
    Ok(RunningServer {
        http_addr,
        mqtt_addr,
        mqtt_tls_addr,
        coap_addr,
        engine,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn wait_for_stop(stop: tokio::sync::oneshot::Receiver<()>, handle_signals: bool) {
    if !handle_signals {
        let _ = stop.await;
        return;
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|e| ServerError::Runtime(e.to_string()))
}

/// The MQTT listeners, and the TLS configuration loaded up front so that a bad certificate
/// fails the start with a line naming the file.
fn bind_mqtt(config: &Config) -> Result<MqttListeners, ServerError> {
    let plain = bind(config, config.mqtt.port, "mqtt")?;
    let tls = match (&config.mqtt.tls_cert_file, &config.mqtt.tls_key_file) {
        (Some(cert), Some(key)) => {
            let tls_config = tls::server_config(&TlsFiles {
                cert,
                key,
                client_ca: config.mqtt.tls_client_ca_file.as_deref(),
                client_cert_required: config.mqtt.tls_client_cert_required,
            })?;
            Some((bind(config, config.mqtt.tls_port, "mqtt-tls")?, tls_config))
        }
        _ => None,
    };
    Ok(MqttListeners { plain, tls })
}

fn bind(config: &Config, port: u16, what: &'static str) -> Result<TcpListener, ServerError> {
    open_socket(config, port, what, socket2::Type::STREAM).map(Into::into)
}

fn bind_udp(config: &Config, port: u16, what: &'static str) -> Result<UdpSocket, ServerError> {
    open_socket(config, port, what, socket2::Type::DGRAM).map(Into::into)
}

/// A bound, non-blocking TCP listener or UDP socket, with errors naming the listener and address.
fn open_socket(
    config: &Config,
    port: u16,
    what: &'static str,
    kind: socket2::Type,
) -> Result<socket2::Socket, ServerError> {
    let addr = SocketAddr::new(config.bind, port);
    let fail = |e: std::io::Error| ServerError::Bind {
        what,
        addr,
        reason: e.to_string(),
    };
    let stream = kind == socket2::Type::STREAM;
    let protocol = if stream {
        socket2::Protocol::TCP
    } else {
        socket2::Protocol::UDP
    };
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, Some(protocol))
        .map_err(fail)?;
    if stream {
        socket.set_reuse_address(true).map_err(fail)?;
    } else {
        // No SO_REUSEADDR on UDP: it would let a second process bind the same port and take a
        // share of its datagrams, instead of being told the port is in use.
        // A deep receive buffer absorbs bursts; the kernel caps it at net.core.rmem_max, so a
        // refusal is not an error.
        let _ = socket.set_recv_buffer_size(coap::RECV_BUFFER_BYTES);
    }
    socket.bind(&addr.into()).map_err(fail)?;
    if stream {
        // A deep backlog: a factory floor of devices powering on together connects in bursts.
        socket.listen(4096).map_err(fail)?;
    }
    socket.set_nonblocking(true).map_err(fail)?;
    Ok(socket)
}

/// The admin token: configured, or read from `<data dir>/admin.token`, or generated there (0600)
/// and printed once on standard output (never logged).
fn admin_token(config: &Config) -> Result<Secret, ServerError> {
    if let Some(token) = &config.admin_token {
        return Ok(Secret(token.clone()));
    }
    let path = admin_token_path(&config.data_dir);
    let fail = |e: std::io::Error| ServerError::AdminToken {
        path: path.clone(),
        reason: e.to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(Secret(text.trim().to_string())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let token = format!("{}{}", generate_alphanumeric(), generate_alphanumeric());
    write_private(&path, &token).map_err(fail)?;
    println!(
        "provisiond: generated the admin token (saved in {}, mode 0600): {token}",
        path.display()
    );
    let _ = std::io::stdout().flush();
    Ok(Secret(token))
}

/// Where the generated admin token is kept.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}
