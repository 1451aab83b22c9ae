//! `just bench image`: `kiln build disk` of the demo's node `demo-server`, cold, with
//! nothing changed and with one value changed, against mkosi 14 (Debian bookworm's
//! `/usr/bin/mkosi`) building the same package set cold, again with nothing changed (its
//! incremental mode) and with one changed file. One run of each, in this order, one after
//! the other; wall time and peak RSS from `/usr/bin/time -v`. Needs root (both tools do),
//! about 10 GB free under Cargo's target dir and about 5 minutes.
//!
//! kiln: a copy of `profiles/demo` (with `profiles/roles` and `images/` beside it, where
//! kiln looks for them) and a fresh store holding only the .debs the demo's `kiln.lock`
//! pins, copied from the user's store (`$KILN_STORE`, else `~/.cache/kiln`); `kiln
//! --locked fetch` gets any that are missing there. So the cold build is offline. Then
//! - cold: `kiln build disk --node demo-server --json`: every step (rootfs, node, disk) built;
//! - no-op: the same command again: every step reused;
//! - changed: `[network.dns] search` gains `lab.kiln.test`, then the same command: rootfs
//!   reused, node and disk built; the bench checks the value is in the new disk.
//!
//! mkosi: `benches/mkosi/` copied into a temp dir, with `mkosi.conf.d/10-bench.conf`
//! written there: `Mirror=` the host's apt source for bookworm and `Packages=` the demo's
//! `kiln.lock` `[base] packages`. Its apt package cache is seeded with the same .debs
//! (named as apt names them); mkosi still fetches the archive's indexes, and the packages
//! whose current version kiln's lock does not pin, from the mirror (and, hard-coded in
//! mkosi 14, from security.debian.org). Then
//! - cold: `mkosi -i -ff build`: the incremental cache image and the image;
//! - again: `mkosi -i -f build` with nothing changed;
//! - changed: one file in `mkosi.extra` (`/etc/resolv.conf`, the same search domain
//!   added), then `mkosi -i -f build`; the bench checks the value is in the new image.
//!
//! What each builds. kiln: a bootable GPT disk (an ESP with a unified kernel image, and an
//! ext4 root: the root file system, the node's configuration layer and its container
//! image), as raw and as qcow2. mkosi: a GPT disk with one ext4 root partition holding
//! debootstrap's minbase, ca-certificates and the packages, with /boot/initrd.img made by
//! `mkosi.prepare`; `Bootable=no`, because a bootable mkosi image needs its ESP mounted,
//! and a VM whose kernel has no vfat would need the host changed (a FUSE mount helper).
//! So mkosi does the lighter job: no ESP, no UKI, no node layer, no qcow2.
//!
//! Nothing on the host is changed; the temp dir (several GB) is removed at the end, after
//! unmounting anything a failed mkosi run left mounted in it. If mkosi is missing or
//! fails, the bench says why and prints kiln's figures alone.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const TIME: &str = "/usr/bin/time";
const MKOSI: &str = "/usr/bin/mkosi";
const NODE: &str = "demo-server";
const SEARCH: &str = "search = [\"demo.kiln.test\"]";
const SEARCH_CHANGED: &str = "search = [\"demo.kiln.test\", \"lab.kiln.test\"]";
const RESOLV_SEARCH: &str = "search demo.kiln.test\n";
const RESOLV_SEARCH_CHANGED: &str = "search demo.kiln.test lab.kiln.test\n";
/// The value the "changed" builds add, looked for in their images.
const ADDED: &str = "lab.kiln.test";
/// mkosi's output, under its OutputDirectory: `<distribution>~<release>/<ImageId>.raw`.
const MKOSI_IMAGE: &str = "mkosi.output/debian~bookworm/kilnbench.raw";
const MKOSI_DEBS: &str = "mkosi.cache/debian~bookworm";
/// Processes that would compete with a measured build for the CPU and the disk.
const BUSY: &[&str] = &[
    "kiln",
    "mmdebstrap",
    "mkosi",
    "debootstrap",
    "dpkg",
    "rustc",
    "clippy-driver",
    "qemu-system-x86",
];

/// One measured build.
struct Measured {
    seconds: f64,
    peak_rss: Option<u64>,
    /// Other builds seen running just before or just after it.
    busy: Vec<String>,
}

/// Run to success; its stdout.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// "Maximum resident set size (kbytes): N" of `/usr/bin/time -v -o FILE`, in bytes.
fn peak_rss(time_file: &Path) -> Option<u64> {
    fs_err::read_to_string(time_file)
        .ok()?
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Maximum resident set size (kbytes):")
        })
        .and_then(|kbytes| kbytes.trim().parse::<u64>().ok())
        .map(|kbytes| kbytes * 1024)
}

/// The commands of other processes in `BUSY` (not this one, which runs none of them).
fn other_builds() -> Vec<String> {
    let mut found = BTreeSet::new();
    let Ok(entries) = fs_err::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if let Ok(comm) = fs_err::read_to_string(path.join("comm")) {
            let comm = comm.trim();
            if BUSY.contains(&comm) {
                found.insert(comm.to_string());
            }
        }
    }
    found.into_iter().collect()
}

/// Run `command` under `/usr/bin/time -v`, stdout and stderr to `log`: its wall time and
/// peak RSS, or why it failed (with the log's tail).
fn timed(command: &mut Command, log: &Path) -> Result<Measured, String> {
    let time_file = log.with_extension("time");
    let mut timed = Command::new(TIME);
    timed
        .arg("-v")
        .arg("-o")
        .arg(&time_file)
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    let log_file =
        std::fs::File::create(log).map_err(|error| format!("{}: {error}", log.display()))?;
    let log_err = log_file.try_clone().map_err(|error| error.to_string())?;
    run(&mut Command::new("sync"));
    let mut busy = other_builds();
    let started = Instant::now();
    let status = timed
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .status()
        .map_err(|error| format!("{command:?}: {error}"))?;
    let seconds = started.elapsed().as_secs_f64();
    busy.extend(other_builds());
    busy.sort();
    busy.dedup();
    if !status.success() {
        let text = fs_err::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        return Err(format!(
            "{command:?} failed ({status}) after {seconds:.1} s; the end of its output:\n    {}",
            lines[lines.len().saturating_sub(25)..].join("\n    ")
        ));
    }
    Ok(Measured {
        seconds,
        peak_rss: peak_rss(&time_file),
        busy,
    })
}

fn sha256_file(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for entry in fs_err::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The text of `path` in the first partition of the GPT disk `image` whose ext4 has it,
/// read with debugfs (no loop device, no mount).
fn ext4_file(image: &Path, path: &str) -> Option<String> {
    let table = run(Command::new("sgdisk").arg("-p").arg(image));
    table
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("Number"))
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .find_map(|start| {
            let output = Command::new("debugfs")
                .arg("-R")
                .arg(format!("cat {path}"))
                .arg(format!("{}?offset={}", image.display(), start * 512))
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            (output.status.success() && !text.is_empty()).then_some(text)
        })
}

/// The URI of the host's apt source for the plain `bookworm` suite, from
/// `/etc/apt/sources.list`, `*.list` and deb822 `*.sources` in `sources.list.d`.
fn host_mirror() -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs_err::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs_err::read_to_string(&file) else {
            continue;
        };
        let name = file.to_string_lossy();
        let found = if name.ends_with(".sources") {
            text.split("\n\n").find_map(|stanza| {
                let field = |key: &str| {
                    stanza.lines().find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.trim()
                            .eq_ignore_ascii_case(key)
                            .then(|| value.trim().to_string())
                    })
                };
                let enabled = field("Enabled").is_none_or(|value| value != "no");
                let deb = field("Types")?.split_whitespace().any(|kind| kind == "deb");
                let bookworm = field("Suites")?
                    .split_whitespace()
                    .any(|suite| suite == "bookworm");
                (enabled && deb && bookworm)
                    .then(|| field("URIs"))
                    .flatten()
                    .and_then(|uris| uris.split_whitespace().next().map(str::to_string))
            })
        } else if name.ends_with(".list") {
            text.lines().find_map(|line| {
                let line = line.split('#').next()?;
                let mut words = line.split_whitespace().peekable();
                (words.next()? == "deb").then_some(())?;
                if words.peek()?.starts_with('[') {
                    // Options: `[key=value ...]`, possibly over several words.
                    for word in words.by_ref() {
                        if word.ends_with(']') {
                            break;
                        }
                    }
                }
                let uri = words.next()?;
                (words.next()? == "bookworm").then(|| uri.to_string())
            })
        } else {
            None
        };
        if let Some(uri) = found {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

/// What the demo's `kiln.lock` pins: the base packages, and each .deb's apt file name and
/// blob digest (hex).
struct Lock {
    packages: Vec<String>,
    debs: Vec<(String, String)>,
}

fn read_lock(path: &Path) -> Lock {
    let lock: toml::Table = fs_err::read_to_string(path)
        .unwrap()
        .parse()
        .expect("kiln.lock is TOML");
    let packages = lock["base"]["packages"]
        .as_array()
        .expect("kiln.lock has [base] packages")
        .iter()
        .map(|package| package.as_str().unwrap().to_string())
        .collect();
    let debs = lock
        .get("deb")
        .and_then(toml::Value::as_array)
        .expect("kiln.lock has [[deb]]s")
        .iter()
        .map(|deb| {
            let field = |key: &str| deb[key].as_str().unwrap().to_string();
            let file = format!(
                "{}_{}_{}.deb",
                field("name"),
                field("version").replace(':', "%3a"),
                field("architecture")
            );
            let digest = field("digest");
            let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
            (file, hex.to_string())
        })
        .collect();
    Lock { packages, debs }
}

/// The temp dir, removed on drop (also when the bench panics) after unmounting anything
/// still mounted inside it.
struct Work(Option<tempfile::TempDir>);

impl Work {
    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let root = self.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = fs_err::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|point| point.replace("\\040", " "))
            .filter(|point| point.starts_with(&root))
            .collect();
        mounts.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in mounts {
            eprintln!("image bench: unmounting {point}, left by a failed build");
            let _ = Command::new("umount").arg("-l").arg(&point).status();
        }
        if let Some(dir) = self.0.take() {
            let shown = dir.path().display().to_string();
            if let Err(error) = dir.close() {
                eprintln!("image bench: could not remove {shown}: {error}");
            }
        }
    }
}

/// kiln's three builds.
struct Kiln {
    runs: Vec<Measured>,
    /// disk.raw's sha256 after each build, from kiln's JSON report.
    sha256: Vec<String>,
    /// The cold build's steps and their seconds.
    cold_steps: String,
    /// The cold disk step's key, to look for the same step in the user's store.
    cold_disk_key: String,
}

fn kiln_builds(kiln: &str, profile: &Path, store: &Path, out: &Path, logs: &Path) -> Kiln {
    let mut runs = Vec::new();
    let mut sha256 = Vec::new();
    let mut cold_steps = String::new();
    let mut cold_disk_key = String::new();
    for (name, expected) in [
        ("cold", ["built", "built", "built"]),
        ("no-op", ["reused", "reused", "reused"]),
        ("changed", ["reused", "built", "built"]),
    ] {
        if name == "changed" {
            let cluster = profile.join("cluster.toml");
            let text = fs_err::read_to_string(&cluster).unwrap();
            assert!(
                text.contains(SEARCH),
                "{} no longer has `{SEARCH}`: update the bench",
                cluster.display()
            );
            fs_err::write(&cluster, text.replacen(SEARCH, SEARCH_CHANGED, 1)).unwrap();
        }
        let log = logs.join(format!("kiln-{name}.log"));
        let report = logs.join(format!("kiln-{name}.json"));
        let mut command = Command::new("sh");
        // sh only to send the JSON report to its own file; /usr/bin/time times kiln.
        command.arg("-c").arg(format!(
            "exec \"$0\" --profile \"$1\" --store \"$2\" build disk --node {NODE} --json --out \"$3\" > \"$4\"",
        ));
        command
            .arg(kiln)
            .arg(profile)
            .arg(store)
            .arg(out)
            .arg(&report);
        let measured =
            timed(&mut command, &log).unwrap_or_else(|error| panic!("kiln {name}: {error}"));
        let report: serde_json::Value =
            serde_json::from_str(&fs_err::read_to_string(&report).unwrap())
                .expect("kiln's JSON report");
        let steps = report["steps"].as_array().expect("steps in the report");
        let actions: Vec<&str> = steps
            .iter()
            .map(|step| step["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions, expected,
            "kiln {name}: steps {actions:?}, expected {expected:?}"
        );
        if name == "cold" {
            cold_steps = steps
                .iter()
                .map(|step| {
                    format!(
                        "{} {:.1} s",
                        step["kind"].as_str().unwrap(),
                        step["seconds"].as_f64().unwrap()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            cold_disk_key = report["outputs"][0]["entry"]["step"]["key"]
                .as_str()
                .unwrap()
                .to_string();
        }
        sha256.push(
            report["outputs"][0]["entry"]["files"][format!("{NODE}.raw")]["sha256"]
                .as_str()
                .expect("the raw disk's sha256 in the report")
                .to_string(),
        );
        runs.push(measured);
    }
    let raw = out.join(format!("demo/{NODE}.raw"));
    let network = ext4_file(&raw, "/var/lib/cloud/seed/nocloud/network-config")
        .expect("the changed kiln disk has the node's network-config");
    assert!(
        network.contains(ADDED),
        "the changed kiln disk's network-config lacks {ADDED}:\n{network}"
    );
    // kiln's report says what the file is; check it once, on the last build.
    assert_eq!(
        sha256_file(&raw),
        sha256[2],
        "{} differs from kiln's report",
        raw.display()
    );
    Kiln {
        runs,
        sha256,
        cold_steps,
        cold_disk_key,
    }
}

/// mkosi's builds, as far as they got, and why they stopped if they did.
#[derive(Default)]
struct Mkosi {
    version: String,
    mirror: String,
    runs: Vec<Measured>,
    sha256: Vec<String>,
    image_size: u64,
    installed: usize,
    downloaded: usize,
    seeded: usize,
    error: Option<String>,
}

fn mkosi_builds(lock: &Lock, store: &Path, dir: &Path, logs: &Path, mkosi: &mut Mkosi) {
    if let Err(error) = mkosi_steps(lock, store, dir, logs, mkosi) {
        mkosi.error = Some(error);
    }
}

fn mkosi_steps(
    lock: &Lock,
    store: &Path,
    dir: &Path,
    logs: &Path,
    mkosi: &mut Mkosi,
) -> Result<(), String> {
    if !Path::new(MKOSI).is_file() {
        return Err(format!(
            "{MKOSI} is missing: install Debian's package `mkosi` (and `debootstrap`)"
        ));
    }
    let version = Command::new(MKOSI)
        .arg("--version")
        .output()
        .map_err(|error| format!("{MKOSI} --version: {error}"))?;
    mkosi.version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    mkosi.mirror = host_mirror().ok_or(
        "no apt source for the `bookworm` suite in /etc/apt/sources.list{,.d}: mkosi needs a mirror",
    )?;

    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/mkosi"),
        dir,
    );
    fs_err::set_permissions(
        dir.join("mkosi.prepare"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let packages: String = lock
        .packages
        .iter()
        .map(|package| format!("    {package}\n"))
        .collect();
    // Its scratch space (the image root while it is built), instead of /var/tmp; outside
    // `dir`, which mkosi mounts into the image for mkosi.prepare.
    let workspace = dir.with_file_name("mkosi-workspace");
    fs_err::create_dir_all(&workspace).unwrap();
    fs_err::create_dir_all(dir.join("mkosi.conf.d")).unwrap();
    fs_err::write(
        dir.join("mkosi.conf.d/10-bench.conf"),
        format!(
            "[Distribution]\nMirror={}\n\n[Output]\nWorkspaceDirectory={}\n\n[Content]\nPackages=\n{packages}",
            mkosi.mirror,
            workspace.display()
        ),
    )
    .unwrap();
    let debs = dir.join(MKOSI_DEBS);
    fs_err::create_dir_all(&debs).unwrap();
    for (file, hex) in &lock.debs {
        fs_err::copy(store.join("blobs/sha256").join(hex), debs.join(file)).unwrap();
    }
    mkosi.seeded = lock.debs.len();
    let seeded: BTreeSet<&str> = lock.debs.iter().map(|(file, _)| file.as_str()).collect();

    let image = dir.join(MKOSI_IMAGE);
    for (name, force) in [("cold", "-ff"), ("again", "-f"), ("changed", "-f")] {
        if name == "changed" {
            let resolv = dir.join("mkosi.extra/etc/resolv.conf");
            let text = fs_err::read_to_string(&resolv).unwrap();
            assert!(text.contains(RESOLV_SEARCH), "{}", resolv.display());
            fs_err::write(
                &resolv,
                text.replacen(RESOLV_SEARCH, RESOLV_SEARCH_CHANGED, 1),
            )
            .unwrap();
        }
        let measured = timed(
            Command::new(MKOSI)
                .args(["-i", force, "build"])
                .current_dir(dir),
            &logs.join(format!("mkosi-{name}.log")),
        )
        .map_err(|error| format!("mkosi {name}: {error}"))?;
        if !image.is_file() {
            return Err(format!(
                "mkosi {name} succeeded but wrote no {}",
                image.display()
            ));
        }
        mkosi.sha256.push(sha256_file(&image));
        mkosi.runs.push(measured);
        if name == "cold" {
            mkosi.image_size = fs_err::metadata(&image).unwrap().size();
            mkosi.downloaded = fs_err::read_dir(&debs)
                .unwrap()
                .flatten()
                .filter(|entry| {
                    let file = entry.file_name().to_string_lossy().into_owned();
                    file.ends_with(".deb") && !seeded.contains(file.as_str())
                })
                .count();
            let manifest = fs_err::read_to_string(image.with_extension("raw.manifest"))
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            mkosi.installed = manifest
                .as_ref()
                .and_then(|manifest| manifest["packages"].as_array())
                .map_or(0, Vec::len);
        }
    }
    let resolv = ext4_file(&image, "/etc/resolv.conf")
        .ok_or("the changed mkosi image has no readable /etc/resolv.conf")?;
    if !resolv.contains(ADDED) {
        return Err(format!(
            "the changed mkosi image's /etc/resolv.conf lacks {ADDED}:\n{resolv}"
        ));
    }
    Ok(())
}

fn rss(measured: Option<&Measured>) -> String {
    measured
        .and_then(|measured| measured.peak_rss)
        .map_or("-".to_string(), |bytes| {
            format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
        })
}

fn main() {
    assert!(
        Path::new(TIME).is_file(),
        "{TIME} is missing: install the Debian package `time` (apt-get install time)"
    );
    assert!(
        fs_err::metadata("/proc/self").unwrap().uid() == 0,
        "run as root: kiln's disk build (mmdebstrap --mode=root) and mkosi both need it"
    );
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Cargo's target tmp dir is on the disk that holds target/, unlike a tmpfs /tmp.
    let work = Work(Some(
        tempfile::Builder::new()
            .prefix("bench-image-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir"),
    ));
    let root = work.path();
    let logs = root.join("logs");
    fs_err::create_dir_all(&logs).unwrap();

    // The profile where kiln finds its roles and pin sets: ../roles and an ancestor's images/.
    let profile = root.join("profiles/demo");
    copy_dir(&repo.join("profiles/demo"), &profile);
    copy_dir(&repo.join("profiles/roles"), &root.join("profiles/roles"));
    copy_dir(&repo.join("images"), &root.join("images"));
    let lock = read_lock(&profile.join("kiln.lock"));

    // A fresh store with the lock's .debs from the user's store; kiln fetches the rest.
    let user_store = kiln::store::Store::default_root(|name| std::env::var(name).ok())
        .expect("no store: set KILN_STORE or HOME");
    let store = root.join("store");
    let blobs = store.join("blobs/sha256");
    fs_err::create_dir_all(&blobs).unwrap();
    let mut missing = 0;
    for (_, hex) in &lock.debs {
        let from = user_store.join("blobs/sha256").join(hex);
        if from.is_file() {
            fs_err::copy(&from, blobs.join(hex)).unwrap();
        } else {
            missing += 1;
        }
    }
    if missing > 0 {
        eprintln!(
            "image bench: {missing} of {} .debs are not in {}: kiln fetch --locked",
            lock.debs.len(),
            user_store.display()
        );
        run(Command::new(kiln)
            .arg("--profile")
            .arg(&profile)
            .arg("--store")
            .arg(&store)
            .args(["--locked", "fetch"]));
    }

    eprintln!("image bench: kiln cold, no-op, changed (about 3 minutes)");
    let kiln_result = kiln_builds(kiln, &profile, &store, &root.join("out"), &logs);
    eprintln!("image bench: mkosi cold, again, changed (about 2 minutes)");
    let mut mkosi = Mkosi::default();
    mkosi_builds(&lock, &store, &root.join("mkosi"), &logs, &mut mkosi);

    // The same disk step may be in the user's store, built by another run: compare.
    let elsewhere = fs_err::read_dir(user_store.join("steps"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("step.json"))
        .filter(|path| {
            path.parent().and_then(Path::file_name).is_some_and(|name| {
                name.to_string_lossy()
                    .starts_with(&kiln_result.cold_disk_key)
            })
        })
        .find_map(|path| {
            let record: serde_json::Value =
                serde_json::from_str(&fs_err::read_to_string(&path).ok()?).ok()?;
            Some((
                path,
                record["outputs"]["disk.raw"]["sha256"]
                    .as_str()?
                    .to_string(),
            ))
        });

    let mut busy_rows = Vec::new();
    println!(
        "image: node {NODE} of profiles/demo ({} packages in [base], {} .debs pinned); one run each, in this order; page cache warm",
        lock.packages.len(),
        lock.debs.len()
    );
    println!(
        "  kiln:  a bootable GPT disk: ESP with a UKI + ext4 root (rootfs, node layer, container image), as raw and qcow2; offline"
    );
    match &mkosi.error {
        Some(_) if mkosi.runs.is_empty() => println!("  mkosi: failed, see below"),
        _ => println!(
            "  mkosi: {}: GPT disk, one ext4 root (minbase + ca-certificates + the same packages + initrd), Bootable=no, raw; the lighter job",
            if mkosi.version.is_empty() { "mkosi" } else { &mkosi.version }
        ),
    }
    println!(
        "  {:<26} {:>9} {:>9} {:>11} {:>14} {:>14}",
        "build", "kiln s", "mkosi s", "kiln/mkosi", "kiln peak RSS", "mkosi peak RSS"
    );
    for (index, name) in ["cold", "no-op / again (unchanged)", "one value changed"]
        .iter()
        .enumerate()
    {
        let ours = &kiln_result.runs[index];
        let theirs = mkosi.runs.get(index);
        let mut row = name.to_string();
        let busy: BTreeSet<&String> = ours
            .busy
            .iter()
            .chain(theirs.iter().flat_map(|theirs| theirs.busy.iter()))
            .collect();
        if !busy.is_empty() {
            row.push_str(" *");
            busy_rows.push(format!(
                "{name}: {}",
                busy.into_iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        println!(
            "  {:<26} {:>9.1} {:>9} {:>11} {:>14} {:>14}",
            row,
            ours.seconds,
            theirs.map_or("-".to_string(), |theirs| format!("{:.1}", theirs.seconds)),
            theirs.map_or("-".to_string(), |theirs| format!(
                "{:.2}x",
                ours.seconds / theirs.seconds
            )),
            rss(Some(ours)),
            rss(theirs),
        );
    }
    println!("  kiln/mkosi: kiln's wall time over mkosi's (lower: kiln faster)");
    println!(
        "  peak RSS: /usr/bin/time -v, the largest single process among the command and its children"
    );
    println!(
        "  kiln cold steps: {}; disk step key {}",
        kiln_result.cold_steps, kiln_result.cold_disk_key
    );
    println!("  raw image sha256:");
    for (name, sha) in ["cold", "no-op", "changed"].iter().zip(&kiln_result.sha256) {
        println!("    kiln  {name:<8} {sha}");
    }
    println!(
        "    kiln  cold == no-op: {} (the no-op reuses the disk step)",
        kiln_result.sha256[0] == kiln_result.sha256[1]
    );
    if let Some((path, sha)) = &elsewhere {
        println!(
            "    kiln  the same disk step in the user's store ({}): {sha}, {}",
            path.parent().unwrap().display(),
            if *sha == kiln_result.sha256[0] {
                "identical to this cold build"
            } else {
                "DIFFERENT from this cold build"
            }
        );
    }
    for (name, sha) in ["cold", "again", "changed"].iter().zip(&mkosi.sha256) {
        println!("    mkosi {name:<8} {sha}");
    }
    if mkosi.sha256.len() >= 2 {
        println!(
            "    mkosi cold == again: {}{}",
            mkosi.sha256[0] == mkosi.sha256[1],
            if mkosi.sha256[0] == mkosi.sha256[1] {
                ""
            } else {
                " (mkosi 14 has no reproducible mode: random machine-id, GUIDs, ext4 UUID, times)"
            }
        );
    }
    if !mkosi.runs.is_empty() {
        println!(
            "  mkosi: mirror {} (security.debian.org is hard-coded in mkosi 14); apt cache seeded with the {} pinned .debs, {} more downloaded in the cold build; {} packages installed; image {} bytes (sparse)",
            mkosi.mirror, mkosi.seeded, mkosi.downloaded, mkosi.installed, mkosi.image_size
        );
        println!(
            "  changed: kiln [network.dns] search += \"{ADDED}\" (rootfs reused, node + disk built); mkosi one file in mkosi.extra (/etc/resolv.conf, same domain added); both checked in the image"
        );
    }
    for line in &busy_rows {
        println!("  * other builds were running around this row ({line}): its times are not clean");
    }
    if let Some(error) = &mkosi.error {
        println!("  mkosi did not finish: {error}");
    }
    drop(work);
}
