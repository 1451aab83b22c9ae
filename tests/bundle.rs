//! `kiln build bundle`: one byte-identical file with everything a node needs, built from
//! artifacts the test serves itself (a registry image, a chart, a file) on 127.0.0.1.

mod common;

use std::process::Command;

use common::http_server::{content, Reply, TestServer};
use common::Kiln;
use sha2::{Digest as _, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

const CLUSTER: &str = "[cluster]\nname = \"lab\"\ndomain = \"lab.example\"\nos = \"debian-12\"\nimages = [\"local\"]\n\n[network]\nsubnet = \"10.10.0.0/24\"\n[network.dns]\nservers = [\"10.10.0.10\"]\n\n[nfs]\nexport = \"/srv/nfs/k8s\"\n\n[nodes.n1]\nroles = [\"nfs-server\", \"container-host\"]\nmac = \"52:54:00:00:00:01\"\nip = \"10.10.0.10\"\n";

/// A registry with one image, a server with a chart repository and a file, and a profile
/// whose set pins them, locked and fetched into `store/`.
struct Fixture {
    lab: Kiln,
    _registry: common::registry::Registry,
    _server: TestServer,
}

fn fixture() -> Fixture {
    use common::registry::{Layout, Registry};
    let registry = Registry::start();
    let mut layout = Layout::new();
    let layer = layout.layer("app", &content(100_000, 9));
    let image = layout.image("linux", "amd64", &[&layer]);
    layout.tag(&image.descriptor, "1.0");
    registry.push(&layout, "1.0", "lab/app", &[]);

    let chart = content(30_000, 4);
    let driver = content(20_000, 5);
    let index = format!(
        "apiVersion: v1\nentries:\n  demo:\n    - name: demo\n      version: 1.2.3\n      digest: {}\n      urls: [demo-1.2.3.tgz]\n",
        sha256(&chart)
    );
    let server = TestServer::start(move |_, request| {
        match request.line.split_whitespace().nth(1).unwrap_or("") {
            "/charts/index.yaml" => Reply::whole(index.as_bytes()),
            "/charts/demo-1.2.3.tgz" => Reply::whole(&chart),
            "/nvidia-driver.deb" => Reply::whole(&driver),
            _ => Reply::status(404),
        }
    });
    let set = format!(
        "[[image]]\nname = \"{0}/lab/app:1.0\"\n\n[[derived]]\nname = \"registry.lab.example/lab/app:1.0-site-ca\"\nfrom = \"{0}/lab/app:1.0\"\nfiles = [{{ path = \"/etc/ssl/certs/site-ca.pem\", source = \"files/site-ca.pem\" }}]\nenv = [\"SSL_CERT_FILE=/etc/ssl/certs/site-ca.pem\"]\n\n[[chart]]\nname = \"demo\"\nrepository = \"{1}\"\nversion = \"1.2.3\"\n\n[[file]]\nname = \"nvidia-driver\"\nurl = \"{2}\"\n",
        registry.host(),
        server.url("/charts"),
        server.url("/nvidia-driver.deb"),
    );
    let mirror = format!("{}=http://{}", registry.host(), registry.host());
    let lab = Kiln::new()
        .file(
            "lab/files/site-ca.pem",
            "-----BEGIN CERTIFICATE-----\nTESTCA\n-----END CERTIFICATE-----\n",
        )
        .file("lab/cluster.toml", CLUSTER)
        .file("lab/images/local.toml", &set);
    common::copy_dir(&common::repo().join("profiles/roles"), &lab.path("roles"));
    for args in [
        vec![
            "--profile",
            "lab",
            "--store",
            "store",
            "lock",
            "--mirror",
            &mirror,
        ],
        vec![
            "--profile",
            "lab",
            "--store",
            "store",
            "fetch",
            "--mirror",
            &mirror,
        ],
    ] {
        let run = lab.run_with(&args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    Fixture {
        lab,
        _registry: registry,
        _server: server,
    }
}

/// Build the bundle from the fixture with a given environment; return its bytes.
fn build(
    fixture: &Fixture,
    out: &str,
    environment: &[(&str, &str)],
    umask: &str,
) -> (i32, String, Vec<u8>) {
    let command = format!(
        "umask {umask}; exec '{}' --profile lab --store store build bundle --out '{out}'",
        env!("CARGO_BIN_EXE_kiln")
    );
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(fixture.lab.dir.path())
        .envs(environment.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let bytes =
        fs_err::read(fixture.lab.path(&format!("{out}/lab/bundle.tar"))).unwrap_or_default();
    (output.status.code().unwrap_or(-1), stderr, bytes)
}

#[test]
fn two_builds_in_different_environments_are_byte_identical_and_the_second_does_nothing() {
    let fixture = fixture();
    let (code, stderr, first) = build(
        &fixture,
        "out-a",
        &[("TZ", "Asia/Tokyo"), ("HOME", "/tmp")],
        "022",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("bundle: built step"), "{stderr}");
    let (code, stderr, again) = build(
        &fixture,
        "out-b",
        &[("TZ", "America/Lima"), ("LANG", "C")],
        "077",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("nothing changed"), "{stderr}");
    assert!(first.len() > 100_000, "the bundle is {} bytes", first.len());
    assert_eq!(sha256(&first), sha256(&again));
    // Rebuild from scratch (the step removed) in yet another environment: same bytes.
    for entry in fs_err::read_dir(fixture.lab.path("store/steps")).unwrap() {
        fs_err::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    let (code, stderr, rebuilt) = build(
        &fixture,
        "out-c",
        &[("TZ", "Pacific/Auckland"), ("HOME", "/root")],
        "002",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("bundle: built step"), "{stderr}");
    assert_eq!(
        sha256(&first),
        sha256(&rebuilt),
        "a rebuild gave other bytes"
    );
}

/// The bundle's members, extracted with GNU tar.
fn extract(fixture: &Fixture, bundle: &[u8]) -> std::path::PathBuf {
    let dir = fixture.lab.path("extracted");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(fixture.lab.path("bundle.tar"), bundle).unwrap();
    let output = Command::new("tar")
        .args(["-xf", "../bundle.tar"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

#[test]
fn members_manifest_checksums_sbom_and_install_script() {
    let fixture = fixture();
    let (code, stderr, bundle) = build(&fixture, "out", &[], "022");
    assert_eq!(code, 0, "{stderr}");
    let listing = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(fixture.lab.path("out/lab/bundle.tar"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    for line in listing.lines() {
        assert!(line.contains(" 0/0 "), "not owned by 0/0: {line}");
    }
    let dir = extract(&fixture, &bundle);
    // Every member is listed in SHA256SUMS and checks out.
    let check = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.join("manifest.json")).unwrap()).unwrap();
    let members = manifest["members"].as_array().unwrap();
    let kinds: std::collections::BTreeSet<&str> = members
        .iter()
        .map(|member| member["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "derived-image",
        "image",
        "chart",
        "file",
        "node-config",
        "sbom",
        "install-script",
        "lock",
    ] {
        assert!(kinds.contains(kind), "no {kind} member: {kinds:?}");
    }
    assert!(dir.join("charts/demo-1.2.3.tgz").is_file());
    // The derived image: the registry image plus a layer with the site CA, and the
    // environment pointing the image's TLS clients at it.
    let image_dir = fixture.lab.path("derived");
    fs_err::create_dir_all(&image_dir).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(dir.join("images/registry.lab.example_lab_app_1.0-site-ca.tar"))
        .current_dir(&image_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let blob = |digest: &str| {
        fs_err::read(
            image_dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(image_dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "registry.lab.example/lab/app:1.0-site-ca"
    );
    let image_manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&blob(image_manifest["config"]["digest"].as_str().unwrap()))
            .unwrap();
    let env = config["config"]["Env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|entry| entry == "SSL_CERT_FILE=/etc/ssl/certs/site-ca.pem"),
        "{env:?}"
    );
    let layers = image_manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "the base's layer and the CA's");
    let last = layers.last().unwrap()["digest"].as_str().unwrap();
    fs_err::write(image_dir.join("last.tar.gz"), blob(last)).unwrap();
    let listing = Command::new("tar")
        .args(["-tzf", "last.tar.gz"])
        .current_dir(&image_dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("etc/ssl/certs/site-ca.pem"));
    assert!(dir.join("nvidia/nvidia-driver.deb").is_file());
    // Every image of the bundle imports with the real containerd under its full name and
    // the digest the manifest records (the registry's, for a fetched image).
    let containerd = common::containerd::Containerd::start();
    for member in members
        .iter()
        .filter(|member| member["kind"] == "image" || member["kind"] == "derived-image")
    {
        let path = dir.join(member["path"].as_str().unwrap());
        containerd.import(&path, &[]);
        let digest = member["pin"]["digest"].as_str().unwrap();
        let name = member["pin"]["image"]
            .as_str()
            .or(member["pin"]["derived"].as_str())
            .unwrap()
            .to_string();
        let images = containerd.images();
        assert!(
            images
                .iter()
                .any(|(listed, at)| listed == &name && at == digest),
            "ctr lists {images:?}; expected {name} at {digest}"
        );
    }
    assert_eq!(manifest["lock"]["version"], 1);
    let sbom: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.join("sbom.spdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert_eq!(sbom["packages"].as_array().unwrap().len(), 3);
    // install.sh: shellcheck-clean, and its dry run lists the steps.
    let shellcheck = Command::new("shellcheck")
        .arg(dir.join("install.sh"))
        .output()
        .expect("shellcheck (Debian package shellcheck)");
    assert!(
        shellcheck.status.success(),
        "{}",
        String::from_utf8_lossy(&shellcheck.stdout)
    );
    let dry_run = Command::new(dir.join("install.sh"))
        .args(["--node", "n1", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        dry_run.status.success(),
        "{}",
        String::from_utf8_lossy(&dry_run.stderr)
    );
    let text = String::from_utf8_lossy(&dry_run.stdout)
        .replace(&dir.display().to_string(), "[BUNDLE]")
        .replace(&fixture._registry.host().replace(':', "_"), "[REGISTRY]");
    insta::assert_snapshot!(text);
}

#[test]
fn build_stops_before_any_work_on_an_error_level_lint_finding() {
    let lab = Kiln::new()
        .file(
            "lab/cluster.toml",
            &CLUSTER.replace(
                "[nfs]\nexport = \"/srv/nfs/k8s\"\n",
                "[nfs]\nexport = \"/srv/nfs/k8s\"\noptions = [\"rw\", \"sync\"]\n",
            ),
        )
        .file("lab/images/local.toml", "description = \"nothing\"\n");
    common::copy_dir(&common::repo().join("profiles/roles"), &lab.path("roles"));
    let run = lab.run_with(&["--profile", "lab", "--store", "store", "build", "bundle"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("nfs-root-squash"), "{}", run.stderr);
    assert!(
        run.stderr.contains("stops before doing any work"),
        "{}",
        run.stderr
    );
    assert!(!lab.path("store").exists(), "the store was touched");
    assert!(!lab.path("out").exists(), "out/ was written");
}

/// A tampered copy of `bundle` made with Python's tarfile (what an attacker or a bad copy
/// would produce): `change` edits the extracted tree or the member list.
fn tampered(fixture: &Fixture, bundle: &[u8], name: &str, script: &str) -> std::path::PathBuf {
    let source = fixture.lab.path("good.tar");
    fs_err::write(&source, bundle).unwrap();
    let target = fixture.lab.path(name);
    let program = format!(
        "import tarfile, io, sys\nsrc = tarfile.open(sys.argv[1])\ndst = tarfile.open(sys.argv[2], 'w', format=tarfile.GNU_FORMAT)\n{script}\ndst.close()\n"
    );
    let output = Command::new("python3")
        .arg("-c")
        .arg(program)
        .arg(&source)
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    target
}

const COPY_ALL: &str =
    "for m in src.getmembers():\n    dst.addfile(m, src.extractfile(m) if m.isfile() else None)";

#[test]
fn verify_inspect_and_import_and_every_kind_of_tampering_is_named() {
    let fixture = fixture();
    let (code, stderr, bundle) = build(&fixture, "out", &[], "022");
    assert_eq!(code, 0, "{stderr}");
    let good = fixture.lab.path("out/lab/bundle.tar");
    let run = fixture
        .lab
        .run_with(&["bundle", "verify", &good.display().to_string()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = fixture
        .lab
        .run_with(&["bundle", "inspect", "--json", &good.display().to_string()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let inspected: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(inspected["cluster"], "lab");
    assert_eq!(inspected["components"]["chart"]["members"], 1);
    assert_eq!(inspected["components"]["image"]["members"], 1);

    let cases = [
        (
            "flipped.tar",
            "for m in src.getmembers():\n    data = src.extractfile(m).read() if m.isfile() else None\n    if m.name == 'charts/demo-1.2.3.tgz':\n        data = bytes([data[0] ^ 1]) + data[1:]\n    dst.addfile(m, io.BytesIO(data) if data is not None else None)".to_string(),
            "charts/demo-1.2.3.tgz",
        ),
        (
            "extra.tar",
            format!("{COPY_ALL}\ninfo = tarfile.TarInfo('files/extra'); info.size = 3\ndst.addfile(info, io.BytesIO(b'abc'))"),
            "is not listed in manifest.json",
        ),
        (
            "escape.tar",
            format!("{COPY_ALL}\ninfo = tarfile.TarInfo('../evil'); info.size = 3\ndst.addfile(info, io.BytesIO(b'abc'))"),
            "../evil",
        ),
        (
            "missing.tar",
            "for m in src.getmembers():\n    if m.name != 'install.sh':\n        dst.addfile(m, src.extractfile(m) if m.isfile() else None)".to_string(),
            "install.sh",
        ),
    ];
    for (name, script, expected) in cases {
        let path = tampered(&fixture, &bundle, name, &script);
        let run = fixture
            .lab
            .run_with(&["bundle", "verify", &path.display().to_string()]);
        assert_eq!(run.code, 1, "{name}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{name}: {}", run.stderr);
        // Importing it stores nothing.
        let store = format!("store-{name}");
        let run = fixture.lab.run_with(&[
            "--store",
            &store,
            "store",
            "import",
            &path.display().to_string(),
        ]);
        assert_eq!(run.code, 1, "{name}: {}", run.stderr);
        let blobs = fixture.lab.path(&format!("{store}/blobs/sha256"));
        assert!(
            common::files_below(&blobs).is_empty(),
            "{name}: import stored {:?}",
            common::files_below(&blobs)
        );
    }
    // A truncated copy.
    let truncated = fixture.lab.path("truncated.tar");
    fs_err::write(&truncated, &bundle[..bundle.len() / 2]).unwrap();
    let run = fixture
        .lab
        .run_with(&["bundle", "verify", &truncated.display().to_string()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("truncated or corrupt"),
        "{}",
        run.stderr
    );

    // An air-gapped site: an empty store filled from the bundle has everything the lock
    // names, with no network.
    let run = fixture.lab.run_with(&[
        "--store",
        "site-store",
        "store",
        "import",
        &good.display().to_string(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = fixture.lab.run_with(&[
        "--profile",
        "lab",
        "--store",
        "site-store",
        "fetch",
        "--offline",
    ]);
    assert_eq!(
        run.code, 0,
        "the imported store lacks something: {}",
        run.stderr
    );
    let run = fixture
        .lab
        .run_with(&["--store", "site-store", "store", "verify"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn install_sh_names_missing_secrets_and_fills_them_in() {
    let lab = Kiln::new()
        .file(
            "lab/cluster.toml",
            "[cluster]\nname = \"lab\"\ndomain = \"lab.example\"\nos = \"ubuntu-24.04\"\n\n[network]\nsubnet = \"10.10.0.0/24\"\n[network.dns]\nservers = [\"10.10.0.2\"]\n\n[microk8s]\nchannel = \"1.34/stable\"\ntoken = { secret = \"join-token\" }\n[microk8s.addons.dns]\n\n[nodes.cp1]\nroles = [\"control-plane\"]\nmac = \"52:54:00:00:00:01\"\nip = \"10.10.0.10\"\n",
        );
    common::copy_dir(&common::repo().join("profiles/roles"), &lab.path("roles"));
    for args in [
        vec!["--profile", "lab", "--store", "store", "lock"],
        vec!["--profile", "lab", "--store", "store", "build", "bundle"],
    ] {
        let run = lab.run_with(&args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    let bundle = fs_err::read(lab.path("out/lab/bundle.tar")).unwrap();
    // No secret value is in the bundle: the launch configuration holds a placeholder.
    assert!(!String::from_utf8_lossy(&bundle).contains("s3cr3t"));
    let dir = lab.path("extracted");
    fs_err::create_dir_all(&dir).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(lab.path("out/lab/bundle.tar"))
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let launch = fs_err::read_to_string(dir.join("nodes/cp1/root/etc/microk8s.yaml")).unwrap();
    assert!(launch.contains("@@kiln-secret:join-token@@"), "{launch}");

    let missing = Command::new(dir.join("install.sh"))
        .args(["--node", "cp1", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("needs these secrets") && stderr.contains("join-token"),
        "{stderr}"
    );

    let secrets = lab.path("secrets");
    fs_err::create_dir_all(&secrets).unwrap();
    fs_err::write(
        secrets.join("join-token"),
        "s3cr3t-0123456789abcdef0123456789ab\n",
    )
    .unwrap();
    let dry_run = Command::new(dir.join("install.sh"))
        .args(["--node", "cp1", "--dry-run", "--secrets"])
        .arg(&secrets)
        .output()
        .unwrap();
    assert!(
        dry_run.status.success(),
        "{}",
        String::from_utf8_lossy(&dry_run.stderr)
    );
    let text = String::from_utf8_lossy(&dry_run.stdout)
        .replace(&dir.display().to_string(), "[BUNDLE]")
        .replace(&secrets.display().to_string(), "[SECRETS]");
    assert!(!text.contains("s3cr3t"), "a secret value was printed");
    insta::assert_snapshot!(text);

    // For real, into a scratch root: the secret is filled in, root-only, and nothing else
    // changed in the file.
    let target = lab.path("target-root");
    let real = Command::new(dir.join("install.sh"))
        .args(["--node", "cp1", "--secrets"])
        .arg(&secrets)
        .arg("--root")
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        real.status.success(),
        "{}{}",
        String::from_utf8_lossy(&real.stdout),
        String::from_utf8_lossy(&real.stderr)
    );
    assert!(!String::from_utf8_lossy(&real.stdout).contains("s3cr3t"));
    let placed = fs_err::read_to_string(target.join("etc/microk8s.yaml")).unwrap();
    assert_eq!(
        placed,
        launch.replace(
            "@@kiln-secret:join-token@@",
            "s3cr3t-0123456789abcdef0123456789ab"
        )
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs_err::metadata(target.join("etc/microk8s.yaml"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(target.join("usr/lib/kiln/firstboot").is_file());
    // And again: the same result (install.sh can run twice).
    let again = Command::new(dir.join("install.sh"))
        .args(["--node", "cp1", "--secrets"])
        .arg(&secrets)
        .arg("--root")
        .arg(&target)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(
        fs_err::read_to_string(target.join("etc/microk8s.yaml")).unwrap(),
        placed
    );
}
