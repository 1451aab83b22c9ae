//! A private containerd for tests: its own root, state and socket in a temp dir.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::registry::require;

/// A private containerd (its own root, state and socket in a temp dir); killed on drop.
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        let binary = require("containerd", "containerd");
        require("ctr", "containerd");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path();
        let config = path.join("config.toml");
        fs_err::write(
            &config,
            format!(
                "version = 2\n\
                 root = \"{root}\"\n\
                 state = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{socket}\"\n",
                root = path.join("root").display(),
                state = path.join("state").display(),
                socket = path.join("c.sock").display(),
            ),
        )
        .expect("containerd config");
        let log = fs_err::File::create(path.join("containerd.log")).expect("log");
        let child = Command::new(&binary)
            .arg("--root")
            .arg(path.join("root"))
            .arg("--state")
            .arg(path.join("state"))
            .arg("--address")
            .arg(path.join("c.sock"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.into_parts().0))
            .spawn()
            .unwrap_or_else(|error| panic!("{}: {error}", binary.display()));
        let mut containerd = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = containerd.child.try_wait() {
                panic!(
                    "containerd exited ({status}) before it served; it needs root. Its log:\n{}",
                    containerd.log()
                );
            }
            if containerd.socket().exists() && containerd.ctr(&["version"]).status.success() {
                return containerd;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not serve within 30 s; its log:\n{}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    pub fn log(&self) -> String {
        fs_err::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr -a SOCK -n k8s.io ARGS...`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr runs")
    }

    /// `ctr images import` (with the native snapshotter, which works on any file system);
    /// fails the test on an error.
    pub fn import(&self, archive: &Path, extra: &[&str]) {
        let path = archive.display().to_string();
        let mut args = vec!["images", "import", "--snapshotter", "native"];
        args.extend_from_slice(extra);
        args.push(&path);
        let output = self.ctr(&args);
        assert!(
            output.status.success(),
            "ctr images import {path} failed: {}\n{}\ncontainerd's log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    /// `ctr images ls`: (name, digest) of every image.
    pub fn images(&self) -> Vec<(String, String)> {
        let output = self.ctr(&["images", "ls"]);
        assert!(output.status.success(), "ctr images ls failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                Some((fields.first()?.to_string(), fields.get(2)?.to_string()))
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
