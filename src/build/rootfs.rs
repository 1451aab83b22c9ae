//! The root file system step: the locked base OS's .debs, installed by mmdebstrap from a
//! flat repository made of exactly those files, with no network.
//!
//! The step's key is made from the lock's base (suite, variant, packages), every .deb's
//! digest with the archive's Priority and Section, `SOURCE_DATE_EPOCH`, the customize hook
//! below, and the versions of mmdebstrap, apt and apt-ftparchive. Nothing of a node's
//! configuration is in it, so changing a Helm value or any other setting reuses it.
//!
//! Traps handled (measured on Debian 12, see build-facts.md):
//! - minbase selects by the archive's Priority, which a .deb's control file can contradict
//!   (apt says `important`, the archive `required`): the repository is indexed with an
//!   override file holding the archive's Priority and Section from the lock;
//! - mmdebstrap selects nothing without a Release file naming the suite;
//! - mmdebstrap copies the host's `/etc/hostname` and `/etc/resolv.conf`, and the image's
//!   `sources.list` would name the repository used: the hook writes fixed files;
//! - openssh-server's postinst makes host keys, random bytes that would also be shared by
//!   every node: the hook deletes them; `ssh-keygen -A` makes a node's own at its boot;
//! - apt's `partial/` directories belong to `_apt` or to root depending on whether `_apt`
//!   can reach the build directory (found by `just bench image`): the hook sets `_apt`;
//! - a minimal Debian root has neither ifupdown nor netplan, so the hook enables
//!   systemd-networkd, for which cloud-init then writes the node's network;
//! - the Python byte code postinst scripts compile differs between runs (found by
//!   `kiln check`): the hook deletes every `__pycache__`.

use std::path::Path;

use serde_json::json;

use crate::build::step::{StepOutput, Steps};
use crate::build::tools::{self, APT, APT_FTPARCHIVE, MMDEBSTRAP, UNSHARE};
use crate::build::BuildError;
use crate::lock::file::LockFile;
use crate::store::{Digest, Store};

/// Bump when the step makes other bytes from the same inputs.
pub const STEP_VERSION: u32 = 1;

/// The output file of the step.
pub const ROOTFS_TAR: &str = "rootfs.tar";

/// mmdebstrap's hook directory that bind-mounts a `file://` repository into the chroot.
const FILE_MIRROR_HOOKS: &str = "/usr/share/mmdebstrap/hooks/file-mirror-automount";

/// Run by mmdebstrap as its customize hook, with the root file system's path as `$1`.
const CUSTOMIZE_HOOK: &str = r#"#!/bin/sh
# kiln's customize hook: fixed files where mmdebstrap would copy the build host's, and no
# secrets or random bytes made at install time.
set -eu
root=$1
rm -f "$root/etc/apt/sources.list" "$root/etc/hostname" "$root/etc/resolv.conf"
printf '# Installed by kiln from pinned packages; no package source is configured.\n' >"$root/etc/apt/sources.list"
printf 'localhost\n' >"$root/etc/hostname"
printf '# Written by kiln; the node configuration replaces it.\n' >"$root/etc/resolv.conf"
chmod 0644 "$root/etc/apt/sources.list" "$root/etc/hostname" "$root/etc/resolv.conf"
rm -f "$root"/etc/ssh/ssh_host_*
if [ -e "$root/lib/systemd/system/ssh.service" ]; then
    mkdir -p "$root/etc/systemd/system/ssh.service.d"
    printf '[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n' >"$root/etc/systemd/system/ssh.service.d/kiln-host-keys.conf"
    chmod 0644 "$root/etc/systemd/system/ssh.service.d/kiln-host-keys.conf"
fi
: >"$root/etc/machine-id"
# cloud-init writes the node's network for systemd-networkd when the root has neither
# ifupdown nor netplan (Debian's minimal roots): networkd must then run at boot.
if [ -e "$root/lib/systemd/system/systemd-networkd.service" ] && [ ! -e "$root/usr/sbin/netplan" ] && [ ! -e "$root/sbin/ifup" ]; then
    chroot "$root" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service
fi
rm -f "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed"
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*_*
# apt leaves its partial/ directories owned by _apt only when _apt could reach the build
# directory (a store under /root cannot be): give them apt's own owner whatever the path.
for dir in "$root/var/cache/apt/archives/partial" "$root/var/lib/apt/lists/partial"; do
    if [ -d "$dir" ] && chroot "$root" getent passwd _apt >/dev/null; then
        chroot "$root" chown _apt:root "${dir#"$root"}"
    fi
done
# Python byte code compiled by the packages' postinst scripts is not reproducible (marshal's
# output depends on object reference counts in the compiling process): drop it; Python
# compiles what it imports on the node.
find "$root/usr" -depth -type d -name __pycache__ -exec rm -rf {} +
"#;

/// Build (or reuse) the root file system of the lock's base OS.
pub fn build(steps: &Steps, store: &Store, lock: &LockFile) -> Result<StepOutput, BuildError> {
    let base = lock.base.as_ref().ok_or_else(|| {
        BuildError::Failed(
            "kiln.lock has no base OS: add a base-OS set (such as debian-12) to [cluster] images and run `kiln lock`"
                .into(),
        )
    })?;
    if lock.debs.is_empty() {
        return Err(BuildError::Failed(
            "kiln.lock names no .debs for the base OS: run `kiln lock` on a machine that reaches the archive".into(),
        ));
    }
    tools::require(&[MMDEBSTRAP, APT, APT_FTPARCHIVE, UNSHARE])?;
    let mut debs = Vec::new();
    for deb in &lock.debs {
        let digest: Digest = deb.digest.parse().map_err(|_| BuildError::Missing {
            what: format!("{} {}", deb.name, deb.version),
            digest: deb.digest.clone(),
        })?;
        if !store.has_blob(&digest) {
            return Err(BuildError::Missing {
                what: format!("{} {}", deb.name, deb.version),
                digest: deb.digest.clone(),
            });
        }
        debs.push(json!({
            "name": deb.name, "version": deb.version, "architecture": deb.architecture,
            "digest": deb.digest, "priority": deb.priority, "section": deb.section,
        }));
    }
    let inputs = json!({
        "version": STEP_VERSION,
        "suite": base.suite,
        "variant": base.variant,
        "packages": base.packages,
        "debs": debs,
        "source_date_epoch": lock.source_date_epoch,
        "hook": CUSTOMIZE_HOOK,
        "repository": "file:///mnt",
        "tools": tools::versions(&[MMDEBSTRAP, APT, APT_FTPARCHIVE])?,
    });
    steps.run("rootfs", "rootfs", inputs, |out, _work, _key| {
        if !tools::is_root() {
            return Err(BuildError::NotRoot("building the root file system".into()));
        }
        // mmdebstrap bind-mounts the repository into its chroot; both stay in the store's
        // tmp (a plain directory on the store's file system), not in $TMPDIR: on a tmpfs
        // mounted twice, as /dev/shm can be, mmdebstrap fails to unmount the bind mount.
        let work = std::path::PathBuf::from(format!("{}.mmdebstrap", out.display()));
        let result = install(store, lock, base, &work, out);
        let _ = crate::build::step::remove_tree(&work);
        result
    })
}

fn install(
    store: &Store,
    lock: &LockFile,
    base: &crate::lock::file::LockedBase,
    work: &Path,
    out: &Path,
) -> Result<(), BuildError> {
    {
        let repo = work.join("repo");
        fs_err::create_dir_all(&repo)?;
        let mut overrides = String::new();
        for deb in &lock.debs {
            let digest: Digest = deb.digest.parse().expect("checked above");
            let file_name = deb.filename.rsplit('/').next().unwrap_or(&deb.filename);
            let target = repo.join(file_name);
            if std::fs::hard_link(store.blob_path(&digest), &target).is_err() {
                fs_err::copy(store.blob_path(&digest), &target)?;
            }
            overrides.push_str(&format!("{} {} {}\n", deb.name, deb.priority, deb.section));
        }
        fs_err::write(work.join("override"), overrides)?;
        let packages = tools::run(
            "indexing the locked .debs",
            tools::command(APT_FTPARCHIVE).current_dir(&repo).args([
                "packages",
                ".",
                "../override",
            ]),
        )?;
        fs_err::write(repo.join("Packages"), packages)?;
        let release = tools::run(
            "writing the repository's Release file",
            tools::command(APT_FTPARCHIVE)
                .current_dir(&repo)
                .arg("-o")
                .arg(format!("APT::FTPArchive::Release::Suite={}", base.suite))
                .arg("-o")
                .arg(format!("APT::FTPArchive::Release::Codename={}", base.suite))
                .args(["release", "."]),
        )?;
        fs_err::write(repo.join("Release"), release)?;
        let hook = work.join("customize-hook");
        fs_err::write(&hook, CUSTOMIZE_HOOK)?;
        run_mmdebstrap(
            &base.suite,
            &base.variant,
            &base.packages,
            &repo,
            &hook,
            &out.join(ROOTFS_TAR),
            lock.source_date_epoch,
            work,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn run_mmdebstrap(
    suite: &str,
    variant: &str,
    packages: &[String],
    repo: &Path,
    hook: &Path,
    output: &Path,
    epoch: u64,
    tmp: &Path,
) -> Result<(), BuildError> {
    // A new network namespace with only a loopback that is down (the proof that nothing is
    // downloaded) and a private mount namespace where the repository is bind-mounted on
    // /mnt: file-mirror-automount recreates the repository's path inside the root file
    // system, and a path that names the build directory would end up in the image. /mnt
    // exists in every Debian and Ubuntu root, so nothing is left behind.
    let mut command = tools::command(UNSHARE);
    command
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .args([
            "sh",
            "-ec",
            "mount --bind -o ro \"$KILN_REPO\" /mnt; exec mmdebstrap \"$@\"",
            "sh",
        ])
        .arg("--quiet")
        .arg("--mode=root")
        .arg(format!("--variant={variant}"))
        .arg(format!("--include={}", packages.join(",")))
        .arg(format!("--hook-dir={FILE_MIRROR_HOOKS}"))
        .arg(format!("--customize-hook=sh {} \"$1\"", hook.display()))
        .arg(suite)
        .arg(output)
        .arg("deb [trusted=yes] file:///mnt ./")
        .env("KILN_REPO", repo)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("TMPDIR", tmp);
    tools::run(
        "installing the base OS with mmdebstrap (offline)",
        &mut command,
    )?;
    Ok(())
}
