//! The HTTP/1.1 that `kiln serve` speaks, as pure functions over bytes: reading a request
//! head within limits, turning a request target into a tree path, choosing the byte range
//! to send, and naming content types. The socket side lives in the parent module.
//!
//! Only what iPXE, UEFI HTTP boot, curl and installers use: GET and HEAD, keep-alive,
//! single byte ranges. See RFC 9110 (semantics) and RFC 9112 (HTTP/1.1 messages).

use std::io::{self, BufRead, Read};

/// The longest request line read, in bytes; longer ones get 414.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// The longest header line read, in bytes; longer ones get 431.
pub const MAX_HEADER_LINE: usize = 8 * 1024;
/// The most header lines read; more get 431.
pub const MAX_HEADERS: usize = 100;
/// Empty lines tolerated before a request line (RFC 9112 §2.2 asks to ignore at least one,
/// which some clients send after a request's body).
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// An HTTP version this server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: the connection closes after each response unless asked otherwise.
    Http10,
    /// HTTP/1.1: the connection stays open unless asked otherwise.
    Http11,
}

/// A request's head: the request line and the header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...: case-sensitive, as RFC 9110 says.
    pub method: String,
    /// The request target as sent (percent-encoded).
    pub target: String,
    /// The protocol version.
    pub version: Version,
    /// Header fields, names in lower case, values without surrounding whitespace.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the client asks to keep the connection open after the response.
    pub fn keep_alive(&self) -> bool {
        let has = |token: &str| {
            self.headers
                .iter()
                .filter(|(name, _)| name == "connection")
                .flat_map(|(_, value)| value.split(','))
                .any(|option| option.trim().eq_ignore_ascii_case(token))
        };
        match self.version {
            Version::Http11 => !has("close"),
            Version::Http10 => has("keep-alive"),
        }
    }

    /// Whether a body follows the head. This server reads no bodies, so after such a
    /// request it closes the connection instead of finding where the next request starts.
    pub fn has_body(&self) -> bool {
        self.header("transfer-encoding").is_some()
            || self
                .header("content-length")
                .is_some_and(|length| length.trim() != "0")
    }
}

/// Why no request was read.
#[derive(Debug)]
pub enum ReadError {
    /// The connection closed (or went idle) before a request began.
    Closed,
    /// Reading failed part way through a request.
    Io(io::Error),
    /// The request is not one to answer: this status, and why (for the log).
    Refused(u16, &'static str),
}

/// Read one request head from `reader`, within the limits above.
pub fn read_request(reader: &mut impl BufRead) -> Result<Request, ReadError> {
    let mut leading_empty_lines = 0;
    let line = loop {
        match read_line(reader, MAX_REQUEST_LINE) {
            Ok(Line::Text(line)) if line.is_empty() => {
                leading_empty_lines += 1;
                if leading_empty_lines > MAX_LEADING_EMPTY_LINES {
                    return Err(ReadError::Refused(400, "empty lines instead of a request"));
                }
            }
            Ok(Line::Text(line)) => break line,
            Ok(Line::End) => return Err(ReadError::Closed),
            Ok(Line::TooLong) => return Err(ReadError::Refused(414, "request line too long")),
            Ok(Line::NotText) => return Err(ReadError::Refused(400, "request line not UTF-8")),
            // An idle keep-alive connection timing out is the normal way for it to end.
            Err(error)
                if leading_empty_lines == 0
                    && matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
            {
                return Err(ReadError::Closed)
            }
            Err(error) => return Err(ReadError::Io(error)),
        }
    };
    let (method, target, version) = parse_request_line(&line)?;
    let mut headers = Vec::new();
    loop {
        let line = match read_line(reader, MAX_HEADER_LINE).map_err(ReadError::Io)? {
            Line::Text(line) => line,
            Line::End => return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Line::TooLong => return Err(ReadError::Refused(431, "header line too long")),
            Line::NotText => return Err(ReadError::Refused(400, "header line not UTF-8")),
        };
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(ReadError::Refused(431, "too many header lines"));
        }
        headers.push(parse_header(&line)?);
    }
    Ok(Request {
        method,
        target,
        version,
        headers,
    })
}

/// A line as `read_line` found it.
enum Line {
    /// The line without its line ending.
    Text(String),
    /// The end of the stream, before any byte of a line.
    End,
    /// More than the limit before a line ending.
    TooLong,
    /// Not UTF-8: a request head is ASCII.
    NotText,
}

/// Read one line of at most `limit` bytes, ending in CRLF or (leniently, as RFC 9112 §2.2
/// allows) LF alone.
fn read_line(reader: &mut impl BufRead, limit: usize) -> io::Result<Line> {
    let mut bytes = Vec::new();
    // Room for the limit and a CRLF: a line of exactly `limit` bytes is accepted.
    let read = (&mut *reader)
        .take(limit as u64 + 2)
        .read_until(b'\n', &mut bytes)?;
    if read == 0 {
        return Ok(Line::End);
    }
    if bytes.pop() != Some(b'\n') {
        return if read >= limit + 2 {
            Ok(Line::TooLong)
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        };
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    if bytes.len() > limit {
        return Ok(Line::TooLong);
    }
    Ok(String::from_utf8(bytes).map_or(Line::NotText, Line::Text))
}

/// `METHOD SP target SP HTTP/1.x`.
fn parse_request_line(line: &str) -> Result<(String, String, Version), ReadError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Refused(400, "malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) || target.is_empty() {
        return Err(ReadError::Refused(400, "malformed request line"));
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        other if other.starts_with("HTTP/") => {
            return Err(ReadError::Refused(505, "HTTP version not supported"))
        }
        _ => return Err(ReadError::Refused(400, "malformed request line")),
    };
    Ok((method.to_string(), target.to_string(), version))
}

/// `name: value`. RFC 9112 §5.1 and §5.2 say to reject whitespace before the colon and
/// obsolete line folding.
fn parse_header(line: &str) -> Result<(String, String), ReadError> {
    let malformed = ReadError::Refused(400, "malformed header line");
    let Some((name, value)) = line.split_once(':') else {
        return Err(malformed);
    };
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(malformed);
    }
    Ok((
        name.to_ascii_lowercase(),
        value.trim_matches([' ', '\t']).to_string(),
    ))
}

/// A `tchar` of RFC 9110 §5.6.2.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Why a request target names no tree path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// Not an origin- or absolute-form target, a bad percent escape, or not UTF-8 (400).
    Malformed,
    /// A `.` or `..` component, encoded or not: nothing outside the listed paths is ever
    /// looked up (404, like any other path the tree does not hold).
    Outside,
}

/// The tree path a request target names: the target's path (of an absolute-form target
/// too), query dropped, percent-decoded, without the leading `/`. Decoding comes before
/// the check for `.` and `..`, so `%2e%2e` and `..%2f` are caught too.
pub fn tree_path(target: &str) -> Result<String, TargetError> {
    let path = match target.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => {
            let rest = &target[7..];
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let Some(path) = path.strip_prefix('/') else {
        return Err(TargetError::Malformed);
    };
    let decoded = percent_decode(path).ok_or(TargetError::Malformed)?;
    let decoded = String::from_utf8(decoded).map_err(|_| TargetError::Malformed)?;
    if decoded.contains('\0') {
        return Err(TargetError::Malformed);
    }
    if decoded.split('/').any(|part| part == "." || part == "..") {
        return Err(TargetError::Outside);
    }
    Ok(decoded)
}

/// `%XX` escapes decoded; `None` for a `%` not followed by two hex digits.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let digit = |offset: usize| {
                bytes
                    .get(index + offset)
                    .and_then(|byte| char::from(*byte).to_digit(16))
            };
            out.push((digit(1)? * 16 + digit(2)?) as u8);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    Some(out)
}

/// What part of a representation of `size` bytes to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// All of it, with 200: no `Range`, one this server ignores (another unit, several
    /// ranges, bad syntax), or one whose `If-Range` does not match.
    Whole,
    /// Bytes `first..=last`, with 206.
    Part {
        /// The first byte's offset.
        first: u64,
        /// The last byte's offset (inclusive).
        last: u64,
    },
    /// No byte of it (416).
    Unsatisfiable,
}

/// The range a `Range` header asks for, of a representation of `size` bytes (RFC 9110
/// §14.1.2): `bytes=a-b`, `bytes=a-` or `bytes=-n`. Several ranges are served whole,
/// which §14.2 allows; so is a header with bad syntax, which §14.2 says to ignore.
pub fn byte_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(header) = header else {
        return ByteRange::Whole;
    };
    let Some((unit, spec)) = header.split_once('=') else {
        return ByteRange::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let number = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    match (first, last) {
        ("", suffix) => match number(suffix) {
            None => ByteRange::Whole,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(length) => ByteRange::Part {
                first: size.saturating_sub(length),
                last: size - 1,
            },
        },
        (first, "") => match number(first) {
            None => ByteRange::Whole,
            Some(first) if first >= size => ByteRange::Unsatisfiable,
            Some(first) => ByteRange::Part {
                first,
                last: size - 1,
            },
        },
        (first, last) => match (number(first), number(last)) {
            (Some(first), Some(last)) if first <= last => {
                if first >= size {
                    ByteRange::Unsatisfiable
                } else {
                    ByteRange::Part {
                        first,
                        last: last.min(size - 1),
                    }
                }
            }
            _ => ByteRange::Whole,
        },
    }
}

/// The `Content-Type` of a tree file, by its name: iPXE scripts, text and the NoCloud
/// files (which have no extension) are text, JSON is JSON, the rest (kernels, initrds,
/// disk images) is bytes.
pub fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name {
        "meta-data" | "user-data" | "network-config" | "vendor-data" => return "text/plain",
        _ => {}
    }
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("ipxe" | "txt") => "text/plain",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The reason phrase of a status this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A response head: the status line, the headers, the empty line.
pub fn response_head(status: u16, headers: &[(&str, String)]) -> String {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Request, ReadError> {
        read_request(&mut io::BufReader::new(text.as_bytes()))
    }

    fn refused(text: &str) -> u16 {
        match read(text) {
            Err(ReadError::Refused(status, _)) => status,
            other => panic!("expected a refusal of {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_request_head_is_parsed() {
        let request =
            read("GET /ipxe/boot.ipxe HTTP/1.1\r\nHost: 10.1.24.1\r\nRange:  bytes=0-9 \r\n\r\n")
                .unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.target, "/ipxe/boot.ipxe");
        assert_eq!(request.version, Version::Http11);
        assert_eq!(request.header("host"), Some("10.1.24.1"));
        assert_eq!(request.header("range"), Some("bytes=0-9"));
        assert!(request.keep_alive());
        assert!(!request.has_body());
    }

    #[test]
    fn pipelined_requests_are_read_one_after_the_other() {
        let mut reader =
            io::BufReader::new("GET /a HTTP/1.1\n\nHEAD /b HTTP/1.1\r\n\r\n".as_bytes());
        assert_eq!(read_request(&mut reader).unwrap().target, "/a");
        assert_eq!(read_request(&mut reader).unwrap().method, "HEAD");
        assert!(matches!(read_request(&mut reader), Err(ReadError::Closed)));
    }

    #[test]
    fn connection_options_decide_keep_alive() {
        let keep = |text: &str| read(text).unwrap().keep_alive();
        assert!(!keep("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nConnection: te, close\r\n\r\n"));
    }

    #[test]
    fn a_request_with_a_body_is_noticed() {
        assert!(read("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .has_body());
        assert!(
            read("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .has_body()
        );
        assert!(!read("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .has_body());
    }

    #[test]
    fn over_long_lines_and_too_many_headers_are_refused() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(refused(&long_target), 414);
        let long_header = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_LINE)
        );
        assert_eq!(refused(&long_header), 431);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(refused(&many), 431);
        // Exactly at the limits is fine.
        let line = format!("GET /{} HTTP/1.1", "a".repeat(MAX_REQUEST_LINE - 14));
        assert_eq!(line.len(), MAX_REQUEST_LINE);
        assert!(read(&format!("{line}\r\n\r\n")).is_ok());
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS));
        assert!(read(&many).is_ok());
    }

    #[test]
    fn malformed_heads_are_refused() {
        assert_eq!(refused("GET /\r\n\r\n"), 400);
        assert_eq!(refused("GET  / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(refused("GET / SPDY\r\n\r\n"), 400);
        assert_eq!(refused("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);
        assert_eq!(refused("GET / HTTP/1.1\r\nno colon\r\n\r\n"), 400);
        assert_eq!(refused("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"), 400);
        assert_eq!(refused("\r\n\r\n\r\n\r\n\r\n\r\n"), 400);
        for head in [
            &b"GET /\xff HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nA: \xff\r\n\r\n",
        ] {
            let result = read_request(&mut io::BufReader::new(head));
            assert!(
                matches!(result, Err(ReadError::Refused(400, _))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn a_closed_connection_is_not_an_error_between_requests_only() {
        assert!(matches!(read(""), Err(ReadError::Closed)));
        assert!(matches!(
            read("GET / HTTP/1.1\r\nHost: x\r\n"),
            Err(ReadError::Io(_))
        ));
        assert!(matches!(read("GET / HT"), Err(ReadError::Io(_))));
    }

    #[test]
    fn targets_become_tree_paths() {
        assert_eq!(tree_path("/ipxe/boot.ipxe"), Ok("ipxe/boot.ipxe".into()));
        assert_eq!(
            tree_path("/ipxe%2Fboot.ipxe?x=1"),
            Ok("ipxe/boot.ipxe".into())
        );
        assert_eq!(tree_path("/a%20b"), Ok("a b".into()));
        assert_eq!(
            tree_path("http://10.1.24.1:8080/vmlinuz"),
            Ok("vmlinuz".into())
        );
        assert_eq!(tree_path("HTTP://host"), Ok("".into()));
        assert_eq!(tree_path("/"), Ok("".into()));
    }

    #[test]
    fn targets_that_leave_the_root_are_refused_encoded_or_not() {
        for target in [
            "/../etc/passwd",
            "/ipxe/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/ipxe/..",
            "/./vmlinuz",
            "http://host/../x",
        ] {
            assert_eq!(tree_path(target), Err(TargetError::Outside), "{target}");
        }
        for target in ["*", "vmlinuz", "/%zz", "/%+f", "/%2", "/%ff", "/a%00b"] {
            assert_eq!(tree_path(target), Err(TargetError::Malformed), "{target}");
        }
    }

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        let part = |first, last| ByteRange::Part { first, last };
        let range = |header: &str| byte_range(Some(header), 100);
        assert_eq!(byte_range(None, 100), ByteRange::Whole);
        assert_eq!(range("bytes=0-9"), part(0, 9));
        assert_eq!(range("bytes=90-200"), part(90, 99));
        assert_eq!(range("bytes=10-"), part(10, 99));
        assert_eq!(range("bytes=-10"), part(90, 99));
        assert_eq!(range("bytes=-1000"), part(0, 99));
        assert_eq!(range("Bytes = 5-5"), part(5, 5));
        assert_eq!(range("bytes=100-"), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=100-200"), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=-0"), ByteRange::Unsatisfiable);
        assert_eq!(byte_range(Some("bytes=-5"), 0), ByteRange::Unsatisfiable);
        assert_eq!(byte_range(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        // Ignored: several ranges, another unit, bad syntax.
        for ignored in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=9-3",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
            "bytes",
        ] {
            assert_eq!(range(ignored), ByteRange::Whole, "{ignored}");
        }
    }

    #[test]
    fn content_types_by_name() {
        assert_eq!(content_type("ipxe/52-54-00-6b-00-01.ipxe"), "text/plain");
        assert_eq!(content_type("nocloud/n1/meta-data"), "text/plain");
        assert_eq!(content_type("nocloud/n1/network-config"), "text/plain");
        assert_eq!(content_type("README.txt"), "text/plain");
        assert_eq!(content_type("kiln-tree.json"), "application/json");
        assert_eq!(content_type("vmlinuz"), "application/octet-stream");
        assert_eq!(content_type("images/n1.raw"), "application/octet-stream");
        assert_eq!(content_type("json"), "application/octet-stream");
    }
}
