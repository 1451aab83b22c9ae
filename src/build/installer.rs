//! The installer step: one per cluster, made from the root file system's kernel and
//! initramfs. It boots from a USB stick or over the network, writes a node's disk image to
//! the node's install disk, reads it back against the image's sha256 and reboots
//! (templates/installer/init.sh).
//!
//! Its initramfs is the root file system's own (the kernel's modules for disks, USB and
//! network cards, and udev) followed by a small uncompressed cpio archive from kiln that
//! adds `/init` (the installer) and `/kiln/busybox` (from the base OS's `busybox-static`);
//! the kernel unpacks the archives in order, so kiln's `/init` replaces Debian's. No node's
//! data is in it: the install medium carries the nodes.
//!
//! Outputs: `vmlinuz` and `initrd.img` (for PXE), `installer.efi` (a unified kernel image
//! of the two, for UEFI boot from the USB stick) and `efiboot.img` (a FAT EFI system
//! partition holding it at the fallback path, for the ISO's El Torito entry).

use std::path::Path;

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::build::disk::{derived_guid, make_esp, read_stub};
use crate::build::rootfs::ROOTFS_TAR;
use crate::build::step::{StepOutput, Steps};
use crate::build::tools::{self, MCOPY, MKFS_VFAT, MMD, TAR};
use crate::build::uki::{build_uki, UkiParts};
use crate::build::BuildError;

/// Bump when the step makes other bytes from the same inputs.
pub const STEP_VERSION: u32 = 1;

/// The installer's `/init`.
pub const INIT: &str = include_str!("../../templates/installer/init.sh");

/// busybox udhcpc's script, for the PXE set's DHCP.
pub const UDHCPC_SCRIPT: &str = include_str!("../../templates/installer/udhcpc.script");

/// The kernel, for PXE.
pub const VMLINUZ: &str = "vmlinuz";
/// The installer's initramfs, for PXE.
pub const INITRD: &str = "initrd.img";
/// The unified kernel image.
pub const INSTALLER_EFI: &str = "installer.efi";
/// The EFI system partition image holding the unified kernel image.
pub const EFIBOOT_IMG: &str = "efiboot.img";

/// The kernel command line of the USB installer.
pub const CMDLINE: &str = "rdinit=/kiln/init console=tty0 console=ttyS0,115200n8 panic=30";

/// What the installer's kernel command line ends with: reboot 30 s after a kernel panic.
pub const CMDLINE_TAIL: &str = "panic=30";

/// Where the installer's program is in its initramfs (Debian's `/init` stays, for the PXE
/// set's hand-over to the installed root).
pub const RDINIT: &str = "/kiln/init";

/// Build (or reuse) the installer of the cluster whose root file system is `rootfs`.
pub fn build(steps: &Steps, rootfs: &StepOutput, epoch: u64) -> Result<StepOutput, BuildError> {
    let tools_used = [TAR, MKFS_VFAT, MCOPY, MMD];
    tools::require(&tools_used)?;
    let stub = read_stub()?;
    let inputs = json!({
        "version": STEP_VERSION,
        "rootfs": rootfs.key,
        "init_sha256": format!("{:x}", Sha256::digest(INIT.as_bytes())),
        "udhcpc_script_sha256": format!("{:x}", Sha256::digest(UDHCPC_SCRIPT.as_bytes())),
        "cmdline": CMDLINE,
        "stub_sha256": format!("{:x}", Sha256::digest(&stub)),
        "source_date_epoch": epoch,
        "tools": tools::versions(&tools_used)?,
    });
    steps.run("installer", "installer", inputs, |out, work, key| {
        make(key, rootfs, &stub, epoch, out, work)
    })
}

fn make(
    key: &str,
    rootfs: &StepOutput,
    stub: &[u8],
    epoch: u64,
    out: &Path,
    work: &Path,
) -> Result<(), BuildError> {
    let tree = work.join("tree");
    fs_err::create_dir_all(&tree)?;
    let extract = |members: &[&str]| {
        tools::run(
            "taking the kernel, initramfs and busybox from the root file system",
            tools::command(TAR)
                .args(["--extract", "--wildcards", "--file"])
                .arg(rootfs.path(ROOTFS_TAR))
                .arg("--directory")
                .arg(&tree)
                .args(members),
        )
    };
    extract(&[
        "./boot/vmlinuz-*",
        "./boot/initrd.img-*",
        "./usr/lib/os-release",
    ])?;
    let busybox = ["usr/bin/busybox", "bin/busybox"]
        .iter()
        .find_map(|path| extract(&[&format!("./{path}")]).ok().map(|_| tree.join(path)))
        .ok_or_else(|| {
            BuildError::Failed(
                "the root file system has no busybox: add `busybox-static` to the base-OS set's packages (the installer's shell and tools)".into(),
            )
        })?;
    let (linux, initrd) = crate::build::disk::kernel_and_initrd(&tree)?;
    let mut initramfs = fs_err::read(&initrd)?;
    // Each archive starts on a 4-byte boundary.
    while !initramfs.len().is_multiple_of(4) {
        initramfs.push(0);
    }
    initramfs.extend(cpio(
        &[
            CpioEntry::dir("kiln"),
            CpioEntry::file("kiln/init", 0o755, INIT.as_bytes().to_vec()),
            CpioEntry::file(
                "kiln/udhcpc.script",
                0o755,
                UDHCPC_SCRIPT.as_bytes().to_vec(),
            ),
            CpioEntry::file("kiln/busybox", 0o755, fs_err::read(&busybox)?),
        ],
        epoch,
    ));
    let kernel = fs_err::read(&linux)?;
    let osrel = fs_err::read(tree.join("usr/lib/os-release"))?;
    let uki = build_uki(
        stub,
        &UkiParts {
            osrel: &osrel,
            cmdline: CMDLINE.as_bytes(),
            linux: &kernel,
            initrd: &initramfs,
        },
        u32::try_from(epoch).unwrap_or(u32::MAX),
    )
    .map_err(|error| {
        BuildError::Failed(format!("assembling the installer's kernel image: {error}"))
    })?;
    let fat_id = derived_guid(key, "installer-esp")[..8].to_string();
    let esp = make_esp(&uki, &fat_id, "KILNEFI", epoch, work)?;
    fs_err::write(out.join(VMLINUZ), &kernel)?;
    fs_err::write(out.join(INITRD), &initramfs)?;
    fs_err::write(out.join(INSTALLER_EFI), &uki)?;
    fs_err::rename(esp, out.join(EFIBOOT_IMG))?;
    Ok(())
}

/// One member of a cpio archive.
pub struct CpioEntry {
    path: String,
    mode: u32,
    data: Vec<u8>,
}

impl CpioEntry {
    /// A directory.
    pub fn dir(path: &str) -> Self {
        CpioEntry {
            path: path.into(),
            mode: 0o040_755,
            data: Vec::new(),
        }
    }

    /// A regular file.
    pub fn file(path: &str, permissions: u32, data: Vec<u8>) -> Self {
        CpioEntry {
            path: path.into(),
            mode: 0o100_000 | permissions,
            data,
        }
    }
}

/// A cpio archive in the kernel's `newc` format: owner 0, the given mtime, inode numbers
/// in order, nothing from the build machine.
pub fn cpio(entries: &[CpioEntry], mtime: u64) -> Vec<u8> {
    fn pad(archive: &mut Vec<u8>) {
        while !archive.len().is_multiple_of(4) {
            archive.push(0);
        }
    }
    let mut archive = Vec::new();
    let header = |archive: &mut Vec<u8>, ino: usize, mode: u32, size: usize, name: &str| {
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        archive.extend(
            format!(
                "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
                0,
                0,
                mtime as u32,
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            )
            .as_bytes(),
        );
        archive.extend(name.as_bytes());
        archive.push(0);
        pad(archive);
    };
    for (index, entry) in entries.iter().enumerate() {
        header(
            &mut archive,
            index + 1,
            entry.mode,
            entry.data.len(),
            &entry.path,
        );
        archive.extend(&entry.data);
        pad(&mut archive);
    }
    header(&mut archive, 0, 0, 0, "TRAILER!!!");
    archive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpio_archive_in_newc_format() {
        let archive = cpio(
            &[
                CpioEntry::dir("kiln"),
                CpioEntry::file("init", 0o755, b"#!/bin/sh\n".to_vec()),
            ],
            1_700_000_000,
        );
        assert_eq!(&archive[..6], b"070701");
        assert_eq!(archive.len() % 4, 0);
        let text = String::from_utf8_lossy(&archive);
        assert!(text.contains("kiln\0"));
        assert!(text.contains("init\0"));
        assert!(text.contains("TRAILER!!!\0"));
        // The fields after the magic: ino, mode, uid, gid, nlink, mtime.
        assert_eq!(&archive[6 + 8..6 + 2 * 8], b"000041ED");
        assert_eq!(
            &archive[6 + 5 * 8..6 + 6 * 8],
            format!("{:08X}", 1_700_000_000u32).as_bytes()
        );
    }
}
