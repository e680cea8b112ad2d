//! HTTP/1.1 `POST /api/v1/provision` on a keep-alive connection (one per worker), the way a
//! gateway or a factory station provisions devices one after the other. Responses are parsed
//! with httparse; a body comes with Content-Length (provisiond and ThingsBoard send it) or in
//! chunks (`Transfer-Encoding: chunked`, as some proxies and servers answer).

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
                let mut chunked = false;
                for h in response.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok());
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = h.value.eq_ignore_ascii_case(b"close");
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = String::from_utf8_lossy(h.value)
                            .to_ascii_lowercase()
                            .contains("chunked");
                    }
                }
                if chunked {
                    let body = read_chunked(stream, buf, head).await?;
                    buf.truncate(head);
                    buf.extend_from_slice(&body);
                    return Ok((status, close, head..buf.len()));
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

/// Longest chunk-size or trailer line accepted.
const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// Decodes a chunked body that starts at `start` in `buf` (RFC 9112 §7.1), reading more as
/// needed; chunk extensions and trailers are read and ignored.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<Vec<u8>, Step> {
    let mut pos = start;
    let mut body = Vec::new();
    loop {
        let line_end = read_line(stream, buf, pos).await?;
        let line = std::str::from_utf8(&buf[pos..line_end])
            .map_err(|_| Step::Broken("bad chunk size line".into()))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Step::Broken(format!("bad chunk size {size_text:?}")))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailer fields, up to the empty line that ends the message.
            loop {
                let end = read_line(stream, buf, pos).await?;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_RESPONSE_BYTES {
            return Err(Step::Broken("response too large".into()));
        }
        while buf.len() < pos + size + 2 {
            read_more(stream, buf).await?;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(Step::Broken("chunk not followed by CRLF".into()));
        }
        pos += size + 2;
    }
}

/// The index of the CRLF ending the line that starts at `pos`, reading more as needed.
async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>, pos: usize) -> Result<usize, Step> {
    loop {
        if let Some(i) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
            return Ok(pos + i);
        }
        if buf.len() - pos > MAX_CHUNK_LINE_BYTES {
            return Err(Step::Broken("chunk line too long".into()));
        }
        read_more(stream, buf).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one connection: reads the request head and body, then writes `parts` one by one
    /// (so chunks arrive split across reads), and keeps the connection open.
    async fn serve(parts: Vec<&'static [u8]>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let _ = socket.read(&mut request).await.unwrap();
            for part in parts {
                socket.write_all(part).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        addr
    }

    async fn ask(parts: Vec<&'static [u8]>) -> Outcome {
        let addr = serve(parts).await;
        let mut client = HttpClient::new(addr, "test".into());
        client
            .provision(br#"{"deviceName":"d"}"#, Duration::from_secs(3))
            .await
    }

    #[tokio::test]
    async fn a_chunked_response_split_across_reads_is_decoded() {
        let outcome = ask(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"1c;ext=1\r\n{\"credentialsValue\":\"tok-1\",",
            b"\r\n34\r\n\"credentialsType\":\"ACCESS_TOKEN\",\"status\":\"",
            b"SUCCESS\"}\r\n0\r\nX-Trailer: 1\r\n\r\n",
        ])
        .await;
        match outcome {
            Outcome::Success(Some(creds)) => {
                assert!(format!("{creds:?}").contains("tok-1"), "{creds:?}")
            }
            other => panic!("expected SUCCESS, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_bad_chunk_size_is_a_clear_failure() {
        let outcome = ask(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        ])
        .await;
        match outcome {
            Outcome::Failed(reason) => assert!(reason.contains("bad chunk size"), "{reason}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
