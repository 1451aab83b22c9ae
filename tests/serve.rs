//! `kiln serve` over real HTTP on 127.0.0.1: the real binary serving a tree the test wrote,
//! asked by raw requests over a TcpStream (so nothing normalises them) and by curl.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

use common::http_server::content;
use common::registry::{require, run};
use common::serve::{Server, WAIT};
use common::Kiln;

/// The disk image's size: a few chunks of the server's and not a round number.
const IMAGE_SIZE: usize = 3 * 1024 * 1024 + 123;

/// The files of the test tree.
fn tree_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("vmlinuz", content(70_001, 1)),
        (
            "ipxe/52-54-00-6b-00-01.ipxe",
            b"#!ipxe\nkernel /vmlinuz\nboot\n".to_vec(),
        ),
        ("nocloud/n1/meta-data", b"instance-id: n1\n".to_vec()),
        ("images/n1.raw", content(IMAGE_SIZE, 2)),
        ("empty.txt", Vec::new()),
    ]
}

/// Write the test tree and its manifest to `root`.
fn write_tree(root: &Path) {
    for (path, bytes) in tree_files() {
        let target = root.join(path);
        fs_err::create_dir_all(target.parent().unwrap()).unwrap();
        fs_err::write(target, bytes).unwrap();
    }
    kiln::build::tree::write_manifest(root).unwrap();
}

fn file(path: &str) -> Vec<u8> {
    tree_files()
        .into_iter()
        .find(|(name, _)| *name == path)
        .map(|(_, bytes)| bytes)
        .unwrap()
}

/// Serve a fresh test tree.
fn start() -> Server {
    let kiln = Kiln::new();
    write_tree(&kiln.path("pxe"));
    Server::start_in(kiln, &["serve", "--addr", "127.0.0.1:0", "--root", "pxe"])
}

/// Raw HTTP requests to a running server.
trait Client {
    fn connect(&self) -> Connection;
    fn ask(&self, request: &str) -> Response;
    fn get(&self, target: &str, headers: &str) -> Response;
}

impl Client for Server {
    fn connect(&self) -> Connection {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Connection {
            reader: BufReader::new(stream),
        }
    }

    /// Send one raw request on a new connection and read the response.
    fn ask(&self, request: &str) -> Response {
        let head_only = request.starts_with("HEAD ");
        self.connect().send(request, head_only)
    }

    /// `GET target` with extra header lines, on a new connection. The target is sent as
    /// given: nothing normalises `..` or percent escapes on the way.
    fn get(&self, target: &str, headers: &str) -> Response {
        self.ask(&format!(
            "GET {target} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n"
        ))
    }
}

/// A client connection.
struct Connection {
    reader: BufReader<TcpStream>,
}

/// A response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

impl Connection {
    fn write(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn send(&mut self, request: &str, head_only: bool) -> Response {
        self.write(request.as_bytes());
        self.read_response(head_only)
    }

    /// Read a response: the head, then `Content-Length` bytes of body (none after HEAD).
    fn read_response(&mut self, head_only: bool) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.ends_with("\r\n"), "header line without CRLF: {line:?}");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(": ").expect("a header line");
            headers.push((name.to_string(), value.to_string()));
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if !head_only {
            let length: usize = response
                .header("content-length")
                .expect("Content-Length")
                .parse()
                .unwrap();
            response.body = vec![0; length];
            self.reader.read_exact(&mut response.body).unwrap();
        }
        response
    }

    /// Whether the server has closed the connection (after everything read so far).
    fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.reader.read_to_end(&mut rest), Ok(0))
    }
}

#[test]
fn get_serves_listed_files_byte_for_byte_with_their_types() {
    let server = start();
    for (path, content_type) in [
        ("images/n1.raw", "application/octet-stream"),
        ("vmlinuz", "application/octet-stream"),
        ("ipxe/52-54-00-6b-00-01.ipxe", "text/plain"),
        ("nocloud/n1/meta-data", "text/plain"),
        ("empty.txt", "text/plain"),
    ] {
        let response = server.get(&format!("/{path}"), "");
        assert_eq!(response.status, 200, "{path}");
        assert!(response.body == file(path), "{path}: the body differs");
        assert_eq!(
            response.header("Content-Type"),
            Some(content_type),
            "{path}"
        );
        assert_eq!(response.header("Accept-Ranges"), Some("bytes"), "{path}");
        assert_eq!(response.header("Date"), None);
        assert_eq!(response.header("Last-Modified"), None);
    }
    let manifest = server.get("/kiln-tree.json", "");
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.header("Content-Type"), Some("application/json"));
    assert_eq!(
        manifest.body,
        fs_err::read(server.kiln.path("pxe/kiln-tree.json")).unwrap()
    );
    // Percent-encoded paths are decoded.
    let encoded = server.get("/ipxe%2F52-54-00-6b-00-01%2eipxe", "");
    assert_eq!(encoded.status, 200);
    assert_eq!(encoded.body, file("ipxe/52-54-00-6b-00-01.ipxe"));
}

#[test]
fn head_sends_the_headers_without_a_body_and_keeps_the_connection() {
    let server = start();
    let mut connection = server.connect();
    let head = connection.send("HEAD /images/n1.raw HTTP/1.1\r\nHost: test\r\n\r\n", true);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(&*IMAGE_SIZE.to_string())
    );
    assert_eq!(head.header("Accept-Ranges"), Some("bytes"));
    // Had HEAD sent a body, this would read the image's bytes as a status line.
    let get = connection.send(
        "GET /ipxe/52-54-00-6b-00-01.ipxe HTTP/1.1\r\nHost: test\r\n\r\n",
        false,
    );
    assert_eq!(get.status, 200);
    assert_eq!(get.body, file("ipxe/52-54-00-6b-00-01.ipxe"));
    let line = server.log_line("HEAD /images/n1.raw");
    assert!(line.contains(" 200 0 B "), "{line}");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection_and_close_ends_it() {
    let server = start();
    let mut connection = server.connect();
    let first = connection.send("GET /vmlinuz HTTP/1.1\r\nHost: test\r\n\r\n", false);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("Connection"), None);
    // Two requests written at once (pipelined) are answered in order.
    connection.write(
        b"GET /nocloud/n1/meta-data HTTP/1.1\r\nHost: test\r\n\r\n\
          GET /missing HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let second = connection.read_response(false);
    assert_eq!(second.body, file("nocloud/n1/meta-data"));
    assert_eq!(connection.read_response(false).status, 404);
    let last = connection.send(
        "GET /empty.txt HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        false,
    );
    assert_eq!(last.status, 200);
    assert_eq!(last.header("Connection"), Some("close"));
    assert!(connection.is_closed());
    // HTTP/1.0 closes after the response unless asked to keep the connection.
    let mut old = server.connect();
    assert_eq!(
        old.send("GET /empty.txt HTTP/1.0\r\n\r\n", false).status,
        200
    );
    assert!(old.is_closed());
}

#[test]
fn ranges_get_206_with_content_range() {
    let server = start();
    let image = file("images/n1.raw");
    let size = image.len();
    for (range, first, last) in [
        ("bytes=10-19", 10, 19),
        ("bytes=262140-262150", 262_140, 262_150),
        (&format!("bytes={}-", size - 1000), size - 1000, size - 1),
        ("bytes=-7", size - 7, size - 1),
        (&format!("bytes=5-{}", size + 100), 5, size - 1),
    ] {
        let response = server.get("/images/n1.raw", &format!("Range: {range}\r\n"));
        assert_eq!(response.status, 206, "{range}");
        assert_eq!(
            response.header("Content-Range"),
            Some(&*format!("bytes {first}-{last}/{size}")),
            "{range}"
        );
        assert_eq!(
            response.header("Content-Length"),
            Some(&*(last - first + 1).to_string())
        );
        assert!(response.body == image[first..=last], "{range}: wrong bytes");
        assert_eq!(response.header("Accept-Ranges"), Some("bytes"));
    }
    // Several ranges: the whole file, as RFC 9110 allows.
    let several = server.get("/images/n1.raw", "Range: bytes=0-1,5-6\r\n");
    assert_eq!(several.status, 200);
    assert!(several.body == image);
    // An If-Range that does not match the file's ETag: the whole file.
    let stale = server.get(
        "/images/n1.raw",
        "Range: bytes=0-1\r\nIf-Range: \"0000\"\r\n",
    );
    assert_eq!(stale.status, 200);
    let etag = stale.header("ETag").unwrap().to_string();
    let fresh = server.get(
        "/images/n1.raw",
        &format!("Range: bytes=0-1\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!(fresh.status, 206);
}

#[test]
fn an_unsatisfiable_range_gets_416_with_the_size() {
    let server = start();
    let size = IMAGE_SIZE;
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 5, size + 9),
    ] {
        let response = server.get("/images/n1.raw", &format!("Range: {range}\r\n"));
        assert_eq!(response.status, 416, "{range}");
        assert_eq!(
            response.header("Content-Range"),
            Some(&*format!("bytes */{size}"))
        );
    }
    let empty = server.get("/empty.txt", "Range: bytes=0-\r\n");
    assert_eq!(empty.status, 416);
    assert_eq!(empty.header("Content-Range"), Some("bytes */0"));
}

#[test]
fn unlisted_paths_get_404_even_when_the_file_exists() {
    let server = start();
    for path in [
        "/missing",
        "/",
        "/ipxe",
        "/ipxe/",
        "//vmlinuz",
        "/./vmlinuz",
    ] {
        assert_eq!(server.get(path, "").status, 404, "{path}");
    }
    // Put in the root after the tree was verified: not in the manifest, not served.
    fs_err::write(server.kiln.path("pxe/secret.txt"), "secret").unwrap();
    assert_eq!(server.get("/secret.txt", "").status, 404);
}

#[test]
fn traversal_out_of_the_root_gets_404_encoded_or_not() {
    let server = start();
    // A file next to the root that a traversal would reach.
    fs_err::write(server.kiln.path("outside.txt"), "outside").unwrap();
    for target in [
        "/../outside.txt",
        "/ipxe/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/%2E%2E%2Foutside.txt",
        "/ipxe/..%2f..%2foutside.txt",
        "http://test/../outside.txt",
    ] {
        let response = server.get(target, "");
        assert_eq!(response.status, 404, "{target}");
        assert!(!String::from_utf8_lossy(&response.body).contains("outside"));
    }
    let line = server.log_line("GET /../outside.txt");
    assert!(line.contains(" 404 "), "{line}");
}

#[test]
fn methods_other_than_get_and_head_get_405_with_allow() {
    let server = start();
    for request in [
        "POST /vmlinuz HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello",
        "PUT /vmlinuz HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n",
        "DELETE /vmlinuz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    ] {
        let response = server.ask(request);
        assert_eq!(response.status, 405, "{request}");
        assert_eq!(response.header("Allow"), Some("GET, HEAD"));
    }
}

#[test]
fn over_long_request_lines_and_headers_are_refused() {
    let server = start();
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(10_000));
    let response = server.ask(&long_target);
    assert_eq!(response.status, 414);
    assert_eq!(response.header("Connection"), Some("close"));
    let long_header = format!(
        "GET /vmlinuz HTTP/1.1\r\nHost: test\r\nX-Long: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(server.ask(&long_header).status, 431);
    let many = format!(
        "GET /vmlinuz HTTP/1.1\r\n{}\r\n",
        "X-Header: y\r\n".repeat(200)
    );
    assert_eq!(server.ask(&many).status, 431);
    assert_eq!(server.ask("GET /vmlinuz\r\n\r\n").status, 400);
    let line = server.log_line(" 431 ");
    assert!(line.contains("header line too long") || line.contains("too many header lines"));
}

#[test]
fn each_request_gets_a_log_line_with_status_range_bytes_and_time() {
    let server = start();
    server.get("/ipxe/52-54-00-6b-00-01.ipxe", "");
    server.get("/images/n1.raw", "Range: bytes=0-1048575\r\n");
    server.get("/nope", "");
    let whole = server.log_line("GET /ipxe/52-54-00-6b-00-01.ipxe");
    let fields: Vec<&str> = whole.split(' ').collect();
    assert_eq!(fields.len(), 8, "{whole}");
    assert!(fields[0].starts_with("127.0.0.1:"), "{whole}");
    let size = file("ipxe/52-54-00-6b-00-01.ipxe").len().to_string();
    assert_eq!(
        fields[1..6],
        ["GET", "/ipxe/52-54-00-6b-00-01.ipxe", "200", &size, "B"],
        "{whole}"
    );
    assert!(
        fields[6].parse::<f64>().is_ok() && fields[7] == "ms",
        "{whole}"
    );
    let ranged = server.log_line("GET /images/n1.raw");
    assert!(
        ranged.contains(" GET /images/n1.raw 206 bytes=0-1048575 1048576 B "),
        "{ranged}"
    );
    assert!(server.log_line("GET /nope").contains(" GET /nope 404 "));
}

#[test]
fn a_file_that_changed_size_after_the_start_gets_500_not_a_false_length() {
    let server = start();
    let path = server.kiln.path("pxe/vmlinuz");
    fs_err::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"more")
        .unwrap();
    let response = server.get("/vmlinuz", "");
    assert_eq!(response.status, 500);
    let line = server.log_line("GET /vmlinuz");
    assert!(
        line.contains(" 500 ")
            && line.contains("vmlinuz is 70005 bytes, kiln-tree.json says 70001"),
        "{line}"
    );
    // The others are still served.
    assert_eq!(server.get("/nocloud/n1/meta-data", "").status, 200);
}

#[test]
fn curl_fetches_whole_files_and_ranges() {
    let curl = require("curl", "curl");
    let server = start();
    let out = server.kiln.path("fetched");
    let fetch = |args: &[&str]| {
        run(Command::new(&curl)
            .args(["--silent", "--show-error", "--fail", "--output"])
            .arg(&out)
            .args(args));
        fs_err::read(&out).unwrap()
    };
    let url = format!("http://{}/images/n1.raw", server.addr);
    let image = file("images/n1.raw");
    assert!(fetch(&[&url]) == image);
    assert!(fetch(&["--range", "1000-2999", &url]) == image[1000..3000]);
    assert!(fetch(&["--range", "-500", &url]) == image[image.len() - 500..]);
    // Two URLs: curl reuses the connection.
    let kernel = format!("http://{}/vmlinuz", server.addr);
    let output = Command::new(&curl)
        .args(["--silent", "--fail", "--verbose", "--output", "/dev/null"])
        .args([&kernel, &kernel])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Re-using existing"),
        "curl did not reuse the connection:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A port on 127.0.0.1 held by the test, so that kiln cannot bind it.
fn taken_port() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

#[test]
fn a_tree_changed_after_its_manifest_is_refused_before_binding() {
    let kiln = Kiln::new();
    write_tree(&kiln.path("pxe"));
    fs_err::write(
        kiln.path("pxe/ipxe/52-54-00-6b-00-01.ipxe"),
        b"#!ipxe\nkernel /vmlinuX\nboot\n",
    )
    .unwrap();
    // With the port taken, a kiln that bound before verifying would fail with exit 2.
    let (_taken, addr) = taken_port();
    let run = kiln.run_with(&["serve", "--addr", &addr, "--root", "pxe"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains("serving"));
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn a_tree_without_a_manifest_is_refused() {
    let kiln = Kiln::new().file("pxe/vmlinuz", "kernel");
    let (_taken, addr) = taken_port();
    let run = kiln.run_with(&["serve", "--addr", &addr, "--root", "pxe"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn a_port_in_use_is_exit_2_with_a_hint() {
    let kiln = Kiln::new();
    write_tree(&kiln.path("pxe"));
    let (_taken, addr) = taken_port();
    let run = kiln.run_with(&["serve", "--addr", &addr, "--root", "pxe"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let port = addr.rsplit(':').next().unwrap();
    insta::assert_snapshot!(run.stderr.replace(port, "[PORT]"));
}

#[test]
fn serve_help() {
    let run = Kiln::new().args(["serve", "--help"]).run();
    assert_eq!(run.code, 0);
    insta::assert_snapshot!(run.stdout);
}

#[test]
fn the_address_is_required_and_parsed() {
    let kiln = Kiln::new();
    write_tree(&kiln.path("pxe"));
    let missing = kiln.run_with(&["serve", "--root", "pxe"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("--addr <IP:PORT>"),
        "{}",
        missing.stderr
    );
    let bad = kiln.run_with(&["serve", "--addr", "localhost:80", "--root", "pxe"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("invalid socket address"),
        "{}",
        bad.stderr
    );
}

#[test]
fn without_root_or_profile_it_asks_for_root() {
    let run = Kiln::new().run_with(&["serve", "--addr", "127.0.0.1:0"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn the_default_root_is_the_profile_clusters_pxe_tree() {
    let kiln = Kiln::new();
    kiln.copy_profile("demo");
    write_tree(&kiln.path("out/demo/pxe"));
    let server = Server::start_in(
        kiln,
        &[
            "--profile",
            "profiles/demo",
            "serve",
            "--addr",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(
        server.start_line,
        format!(
            "serving out/demo/pxe (5 files, verified) on http://{}/",
            server.addr
        )
    );
    assert_eq!(server.get("/vmlinuz", "").body, file("vmlinuz"));
}
