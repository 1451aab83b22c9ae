//! Image archives and derived images against the real consumers: Debian's containerd (`ctr
//! images import`, what MicroK8s' sideload runs) and skopeo, with images pushed to Debian's
//! `docker-registry` on 127.0.0.1 and pulled with kiln's own OCI client. No mocks.
//!
//! Tools (a missing one fails the test, naming its Debian package): `containerd` and `ctr`
//! (package `containerd`), `skopeo`, `docker-registry`, `dpkg-deb` (package `dpkg`). containerd
//! runs as a private daemon in a temp dir (own root, state and socket, CRI plugin off), which
//! needs root.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::containerd::Containerd;
use common::registry::*;
use kiln::build::image_archive::{
    build_derived_image, write_image_archive, BuiltImage as Derived, DerivedConfig, DerivedImage,
    LayerSource, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
};
use kiln::fetch::oci::{OciClient, ResolvedImage};
use kiln::lock::file::{LockedImage, LockedPlatform};
use kiln::store::Store;
use serde_json::Value;

/// The SOURCE_DATE_EPOCH of these tests.
const EPOCH: u64 = 1_700_000_000;

// ---------------------------------------------------------------------------------------
// containerd

/// `skopeo inspect [--raw] oci-archive:PATH`.
fn skopeo_inspect(archive: &Path, raw: bool) -> Vec<u8> {
    let skopeo = require("skopeo", "skopeo");
    let mut command = Command::new(skopeo);
    command.arg("inspect");
    if raw {
        command.arg("--raw");
    }
    run(command.arg(format!("oci-archive:{}", archive.display())))
}

/// The archive of `image`, written to `dir/name` and again in memory: both must be equal.
fn archive_of(store: &Store, image: &LockedImage, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let file = fs_err::File::create(&path).expect("archive file");
    let info = write_image_archive(store, image, file, EPOCH).expect("write the archive");
    let mut again = Vec::new();
    write_image_archive(store, image, &mut again, EPOCH).expect("write the archive again");
    let bytes = fs_err::read(&path).expect("archive");
    assert!(bytes == again, "two writes of {name} differ");
    assert_eq!(info.size, bytes.len() as u64);
    path
}

/// Member of a tar: path, type, mode, uid, gid, mtime, contents.
struct Member {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    contents: Vec<u8>,
}

fn members(tar_bytes: impl Read) -> Vec<Member> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .expect("tar")
        .map(|entry| {
            let mut entry = entry.expect("tar entry");
            let header = entry.header().clone();
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).expect("contents");
            Member {
                path: entry.path().expect("path").display().to_string(),
                kind: header.entry_type(),
                mode: header.mode().expect("mode"),
                uid: header.uid().expect("uid"),
                gid: header.gid().expect("gid"),
                mtime: header.mtime().expect("mtime"),
                contents,
            }
        })
        .collect()
}

/// The two-platform demo image of `registry`, tagged `1`, pushed as `demo/app` with `extra`
/// skopeo options; resolved.
struct Demo {
    resolved: ResolvedImage,
    amd64: BuiltImage,
    arm64: BuiltImage,
}

fn push_demo(registry: &Registry, name: &str, extra: &[&str]) -> Demo {
    let mut layout = Layout::new();
    let base = layout.layer("base", b"shared by every platform\n");
    let amd64_layer = layout.layer("hello", b"amd64\n");
    let arm64_layer = layout.layer("hello", b"arm64\n");
    let amd64 = layout.image("linux", "amd64", &[&base, &amd64_layer]);
    let arm64 = layout.image("linux", "arm64", &[&base, &arm64_layer]);
    let index = layout.index(&[&amd64, &arm64]);
    layout.tag(&index, "1");
    registry.push(&layout, "1", name, extra);
    let http = http_client();
    let client = OciClient::new(&http, registry.endpoints());
    let resolved = client
        .resolve(&reference(&format!("{}/{name}:1", registry.host())))
        .expect("resolve");
    Demo {
        resolved,
        amd64,
        arm64,
    }
}

/// Pull `platforms` of the demo into `store`; the lock entry that keeps them.
fn lock_and_fetch(
    registry: &Registry,
    demo: &Demo,
    store: &Store,
    platforms: &[&str],
) -> LockedImage {
    let http = http_client();
    let client = OciClient::new(&http, registry.endpoints());
    let wanted: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
    client
        .pull(store, &demo.resolved, &wanted, &mut |_, _, _| {})
        .expect("pull");
    LockedImage {
        name: demo.resolved.reference.to_string(),
        digest: demo.resolved.digest.to_string(),
        media_type: demo.resolved.media_type.clone(),
        size: demo.resolved.size,
        platforms: demo
            .resolved
            .platforms
            .iter()
            .filter(|platform| platforms.contains(&platform.platform.as_str()))
            .map(|platform| LockedPlatform {
                platform: platform.platform.clone(),
                digest: platform.digest.to_string(),
                media_type: platform.media_type.clone(),
                size: platform.size,
            })
            .collect(),
    }
}

/// Check an archive's members: sorted, owner 0:0, mtime = epoch, the modes, `index.json`'s
/// one entry. Returns the blob digests (`sha256:…`) in it.
fn check_archive(bytes: &[u8], full_name: &str, tag: &str, digest: &str) -> Vec<String> {
    let members = members(bytes);
    let paths: Vec<&str> = members.iter().map(|member| member.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "members are sorted");
    assert_eq!(&paths[..2], ["blobs/", "blobs/sha256/"]);
    assert_eq!(&paths[paths.len() - 2..], ["index.json", "oci-layout"]);
    let mut blobs = Vec::new();
    for member in &members {
        assert_eq!((member.uid, member.gid), (0, 0), "{}", member.path);
        assert_eq!(member.mtime, EPOCH, "{}", member.path);
        if member.kind.is_dir() {
            assert_eq!(member.mode, 0o755, "{}", member.path);
        } else {
            assert_eq!(member.mode, 0o644, "{}", member.path);
        }
        if let Some(hex) = member
            .path
            .strip_prefix("blobs/sha256/")
            .filter(|hex| !hex.is_empty())
        {
            assert_eq!(digest_of(&member.contents), format!("sha256:{hex}"));
            blobs.push(format!("sha256:{hex}"));
        }
    }
    let index: Value =
        serde_json::from_slice(&members[members.len() - 2].contents).expect("index.json");
    let entries = index["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["digest"], digest);
    assert_eq!(entries[0]["annotations"][ANNOTATION_IMAGE_NAME], full_name);
    assert_eq!(entries[0]["annotations"][ANNOTATION_REF_NAME], tag);
    blobs
}

// ---------------------------------------------------------------------------------------
// Registry images

#[test]
fn a_registry_image_imports_under_its_name_with_the_registry_digest() {
    let registry = Registry::start();
    let demo = push_demo(&registry, "demo/app", &[]);
    let registry_digest = digest_of(&registry.raw("demo/app:1"));
    assert_eq!(demo.resolved.digest.to_string(), registry_digest);
    let full_name = format!("{}/demo/app:1", registry.host());
    let work = tempfile::tempdir().expect("temp dir");

    // The lock keeps linux/amd64 only: the registry's index, with amd64's blobs alone.
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(store_dir.path()).expect("store");
    let amd64_only = lock_and_fetch(&registry, &demo, &store, &["linux/amd64"]);
    let archive = archive_of(&store, &amd64_only, work.path(), "amd64.tar");
    let blobs = check_archive(
        &fs_err::read(&archive).expect("archive"),
        &full_name,
        "1",
        &registry_digest,
    );
    let mut expected: Vec<String> = demo.amd64.blobs().into_iter().collect();
    expected.push(registry_digest.clone());
    expected.sort();
    assert_eq!(
        blobs, expected,
        "the index and amd64's blobs, nothing of arm64's"
    );
    assert!(!blobs.contains(&demo.arm64.manifest));

    // skopeo reads it, with the registry's digest.
    assert_eq!(digest_of(&skopeo_inspect(&archive, true)), registry_digest);
    let inspected: Value =
        serde_json::from_slice(&skopeo_inspect(&archive, false)).expect("skopeo inspect JSON");
    assert_eq!(inspected["Architecture"], "amd64", "{inspected}");
    assert_eq!(
        inspected["Layers"],
        serde_json::json!(demo.amd64.layers),
        "{inspected}"
    );

    // containerd imports it for its own platform (the default, as MicroK8s' sideload does,
    // and explicitly, as `microk8s images import` does), under its full name and with the
    // registry's digest.
    let containerd = Containerd::start();
    containerd.import(&archive, &[]);
    containerd.import(&archive, &["--platform", "linux/amd64"]);
    let images = containerd.images();
    assert!(
        images.contains(&(full_name.clone(), registry_digest.clone())),
        "{full_name} {registry_digest} not in {images:?}"
    );
    // What it cannot do (documented in the module): import every platform of the index,
    // since the archive lacks arm64's blobs. MicroK8s never asks for that.
    let output = containerd.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        "--all-platforms",
        &archive.display().to_string(),
    ]);
    assert!(
        !output.status.success(),
        "containerd imported every platform of an archive with one platform's blobs"
    );
    eprintln!(
        "ctr import --all-platforms of the amd64-only archive: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );

    // With every platform kept, containerd imports every platform.
    let full_dir = tempfile::tempdir().expect("temp dir");
    let full_store = Store::open(full_dir.path()).expect("store");
    let every = lock_and_fetch(
        &registry,
        &demo,
        &full_store,
        &["linux/amd64", "linux/arm64"],
    );
    let archive = archive_of(&full_store, &every, work.path(), "all.tar");
    let blobs = check_archive(
        &fs_err::read(&archive).expect("archive"),
        &full_name,
        "1",
        &registry_digest,
    );
    assert!(blobs.contains(&demo.arm64.manifest) && blobs.contains(&demo.amd64.manifest));
    containerd.import(&archive, &["--all-platforms"]);
    assert!(containerd
        .images()
        .contains(&(full_name.clone(), registry_digest.clone())));

    // A derived image on top of it (base layers first, then kiln's), imported too.
    let derived = build_derived_image(
        &store,
        &DerivedImage {
            name: "kiln.local/demo/app-plus:1".to_owned(),
            platform: "linux/amd64".to_owned(),
            from: Some(amd64_only.clone()),
            layers: vec![LayerSource::Files(vec![(
                "/etc/kiln/extra".to_owned(),
                0o644,
                b"extra\n".to_vec(),
            )])],
            config: DerivedConfig {
                env: vec!["GREETING=hi".to_owned()],
                ..DerivedConfig::default()
            },
        },
        EPOCH,
    )
    .expect("derived image");
    let base_layers: Vec<String> = derived.layers[..2].iter().map(|d| d.to_string()).collect();
    assert_eq!(base_layers, demo.amd64.layers);
    assert_eq!(derived.layers.len(), 3);
    let config: Value =
        serde_json::from_slice(&fs_err::read(store.blob_path(&derived.config)).expect("config"))
            .expect("config JSON");
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["/hello"]),
        "kept from the base"
    );
    assert_eq!(config["config"]["Env"], serde_json::json!(["GREETING=hi"]));
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let archive = archive_of(&store, &derived.locked, work.path(), "derived.tar");
    containerd.import(&archive, &[]);
    assert!(containerd.images().contains(&(
        "kiln.local/demo/app-plus:1".to_owned(),
        derived.manifest.to_string()
    )));
}

#[test]
fn a_docker_manifest_list_imports_with_its_digest() {
    let registry = Registry::start();
    let demo = push_demo(&registry, "demo/v2s2", &["--format", "v2s2"]);
    assert_eq!(
        demo.resolved.media_type,
        kiln::fetch::oci::DOCKER_MANIFEST_LIST
    );
    let registry_digest = digest_of(&registry.raw("demo/v2s2:1"));
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(store_dir.path()).expect("store");
    let locked = lock_and_fetch(&registry, &demo, &store, &["linux/amd64"]);
    let work = tempfile::tempdir().expect("temp dir");
    let archive = archive_of(&store, &locked, work.path(), "v2s2.tar");
    let full_name = format!("{}/demo/v2s2:1", registry.host());
    check_archive(
        &fs_err::read(&archive).expect("archive"),
        &full_name,
        "1",
        &registry_digest,
    );
    let containerd = Containerd::start();
    containerd.import(&archive, &[]);
    assert!(containerd
        .images()
        .contains(&(full_name, registry_digest.clone())));
    assert_eq!(digest_of(&skopeo_inspect(&archive, true)), registry_digest);
}

#[test]
fn an_archive_of_an_image_missing_from_the_store_names_the_blob() {
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(store_dir.path()).expect("store");
    let digest = digest_of(b"nothing");
    let image = LockedImage {
        name: "busybox:1.36".to_owned(),
        digest: digest.clone(),
        media_type: kiln::fetch::oci::OCI_MANIFEST.to_owned(),
        size: 7,
        platforms: Vec::new(),
    };
    let error = write_image_archive(&store, &image, Vec::new(), EPOCH)
        .expect_err("nothing in the store")
        .to_string();
    assert!(error.contains("busybox:1.36"), "{error}");
    assert!(error.contains(&digest), "{error}");
    assert!(error.contains("kiln fetch"), "{error}");
}

// ---------------------------------------------------------------------------------------
// Derived images

/// Build the `kiln-hello` package in `dir` with `dpkg-deb --build -Z<compression>`, its files
/// stamped `mtime` (`touch -d`) and dpkg-deb run in time zone `tz`; the .deb's path.
fn build_deb(dir: &Path, compression: &str, mtime: &str, tz: &str) -> PathBuf {
    let dpkg_deb = require("dpkg-deb", "dpkg");
    let root = dir.join(format!("pkg-{compression}"));
    let files = [
        (
            "DEBIAN/control",
            0o644,
            "Package: kiln-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: kiln <kiln@example.invalid>\nDescription: says hello\n",
        ),
        ("usr/bin/kiln-hello", 0o755, "#!/bin/sh\necho hello from kiln\n"),
        (
            "usr/share/doc/kiln-hello/README",
            0o644,
            "A tiny package built by kiln's tests.\n",
        ),
    ];
    for (path, mode, contents) in files {
        let target = root.join(path);
        fs_err::create_dir_all(target.parent().unwrap()).expect("dirs");
        fs_err::write(&target, contents).expect("file");
        fs_err::set_permissions(&target, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    // A symbolic link, and a path too long for a plain tar header.
    std::os::unix::fs::symlink("kiln-hello", root.join("usr/bin/kiln-hi")).expect("symlink");
    let long = root.join(long_path());
    fs_err::create_dir_all(long.parent().unwrap()).expect("dirs");
    fs_err::write(&long, "long\n").expect("long file");
    fs_err::set_permissions(&long, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    run(Command::new("touch")
        .args(["-h", "-d", mtime])
        .args(files.iter().map(|(path, _, _)| root.join(path)))
        .arg(root.join("usr/bin/kiln-hi"))
        .arg(&long));
    let deb = dir.join(format!("kiln-hello-{compression}.deb"));
    run(Command::new(dpkg_deb)
        .env("TZ", tz)
        .env_remove("SOURCE_DATE_EPOCH")
        .arg("--root-owner-group")
        .arg(format!("-Z{compression}"))
        .arg("--build")
        .arg(&root)
        .arg(&deb));
    deb
}

/// A path in the package longer than a tar header's 100 bytes.
fn long_path() -> String {
    format!("usr/share/kiln-hello/{}", "a-rather-long-name-".repeat(6))
}

fn hello_spec(deb: &Path) -> DerivedImage {
    DerivedImage {
        name: "kiln.local/demo/hello:1".to_owned(),
        platform: "linux/amd64".to_owned(),
        from: None,
        layers: vec![
            LayerSource::Deb(deb.to_path_buf()),
            LayerSource::Files(vec![(
                "/etc/kiln/motd".to_owned(),
                0o644,
                b"built by kiln\n".to_vec(),
            )]),
        ],
        config: DerivedConfig {
            entrypoint: vec!["/usr/bin/kiln-hello".to_owned()],
            cmd: Vec::new(),
            env: vec!["PATH=/usr/bin:/bin".to_owned()],
            working_dir: Some("/".to_owned()),
        },
    }
}

/// Build `spec` into a new store in a new temp dir.
fn build_in_fresh_store(spec: &DerivedImage) -> (tempfile::TempDir, Store, Derived) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let built = build_derived_image(&store, spec, EPOCH).expect("derived image");
    (dir, store, built)
}

#[test]
fn a_derived_image_from_a_deb_imports_under_its_name() {
    let work = tempfile::tempdir().expect("temp dir");
    let deb = build_deb(work.path(), "xz", "2020-01-01 00:00", "UTC");
    let (_dir, store, built) = build_in_fresh_store(&hello_spec(&deb));
    assert_eq!(built.layers.len(), 2);
    assert_eq!(built.diff_ids.len(), 2);

    // The .deb's layer: its files and their parents, sorted, normalized.
    let layer = fs_err::File::open(store.blob_path(&built.layers[0])).expect("layer");
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(layer)
        .read_to_end(&mut tar_bytes)
        .expect("gunzip");
    assert_eq!(digest_of(&tar_bytes), built.diff_ids[0].to_string());
    let entries = members(tar_bytes.as_slice());
    let summary: Vec<(String, u32)> = entries
        .iter()
        .map(|member| (member.path.clone(), member.mode))
        .collect();
    let long = long_path();
    assert_eq!(
        summary,
        [
            ("usr/", 0o755),
            ("usr/bin/", 0o755),
            ("usr/bin/kiln-hello", 0o755),
            ("usr/bin/kiln-hi", 0o777),
            ("usr/share/", 0o755),
            ("usr/share/doc/", 0o755),
            ("usr/share/doc/kiln-hello/", 0o755),
            ("usr/share/doc/kiln-hello/README", 0o644),
            ("usr/share/kiln-hello/", 0o755),
            (long.as_str(), 0o600),
        ]
        .map(|(path, mode)| (path.to_owned(), mode))
    );
    let link = entries
        .iter()
        .find(|member| member.path == "usr/bin/kiln-hi")
        .expect("the link");
    assert_eq!(link.kind, tar::EntryType::Symlink);
    for member in &entries {
        assert_eq!((member.uid, member.gid, member.mtime), (0, 0, EPOCH));
    }
    let layer = fs_err::read(store.blob_path(&built.layers[0])).expect("layer");
    assert_eq!(&layer[4..8], &[0, 0, 0, 0], "gzip mtime 0");
    assert_eq!(layer[3] & 0x08, 0, "no file name in the gzip header");

    // The config: canonical, dated by the epoch only.
    let config_bytes = fs_err::read(store.blob_path(&built.config)).expect("config");
    let config: Value = serde_json::from_slice(&config_bytes).expect("config JSON");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    for entry in config["history"].as_array().expect("history") {
        assert_eq!(entry["created"], "2023-11-14T22:13:20Z");
    }
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/kiln-hello"])
    );
    let text = String::from_utf8(config_bytes).unwrap();
    assert!(!text.contains(&work.path().display().to_string()), "{text}");

    // Its archive: containerd imports it under its name, skopeo agrees on the digest.
    let archive = archive_of(&store, &built.locked, work.path(), "hello.tar");
    check_archive(
        &fs_err::read(&archive).expect("archive"),
        "kiln.local/demo/hello:1",
        "1",
        &built.manifest.to_string(),
    );
    assert_eq!(
        digest_of(&skopeo_inspect(&archive, true)),
        built.manifest.to_string()
    );
    let containerd = Containerd::start();
    containerd.import(&archive, &[]);
    let images = containerd.images();
    assert!(
        images.contains(&(
            "kiln.local/demo/hello:1".to_owned(),
            built.manifest.to_string()
        )),
        "{images:?}"
    );
}

/// Set by [`a_derived_image_is_the_same_everywhere`] when it runs this test binary again.
const CHILD_DEB: &str = "KILN_TEST_DERIVED_DEB";
const CHILD_OUT: &str = "KILN_TEST_DERIVED_OUT";

/// Not a test of its own: when the parent test runs this binary with `CHILD_DEB` set, build
/// the hello image from that .deb (in this process's time zone and temp dir) and write its
/// manifest digest to `CHILD_OUT`.
#[test]
fn derived_image_child_process() {
    let (Some(deb), Some(out)) = (std::env::var_os(CHILD_DEB), std::env::var_os(CHILD_OUT)) else {
        return;
    };
    let (_dir, _store, built) = build_in_fresh_store(&hello_spec(Path::new(&deb)));
    fs_err::write(out, built.manifest.to_string()).expect("write the digest");
}

#[test]
fn a_derived_image_is_the_same_everywhere() {
    let work = tempfile::tempdir().expect("temp dir");
    let xz = build_deb(work.path(), "xz", "2020-01-01 00:00", "UTC");
    let (_dir, _store, reference) = build_in_fresh_store(&hello_spec(&xz));

    // The same package compressed otherwise, with other mtimes, built in another time zone
    // and directory: the same layer, so the same image.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    for compression in ["gzip", "zstd", "none"] {
        let deb = build_deb(
            elsewhere.path(),
            compression,
            "2011-11-11 11:11",
            "Pacific/Auckland",
        );
        assert_ne!(
            digest_of(&fs_err::read(&deb).unwrap()),
            digest_of(&fs_err::read(&xz).unwrap())
        );
        let (_dir, _store, built) = build_in_fresh_store(&hello_spec(&deb));
        assert_eq!(built, reference, "built from the {compression} .deb");
    }

    // Another process, in other time zones and locales, in another temp dir.
    for (tz, lang) in [("Asia/Kolkata", "de_DE.UTF-8"), ("America/St_Johns", "C")] {
        let out = work.path().join(format!("digest-{}", tz.replace('/', "-")));
        let output = Command::new(std::env::current_exe().expect("test binary"))
            .args(["derived_image_child_process", "--exact", "--test-threads=1"])
            .env(CHILD_DEB, &xz)
            .env(CHILD_OUT, &out)
            .env("TZ", tz)
            .env("LANG", lang)
            .env("LC_ALL", lang)
            .env("TMPDIR", elsewhere.path())
            .output()
            .expect("run the child");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert_eq!(
            fs_err::read_to_string(&out).expect("the child's digest"),
            reference.manifest.to_string(),
            "built in TZ={tz}"
        );
    }
}

#[test]
fn a_derived_image_of_files_has_known_digests() {
    // Pinned: these digests are the same on every machine. If this fails after a change of
    // the layer or config format (or of flate2's compressor), every derived image's digest
    // changed: bump the step version of whatever builds derived images.
    let spec = DerivedImage {
        name: "kiln.local/demo/files:1".to_owned(),
        platform: "linux/amd64".to_owned(),
        from: None,
        layers: vec![LayerSource::Files(vec![
            (
                "/srv/www/index.html".to_owned(),
                0o644,
                b"<p>hello</p>\n".to_vec(),
            ),
            (
                "bin/serve".to_owned(),
                0o755,
                b"#!/bin/sh\nexit 0\n".to_vec(),
            ),
        ])],
        config: DerivedConfig {
            entrypoint: vec!["/bin/serve".to_owned()],
            cmd: vec!["--port".to_owned(), "8080".to_owned()],
            env: Vec::new(),
            working_dir: Some("/srv/www".to_owned()),
        },
    };
    let (_dir, store, built) = build_in_fresh_store(&spec);
    let (_again_dir, _again_store, again) = build_in_fresh_store(&spec);
    assert_eq!(built, again);
    let config = fs_err::read_to_string(store.blob_path(&built.config)).expect("config");
    assert_eq!(
        config,
        format!(
            r#"{{"architecture":"amd64","config":{{"Cmd":["--port","8080"],"Entrypoint":["/bin/serve"],"WorkingDir":"/srv/www"}},"created":"2023-11-14T22:13:20Z","history":[{{"created":"2023-11-14T22:13:20Z","created_by":"kiln: 2 file(s)"}}],"os":"linux","rootfs":{{"diff_ids":["{}"],"type":"layers"}}}}"#,
            built.diff_ids[0]
        )
    );
    assert_eq!(
        (
            built.manifest.to_string(),
            built.layers[0].to_string(),
            built.diff_ids[0].to_string()
        ),
        (
            "sha256:56c75e64cbe14a06cea061aeb76d7ced45e959432f976b40aef24fce8b7768e9".to_owned(),
            "sha256:fbac71e7ddc563f97a709ad9ff744093c3cd28a31b5d56aa9d5a7fcc5316cfd0".to_owned(),
            "sha256:410e5b768be1c9f3c14c98b89db349d9175023146e32636c34d2ef038cb81549".to_owned()
        )
    );
}

#[test]
fn an_archive_of_a_damaged_blob_names_the_blob() {
    let spec = DerivedImage {
        name: "kiln.local/demo/damaged:1".to_owned(),
        platform: "linux/amd64".to_owned(),
        from: None,
        layers: vec![LayerSource::Files(vec![(
            "hello".to_owned(),
            0o644,
            b"hello\n".to_vec(),
        )])],
        config: DerivedConfig::default(),
    };
    let (_dir, store, built) = build_in_fresh_store(&spec);
    let layer = store.blob_path(&built.layers[0]);
    let mut bytes = fs_err::read(&layer).expect("layer");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs_err::set_permissions(&layer, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    fs_err::write(&layer, &bytes).expect("damage the layer");
    let error = write_image_archive(&store, &built.locked, std::io::sink(), EPOCH)
        .expect_err("a damaged layer")
        .to_string();
    assert!(error.contains("kiln.local/demo/damaged:1"), "{error}");
    assert!(error.contains(&built.layers[0].to_string()), "{error}");
    assert!(error.contains("kiln store verify"), "{error}");
}
