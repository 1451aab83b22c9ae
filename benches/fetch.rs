//! `just bench fetch`: the same images from the same local registry, `kiln fetch` against
//! `skopeo copy`, as a ratio (wall time, median of runs).
//!
//! The registry is Debian's docker-registry on 127.0.0.1; the images are written here as
//! OCI layouts (incompressible layers) and pushed with skopeo. kiln fetches into an empty
//! store each run; skopeo copies each image into an empty OCI layout each run.

#[path = "../tests/common/http_server.rs"]
#[allow(dead_code)]
mod http_server;
#[path = "../tests/common/registry.rs"]
mod registry;

use std::process::Command;
use std::time::{Duration, Instant};

use registry::{Layout, Registry};

const IMAGES: usize = 4;
const LAYERS_PER_IMAGE: usize = 2;
const LAYER_SIZE: usize = 24 << 20;
const RUNS: usize = 3;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn run(command: &mut Command) {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{:?} failed: {}",
        command,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn main() {
    let registry = Registry::start();
    let mut names = Vec::new();
    for image in 0..IMAGES {
        let mut layout = Layout::new();
        let layers: Vec<_> = (0..LAYERS_PER_IMAGE)
            .map(|layer| {
                layout.layer(
                    "data",
                    &http_server::content(LAYER_SIZE, (image * 10 + layer) as u64 + 1),
                )
            })
            .collect();
        let built = layout.image("linux", "amd64", &layers.iter().collect::<Vec<_>>());
        layout.tag(&built.descriptor, "1");
        let name = format!("bench/image{image}");
        registry.push(&layout, "1", &name, &[]);
        names.push(format!("{}/{name}:1", registry.host()));
    }
    let total_bytes = (IMAGES * LAYERS_PER_IMAGE * LAYER_SIZE) as f64;
    let work = tempfile::tempdir().expect("temp dir");
    let profile = work.path().join("bench");
    fs_err::create_dir_all(profile.join("images")).unwrap();
    fs_err::write(
        profile.join("cluster.toml"),
        "[cluster]\nname = \"bench\"\ndomain = \"bench.test\"\nos = \"debian-12\"\nimages = [\"bench\"]\n[network]\nsubnet = \"10.0.0.0/24\"\n[network.dns]\nservers = [\"10.0.0.2\"]\n[nodes.n1]\nmac = \"52:54:00:00:00:01\"\nip = \"10.0.0.10\"\n",
    )
    .unwrap();
    let set: String = names
        .iter()
        .map(|name| format!("[[image]]\nname = \"{name}\"\n\n"))
        .collect();
    fs_err::write(profile.join("images/bench.toml"), set).unwrap();
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let mirror = format!("{}=http://{}", registry.host(), registry.host());
    let store = work.path().join("store");
    run(Command::new(kiln)
        .args(["--profile"])
        .arg(&profile)
        .arg("--store")
        .arg(&store)
        .args(["lock", "--mirror", &mirror]));

    let mut results = Vec::new();
    for jobs in ["1", "4"] {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let _ = fs_err::remove_dir_all(&store);
            let started = Instant::now();
            run(Command::new(kiln)
                .args(["--profile"])
                .arg(&profile)
                .arg("--store")
                .arg(&store)
                .args(["fetch", "--jobs", jobs, "--mirror", &mirror]));
            times.push(started.elapsed());
        }
        results.push((format!("kiln fetch --jobs {jobs}"), median(times)));
    }
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let target = work.path().join("skopeo");
        let _ = fs_err::remove_dir_all(&target);
        let started = Instant::now();
        for (index, name) in names.iter().enumerate() {
            run(Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
                .arg(format!("docker://{name}"))
                .arg(format!("oci:{}:image{index}", target.display())));
        }
        times.push(started.elapsed());
    }
    let skopeo = median(times);
    results.push(("skopeo copy (one image at a time)".to_string(), skopeo));

    println!(
        "fetch: {IMAGES} images, {} MiB of layers from docker-registry on 127.0.0.1, median of {RUNS} runs",
        total_bytes as u64 >> 20
    );
    for (name, time) in &results {
        println!(
            "  {name:<36} {:>7.2} s  {:>7.1} MiB/s  ratio to skopeo {:.2}x",
            time.as_secs_f64(),
            total_bytes / time.as_secs_f64() / (1 << 20) as f64,
            skopeo.as_secs_f64() / time.as_secs_f64()
        );
    }
}
