//! A small HTTP/1.1 client for the media endpoints: one kept-alive connection (TCP_NODELAY),
//! requests written by hand, bodies sent and read as a stream. The server always sends
//! `Content-Length` (PROTOCOL.md 28), so nothing else is read.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What is read from the socket at once.
const READ: usize = 256 * 1024;
/// The longest response head taken.
const MAX_HEAD: usize = 64 * 1024;

/// A response's status line and the headers this client uses.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub length: u64,
    pub content_range: Option<String>,
    /// The server will close the connection after this response.
    pub close: bool,
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    pub async fn connect(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: vec![0; READ],
            start: 0,
            end: 0,
        })
    }

    /// Writes a request's head announcing `length` body bytes (then written with [`Self::write`]),
    /// with `body` (if any) in the same write.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        extra: &[(&str, String)],
        length: u64,
        body: &[u8],
    ) -> Result<()> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: missive\r\nAuthorization: Bearer {token}\r\n"
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if length > 0 || method == "POST" || method == "PATCH" {
            head.push_str(&format!("Content-Length: {length}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    /// More of a request's body.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads more from the socket into the buffer (after what is unread); false at its end.
    async fn fill(&mut self) -> Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start == 0 {
                bail!("a response head longer than {MAX_HEAD} bytes");
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// The next response's head.
    pub async fn head(&mut self) -> Result<Head> {
        let end = loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(i) = unread.windows(4).position(|w| w == b"\r\n\r\n") {
                break self.start + i;
            }
            if unread.len() > MAX_HEAD {
                bail!("a response head longer than {MAX_HEAD} bytes");
            }
            if !self.fill().await? {
                bail!("the server closed the connection before answering");
            }
        };
        let text = std::str::from_utf8(&self.buf[self.start..end])
            .map_err(|_| anyhow!("a response head that is not text"))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("not an HTTP/1.1 status line: {status_line:?}"))?;
        let mut head = Head {
            status,
            length: 0,
            content_range: None,
            close: false,
        };
        let mut length = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().ok(),
                "content-range" => head.content_range = Some(value.to_string()),
                "connection" => head.close = value.eq_ignore_ascii_case("close"),
                "transfer-encoding" => bail!("a response with Transfer-Encoding: {value}"),
                _ => {}
            }
        }
        head.length =
            length.ok_or_else(|| anyhow!("a {status} response without Content-Length"))?;
        self.start = end + 4;
        Ok(head)
    }

    /// The next piece of a body of which `left` bytes are still to come (at most that many).
    pub async fn piece(&mut self, left: u64) -> Result<&[u8]> {
        if self.start == self.end && !self.fill().await? {
            bail!("the server closed the connection with {left} body bytes to come");
        }
        let n = ((self.end - self.start) as u64).min(left) as usize;
        let from = self.start;
        self.start += n;
        Ok(&self.buf[from..from + n])
    }

    /// A whole (small) body.
    pub async fn body(&mut self, head: &Head) -> Result<Vec<u8>> {
        if head.length > MAX_HEAD as u64 {
            bail!("a {} byte body where a small one was expected", head.length);
        }
        let mut body = Vec::with_capacity(head.length as usize);
        while (body.len() as u64) < head.length {
            let left = head.length - body.len() as u64;
            body.extend_from_slice(self.piece(left).await?);
        }
        Ok(body)
    }

    /// A request with a small body (or none), answered with JSON: (status, the JSON).
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &[u8],
    ) -> Result<(u16, Value, Head)> {
        self.send(method, path, token, &[], body.len() as u64, body)
            .await?;
        let head = self.head().await?;
        let body = self.body(&head).await?;
        let value = serde_json::from_slice(&body).map_err(|_| {
            anyhow!(
                "{method} {path}: {} with a body that is not JSON: {:?}",
                head.status,
                String::from_utf8_lossy(&body)
            )
        })?;
        Ok((head.status, value, head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Two answers in one write, then one in pieces: each head and body comes out whole.
    #[tokio::test]
    async fn answers_are_parsed_across_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 1024];
            let _ = s.read(&mut req).await.unwrap();
            s.write_all(
                b"HTTP/1.1 201 Created\r\ncontent-length: 7\r\n\r\n{\"a\":1}\
                  HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 2-5/10\r\nContent-Length: 4\r\n\r\nwxyz",
            )
            .await
            .unwrap();
            for part in [
                &b"HTTP/1.1 200 OK\r\nConte"[..],
                b"nt-Length: 3\r\n\r",
                b"\nab",
                b"c",
            ] {
                s.write_all(part).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        let mut c = Conn::connect(&addr).await.unwrap();
        let (status, v, _) = c.json("POST", "/x", "t", b"{}").await.unwrap();
        assert_eq!((status, v["a"].as_u64()), (201, Some(1)));
        let h = c.head().await.unwrap();
        assert_eq!((h.status, h.length), (206, 4));
        assert_eq!(h.content_range.as_deref(), Some("bytes 2-5/10"));
        assert_eq!(c.body(&h).await.unwrap(), b"wxyz");
        let h = c.head().await.unwrap();
        assert_eq!(c.piece(h.length).await.unwrap(), b"ab");
        assert_eq!(c.piece(1).await.unwrap(), b"c");
        server.await.unwrap();
    }
}
