//! A real OCI registry for tests: Debian's `docker-registry` on 127.0.0.1 with its storage
//! in a temp dir, and small images written by hand as OCI layouts and pushed with skopeo.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kiln::fetch::http::{FetchOptions, HttpClient};
use kiln::fetch::oci::{Endpoints, ImageReference, OCI_INDEX, OCI_MANIFEST};
use kiln::store::Digest;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

// ---------------------------------------------------------------------------------------
// Tools and small helpers

/// The path of `tool`, or a failure that names the Debian package to install.
pub fn require(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|directory| directory.join(tool))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{tool}` is not installed, and this test needs it: install the Debian package \
             `{package}` (apt-get install --no-install-recommends {package})"
        )
    })
}

/// `sha256:<hex>` of `bytes`, computed here with sha2 directly (not with kiln's `Digest`).
pub fn digest_of(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256:{hex}")
}

pub fn digest(text: &str) -> Digest {
    text.parse().expect("a digest")
}

pub fn reference(text: &str) -> ImageReference {
    text.parse().unwrap_or_else(|error| panic!("{error}"))
}

/// An HTTP client with few, fast retries: every server here is local.
pub fn http_client() -> HttpClient {
    HttpClient::new(FetchOptions {
        attempts: 2,
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(10),
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    })
}

/// Run a command; its stdout, or a failure with its stderr.
pub fn run(command: &mut Command) -> Vec<u8> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

// ---------------------------------------------------------------------------------------
// The registry

/// A `docker-registry` serving on 127.0.0.1 from a temp dir; killed on drop.
pub struct Registry {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// An open registry: anyone may push and pull.
    pub fn start() -> Registry {
        Registry::start_with_auth("")
    }

    /// A registry whose config has `auth` (YAML lines, indented two spaces) as its
    /// `auth:` section, if not empty.
    pub fn start_with_auth(auth: &str) -> Registry {
        let binary = require("docker-registry", "docker-registry");
        let mut errors = String::new();
        // The port is free when picked, but another test may bind it before the registry
        // does: try a few.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let config = dir.path().join("config.yml");
            let mut text = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test\n",
                dir.path().join("data").display()
            );
            if !auth.is_empty() {
                text.push_str("auth:\n");
                text.push_str(auth);
            }
            fs_err::write(&config, text).expect("write the registry config");
            let log = dir.path().join("registry.log");
            let log_file = fs_err::File::create(&log).expect("registry log");
            let child = Command::new(&binary)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log_file.into_parts().0))
                .spawn()
                .unwrap_or_else(|error| panic!("{}: {error}", binary.display()));
            let mut registry = Registry { child, port, dir };
            if registry.wait_until_ready() {
                return registry;
            }
            let _ = registry.child.kill();
            let _ = registry.child.wait();
            errors = fs_err::read_to_string(&log).unwrap_or_default();
        }
        panic!("docker-registry did not start; its last log:\n{errors}");
    }

    /// Poll `GET /v2/` until the registry answers (any status), for at most 15 s.
    pub fn wait_until_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Some(status) = http_status(self.port, "/v2/") {
                if status.starts_with("HTTP/1.1 ") {
                    return true;
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Where the registry keeps what is pushed to it.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `127.0.0.1:PORT`, the registry's name in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Endpoints that reach this registry over plain http.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints::new().with_mirror(self.host(), format!("http://{}", self.host()))
    }

    /// Push the image tagged `tag` in the OCI layout `layout` as `name:tag`, with every
    /// platform; `extra` adds skopeo options (e.g. `--format v2s2`).
    pub fn push(&self, layout: &Layout, tag: &str, name: &str, extra: &[&str]) {
        let skopeo = require("skopeo", "skopeo");
        run(Command::new(skopeo)
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--dest-tls-verify=false",
            ])
            .args(extra)
            .arg(format!("oci:{}:{tag}", layout.dir.path().display()))
            .arg(format!("docker://{}/{name}:{tag}", self.host())));
    }

    /// `skopeo inspect --raw` of `name_and_reference` (`NAME:TAG` or `NAME@DIGEST`): the
    /// manifest bytes exactly as the registry serves them to skopeo.
    pub fn raw(&self, name_and_reference: &str) -> Vec<u8> {
        let skopeo = require("skopeo", "skopeo");
        run(Command::new(skopeo)
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{name_and_reference}", self.host())))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The status line of `GET path`, if anything answers.
pub fn http_status(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line.trim_end().to_owned())
}

// ---------------------------------------------------------------------------------------
// OCI layouts written by hand

/// An OCI image layout in a temp dir, built blob by blob.
pub struct Layout {
    pub dir: tempfile::TempDir,
    /// Entries of `index.json`.
    pub tags: Vec<Value>,
}

/// One image written to a layout: its manifest descriptor and every blob digest under it.
pub struct BuiltImage {
    pub descriptor: Value,
    pub manifest: String,
    pub config: String,
    pub layers: Vec<String>,
}

impl BuiltImage {
    pub fn blobs(&self) -> BTreeSet<String> {
        let mut blobs: BTreeSet<String> = self.layers.iter().cloned().collect();
        blobs.insert(self.manifest.clone());
        blobs.insert(self.config.clone());
        blobs
    }
}

impl Layout {
    pub fn new() -> Layout {
        let dir = tempfile::tempdir().expect("temp dir");
        fs_err::create_dir_all(dir.path().join("blobs/sha256")).expect("blobs dir");
        fs_err::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("oci-layout");
        Layout {
            dir,
            tags: Vec::new(),
        }
    }

    /// Write a blob; its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = digest_of(bytes);
        let hex = digest.strip_prefix("sha256:").expect("sha256");
        fs_err::write(self.dir.path().join("blobs/sha256").join(hex), bytes).expect("blob");
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    /// A gzip'd tar layer holding one file.
    pub fn layer(&self, file: &str, contents: &[u8]) -> (Value, String) {
        let tar = tar_with_one_file(file, contents);
        let descriptor = self.blob(OCI_LAYER, &gzip_stored(&tar));
        (descriptor, digest_of(&tar))
    }

    /// An image for `os`/`architecture` with the given layers (descriptor, diff id).
    pub fn image(&self, os: &str, architecture: &str, layers: &[&(Value, String)]) -> BuiltImage {
        let config = json!({
            "architecture": architecture,
            "os": os,
            "config": {"Cmd": ["/hello"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|(_, diff_id)| diff_id.clone()).collect::<Vec<_>>(),
            },
        });
        let config = self.blob(OCI_CONFIG, &serde_json::to_vec(&config).expect("json"));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": layers.iter().map(|(descriptor, _)| descriptor.clone()).collect::<Vec<_>>(),
        });
        let mut descriptor = self.blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).expect("json"));
        descriptor["platform"] = json!({"architecture": architecture, "os": os});
        BuiltImage {
            manifest: descriptor["digest"].as_str().expect("digest").to_owned(),
            config: config["digest"].as_str().expect("digest").to_owned(),
            layers: layers
                .iter()
                .map(|(descriptor, _)| descriptor["digest"].as_str().expect("digest").to_owned())
                .collect(),
            descriptor,
        }
    }

    /// An index of `images`; its digest.
    pub fn index(&self, images: &[&BuiltImage]) -> Value {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": images.iter().map(|image| image.descriptor.clone()).collect::<Vec<_>>(),
        });
        self.blob(OCI_INDEX, &serde_json::to_vec(&index).expect("json"))
    }

    /// Tag `descriptor` (a manifest or an index) as `tag` in `index.json`.
    pub fn tag(&mut self, descriptor: &Value, tag: &str) {
        let mut entry = json!({
            "mediaType": descriptor["mediaType"],
            "digest": descriptor["digest"],
            "size": descriptor["size"],
        });
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.tags.push(entry);
        let index = json!({"schemaVersion": 2, "manifests": self.tags});
        fs_err::write(
            self.dir.path().join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("index.json");
    }
}

/// A ustar archive with one regular file (mode 0755, owner 0, mtime 0).
pub fn tar_with_one_file(name: &str, contents: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    let mut put =
        |offset: usize, field: &[u8]| header[offset..offset + field.len()].copy_from_slice(field);
    put(0, name.as_bytes());
    put(100, b"0000755\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", contents.len()).as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    let checksum: u32 = header.iter().map(|&byte| u32::from(byte)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(contents);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// gzip with stored (uncompressed) deflate blocks: valid gzip, no compressor needed.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (index, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(index == last));
        let length = u16::try_from(chunk.len()).expect("chunk fits");
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&(!length).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
