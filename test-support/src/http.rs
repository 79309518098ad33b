//! A blocking HTTP/1.1 client over a raw `TcpStream`, for tests that must see
//! exactly what goes over the wire.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One connection, with its read side buffered.
pub struct Conn {
    pub reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// Sends a GET with `Host: localhost`.
    pub fn get(&mut self, path: &str) -> RawResponse {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        self.read_response()
    }

    /// Reads a response's status line and headers, and no body (as for HEAD).
    pub fn read_head(&mut self) -> RawResponse {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        assert!(line.starts_with("HTTP/1."), "not a status line: {line:?}");
        let status = line[9..12].parse().expect("status code");
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header line");
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':').expect("header");
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        RawResponse {
            status,
            headers,
            body: Vec::new(),
        }
    }

    /// Reads one chunk of a chunked body (its CRLF too): its data.
    pub fn read_chunk(&mut self) -> Vec<u8> {
        let mut size = String::new();
        self.reader.read_line(&mut size).expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).expect("chunk");
        chunk.truncate(size);
        chunk
    }

    pub fn read_response(&mut self) -> RawResponse {
        let mut res = self.read_head();
        let mut line = String::new();
        if let Some(len) = res.header("content-length") {
            res.body.resize(len.parse().unwrap(), 0);
            self.reader.read_exact(&mut res.body).expect("body");
        } else if res
            .header("transfer-encoding")
            .is_some_and(|te| te.contains("chunked"))
        {
            loop {
                line.clear();
                self.reader.read_line(&mut line).unwrap();
                let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                res.body.extend_from_slice(&chunk[..size]);
            }
        }
        res
    }

    /// The next response, or `None` if the server closed the connection cleanly
    /// between responses (a response cut short still panics).
    pub fn next_response(&mut self) -> Option<RawResponse> {
        match self.reader.fill_buf() {
            Ok([]) => None,
            Ok(_) => Some(self.read_response()),
            Err(e) => panic!("reading the next response: {e}"),
        }
    }

    /// Whether the server has closed the connection (reads EOF or a reset within
    /// the read timeout).
    /// Asserts that the server closes this connection, and not before
    /// `not_before` has passed since `from`: the connection is checked to be
    /// open at half of it, then closed within ten seconds.
    pub fn assert_closed_after(&mut self, from: std::time::Instant, not_before: Duration) {
        let stream = self.reader.get_ref();
        stream.set_read_timeout(Some(not_before / 2)).unwrap();
        assert!(!self.is_closed(), "closed before {not_before:?}");
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert!(self.is_closed(), "still open after 10 s");
        let closed = from.elapsed();
        // A little slack for the timer's granularity.
        assert!(closed >= not_before * 9 / 10, "closed after {closed:?}");
    }

    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// Reads a response's head from `stream` unbuffered, for tests that read a
/// large body themselves: the head as text, and the body bytes that came
/// with it.
pub fn read_head_raw(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(at + 4);
            return (String::from_utf8_lossy(&got).into_owned(), rest);
        }
    }
}

/// Sends `bytes` (a uwsgi packet, say) on a connection of its own and reads
/// the whole answer, as a front does: the server closes a uwsgi connection
/// once it has answered.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The variables nginx's `include uwsgi_params;` sends for a GET of `uri`
/// (its PATH_INFO `path_info`, as nginx decodes and normalizes it) from
/// 203.0.113.7 to `example.org` on port 80, in nginx's order and without
/// the client's fields: what the uwsgi tests build their packets on.
pub fn nginx_uwsgi_vars(uri: &str, path_info: &str) -> Vec<(&'static str, String)> {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    vec![
        ("QUERY_STRING", query.to_owned()),
        ("REQUEST_METHOD", "GET".to_owned()),
        ("CONTENT_TYPE", String::new()),
        ("CONTENT_LENGTH", String::new()),
        ("REQUEST_URI", uri.to_owned()),
        ("PATH_INFO", path_info.to_owned()),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html".to_owned()),
        ("SERVER_PROTOCOL", "HTTP/1.1".to_owned()),
        ("REQUEST_SCHEME", "http".to_owned()),
        ("REMOTE_ADDR", "203.0.113.7".to_owned()),
        ("REMOTE_PORT", "51000".to_owned()),
        ("SERVER_PORT", "80".to_owned()),
        ("SERVER_NAME", "example.org".to_owned()),
    ]
}

/// A uwsgi packet (modifier1 0) of `vars`, as nginx's `uwsgi_pass` sends one
/// before the request body.
pub fn uwsgi_packet<N: AsRef<[u8]>, V: AsRef<[u8]>>(vars: &[(N, V)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in vars {
        for item in [name.as_ref(), value.as_ref()] {
            block.extend_from_slice(&u16::try_from(item.len()).unwrap().to_le_bytes());
            block.extend_from_slice(item);
        }
    }
    let mut packet = vec![0];
    packet.extend_from_slice(&u16::try_from(block.len()).unwrap().to_le_bytes());
    packet.push(0);
    packet.extend(block);
    packet
}
