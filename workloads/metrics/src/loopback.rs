//! A minimal HTTP/1.1 client for loopback tests and the benchmark: one
//! keep-alive connection, `Content-Length` or chunked responses. Not a
//! general client (no TLS, redirects or pipelining); the workspace has no
//! HTTP client dependency and this is all the metrics tests need.

use std::io;
use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest status or header line accepted, so a broken server cannot make
/// the client buffer without bound.
const MAX_LINE: usize = 64 * 1024;

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A keep-alive HTTP/1.1 connection to one server; reconnects after the
/// server closes it.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            addr,
            conn: Some(BufReader::new(stream)),
        })
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> io::Result<Reply> {
        self.request("GET", path, &[], b"").await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> io::Result<Reply> {
        self.request("POST", path, &[("content-type", "application/json")], body)
            .await
    }

    /// Any request with a `Content-Length` body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Reply> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        self.send_raw(&raw).await
    }

    /// Writes `raw` bytes as they are (to send chunked or broken requests)
    /// and reads one response.
    pub async fn send_raw(&mut self, raw: &[u8]) -> io::Result<Reply> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                BufReader::new(stream)
            }
        };
        conn.get_mut().write_all(raw).await?;
        let reply = read_reply(&mut conn).await?;
        let close = reply
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if !close {
            self.conn = Some(conn);
        }
        Ok(reply)
    }
}

async fn read_line(conn: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = Vec::new();
    let n = (&mut *conn)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(invalid("response line too long"));
    }
    let text = String::from_utf8(line).map_err(|_| invalid("response line is not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

async fn read_reply(conn: &mut BufReader<TcpStream>) -> io::Result<Reply> {
    let status_line = read_line(conn).await?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(conn).await?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(conn).await?;
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, then the blank line.
                while !read_line(conn).await?.is_empty() {}
                break;
            }
            let start = reply.body.len();
            reply.body.resize(start + size, 0);
            conn.read_exact(&mut reply.body[start..]).await?;
            read_line(conn).await?;
        }
    } else if let Some(len) = reply.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
        reply.body.resize(len, 0);
        conn.read_exact(&mut reply.body).await?;
    }
    Ok(reply)
}
