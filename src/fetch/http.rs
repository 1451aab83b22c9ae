//! HTTP(S) downloads: one artifact by URL into the store, resumed, retried and verified;
//! small documents (a chart repository's `index.yaml`, an OCI manifest) into memory; and,
//! for `kiln lock`, the first download of a file that has no pin yet.
//!
//! Why not just `GET` and write the body: a multi-GB artifact over a flaky link must survive
//! a dropped connection, a stalled server and a stopped kiln without starting again (Zarf,
//! Hauler and Kubespray's download role all start again from byte 0), and no byte may
//! become a blob unless the whole blob hashes to its pin. So:
//!
//! - A blob already in the store is returned without a request.
//! - The bytes go into the store's partial file for the pinned digest
//!   ([`Store::begin_blob`]); if one is there from an earlier attempt or an earlier run, it
//!   is continued with `Range: bytes=<offset>-`. A server that ignores the range (`200`)
//!   or cannot satisfy it (`416`) is handled by starting again from byte 0.
//! - The body is streamed in 64 KiB chunks, hashed and written in one pass, so memory stays
//!   bounded whatever the size of the artifact.
//! - A dropped connection, a body shorter than announced, a stall (no byte for
//!   [`FetchOptions::stall_timeout`]), a 5xx, a 408 or a 429 is retried with exponential
//!   backoff (honouring `Retry-After`); any other 4xx fails at once, since asking again
//!   cannot help.
//! - The store checks size and digest before the blob gets its name. When the bytes that
//!   failed were stitched together from a resumed partial, the partial itself may be the
//!   culprit (left by an earlier download from a broken mirror), so the download runs once
//!   more from byte 0 before kiln calls it a mismatch.
//!
//! Statuses are interpreted here rather than turned into errors by ureq, because each one
//! means something different for a resumable download.

use std::io::{self, Read};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use ureq::ResponseExt;

use crate::store::{BlobWriter, Digest, Store, StoreError};

/// The size of one read from the network and one write into the store.
const CHUNK_SIZE: usize = 64 * 1024;

/// How hard to try, and how long to wait for a server.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Requests made for one URL before giving up, counting the first. At least 1 is made.
    pub attempts: u32,
    /// Time allowed to open a connection (and finish the TLS handshake).
    pub connect_timeout: Duration,
    /// A connection that delivers no byte for this long is treated as dropped: kiln stops
    /// waiting for it and resumes on a new connection.
    pub stall_timeout: Duration,
    /// The wait before the first retry; it doubles for every further retry.
    pub backoff: Duration,
    /// The longest wait between two attempts, whatever the backoff or the server's
    /// `Retry-After` say.
    pub max_backoff: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            attempts: 5,
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl FetchOptions {
    /// The wait before retry number `retry` (0 for the first retry).
    fn backoff_delay(&self, retry: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_backoff)
    }
}

/// An HTTP client for downloads, with kiln's timeouts and retry rules. One client serves
/// any number of threads (it pools connections).
pub struct HttpClient {
    agent: ureq::Agent,
    options: FetchOptions,
}

/// What [`HttpClient::fetch_blob`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The blob in the store.
    pub path: PathBuf,
    /// Body bytes received over the network in this call, over all attempts.
    pub bytes_downloaded: u64,
    /// The size of the partial download found in the store when this call began (0 if none).
    pub resumed_from: u64,
    /// Requests made.
    pub attempts: u32,
    /// The blob was already in the store; nothing was requested.
    pub already_present: bool,
}

/// A small document fetched into memory by [`HttpClient::get_small`].
#[derive(Debug, Clone)]
pub struct SmallResponse {
    /// The URL that answered, after redirects.
    pub url: String,
    /// The status, always a 2xx.
    pub status: u16,
    /// The response headers, names in lower case, in the order the server sent them.
    pub headers: Vec<(String, String)>,
    /// The body, at most the limit the caller gave.
    pub body: Vec<u8>,
}

impl SmallResponse {
    /// The first value of the header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// `Content-Type`, e.g. the media type of an OCI manifest.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// `Docker-Content-Digest`: the digest a registry says the manifest has.
    pub fn docker_content_digest(&self) -> Option<&str> {
        self.header("docker-content-digest")
    }
}

/// Why a download failed. Every message names the URL and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A 4xx other than 401, 408, 416 and 429: the request itself is wrong, so it is not
    /// retried.
    #[error("{url} answered {status} {reason}: {hint}", reason = status_reason(*.status), hint = client_error_hint(*.status))]
    ClientError { url: String, status: u16 },

    /// 401: the server wants credentials. The OCI layer answers this with the bearer-token
    /// flow that `www_authenticate` describes.
    #[error(
        "{url} answered 401 Unauthorized{}: give kiln credentials for this server",
        .www_authenticate.as_deref().map(|challenge| format!(" (WWW-Authenticate: {challenge})")).unwrap_or_default()
    )]
    Unauthorized {
        url: String,
        www_authenticate: Option<String>,
    },

    /// Every attempt failed with a problem worth retrying (network, stall, 5xx, 429).
    #[error(
        "gave up on {url} after {attempts} attempt{plural}; the last problem: {last}. Check \
         the network and the server, then run kiln again (a partial download is kept and \
         resumes where it stopped)",
        plural = if *.attempts == 1 { "" } else { "s" }
    )]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },

    /// The bytes did not match the pinned digest or size (`error` is the store's
    /// `DigestMismatch` or `SizeMismatch`). Nothing was stored.
    #[error("{url}: {error}")]
    Mismatch { url: String, error: StoreError },

    /// The store could not take the bytes (disk full, permissions, another kiln downloading
    /// the same blob).
    #[error(transparent)]
    Store(StoreError),

    /// A small document was larger than the caller's limit.
    #[error(
        "{url} sent more than {limit} bytes for a document kiln expects to be small; check \
         that the URL points at the document"
    )]
    TooLarge { url: String, limit: u64 },

    /// A status that is neither success nor a known failure (a 1xx, a 3xx that was not
    /// followed, a 2xx other than 200 and 206 for a download).
    #[error(
        "{url} answered {status} {reason}, which kiln cannot use for a download; check the URL",
        reason = status_reason(*.status)
    )]
    UnexpectedStatus { url: String, status: u16 },

    /// The request could not be made and retrying cannot help: a malformed URL or header, a
    /// TLS failure, a redirect loop.
    #[error("cannot fetch {url}: {error}")]
    Request { url: String, error: ureq::Error },

    /// A local file operation around a download failed (e.g. reading a fetched blob). The
    /// message, from fs-err, names the file.
    #[error(transparent)]
    Io(io::Error),
}

impl FetchError {
    /// A local file error, for callers whose errors are `FetchError`s. Use fs-err, so the
    /// message names the file.
    pub fn from_io(error: io::Error) -> FetchError {
        FetchError::Io(error)
    }

    fn store(error: StoreError) -> Failure {
        Failure::Fatal(FetchError::Store(error))
    }
}

/// The outcome of one failed attempt.
enum Failure {
    /// Try again (if attempts remain).
    Retry { problem: String, wait: Wait },
    /// Stop now.
    Fatal(FetchError),
}

/// When to make the next attempt.
enum Wait {
    /// At once: the previous answer told us how to ask differently.
    Now,
    /// After the backoff delay, or after `Retry-After` if the server sent one (both capped
    /// at [`FetchOptions::max_backoff`]).
    Backoff { retry_after: Option<Duration> },
}

/// Attempts made for one URL within one call, shared by all its passes.
struct Attempts {
    used: u32,
    limit: u32,
    delays: u32,
    wait: Option<Duration>,
    last: String,
}

impl HttpClient {
    /// A client with these timeouts and retry rules.
    pub fn new(options: FetchOptions) -> HttpClient {
        let agent = ureq::Agent::config_builder()
            // Statuses are ours to interpret: a 416 or a 503 is not an error here.
            .http_status_as_error(false)
            .timeout_connect(Some(options.connect_timeout))
            // Restarts for every read, so it limits a stall, not the length of a download.
            .timeout_per_read(Some(options.stall_timeout))
            .timeout_per_write(Some(options.stall_timeout))
            // ureq would otherwise ask for gzip and decompress, and the bytes hashed would no
            // longer be the bytes the pin names (nor could a range of them be resumed).
            .accept_encoding("identity")
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        HttpClient { agent, options }
    }

    /// Fetch `url` into the store as blob `expected` unless it is already there.
    ///
    /// `headers` are added to every request (e.g. OCI `Accept` and `Authorization`; ureq
    /// drops `Authorization` when a redirect leads elsewhere). `expected_size`, when known,
    /// is checked by the store, stops a longer body early, and tells a connection closed
    /// early from a complete body when the server announces no length.
    /// `progress(bytes_so_far, total)` is called as bytes arrive; `bytes_so_far` counts
    /// from the start of the blob, so it starts at the resumed offset and goes back to 0 if
    /// kiln has to start again.
    pub fn fetch_blob(
        &self,
        store: &Store,
        url: &str,
        expected: &Digest,
        expected_size: Option<u64>,
        headers: &[(String, String)],
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<Fetched, FetchError> {
        if store.has_blob(expected) {
            return Ok(Fetched {
                path: store.blob_path(expected),
                bytes_downloaded: 0,
                resumed_from: 0,
                attempts: 0,
                already_present: true,
            });
        }
        let mut writer = store.begin_blob(expected).map_err(FetchError::Store)?;
        let resumed_from = writer.offset();
        let mut attempts = self.attempts();
        let mut bytes_downloaded = 0;
        let mut started_again = false;
        loop {
            let download = self.download(
                &mut writer,
                &mut attempts,
                url,
                expected_size,
                headers,
                progress,
                &mut bytes_downloaded,
            );
            let stitched = match download {
                Ok(stitched) => stitched,
                Err(error) => {
                    // Keep what arrived: the next run (or another mirror) resumes from it.
                    writer.suspend();
                    return Err(error);
                }
            };
            match writer.commit(expected_size) {
                Ok(path) => {
                    return Ok(Fetched {
                        path,
                        bytes_downloaded,
                        resumed_from,
                        attempts: attempts.used,
                        already_present: false,
                    })
                }
                Err(error @ StoreError::DigestMismatch { .. }) if stitched && !started_again => {
                    // The store deleted the partial. Its first part came from an earlier
                    // response, maybe a broken one: one clean download decides.
                    started_again = true;
                    attempts.last = format!("{error} (after resuming; started again from 0)");
                    attempts.limit = attempts.limit.max(attempts.used + 1);
                    writer = store.begin_blob(expected).map_err(FetchError::Store)?;
                    if writer.offset() > 0 {
                        writer.restart().map_err(FetchError::Store)?;
                    }
                }
                Err(
                    error @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. }),
                ) => {
                    return Err(FetchError::Mismatch {
                        url: url.to_owned(),
                        error,
                    })
                }
                Err(error) => return Err(FetchError::Store(error)),
            }
        }
    }

    /// A small document into memory: at most `limit` bytes of a 2xx body, with the same
    /// retry rules as [`HttpClient::fetch_blob`]. `headers` are added to the request.
    pub fn get_small(
        &self,
        url: &str,
        headers: &[(String, String)],
        limit: u64,
    ) -> Result<SmallResponse, FetchError> {
        let mut attempts = self.attempts();
        self.retrying(url, &mut attempts, || {
            self.get_small_once(url, headers, limit)
        })
    }

    /// Download `url`, whose digest is not known yet, into the store; returns the digest
    /// and the size. This is trust on first use, for `kiln lock` pinning a file or a chart
    /// for the first time; everything later is fetched by that pin with
    /// [`HttpClient::fetch_blob`]. Same retry rules, but no resume: without a digest there
    /// is no partial to continue. A body that announces its length (or is chunked) and ends
    /// early is retried; one delimited only by the end of the connection cannot be told from
    /// a complete one, and `kiln fetch` later verifies against what was pinned here.
    pub fn download_unpinned(&self, store: &Store, url: &str) -> Result<(Digest, u64), FetchError> {
        let mut attempts = self.attempts();
        self.retrying(url, &mut attempts, || {
            let response = self.send(url, &[], None)?;
            let status = response.status().as_u16();
            if status != 200 {
                check_status(url, &response)?;
                return Err(Failure::Fatal(FetchError::UnexpectedStatus {
                    url: url.to_owned(),
                    status,
                }));
            }
            let mut body = Counted {
                inner: response.into_body().into_with_config().reader(),
                count: 0,
            };
            match store.add_blob(&mut body) {
                Ok(digest) => Ok((digest, body.count)),
                Err(StoreError::Source { error, .. }) => Err(retry_after_backoff(
                    self.read_problem(&error, body.count),
                    None,
                )),
                Err(error) => Err(FetchError::store(error)),
            }
        })
    }

    fn attempts(&self) -> Attempts {
        Attempts {
            used: 0,
            limit: self.options.attempts.max(1),
            delays: 0,
            wait: None,
            last: String::new(),
        }
    }

    /// Runs `once` until it succeeds, fails for good, or the attempts run out.
    fn retrying<T>(
        &self,
        url: &str,
        attempts: &mut Attempts,
        mut once: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, FetchError> {
        loop {
            if attempts.used >= attempts.limit {
                return Err(FetchError::GaveUp {
                    url: url.to_owned(),
                    attempts: attempts.used,
                    last: std::mem::take(&mut attempts.last),
                });
            }
            if let Some(wait) = attempts.wait.take() {
                thread::sleep(wait);
            }
            attempts.used += 1;
            match once() {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry { problem, wait }) => {
                    attempts.last = problem;
                    attempts.wait = match wait {
                        Wait::Now => None,
                        Wait::Backoff { retry_after } => {
                            let delay = self.options.backoff_delay(attempts.delays);
                            attempts.delays += 1;
                            let delay = retry_after.map_or(delay, |after| after.max(delay));
                            Some(delay.min(self.options.max_backoff))
                        }
                    };
                }
            }
        }
    }

    /// Downloads into `writer` until the body is complete. Returns whether the bytes were
    /// stitched together from more than one response (or taken from an earlier run).
    #[allow(clippy::too_many_arguments)] // One private call site; a struct would only rename them.
    fn download(
        &self,
        writer: &mut BlobWriter,
        attempts: &mut Attempts,
        url: &str,
        expected_size: Option<u64>,
        headers: &[(String, String)],
        progress: &mut dyn FnMut(u64, Option<u64>),
        bytes_downloaded: &mut u64,
    ) -> Result<bool, FetchError> {
        if let Some(size) = expected_size {
            if writer.offset() == size {
                // An earlier run got every byte and was stopped before the commit (or the
                // blob is empty): let the store verify it without asking the server.
                return Ok(size > 0);
            }
            if writer.offset() > size {
                writer.restart().map_err(FetchError::Store)?;
            }
        }
        self.retrying(url, attempts, || {
            self.download_once(
                writer,
                url,
                expected_size,
                headers,
                progress,
                bytes_downloaded,
            )
        })
    }

    /// One request for the rest of the blob. Returns whether the body continued a partial.
    fn download_once(
        &self,
        writer: &mut BlobWriter,
        url: &str,
        expected_size: Option<u64>,
        headers: &[(String, String)],
        progress: &mut dyn FnMut(u64, Option<u64>),
        bytes_downloaded: &mut u64,
    ) -> Result<bool, Failure> {
        let offset = writer.offset();
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let response = self.send(url, headers, range.as_deref())?;
        let status = response.status().as_u16();
        let content_range = header(&response, "content-range");
        // Where this response's body starts in the blob, where it says the body ends, and
        // the size it gives for the whole blob.
        let (start, announced_end, announced_total) = match status {
            200 => {
                if offset > 0 {
                    writer.restart().map_err(FetchError::store)?;
                }
                let length = response.body().content_length();
                (0, length, length)
            }
            206 => match content_range.as_deref().and_then(ContentRange::parse) {
                Some(range) if range.first == offset => (offset, Some(range.last + 1), range.total),
                answered => {
                    writer.restart().map_err(FetchError::store)?;
                    let answered = match answered {
                        Some(range) => format!("from byte {}", range.first),
                        None => "without a usable Content-Range".to_owned(),
                    };
                    return Err(Failure::Retry {
                        problem: format!(
                            "asked to resume at byte {offset}, the server answered {answered}; \
                             started again from byte 0"
                        ),
                        wait: Wait::Now,
                    });
                }
            },
            416 => {
                let total = content_range.as_deref().and_then(unsatisfied_range_total);
                if offset > 0 && total == Some(offset) {
                    // Nothing left to send: the partial is the whole file.
                    return Ok(true);
                }
                writer.restart().map_err(FetchError::store)?;
                return Err(Failure::Retry {
                    problem: format!(
                        "the server cannot resume at byte {offset} (416 Range Not \
                         Satisfiable); started again from byte 0"
                    ),
                    wait: Wait::Now,
                });
            }
            _ => {
                check_status(url, &response)?;
                return Err(Failure::Fatal(FetchError::UnexpectedStatus {
                    url: url.to_owned(),
                    status,
                }));
            }
        };
        let chunked = header(&response, "transfer-encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
        let total = expected_size.or(announced_total);
        progress(writer.offset(), total);

        let mut body = response.into_body().into_with_config().reader();
        let mut buffer = vec![0; CHUNK_SIZE];
        loop {
            let read = match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    let problem = self.read_problem(&error, writer.offset());
                    return Err(retry_after_backoff(problem, None));
                }
            };
            writer
                .write_all(&buffer[..read])
                .map_err(FetchError::store)?;
            *bytes_downloaded += read as u64;
            progress(writer.offset(), total);
            if expected_size.is_some_and(|size| writer.offset() > size) {
                // Longer than the pin: the store will refuse it, so don't fetch the rest.
                return Ok(start > 0);
            }
        }

        let received = writer.offset();
        let end = match announced_end {
            Some(end) => Some(end),
            // A body delimited only by the end of the connection looks complete when the
            // connection drops; the pinned size tells.
            None if !chunked => expected_size,
            None => None,
        };
        if let Some(end) = end.filter(|end| received < *end) {
            return Err(retry_after_backoff(
                format!("the body ended after byte {received} of {end}"),
                None,
            ));
        }
        Ok(start > 0)
    }

    fn get_small_once(
        &self,
        url: &str,
        headers: &[(String, String)],
        limit: u64,
    ) -> Result<SmallResponse, Failure> {
        let response = self.send(url, headers, None)?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            check_status(url, &response)?;
            return Err(Failure::Fatal(FetchError::UnexpectedStatus {
                url: url.to_owned(),
                status,
            }));
        }
        let too_large = || {
            Failure::Fatal(FetchError::TooLarge {
                url: url.to_owned(),
                limit,
            })
        };
        if response
            .body()
            .content_length()
            .is_some_and(|length| length > limit)
        {
            return Err(too_large());
        }
        let answered_url = response.get_uri().to_string();
        let response_headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                let value = value.to_str().ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect();
        let body = match response
            .into_body()
            .into_with_config()
            .limit(limit)
            .read_to_vec()
        {
            Ok(body) => body,
            Err(ureq::Error::BodyExceedsLimit(_)) => return Err(too_large()),
            Err(error) => {
                let problem = match &error {
                    ureq::Error::Timeout(_) => {
                        format!("no data for {:?} (stalled)", self.options.stall_timeout)
                    }
                    _ => format!("the connection broke while reading the body: {error}"),
                };
                return Err(retry_after_backoff(problem, None));
            }
        };
        Ok(SmallResponse {
            url: answered_url,
            status,
            headers: response_headers,
            body,
        })
    }

    /// What went wrong reading a body, `received` bytes into the blob.
    fn read_problem(&self, error: &io::Error, received: u64) -> String {
        if is_timeout(error) {
            format!(
                "no data for {:?} after byte {received} (stalled)",
                self.options.stall_timeout
            )
        } else {
            format!("the connection broke after byte {received}: {error}")
        }
    }

    /// Sends one GET; a failure to get any answer is sorted into retryable or not.
    fn send(
        &self,
        url: &str,
        headers: &[(String, String)],
        range: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut request = self.agent.get(url);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.call().map_err(|error| match error {
            ureq::Error::Timeout(_) => retry_after_backoff(
                format!(
                    "no answer (connect timeout {:?}, stall timeout {:?})",
                    self.options.connect_timeout, self.options.stall_timeout
                ),
                None,
            ),
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_) => {
                retry_after_backoff(format!("the request failed: {error}"), None)
            }
            error => Failure::Fatal(FetchError::Request {
                url: url.to_owned(),
                error,
            }),
        })
    }
}

/// Sorts a status that is not success: retry (5xx, 408, 429), or fail now (401, other
/// 4xx). Returns `Ok` for statuses it does not know, which the caller reports.
fn check_status(url: &str, response: &ureq::http::Response<ureq::Body>) -> Result<(), Failure> {
    let status = response.status().as_u16();
    match status {
        401 => Err(Failure::Fatal(FetchError::Unauthorized {
            url: url.to_owned(),
            www_authenticate: header(response, "www-authenticate"),
        })),
        408 | 429 | 500..=599 => {
            // Only the delay-seconds form: an HTTP date would need the clock, and the
            // backoff is a fine fallback.
            let retry_after = header(response, "retry-after")
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Err(retry_after_backoff(
                format!("the server answered {status} {}", status_reason(status)),
                retry_after,
            ))
        }
        400..=499 => Err(Failure::Fatal(FetchError::ClientError {
            url: url.to_owned(),
            status,
        })),
        _ => Ok(()),
    }
}

fn retry_after_backoff(problem: String, retry_after: Option<Duration>) -> Failure {
    Failure::Retry {
        problem,
        wait: Wait::Backoff { retry_after },
    }
}

fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.count += read as u64;
        Ok(read)
    }
}

/// Whether a body read failed because the stall timeout expired.
fn is_timeout(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::TimedOut
        || error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)))
}

fn status_reason(status: u16) -> &'static str {
    ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("")
}

fn client_error_hint(status: u16) -> &'static str {
    match status {
        403 => "the server refuses access; check the credentials or the mirror's permissions",
        404 | 410 => "nothing is there; check the URL and the version in the pin",
        407 => "the proxy wants credentials; check the proxy settings (HTTPS_PROXY)",
        _ => "the server refused the request; check the URL and the headers",
    }
}

/// `Content-Range: bytes <first>-<last>/<total or *>` of a 206 answer.
#[derive(Debug, PartialEq, Eq)]
struct ContentRange {
    first: u64,
    last: u64,
    total: Option<u64>,
}

impl ContentRange {
    fn parse(value: &str) -> Option<ContentRange> {
        let rest = value.trim().strip_prefix("bytes")?.trim_start();
        let (span, total) = rest.split_once('/')?;
        let (first, last) = span.trim().split_once('-')?;
        let first = first.trim().parse().ok()?;
        let last = last.trim().parse().ok()?;
        let total = match total.trim() {
            "*" => None,
            total => Some(total.parse().ok()?),
        };
        (first <= last).then_some(ContentRange { first, last, total })
    }
}

/// The total of `Content-Range: bytes */<total>`, which comes with a 416.
fn unsatisfied_range_total(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("bytes")?
        .trim_start()
        .strip_prefix("*/")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_of_a_206_is_parsed() {
        assert_eq!(
            ContentRange::parse("bytes 100-199/1000"),
            Some(ContentRange {
                first: 100,
                last: 199,
                total: Some(1000)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 5-9/*"),
            Some(ContentRange {
                first: 5,
                last: 9,
                total: None
            })
        );
        assert_eq!(ContentRange::parse("bytes */1000"), None);
        assert_eq!(ContentRange::parse("bytes 9-5/10"), None);
        assert_eq!(ContentRange::parse("items 0-1/2"), None);
    }

    #[test]
    fn content_range_of_a_416_gives_the_total() {
        assert_eq!(unsatisfied_range_total("bytes */1000"), Some(1000));
        assert_eq!(unsatisfied_range_total("bytes 0-1/1000"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = FetchOptions::default();
        let millis: Vec<_> = (0..7)
            .map(|retry| options.backoff_delay(retry).as_millis())
            .collect();
        assert_eq!(millis, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
        assert_eq!(options.backoff_delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn one_client_can_serve_many_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<HttpClient>();
    }
}
