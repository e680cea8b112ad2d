//! Bridges between async request/response bodies and the blocking CSV import and export, over
//! bounded channels so that a file of any size is never held in memory.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use ntex::util::{Bytes, Stream};
use tokio::sync::mpsc;

/// Chunks buffered between the two sides.
pub const CHANNEL_CHUNKS: usize = 16;
/// Largest chunk the export sends. It must stay at or below ntex-bytes 1.10's `APPEND_COPY_LIMIT`
/// (4096): ntex's chunked encoder writes the chunk-size line into its output pages and then
/// appends the chunk; a larger chunk is linked as a page of its own after the size line is split
/// off the current page, and that split-off line reached the socket as NUL bytes (curl:
/// "Illegal or missing hexadecimal sequence in chunked-encoding"). Chunks up to the limit are
/// copied next to their size line instead. `bulk::export_over_http_is_valid_chunked_encoding`
/// checks it with curl.
pub const EXPORT_CHUNK_BYTES: usize = 4096;

/// A blocking `Read` over body chunks sent from an async handler.
#[derive(Debug)]
pub struct ChannelReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    /// A reader and the sender the handler feeds; dropping the sender ends the input.
    pub fn new() -> (mpsc::Sender<Bytes>, ChannelReader) {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (
            tx,
            ChannelReader {
                chunks: rx,
                current: Bytes::new(),
            },
        )
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// A blocking `Write` whose bytes become the chunks of a streaming response.
#[derive(Debug)]
pub struct ChannelWriter {
    chunks: mpsc::Sender<Result<Bytes, io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    /// A writer and the stream to hand to the response.
    pub fn new() -> (ChannelWriter, ReceiverStream) {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (
            ChannelWriter {
                chunks: tx,
                buffer: Vec::with_capacity(EXPORT_CHUNK_BYTES),
            },
            ReceiverStream(rx),
        )
    }

    /// Ends the stream with an error (the client sees a truncated body).
    pub fn fail(self, error: io::Error) {
        let _ = self.chunks.blocking_send(Err(error));
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        for piece in self.buffer.chunks(EXPORT_CHUNK_BYTES) {
            self.chunks
                .blocking_send(Ok(Bytes::copy_from_slice(piece)))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        }
        self.buffer.clear();
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= EXPORT_CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// A response body already in memory, served as chunks of at most [`EXPORT_CHUNK_BYTES`].
/// ntex 4.0.0-beta.13 with ntex-bytes 1.10 links a body larger than 4 KiB into its write buffer
/// as a page of its own, after splitting the buffered head off; on keep-alive connections that
/// head (status line and headers, or the previous response's tail) now and then reached the
/// socket corrupted: about one `/metrics` scrape in 500 arrived short, and a device-list page
/// had an invalid header. Chunks up to 4 KiB are copied instead of linked.
#[derive(Debug)]
pub struct SmallChunks(std::collections::VecDeque<Bytes>);

impl SmallChunks {
    /// Splits `body` into chunks.
    pub fn new(body: &[u8]) -> SmallChunks {
        SmallChunks(
            body.chunks(EXPORT_CHUNK_BYTES)
                .map(Bytes::copy_from_slice)
                .collect(),
        )
    }
}

impl Stream for SmallChunks {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// The receiving end of a [`ChannelWriter`], as a response body stream.
#[derive(Debug)]
pub struct ReceiverStream(mpsc::Receiver<Result<Bytes, io::Error>>);

impl Stream for ReceiverStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
