//! Baseline HTTP: ntex's web server, `POST /api/v1/provision` answered with the fixed body after
//! reading the request body (as provisiond does).

use ntex::http::StatusCode;
use ntex::http::header::{self, HeaderValue};
use ntex::util::BytesMut;
use ntex::web::types::Payload;
use ntex::web::{self, App, HttpResponse};

use super::FIXED_RESPONSE;

/// Starts the HTTP server on `listener`.
pub(super) fn serve(
    listener: std::net::TcpListener,
    workers: usize,
) -> std::io::Result<ntex::server::Server> {
    let cfg = ntex::SharedCfg::new("HTTP").add(ntex::http::HttpServiceConfig::new());
    Ok(web::HttpServer::new(async |_| {
        App::new().service(web::resource("/api/v1/provision").route(web::post().to(provision)))
    })
    .workers(workers)
    .listen(listener, cfg)?
    .run())
}

async fn provision(mut payload: Payload) -> HttpResponse {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.recv().await {
        match chunk {
            Ok(c) => body.extend_from_slice(&c),
            Err(_) => return HttpResponse::new(StatusCode::BAD_REQUEST),
        }
    }
    let mut response = HttpResponse::Ok().body(FIXED_RESPONSE);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
