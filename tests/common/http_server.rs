//! A test HTTP/1.1 server on 127.0.0.1 that can truncate, drop, stall, corrupt, fail or
//! ignore ranges, one behaviour per request, and records every request.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// No test server (nor a stalled reply) outlives this, even if a test forgets to drop it.
pub const SERVER_LIFETIME: Duration = Duration::from_secs(30);

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET /path HTTP/1.1`
    pub line: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    /// When the request arrived.
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// N of `Range: bytes=N-`.
    pub fn range_start(&self) -> Option<usize> {
        let range = self.range.as_deref()?;
        let first = range.strip_prefix("bytes=")?.strip_suffix('-')?;
        first.parse().ok()
    }
}

/// How the server sends a reply.
#[derive(Debug, Clone, Copy)]
pub enum Delivery {
    /// All of it, with `Content-Length`.
    Whole,
    /// `Content-Length` of the whole body, then only this many body bytes, then close.
    CloseAfter(usize),
    /// `Content-Length` of the whole body, this many body bytes, then silence until the
    /// server is dropped.
    StallAfter(usize),
    /// `Transfer-Encoding: chunked`, one chunk for the whole body, and the connection closed
    /// after this many body bytes, in the middle of the chunk.
    ChunkedCutAfter(usize),
    /// No length at all (the body ends when the connection closes), closed after this many
    /// body bytes.
    UnframedCutAfter(usize),
    /// All of it, with `Content-Length`, in pieces of this many bytes 2 ms apart: slow
    /// enough for a test to kill the client half way.
    Throttled(usize),
}

/// What the server answers to one request.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delivery: Delivery,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: format!("status {status}\n").into_bytes(),
            delivery: Delivery::Whole,
        }
    }

    /// `200` with the whole of `content`, whatever the request asked for.
    pub fn whole(content: &[u8]) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: content.to_vec(),
            delivery: Delivery::Whole,
        }
    }

    /// `content` as a well-behaved server serves it: `206` from the requested byte for
    /// `Range: bytes=N-`, `416` when N is past the end, else `200`.
    pub fn honouring_range(content: &[u8], request: &Seen) -> Reply {
        match request.range_start() {
            None => Reply::whole(content),
            Some(first) if first >= content.len() => {
                Reply::status(416).header("Content-Range", &format!("bytes */{}", content.len()))
            }
            Some(first) => Reply {
                status: 206,
                headers: vec![(
                    "Content-Range".to_owned(),
                    format!("bytes {first}-{}/{}", content.len() - 1, content.len()),
                )],
                body: content[first..].to_vec(),
                delivery: Delivery::Whole,
            },
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delivered(mut self, delivery: Delivery) -> Reply {
        self.delivery = delivery;
        self
    }
}

type Handler = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

/// An HTTP/1.1 server on 127.0.0.1: a thread per connection, one request per connection
/// (`Connection: close`). `handler(n, request)` answers the n-th request (from 0). Dropping
/// it stops the accept loop and ends stalled replies.
pub struct TestServer {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(handler: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let address = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let deadline = Instant::now() + SERVER_LIFETIME;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let requests = Arc::clone(&requests);
                            let stop = Arc::clone(&stop);
                            let handler = Arc::clone(&handler);
                            thread::spawn(move || serve(stream, &requests, &stop, &*handler));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        TestServer {
            address,
            requests,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// A server that serves `content` at every path, honouring ranges.
    pub fn serving(content: &[u8]) -> TestServer {
        let content = content.to_vec();
        TestServer::start(move |_, request| Reply::honouring_range(&content, request))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    pub fn ranges(&self) -> Vec<Option<String>> {
        self.requests()
            .into_iter()
            .map(|request| request.range)
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

pub fn serve(stream: TcpStream, requests: &Mutex<Vec<Seen>>, stop: &AtomicBool, handler: &Handler) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Some(request) = read_request(&stream) else {
        return;
    };
    let index = {
        let mut requests = requests.lock().unwrap();
        requests.push(request.clone());
        requests.len() - 1
    };
    let reply = handler(index, &request);
    let _ = write_reply(stream, &reply, stop);
}

pub fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let line = line.trim_end().to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    // No request of these tests has anywhere near this many headers.
    for _ in 0..100 {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            let range = headers
                .iter()
                .find(|(name, _)| name == "range")
                .map(|(_, value)| value.clone());
            return Some(Seen {
                line,
                range,
                headers,
                at: Instant::now(),
            });
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    None
}

pub fn write_reply(mut stream: TcpStream, reply: &Reply, stop: &AtomicBool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} Test\r\nConnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = &reply.body;
    match reply.delivery {
        Delivery::ChunkedCutAfter(_) => head.push_str("Transfer-Encoding: chunked\r\n"),
        Delivery::UnframedCutAfter(_) => {}
        _ => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    match reply.delivery {
        Delivery::Whole => stream.write_all(body)?,
        Delivery::CloseAfter(count) | Delivery::UnframedCutAfter(count) => {
            stream.write_all(&body[..count])?
        }
        Delivery::StallAfter(count) => {
            stream.write_all(&body[..count])?;
            stream.flush()?;
            let deadline = Instant::now() + SERVER_LIFETIME;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
        Delivery::ChunkedCutAfter(count) => {
            stream.write_all(format!("{:x}\r\n", body.len()).as_bytes())?;
            stream.write_all(&body[..count])?;
        }
        Delivery::Throttled(piece) => {
            for chunk in body.chunks(piece.max(1)) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                stream.write_all(chunk)?;
                thread::sleep(Duration::from_millis(2));
            }
        }
    }
    stream.flush()
}

/// `length` pseudo-random bytes: a byte taken from the wrong offset changes the digest.
pub fn content(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
