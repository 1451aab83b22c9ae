//! Block devices as sysfs describes them: which disk a partition or a device-mapper
//! device lives on, whether a disk is removable, its model and size.
//!
//! Everything is read below a root directory (normally `/sys`), so tests hand kiln a tree
//! of plain files and relative symlinks laid out like the kernel's:
//!
//! ```text
//! devices/.../block/sdb/{dev,size,removable,device/model}   a disk
//! devices/.../block/sdb/sdb1/{dev,partition}                one of its partitions
//! devices/virtual/block/dm-0/slaves/sdb1 -> .../sdb/sdb1    what a dm device sits on
//! dev/block/8:16 -> ../../devices/.../block/sdb             by device number
//! class/block/sdb -> ../../devices/.../block/sdb            by name
//! ```
//!
//! A device is named by its directory under `devices/`, with every symlink resolved, so two
//! ways of reaching the same device compare equal.
//!
//! See: <https://www.kernel.org/doc/html/latest/admin-guide/sysfs-rules.html>

use std::path::{Path, PathBuf};

use crate::flash::mounts::DeviceNumber;

/// sysfs counts a block device's size in 512-byte sectors, whatever its logical block size.
const SECTOR: u64 = 512;
/// How deep device-mapper stacks are followed (dm on dm on a partition...); a loop in a
/// broken tree stops here instead of recursing forever.
const MAX_STACK_DEPTH: usize = 16;

/// A sysfs tree.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

/// One block device's sysfs entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDevice {
    /// Its directory, every symlink resolved: the identity of the device.
    pub dir: PathBuf,
    /// The kernel's name (`sdb`, `nvme0n1p1`, `dm-0`), the name of its `/dev` node.
    pub name: String,
}

impl Sysfs {
    /// The tree at `root` (`/sys` on a running system).
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// The tree's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The device numbered `number`, if sysfs lists it.
    pub fn by_number(&self, number: DeviceNumber) -> Option<BlockDevice> {
        self.entry(&self.root.join("dev/block").join(number.to_string()))
    }

    /// The device the kernel calls `name`, if sysfs lists it.
    pub fn by_name(&self, name: &str) -> Option<BlockDevice> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return None;
        }
        self.entry(&self.root.join("class/block").join(name))
    }

    fn entry(&self, link: &Path) -> Option<BlockDevice> {
        let dir = fs_err::canonicalize(link).ok()?;
        // A directory without a `dev` file is not a device (a stray name in class/block).
        if !dir.join("dev").is_file() {
            return None;
        }
        let name = dir.file_name()?.to_string_lossy().into_owned();
        Some(BlockDevice { dir, name })
    }

    /// The whole disks `device` lives on: itself if it is one, a partition's disk, and for
    /// a device-mapper (or md) device, the whole disks of every device under it (`slaves/`),
    /// so LVM or LUKS on a partition leads back to the disk.
    pub fn whole_disks(&self, device: &BlockDevice) -> Vec<BlockDevice> {
        let mut disks = Vec::new();
        self.collect_disks(device, 0, &mut disks);
        disks
    }

    fn collect_disks(&self, device: &BlockDevice, depth: usize, disks: &mut Vec<BlockDevice>) {
        if depth > MAX_STACK_DEPTH {
            return;
        }
        if let Some(disk) = self.parent_disk(device) {
            return self.collect_disks(&disk, depth + 1, disks);
        }
        let slaves: Vec<BlockDevice> = fs_err::read_dir(device.dir.join("slaves"))
            .map(|entries| {
                entries
                    .filter_map(|entry| self.entry(&entry.ok()?.path()))
                    .collect()
            })
            .unwrap_or_default();
        if slaves.is_empty() {
            if !disks.contains(device) {
                disks.push(device.clone());
            }
        } else {
            for slave in &slaves {
                self.collect_disks(slave, depth + 1, disks);
            }
        }
    }

    /// The disk a partition belongs to (its parent directory), or `None` for anything that
    /// is not a partition.
    pub fn parent_disk(&self, device: &BlockDevice) -> Option<BlockDevice> {
        if !device.dir.join("partition").is_file() {
            return None;
        }
        self.entry(device.dir.parent()?)
    }

    /// Whether the device is removable media (`removable` is `1`); a missing file counts
    /// as not removable.
    pub fn is_removable(&self, device: &BlockDevice) -> bool {
        read_attribute(&device.dir.join("removable")).as_deref() == Some("1")
    }

    /// The device's size in bytes, if sysfs says it.
    pub fn size(&self, device: &BlockDevice) -> Option<u64> {
        read_attribute(&device.dir.join("size"))?
            .parse::<u64>()
            .ok()?
            .checked_mul(SECTOR)
    }

    /// The drive's vendor and model as it reports them (`device/vendor`, `device/model`;
    /// NVMe drives have only the model), if it reports either.
    pub fn model(&self, device: &BlockDevice) -> Option<String> {
        let words: Vec<String> = ["device/vendor", "device/model"]
            .iter()
            .filter_map(|file| read_attribute(&device.dir.join(file)))
            .collect();
        (!words.is_empty()).then(|| words.join(" "))
    }
}

/// A sysfs attribute's value without the kernel's padding and newline, if it has one.
fn read_attribute(path: &Path) -> Option<String> {
    let text = fs_err::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::testing::FakeSysfs;

    fn fake() -> (tempfile::TempDir, FakeSysfs) {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeSysfs::at(dir.path().join("sys"));
        (dir, fake)
    }

    #[test]
    fn a_partition_by_number_leads_to_its_disk() {
        let (_dir, fake) = fake();
        fake.disk("sdq", "8:16", 1, 2048, Some("Flash Drive"));
        fake.partition("sdq", "sdq1", "8:17");
        let sysfs = Sysfs::new(fake.root());
        let partition = sysfs.by_number("8:17".parse().unwrap()).unwrap();
        assert_eq!(partition.name, "sdq1");
        let disk = sysfs.parent_disk(&partition).unwrap();
        assert_eq!(disk, sysfs.by_name("sdq").unwrap());
        assert_eq!(sysfs.whole_disks(&partition), std::slice::from_ref(&disk));
        assert!(sysfs.parent_disk(&disk).is_none());
        assert!(sysfs.is_removable(&disk));
        assert_eq!(sysfs.size(&disk), Some(2048 * 512));
        assert_eq!(sysfs.model(&disk).as_deref(), Some("Flash Drive"));
    }

    #[test]
    fn device_mapper_leads_through_its_slaves_to_every_disk() {
        let (_dir, fake) = fake();
        fake.disk("sdq", "8:16", 0, 2048, None);
        fake.partition("sdq", "sdq2", "8:18");
        fake.disk("nvme9n1", "259:0", 0, 2048, None);
        fake.mapper("dm-7", "253:7", &["sdq2", "nvme9n1"]);
        fake.mapper("dm-8", "253:8", &["dm-7"]);
        let sysfs = Sysfs::new(fake.root());
        let top = sysfs.by_number("253:8".parse().unwrap()).unwrap();
        let names: Vec<String> = sysfs
            .whole_disks(&top)
            .into_iter()
            .map(|disk| disk.name)
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"sdq".to_string()));
        assert!(names.contains(&"nvme9n1".to_string()));
    }

    #[test]
    fn unknown_devices_and_odd_names_are_not_found() {
        let (_dir, fake) = fake();
        fake.disk("sdq", "8:16", 0, 2048, None);
        let sysfs = Sysfs::new(fake.root());
        assert!(sysfs.by_number("8:32".parse().unwrap()).is_none());
        assert!(sysfs.by_name("sdz").is_none());
        assert!(sysfs.by_name("..").is_none());
        assert!(sysfs.by_name("../block/sdq").is_none());
        assert_eq!(sysfs.model(&sysfs.by_name("sdq").unwrap()), None);
    }
}
