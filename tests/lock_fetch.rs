//! `kiln lock`, `kiln fetch`, `kiln store verify` and `kiln gc` end to end, against a test
//! HTTP server on 127.0.0.1 (a chart repository and plain files).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::http_server::{content, Delivery, Reply, TestServer};
use common::Kiln;
use sha2::{Digest as _, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// What the test server holds.
struct Site {
    server: TestServer,
    tool: Vec<u8>,
    chart: Vec<u8>,
}

/// A server with a chart repository at /charts and a file at /tool.bin. `throttle` makes
/// the file slow to download.
fn site(tool_size: usize, throttle: Option<usize>) -> Site {
    let tool = content(tool_size, 7);
    let chart = content(20_000, 11);
    let chart_digest = sha256(&chart);
    let index = format!(
        "apiVersion: v1\nentries:\n  demo-chart:\n    - name: demo-chart\n      version: 1.0.0\n      digest: {chart_digest}\n      urls:\n        - demo-chart-1.0.0.tgz\n    - name: demo-chart\n      version: 0.9.0\n      urls:\n        - demo-chart-0.9.0.tgz\n"
    );
    let (tool_body, chart_body) = (tool.clone(), chart.clone());
    let server = TestServer::start(move |_, request| {
        let path = request
            .line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        match path.as_str() {
            "/charts/index.yaml" => Reply::whole(index.as_bytes()),
            "/charts/demo-chart-1.0.0.tgz" => Reply::whole(&chart_body),
            "/tool.bin" => {
                let reply = Reply::honouring_range(&tool_body, request);
                match throttle {
                    Some(piece) if reply.status == 200 || reply.status == 206 => {
                        reply.delivered(Delivery::Throttled(piece))
                    }
                    _ => reply,
                }
            }
            _ => Reply::status(404),
        }
    });
    Site {
        server,
        tool,
        chart,
    }
}

/// A profile using one pin set, `images/local.toml`, with the given text.
fn profile(set: &str) -> Kiln {
    Kiln::new()
        .file(
            "lab/cluster.toml",
            "[cluster]\nname = \"lab\"\ndomain = \"lab.example\"\nos = \"debian-12\"\nimages = [\"local\"]\n\n[network]\nsubnet = \"10.10.0.0/24\"\n[network.dns]\nservers = [\"10.10.0.2\"]\n\n[nodes.n1]\nmac = \"52:54:00:00:00:01\"\nip = \"10.10.0.10\"\n",
        )
        .file("lab/images/local.toml", set)
}

fn set_for(site: &Site) -> String {
    format!(
        "description = \"test artifacts\"\n\n[[file]]\nname = \"tool\"\nurl = \"{}\"\n\n[[chart]]\nname = \"demo-chart\"\nrepository = \"{}\"\nversion = \"1.0.0\"\n",
        site.server.url("/tool.bin"),
        site.server.url("/charts"),
    )
}

fn kiln(kiln: &Kiln, args: &[&str]) -> common::Run {
    let mut all = vec!["--profile", "lab", "--store", "store"];
    all.extend_from_slice(args);
    kiln.run_with(&all)
}

#[test]
fn lock_pins_files_and_charts_and_fetch_reproduces_them() {
    let site = site(300_000, None);
    let lab = profile(&set_for(&site));
    let run = kiln(&lab, &["lock"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lock = fs_err::read_to_string(lab.path("lab/kiln.lock")).unwrap();
    assert!(
        lock.contains(&format!("digest = \"sha256:{}\"", sha256(&site.tool))),
        "{lock}"
    );
    assert!(
        lock.contains(&format!("digest = \"sha256:{}\"", sha256(&site.chart))),
        "{lock}"
    );
    assert!(
        lock.contains(&format!("size = {}", site.tool.len())),
        "{lock}"
    );
    assert!(lock.contains("/charts/demo-chart-1.0.0.tgz"), "{lock}");

    // A second lock with nothing changed writes the same bytes and says so.
    let run = kiln(&lab, &["lock"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("up to date"), "{}", run.stderr);
    assert_eq!(
        fs_err::read_to_string(lab.path("lab/kiln.lock")).unwrap(),
        lock
    );

    // A fresh store: --offline lists what is missing and touches nothing.
    fs_err::remove_dir_all(lab.path("store")).unwrap();
    let requests_before = site.server.requests().len();
    let run = kiln(&lab, &["fetch", "--offline"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("missing file tool")
            && run.stderr.contains("missing chart demo-chart 1.0.0"),
        "{}",
        run.stderr
    );
    assert_eq!(
        site.server.requests().len(),
        requests_before,
        "--offline made a request"
    );

    let run = kiln(&lab, &["fetch", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["fetched"], 2);
    for bytes in [&site.tool, &site.chart] {
        let blob = lab.path(&format!("store/blobs/sha256/{}", sha256(bytes)));
        assert_eq!(&fs_err::read(blob).unwrap(), bytes);
    }
    let run = kiln(&lab, &["store", "verify"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Nothing left to do.
    let run = kiln(&lab, &["fetch", "--offline"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn locked_names_each_difference() {
    let site = site(1000, None);
    let lab = profile(&set_for(&site));
    assert_eq!(kiln(&lab, &["lock"]).code, 0);
    let changed = format!(
        "{}\n[[file]]\nname = \"other\"\nurl = \"{}\"\n",
        set_for(&site).replace("version = \"1.0.0\"", "version = \"0.9.0\""),
        site.server.url("/other.bin")
    );
    fs_err::write(lab.path("lab/images/local.toml"), changed).unwrap();
    let run = kiln(&lab, &["--locked", "fetch"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    insta::assert_snapshot!(run.stderr.replace(&site.server.url(""), "http://[SERVER]"));
}

#[test]
fn a_tampered_blob_is_named_by_store_verify_and_removed_by_gc() {
    let site = site(5000, None);
    let lab = profile(&set_for(&site));
    assert_eq!(kiln(&lab, &["lock"]).code, 0);
    assert_eq!(kiln(&lab, &["fetch"]).code, 0);
    let blob = lab.path(&format!("store/blobs/sha256/{}", sha256(&site.tool)));
    let mut bytes = fs_err::read(&blob).unwrap();
    bytes[100] ^= 1;
    fs_err::set_permissions(&blob, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs_err::write(&blob, &bytes).unwrap();
    let run = kiln(&lab, &["store", "verify"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&sha256(&site.tool)), "{}", run.stderr);

    // Drop the chart from the set and re-lock: gc frees the chart, keeps the tool.
    fs_err::remove_file(&blob).unwrap();
    assert_eq!(kiln(&lab, &["fetch"]).code, 0);
    let only_tool = format!(
        "[[file]]\nname = \"tool\"\nurl = \"{}\"\n",
        site.server.url("/tool.bin")
    );
    fs_err::write(lab.path("lab/images/local.toml"), only_tool).unwrap();
    assert_eq!(kiln(&lab, &["lock"]).code, 0);
    let run = kiln(&lab, &["gc", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["blobs_removed"], 1, "{report}");
    assert_eq!(report["bytes_freed"], site.chart.len(), "{report}");
    assert!(lab
        .path(&format!("store/blobs/sha256/{}", sha256(&site.tool)))
        .exists());
    assert!(!lab
        .path(&format!("store/blobs/sha256/{}", sha256(&site.chart)))
        .exists());
}

#[test]
fn fetch_killed_at_any_moment_completes_on_rerun_with_a_clean_store() {
    // 8 MiB served in 64 KiB pieces 2 ms apart: about a quarter of a second per MiB.
    let site = site(8 << 20, Some(64 << 10));
    let lab = profile(&set_for(&site));
    // Lock with the tool pinned in the set, so that lock itself does not download it.
    let pinned = format!(
        "[[file]]\nname = \"tool\"\nurl = \"{}\"\ndigest = \"sha256:{}\"\nsize = {}\n",
        site.server.url("/tool.bin"),
        sha256(&site.tool),
        site.tool.len()
    );
    fs_err::write(lab.path("lab/images/local.toml"), &pinned).unwrap();
    let run = kiln(&lab, &["lock"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // `kiln lock` verified the pin by downloading it; start from an empty store.
    fs_err::remove_dir_all(lab.path("store")).unwrap();
    for delay in [150, 400, 700, 1100] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "--profile",
                "lab",
                "--store",
                "store",
                "fetch",
                "--jobs",
                "2",
            ])
            .current_dir(lab.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        // SIGKILL: no chance to clean up.
        let _ = child.kill();
        let _ = child.wait();
        let verify = kiln(&lab, &["store", "verify"]);
        assert_eq!(
            verify.code, 0,
            "store inconsistent after kill at {delay} ms: {}",
            verify.stderr
        );
    }
    let run = kiln(&lab, &["fetch"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let blob = lab.path(&format!("store/blobs/sha256/{}", sha256(&site.tool)));
    assert_eq!(fs_err::read(blob).unwrap(), site.tool);
    assert_eq!(kiln(&lab, &["store", "verify"]).code, 0);
    // The downloads after a kill resumed: some request asked for a range.
    assert!(
        site.server
            .requests()
            .iter()
            .any(|request| request.range.is_some()),
        "no download was resumed: {:?}",
        site.server
            .requests()
            .iter()
            .map(|r| (r.line.clone(), r.range.clone()))
            .collect::<Vec<_>>()
    );
}

/// Two images in a real registry: a two-platform index and a single manifest.
fn registry_with_images() -> (common::registry::Registry, Vec<String>) {
    use common::registry::{Layout, Registry};
    let registry = Registry::start();
    let mut layout = Layout::new();
    let base = layout.layer("base", &content(200_000, 3));
    let amd64_layer = layout.layer("app", b"amd64 build\n");
    let arm64_layer = layout.layer("app", b"arm64 build\n");
    let amd64 = layout.image("linux", "amd64", &[&base, &amd64_layer]);
    let arm64 = layout.image("linux", "arm64", &[&base, &arm64_layer]);
    let index = layout.index(&[&amd64, &arm64]);
    layout.tag(&index, "1.0");
    let tool_layer = layout.layer("tool", &content(50_000, 5));
    let tool = layout.image("linux", "amd64", &[&tool_layer]);
    layout.tag(&tool.descriptor, "2.1");
    registry.push(&layout, "1.0", "lab/app", &[]);
    registry.push(&layout, "2.1", "lab/tool", &[]);
    let names = vec![
        format!("{}/lab/app:1.0", registry.host()),
        format!("{}/lab/tool:2.1", registry.host()),
    ];
    (registry, names)
}

#[test]
fn lock_resolves_tags_to_the_digests_skopeo_reports_and_fetch_pulls_them() {
    let (registry, names) = registry_with_images();
    let set: String = names
        .iter()
        .map(|name| format!("[[image]]\nname = \"{name}\"\nplatforms = [\"linux/amd64\"]\n\n"))
        .collect();
    let lab = profile(&set);
    let mirror = format!("{}=http://{}", registry.host(), registry.host());
    let run = kiln(&lab, &["lock", "--mirror", &mirror]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lock: toml::Table =
        toml::from_str(&fs_err::read_to_string(lab.path("lab/kiln.lock")).unwrap()).unwrap();
    let images = lock["image"].as_array().unwrap();
    for (image, name) in images.iter().zip(&names) {
        assert_eq!(image["name"].as_str(), Some(name.as_str()));
        let raw = registry.raw(name.split_once('/').unwrap().1);
        assert_eq!(
            image["digest"].as_str().unwrap(),
            format!("sha256:{}", sha256(&raw)),
            "{name}"
        );
        let platforms = image["platforms"].as_array().unwrap();
        assert_eq!(
            platforms.len(),
            1,
            "only linux/amd64 is kept: {platforms:?}"
        );
        assert_eq!(platforms[0]["platform"].as_str(), Some("linux/amd64"));
    }
    // The per-platform digest of the index agrees with skopeo too.
    let index: serde_json::Value = serde_json::from_slice(&registry.raw("lab/app:1.0")).unwrap();
    let amd64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["platform"]["architecture"] == "amd64")
        .unwrap();
    assert_eq!(
        images[0]["platforms"][0]["digest"].as_str(),
        amd64["digest"].as_str()
    );

    // Fetch into a fresh store: every blob there re-hashes to its name, and the lock's
    // closure (index, manifest, config, layers) is complete.
    // This time the profile names where the registry's artifacts come from.
    fs_err::remove_dir_all(lab.path("store")).ok();
    let mut cluster = fs_err::read_to_string(lab.path("lab/cluster.toml")).unwrap();
    cluster.push_str(&format!(
        "\n[registries.sources]\n\"{}\" = \"http://{}\"\n",
        registry.host(),
        registry.host()
    ));
    fs_err::write(lab.path("lab/cluster.toml"), cluster).unwrap();
    let run = kiln(&lab, &["--locked", "fetch"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let blobs = common::files_below(&lab.path("store/blobs/sha256"));
    assert!(blobs.len() >= 8, "{blobs:?}");
    for blob in &blobs {
        let bytes = fs_err::read(lab.path(&format!("store/blobs/sha256/{blob}"))).unwrap();
        assert_eq!(&sha256(&bytes), blob);
    }
    let run = kiln(&lab, &["fetch", "--offline"]);
    assert_eq!(run.code, 0, "everything is there: {}", run.stderr);
    assert_eq!(kiln(&lab, &["store", "verify"]).code, 0);
}

#[test]
fn a_deb_that_left_the_archive_says_what_to_run() {
    let site = site(10, None);
    let lab = profile("[base]\nsuite = \"bookworm\"\npackages = [\"hello\"]\n");
    let lock = format!(
        "version = 1\nsource_date_epoch = 1700000000\n\n[base]\nsuite = \"bookworm\"\ncomponents = [\"main\"]\nvariant = \"minbase\"\npackages = [\"hello\"]\n\n[[deb]]\nname = \"hello\"\nversion = \"2.10-3\"\narchitecture = \"amd64\"\nsuite = \"bookworm\"\nfilename = \"pool/main/h/hello/hello_2.10-3_amd64.deb\"\ndigest = \"sha256:{}\"\nsize = 53000\npriority = \"optional\"\nsection = \"devel\"\n",
        "0".repeat(64)
    );
    fs_err::write(lab.path("lab/kiln.lock"), lock).unwrap();
    let mirror = format!("bookworm={}", site.server.url("/debian"));
    let run = kiln(&lab, &["--locked", "fetch", "--mirror", &mirror]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    insta::assert_snapshot!(run.stderr.replace(&site.server.url(""), "http://[SERVER]"));
}
