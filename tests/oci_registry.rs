//! The OCI client against a real registry: Debian's `docker-registry` (distribution 2.8) on
//! 127.0.0.1, filled by `skopeo` with small images this test writes by hand as OCI layouts.
//! No mocks: what the registry serves and what skopeo reads are the references.
//!
//! Tools: `docker-registry` and `skopeo` (Debian packages of the same names), and `openssl`
//! (package `openssl`) to sign the bearer tokens of the token test. A missing tool fails.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

mod common;

use common::registry::*;
use kiln::fetch::oci::{
    Endpoints, OciClient, OciError, ResolvedImage, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    OCI_INDEX, OCI_MANIFEST,
};
use kiln::store::{Digest, Store};
use serde_json::{json, Value};

/// What `demo` holds: a two-platform index tagged `1` (amd64 and arm64, sharing a base
/// layer) and a single amd64 manifest tagged `single`.
struct Demo {
    layout: Layout,
    index: String,
    amd64: BuiltImage,
    arm64: BuiltImage,
    single: BuiltImage,
}

fn demo_layout() -> Demo {
    let mut layout = Layout::new();
    let base = layout.layer("base", b"shared by every platform\n");
    let amd64_layer = layout.layer("hello", b"#!/bin/sh\necho hello from amd64\n");
    let arm64_layer = layout.layer("hello", b"#!/bin/sh\necho hello from arm64\n");
    let amd64 = layout.image("linux", "amd64", &[&base, &amd64_layer]);
    let arm64 = layout.image("linux", "arm64", &[&base, &arm64_layer]);
    let index = layout.index(&[&amd64, &arm64]);
    layout.tag(&index, "1");
    let single_layer = layout.layer("single", b"one platform only\n");
    let single = layout.image("linux", "amd64", &[&single_layer]);
    layout.tag(&single.descriptor, "single");
    Demo {
        index: index["digest"].as_str().expect("digest").to_owned(),
        layout,
        amd64,
        arm64,
        single,
    }
}

/// Every blob in `store`, and a failure if one does not hash to its name.
fn assert_blobs_rehash(store: &Store, blobs: &[Digest]) {
    for blob in blobs {
        let bytes = fs_err::read(store.blob_path(blob)).expect("blob in the store");
        assert_eq!(
            digest_of(&bytes),
            blob.to_string(),
            "blob {blob} does not re-hash"
        );
    }
}

fn strings(blobs: &[Digest]) -> BTreeSet<String> {
    blobs.iter().map(Digest::to_string).collect()
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn resolve_agrees_with_skopeo_on_an_index_and_its_platforms() {
    let registry = Registry::start();
    let demo = demo_layout();
    registry.push(&demo.layout, "1", "demo/app", &[]);
    let raw = registry.raw("demo/app:1");
    let http = http_client();
    let client = OciClient::new(&http, registry.endpoints());

    let resolved = client
        .resolve(&reference(&format!("{}/demo/app:1", registry.host())))
        .expect("resolve");

    assert_eq!(resolved.digest.to_string(), digest_of(&raw));
    // skopeo copied the index unchanged, so it is the one written here.
    assert_eq!(resolved.digest.to_string(), demo.index);
    assert_eq!(resolved.media_type, OCI_INDEX);
    assert_eq!(resolved.size, raw.len() as u64);
    let listed: Value = serde_json::from_slice(&raw).expect("skopeo's index");
    let expected: Vec<(String, String)> = listed["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|entry| {
            (
                format!(
                    "{}/{}",
                    entry["platform"]["os"].as_str().unwrap(),
                    entry["platform"]["architecture"].as_str().unwrap()
                ),
                entry["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let platforms: Vec<(String, String)> = resolved
        .platforms
        .iter()
        .map(|platform| (platform.platform.clone(), platform.digest.to_string()))
        .collect();
    assert_eq!(platforms, expected);
    assert_eq!(
        platforms,
        vec![
            ("linux/amd64".to_owned(), demo.amd64.manifest.clone()),
            ("linux/arm64".to_owned(), demo.arm64.manifest.clone()),
        ]
    );
    for platform in &resolved.platforms {
        let raw = registry.raw(&format!("demo/app@{}", platform.digest));
        assert_eq!(digest_of(&raw), platform.digest.to_string());
        assert_eq!(platform.size, raw.len() as u64);
        assert_eq!(platform.media_type, OCI_MANIFEST);
    }

    // By digest, the same answer; and the pinned reference round-trips.
    let pinned = resolved.pinned();
    assert_eq!(
        pinned.to_string(),
        format!("{}/demo/app:1@{}", registry.host(), demo.index)
    );
    let again = client.resolve(&pinned).expect("resolve by digest");
    assert_eq!(again.digest, resolved.digest);
    assert_eq!(again.platforms, resolved.platforms);
}

#[test]
fn pull_stores_every_blob_verified_and_only_the_platforms_asked_for() {
    let registry = Registry::start();
    let demo = demo_layout();
    registry.push(&demo.layout, "1", "demo/app", &[]);
    let http = http_client();
    let client = OciClient::new(&http, registry.endpoints());
    let resolved = client
        .resolve(&reference(&format!("{}/demo/app:1", registry.host())))
        .expect("resolve");

    // Every platform.
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(store_dir.path()).expect("store");
    let mut reported: Vec<(String, u64, Option<u64>)> = Vec::new();
    let pulled = client
        .pull(&store, &resolved, &[], &mut |what, done, total| {
            reported.push((what.to_owned(), done, total))
        })
        .expect("pull");
    let mut expected = demo.amd64.blobs();
    expected.extend(demo.arm64.blobs());
    expected.insert(demo.index.clone());
    assert_eq!(strings(&pulled.blobs), expected);
    assert_eq!(
        pulled.blobs.len(),
        8,
        "index, 2 manifests, 2 configs, 3 layers"
    );
    let mut sorted = pulled.blobs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, pulled.blobs, "sorted and deduplicated");
    assert_blobs_rehash(&store, &pulled.blobs);
    // Progress heard of every layer, up to its full size.
    for layer in demo.amd64.layers.iter().chain(&demo.arm64.layers) {
        let size = fs_err::metadata(store.blob_path(&digest(layer)))
            .expect("layer")
            .len();
        assert!(
            reported
                .iter()
                .any(|(what, done, _)| what.contains(layer.as_str()) && *done == size),
            "no progress reached {size} bytes for {layer}: {reported:?}"
        );
    }

    // Only linux/amd64, into another store: nothing of arm64's own.
    let amd64_dir = tempfile::tempdir().expect("temp dir");
    let amd64_store = Store::open(amd64_dir.path()).expect("store");
    let pulled = client
        .pull(
            &amd64_store,
            &resolved,
            &["linux/amd64".to_owned()],
            &mut |_, _, _| {},
        )
        .expect("pull linux/amd64");
    let mut expected = demo.amd64.blobs();
    expected.insert(demo.index.clone());
    assert_eq!(strings(&pulled.blobs), expected);
    assert_blobs_rehash(&amd64_store, &pulled.blobs);
    for blob in demo.arm64.blobs().difference(&demo.amd64.blobs()) {
        assert!(
            !amd64_store.has_blob(&digest(blob)),
            "{blob} (arm64 only) was pulled for linux/amd64"
        );
    }

    // A `ResolvedImage` rebuilt from a lock that kept only the digest pulls the same.
    let from_lock = ResolvedImage {
        reference: resolved.reference.clone(),
        digest: resolved.digest.clone(),
        media_type: resolved.media_type.clone(),
        size: resolved.size,
        platforms: Vec::new(),
    };
    let lock_dir = tempfile::tempdir().expect("temp dir");
    let lock_store = Store::open(lock_dir.path()).expect("store");
    let again = client
        .pull(
            &lock_store,
            &from_lock,
            &["linux/amd64".to_owned()],
            &mut |_, _, _| {},
        )
        .expect("pull from a minimal lock");
    assert_eq!(again.blobs, pulled.blobs);

    // A platform the image lacks is named, with the ones it has.
    let error = client
        .pull(
            &amd64_store,
            &resolved,
            &["linux/riscv64".to_owned()],
            &mut |_, _, _| {},
        )
        .expect_err("no riscv64");
    assert!(
        matches!(error, OciError::PlatformNotFound { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(
            "has no manifest for platform linux/riscv64; it has linux/amd64, linux/arm64"
        ),
        "{error}"
    );

    // Once pulled, the image comes from the store: no registry needed.
    drop(registry);
    let again = client
        .pull(&store, &resolved, &[], &mut |_, _, _| {})
        .expect("pull from the store alone");
    assert_eq!(strings(&again.blobs), strings(&pulled_all(&demo)));
}

fn pulled_all(demo: &Demo) -> Vec<Digest> {
    let mut blobs = demo.amd64.blobs();
    blobs.extend(demo.arm64.blobs());
    blobs.insert(demo.index.clone());
    blobs.iter().map(|blob| digest(blob)).collect()
}

#[test]
fn docker_v2_schema_2_manifests_and_manifest_lists_resolve_and_pull() {
    let registry = Registry::start();
    let demo = demo_layout();
    registry.push(&demo.layout, "single", "demo/docker", &["--format", "v2s2"]);
    registry.push(&demo.layout, "1", "demo/docker-list", &["--format", "v2s2"]);
    let http = http_client();
    let client = OciClient::new(&http, registry.endpoints());

    // A single Docker v2 schema 2 manifest: its platform comes from its config.
    let raw = registry.raw("demo/docker:single");
    let resolved = client
        .resolve(&reference(&format!(
            "{}/demo/docker:single",
            registry.host()
        )))
        .expect("resolve a Docker v2 schema 2 manifest");
    assert_eq!(resolved.media_type, DOCKER_MANIFEST);
    assert_eq!(resolved.digest.to_string(), digest_of(&raw));
    assert!(!resolved.is_index());
    assert_eq!(resolved.platforms.len(), 1);
    assert_eq!(resolved.platforms[0].platform, "linux/amd64");
    assert_eq!(resolved.platforms[0].digest, resolved.digest);
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(store_dir.path()).expect("store");
    let pulled = client
        .pull(
            &store,
            &resolved,
            &["linux/amd64".to_owned()],
            &mut |_, _, _| {},
        )
        .expect("pull a Docker v2 schema 2 manifest");
    // The manifest was rewritten by the conversion; its config and layer were not.
    let mut expected: BTreeSet<String> = demo.single.layers.iter().cloned().collect();
    expected.insert(demo.single.config.clone());
    expected.insert(digest_of(&raw));
    assert_eq!(strings(&pulled.blobs), expected);
    assert_blobs_rehash(&store, &pulled.blobs);
    let error = client
        .pull(
            &store,
            &resolved,
            &["linux/arm64".to_owned()],
            &mut |_, _, _| {},
        )
        .expect_err("a single amd64 manifest has no arm64");
    assert!(error.to_string().contains("it has linux/amd64"), "{error}");

    // A Docker manifest list.
    let raw = registry.raw("demo/docker-list:1");
    let list: Value = serde_json::from_slice(&raw).expect("skopeo's list");
    assert_eq!(
        list["mediaType"], DOCKER_MANIFEST_LIST,
        "skopeo converted the index"
    );
    let resolved = client
        .resolve(&reference(&format!(
            "{}/demo/docker-list:1",
            registry.host()
        )))
        .expect("resolve a Docker manifest list");
    assert_eq!(resolved.media_type, DOCKER_MANIFEST_LIST);
    assert_eq!(resolved.digest.to_string(), digest_of(&raw));
    let platforms: Vec<&str> = resolved
        .platforms
        .iter()
        .map(|p| p.platform.as_str())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for platform in &resolved.platforms {
        assert_eq!(platform.media_type, DOCKER_MANIFEST);
        let raw = registry.raw(&format!("demo/docker-list@{}", platform.digest));
        assert_eq!(digest_of(&raw), platform.digest.to_string());
    }
    let pulled = client
        .pull(&store, &resolved, &[], &mut |_, _, _| {})
        .expect("pull a Docker manifest list");
    assert_eq!(
        pulled.blobs.len(),
        8,
        "list, 2 manifests, 2 configs, 3 layers"
    );
    assert_blobs_rehash(&store, &pulled.blobs);
}

#[test]
fn an_oci_manifest_without_an_index_resolves_to_its_config_platform() {
    let registry = Registry::start();
    let demo = demo_layout();
    registry.push(&demo.layout, "single", "demo/single", &[]);
    let http = http_client();
    let client = OciClient::new(&http, registry.endpoints());
    let resolved = client
        .resolve(&reference(&format!(
            "{}/demo/single:single",
            registry.host()
        )))
        .expect("resolve");
    assert_eq!(resolved.media_type, OCI_MANIFEST);
    assert_eq!(resolved.digest.to_string(), demo.single.manifest);
    assert_eq!(
        resolved.digest.to_string(),
        digest_of(&registry.raw("demo/single:single"))
    );
    assert_eq!(resolved.platforms.len(), 1);
    assert_eq!(resolved.platforms[0].platform, "linux/amd64");
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(store_dir.path()).expect("store");
    let pulled = client
        .pull(&store, &resolved, &[], &mut |_, _, _| {})
        .expect("pull");
    assert_eq!(strings(&pulled.blobs), demo.single.blobs());
    assert_blobs_rehash(&store, &pulled.blobs);
}

#[test]
fn a_mirror_serves_another_registrys_images_with_the_same_digests() {
    let registry = Registry::start();
    let demo = demo_layout();
    registry.push(&demo.layout, "1", "demo/app", &[]);
    let http = http_client();
    let endpoints =
        Endpoints::new().with_mirror("example.invalid", format!("http://{}", registry.host()));
    let client = OciClient::new(&http, endpoints);
    let image = reference("example.invalid/demo/app:1");
    let resolved = client.resolve(&image).expect("resolve through the mirror");
    assert_eq!(resolved.digest.to_string(), demo.index);
    assert_eq!(resolved.reference, image, "the name stays the registry's");
    assert_eq!(
        resolved.pinned().to_string(),
        format!("example.invalid/demo/app:1@{}", demo.index)
    );
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(store_dir.path()).expect("store");
    let pulled = client
        .pull(
            &store,
            &resolved,
            &["linux/arm64".to_owned()],
            &mut |_, _, _| {},
        )
        .expect("pull through the mirror");
    let mut expected = demo.arm64.blobs();
    expected.insert(demo.index.clone());
    assert_eq!(strings(&pulled.blobs), expected);
}

#[test]
fn a_missing_tag_names_the_image_the_url_and_what_to_do() {
    let registry = Registry::start();
    let demo = demo_layout();
    registry.push(&demo.layout, "1", "demo/app", &[]);
    let http = http_client();
    let client = OciClient::new(&http, registry.endpoints());
    let host = registry.host();

    let error = client
        .resolve(&reference(&format!("{host}/demo/app:2")))
        .expect_err("tag 2 was never pushed");
    assert!(matches!(error, OciError::NotFound { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "image {host}/demo/app:2: http://{host}/v2/demo/app/manifests/2 answered 404: the \
             registry has no manifest for tag `2`; check the repository name and the tag \
             (`skopeo list-tags docker://{host}/demo/app` lists the tags)"
        )
    );

    let error = client
        .resolve(&reference(&format!("{host}/demo/nothing:1")))
        .expect_err("no such repository");
    assert!(matches!(error, OciError::NotFound { .. }), "{error:?}");

    // A registry that lost a layer (an incomplete mirror) says so, and nothing is stored.
    let lost = &demo.arm64.layers[1];
    let hex = lost.strip_prefix("sha256:").expect("sha256");
    fs_err::remove_file(
        registry
            .data()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data"),
    )
    .expect("remove the layer from the registry's storage");
    let resolved = client
        .resolve(&reference(&format!("{host}/demo/app:1")))
        .expect("resolve");
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(store_dir.path()).expect("store");
    let error = client
        .pull(&store, &resolved, &[], &mut |_, _, _| {})
        .expect_err("a layer is missing");
    assert!(matches!(error, OciError::BlobMissing { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "image {host}/demo/app:1: http://{host}/v2/demo/app/blobs/{lost} answered 404: the \
             registry has no layer {lost}, which the image's manifest names; the registry or \
             mirror holds an incomplete copy of the image: push the image to it again (e.g. \
             `skopeo copy --all`)"
        )
    );
    assert!(!store.has_blob(&digest(lost)));
}

#[test]
fn a_registry_that_wants_a_password_is_refused_with_a_clear_error() {
    // With a missing htpasswd file, distribution 2.8 makes one with a random password.
    let htpasswd_dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::start_with_auth(&format!(
        "  htpasswd:\n    realm: kiln-test-realm\n    path: {}\n",
        htpasswd_dir.path().join("htpasswd").display()
    ));
    let http = http_client();
    let client = OciClient::new(&http, registry.endpoints());
    let image = format!("{}/demo/app:1", registry.host());
    let error = client
        .resolve(&reference(&image))
        .expect_err("Basic auth is not supported");
    assert!(
        matches!(error, OciError::CredentialsRequired { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("image {image}: http://")),
        "{message}"
    );
    assert!(
        message.contains(r#"Basic realm="kiln-test-realm""#),
        "{message}"
    );
    assert!(
        message.contains("kiln does not support registry credentials yet"),
        "{message}"
    );
}

#[test]
fn anonymous_bearer_tokens_are_fetched_once_and_reused() {
    let tokens = TokenServer::start();
    let registry = Registry::start_with_auth(&tokens.registry_auth());
    // The registry really demands a token, so this test can fail.
    assert_eq!(
        http_status(registry.port, "/v2/demo/app/manifests/1").as_deref(),
        Some("HTTP/1.1 401 Unauthorized")
    );
    let demo = demo_layout();
    registry.push(&demo.layout, "1", "demo/app", &[]);
    tokens.requests.lock().expect("requests").clear();

    let http = http_client();
    let client = OciClient::new(&http, registry.endpoints());
    let resolved = client
        .resolve(&reference(&format!("{}/demo/app:1", registry.host())))
        .expect("resolve with a bearer token");
    assert_eq!(resolved.digest.to_string(), demo.index);
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(store_dir.path()).expect("store");
    let pulled = client
        .pull(&store, &resolved, &[], &mut |_, _, _| {})
        .expect("pull with a bearer token");
    assert_eq!(pulled.blobs.len(), 8);
    assert_blobs_rehash(&store, &pulled.blobs);

    let requests = tokens.requests.lock().expect("requests").clone();
    assert_eq!(
        requests,
        vec!["/token?service=kiln-test-registry&scope=repository%3Ademo%2Fapp%3Apull".to_owned()],
        "one token for resolve and pull, asked for with the challenge's service and a pull scope"
    );
}

#[test]
fn a_mirror_that_alters_a_manifest_is_caught() {
    let registry = Registry::start();
    let demo = demo_layout();
    registry.push(&demo.layout, "1", "demo/app", &[]);
    let http = http_client();

    // The mirror passes the registry's Docker-Content-Digest on with altered bytes.
    let mirror = TamperingMirror::start(registry.port, true);
    let client = OciClient::new(
        &http,
        Endpoints::new().with_mirror("example.invalid", mirror.url()),
    );
    let error = client
        .resolve(&reference("example.invalid/demo/app:1"))
        .expect_err("altered bytes");
    match &error {
        OciError::DigestMismatch {
            expected,
            claimed_by,
            ..
        } => {
            assert_eq!(expected.to_string(), demo.index);
            assert_eq!(claimed_by, "the Docker-Content-Digest header");
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "image example.invalid/demo/app:1: {}/v2/demo/app/manifests/1 served bytes whose \
             sha256 is",
            mirror.url()
        )),
        "{message}"
    );

    // Without the header, a pinned digest still catches it, and nothing is stored.
    let mirror = TamperingMirror::start(registry.port, false);
    let client = OciClient::new(
        &http,
        Endpoints::new().with_mirror("example.invalid", mirror.url()),
    );
    let pinned = reference(&format!("example.invalid/demo/app:1@{}", demo.index));
    let error = client.resolve(&pinned).expect_err("altered bytes");
    assert!(
        matches!(&error, OciError::DigestMismatch { claimed_by, .. } if claimed_by == "the reference"),
        "{error:?}"
    );
    let honest = OciClient::new(
        &http,
        Endpoints::new().with_mirror("example.invalid", format!("http://{}", registry.host())),
    );
    let resolved = honest
        .resolve(&pinned)
        .expect("resolve from the registry itself");
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(store_dir.path()).expect("store");
    let error = client
        .pull(&store, &resolved, &[], &mut |_, _, _| {})
        .expect_err("altered bytes");
    assert!(
        matches!(error, OciError::DigestMismatch { .. }),
        "{error:?}"
    );
    assert!(
        !store.has_blob(&resolved.digest),
        "an altered index was stored"
    );
}

/// An http front for a registry that appends a newline to every manifest it passes on:
/// valid JSON, other bytes, as a broken or hostile mirror would serve.
struct TamperingMirror {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TamperingMirror {
    /// In front of the registry on `upstream`; passes its Docker-Content-Digest header on if
    /// `keep_digest_header`.
    fn start(upstream: u16, keep_digest_header: bool) -> TamperingMirror {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        relay_altered(stream, upstream, keep_digest_header);
                    }
                }
            })
        };
        TamperingMirror {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for TamperingMirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn relay_altered(stream: TcpStream, upstream: u16, keep_digest_header: bool) {
    let (path, headers, stream) = read_request(stream);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(format!("http://127.0.0.1:{upstream}{path}"));
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case("accept") || name.eq_ignore_ascii_case("authorization") {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    let Ok(mut response) = request.call() else {
        return;
    };
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let digest = header("docker-content-digest");
    let mut body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap_or_default();
    if status == 200 && path.contains("/manifests/") {
        body.push(b'\n');
    }
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if let Some(digest) = digest.filter(|_| keep_digest_header) {
        head.push_str(&format!("Docker-Content-Digest: {digest}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// Read an HTTP request head: the path, the headers, and the stream to answer on.
fn read_request(stream: TcpStream) -> (String, Vec<(String, String)>, TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    let _ = reader.read_line(&mut request_line);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim_end().is_empty() => break,
            Ok(_) => {
                if let Some((name, value)) = line.trim_end().split_once(':') {
                    headers.push((name.trim().to_owned(), value.trim().to_owned()));
                }
            }
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (path, headers, reader.into_inner())
}

// ---------------------------------------------------------------------------------------
// A token service for distribution's token auth

/// Issues a signed JWT for whatever scope is asked, to anyone, like Docker Hub does for
/// public repositories. Signed with `openssl` using a throw-away self-signed certificate
/// the registry trusts (`rootcertbundle`); the certificate travels in the token's `x5c`.
struct TokenServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

const TOKEN_SERVICE: &str = "kiln-test-registry";
const TOKEN_ISSUER: &str = "kiln-test-issuer";

impl TokenServer {
    fn start() -> TokenServer {
        let openssl = require("openssl", "openssl");
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        run(Command::new(&openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=kiln-test-token-issuer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        let der = run(Command::new(&openssl)
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve_token(stream, &openssl, &key, &der, &requests);
                    }
                }
            })
        };
        TokenServer {
            port,
            requests,
            stop,
            thread: Some(thread),
            dir,
        }
    }

    /// The registry's `auth:` section.
    fn registry_auth(&self) -> String {
        format!(
            "  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    \
             issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.port,
            self.dir.path().join("cert.pem").display()
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_token(
    stream: TcpStream,
    openssl: &Path,
    key: &Path,
    certificate_der: &[u8],
    requests: &Mutex<Vec<String>>,
) {
    let (path, _, mut stream) = read_request(stream);
    requests.lock().expect("requests").push(path.clone());
    let query = path
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default();
    let mut service = String::new();
    let mut access = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match name {
            "service" => service = value,
            "scope" => {
                // repository:NAME:ACTIONS (NAME has no `:` here).
                let parts: Vec<&str> = value.splitn(3, ':').collect();
                if let [kind, name, actions] = parts[..] {
                    access.push(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
                }
            }
            _ => {}
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let header =
        json!({"typ": "JWT", "alg": "RS256", "x5c": [base64(certificate_der, STANDARD, true)]});
    let claims = json!({
        "iss": TOKEN_ISSUER, "sub": "", "aud": service, "exp": now + 600, "nbf": now - 60,
        "iat": now, "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64(&serde_json::to_vec(&header).expect("json"), URL_SAFE, false),
        base64(&serde_json::to_vec(&claims).expect("json"), URL_SAFE, false)
    );
    let mut signer = Command::new(openssl)
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    signer
        .stdin
        .take()
        .expect("stdin")
        .write_all(signing_input.as_bytes())
        .expect("write to openssl");
    let signature = signer.wait_with_output().expect("openssl dgst").stdout;
    let token = format!("{signing_input}.{}", base64(&signature, URL_SAFE, false));
    // `access_token` only, as some token services answer: the client must read it too.
    let body =
        serde_json::to_vec(&json!({"access_token": token, "expires_in": 600})).expect("json");
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let buffer = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let bits = u32::from(buffer[0]) << 16 | u32::from(buffer[1]) << 8 | u32::from(buffer[2]);
        for index in 0..=chunk.len() {
            out.push(char::from(
                alphabet[(bits >> (18 - 6 * index) & 63) as usize],
            ));
        }
        if pad {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn test_helpers_encode_like_the_standards() {
    assert_eq!(base64(b"hello", STANDARD, true), "aGVsbG8=");
    assert_eq!(base64(b"\xfb\xff", URL_SAFE, false), "-_8");
    assert_eq!(
        percent_decode("repository%3Ademo%2Fapp%3Apull%2Cpush"),
        "repository:demo/app:pull,push"
    );
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}
