//! Downloads against a test HTTP/1.1 server on 127.0.0.1 that can truncate, drop, stall,
//! corrupt, fail, or ignore ranges, one behaviour per request, and records every request.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::http_server::{content, Delivery, Reply, TestServer};

use kiln::fetch::http::{FetchError, FetchOptions, Fetched, HttpClient};
use kiln::store::{Digest, Store, StoreError};

/// Options for tests: few attempts, short waits.
fn quick() -> FetchOptions {
    FetchOptions {
        attempts: 4,
        connect_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_secs(2),
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
    }
}

/// A store of its own in a temp dir.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let store = Store::open(&root).expect("open store");
    Fixture {
        _dir: dir,
        root,
        store,
    }
}

impl Fixture {
    /// Every file in the store's `blobs/` and `tmp/`, relative to the root.
    fn files(&self) -> Vec<String> {
        let mut files = Vec::new();
        let mut directories = vec![self.root.join("blobs"), self.root.join("tmp")];
        while let Some(directory) = directories.pop() {
            for entry in fs_err::read_dir(&directory).expect("read store directory") {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    directories.push(path);
                } else {
                    let relative = path.strip_prefix(&self.root).unwrap();
                    files.push(relative.display().to_string());
                }
            }
        }
        files.sort();
        files
    }

    fn fetch(
        &self,
        client: &HttpClient,
        url: &str,
        digest: &Digest,
        size: Option<usize>,
    ) -> Result<Fetched, FetchError> {
        let size = size.map(|size| size as u64);
        client.fetch_blob(&self.store, url, digest, size, &[], &mut |_, _| {})
    }

    /// Leave a partial in the store, as a stopped kiln would.
    fn partial(&self, digest: &Digest, bytes: &[u8]) {
        let mut writer = self.store.begin_blob(digest).expect("begin blob");
        writer.write_all(bytes).expect("write partial");
        writer.suspend();
    }

    fn assert_blob(&self, fetched: &Fetched, expected: &[u8]) {
        let digest = Digest::of_bytes(expected);
        assert!(self.store.has_blob(&digest), "the blob is in the store");
        assert_eq!(fetched.path, self.store.blob_path(&digest));
        let stored = fs_err::read(&fetched.path).expect("read blob");
        assert!(stored == expected, "the stored bytes are the served bytes");
        assert_eq!(
            self.files(),
            [format!("blobs/sha256/{}", digest.hex())],
            "nothing but the blob is left"
        );
    }
}

fn assert_nothing_stored(fixture: &Fixture, digest: &Digest) {
    assert!(!fixture.store.has_blob(digest));
    assert_eq!(
        fixture.files(),
        Vec::<String>::new(),
        "no blob and no partial"
    );
}

const SIZE: usize = 300_000;

#[test]
fn a_blob_is_downloaded_and_verified() {
    let body = content(SIZE, 1);
    let digest = Digest::of_bytes(&body);
    let server = TestServer::serving(&body);
    let fixture = fixture();
    let client = HttpClient::new(quick());

    let mut seen = Vec::new();
    let fetched = client
        .fetch_blob(
            &fixture.store,
            &server.url("/blob"),
            &digest,
            Some(SIZE as u64),
            &[("X-Test".to_owned(), "yes".to_owned())],
            &mut |done, total| seen.push((done, total)),
        )
        .expect("fetch");

    fixture.assert_blob(&fetched, &body);
    assert!(!fetched.already_present);
    assert_eq!(fetched.attempts, 1);
    assert_eq!(fetched.bytes_downloaded, SIZE as u64);
    assert_eq!(fetched.resumed_from, 0);
    assert_eq!(seen.first(), Some(&(0, Some(SIZE as u64))));
    assert_eq!(seen.last(), Some(&(SIZE as u64, Some(SIZE as u64))));
    assert!(
        seen.windows(2).all(|pair| pair[0].0 <= pair[1].0),
        "progress only grows: {seen:?}"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].line, "GET /blob HTTP/1.1");
    assert_eq!(requests[0].range, None);
    assert_eq!(requests[0].header("x-test"), Some("yes"));
    assert_eq!(requests[0].header("accept-encoding"), Some("identity"));
}

#[test]
fn a_blob_already_in_the_store_is_not_requested() {
    let body = content(1000, 2);
    let digest = Digest::of_bytes(&body);
    let fixture = fixture();
    let mut writer = fixture.store.begin_blob(&digest).expect("begin");
    writer.write_all(&body).expect("write");
    writer.commit(Some(1000)).expect("commit");
    let server = TestServer::start(|_, _| Reply::status(500));

    let fetched = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &digest,
            None,
        )
        .expect("fetch");

    assert!(fetched.already_present);
    assert_eq!((fetched.attempts, fetched.bytes_downloaded), (0, 0));
    fixture.assert_blob(&fetched, &body);
    assert!(server.requests().is_empty(), "no request was made");
}

#[test]
fn a_truncated_body_is_resumed_with_a_range_request() {
    let body = content(SIZE, 3);
    let half = SIZE / 2;
    let server = {
        let body = body.clone();
        TestServer::start(move |index, request| match index {
            0 => Reply::whole(&body).delivered(Delivery::CloseAfter(half)),
            _ => Reply::honouring_range(&body, request),
        })
    };
    let fixture = fixture();

    let fetched = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &Digest::of_bytes(&body),
            Some(SIZE),
        )
        .expect("fetch");

    fixture.assert_blob(&fetched, &body);
    assert_eq!(server.ranges(), [None, Some(format!("bytes={half}-"))]);
    assert_eq!(fetched.attempts, 2);
    assert_eq!(
        fetched.bytes_downloaded, SIZE as u64,
        "no byte was downloaded twice"
    );
}

#[test]
fn a_dropped_connection_resumes_from_the_exact_byte_received() {
    let body = content(SIZE, 4);
    // Not a multiple of any buffer size, and in the middle of the one chunk.
    let received = 100_003;
    let server = {
        let body = body.clone();
        TestServer::start(move |index, request| match index {
            0 => Reply::whole(&body).delivered(Delivery::ChunkedCutAfter(received)),
            _ => Reply::honouring_range(&body, request),
        })
    };
    let fixture = fixture();

    // No size given: only the broken chunked framing says the body is incomplete.
    let fetched = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &Digest::of_bytes(&body),
            None,
        )
        .expect("fetch");

    fixture.assert_blob(&fetched, &body);
    assert_eq!(server.ranges(), [None, Some(format!("bytes={received}-"))]);
    assert_eq!(fetched.bytes_downloaded, SIZE as u64);
}

#[test]
fn an_unframed_body_cut_short_is_resumed_when_the_size_is_pinned() {
    // Without Content-Length or chunks, a closed connection looks like the end of the body;
    // only the pinned size tells that bytes are missing.
    let body = content(SIZE, 5);
    let received = 77_777;
    let server = {
        let body = body.clone();
        TestServer::start(move |index, request| match index {
            0 => Reply::whole(&body).delivered(Delivery::UnframedCutAfter(received)),
            _ => Reply::honouring_range(&body, request),
        })
    };
    let fixture = fixture();

    let fetched = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &Digest::of_bytes(&body),
            Some(SIZE),
        )
        .expect("fetch");

    fixture.assert_blob(&fetched, &body);
    assert_eq!(server.ranges(), [None, Some(format!("bytes={received}-"))]);
}

#[test]
fn wrong_bytes_are_a_mismatch_and_leave_nothing_in_the_store() {
    let pinned = content(SIZE, 6);
    let served = content(SIZE, 7);
    let digest = Digest::of_bytes(&pinned);
    let server = TestServer::serving(&served);
    let fixture = fixture();
    let url = server.url("/blob");

    let error = fixture
        .fetch(&HttpClient::new(quick()), &url, &digest, Some(SIZE))
        .expect_err("wrong bytes must fail");

    match &error {
        FetchError::Mismatch {
            url: failed,
            error: StoreError::DigestMismatch { actual, .. },
        } => {
            assert_eq!(failed, &url);
            assert_eq!(actual, &Digest::of_bytes(&served));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&url),
        "the message names the URL: {message}"
    );
    assert_nothing_stored(&fixture, &digest);
    assert_eq!(
        server.requests().len(),
        1,
        "a download from byte 0 that mismatches is not retried"
    );
}

#[test]
fn a_corrupt_partial_from_an_earlier_run_is_downloaded_again_from_byte_zero() {
    let body = content(SIZE, 8);
    let digest = Digest::of_bytes(&body);
    let fixture = fixture();
    fixture.partial(&digest, &content(1000, 9));
    let server = TestServer::serving(&body);

    let fetched = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &digest,
            Some(SIZE),
        )
        .expect("fetch");

    fixture.assert_blob(&fetched, &body);
    assert_eq!(fetched.resumed_from, 1000);
    assert_eq!(server.ranges(), [Some("bytes=1000-".to_owned()), None]);
    assert_eq!(fetched.bytes_downloaded, (SIZE - 1000 + SIZE) as u64);
}

#[test]
fn a_mismatch_after_starting_again_from_byte_zero_is_final() {
    let pinned = content(SIZE, 18);
    let digest = Digest::of_bytes(&pinned);
    let fixture = fixture();
    fixture.partial(&digest, &pinned[..1000]);
    let server = TestServer::serving(&content(SIZE, 19));

    let error = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &digest,
            Some(SIZE),
        )
        .expect_err("the server has other bytes");

    assert!(matches!(error, FetchError::Mismatch { .. }), "{error:?}");
    assert_eq!(server.ranges(), [Some("bytes=1000-".to_owned()), None]);
    assert_nothing_stored(&fixture, &digest);
}

#[test]
fn a_complete_partial_is_verified_without_a_request() {
    let body = content(5000, 10);
    let digest = Digest::of_bytes(&body);
    let fixture = fixture();
    fixture.partial(&digest, &body);
    let server = TestServer::start(|_, _| Reply::status(500));

    let fetched = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &digest,
            Some(5000),
        )
        .expect("fetch");

    fixture.assert_blob(&fetched, &body);
    assert_eq!(fetched.resumed_from, 5000);
    assert!(server.requests().is_empty());
}

#[test]
fn a_server_error_is_retried() {
    let body = content(SIZE, 11);
    let server = {
        let body = body.clone();
        TestServer::start(move |index, request| match index {
            0 => Reply::status(500),
            _ => Reply::honouring_range(&body, request),
        })
    };
    let fixture = fixture();

    let fetched = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &Digest::of_bytes(&body),
            Some(SIZE),
        )
        .expect("fetch");

    fixture.assert_blob(&fetched, &body);
    assert_eq!(fetched.attempts, 2);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn too_many_requests_waits_as_long_as_retry_after_says_up_to_the_cap() {
    let body = content(1000, 12);
    let server = {
        let body = body.clone();
        TestServer::start(move |index, request| match index {
            0 => Reply::status(429).header("Retry-After", "5"),
            _ => Reply::honouring_range(&body, request),
        })
    };
    let fixture = fixture();
    let options = FetchOptions {
        max_backoff: Duration::from_millis(400),
        ..quick()
    };

    fixture
        .fetch(
            &HttpClient::new(options),
            &server.url("/blob"),
            &Digest::of_bytes(&body),
            None,
        )
        .expect("fetch");

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    // The backoff alone is 1 ms; Retry-After (5 s) is honoured up to the 400 ms cap.
    assert!(
        waited >= Duration::from_millis(350),
        "waited only {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "waited {waited:?}, past the cap"
    );
}

#[test]
fn not_found_fails_at_once_without_retrying() {
    let server = TestServer::start(|_, _| Reply::status(404));
    let fixture = fixture();
    let url = server.url("/missing.deb");
    let digest = Digest::of_bytes(b"anything");

    let error = fixture
        .fetch(&HttpClient::new(quick()), &url, &digest, None)
        .expect_err("404 must fail");

    assert!(
        matches!(&error, FetchError::ClientError { url: failed, status: 404 } if *failed == url),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&url) && message.contains("404 Not Found"),
        "{message}"
    );
    assert_eq!(server.requests().len(), 1);
    assert!(!fixture.store.has_blob(&digest));
}

#[test]
fn unauthorized_carries_the_challenge_for_the_token_flow() {
    let challenge = r#"Bearer realm="http://127.0.0.1/token",service="registry""#;
    let server =
        TestServer::start(move |_, _| Reply::status(401).header("WWW-Authenticate", challenge));
    let fixture = fixture();

    let error = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/v2/library/x/blobs/sha256:00"),
            &Digest::of_bytes(b"x"),
            None,
        )
        .expect_err("401 must fail");

    match error {
        FetchError::Unauthorized {
            www_authenticate, ..
        } => assert_eq!(www_authenticate.as_deref(), Some(challenge)),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_stalled_download_is_dropped_and_resumed() {
    let body = content(SIZE, 13);
    let half = SIZE / 2;
    let server = {
        let body = body.clone();
        TestServer::start(move |index, request| match index {
            0 => Reply::whole(&body).delivered(Delivery::StallAfter(half)),
            _ => Reply::honouring_range(&body, request),
        })
    };
    let fixture = fixture();
    let options = FetchOptions {
        stall_timeout: Duration::from_millis(300),
        ..quick()
    };
    let started = Instant::now();

    let fetched = fixture
        .fetch(
            &HttpClient::new(options),
            &server.url("/blob"),
            &Digest::of_bytes(&body),
            Some(SIZE),
        )
        .expect("fetch");

    fixture.assert_blob(&fetched, &body);
    assert_eq!(server.ranges(), [None, Some(format!("bytes={half}-"))]);
    let requests = server.requests();
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(300),
        "the stall timeout was waited out: {waited:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_server_that_ignores_range_still_gives_the_right_blob() {
    let body = content(SIZE, 14);
    let half = SIZE / 2;
    let server = {
        let body = body.clone();
        TestServer::start(move |index, _| match index {
            0 => Reply::whole(&body).delivered(Delivery::CloseAfter(half)),
            _ => Reply::whole(&body),
        })
    };
    let fixture = fixture();

    let fetched = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &Digest::of_bytes(&body),
            Some(SIZE),
        )
        .expect("fetch");

    fixture.assert_blob(&fetched, &body);
    assert_eq!(server.ranges(), [None, Some(format!("bytes={half}-"))]);
    assert_eq!(fetched.bytes_downloaded, (half + SIZE) as u64);
}

#[test]
fn range_not_satisfiable_starts_again_without_range() {
    let body = content(SIZE, 15);
    let digest = Digest::of_bytes(&body);
    let fixture = fixture();
    fixture.partial(&digest, &body[..5000]);
    let server = {
        let body = body.clone();
        TestServer::start(move |_, request| match request.range {
            Some(_) => Reply::status(416),
            None => Reply::whole(&body),
        })
    };

    let fetched = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &digest,
            None,
        )
        .expect("fetch");

    fixture.assert_blob(&fetched, &body);
    assert_eq!(server.ranges(), [Some("bytes=5000-".to_owned()), None]);
}

#[test]
fn a_server_that_keeps_failing_is_given_up_on() {
    let server = TestServer::start(|_, _| Reply::status(503));
    let fixture = fixture();
    let url = server.url("/blob");
    let options = FetchOptions {
        attempts: 3,
        ..quick()
    };

    let error = fixture
        .fetch(
            &HttpClient::new(options),
            &url,
            &Digest::of_bytes(b"x"),
            None,
        )
        .expect_err("must give up");

    match &error {
        FetchError::GaveUp {
            url: failed,
            attempts,
            last,
        } => {
            assert_eq!(failed, &url);
            assert_eq!(*attempts, 3);
            assert!(last.contains("503 Service Unavailable"), "{last}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&url) && message.contains("after 3 attempts"),
        "{message}"
    );
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_partial_is_kept_when_kiln_gives_up_and_resumed_next_time() {
    let body = content(SIZE, 20);
    let digest = Digest::of_bytes(&body);
    let half = SIZE / 2;
    let server = {
        let body = body.clone();
        TestServer::start(move |index, request| match index {
            0 => Reply::whole(&body).delivered(Delivery::CloseAfter(half)),
            1 => Reply::status(503),
            _ => Reply::honouring_range(&body, request),
        })
    };
    let fixture = fixture();
    let options = FetchOptions {
        attempts: 2,
        ..quick()
    };

    let error = fixture
        .fetch(
            &HttpClient::new(options),
            &server.url("/blob"),
            &digest,
            Some(SIZE),
        )
        .expect_err("two attempts are not enough");
    assert!(
        matches!(error, FetchError::GaveUp { attempts: 2, .. }),
        "{error:?}"
    );
    assert_eq!(fixture.files(), [format!("tmp/{}.partial", digest.hex())]);

    let fetched = fixture
        .fetch(
            &HttpClient::new(quick()),
            &server.url("/blob"),
            &digest,
            Some(SIZE),
        )
        .expect("the next run resumes");
    fixture.assert_blob(&fetched, &body);
    assert_eq!(fetched.resumed_from, half as u64);
    assert_eq!(fetched.bytes_downloaded, (SIZE - half) as u64);
    assert_eq!(server.ranges()[2], Some(format!("bytes={half}-")));
}

#[test]
fn a_size_different_from_the_pin_is_a_mismatch() {
    let body = content(SIZE, 16);
    let digest = Digest::of_bytes(&body);
    let server = TestServer::serving(&body);
    let client = HttpClient::new(quick());

    for pinned in [SIZE + 1, SIZE - 1] {
        let fixture = fixture();
        let error = fixture
            .fetch(&client, &server.url("/blob"), &digest, Some(pinned))
            .expect_err("a size other than the pin must fail");
        match &error {
            FetchError::Mismatch {
                error: StoreError::SizeMismatch { expected, .. },
                ..
            } => assert_eq!(*expected, pinned as u64),
            other => panic!("pinned {pinned}: expected a size mismatch, got {other:?}"),
        }
        assert_nothing_stored(&fixture, &digest);
    }
    // One request for each: a fresh download of the wrong size is not retried.
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_small_document_comes_back_with_its_headers() {
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    let server = TestServer::start(move |index, _| match index {
        0 => Reply::status(502),
        _ => Reply::whole(b"{\"schemaVersion\":2}")
            .header("Content-Type", media_type)
            .header("Docker-Content-Digest", "sha256:abc"),
    });
    let url = server.url("/v2/x/manifests/1");

    let response = HttpClient::new(quick())
        .get_small(&url, &[("Accept".to_owned(), media_type.to_owned())], 1024)
        .expect("get");

    assert_eq!(response.status, 200);
    assert_eq!(response.url, url);
    assert_eq!(response.body, b"{\"schemaVersion\":2}");
    assert_eq!(response.content_type(), Some(media_type));
    assert_eq!(response.docker_content_digest(), Some("sha256:abc"));
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "the 502 was retried");
    assert_eq!(requests[1].header("accept"), Some(media_type));
}

#[test]
fn a_small_document_over_the_limit_is_refused() {
    let big = content(10_000, 17);
    let server = {
        let big = big.clone();
        TestServer::start(move |index, _| match index {
            0 => Reply::whole(&big),
            _ => Reply::whole(&big).delivered(Delivery::ChunkedCutAfter(big.len())),
        })
    };
    let client = HttpClient::new(quick());

    // First with a Content-Length, then without one.
    for _ in 0..2 {
        let error = client
            .get_small(&server.url("/index.yaml"), &[], 1000)
            .expect_err("over the limit");
        assert!(
            matches!(error, FetchError::TooLarge { limit: 1000, .. }),
            "{error:?}"
        );
    }
    assert_eq!(server.requests().len(), 2, "not retried");
}

#[test]
fn a_refused_connection_is_retried_then_given_up_on() {
    // A port that was just free: nothing listens there.
    let address = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let fixture = fixture();
    let url = format!("http://{address}/blob");
    let digest = Digest::of_bytes(b"x");

    let error = fixture
        .fetch(&HttpClient::new(quick()), &url, &digest, None)
        .expect_err("nothing listens");

    assert!(
        matches!(&error, FetchError::GaveUp { attempts: 4, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&url), "{error}");
    assert!(!fixture.store.has_blob(&digest));
}

#[test]
fn an_unpinned_download_is_retried_from_byte_zero_and_stored_under_its_digest() {
    let body = content(SIZE, 21);
    let server = {
        let body = body.clone();
        TestServer::start(move |index, _| match index {
            0 => Reply::whole(&body).delivered(Delivery::CloseAfter(SIZE / 3)),
            1 => Reply::status(500),
            _ => Reply::whole(&body),
        })
    };
    let fixture = fixture();

    let (digest, size) = HttpClient::new(quick())
        .download_unpinned(&fixture.store, &server.url("/chart.tgz"))
        .expect("download");

    assert_eq!(
        digest,
        Digest::of_bytes(&body),
        "not the digest of a cut-off body"
    );
    assert_eq!(size, SIZE as u64);
    assert_eq!(
        fixture.files(),
        [format!("blobs/sha256/{}", digest.hex())],
        "no temp file is left"
    );
    assert_eq!(server.ranges(), [None, None, None]);
}

#[test]
fn an_unpinned_download_that_is_not_there_stores_nothing() {
    let server = TestServer::start(|_, _| Reply::status(404));
    let fixture = fixture();

    let error = HttpClient::new(quick())
        .download_unpinned(&fixture.store, &server.url("/chart.tgz"))
        .expect_err("404");

    assert!(
        matches!(error, FetchError::ClientError { status: 404, .. }),
        "{error:?}"
    );
    assert_eq!(fixture.files(), Vec::<String>::new());
    assert_eq!(server.requests().len(), 1);
}
