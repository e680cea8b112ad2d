//! HTTP (ntex): `POST /api/v1/provision` (SPEC §5), the authenticated admin API (SPEC §6),
//! `/metrics`, `/healthz` and `/readyz`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use ntex::http::header::{self, HeaderValue};
use ntex::http::{KeepAlive, StatusCode};
use ntex::time::Seconds;
use ntex::util::{Bytes, BytesMut};
use ntex::web::types::Payload;
use ntex::web::{self, App, HttpRequest, HttpResponse};

use crate::admin;
use crate::bulk::{self, ImportOptions};
use crate::engine::Engine;
use crate::engine::credentials::secrets_equal;
use crate::engine::provision::{ProvisionError, Secret, Transport};
use crate::transport::streams::{ChannelReader, ChannelWriter, EXPORT_CHUNK_BYTES, SmallChunks};
use crate::transport::wire::{self, ParseError};

/// Largest admin request body (profile JSON); CSV import streams and is not bound by it.
pub const MAX_ADMIN_BODY_BYTES: usize = 1 << 20;

/// How much of an oversized body is read and discarded before the 413 is sent, so that a client
/// still sending sees the answer instead of a reset connection (nginx's lingering close).
/// Larger bodies are answered at once and the connection is closed.
pub const MAX_DRAIN_BYTES: usize = 8 << 20;

/// Retry-After of a 503 (engine overloaded or stopping), in seconds.
pub const RETRY_AFTER_S: u32 = 1;

/// What every HTTP worker shares.
#[derive(Debug)]
pub struct HttpState {
    /// The engine.
    pub engine: Engine,
    /// Bearer token of the admin API.
    pub admin_token: Secret,
    /// Body limit of `/api/v1/provision`.
    pub max_body_bytes: usize,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The HTTP listener's port, whose open connections `/metrics` counts.
    pub http_port: u16,
    /// Set once every listener is bound and serving.
    pub ready: Arc<AtomicBool>,
}

/// Settings of the HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpListenerOptions {
    /// Worker threads.
    pub workers: usize,
    /// Connection limit per worker.
    pub max_connections_per_worker: usize,
    /// Keep-alive idle timeout.
    pub keep_alive_s: u16,
    /// Graceful stop deadline.
    pub shutdown_timeout_ms: u64,
}

/// Starts serving on an already bound listener; must run inside an ntex system.
pub fn serve(
    state: Arc<HttpState>,
    listener: std::net::TcpListener,
    options: HttpListenerOptions,
) -> std::io::Result<ntex::server::Server> {
    let cfg = ntex::SharedCfg::new("HTTP").add(
        ntex::http::HttpServiceConfig::new()
            .set_keepalive(KeepAlive::Timeout(Seconds(options.keep_alive_s)))
            .set_client_timeout(Seconds(5)),
    );
    let server = web::HttpServer::new(async move |_| {
        let st = state.clone();
        App::new()
            .service(
                web::resource("/api/v1/provision")
                    .route(web::post().to(with(st.clone(), provision)))
                    .default_service(web::route().to(async || {
                        json_response(
                            StatusCode::METHOD_NOT_ALLOWED,
                            wire::parse_error_json(&ParseError(
                                "method not allowed; use POST".into(),
                            )),
                        )
                    })),
            )
            .service(
                web::resource("/api/admin/profiles")
                    .route(web::get().to(with(st.clone(), list_profiles)))
                    .route(web::post().to(with(st.clone(), create_profile))),
            )
            .service(
                web::resource("/api/admin/profiles/{name}")
                    .route(web::get().to(with(st.clone(), get_profile)))
                    .route(web::put().to(with(st.clone(), update_profile)))
                    .route(web::delete().to(with(st.clone(), delete_profile))),
            )
            .service(
                web::resource("/api/admin/devices")
                    .route(web::get().to(with(st.clone(), list_devices))),
            )
            .service(
                web::resource("/api/admin/devices/{name}")
                    .route(web::get().to(with(st.clone(), get_device)))
                    .route(web::delete().to(with(st.clone(), delete_device))),
            )
            .service(
                web::resource("/api/admin/devices/{name}/reset")
                    .route(web::post().to(with(st.clone(), reset_device))),
            )
            .service(
                web::resource("/api/admin/import").route(web::post().to(with(st.clone(), import))),
            )
            .service(
                web::resource("/api/admin/export").route(web::get().to(with(st.clone(), export))),
            )
            .service(web::resource("/metrics").route(web::get().to(with(st.clone(), metrics))))
            .service(web::resource("/healthz").route(web::get().to(with(st.clone(), healthz))))
            .service(web::resource("/readyz").route(web::get().to(with(st.clone(), readyz))))
    })
    .workers(options.workers)
    .maxconn(options.max_connections_per_worker)
    .shutdown_timeout(Seconds((options.shutdown_timeout_ms / 1000).max(1) as u16))
    .disable_signals()
    .listen(listener, cfg)?
    .run();
    Ok(server)
}

/// Binds a handler to the shared state.
fn with<F, Fut>(
    state: Arc<HttpState>,
    handler: F,
) -> impl AsyncFn(HttpRequest, Payload) -> HttpResponse + Clone + 'static
where
    F: Fn(Arc<HttpState>, HttpRequest, Payload) -> Fut + Clone + 'static,
    Fut: Future<Output = HttpResponse>,
{
    async move |req: HttpRequest, payload: Payload| handler(state.clone(), req, payload).await
}

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    let mut builder = HttpResponse::builder(status);
    builder.header(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    body_response(builder, body)
}

/// Sends a body of up to 4 KiB as it is and a larger one in 4 KiB chunks, which ntex frames
/// reliably (see [`SmallChunks`]).
fn body_response(mut builder: ntex::http::ResponseBuilder, body: String) -> HttpResponse {
    if body.len() <= EXPORT_CHUNK_BYTES {
        builder.body(body)
    } else {
        builder.streaming(SmallChunks::new(body.as_bytes()))
    }
}

fn admin_response(reply: admin::Reply) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, reply.body.to_string())
}

enum BodyError {
    TooLarge,
    Broken,
}

/// Reads the body, refusing it as soon as it is known to exceed `limit`.
async fn read_body(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        if declared.is_some_and(|len| len <= MAX_DRAIN_BYTES as u64) {
            drain(&mut payload, 0).await;
        }
        return Err(BodyError::TooLarge);
    }
    // A request's body nearly always arrives in one chunk: that chunk is the body, uncopied.
    // Only a body in several chunks is joined into a buffer of its own.
    let mut single: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut len = 0;
    while let Some(chunk) = payload.recv().await {
        let chunk = chunk.map_err(|_| BodyError::Broken)?;
        len += chunk.len();
        if len > limit {
            drain(&mut payload, len).await;
            return Err(BodyError::TooLarge);
        }
        if single.is_none() && joined.is_empty() {
            single = Some(chunk);
            continue;
        }
        if let Some(earlier) = single.take() {
            joined.extend_from_slice(&earlier);
        }
        joined.extend_from_slice(&chunk);
    }
    Ok(single.unwrap_or_else(|| joined.freeze()))
}

/// Reads and discards the rest of a body, up to [`MAX_DRAIN_BYTES`] in all.
async fn drain(payload: &mut Payload, mut seen: usize) {
    while seen <= MAX_DRAIN_BYTES {
        match payload.recv().await {
            Some(Ok(chunk)) => seen += chunk.len(),
            _ => return,
        }
    }
}

async fn provision(st: Arc<HttpState>, req: HttpRequest, payload: Payload) -> HttpResponse {
    let started = Instant::now();
    let body = match read_body(&req, payload, st.max_body_bytes).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            super::count_unparsable(Transport::Http.as_str(), started);
            let message = format!(
                "request body exceeds the limit of {} bytes",
                st.max_body_bytes
            );
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                wire::parse_error_json(&ParseError(message)),
            );
        }
        Err(BodyError::Broken) => {
            super::count_unparsable(Transport::Http.as_str(), started);
            let error = ParseError("request body could not be read".into());
            return json_response(StatusCode::BAD_REQUEST, wire::parse_error_json(&error));
        }
    };
    match wire::parse_json(&body, Transport::Http).map(Box::new) {
        Ok(request) => {
            let source = || req.peer_addr().map(|peer| peer.ip());
            let result = super::provision(&st.engine, request, source).await;
            let body = wire::outcome_json(&result).into_owned();
            match result {
                // Nothing was written: tell the client to come back rather than let it pile up.
                Err(ProvisionError::Overloaded | ProvisionError::ShuttingDown) => {
                    HttpResponse::builder(StatusCode::SERVICE_UNAVAILABLE)
                        .header(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )
                        .header(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S))
                        .body(body)
                }
                _ => json_response(StatusCode::OK, body),
            }
        }
        Err(error) => {
            super::count_unparsable(Transport::Http.as_str(), started);
            json_response(StatusCode::BAD_REQUEST, wire::parse_error_json(&error))
        }
    }
}

/// Bearer authentication of the admin API, compared in constant time.
fn authorized(st: &HttpState, req: &HttpRequest) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) => secrets_equal(token.trim(), &st.admin_token.0),
        None => false,
    }
}

fn unauthorized() -> HttpResponse {
    admin_response(admin::Reply {
        status: 401,
        body: serde_json::json!({ "error": "missing or invalid admin token (Authorization: Bearer <token>)" }),
    })
}

fn path_name(req: &HttpRequest) -> String {
    req.match_info().get("name").unwrap_or_default().to_string()
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    serde_urlencoded::from_str(req.query_string()).unwrap_or_default()
}

async fn admin_body(req: &HttpRequest, payload: Payload) -> Result<Bytes, HttpResponse> {
    read_body(req, payload, MAX_ADMIN_BODY_BYTES)
        .await
        .map_err(|e| {
            let (status, message) = match e {
                BodyError::TooLarge => (413, format!("body exceeds {MAX_ADMIN_BODY_BYTES} bytes")),
                BodyError::Broken => (400, "body could not be read".to_string()),
            };
            admin_response(admin::Reply {
                status,
                body: serde_json::json!({ "error": message }),
            })
        })
}

async fn list_profiles(st: Arc<HttpState>, req: HttpRequest, _: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    admin_response(admin::list_profiles(&st.engine))
}

async fn create_profile(st: Arc<HttpState>, req: HttpRequest, payload: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    match admin_body(&req, payload).await {
        Ok(body) => admin_response(admin::create_profile(&st.engine, &body)),
        Err(response) => response,
    }
}

async fn get_profile(st: Arc<HttpState>, req: HttpRequest, _: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    admin_response(admin::get_profile(&st.engine, &path_name(&req)))
}

async fn update_profile(st: Arc<HttpState>, req: HttpRequest, payload: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    match admin_body(&req, payload).await {
        Ok(body) => admin_response(admin::update_profile(&st.engine, &path_name(&req), &body)),
        Err(response) => response,
    }
}

async fn delete_profile(st: Arc<HttpState>, req: HttpRequest, _: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    let force = query(&req).get("force").is_some_and(|v| v == "true");
    admin_response(admin::delete_profile(&st.engine, &path_name(&req), force).await)
}

async fn list_devices(st: Arc<HttpState>, req: HttpRequest, _: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    let q = query(&req);
    admin_response(admin::list_devices(
        &st.engine,
        q.get("profile").map(String::as_str),
        q.get("limit").map(String::as_str),
        q.get("cursor").map(String::as_str),
    ))
}

async fn get_device(st: Arc<HttpState>, req: HttpRequest, _: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    admin_response(admin::get_device(&st.engine, &path_name(&req)).await)
}

async fn delete_device(st: Arc<HttpState>, req: HttpRequest, _: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    admin_response(admin::delete_device(&st.engine, &path_name(&req)).await)
}

async fn reset_device(st: Arc<HttpState>, req: HttpRequest, _: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    let drop_credentials = query(&req).get("credentials").is_some_and(|v| v == "drop");
    admin_response(admin::reset_device(&st.engine, &path_name(&req), drop_credentials).await)
}

/// Reads import options from the query string (the CLI's flags, by the same names).
pub fn import_options(q: &HashMap<String, String>) -> Result<ImportOptions, String> {
    let flag = |name: &str, default: bool| match q.get(name).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!("{name} must be true or false, not {other:?}")),
    };
    let delimiter = match q.get("delimiter").map(String::as_str) {
        None | Some(",") => b',',
        Some("tab") | Some("\t") | Some("\\t") => b'\t',
        Some(d) if d.len() == 1 && d.is_ascii() && d != "\"" => d.as_bytes()[0],
        Some(d) => {
            return Err(format!(
                "delimiter must be one ASCII character or \"tab\", not {d:?}"
            ));
        }
    };
    Ok(ImportOptions {
        profile: q.get("profile").filter(|p| !p.is_empty()).cloned(),
        delimiter,
        header: flag("header", true)?,
        update: flag("update", false)?,
        map: bulk::parse_map(q.get("map").map(String::as_str).unwrap_or_default())?,
    })
}

/// `POST /api/admin/import`: the body streams through a bounded channel into an import thread.
async fn import(st: Arc<HttpState>, req: HttpRequest, mut payload: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    let options = match import_options(&query(&req)) {
        Ok(options) => options,
        Err(message) => {
            drain(&mut payload, 0).await;
            return admin_response(admin::Reply {
                status: 400,
                body: serde_json::json!({ "error": message }),
            });
        }
    };
    let (chunks, reader) = ChannelReader::new();
    let (done, result) = tokio::sync::oneshot::channel();
    let engine = st.engine.clone();
    let spawned = std::thread::Builder::new()
        .name("import".into())
        .spawn(move || {
            let input = std::io::BufReader::with_capacity(64 * 1024, reader);
            let _ = done.send(bulk::run_import(&engine, input, &options, &mut bulk::Quiet));
        });
    if spawned.is_err() {
        return admin_response(admin::Reply {
            status: 503,
            body: serde_json::json!({ "error": "cannot start the import; try again" }),
        });
    }
    let mut sent = 0usize;
    while let Some(chunk) = payload.recv().await {
        let Ok(chunk) = chunk else { break };
        sent += chunk.len();
        if chunks.send(chunk).await.is_err() {
            // The import stopped early (a bad header): let the client finish sending.
            drain(&mut payload, sent).await;
            break;
        }
    }
    drop(chunks);
    match result.await {
        Ok(Ok(summary)) => json_response(
            StatusCode::OK,
            serde_json::to_string(&summary).expect("a summary always serializes"),
        ),
        Ok(Err(error)) => admin_response(admin::Reply {
            status: 400,
            body: serde_json::json!({ "error": error.to_string() }),
        }),
        Err(_) => admin_response(admin::Reply {
            status: 500,
            body: serde_json::json!({ "error": "the import stopped unexpectedly; see the server log" }),
        }),
    }
}

/// `GET /api/admin/export[?profile=P]`: CSV streamed from a store snapshot.
async fn export(st: Arc<HttpState>, req: HttpRequest, _: Payload) -> HttpResponse {
    if !authorized(&st, &req) {
        return unauthorized();
    }
    let profile = query(&req)
        .get("profile")
        .filter(|p| !p.is_empty())
        .cloned();
    if let Some(name) = &profile
        && st.engine.profiles().by_name(name).is_none()
    {
        return admin_response(admin::Reply {
            status: 404,
            body: serde_json::json!({ "error": format!("no profile named {name:?}") }),
        });
    }
    let (mut writer, stream) = ChannelWriter::new();
    let engine = st.engine.clone();
    let spawned =
        std::thread::Builder::new().name("export".into()).spawn(
            move || match bulk::export::export(engine.store(), profile.as_deref(), &mut writer) {
                Ok(_) => {
                    let _ = std::io::Write::flush(&mut writer);
                }
                Err(error) => {
                    tracing::error!(%error, "export failed");
                    writer.fail(std::io::Error::other(error.to_string()));
                }
            },
        );
    if spawned.is_err() {
        return admin_response(admin::Reply {
            status: 503,
            body: serde_json::json!({ "error": "cannot start the export; try again" }),
        });
    }
    HttpResponse::Ok()
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )
        .streaming(stream)
}

async fn metrics(st: Arc<HttpState>, _: HttpRequest, _: Payload) -> HttpResponse {
    crate::metrics::scrape::refresh(st.engine.store(), st.http_port);
    let mut builder = HttpResponse::Ok();
    builder.header(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    body_response(builder, st.metrics.render())
}

/// Alive unless the store has refused writes for longer than [`RECOVERY_GRACE`] although its
/// file system has room again: RocksDB resumes by itself within seconds once space returns (see
/// `store::WriteHealth`), so a store still failing then is stuck, and a failing liveness probe
/// asks the supervisor for a restart. While the disk is still full the process stays alive and
/// unready: a restart would not help and could not even open the store.
async fn healthz(st: Arc<HttpState>, _: HttpRequest, _: Payload) -> HttpResponse {
    let store = st.engine.store();
    let stuck = store
        .unwritable_for()
        .is_some_and(|spell| spell > RECOVERY_GRACE)
        && !store.check_health()
        && store
            .disk_space()
            .is_ok_and(|space| space.free_bytes >= RECOVERY_FREE_BYTES);
    if stuck {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"store refuses writes although the disk has room; restart"}"#.to_string(),
        )
    } else {
        json_response(StatusCode::OK, r#"{"status":"alive"}"#.to_string())
    }
}

/// How long a store may keep refusing writes, with room on its disk, before liveness fails.
const RECOVERY_GRACE: std::time::Duration = std::time::Duration::from_secs(60);
/// Free space above which a refusing store counts as stuck rather than waiting for room: RocksDB
/// resumes once one write buffer (64 MiB) is free, so this is that with a margin.
const RECOVERY_FREE_BYTES: u64 = 256 << 20;

async fn readyz(st: Arc<HttpState>, _: HttpRequest, _: Payload) -> HttpResponse {
    let listeners = st.ready.load(Ordering::Acquire);
    let shards = st.engine.shards_running();
    // Not ready while writes fail (a full disk) or RocksDB has reported a background error that
    // no write has cleared since; ready again as soon as a probe write succeeds.
    let store = st.engine.store().check_health();
    let body = serde_json::json!({ "listeners": listeners, "shards": shards, "store": store });
    let status = if listeners && shards && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, body.to_string())
}
