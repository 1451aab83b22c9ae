//! A fake sysfs tree laid out like the kernel's, for `kiln flash`'s hidden `--sysfs`: disks,
//! their partitions and device-mapper devices, reachable by number (`dev/block/MAJ:MIN`)
//! and by name (`class/block/NAME`, `block/NAME`) through relative symlinks.
//!
//! Also compiled into kiln's own unit tests (`src/flash/sysfs.rs`), so both use one fake.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A sysfs tree under a directory the caller owns.
pub struct FakeSysfs {
    root: PathBuf,
}

impl FakeSysfs {
    /// An empty tree at `root` (created).
    pub fn at(root: PathBuf) -> FakeSysfs {
        for dir in ["dev/block", "class/block", "block"] {
            fs_err::create_dir_all(root.join(dir)).unwrap();
        }
        FakeSysfs { root }
    }

    /// The tree's root, for `--sysfs`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A whole disk: `removable` is what its `removable` file says, `sectors` its size in
    /// 512-byte sectors, `model` its `device/model`.
    pub fn disk(&self, name: &str, number: &str, removable: u8, sectors: u64, model: Option<&str>) {
        let relative = format!("devices/pci0000:00/0000:00:14.0/usb1/block/{name}");
        self.device(&relative, number);
        let dir = self.root.join(&relative);
        fs_err::write(dir.join("removable"), format!("{removable}\n")).unwrap();
        fs_err::write(dir.join("size"), format!("{sectors}\n")).unwrap();
        if let Some(model) = model {
            fs_err::create_dir_all(dir.join("device")).unwrap();
            // The kernel pads SCSI model strings with spaces.
            fs_err::write(dir.join("device/model"), format!("{model:<16}\n")).unwrap();
        }
        symlink(format!("../{relative}"), self.root.join("block").join(name)).unwrap();
    }

    /// A partition of `disk`, inside the disk's directory as the kernel puts it.
    pub fn partition(&self, disk: &str, name: &str, number: &str) {
        let relative = format!("devices/pci0000:00/0000:00:14.0/usb1/block/{disk}/{name}");
        self.device(&relative, number);
        let dir = self.root.join(&relative);
        fs_err::write(dir.join("partition"), "1\n").unwrap();
        fs_err::write(dir.join("size"), "2048\n").unwrap();
    }

    /// A device-mapper device on top of `slaves` (names of devices already made).
    pub fn mapper(&self, name: &str, number: &str, slaves: &[&str]) {
        let relative = format!("devices/virtual/block/{name}");
        self.device(&relative, number);
        let dir = self.root.join(&relative);
        fs_err::create_dir_all(dir.join("slaves")).unwrap();
        let root = fs_err::canonicalize(&self.root).unwrap();
        for slave in slaves {
            let target = fs_err::canonicalize(self.root.join("class/block").join(slave)).unwrap();
            let below_root = target.strip_prefix(&root).unwrap().display();
            // From devices/virtual/block/NAME/slaves/ back up to the root.
            symlink(
                format!("../../../../../{below_root}"),
                dir.join("slaves").join(slave),
            )
            .unwrap();
        }
        symlink(format!("../{relative}"), self.root.join("block").join(name)).unwrap();
    }

    /// A device's directory with its `dev` file, and its links by number and by name.
    fn device(&self, relative: &str, number: &str) {
        let dir = self.root.join(relative);
        fs_err::create_dir_all(&dir).unwrap();
        fs_err::write(dir.join("dev"), format!("{number}\n")).unwrap();
        let name = dir.file_name().unwrap().to_str().unwrap();
        symlink(
            format!("../../{relative}"),
            self.root.join("dev/block").join(number),
        )
        .unwrap();
        symlink(
            format!("../../{relative}"),
            self.root.join("class/block").join(name),
        )
        .unwrap();
    }
}
