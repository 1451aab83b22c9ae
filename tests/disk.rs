//! The demo's node disk, built for real: mmdebstrap from the locked .debs (offline), the
//! node layer, a GPT disk with an ESP holding a unified kernel image and an ext4 root.
//!
//! - two builds in different environments (TZ, umask, store and profile paths, a store only
//!   root may enter, a working directory on tmpfs) are byte-identical: the first is `kiln
//!   build disk`, the second `kiln check` in another store, which also compares its own
//!   cached and cache-less builds;
//! - the result passes `sgdisk -v`, `e2fsck -fn`, `fsck.vfat -n` and `qemu-img check`;
//! - a build with nothing changed does nothing; a changed setting rebuilds the node layer
//!   and the disk but reuses the root file system (from kiln's JSON step report);
//! - the USB installer ISO, attached as a USB stick beside blank disks, writes the node to
//!   the disk its rule picks, which then passes `kiln verify` (every stage ok) and grows its
//!   root to fill the larger disk; with two disks the rule cannot tell apart it refuses and
//!   lists them;
//! - a template that writes the time makes `kiln check` fail, naming the step and file.
//!
//! Needs root, the Debian archive (to fill the store by the lock) and the image tools
//! (scripts/test installs them). Slow: several minutes on CI, most of it mmdebstrap and TCG.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The lab every test here shares: the demo profile and a store filled by its lock, in
/// `target/tmp/disk-lab` (GBs: the root file system, disks, a second build for `check`), so
/// each run removes the previous run's instead of leaving one behind per run.
struct Lab {
    root: PathBuf,
}

impl Lab {
    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Run kiln in the lab root; (code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        kiln(self, &self.root, &[], args)
    }
}

/// A copy of the demo profile (with the shared roles and sets) under `dir`.
fn copy_demo(dir: &Path) -> PathBuf {
    for sub in ["demo", "roles"] {
        common::copy_dir(
            &common::repo().join("profiles").join(sub),
            &dir.join("profiles").join(sub),
        );
    }
    common::copy_dir(&common::repo().join("images"), &dir.join("images"));
    dir.join("profiles/demo")
}

fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        for (program, package) in [
            ("mmdebstrap", "mmdebstrap"),
            ("mke2fs", "e2fsprogs"),
            ("mkfs.vfat", "dosfstools"),
            ("mcopy", "mtools"),
            ("sgdisk", "gdisk"),
            ("qemu-img", "qemu-utils"),
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("apt-ftparchive", "apt-utils"),
        ] {
            common::registry::require(program, package);
        }
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("disk-lab");
        if root.exists() {
            let status = Command::new("rm").arg("-rf").arg(&root).status().unwrap();
            assert!(status.success(), "could not remove {}", root.display());
        }
        fs_err::create_dir_all(&root).unwrap();
        let lab = Lab { root };
        copy_demo(&lab.root);
        let fetch = lab.run(&["--locked", "fetch"]);
        if fetch.0 != 0 {
            // The archive moved on since the lock was written (no snapshot archive here):
            // lock afresh, as scripts/demo does, and fetch that.
            eprintln!(
                "fetch by the committed lock failed, locking afresh:\n{}",
                fetch.2
            );
            let lock = lab.run(&["lock"]);
            assert_eq!(lock.0, 0, "{}", lock.2);
            let fetch = lab.run(&["fetch"]);
            assert_eq!(fetch.0, 0, "{}", fetch.2);
        }
        lab
    })
}

/// Run kiln in the lab with extra environment; returns (code, stdout, stderr).
fn kiln(lab: &Lab, cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", lab.path(""))
        .env("KILN_STORE", lab.path("store"))
        .env("KILN_PROFILE", lab.path("profiles/demo"));
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("kiln runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Run a shell command line (for umask); panics with its output on failure.
fn shell(line: &str) -> String {
    let output = Command::new("sh").arg("-c").arg(line).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "`{line}` failed:\n{text}");
    text
}

fn actions(report: &serde_json::Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (
                step["kind"].as_str().unwrap().to_string(),
                step["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The first build: umask 077, TZ Asia/Tokyo, scratch trees on tmpfs; cached by key, so the
/// tests that need it share it.
fn first_build() -> &'static (PathBuf, serde_json::Value) {
    static BUILD: OnceLock<(PathBuf, serde_json::Value)> = OnceLock::new();
    BUILD.get_or_init(|| {
        let lab = lab();
        let tmpfs = PathBuf::from("/dev/shm").join(format!("kiln-test-{}", std::process::id()));
        fs_err::create_dir_all(&tmpfs).unwrap();
        let cwd = lab.path("first");
        fs_err::create_dir_all(&cwd).unwrap();
        let line = format!(
            "umask 077 && cd {} && TZ=Asia/Tokyo TMPDIR={} {} --store {} -p {} build disk --node demo-server --out {} --json",
            cwd.display(),
            tmpfs.display(),
            env!("CARGO_BIN_EXE_kiln"),
            lab.path("store").display(),
            lab.path("profiles/demo").display(),
            lab.path("out").display(),
        );
        let output = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        let _ = fs_err::remove_dir_all(&tmpfs);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let raw = lab.path("out/demo/demo-server.raw");
        assert!(raw.exists(), "{stderr}");
        (raw, report)
    })
}

#[test]
fn two_builds_in_different_environments_are_byte_identical_and_kiln_check_says_so() {
    let lab = lab();
    let (raw, report) = first_build();
    let first_sha = report["outputs"][0]["entry"]["files"]["demo-server.raw"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    // The second build: umask 022, another time zone, another working directory, another
    // copy of the profile, scratch trees in the store (on disk), no step cache, and a store
    // inside a directory only root may enter (as ~/.cache is under /root), where apt's
    // _apt user cannot follow.
    let private = lab.path("private");
    fs_err::create_dir_all(private.join("store/blobs")).unwrap();
    shell(&format!(
        "chmod 700 {dir} && cp -al {blobs}/sha256 {dir}/store/blobs/",
        dir = private.display(),
        blobs = lab.path("store/blobs").display()
    ));
    let profile = copy_demo(&private);
    let cwd = lab.path("second");
    fs_err::create_dir_all(&cwd).unwrap();
    let line = format!(
        "umask 022 && cd {} && TZ=America/Lima {} --store {} -p {} check disk:demo-server usb:demo-server pxe:demo-server --base-url http://10.0.2.100 --out {} --json",
        cwd.display(),
        env!("CARGO_BIN_EXE_kiln"),
        private.join("store").display(),
        profile.display(),
        lab.path("out").display(),
    );
    let output = Command::new("sh").arg("-c").arg(&line).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kiln check failed:\n{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["outputs"][0]["reproducible"], true, "{stderr}");
    assert_eq!(result["outputs"][0]["sha256"], first_sha.as_str());
    assert!(
        stderr.contains("rootfs") && stderr.contains("build"),
        "the check rebuilt the root file system: {stderr}"
    );
    assert!(raw.exists());
    // The USB ISO and the PXE tree: reproducible in the check, and the same bytes as the
    // lab's own builds in the first environment.
    let (iso, _) = usb_build();
    let (code, _, stderr_pxe) = lab.run(&[
        "build",
        "pxe",
        "--node",
        "demo-server",
        "--base-url",
        "http://10.0.2.100",
    ]);
    assert_eq!(code, 0, "{stderr_pxe}");
    let tree_manifest = lab.path("out/demo/pxe/kiln-tree.json");
    for (index, output, own) in [
        (1, "usb:demo-server", sha256_of_prefix(iso, u64::MAX)),
        (
            2,
            "pxe:demo-server",
            sha256_of_prefix(&tree_manifest, u64::MAX),
        ),
    ] {
        let checked = &result["outputs"][index];
        assert_eq!(checked["output"], output, "{result:#}");
        assert_eq!(checked["reproducible"], true, "{stderr}\n{result:#}");
        assert_eq!(checked["sha256"], own.as_str(), "{output}: {result:#}");
    }
    // The PXE tree's manifest lists every file's sha256: the trees are identical.
    let _ = fs_err::remove_dir_all(&private);
}

#[test]
fn the_disk_passes_the_file_system_checkers() {
    let lab = lab();
    let (raw, _) = first_build();
    let raw = raw.display().to_string();
    let verify = shell(&format!("sgdisk -v {raw}"));
    assert!(verify.contains("No problems found"), "{verify}");
    let table = shell(&format!("sgdisk -p {raw}"));
    assert!(table.contains("EF00") && table.contains("8304"), "{table}");
    let start = |number: u32| -> u64 {
        let info = shell(&format!("sgdisk -i {number} {raw}"));
        info.lines()
            .find(|line| line.starts_with("First sector:"))
            .and_then(|line| line.split_whitespace().nth(2))
            .unwrap()
            .parse()
            .unwrap()
    };
    shell(&format!("e2fsck -fn '{raw}?offset={}'", start(2) * 512));
    let esp = lab.path("esp.img");
    let end: u64 = shell(&format!("sgdisk -i 1 {raw}"))
        .lines()
        .find(|line| line.starts_with("Last sector:"))
        .and_then(|line| line.split_whitespace().nth(2))
        .unwrap()
        .parse()
        .unwrap();
    shell(&format!(
        "dd if={raw} of={} bs=512 skip={} count={} status=none",
        esp.display(),
        start(1),
        end - start(1) + 1
    ));
    shell(&format!("fsck.vfat -n {}", esp.display()));
    let listing = shell(&format!(
        "MTOOLS_SKIP_CHECK=1 mdir -i {} ::/EFI/BOOT",
        esp.display()
    ));
    assert!(listing.contains("BOOTX64"), "{listing}");
    let qcow2 = lab.path("out/demo/demo-server.qcow2");
    shell(&format!("qemu-img check {}", qcow2.display()));
    // The qcow2 holds the same disk as the raw image.
    shell(&format!(
        "qemu-img compare -f raw -F qcow2 {raw} {}",
        qcow2.display()
    ));
}

#[test]
fn nothing_changed_does_nothing_and_a_changed_setting_reuses_the_root_file_system() {
    let lab = lab();
    let _ = first_build();
    let cwd = lab.path("");
    let (code, stdout, stderr) = kiln(
        lab,
        &cwd,
        &[],
        &["build", "disk", "--node", "demo-server", "--json"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("nothing changed"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        actions(&report)
            .iter()
            .all(|(_, action)| action == "reused"),
        "{report}"
    );

    // One value that only a node's configuration uses: the DNS search list, in a copy of
    // the profile (the demo has no Helm release; a Helm value reaches the node layer the
    // same way, through the rendered files).
    let profile = copy_demo(&lab.path("changed"));
    let cluster = profile.join("cluster.toml");
    let text = fs_err::read_to_string(&cluster).unwrap();
    let changed = text.replace(
        "search = [\"demo.kiln.test\"]",
        "search = [\"demo.kiln.test\", \"lab.kiln.test\"]",
    );
    assert_ne!(text, changed);
    fs_err::write(&cluster, changed).unwrap();
    let profile_arg = profile.display().to_string();
    let (code, stdout, stderr) = kiln(
        lab,
        &cwd,
        &[],
        &[
            "-p",
            &profile_arg,
            "build",
            "disk",
            "--node",
            "demo-server",
            "--out",
            "out-changed",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        actions(&report),
        vec![
            ("rootfs".to_string(), "reused".to_string()),
            ("node".to_string(), "built".to_string()),
            ("disk".to_string(), "built".to_string()),
        ],
        "{stderr}"
    );
}

/// The last sector of partition 2 of the qcow2 `overlay`, and the disk's sectors.
fn root_partition_end(overlay: &Path, scratch: &Path) -> (u64, u64, String) {
    let raw = scratch.join("grown.raw");
    shell(&format!(
        "qemu-img convert -f qcow2 -O raw {} {}",
        overlay.display(),
        raw.display()
    ));
    let table = shell(&format!("sgdisk -p {}", raw.display()));
    let last: u64 = table
        .lines()
        .find(|line| line.trim_start().starts_with("2 "))
        .and_then(|line| line.split_whitespace().nth(2))
        .unwrap()
        .parse()
        .unwrap();
    let sectors = fs_err::metadata(&raw).unwrap().len() / 512;
    let _ = fs_err::remove_file(&raw);
    (last, sectors, table)
}

#[test]
fn kiln_check_names_the_file_a_template_made_non_deterministic() {
    let lab = lab();
    let _ = first_build();
    let profile = copy_demo(&lab.path("planted"));
    // A profile template that writes a timestamp: its text is the machine's uptime (kiln's
    // templates cannot call `now()` or read the environment, so the time comes in as the
    // template's own text), so every build renders another /etc/resolv.conf.
    let template = profile.join("templates/image/resolv.conf");
    fs_err::create_dir_all(template.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/proc/uptime", &template).unwrap();
    let profile_arg = profile.display().to_string();
    let cwd = lab.path("");
    let (code, stdout, stderr) = kiln(
        lab,
        &cwd,
        &[],
        &[
            "-p",
            &profile_arg,
            "check",
            "disk:demo-server",
            "--out",
            "out-planted",
            "--json",
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    let result: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}:\n{stderr}"));
    let difference = &result["outputs"][0]["difference"];
    assert_eq!(difference["step"], "node-demo-server", "{stderr}");
    let detail = difference["detail"].as_str().unwrap();
    assert!(detail.contains("etc/resolv.conf"), "{detail}");
    assert!(stderr.contains("etc/resolv.conf"), "{stderr}");
}

/// `kiln verify` of one node: (code, parsed JSON, stderr).
fn verify_node(node: &str) -> (i32, serde_json::Value, String) {
    let lab = lab();
    let _ = first_build();
    let (code, stdout, stderr) = lab.run(&["verify", "--node", node, "--timeout", "600", "--json"]);
    let result = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("{error}: stdout {stdout:?}\n{stderr}"));
    (code, result, stderr)
}

/// (name, state) of each stage in one node of `kiln verify --json`.
fn stage_states(node: &serde_json::Value) -> Vec<(&str, &str)> {
    node["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| {
            (
                stage["name"].as_str().unwrap(),
                stage["state"].as_str().unwrap(),
            )
        })
        .collect()
}

#[test]
fn kiln_verify_brings_the_demo_server_up_with_every_stage_ok() {
    let (code, result, stderr) = verify_node("demo-server");
    let node = &result["nodes"][0];
    assert_eq!(code, 0, "{stderr}\n{node:#}");
    assert_eq!(node["outcome"]["kind"], "ready", "{node:#}");
    let stages = stage_states(node);
    assert_eq!(
        stages,
        vec![
            ("network", "ok"),
            ("nfs-server", "ok"),
            ("containerd", "ok"),
            ("images", "ok"),
        ],
        "{node:#}"
    );
}

#[test]
fn kiln_verify_fails_when_a_dns_server_does_not_answer() {
    // Booted alone, demo-client's DNS server (demo-server, 192.168.50.10) is not there.
    let (code, result, stderr) = verify_node("demo-client");
    let node = &result["nodes"][0];
    assert_eq!(code, 1, "{stderr}\n{node:#}");
    assert_eq!(node["outcome"]["kind"], "failed", "{node:#}");
    assert_eq!(node["outcome"]["stage"], "network", "{node:#}");
    assert!(
        node["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("DNS server 192.168.50.10 does not answer"),
        "{node:#}"
    );
    assert!(stderr.contains("not ready: demo-client"), "{stderr}");
}

#[test]
fn kiln_verify_cluster_boots_both_nodes_on_a_private_network_and_the_client_mounts_the_export() {
    let lab = lab();
    let _ = first_build();
    let (code, stdout, stderr) = lab.run(&["verify", "--cluster", "--timeout", "900", "--json"]);
    let result: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("{error}: stdout {stdout:?}\n{stderr}"));
    assert_eq!(code, 0, "{stderr}\n{result:#}");
    let client = result["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["name"] == "demo-client")
        .unwrap();
    assert_eq!(client["outcome"]["kind"], "ready", "{client:#}");
    let stages = stage_states(client);
    // Its DNS server is the other VM, and the export is the other VM's.
    assert_eq!(
        stages,
        vec![("network", "ok"), ("nfs-client", "ok")],
        "{client:#}"
    );
    let mount = client["stages"][1]["reason"].as_str().unwrap();
    assert!(mount.contains("192.168.50.10:/srv/nfs/shared"), "{mount}");
}

#[test]
fn build_disk_all_builds_every_node_and_links_both_formats() {
    let lab = lab();
    let _ = first_build();
    let (code, stdout, stderr) = lab.run(&["build", "disk", "--all", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let outputs: Vec<&str> = report["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|output| output["output"].as_str().unwrap())
        .collect();
    assert_eq!(
        outputs,
        vec!["disk:demo-server", "disk:demo-client"],
        "{stderr}"
    );
    for node in ["demo-server", "demo-client"] {
        for extension in ["raw", "qcow2"] {
            let link = lab.path(&format!("out/demo/{node}.{extension}"));
            assert!(link.exists(), "{} missing:\n{stderr}", link.display());
        }
    }
}

/// demo-server's MAC address (profiles/demo/cluster.toml): the installer picks the node by it.
const DEMO_SERVER_MAC: &str = "52:54:00:6b:00:01";

/// `kiln build usb --node demo-server`: the ISO's path and the node image's.
fn usb_build() -> &'static (PathBuf, PathBuf) {
    static BUILD: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILD.get_or_init(|| {
        let lab = lab();
        let _ = first_build();
        let (code, _, stderr) = lab.run(&["build", "usb", "--node", "demo-server"]);
        assert_eq!(code, 0, "{stderr}");
        (
            lab.path("out/demo/usb-demo-server.iso"),
            lab.path("out/demo/demo-server.raw"),
        )
    })
}

fn blank(path: &Path, size: u64) -> PathBuf {
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    fs_err::File::create(path).unwrap().set_len(size).unwrap();
    path.to_path_buf()
}

fn sha256_of_prefix(path: &Path, length: u64) -> String {
    use sha2::{Digest as _, Sha256};
    use std::io::Read as _;
    let mut hasher = Sha256::new();
    let mut reader = fs_err::File::open(path).unwrap().take(length);
    std::io::copy(&mut reader, &mut hasher).unwrap();
    format!("{:x}", hasher.finalize())
}

#[test]
fn the_usb_installer_writes_the_node_to_the_largest_disk_which_then_passes_kiln_verify() {
    let lab = lab();
    let (iso, image) = usb_build();
    let size = fs_err::metadata(image).unwrap().len();
    let dir = lab.path("usb-install");
    let _ = fs_err::remove_dir_all(&dir);
    // The rule is `largest`: the target is 1 GiB larger than the image, beside a small disk.
    let target = blank(&dir.join("target.raw"), size + (1 << 30));
    let small = blank(&dir.join("small.raw"), 256 << 20);
    let mut vm = common::qemu::boot_installer(
        iso,
        &[(small.clone(), "KILNSMALL"), (target.clone(), "KILNTARGET")],
        &dir.join("vm"),
        DEMO_SERVER_MAC,
    );
    let line = vm
        .wait_for(
            "kiln: installed node demo-server on /dev/",
            Duration::from_secs(1200),
        )
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(line.contains("sha256 verified"), "{line}");
    assert!(
        vm.wait_exit(Duration::from_secs(120)),
        "the installer reboots (QEMU runs with -no-reboot)"
    );
    assert_eq!(
        sha256_of_prefix(&target, size),
        sha256_of_prefix(image, size),
        "the target disk holds the image"
    );
    assert_eq!(
        sha256_of_prefix(&small, 256 << 20),
        sha256_of_prefix(Path::new("/dev/zero"), 256 << 20),
        "the small disk is untouched"
    );
    let (code, stdout, stderr) = lab.run(&[
        "verify",
        "--node",
        "demo-server",
        "--image",
        target.to_str().unwrap(),
        "--timeout",
        "600",
        "--keep",
        "--json",
    ]);
    let result: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("{error}: stdout {stdout:?}\n{stderr}"));
    assert_eq!(code, 0, "{stderr}\n{result:#}");
    assert_eq!(result["nodes"][0]["outcome"]["kind"], "ready", "{result:#}");
    // The installed disk is 1 GiB larger than the image: cloud-init's growpart grew the root
    // partition to its end at the first boot (read from the VM's kept overlay).
    let kept = stderr
        .lines()
        .find_map(|line| line.split("are kept in ").nth(1))
        .unwrap_or_else(|| panic!("no kept directory in:\n{stderr}"));
    let overlay = Path::new(kept.trim()).join("demo-server/overlay.qcow2");
    let (last, sectors, table) = root_partition_end(&overlay, &dir);
    assert!(
        last + 2048 >= sectors - 34,
        "root partition ends at sector {last} of {sectors}:\n{table}"
    );
    let _ = fs_err::remove_dir_all(kept.trim());
}

#[test]
fn the_usb_installer_refuses_when_its_rule_matches_two_disks_and_lists_them() {
    let lab = lab();
    let (iso, image) = usb_build();
    let size = fs_err::metadata(image).unwrap().len();
    let dir = lab.path("usb-refuse");
    let _ = fs_err::remove_dir_all(&dir);
    let one = blank(&dir.join("one.raw"), size + (1 << 30));
    let two = blank(&dir.join("two.raw"), size + (1 << 30));
    let mut vm = common::qemu::boot_installer(
        iso,
        &[(one.clone(), "KILNONE"), (two.clone(), "KILNTWO")],
        &dir.join("vm"),
        DEMO_SERVER_MAC,
    );
    let line = vm
        .wait_for("kiln: install failed:", Duration::from_secs(900))
        .unwrap_or_else(|error| panic!("{error}"));
    vm.kill();
    assert!(
        line.contains("refusing to install demo-server: rule 'largest' matches 2 disks"),
        "{line}"
    );
    let console = vm.console();
    for serial in ["KILNONE", "KILNTWO"] {
        assert!(
            console.contains(serial),
            "the disks seen are listed:\n{console}"
        );
    }
    for disk in [&one, &two] {
        assert_eq!(
            sha256_of_prefix(disk, 1 << 20),
            sha256_of_prefix(Path::new("/dev/zero"), 1 << 20),
            "nothing written to {}",
            disk.display()
        );
    }
}

#[test]
fn a_pxe_boot_with_ipxe_installs_the_node_and_reaches_its_first_boot() {
    common::registry::require("python3", "python3");
    assert!(
        Path::new("/usr/lib/ipxe/qemu/pxe-virtio.rom").exists(),
        "Debian's ipxe-qemu is needed: apt-get install ipxe-qemu"
    );
    let lab = lab();
    let _ = first_build();
    let image = lab.path("out/demo/demo-server.raw");
    let size = fs_err::metadata(&image).unwrap().len();
    let base = "http://10.0.2.100";
    let (code, _, stderr) = lab.run(&["build", "pxe", "--node", "demo-server", "--base-url", base]);
    assert_eq!(code, 0, "{stderr}");
    let tree = lab.path("out/demo/pxe");
    let script = fs_err::read_to_string(tree.join("ipxe/52-54-00-6b-00-01.ipxe")).unwrap();
    assert!(
        script.contains(&format!("kernel {base}/vmlinuz "))
            && script.contains("kiln.node=demo-server")
            && script.contains("rdinit=/kiln/init"),
        "{script}"
    );

    // kiln serve on 127.0.0.1, an ephemeral port.
    let server = common::serve::Server::start_in(
        common::Kiln::new(),
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--root",
            tree.to_str().unwrap(),
        ],
    );

    let dir = lab.path("pxe-boot");
    let _ = fs_err::remove_dir_all(&dir);
    let target = blank(&dir.join("target.raw"), size + (256 << 20));
    let mut vm = common::qemu::boot_pxe(
        &target,
        &dir.join("vm"),
        DEMO_SERVER_MAC,
        &format!("{base}/boot.ipxe"),
        server.addr.port(),
    );
    let outcome = vm
        .wait_for(
            "kiln: installed node demo-server on /dev/",
            Duration::from_secs(1200),
        )
        .and_then(|line| {
            assert!(line.contains("sha256 verified"), "{line}");
            vm.wait_for(
                "kiln: first boot of node demo-server",
                Duration::from_secs(900),
            )
        });
    vm.kill();
    let requests = server.log_text();
    drop(server);
    outcome.unwrap_or_else(|error| panic!("{error}\nkiln serve's log:\n{requests}"));
    // iPXE chained the node's script by its MAC address, and the installer fetched the
    // node's image: every request went to kiln serve.
    for path in [
        "GET /boot.ipxe 200",
        "GET /ipxe/52-54-00-6b-00-01.ipxe 200",
        "GET /vmlinuz 200",
        "GET /initrd.img 200",
        "GET /nodes 200",
        "GET /images/demo-server.map 200",
        "GET /images/demo-server.data 200",
    ] {
        assert!(requests.contains(path), "no `{path}` in:\n{requests}");
    }
    let _ = fs_err::remove_dir_all(&dir);
}
