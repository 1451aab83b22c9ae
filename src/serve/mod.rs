//! Serving a verified tree over HTTP/1.1, so machines can PXE-boot from it (iPXE fetches
//! kernels, initrds and scripts over HTTP) and installers can download disk images.
//!
//! The server owns the socket side: a thread per connection, keep-alive, one log line per
//! request on stderr, and file bodies streamed in chunks. It serves only the paths the
//! tree's manifest lists, and the manifest itself as verified. Contents are not hashed
//! again per request (disk images are gigabytes) but sizes are checked: a file whose size
//! has changed since verification is refused with 500, because the `Content-Length` sent
//! is a promise. Parsing and the choice of range live in [`http`].

pub mod http;

use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fs_err::os::unix::fs::OpenOptionsExt;

use crate::build::tree::{Manifest, MANIFEST_FILE};
use crate::store::Digest;
use http::{ByteRange, ReadError, Request, TargetError, Version};

/// How long a connection may sit idle between requests (or mid-request) before it is
/// closed; clients that keep connections open reconnect when they need one.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; more are answered 503 and closed, so a flood of
/// connections cannot exhaust threads.
const MAX_CONNECTIONS: usize = 256;
/// File bodies are sent in pieces of this size; memory stays bounded whatever the file.
const CHUNK: usize = 256 * 1024;
/// After refusing a request whose rest is unread, how long to read and discard it, so
/// closing does not reset the connection before the client has read the refusal.
const LINGER: Duration = Duration::from_millis(500);

/// A verified tree, ready to serve.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
    manifest: Manifest,
    /// The manifest served at `/kiln-tree.json`: the text of what was verified, not what
    /// the file holds later.
    manifest_text: String,
    manifest_etag: String,
}

impl Tree {
    /// The tree at `root`, as [`crate::build::tree::verify_tree`] returned its manifest.
    pub fn new(root: PathBuf, manifest: Manifest) -> Tree {
        let manifest_text = manifest.to_json();
        let manifest_etag = etag(&Digest::of_bytes(manifest_text.as_bytes()));
        Tree {
            root,
            manifest,
            manifest_text,
            manifest_etag,
        }
    }
}

/// Accept connections on `listener` and serve `tree` until the process is killed. Only
/// returns if accepting fails for good.
pub fn run(listener: TcpListener, tree: Tree) -> io::Result<()> {
    let tree = Arc::new(tree);
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, client) = match listener.accept() {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like pass; wait instead of spinning.
            Err(error) if is_transient(&error) => {
                let _ = writeln!(io::stderr(), "accepting a connection failed: {error}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(error) => return Err(error),
        };
        let Some(slot) = Slot::take(&active) else {
            refuse_busy(stream, client);
            continue;
        };
        let tree = Arc::clone(&tree);
        let spawned = std::thread::Builder::new()
            .name(format!("serve {client}"))
            .spawn(move || {
                let _slot = slot;
                serve_connection(&stream, client, &tree);
            });
        if let Err(error) = spawned {
            // The closure, and with it the stream and the slot, is dropped: the client
            // sees the connection close.
            let _ = writeln!(
                io::stderr(),
                "{client}: no thread for the connection: {error}"
            );
        }
    }
}

/// One of the `MAX_CONNECTIONS` places for a connection, given back when dropped (also
/// when its thread panics).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A free place, if any.
    fn take(active: &Arc<AtomicUsize>) -> Option<Slot> {
        let slot = Slot(Arc::clone(active));
        (active.fetch_add(1, Ordering::SeqCst) < MAX_CONNECTIONS).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Errors of `accept` that concern one connection or pass with time.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Answer 503 to a connection over the limit, without reading its request.
fn refuse_busy(stream: TcpStream, client: SocketAddr) {
    let started = Instant::now();
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let body = "503 Service Unavailable: too many connections\n";
    let head = http::response_head(
        503,
        &[
            ("Content-Type", "text/plain".into()),
            ("Content-Length", body.len().to_string()),
            ("Retry-After", "1".into()),
            ("Connection", "close".into()),
        ],
    );
    let sent = (&stream)
        .write_all(format!("{head}{body}").as_bytes())
        .map_or(0, |()| body.len() as u64);
    let _ = stream.shutdown(Shutdown::Write);
    log(&Entry {
        client,
        method: "-",
        target: "-",
        status: 503,
        range: None,
        sent,
        started,
        note: Some(format!("{MAX_CONNECTIONS} connections already open")),
    });
}

/// Serve requests on one connection until the client closes it, asks to, or errs.
fn serve_connection(stream: &TcpStream, client: SocketAddr, tree: &Tree) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    // Headers and small bodies go out at once instead of waiting for an acknowledgement.
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    let mut writer = BufWriter::with_capacity(CHUNK, stream);
    loop {
        let request = match http::read_request(&mut reader) {
            Ok(request) => request,
            Err(ReadError::Closed | ReadError::Io(_)) => return,
            Err(ReadError::Refused(status, why)) => {
                let started = Instant::now();
                let close = Some(("Connection", "close".to_string()));
                let sent = send_status(&mut writer, status, false, close, &[]);
                log(&Entry {
                    client,
                    method: "-",
                    target: "-",
                    status,
                    range: None,
                    sent: sent.unwrap_or(0),
                    started,
                    note: Some(why.to_string()),
                });
                linger(stream);
                return;
            }
        };
        let started = Instant::now();
        let reply = respond(&mut writer, &request, tree);
        log(&Entry {
            client,
            method: &request.method,
            target: &request.target,
            status: reply.status,
            range: request.header("range"),
            sent: reply.sent,
            started,
            note: reply.note,
        });
        if !reply.keep_alive {
            if request.has_body() {
                linger(stream);
            }
            return;
        }
    }
}

/// Close our side, then read and discard what the client still sends for a moment: closing
/// a socket with unread input resets it, and the reset can destroy the response before
/// the client reads it.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let deadline = Instant::now() + LINGER;
    let mut buffer = [0u8; 8192];
    while Instant::now() < deadline {
        match (&*stream).read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// How a request was answered.
struct Reply {
    status: u16,
    /// Body bytes sent.
    sent: u64,
    keep_alive: bool,
    /// Why, for the log, when something went wrong.
    note: Option<String>,
}

/// Answer one request.
fn respond(writer: &mut impl Write, request: &Request, tree: &Tree) -> Reply {
    let response = Response {
        request,
        head_only: request.method == "HEAD",
        keep_alive: request.keep_alive() && !request.has_body(),
    };
    if request.method != "GET" && !response.head_only {
        return response.status(writer, 405, &[("Allow", "GET, HEAD".into())], None);
    }
    let path = match http::tree_path(&request.target) {
        Ok(path) => path,
        Err(TargetError::Malformed) => return response.status(writer, 400, &[], None),
        Err(TargetError::Outside) => {
            let note = Some("outside the tree".to_string());
            return response.status(writer, 404, &[], note);
        }
    };
    if path == MANIFEST_FILE {
        let content = Content {
            size: tree.manifest_text.len() as u64,
            etag: &tree.manifest_etag,
            content_type: http::content_type(&path),
        };
        let body = io::Cursor::new(tree.manifest_text.as_bytes());
        return response.send(writer, content, body);
    }
    let Some(listed) = tree.manifest.file(&path) else {
        return response.status(writer, 404, &[], None);
    };
    let file = match open_listed(tree, &path, listed.size) {
        Ok(file) => file,
        Err(why) => return response.status(writer, 500, &[], Some(why)),
    };
    let content = Content {
        size: listed.size,
        etag: &etag(&listed.sha256),
        content_type: http::content_type(&path),
    };
    response.send(writer, content, file)
}

/// Open a listed file, refusing it unless it is still a regular file of the listed size.
/// The error is the reason, for the log.
fn open_listed(tree: &Tree, path: &str, size: u64) -> Result<fs_err::File, String> {
    let full = tree.root.join(path);
    let changed =
        "changed since kiln serve verified the tree: rebuild the tree, then restart kiln serve";
    // A link put in place of a verified file is not followed out of the tree. (Links put in
    // place of its directories are: whoever can do that can change the files anyway.)
    let file = fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&full)
        .map_err(|error| format!("{error}; {changed}"))?;
    let metadata = file.metadata().map_err(|error| error.to_string())?;
    if !metadata.is_file() {
        return Err(format!(
            "{} is no longer a regular file; {changed}",
            full.display()
        ));
    }
    if metadata.len() != size {
        return Err(format!(
            "{} is {} bytes, kiln-tree.json says {size}; {changed}",
            full.display(),
            metadata.len()
        ));
    }
    Ok(file)
}

/// What a representation is, for its headers.
struct Content<'a> {
    size: u64,
    etag: &'a str,
    content_type: &'static str,
}

/// How to answer the request at hand.
struct Response<'a> {
    request: &'a Request,
    head_only: bool,
    keep_alive: bool,
}

impl Response<'_> {
    /// Send `status` with a short text body (none for HEAD).
    fn status(
        &self,
        writer: &mut impl Write,
        status: u16,
        headers: &[(&str, String)],
        note: Option<String>,
    ) -> Reply {
        let connection = connection_header(self.request.version, self.keep_alive);
        match send_status(writer, status, self.head_only, connection, headers) {
            Ok(sent) => Reply {
                status,
                sent,
                keep_alive: self.keep_alive,
                note,
            },
            Err(error) => {
                let failed = format!("sending failed: {error}");
                Reply {
                    status,
                    sent: 0,
                    keep_alive: false,
                    note: Some(note.map_or(failed.clone(), |note| format!("{note}; {failed}"))),
                }
            }
        }
    }

    /// Send `content` (the whole, or the range asked for) from `body`.
    fn send(&self, writer: &mut impl Write, content: Content, mut body: impl Read + Seek) -> Reply {
        let size = content.size;
        // Without a matching validator a range may belong to another version of the file:
        // RFC 9110 §13.1.5 says to send the whole.
        let range = match self.request.header("if-range") {
            Some(validator) if validator != content.etag => ByteRange::Whole,
            _ => http::byte_range(self.request.header("range"), size),
        };
        let accept_ranges = ("Accept-Ranges", "bytes".to_string());
        let (status, first, length, content_range) = match range {
            ByteRange::Whole => (200, 0, size, None),
            ByteRange::Part { first, last } => {
                let content_range = format!("bytes {first}-{last}/{size}");
                (206, first, last - first + 1, Some(content_range))
            }
            ByteRange::Unsatisfiable => {
                let content_range = ("Content-Range", format!("bytes */{size}"));
                return self.status(writer, 416, &[accept_ranges, content_range], None);
            }
        };
        let mut headers = vec![
            ("Content-Type", content.content_type.to_string()),
            accept_ranges,
            ("ETag", content.etag.to_string()),
        ];
        headers.extend(content_range.map(|value| ("Content-Range", value)));
        headers.push(("Content-Length", length.to_string()));
        headers.extend(connection_header(self.request.version, self.keep_alive));
        let mut reply = Reply {
            status,
            sent: 0,
            keep_alive: self.keep_alive,
            note: None,
        };
        let result = writer
            .write_all(http::response_head(status, &headers).as_bytes())
            .and_then(|()| {
                if self.head_only {
                    Ok(())
                } else {
                    copy_body(&mut body, first, length, writer, &mut reply.sent)
                }
            })
            .and_then(|()| writer.flush());
        if let Err(error) = result {
            // The client has a response head promising bytes it will not get in full: only
            // closing the connection tells it so.
            reply.keep_alive = false;
            reply.note = Some(match error.kind() {
                io::ErrorKind::UnexpectedEof => {
                    "the file shrank while being sent; connection closed".to_string()
                }
                _ => format!("sending failed: {error}"),
            });
        }
        reply
    }
}

/// Copy `length` bytes from `first` of `body` to `writer`, counting them in `sent`.
fn copy_body(
    body: &mut (impl Read + Seek),
    first: u64,
    length: u64,
    writer: &mut impl Write,
    sent: &mut u64,
) -> io::Result<()> {
    body.seek(SeekFrom::Start(first))?;
    let mut buffer = vec![0u8; CHUNK.min(length as usize)];
    while *sent < length {
        let want = buffer.len().min((length - *sent) as usize);
        let read = match body.read(&mut buffer[..want]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        writer.write_all(&buffer[..read])?;
        *sent += read as u64;
    }
    Ok(())
}

/// Send a status with a short text body (none for HEAD) and the `Connection` header
/// given; the body bytes sent.
fn send_status(
    writer: &mut impl Write,
    status: u16,
    head_only: bool,
    connection: Option<(&'static str, String)>,
    extra: &[(&str, String)],
) -> io::Result<u64> {
    let body = format!("{status} {}\n", http::reason(status));
    let mut headers: Vec<(&str, String)> = extra.to_vec();
    headers.push(("Content-Type", "text/plain".into()));
    headers.push(("Content-Length", body.len().to_string()));
    headers.extend(connection);
    writer.write_all(http::response_head(status, &headers).as_bytes())?;
    let sent = if head_only {
        0
    } else {
        writer.write_all(body.as_bytes())?;
        body.len() as u64
    };
    writer.flush()?;
    Ok(sent)
}

/// The `Connection` header a response needs: `close` when closing an HTTP/1.1
/// connection, `keep-alive` when keeping an HTTP/1.0 one.
fn connection_header(version: Version, keep_alive: bool) -> Option<(&'static str, String)> {
    match (version, keep_alive) {
        (Version::Http11, false) => Some(("Connection", "close".into())),
        (Version::Http10, true) => Some(("Connection", "keep-alive".into())),
        _ => None,
    }
}

/// A strong entity tag from the content's sha256: stable across restarts and machines,
/// with no clock involved.
fn etag(sha256: &Digest) -> String {
    format!("\"{}\"", sha256.hex())
}

/// One request, for its log line.
struct Entry<'a> {
    client: SocketAddr,
    method: &'a str,
    target: &'a str,
    status: u16,
    range: Option<&'a str>,
    sent: u64,
    started: Instant,
    note: Option<String>,
}

/// The request's log line on stderr: `CLIENT METHOD TARGET STATUS [RANGE] N B T ms[: NOTE]`.
fn log(entry: &Entry) {
    let milliseconds = entry.started.elapsed().as_secs_f64() * 1000.0;
    let mut line = format!(
        "{} {} {} {}",
        entry.client,
        printable(entry.method),
        printable(entry.target),
        entry.status
    );
    if let Some(range) = entry.range {
        line.push(' ');
        line.push_str(&printable(range).replace(' ', ""));
    }
    line.push_str(&format!(" {} B {milliseconds:.1} ms", entry.sent));
    if let Some(note) = &entry.note {
        line.push_str(": ");
        line.push_str(note);
    }
    line.push('\n');
    // Not `eprintln!`, which panics when stderr is gone (a log pipe closed): serving goes
    // on without a log rather than stopping.
    let _ = io::stderr().write_all(line.as_bytes());
}

/// `text` with control characters escaped, so a request cannot write to the terminal.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        if character.is_control() {
            out.extend(character.escape_default());
        } else {
            out.push(character);
        }
    }
    out
}
