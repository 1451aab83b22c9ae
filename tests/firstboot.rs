//! The first-boot stages that cannot run in a VM here (no snap store, no GPU): MicroK8s
//! from the bundle, the NVIDIA driver, joins, the offline addons and the Helm releases.
//!
//! The test makes every artifact itself: a `core22` and a `microk8s` snap (squashfs images
//! made with mksquashfs, with snap-revision assertions that vouch for their sha3-384 and
//! size), real OCI images in a registry on 127.0.0.1, real chart .tgz files in a chart
//! repository on 127.0.0.1 and a real driver .deb made with dpkg-deb. A profile shaped like
//! the SAI cluster (a control plane with the offline addons, NGINX TCP forwarding, a TLS
//! secret and two Helm releases, CPU and GPU workers, an NFS server) is locked and fetched
//! against them, and `kiln build layer` makes each node's layer: exactly what its disk adds
//! to the base OS.
//!
//! Each scenario extracts a layer into a root, and runs the node's rendered first-boot
//! program there in a private mount and network namespace (the host's /usr read-only under
//! the layer's, a test sysfs with or without an NVIDIA GPU). `snap`, `microk8s`,
//! `modinfo`, `modprobe`, `nvidia-smi` and `apt-get` are stand-ins
//! (tests/fixtures/node-tools/standin.py) that check their inputs as the real tools do,
//! act out what ../shared/reference/microk8s-airgap.md documents (the install hook reads
//! /etc/microk8s.yaml and copies sideload/*.tar; the cluster agent applies launcher/*.yaml),
//! and record each call. The test then checks every call against the reference's commands,
//! and every file against the path MicroK8s reads it from; the sideloaded archives are
//! imported by a real containerd.
//!
//! Needs root (namespaces, mounts), squashfs-tools, dpkg-deb, python3-yaml, skopeo and
//! docker-registry.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::http_server::{content, Reply, TestServer};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const TOKEN: &str = "lab-join-token-0123456789abcdef0123456789";
const TLS_CRT: &str = "-----BEGIN CERTIFICATE-----\nLABCERT\n-----END CERTIFICATE-----\n";
const CORE22_REVISION: u64 = 2045;
const MICROK8S_REVISION: u64 = 8148;

/// Where the lab lives: `target/tmp/firstboot-lab`, replaced at each run.
fn lab_dir() -> PathBuf {
    common::repo().join("target/tmp/firstboot-lab")
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn run(command: &mut Command) -> String {
    String::from_utf8_lossy(&common::registry::run(command)).into_owned()
}

fn kiln(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "--profile",
            "lab",
            "--store",
            "store",
            "--secrets",
            "secrets.toml",
        ])
        .args(args)
        .current_dir(dir)
        .env_remove("KILN_STORE")
        .output()
        .expect("kiln runs");
    assert!(
        output.status.success(),
        "kiln {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Unpadded base64url, as snapd writes sha3-384 digests in assertions.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = String::new();
    for chunk in bytes.chunks(3) {
        let value = chunk.iter().enumerate().fold(0u32, |value, (index, byte)| {
            value | (u32::from(*byte) << (16 - 8 * index))
        });
        for index in 0..=chunk.len() {
            text.push(ALPHABET[((value >> (18 - 6 * index)) & 63) as usize] as char);
        }
    }
    text
}

/// A snap: `meta/snap.yaml` and a file, packed as snapcraft does, and the assertions
/// `snap download` writes beside it.
fn make_snap(dir: &Path, name: &str, revision: u64, snap_yaml: &str) -> (PathBuf, PathBuf) {
    let tree = dir.join(format!("{name}-tree"));
    fs_err::create_dir_all(tree.join("meta/hooks")).unwrap();
    fs_err::write(tree.join("meta/snap.yaml"), snap_yaml).unwrap();
    fs_err::write(tree.join("meta/hooks/install"), "#!/bin/sh\nexit 0\n").unwrap();
    fs_err::write(tree.join("README"), format!("fixture snap {name}\n")).unwrap();
    let snap = dir.join(format!("{name}_{revision}.snap"));
    run(Command::new("mksquashfs").arg(&tree).arg(&snap).args([
        "-noappend",
        "-comp",
        "xz",
        "-all-root",
        "-no-xattrs",
        "-no-fragments",
        "-quiet",
    ]));
    let bytes = Command::new("openssl")
        .args(["dgst", "-sha3-384", "-binary"])
        .arg(&snap)
        .output()
        .unwrap()
        .stdout;
    assert_eq!(bytes.len(), 48, "openssl gives a sha3-384 digest");
    let size = fs_err::metadata(&snap).unwrap().len();
    let snap_id = format!("{name:x<32}").replace('-', "x");
    let key = "BWDEoaqyr25nF5SNCvEv2v7QnM9QsfCc0PBMYD_i2NGSQ32EF2d4D0hqUel3m8ul";
    let assertion = format!(
        "type: account-key\nauthority-id: canonical\naccount-id: canonical\nname: store\n\
         public-key-sha3-384: {key}\nsince: 2016-04-01T00:00:00.0Z\nsign-key-sha3-384: {key}\n\n\
         AcLBXAQAAQoABgUCfixture\n\n\
         type: snap-declaration\nauthority-id: canonical\nseries: 16\nsnap-id: {snap_id}\n\
         publisher-id: canonical\nsnap-name: {name}\ntimestamp: 2025-09-23T00:00:00.000000Z\n\
         sign-key-sha3-384: {key}\n\nAcLBXAQAAQoABgUCfixture\n\n\
         type: snap-revision\nauthority-id: canonical\nsnap-sha3-384: {}\ndeveloper-id: canonical\n\
         snap-id: {snap_id}\nsnap-revision: {revision}\nsnap-size: {size}\n\
         timestamp: 2025-09-23T00:00:00.000000Z\nsign-key-sha3-384: {key}\n\nAcLBXAQAAQoABgUCfixture\n",
        base64url(&bytes)
    );
    let assert = dir.join(format!("{name}_{revision}.assert"));
    fs_err::write(&assert, assertion).unwrap();
    (snap, assert)
}

/// A chart .tgz as `helm package` makes it: `NAME/Chart.yaml`, values and a template.
fn make_chart(dir: &Path, name: &str, version: &str) -> Vec<u8> {
    let tree = dir.join(format!("chart-{name}"));
    fs_err::create_dir_all(tree.join(name).join("templates")).unwrap();
    fs_err::write(
        tree.join(name).join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\ndescription: fixture chart\ntype: application\n"),
    )
    .unwrap();
    fs_err::write(tree.join(name).join("values.yaml"), "replicaCount: 1\n").unwrap();
    fs_err::write(
        tree.join(name).join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n",
    )
    .unwrap();
    let tgz = dir.join(format!("{name}-{version}.tgz"));
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-czf",
        ])
        .arg(&tgz)
        .arg("-C")
        .arg(&tree)
        .arg(name));
    fs_err::read(tgz).unwrap()
}

/// A driver package: a real .deb.
fn make_deb(dir: &Path) -> Vec<u8> {
    let tree = dir.join("deb-tree");
    fs_err::create_dir_all(tree.join("DEBIAN")).unwrap();
    fs_err::create_dir_all(tree.join("usr/share/doc/nvidia-driver-550")).unwrap();
    fs_err::write(
        tree.join("DEBIAN/control"),
        "Package: nvidia-driver-550\nVersion: 550.163.01-1\nArchitecture: amd64\n\
         Maintainer: kiln tests <tests@kiln.invalid>\nDescription: fixture NVIDIA driver\n",
    )
    .unwrap();
    fs_err::write(
        tree.join("usr/share/doc/nvidia-driver-550/README"),
        "fixture\n",
    )
    .unwrap();
    let deb = dir.join("nvidia-driver-550.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(&deb));
    fs_err::read(deb).unwrap()
}

const CLUSTER: &str = r#"[cluster]
name = "lab"
domain = "lab.example"
os = "debian-12"
timezone = "Etc/UTC"
airgapped = true
images = ["microk8s", "gpu-operator"]

[network]
subnet = "10.20.0.0/24"
[network.dns]
servers = ["10.20.0.10"]
search = ["lab.example"]

[admin]
user = "lab"

[microk8s]
channel = "1.34/stable"
token = { secret = "microk8s-join-token" }
extra_sans = ["k8s.lab.example"]

[microk8s.addons.dns]
[microk8s.addons.helm3]
[microk8s.addons.hostpath-storage]
args = ["--default-class=false"]
[microk8s.addons.metallb]
args = ["10.20.0.220-10.20.0.239"]
[microk8s.addons.ingress]

[microk8s.ingress_tcp]
"2222" = "lab/ssh:22"

[kubernetes.secrets.lab-tls]
namespace = "lab"
type = "kubernetes.io/tls"
data = { "tls.crt" = { secret = "lab-tls-crt" }, "tls.key" = { secret = "lab-tls-key" } }

[registries.mirrors."docker.io"]
endpoints = ["https://registry.lab.example:5000"]

[nfs]
export = "/srv/nfs/k8s"
clients = ["10.20.0.0/24"]

[helm.releases.nfs-provisioner]
chart = "nfs-subdir-external-provisioner"
repository = "CHARTS"
version = "4.0.18"
namespace = "nfs-server-provisioner"

[helm.releases.gpu-operator]
chart = "gpu-operator"
repository = "CHARTS"
version = "v25.3.2"
namespace = "gpu-operator-resources"

[nodes.lab-cp1]
roles = ["control-plane"]
mac = "52:54:00:20:00:11"
ip = "10.20.0.11"
install_disk = "largest"

[nodes.lab-gpu1]
roles = ["lab-gpu-worker"]
mac = "52:54:00:20:00:13"
ip = "10.20.0.13"
install_disk = "largest"

[nodes.lab-gpu2]
roles = ["lab-gpu-worker"]
mac = "52:54:00:20:00:14"
ip = "10.20.0.14"
install_disk = "largest"
gpu = { driver = "550", optional = true }

[nodes.lab-nfs1]
roles = ["nfs-server", "dns-server"]
mac = "52:54:00:20:00:10"
ip = "10.20.0.10"
install_disk = "largest"
"#;

/// The SAI GPU worker role, with the driver as a pinned package (a [[file]] the bundle
/// carries) instead of Ubuntu's archive packages.
const GPU_ROLE: &str = "kubernetes = \"worker\"\nnfs_client = true\n\"packages+\" = [\"nfs-common\"]\n\n[gpu]\ndriver = \"550\"\nmodule = \"open\"\n\n[labels]\n\"kiln.dev/accelerator\" = \"nvidia\"\n";

struct Lab {
    dir: PathBuf,
    /// sha256 of each fixture artifact by the name the bundle gives it.
    artifacts: Vec<(String, String)>,
}

fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(make_lab)
}

fn make_lab() -> Lab {
    use common::registry::{require, Layout, Registry};
    for (tool, package) in [
        ("mksquashfs", "squashfs-tools"),
        ("unsquashfs", "squashfs-tools"),
        ("dpkg-deb", "dpkg"),
        ("openssl", "openssl"),
        ("unshare", "util-linux"),
    ] {
        require(tool, package);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "tests/firstboot.rs needs root: it runs each node's first boot in its own mount and network namespace"
    );
    let dir = lab_dir();
    if dir.exists() {
        teardown_mounts(&dir);
        fs_err::remove_dir_all(&dir).unwrap();
    }
    let fixtures = dir.join("fixtures");
    fs_err::create_dir_all(&fixtures).unwrap();
    let mut artifacts = Vec::new();

    // Images, in a registry that stands in for docker.io, registry.k8s.io and nvcr.io.
    let registry = Registry::start();
    for (index, repository) in ["calico/node", "pause", "nvidia/gpu-operator"]
        .iter()
        .enumerate()
    {
        let mut layout = Layout::new();
        let layer = layout.layer(repository, &content(50_000, index as u64 + 20));
        let image = layout.image("linux", "amd64", &[&layer]);
        let tag = ["v3.29.3", "3.10", "v25.3.2"][index];
        layout.tag(&image.descriptor, tag);
        registry.push(&layout, tag, repository, &[]);
    }

    // Charts and the driver package, on a web server.
    let charts = [
        ("nfs-subdir-external-provisioner", "4.0.18"),
        ("gpu-operator", "v25.3.2"),
    ];
    let mut served: Vec<(String, Vec<u8>)> = Vec::new();
    let mut index = String::from("apiVersion: v1\nentries:\n");
    for (name, version) in charts {
        let tgz = make_chart(&fixtures, name, version);
        index.push_str(&format!(
            "  {name}:\n    - name: {name}\n      version: {version}\n      digest: {}\n      urls: [{name}-{version}.tgz]\n",
            sha256_hex(&tgz)
        ));
        artifacts.push((format!("charts/{name}-{version}.tgz"), sha256_hex(&tgz)));
        served.push((format!("/charts/{name}-{version}.tgz"), tgz));
    }
    served.push(("/charts/index.yaml".into(), index.into_bytes()));
    let deb = make_deb(&fixtures);
    artifacts.push((
        "nvidia/nvidia-driver-550_550.163.01-1_amd64.deb".into(),
        sha256_hex(&deb),
    ));
    served.push(("/pool/nvidia-driver-550_550.163.01-1_amd64.deb".into(), deb));
    let server = TestServer::start(move |_, request| {
        let path = request.line.split_whitespace().nth(1).unwrap_or("");
        match served.iter().find(|(served, _)| served == path) {
            Some((_, bytes)) => Reply::whole(bytes),
            None => Reply::status(404),
        }
    });

    // Snaps: kiln cannot download them, so they go into the store with `kiln store add`.
    let (core22, core22_assert) = make_snap(
        &fixtures,
        "core22",
        CORE22_REVISION,
        "name: core22\nversion: '20250923'\nsummary: Runtime environment based on Ubuntu 22.04\ntype: base\nconfinement: strict\ngrade: stable\narchitectures: [amd64]\n",
    );
    let (microk8s, microk8s_assert) = make_snap(
        &fixtures,
        "microk8s",
        MICROK8S_REVISION,
        "name: microk8s\nversion: v1.34.1\nsummary: Kubernetes for workstations and appliances\nbase: core22\nconfinement: classic\ngrade: stable\narchitectures: [amd64]\napps:\n  microk8s:\n    command: microk8s.wrapper\n",
    );
    let profile = dir.join("lab");
    fs_err::create_dir_all(profile.join("images")).unwrap();
    common::copy_dir(
        &common::repo().join("profiles/roles"),
        &profile.join("roles"),
    );
    fs_err::write(profile.join("roles/lab-gpu-worker.toml"), GPU_ROLE).unwrap();
    let added: Value = serde_json::from_str(&kiln(
        &dir,
        &[
            "store",
            "add",
            "--json",
            core22.to_str().unwrap(),
            core22_assert.to_str().unwrap(),
            microk8s.to_str().unwrap(),
            microk8s_assert.to_str().unwrap(),
        ],
    ))
    .unwrap();
    let digest = |index: usize| {
        added["added"][index]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (index, path) in [&core22, &core22_assert, &microk8s, &microk8s_assert]
        .iter()
        .enumerate()
    {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            digest(index),
            format!("sha256:{}", sha256_hex(&fs_err::read(path).unwrap())),
            "kiln store add prints the sha256 of {name}"
        );
        artifacts.push((format!("snaps/{name}"), digest(index)[7..].to_string()));
    }
    fs_err::write(
        profile.join("images/microk8s.toml"),
        format!(
            "description = \"fixture MicroK8s 1.34\"\n\n\
             [[snap]]\nname = \"core22\"\nchannel = \"latest/stable\"\nrevision = {CORE22_REVISION}\ndigest = \"{}\"\nassert_digest = \"{}\"\n\n\
             [[snap]]\nname = \"microk8s\"\nchannel = \"1.34/stable\"\nclassic = true\nrevision = {MICROK8S_REVISION}\ndigest = \"{}\"\nassert_digest = \"{}\"\n\n\
             [[image]]\nname = \"docker.io/calico/node:v3.29.3\"\n\n[[image]]\nname = \"registry.k8s.io/pause:3.10\"\n",
            digest(0),
            digest(1),
            digest(2),
            digest(3)
        ),
    )
    .unwrap();
    fs_err::write(
        profile.join("images/gpu-operator.toml"),
        format!(
            "[[image]]\nname = \"nvcr.io/nvidia/gpu-operator:v25.3.2\"\n\n[[file]]\nname = \"nvidia-driver-550\"\nurl = \"{}\"\n",
            server.url("/pool/nvidia-driver-550_550.163.01-1_amd64.deb")
        ),
    )
    .unwrap();
    fs_err::write(
        profile.join("cluster.toml"),
        CLUSTER.replace("CHARTS", &server.url("/charts")),
    )
    .unwrap();
    fs_err::write(
        dir.join("secrets.toml"),
        format!(
            "microk8s-join-token = \"{TOKEN}\"\nlab-tls-crt = \"\"\"\n{TLS_CRT}\"\"\"\nlab-tls-key = \"\"\"\n-----BEGIN PRIVATE KEY-----\nLABKEY\n-----END PRIVATE KEY-----\n\"\"\"\n"
        ),
    )
    .unwrap();
    let host = format!("http://{}", registry.host());
    let mirrors: Vec<String> = ["docker.io", "registry.k8s.io", "nvcr.io"]
        .iter()
        .map(|registry| format!("{registry}={host}"))
        .collect();
    for command in ["lock", "fetch"] {
        let mut args = vec![command];
        for mirror in &mirrors {
            args.extend(["--mirror", mirror.as_str()]);
        }
        kiln(&dir, &args);
    }
    drop(server);
    drop(registry);
    // From here on nothing needs the network: the layers come from the lock and the store.
    kiln(&dir, &["build", "layer", "--all"]);
    Lab { dir, artifacts }
}

/// Unmount anything a killed earlier run left below `dir`.
fn teardown_mounts(dir: &Path) {
    let mounts = fs_err::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut below: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|target| target.starts_with(dir.to_str().unwrap()))
        .collect();
    below.sort_by_key(|target| std::cmp::Reverse(target.len()));
    for target in below {
        let _ = Command::new("umount").arg("-l").arg(target).status();
    }
}

/// A node's root: its layer, the stand-ins, and a sysfs with `gpus` NVIDIA GPUs.
struct Node {
    root: PathBuf,
    sys: PathBuf,
}

impl Node {
    fn new(scenario: &str, node: &str, gpus: usize) -> Node {
        let lab = lab();
        let base = lab.dir.join("nodes").join(scenario);
        let root = base.join("root");
        fs_err::create_dir_all(&root).unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(lab.dir.join(format!("out/lab/{node}.layer.tar")))
            .arg("-C")
            .arg(&root));
        // The layer's /usr goes over the host's, read-only; the rest of the root is the layer.
        fs_err::rename(root.join("usr"), root.join(".layer-usr")).unwrap();
        for dir in [
            "usr",
            "proc",
            "sys",
            "dev",
            "tmp",
            "root",
            "kiln-test/bin",
            "kiln-test/state",
            "etc/alternatives",
        ] {
            fs_err::create_dir_all(root.join(dir)).unwrap();
        }
        run(Command::new("chmod").arg("1777").arg(root.join("tmp")));
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        fs_err::copy(
            common::repo().join("tests/fixtures/node-tools/standin.py"),
            root.join("kiln-test/standin.py"),
        )
        .unwrap();
        for tool in [
            "snap",
            "microk8s",
            "modinfo",
            "modprobe",
            "nvidia-smi",
            "apt-get",
        ] {
            std::os::unix::fs::symlink("../standin.py", root.join("kiln-test/bin").join(tool))
                .unwrap();
        }
        let sys = base.join("sys");
        fs_err::create_dir_all(sys.join("bus/pci/devices")).unwrap();
        let node = Node { root, sys };
        // A NIC, so the bus is never empty.
        node.pci_device("0000:00:03.0", "0x8086", "0x020000");
        for index in 0..gpus {
            node.add_gpu(index);
        }
        node
    }

    fn pci_device(&self, address: &str, vendor: &str, class: &str) {
        let device = self.sys.join("bus/pci/devices").join(address);
        fs_err::create_dir_all(&device).unwrap();
        fs_err::write(device.join("vendor"), format!("{vendor}\n")).unwrap();
        fs_err::write(device.join("class"), format!("{class}\n")).unwrap();
    }

    fn add_gpu(&self, index: usize) {
        self.pci_device(
            &format!("0000:{:02x}:00.0", index + 0x41),
            "0x10de",
            "0x030200",
        );
    }

    /// Journal stages as done at an earlier boot (network and NFS are verified in VMs by
    /// tests/disk.rs; their addresses are not reachable from this namespace).
    fn done_earlier(&self, stages: &[&str]) {
        let journal = self.root.join("var/lib/kiln/stages");
        fs_err::create_dir_all(&journal).unwrap();
        for stage in stages {
            fs_err::write(journal.join(stage), "ok 0 verified by tests/disk.rs\n").unwrap();
        }
    }

    /// Run `command` in the node's root, in its own mount and network namespace.
    fn exec(&self, command: &str) -> (i32, String) {
        let script = r#"set -e
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$ROOT/.layer-usr:/usr" "$ROOT/usr"
mount -t proc proc "$ROOT/proc"
mount --bind "$SYS" "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount --bind -o ro /etc/alternatives "$ROOT/etc/alternatives"
exec chroot "$ROOT" /usr/bin/env -i PATH=/kiln-test/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 /bin/bash -c "$COMMAND"
"#;
        let output = Command::new("unshare")
            .args(["--mount", "--net", "--fork", "--", "sh", "-c", script])
            .env("ROOT", &self.root)
            .env("SYS", &self.sys)
            .env("COMMAND", command)
            .output()
            .expect("unshare runs");
        let mut console = String::from_utf8_lossy(&output.stdout).into_owned();
        console.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.code().unwrap_or(-1), console)
    }

    /// Boot: run the first-boot program. While it runs, play the control plane: once the
    /// node's cluster agent has its join request, answer after a few seconds (MicroK8s
    /// writes clustered.lock when the join succeeds).
    fn boot(&self) -> (i32, String) {
        let join = self.root.join("kiln-test/state/join.json");
        let clustered = self
            .root
            .join("var/snap/microk8s/current/var/lock/clustered.lock");
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut asked: Option<Instant> = None;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    if asked.is_none() && join.exists() {
                        asked = Some(Instant::now());
                    }
                    if asked.is_some_and(|at| at.elapsed() > Duration::from_secs(3))
                        && !clustered.exists()
                    {
                        fs_err::create_dir_all(clustered.parent().unwrap()).unwrap();
                        fs_err::write(&clustered, "").unwrap();
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        let result = self.exec("/usr/lib/kiln/firstboot");
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        watcher.join().unwrap();
        result
    }

    fn calls(&self) -> Vec<String> {
        fs_err::read_to_string(self.root.join("kiln-test/calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let words: Vec<String> = serde_json::from_str(line).unwrap();
                words.join(" ")
            })
            .collect()
    }

    fn state(&self, name: &str) -> Value {
        fs_err::read_to_string(self.root.join(format!("kiln-test/state/{name}.json")))
            .map(|text| serde_json::from_str(&text).unwrap())
            .unwrap_or(Value::Null)
    }

    fn file(&self, path: &str) -> String {
        fs_err::read_to_string(self.root.join(path.trim_start_matches('/'))).unwrap()
    }

    fn files(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(self.root.join(dir.trim_start_matches('/')))
            .map(|entries| {
                entries
                    .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

const BUNDLE: &str = "/var/lib/kiln/bundle";

fn snap_calls() -> Vec<String> {
    vec![
        format!("snap ack {BUNDLE}/snaps/core22_{CORE22_REVISION}.assert"),
        format!("snap install {BUNDLE}/snaps/core22_{CORE22_REVISION}.snap"),
        format!("snap ack {BUNDLE}/snaps/microk8s_{MICROK8S_REVISION}.assert"),
        format!("snap install --classic {BUNDLE}/snaps/microk8s_{MICROK8S_REVISION}.snap"),
        "snap list microk8s".into(),
        "microk8s status --wait-ready --timeout 600".into(),
        "snap list microk8s".into(),
    ]
}

fn image_archives() -> Vec<String> {
    vec![
        "docker.io_calico_node_v3.29.3.tar".into(),
        "nvcr.io_nvidia_gpu-operator_v25.3.2.tar".into(),
        "registry.k8s.io_pause_3.10.tar".into(),
    ]
}

fn assert_has(console: &str, line: &str) {
    assert!(
        console.contains(line),
        "no `{line}` in the console:\n{console}"
    );
}

#[test]
fn every_artifact_lands_in_each_nodes_layer_as_fetched() {
    let lab = lab();
    let listing = |node: &str| -> Vec<String> {
        run(Command::new("tar")
            .arg("-tf")
            .arg(lab.dir.join(format!("out/lab/{node}.layer.tar"))))
        .lines()
        .map(String::from)
        .collect()
    };
    let bundled = |files: &[String]| -> Vec<String> {
        let mut names: Vec<String> = files
            .iter()
            .filter_map(|path| path.strip_prefix("var/lib/kiln/bundle/"))
            .filter(|rest| !rest.is_empty() && !rest.ends_with('/'))
            .map(String::from)
            .collect();
        names.sort();
        names
    };
    let snaps = [
        format!("snaps/core22_{CORE22_REVISION}.assert"),
        format!("snaps/core22_{CORE22_REVISION}.snap"),
        format!("snaps/microk8s_{MICROK8S_REVISION}.assert"),
        format!("snaps/microk8s_{MICROK8S_REVISION}.snap"),
    ];
    let images: Vec<String> = image_archives()
        .iter()
        .map(|name| format!("images/{name}"))
        .collect();
    let charts = [
        "charts/gpu-operator-v25.3.2.tgz".to_string(),
        "charts/nfs-subdir-external-provisioner-4.0.18.tgz".to_string(),
    ];
    let driver = "nvidia/nvidia-driver-550_550.163.01-1_amd64.deb".to_string();

    let mut want: Vec<String> = [charts.to_vec(), images.clone(), snaps.to_vec()].concat();
    want.sort();
    let cp1 = listing("lab-cp1");
    assert_eq!(
        bundled(&cp1),
        want,
        "the first control plane's bundle share"
    );
    for path in [
        "etc/microk8s.yaml",
        "usr/lib/kiln/firstboot",
        "etc/kiln/helm/gpu-operator.values.yaml",
        "etc/kiln/manifests/10-secret-lab-tls.yaml",
    ] {
        assert!(
            cp1.iter().any(|file| file == path),
            "lab-cp1's layer has no {path}"
        );
    }
    let mut want: Vec<String> = [images.clone(), vec![driver.clone()], snaps.to_vec()].concat();
    want.sort();
    assert_eq!(
        bundled(&listing("lab-gpu1")),
        want,
        "a GPU worker's bundle share: no charts"
    );
    assert_eq!(
        bundled(&listing("lab-nfs1")),
        Vec::<String>::new(),
        "the NFS server needs no bundle"
    );

    // The bytes are the fixture's: extract the snaps, charts and driver and compare.
    let node = Node::new("artifacts", "lab-gpu1", 0);
    let cp = Node::new("artifacts-cp", "lab-cp1", 0);
    for (name, sha256) in &lab.artifacts {
        let holder = if name.starts_with("charts/") {
            &cp
        } else {
            &node
        };
        let bytes = fs_err::read(holder.root.join("var/lib/kiln/bundle").join(name)).unwrap();
        assert_eq!(&sha256_hex(&bytes), sha256, "{name} in the layer");
    }
    // The launch configuration is readable by root alone: it holds the token.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs_err::metadata(cp.root.join("etc/microk8s.yaml"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn the_first_control_plane_installs_microk8s_from_the_bundle_then_addons_and_helm_releases() {
    let node = Node::new("control-plane", "lab-cp1", 0);
    node.done_earlier(&["network"]);
    let (code, console) = node.boot();
    assert_eq!(code, 0, "{console}");
    assert_has(
        &console,
        "kiln: stage images ok: staged 3 image archive(s) for sideloading",
    );
    assert_has(
        &console,
        "kiln: stage microk8s ok: microk8s v1.34.1 ready (1.34/stable)",
    );
    assert_has(
        &console,
        "kiln: stage addons ok: addons enabled: dns helm3 hostpath-storage metallb ingress",
    );
    assert_has(&console, "kiln: stage helm ok: 2 Helm release(s) installed");
    assert_has(&console, "kiln: node lab-cp1 ready");

    // Each command is the reference's: snap ack then install of local files, base first,
    // microk8s with --classic (§2); the offline addons come from the launch configuration
    // (§1); NGINX TCP forwarding through its ConfigMap and a DaemonSet port (§4); the TLS
    // secret before the releases; each release from its bundled chart with its values.
    let mut want = snap_calls();
    for addon in ["dns", "helm3", "hostpath-storage", "metallb", "ingress"] {
        want.push(format!("microk8s status --addon {addon}"));
    }
    want.extend([
        "microk8s kubectl apply -f /etc/kiln/manifests/20-ingress-tcp.yaml".to_string(),
        "microk8s kubectl --namespace ingress patch daemonset nginx-ingress-microk8s-controller --patch-file /etc/kiln/patches/ingress-tcp-ports.yaml".to_string(),
        "microk8s kubectl apply -f /etc/kiln/manifests/10-secret-lab-tls.yaml".to_string(),
    ]);
    for (release, chart, namespace) in [
        (
            "nfs-provisioner",
            "nfs-subdir-external-provisioner-4.0.18",
            "nfs-server-provisioner",
        ),
        (
            "gpu-operator",
            "gpu-operator-v25.3.2",
            "gpu-operator-resources",
        ),
    ] {
        want.push(format!(
            "microk8s helm3 upgrade --install {release} {BUNDLE}/charts/{chart}.tgz --namespace {namespace} --create-namespace --values /etc/kiln/helm/{release}.values.yaml --wait --timeout 20m"
        ));
    }
    assert_eq!(node.calls(), want);

    // The install hook read kiln's file, first in its search order, with no unknown keys.
    assert_eq!(
        node.state("install-hook")["launch_configuration"],
        "/etc/microk8s.yaml"
    );
    assert_eq!(
        node.state("warnings"),
        Value::Null,
        "unknown launch configuration keys"
    );
    assert_eq!(
        node.files("/var/snap/microk8s/common/etc/launcher"),
        vec!["install.yaml.applied"],
        "the cluster agent applied the launch configuration"
    );
    assert_eq!(
        node.file("/var/snap/microk8s/current/credentials/persistent-cluster-tokens.txt"),
        format!("{TOKEN}\n")
    );
    assert_eq!(
        node.state("addons"),
        json!({
            "dns": { "args": ["10.20.0.10"], "enabled": true },
            "helm3": { "args": [], "enabled": true },
            "hostpath-storage": { "args": ["--default-class=false"], "enabled": true },
            "metallb": { "args": ["10.20.0.220-10.20.0.239"], "enabled": true },
            "ingress": { "args": [], "enabled": true },
        })
    );
    // Registry mirrors: where MicroK8s' containerd reads them (config_path args/certs.d).
    let hosts = node.file("/var/snap/microk8s/current/args/certs.d/docker.io/hosts.toml");
    assert!(
        hosts.contains("[host.\"https://registry.lab.example:5000\"]"),
        "{hosts}"
    );
    assert!(
        hosts.contains("capabilities = [\"pull\", \"resolve\"]"),
        "{hosts}"
    );

    // The TLS secret carries the secret given at build time; TCP forwarding is the
    // ConfigMap the ingress reads, with the port on the DaemonSet.
    let applied = node.state("applied");
    let secret = applied
        .as_array()
        .unwrap()
        .iter()
        .find(|object| object["kind"] == "Secret")
        .expect("a Secret was applied");
    assert_eq!(secret["metadata"]["name"], "lab-tls");
    assert_eq!(secret["metadata"]["namespace"], "lab");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let crt = secret["data"]["tls.crt"]
        .as_str()
        .map(String::from)
        .or_else(|| secret["stringData"]["tls.crt"].as_str().map(String::from));
    let crt = crt.expect("tls.crt in the Secret");
    assert!(
        crt == TLS_CRT || crt == base64_standard(TLS_CRT.as_bytes()),
        "tls.crt is the secret given at build time: {crt}"
    );
    let tcp = applied
        .as_array()
        .unwrap()
        .iter()
        .find(|object| object["kind"] == "ConfigMap")
        .expect("a ConfigMap was applied");
    assert_eq!(tcp["metadata"]["name"], "nginx-ingress-tcp-microk8s-conf");
    assert_eq!(tcp["metadata"]["namespace"], "ingress");
    assert_eq!(tcp["data"]["2222"], "lab/ssh:22");
    let patch = node.state("ingress-patch").to_string();
    assert!(patch.contains("\"hostPort\":2222"), "{patch}");

    // The releases in the profile's order, from the bundled charts, with the GPU operator
    // set up as MicroK8s' own addon would (reference §4): host driver, MicroK8s' containerd.
    let releases = node.state("releases");
    let summary: Vec<(String, String, String)> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|release| {
            (
                release["release"].as_str().unwrap().to_string(),
                release["chart"].as_str().unwrap().to_string(),
                release["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "nfs-provisioner".into(),
                "nfs-subdir-external-provisioner".into(),
                "4.0.18".into()
            ),
            (
                "gpu-operator".into(),
                "gpu-operator".into(),
                "v25.3.2".into()
            ),
        ]
    );
    let operator = releases[1]["values"].to_string();
    for wanted in [
        "\"driver\":{\"enabled\":false}",
        "/var/snap/microk8s/common/run/containerd.sock",
        "/var/snap/microk8s/current/args/containerd-template.toml",
    ] {
        assert!(
            operator.contains(wanted),
            "gpu-operator values lack {wanted}: {operator}"
        );
    }

    // Sideloading: the install hook copied the archives where MicroK8s' containerd imports
    // them, and a real containerd imports each into namespace k8s.io under its name.
    let sideload = "/var/snap/microk8s/common/etc/sideload";
    assert_eq!(node.files(sideload), image_archives());
    let containerd = common::containerd::Containerd::start();
    for archive in image_archives() {
        containerd.import(
            &node
                .root
                .join(sideload.trim_start_matches('/'))
                .join(&archive),
            &[],
        );
    }
    let mut names: Vec<String> = containerd
        .images()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "docker.io/calico/node:v3.29.3",
            "nvcr.io/nvidia/gpu-operator:v25.3.2",
            "registry.k8s.io/pause:3.10",
        ]
    );

    // The next boot does nothing again; kiln-status lists the stages with their times.
    let (code, console) = node.boot();
    assert_eq!(code, 0, "{console}");
    assert_has(
        &console,
        "kiln: stage microk8s skip: done at an earlier boot",
    );
    assert_has(&console, "kiln: node lab-cp1 ready");
    assert_eq!(node.calls(), want, "a second boot calls nothing");
    let (code, status) = node.exec("kiln-status");
    assert_eq!(code, 0, "{status}");
    for stage in ["network", "images", "microk8s", "addons", "helm"] {
        assert!(
            status
                .lines()
                .any(|line| line.contains(stage) && line.contains("ok")),
            "kiln-status lacks {stage}:\n{status}"
        );
    }
}

fn base64_standard(bytes: &[u8]) -> String {
    let url = base64url(bytes).replace('-', "+").replace('_', "/");
    let padding = (4 - url.len() % 4) % 4;
    format!("{url}{}", "=".repeat(padding))
}

#[test]
fn a_gpu_worker_without_its_gpu_stops_at_the_driver_and_resumes_once_the_gpu_is_there() {
    let node = Node::new("gpu-worker", "lab-gpu1", 0);
    node.done_earlier(&["network", "nfs-client"]);
    let (code, console) = node.boot();
    assert_eq!(code, 1, "{console}");
    assert_has(
        &console,
        "kiln: stage nvidia fail: no NVIDIA GPU on the PCI bus",
    );
    assert_has(&console, "kiln: first boot stopped at stage nvidia");
    assert!(!console.contains("stage microk8s"), "{console}");
    assert_eq!(
        node.calls(),
        Vec::<String>::new(),
        "nothing installed without the GPU"
    );

    // The next boot, with the GPU seated: the bundled driver is installed from local files
    // only, loaded and checked; MicroK8s installs, and the worker joins once the control
    // plane answers (the agent retries; first boot waits with backoff).
    node.add_gpu(0);
    let started = Instant::now();
    let (code, console) = node.boot();
    assert_eq!(code, 0, "{console}");
    assert_has(
        &console,
        "kiln: stage nvidia ok: driver 550 loaded, nvidia-smi lists 1 GPU(s)",
    );
    assert_has(
        &console,
        "kiln: stage join ok: joined the cluster through lab-cp1 as worker",
    );
    assert_has(&console, "kiln: node lab-gpu1 ready");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the join waited for the control plane"
    );
    let mut want = vec![
        "modinfo nvidia".to_string(),
        format!(
            "apt-get install --yes --no-download --no-install-recommends {BUNDLE}/nvidia/nvidia-driver-550_550.163.01-1_amd64.deb"
        ),
        "modprobe nvidia".to_string(),
        "nvidia-smi --list-gpus".to_string(),
    ];
    want.extend(snap_calls());
    assert_eq!(node.calls(), want);
    // The worker's launch configuration joins with the persistent token and no fingerprint
    // (reference §3), and carries no addons.
    assert_eq!(
        node.state("join"),
        json!({ "url": format!("10.20.0.11:25000/{TOKEN}"), "worker": true })
    );
    assert_eq!(node.state("addons"), json!({}));
    assert_eq!(
        node.state("driver")["installed"],
        "nvidia-driver-550 550.163.01-1"
    );
    assert_eq!(
        node.files("/var/snap/microk8s/common/etc/sideload"),
        image_archives()
    );
    let labels = node.file("/etc/microk8s.yaml");
    assert!(labels.contains("kiln.dev/accelerator=nvidia"), "{labels}");
}

#[test]
fn a_gpu_marked_optional_is_skipped_with_its_reason() {
    let node = Node::new("optional-gpu", "lab-gpu2", 0);
    node.done_earlier(&["network", "nfs-client"]);
    let (code, console) = node.boot();
    assert_eq!(code, 0, "{console}");
    assert_has(
        &console,
        "kiln: stage nvidia skip: no NVIDIA GPU on the PCI bus (gpu.optional = true)",
    );
    assert_has(&console, "kiln: node lab-gpu2 ready");
    assert!(
        !node
            .calls()
            .iter()
            .any(|call| call.starts_with("apt-get") || call.starts_with("modprobe")),
        "no driver work without a GPU: {:?}",
        node.calls()
    );
}
