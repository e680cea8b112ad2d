//! HTTP/1.1 `POST /api/v1/provision` on a keep-alive connection (one per worker), the way a
//! gateway or a factory station provisions devices one after the other. Responses are parsed
//! with httparse; a body must carry Content-Length (provisiond and ThingsBoard send it).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Outcome, io_reason};

/// Largest response accepted.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// One keep-alive connection, opened on first use and again after the server closed it.
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    host: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl HttpClient {
    /// A client for `addr`, sending `host` as the Host header.
    pub fn new(addr: SocketAddr, host: String) -> HttpClient {
        HttpClient {
            addr,
            host,
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one request; a reused connection the server has closed meanwhile is retried once on
    /// a new one.
    pub async fn provision(&mut self, body: &[u8], timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.exchange(body)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.stream = None;
                Outcome::Failed("timeout".into())
            }
        }
    }

    async fn exchange(&mut self, body: &[u8]) -> Outcome {
        let reused = self.stream.is_some();
        match self.once(body).await {
            Err(Step::Stale) if reused => match self.once(body).await {
                Ok(o) => o,
                Err(step) => step.outcome(),
            },
            Ok(o) => o,
            Err(step) => step.outcome(),
        }
    }

    async fn once(&mut self, body: &[u8]) -> Result<Outcome, Step> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| Step::Connect(io_reason(&e)))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("opened above");
        let mut request = format!(
            "POST /api/v1/provision HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let result = read_response(stream, &request, &mut self.buf).await;
        match result {
            Ok((status, close, body_range)) => {
                if close {
                    self.stream = None;
                }
                let body = &self.buf[body_range];
                Ok(if status == 200 {
                    Outcome::from_body(body)
                } else {
                    match crate::fleet::parse_response(body) {
                        Err(reason) => Outcome::Refused(format!("http {status}: {reason}")),
                        Ok(_) => Outcome::Refused(format!("http {status}")),
                    }
                })
            }
            Err(step) => {
                self.stream = None;
                Err(step)
            }
        }
    }
}

/// Why an exchange did not produce a response.
enum Step {
    Connect(String),
    /// The connection was closed before any byte of the response.
    Stale,
    Broken(String),
}

impl Step {
    fn outcome(self) -> Outcome {
        match self {
            Step::Connect(e) => Outcome::ConnectFailed(e),
            Step::Stale => Outcome::Failed("connection closed before the response".into()),
            Step::Broken(e) => Outcome::Failed(e),
        }
    }
}

/// Writes the request and reads one response into `buf`: (status, connection closes, body).
async fn read_response(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u16, bool, std::ops::Range<usize>), Step> {
    if let Err(e) = stream.write_all(request).await {
        return Err(match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Step::Stale,
            _ => Step::Broken(io_reason(&e)),
        });
    }
    buf.clear();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(buf) {
            Ok(httparse::Status::Complete(head)) => {
                let status = response.code.unwrap_or(0);
                let mut length = None;
                let mut close = false;
                for h in response.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok());
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = h.value.eq_ignore_ascii_case(b"close");
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(Step::Broken("chunked response (unsupported)".into()));
                    }
                }
                let length = length.unwrap_or(0);
                if length > MAX_RESPONSE_BYTES {
                    return Err(Step::Broken("response too large".into()));
                }
                while buf.len() < head + length {
                    read_more(stream, buf).await?;
                }
                return Ok((status, close, head..head + length));
            }
            Ok(httparse::Status::Partial) => {
                let before = buf.len();
                if before > MAX_RESPONSE_BYTES {
                    return Err(Step::Broken("response head too large".into()));
                }
                match read_more(stream, buf).await {
                    Err(Step::Broken(_)) if before == 0 => return Err(Step::Stale),
                    other => other?,
                }
            }
            Err(e) => return Err(Step::Broken(format!("bad HTTP response: {e}"))),
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Step> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) => Err(Step::Broken("connection closed".into())),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(Step::Broken(io_reason(&e))),
    }
}
