//! `just bench bundle`: `kiln build bundle` of 2 GiB of pinned files against the tools a
//! person would otherwise use on the same files: `sha256sum` (the floor: read and hash every
//! byte once) and GNU `tar | gzip -n` (the like-for-like of `--compression gzip`). Wall
//! time, median of runs, with the page cache warm; kiln's peak RSS from `/usr/bin/time -v`.
//!
//! Setup, no network: 8 files of 256 MiB of incompressible xorshift noise are written under
//! Cargo's target tmp dir (on disk, not tmpfs) straight into a store (`blobs/sha256/HEX`,
//! mode 0444), with a hand-written `kiln.lock` and a pin set `images/local.toml` that pin
//! them as `[[file]]`s, checked with `kiln --locked lock`, `kiln fetch --offline` and
//! `kiln lint`. The profile is one node with no roles, so the bundle is the files plus a few
//! kilobytes of configuration. `tar` reads a directory of hard links to the same blobs.
//!
//! Each command runs once as a warm-up, then `RUNS` times; a command whose warm-up takes
//! longer than `SLOW` (GNU gzip, about 40 MB/s) counts that one run instead, which is as
//! warm: the files were read by the commands before it. Each kiln run starts with the
//! bundle step removed from the store, so it really builds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;

const FILES: usize = 8;
const FILE_SIZE: usize = 256 << 20;
const CHUNK: usize = 1 << 20;
const RUNS: usize = 3;
/// A command whose warm-up run takes longer than this is not run again.
const SLOW: Duration = Duration::from_secs(30);
const TIME: &str = "/usr/bin/time";

const CLUSTER: &str = "[cluster]\nname = \"bench\"\ndomain = \"bench.test\"\nos = \"debian-12\"\nimages = [\"local\"]\n\n[network]\nsubnet = \"10.0.0.0/24\"\n[network.dns]\nservers = [\"10.0.0.2\"]\n\n[nodes.n1]\nmac = \"52:54:00:00:00:01\"\nip = \"10.0.0.10\"\n";

/// Write `FILE_SIZE` bytes of xorshift64 noise to `path` in 1 MiB chunks; its sha256 hex.
fn write_noise(path: &Path, seed: u64) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut chunk = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    let mut file = fs_err::File::create(path).expect("create a blob");
    for _ in 0..FILE_SIZE / CHUNK {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        hasher.update(&chunk);
        file.write_all(&chunk).expect("write a blob");
    }
    format!("{:x}", hasher.finalize())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Run to success; its stderr.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "{command:?} failed: {}{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// "Maximum resident set size (kbytes): N" of `/usr/bin/time -v`, in bytes.
fn peak_rss(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Maximum resident set size (kbytes):")
        })
        .and_then(|kbytes| kbytes.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS in /usr/bin/time -v output:\n{stderr}"))
        * 1024
}

/// What one command measured.
struct Measured {
    name: String,
    time: Duration,
    runs: usize,
    output_bytes: Option<u64>,
    peak_rss: Option<u64>,
}

/// One run: prepare (untimed), then the timed command, which returns its output size and
/// peak RSS when it has them.
struct Bench<'a> {
    name: String,
    prepare: Box<dyn FnMut() + 'a>,
    command: Box<dyn FnMut() -> (Option<u64>, Option<u64>) + 'a>,
}

fn sync() {
    run(&mut Command::new("sync"));
}

fn measure(mut bench: Bench<'_>) -> Measured {
    let mut once = || {
        (bench.prepare)();
        sync();
        let started = Instant::now();
        let (output_bytes, rss) = (bench.command)();
        (started.elapsed(), output_bytes, rss)
    };
    let (warm_up, mut output_bytes, mut peak) = once();
    let mut times = Vec::new();
    if warm_up > SLOW {
        times.push(warm_up);
    } else {
        for _ in 0..RUNS {
            let (time, bytes, rss) = once();
            times.push(time);
            output_bytes = bytes;
            peak = peak.max(rss);
        }
    }
    Measured {
        name: bench.name,
        runs: times.len(),
        time: median(times),
        output_bytes,
        peak_rss: peak,
    }
}

fn main() {
    assert!(
        Path::new(TIME).is_file(),
        "{TIME} is missing: install the Debian package `time` (apt-get install time)"
    );
    let kiln = env!("CARGO_BIN_EXE_kiln");
    // Cargo's target tmp dir is on the disk that holds target/, unlike a tmpfs /tmp.
    let work = tempfile::Builder::new()
        .prefix("bench-bundle-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir");
    let root = work.path();
    let profile = root.join("profile");
    let store = root.join("store");
    let blobs = store.join("blobs/sha256");
    let tree = root.join("tree");
    for directory in [profile.join("images"), blobs.clone(), tree.join("files")] {
        fs_err::create_dir_all(directory).unwrap();
    }

    let generated = Instant::now();
    let mut pins = String::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    for index in 0..FILES {
        let partial = root.join(format!("blob{index}.partial"));
        let hex = write_noise(&partial, index as u64 + 1);
        let blob = blobs.join(&hex);
        fs_err::set_permissions(&partial, std::fs::Permissions::from_mode(0o444)).unwrap();
        fs_err::rename(&partial, &blob).unwrap();
        let name = format!("blob{index}.bin");
        fs_err::hard_link(&blob, tree.join("files").join(&name)).unwrap();
        pins.push_str(&format!(
            "[[file]]\nname = \"blob{index}\"\nurl = \"http://127.0.0.1:9/{name}\"\ndigest = \"sha256:{hex}\"\nsize = {FILE_SIZE}\n\n"
        ));
        paths.push(blob);
    }
    sync();
    let total_bytes = (FILES * FILE_SIZE) as u64;
    eprintln!(
        "bundle bench: wrote {FILES} x {} MiB in {:.1} s",
        FILE_SIZE >> 20,
        generated.elapsed().as_secs_f64()
    );
    fs_err::write(profile.join("cluster.toml"), CLUSTER).unwrap();
    fs_err::write(profile.join("images/local.toml"), &pins).unwrap();
    fs_err::write(
        profile.join("kiln.lock"),
        format!(
            "version = 1\nsource_date_epoch = 1700000000\n\n{}",
            pins.trim_end()
        ) + "\n",
    )
    .unwrap();

    let kiln_command = |args: &[&str]| {
        let mut command = Command::new(kiln);
        command
            .arg("--profile")
            .arg(&profile)
            .arg("--store")
            .arg(&store)
            .args(args);
        command
    };
    // The hand-written lock, store and profile are what kiln itself would have: the lock
    // covers the profile, the store has everything, and the profile lints clean.
    run(&mut kiln_command(&["--locked", "lock"]));
    run(&mut kiln_command(&["fetch", "--offline"]));
    let lint = kiln_command(&["lint", "--format", "json"])
        .output()
        .expect("kiln lint runs");
    let findings: serde_json::Value = serde_json::from_slice(&lint.stdout).expect("lint JSON");
    assert!(
        lint.status.success() && findings["findings"].as_array().is_some_and(Vec::is_empty),
        "the bench profile does not lint clean: {findings}"
    );

    let remove_bundle_steps = || {
        let Ok(entries) = fs_err::read_dir(store.join("steps")) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with("-bundle") {
                fs_err::remove_dir_all(&path).unwrap();
            }
        }
    };
    let out = root.join("out");
    let (profile_ref, store_ref, out_ref) = (&profile, &store, &out);
    let kiln_bundle = |compression: &'static str| Bench {
        name: format!("kiln build bundle --compression {compression}"),
        prepare: Box::new(remove_bundle_steps),
        command: Box::new(move || {
            let mut command = Command::new(TIME);
            command
                .arg("-v")
                .arg(kiln)
                .arg("--profile")
                .arg(profile_ref)
                .arg("--store")
                .arg(store_ref)
                .args(["build", "bundle", "--compression", compression, "--out"])
                .arg(out_ref);
            let stderr = run(&mut command);
            assert!(stderr.contains("bundle: built step"), "{stderr}");
            let extension = if compression == "none" {
                "tar"
            } else {
                "tar.gz"
            };
            let bundle = out_ref.join(format!("bench/bundle.{extension}"));
            let size = fs_err::metadata(&bundle).unwrap().len();
            assert!(
                size > total_bytes / 2,
                "{} is {size} bytes",
                bundle.display()
            );
            (Some(size), Some(peak_rss(&stderr)))
        }),
    };
    let tar_gz = root.join("out.tar.gz");
    let mut results = Vec::new();
    results.push(measure(Bench {
        name: "sha256sum (one process, all files)".into(),
        prepare: Box::new(|| {}),
        command: Box::new(|| {
            run(Command::new("sha256sum").args(&paths).stdout(Stdio::null()));
            (None, None)
        }),
    }));
    results.push(measure(Bench {
        name: "tar -c | gzip -n".into(),
        prepare: Box::new(|| {
            let _ = fs_err::remove_file(&tar_gz);
        }),
        command: Box::new(|| {
            let mut tar = Command::new("tar")
                .args([
                    "--sort=name",
                    "--mtime=@0",
                    "--owner=0",
                    "--group=0",
                    "--numeric-owner",
                    "-c",
                    "-C",
                ])
                .arg(&tree)
                .arg("files")
                .stdout(Stdio::piped())
                .spawn()
                .expect("GNU tar runs");
            let gzip = Command::new("gzip")
                .arg("-n")
                .stdin(tar.stdout.take().unwrap())
                .stdout(std::fs::File::create(&tar_gz).expect("create out.tar.gz"))
                .status()
                .expect("gzip runs");
            assert!(
                tar.wait().unwrap().success() && gzip.success(),
                "tar | gzip failed"
            );
            (Some(fs_err::metadata(&tar_gz).unwrap().len()), None)
        }),
    }));
    let _ = fs_err::remove_file(&tar_gz);
    results.push(measure(kiln_bundle("none")));
    results.push(measure(kiln_bundle("gzip")));
    remove_bundle_steps();

    let sha = results[0].time.as_secs_f64();
    let tar = results[1].time.as_secs_f64();
    println!(
        "bundle: {FILES} files x {} MiB = {total_bytes} bytes of incompressible data, page cache warm; median of {RUNS} runs after a warm-up unless noted",
        FILE_SIZE >> 20
    );
    println!(
        "  {:<46} {:>12} {:>8} {:>8} {:>11} {:>10} {:>10}",
        "command", "output bytes", "s", "MB/s", "/sha256sum", "/tar|gzip", "peak RSS"
    );
    let mut notes = Vec::new();
    // In the order of the question: kiln, its floor, its like-for-like, kiln again.
    for result in [&results[2], &results[0], &results[1], &results[3]] {
        let seconds = result.time.as_secs_f64();
        let mut name = result.name.clone();
        if result.runs == 1 {
            name.push_str(" (1 run)");
            notes.push(format!(
                "(1 run): {} took {seconds:.0} s, over {} s, so it ran once (warm: the files had just been read)",
                result.name,
                SLOW.as_secs()
            ));
        }
        println!(
            "  {:<46} {:>12} {:>8.2} {:>8.1} {:>10.2}x {:>9.2}x {:>10}",
            name,
            result
                .output_bytes
                .map_or("-".to_string(), |bytes| bytes.to_string()),
            seconds,
            total_bytes as f64 / seconds / 1e6,
            seconds / sha,
            seconds / tar,
            result.peak_rss.map_or("-".to_string(), |rss| format!(
                "{:.1} MiB",
                rss as f64 / (1 << 20) as f64
            )),
        );
    }
    println!(
        "  MB/s: input bytes (10^6) per second; /X: this command's time over X's (lower is faster)"
    );
    for note in notes {
        println!("  {note}");
    }
}
