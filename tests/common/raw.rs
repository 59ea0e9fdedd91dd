//! HTTP/1.1 over raw TCP, byte for byte: a reader that parses just enough to find where a
//! message ends ([`Wire`], [`parse_head`], [`read_body`]), and a raw client ([`Raw`]) that
//! writes exact bytes and reads the responses back ([`Resp`]), for requests a well-behaved
//! client cannot make. Every read of a [`Raw`] client has the [`LIVENESS`](super::LIVENESS)
//! bound: a response stops only if no byte of it comes for that long, however long a large
//! one takes in all on a loaded machine.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::within;

/// Header lines as received: name as sent, value with surrounding blanks trimmed.
pub type Headers = Vec<(String, Vec<u8>)>;

/// Where `needle` first starts in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits a head (start line + header lines) into the start line and the headers.
pub fn parse_head(head: &[u8]) -> (String, Headers) {
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            headers.push((String::from_utf8_lossy(line).into_owned(), Vec::new()));
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]).into_owned();
        let value = line[colon + 1..].trim_ascii().to_vec();
        headers.push((name, value));
    }
    (start, headers)
}

/// The values of header `name` (any case), in order.
pub fn values<'a>(headers: &'a Headers, name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// A stream (TCP, or its read half) with a read buffer.
pub struct Wire<S = TcpStream> {
    /// The stream.
    pub stream: S,
    /// Bytes read and not consumed yet.
    pub buf: Vec<u8>,
    /// Whether the stream ended.
    pub eof: bool,
    /// Whether each read fails the test as hung past the liveness bound (a [`Raw`] client's
    /// reads; a server waiting for the next request waits as long as it takes).
    pub bounded: bool,
}

impl<S: tokio::io::AsyncRead + Unpin> Wire<S> {
    /// A wire with an empty buffer.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            eof: false,
            bounded: false,
        }
    }

    /// Reads more bytes; false at EOF or on a reset.
    pub async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        let read = self.stream.read(&mut chunk);
        let read = if self.bounded {
            within("a read (no byte for the liveness bound)", read).await
        } else {
            read.await
        };
        match read {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The bytes up to and including `pat`, or `None` at EOF (what was read stays buffered).
    pub async fn read_until(&mut self, pat: &[u8]) -> Option<Vec<u8>> {
        let mut from = 0;
        loop {
            if let Some(i) = find(&self.buf[from..], pat) {
                let end = from + i + pat.len();
                return Some(self.buf.drain(..end).collect());
            }
            from = self.buf.len().saturating_sub(pat.len());
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Up to `n` bytes; the flag says whether all `n` arrived before EOF.
    pub async fn read_n(&mut self, n: usize) -> (Vec<u8>, bool) {
        while self.buf.len() < n {
            if !self.fill().await {
                let all = std::mem::take(&mut self.buf);
                return (all, false);
            }
        }
        (self.buf.drain(..n).collect(), true)
    }

    /// Everything until EOF.
    pub async fn read_to_eof(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

/// A message body as received.
#[derive(Clone, Debug, Default)]
pub struct ReadBody {
    /// The bytes as on the wire (chunk framing included).
    pub raw: Vec<u8>,
    /// The payload.
    pub data: Vec<u8>,
    /// The trailer fields of a chunked body.
    pub trailers: Headers,
    /// Whether the framing said the body ended (last chunk, or all `Content-Length` bytes).
    pub complete: bool,
}

pub async fn read_chunked<S: tokio::io::AsyncRead + Unpin>(wire: &mut Wire<S>) -> ReadBody {
    let mut body = ReadBody::default();
    loop {
        let Some(line) = wire.read_until(b"\r\n").await else {
            body.raw.extend(std::mem::take(&mut wire.buf));
            return body;
        };
        body.raw.extend_from_slice(&line);
        let size_text = line[..line.len() - 2]
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let Some(size) = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
        else {
            return body; // broken framing: incomplete
        };
        if size == 0 {
            loop {
                let Some(line) = wire.read_until(b"\r\n").await else {
                    return body;
                };
                body.raw.extend_from_slice(&line);
                if line == b"\r\n" {
                    body.complete = true;
                    return body;
                }
                let (_, mut t) = parse_head(&[b"-\r\n", line.as_slice()].concat());
                body.trailers.append(&mut t);
            }
        }
        let (data, all) = wire.read_n(size + 2).await;
        body.raw.extend_from_slice(&data);
        if !all {
            body.data.extend_from_slice(&data[..data.len().min(size)]);
            return body;
        }
        body.data.extend_from_slice(&data[..size]);
    }
}

/// How a message with these headers is framed: `chunked`, else `Content-Length` bytes, else
/// `None` (no framing header).
pub async fn read_body<S: tokio::io::AsyncRead + Unpin>(
    wire: &mut Wire<S>,
    headers: &Headers,
) -> Option<ReadBody> {
    let chunked = values(headers, "transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case(b"chunked"));
    let length = values(headers, "content-length")
        .first()
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
    if chunked {
        Some(read_chunked(wire).await)
    } else if let Some(n) = length {
        let (data, complete) = wire.read_n(n).await;
        Some(ReadBody {
            raw: data.clone(),
            data,
            trailers: Vec::new(),
            complete,
        })
    } else {
        None
    }
}

/// A message head as received: what requests and responses read from the wire offer.
pub trait Head {
    /// The start line and header lines as received (up to and including the blank line),
    /// and the header lines parsed.
    fn head_lines(&self) -> (&[u8], &Headers);

    /// The head as text.
    fn head_str(&self) -> String {
        String::from_utf8_lossy(self.head_lines().0).into_owned()
    }

    /// Every value of header `name`.
    fn all(&self, name: &str) -> Vec<&[u8]> {
        values(self.head_lines().1, name)
    }

    /// How many `name` lines there are.
    fn count(&self, name: &str) -> usize {
        self.all(name).len()
    }

    /// Whether there is a `name` line.
    fn has(&self, name: &str) -> bool {
        self.count(name) > 0
    }

    /// The value of a header that must appear exactly once.
    fn one(&self, name: &str) -> String {
        let all = self.all(name);
        assert_eq!(all.len(), 1, "{name} lines in:\n{}", self.head_str());
        String::from_utf8_lossy(all[0]).into_owned()
    }
}

/// One response as the client read it.
#[derive(Clone, Debug)]
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// The status line and header lines, as received.
    pub head: Vec<u8>,
    /// The header lines.
    pub headers: Headers,
    /// The body.
    pub body: ReadBody,
    /// `true` if the body was delimited by the connection closing.
    pub close_delimited: bool,
}

impl Head for Resp {
    fn head_lines(&self) -> (&[u8], &Headers) {
        (&self.head, &self.headers)
    }
}

impl Resp {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body.data).into_owned()
    }
}

/// What came after a response on a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// The server closed the connection.
    Closed,
    /// More bytes arrived.
    Data(Vec<u8>),
}

/// A raw TCP client (or the read half of one, after [`Raw::split`]).
pub struct Raw<S = TcpStream> {
    /// The connection and what was read from it.
    pub wire: Wire<S>,
}

impl Raw {
    /// Connects to `addr` (`TCP_NODELAY`).
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let mut wire = Wire::new(stream);
        wire.bounded = true;
        Self { wire }
    }

    /// Writes `bytes` and flushes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.wire.stream.write_all(bytes).await.expect("write");
        self.wire.stream.flush().await.expect("flush");
    }

    /// Sends, ignoring errors (the server may already have closed).
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.wire.stream.write_all(bytes).await.is_ok()
    }

    /// A reader and a writer that can be used at the same time.
    pub fn split(
        self,
    ) -> (
        Raw<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
        let (rd, wr) = self.wire.stream.into_split();
        (
            Raw {
                wire: Wire {
                    stream: rd,
                    buf: self.wire.buf,
                    eof: self.wire.eof,
                    bounded: self.wire.bounded,
                },
            },
            wr,
        )
    }
}

impl<S: tokio::io::AsyncRead + Unpin> Raw<S> {
    /// Reads one response (a `1xx` is a response of its own). `None` if the connection
    /// closed before any byte of it. Each read has the liveness bound (see [`Wire::bounded`]),
    /// not the whole response: a large one may take longer on a loaded machine.
    pub async fn response(&mut self, head_request: bool) -> Option<Resp> {
        let head = match self.wire.read_until(b"\r\n\r\n").await {
            Some(h) => h,
            None if self.wire.buf.is_empty() => return None,
            None => panic!(
                "connection closed inside a response head: {:?}",
                String::from_utf8_lossy(&self.wire.buf)
            ),
        };
        let (start, headers) = parse_head(&head);
        let status: u16 = start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {start:?}"));
        let mut close_delimited = false;
        let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304
        {
            ReadBody {
                complete: true,
                ..ReadBody::default()
            }
        } else if let Some(body) = read_body(&mut self.wire, &headers).await {
            body
        } else {
            close_delimited = true;
            let data = self.wire.read_to_eof().await;
            ReadBody {
                raw: data.clone(),
                data,
                trailers: Vec::new(),
                complete: true,
            }
        };
        Some(Resp {
            status,
            head,
            headers,
            body,
            close_delimited,
        })
    }

    /// Reads a final response, skipping `1xx` ones.
    pub async fn final_response(&mut self, head_request: bool) -> Option<Resp> {
        loop {
            let r = self.response(head_request).await?;
            if !(100..200).contains(&r.status) {
                return Some(r);
            }
        }
    }

    /// Waits for the server to close the connection or send more bytes.
    pub async fn after(&mut self) -> After {
        within("waiting for the connection to close", async {
            if !self.wire.buf.is_empty() {
                return After::Data(std::mem::take(&mut self.wire.buf));
            }
            if self.wire.fill().await {
                After::Data(std::mem::take(&mut self.wire.buf))
            } else {
                After::Closed
            }
        })
        .await
    }

    /// The connection must be closed by the server, with nothing more sent.
    pub async fn assert_closed(&mut self) {
        let after = self.after().await;
        assert_eq!(
            after,
            After::Closed,
            "expected the connection to close; got {:?}",
            match &after {
                After::Data(d) => String::from_utf8_lossy(d).into_owned(),
                After::Closed => String::new(),
            }
        );
    }
}

/// Writes `request` as is on a new connection to `addr` and reads one response (without a
/// body if `request` is a `HEAD`); returns it and the connection.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> (Resp, Raw) {
    let mut c = Raw::connect(addr).await;
    c.send(request).await;
    let head = request.starts_with(b"HEAD ");
    let r = c.response(head).await.expect("a response");
    (r, c)
}

/// [`exchange`], for the response only.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    exchange(addr, request).await.0
}

/// Slowloris: sends `GET {path}` with a header that never ends, one byte every 100 ms (for
/// up to 60 s, longer than [`within`] waits), and returns what the server sent before it
/// closed the connection. A server without a header read timeout fails the test as hung.
pub async fn dribbled_headers(addr: SocketAddr, path: &str) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    wr.write_all(head.as_bytes()).await.unwrap();
    let dribble = tokio::spawn(async move {
        for _ in 0..600 {
            if wr.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let mut got = Vec::new();
    within("the server ends the slow connection", async {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    dribble.abort();
    got
}
