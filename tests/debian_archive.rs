//! The demo's base OS against Debian's package archive (the one outside network a test may
//! use): `kiln lock` resolves the package list to exact .debs with mmdebstrap, and
//! `kiln fetch` into an empty store downloads the same bytes again by the lock alone.
//!
//! Slow (a real mmdebstrap run and ~170 MB of packages): a few minutes on CI.

mod common;

use common::Kiln;
use sha2::{Digest as _, Sha256};

#[test]
fn the_demo_base_os_locks_to_exact_debs_and_fetch_reproduces_them() {
    common::registry::require("mmdebstrap", "mmdebstrap");
    let lab = Kiln::new();
    let profile = lab.copy_profile("demo");
    common::copy_dir(&common::repo().join("images"), &lab.path("images"));
    // Resolve afresh: the archive moves on, so the committed lock may be older.
    let _ = fs_err::remove_file(profile.join("kiln.lock"));
    let run = lab.run_with(&["--profile", "profiles/demo", "--store", "store", "lock"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = fs_err::read_to_string(profile.join("kiln.lock")).unwrap();
    let lock: toml::Table = toml::from_str(&text).unwrap();
    let debs = lock["deb"].as_array().unwrap();
    assert!(debs.len() > 150, "only {} debs", debs.len());
    let names: Vec<&str> = debs
        .iter()
        .map(|deb| deb["name"].as_str().unwrap())
        .collect();
    for wanted in [
        "linux-image-amd64",
        "systemd-sysv",
        "cloud-init",
        "nfs-kernel-server",
        "containerd",
        "apt",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    for deb in debs {
        for field in [
            "version",
            "architecture",
            "suite",
            "filename",
            "priority",
            "section",
        ] {
            assert!(
                !deb[field].as_str().unwrap().is_empty(),
                "{field} empty in {deb:?}"
            );
        }
        assert!(deb["digest"].as_str().unwrap().starts_with("sha256:"));
    }
    assert!(lock["source_date_epoch"].as_integer().unwrap() > 1_600_000_000);

    // An empty store, filled by the lock alone, from the host's apt sources.
    fs_err::remove_dir_all(lab.path("store")).unwrap();
    let run = lab.run_with(&[
        "--profile",
        "profiles/demo",
        "--store",
        "store",
        "--locked",
        "fetch",
        "--jobs",
        "4",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for deb in debs {
        let hex = deb["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let bytes = fs_err::read(lab.path(&format!("store/blobs/sha256/{hex}"))).unwrap();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            hex,
            "{}",
            deb["name"]
        );
        assert_eq!(
            bytes.len() as i64,
            deb["size"].as_integer().unwrap(),
            "{}",
            deb["name"]
        );
    }
    let run = lab.run_with(&[
        "--profile",
        "profiles/demo",
        "--store",
        "store",
        "store",
        "verify",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}
