//! The disk step: a node's bootable GPT disk, as `disk.raw` and `disk.qcow2`, built from
//! the root file system step and the node layer step with no loop device and no mount.
//!
//! Layout (sectors of 512 bytes, partitions aligned to 1 MiB):
//!
//! | # | type                              | contents                                    |
//! |---|-----------------------------------|---------------------------------------------|
//! | 1 | EFI system (`ef00`), label `ESP`  | FAT32 with `/EFI/BOOT/BOOTX64.EFI`: a unified kernel image (systemd's stub, os-release, command line, kernel, initrd) |
//! | 2 | Linux x86-64 root (`8304`), label `root` | ext4: root file system + node layer + `/etc/fstab` |
//!
//! The firmware's removable-media path boots the unified kernel image with no boot
//! loader and no NVRAM entry, so the same disk boots in QEMU/OVMF, from a USB stick and
//! on a server's own disk. The kernel finds its root by the partition's GUID.
//!
//! Every identifier is derived from the step key: the disk and partition GUIDs, the
//! ext4 UUID and hash seed, the FAT volume ID. Times come from `SOURCE_DATE_EPOCH`:
//! `E2FSPROGS_FAKE_TIME` for mke2fs, `SOURCE_DATE_EPOCH` for mtools, a fixed PE timestamp
//! in the kernel image, and every inode's atime and ctime (which mke2fs 1.47.0 copies
//! from the build tree) reset with debugfs. mke2fs reads its defaults from a
//! configuration file kiln writes, not the host's `/etc/mke2fs.conf`.
//!
//! The root file system is as large as its content plus 10% and 128 MiB for ext4's own
//! metadata and journal, plus the profile's `[image] headroom`; cloud-init's growpart
//! grows it to fill the disk at the first boot.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::build::archive;
use crate::build::node::NODE_TAR;
use crate::build::rootfs::ROOTFS_TAR;
use crate::build::step::{StepOutput, Steps};
use crate::build::tools::{self, DEBUGFS, MCOPY, MKE2FS, MKFS_VFAT, MMD, QEMU_IMG, SGDISK, TAR};
use crate::build::uki::{build_uki, UkiParts};
use crate::build::BuildError;
use crate::profile::ValidNode;

/// Bump when the step makes other bytes from the same inputs.
pub const STEP_VERSION: u32 = 1;

/// The raw disk image.
pub const DISK_RAW: &str = "disk.raw";
/// The same disk as qcow2.
pub const DISK_QCOW2: &str = "disk.qcow2";

/// systemd's UEFI stub (package systemd-boot-efi).
pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Where the firmware looks on removable media (and as a fallback on any disk).
pub const BOOT_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// Room kept after the last partition for the backup GPT.
const TAIL: u64 = MIB;

/// The partition table kiln writes; `kiln check` uses it to name a partition.
pub const PARTITIONS: [(&str, &str); 2] = [("ESP", "vfat"), ("root", "ext4")];

/// mke2fs defaults for the root file system: the features of Debian 12's ext4, fixed here
/// so that another host's `/etc/mke2fs.conf` gives the same bytes, and readable by the
/// e2fsprogs and kernels of Ubuntu 22.04 and Debian 12.
const MKE2FS_CONF: &str = "[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
";

/// A GUID (or UUID) derived from the step key: random-looking, but the same for the same key.
pub fn derived_guid(key: &str, what: &str) -> String {
    let hash = Sha256::digest(format!("{key}:{what}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// What the disk step of a node needs to know besides its input steps.
#[derive(Clone, Debug)]
pub struct DiskParams {
    /// Free space in the root file system, bytes.
    pub headroom: u64,
    /// Extra kernel arguments of the node.
    pub kernel_cmdline: Vec<String>,
}

impl DiskParams {
    /// The parameters of a node.
    pub fn of(cluster: &crate::profile::ValidCluster, node: &ValidNode) -> DiskParams {
        DiskParams {
            headroom: cluster.settings.image.headroom.0,
            kernel_cmdline: node.settings.kernel_cmdline.clone(),
        }
    }
}

/// Build (or reuse) the disk of `node`.
pub fn build(
    steps: &Steps,
    node: &ValidNode,
    rootfs: &StepOutput,
    layer: &StepOutput,
    params: &DiskParams,
    epoch: u64,
) -> Result<StepOutput, BuildError> {
    let tools_used = [
        TAR, MKE2FS, DEBUGFS, MKFS_VFAT, MCOPY, MMD, SGDISK, QEMU_IMG,
    ];
    tools::require(&tools_used)?;
    let stub = read_stub()?;
    let inputs = json!({
        "version": STEP_VERSION,
        "node": node.name,
        "rootfs": rootfs.key,
        "layer": layer.key,
        "headroom": params.headroom,
        "kernel_cmdline": params.kernel_cmdline,
        "source_date_epoch": epoch,
        "stub_sha256": format!("{:x}", Sha256::digest(&stub)),
        "mke2fs_conf": MKE2FS_CONF,
        "tools": tools::versions(&tools_used)?,
    });
    steps.run(
        "disk",
        &format!("disk-{}", node.name),
        inputs,
        |out, work, key| {
            if !tools::is_root() {
                return Err(BuildError::NotRoot("building a disk image".into()));
            }
            make_disk(key, rootfs, layer, params, &stub, epoch, out, work)
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn make_disk(
    key: &str,
    rootfs: &StepOutput,
    layer: &StepOutput,
    params: &DiskParams,
    stub: &[u8],
    epoch: u64,
    out: &Path,
    work: &Path,
) -> Result<(), BuildError> {
    let esp_guid = derived_guid(key, "esp-partition");
    let root_guid = derived_guid(key, "root-partition");
    let fs_uuid = derived_guid(key, "root-filesystem");
    let disk_guid = derived_guid(key, "disk");
    let fat_id = derived_guid(key, "esp-volume")[..8].to_string();

    // 1. The root tree: the root file system, the node layer, /etc/fstab.
    let tree = work.join("tree");
    fs_err::create_dir_all(&tree)?;
    tools::run(
        "unpacking the root file system",
        tools::command(TAR)
            .args([
                "--extract",
                "--numeric-owner",
                "--same-owner",
                "--same-permissions",
                "--xattrs",
                "--xattrs-include=*",
                "--file",
            ])
            .arg(rootfs.path(ROOTFS_TAR))
            .arg("--directory")
            .arg(&tree),
    )?;
    let mut overlay = Overlay::new(&tree, epoch);
    let layer_file = fs_err::File::open(layer.path(NODE_TAR))?;
    archive::read(std::io::BufReader::new(layer_file), &mut |entry, reader| {
        let mut bytes = Vec::with_capacity(entry.size as usize);
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| archive::ArchiveError::Read {
                at: entry.path.clone(),
                source,
            })?;
        overlay
            .write(&entry.path, entry.mode, &bytes)
            .map_err(|source| archive::ArchiveError::Read {
                at: entry.path.clone(),
                source,
            })
    })?;
    let fstab = format!(
        "# Written by kiln: the partitions of this node's disk, by GUID.\n\
         PARTUUID={root_guid} / ext4 defaults 0 1\n\
         PARTUUID={esp_guid} /boot/efi vfat umask=0077 0 2\n"
    );
    overlay.write("etc/fstab", 0o644, fstab.as_bytes())?;
    overlay.mkdir("boot/efi")?;
    overlay.finish()?;

    // 2. The unified kernel image.
    let (linux, initrd) = kernel_and_initrd(&tree)?;
    let osrel = fs_err::read(tree.join("usr/lib/os-release"))
        .or_else(|_| fs_err::read(tree.join("etc/os-release")))?;
    let cmdline = node_cmdline(key, &params.kernel_cmdline);
    let uki = build_uki(
        stub,
        &UkiParts {
            osrel: &osrel,
            cmdline: cmdline.as_bytes(),
            linux: &fs_err::read(&linux)?,
            initrd: &fs_err::read(&initrd)?,
        },
        u32::try_from(epoch).unwrap_or(u32::MAX),
    )
    .map_err(|error| BuildError::Failed(format!("assembling the unified kernel image: {error}")))?;

    // 3. The EFI system partition.
    let esp = make_esp(&uki, &fat_id, "ESP", epoch, work)?;
    let esp_size = fs_err::metadata(&esp)?.len();

    // 4. The ext4 root.
    let content = tree_size(&tree)?;
    let root_size = round_up(content + content / 10 + 128 * MIB + params.headroom, MIB);
    let root = work.join("root.img");
    let config = work.join("mke2fs.conf");
    fs_err::write(&config, MKE2FS_CONF)?;
    tools::run(
        "making the root file system",
        tools::command(MKE2FS)
            .env("MKE2FS_CONFIG", &config)
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .args(["-q", "-F", "-t", "ext4", "-L", "root", "-U"])
            .arg(&fs_uuid)
            .arg("-E")
            .arg(format!(
                "hash_seed={fs_uuid},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0"
            ))
            .arg("-d")
            .arg(&tree)
            .arg(&root)
            .arg(format!("{}k", root_size / 1024)),
    )?;
    fix_inode_times(&tree, &root, epoch, work)?;

    // 5. The GPT disk, and the partitions written into it.
    let esp_start = MIB;
    let root_start = esp_start + esp_size;
    let disk_size = root_start + root_size + TAIL;
    let raw = out.join(DISK_RAW);
    fs_err::File::create(&raw)?.set_len(disk_size)?;
    tools::run(
        "writing the partition table",
        tools::command(SGDISK)
            .arg("--clear")
            .arg(format!("--disk-guid={disk_guid}"))
            .arg(format!(
                "--new=1:{}:{}",
                esp_start / SECTOR,
                (root_start / SECTOR) - 1
            ))
            .arg("--typecode=1:ef00")
            .arg("--change-name=1:ESP")
            .arg(format!("--partition-guid=1:{esp_guid}"))
            .arg(format!(
                "--new=2:{}:{}",
                root_start / SECTOR,
                ((root_start + root_size) / SECTOR) - 1
            ))
            .arg("--typecode=2:8304")
            .arg("--change-name=2:root")
            .arg(format!("--partition-guid=2:{root_guid}"))
            .arg(&raw),
    )?;
    write_at(&raw, esp_start, &esp)?;
    write_at(&raw, root_start, &root)?;
    tools::run(
        "converting the disk to qcow2",
        tools::command(QEMU_IMG)
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(out.join(DISK_QCOW2)),
    )?;
    Ok(())
}

/// systemd's UEFI stub, from the host.
pub fn read_stub() -> Result<Vec<u8>, BuildError> {
    fs_err::read(STUB).map_err(|_| BuildError::MissingTools {
        programs: STUB.to_string(),
        packages: "systemd-boot-efi".into(),
    })
}

/// A FAT32 EFI system partition image in `work/esp.img` holding `uki` at the firmware's
/// fallback path, sized for it, with the volume ID `fat_id` and label `label`, its file
/// times from `epoch`.
pub fn make_esp(
    uki: &[u8],
    fat_id: &str,
    label: &str,
    epoch: u64,
    work: &Path,
) -> Result<PathBuf, BuildError> {
    let esp_size = (round_up(uki.len() as u64 * 2 + 4 * MIB, MIB)).max(64 * MIB);
    let esp = work.join("esp.img");
    let uki_file = work.join("BOOTX64.EFI");
    fs_err::write(&uki_file, uki)?;
    set_mtime(&uki_file, epoch)?;
    tools::run(
        "making the EFI system partition",
        tools::command(MKFS_VFAT)
            .args([
                "-C",
                "-F",
                "32",
                "-S",
                "512",
                "-s",
                "1",
                "--invariant",
                "-n",
                label,
                "-i",
            ])
            .arg(fat_id)
            .arg(&esp)
            .arg((esp_size / 1024).to_string()),
    )?;
    let mtools = |tool| {
        let mut command = tools::command(tool);
        command
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .arg("-i")
            .arg(&esp);
        command
    };
    tools::run(
        "making the ESP's directories",
        mtools(MMD).args(["::/EFI", "::/EFI/BOOT"]),
    )?;
    tools::run(
        "copying the kernel image into the ESP",
        mtools(MCOPY)
            .arg("-m")
            .arg(&uki_file)
            .arg(format!("::/{BOOT_PATH}")),
    )?;
    Ok(esp)
}

/// The kernel command line of the node whose disk step has key `disk_key`: its root
/// partition by GUID, the serial console, then the profile's `kernel_cmdline`. The disk's
/// kernel image carries it; the PXE set boots the installed root with it too.
pub fn node_cmdline(disk_key: &str, extra: &[String]) -> String {
    let root_guid = derived_guid(disk_key, "root-partition");
    let mut cmdline = format!("root=PARTUUID={root_guid} rw console=tty0 console=ttyS0,115200n8");
    for argument in extra {
        cmdline.push(' ');
        cmdline.push_str(argument);
    }
    cmdline
}

/// The steps that made one node's disk.
#[derive(Clone, Debug)]
pub struct NodeDisk {
    /// The node.
    pub node: String,
    /// The shared root file system.
    pub rootfs: StepOutput,
    /// The node layer.
    pub layer: StepOutput,
    /// The disk.
    pub disk: StepOutput,
}

impl NodeDisk {
    /// The steps in the order they were made.
    pub fn steps(&self) -> [&StepOutput; 3] {
        [&self.rootfs, &self.layer, &self.disk]
    }
}

/// Build (or reuse) the disks of `nodes`: one root file system step for the cluster, then
/// a node layer and a disk step per node.
pub fn build_nodes(
    steps: &Steps,
    cluster: &crate::profile::ValidCluster,
    lock: &crate::lock::file::LockFile,
    store: &crate::store::Store,
    rendered: &crate::render::Rendered,
    nodes: &[&ValidNode],
) -> Result<Vec<NodeDisk>, BuildError> {
    let rootfs = crate::build::rootfs::build(steps, store, lock)?;
    let mut disks = Vec::new();
    for node in nodes {
        let tree = rendered
            .nodes
            .get(&node.name)
            .ok_or_else(|| BuildError::Failed(format!("node {} was not rendered", node.name)))?;
        let layer = crate::build::node::build(steps, cluster, lock, store, node, tree)?;
        let disk = build(
            steps,
            node,
            &rootfs,
            &layer,
            &DiskParams::of(cluster, node),
            lock.source_date_epoch,
        )?;
        disks.push(NodeDisk {
            node: node.name.clone(),
            rootfs: rootfs.clone(),
            layer,
            disk,
        });
    }
    Ok(disks)
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

/// The kernel and initrd in `/boot`: exactly one kernel, and its initrd.
pub fn kernel_and_initrd(tree: &Path) -> Result<(PathBuf, PathBuf), BuildError> {
    let boot = tree.join("boot");
    let mut kernels: Vec<String> = fs_err::read_dir(&boot)?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str().map(String::from))
        .filter(|name| name.starts_with("vmlinuz-"))
        .collect();
    kernels.sort();
    let [kernel] = kernels.as_slice() else {
        return Err(BuildError::Failed(format!(
            "the root file system has {} kernels in /boot ({}); a node image needs exactly one: check the base-OS set's packages",
            kernels.len(),
            kernels.join(", ")
        )));
    };
    let version = &kernel["vmlinuz-".len()..];
    let initrd = boot.join(format!("initrd.img-{version}"));
    if !initrd.is_file() {
        return Err(BuildError::Failed(format!(
            "the root file system has no /boot/initrd.img-{version}: add initramfs-tools to the base-OS set's packages"
        )));
    }
    Ok((boot.join(kernel), initrd))
}

pub fn set_mtime(path: &Path, epoch: u64) -> std::io::Result<()> {
    let time = UNIX_EPOCH + Duration::from_secs(epoch);
    fs_err::File::options()
        .read(true)
        .open(path)?
        .file()
        .set_modified(time)
}

/// Lays files over an unpacked tree: new directories get mode 0755; existing ones keep
/// their mode and mtime; every file written gets `SOURCE_DATE_EPOCH` as its mtime.
struct Overlay<'a> {
    tree: &'a Path,
    epoch: u64,
    /// Directories that existed, with their mtimes, to restore at the end.
    touched: BTreeMap<PathBuf, SystemTime>,
    created: Vec<PathBuf>,
}

impl<'a> Overlay<'a> {
    fn new(tree: &'a Path, epoch: u64) -> Overlay<'a> {
        Overlay {
            tree,
            epoch,
            touched: BTreeMap::new(),
            created: Vec::new(),
        }
    }

    fn mkdir(&mut self, relative: &str) -> std::io::Result<()> {
        let mut path = self.tree.to_path_buf();
        for component in relative.split('/').filter(|part| !part.is_empty()) {
            let parent = path.clone();
            path.push(component);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(std::io::Error::other(format!(
                        "{} is in the root file system and is not a directory",
                        path.display()
                    )))
                }
                Err(_) => {
                    self.remember(&parent)?;
                    fs_err::create_dir(&path)?;
                    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                    self.created.push(path.clone());
                }
            }
        }
        Ok(())
    }

    fn remember(&mut self, dir: &Path) -> std::io::Result<()> {
        if !self.touched.contains_key(dir) && !self.created.iter().any(|made| made == dir) {
            let modified = fs_err::metadata(dir)?.modified()?;
            self.touched.insert(dir.to_path_buf(), modified);
        }
        Ok(())
    }

    fn write(&mut self, relative: &str, mode: u32, bytes: &[u8]) -> std::io::Result<()> {
        let (parent, _) = relative.rsplit_once('/').unwrap_or(("", relative));
        self.mkdir(parent)?;
        let path = self.tree.join(relative);
        let parent_path = path
            .parent()
            .expect("joined paths have parents")
            .to_path_buf();
        self.remember(&parent_path)?;
        if std::fs::symlink_metadata(&path).is_ok() {
            fs_err::remove_file(&path)?;
        }
        let mut file = fs_err::File::create(&path)?;
        file.write_all(bytes)?;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        drop(file);
        set_mtime(&path, self.epoch)
    }

    fn finish(self) -> std::io::Result<()> {
        for dir in &self.created {
            set_mtime(dir, self.epoch)?;
        }
        for (dir, modified) in &self.touched {
            fs_err::File::open(dir)?.file().set_modified(*modified)?;
        }
        Ok(())
    }
}

/// Bytes the tree takes in 4 KiB blocks, counting each inode once.
fn tree_size(tree: &Path) -> Result<u64, BuildError> {
    let mut total = 0;
    let mut seen = std::collections::HashSet::new();
    let mut pending = vec![tree.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if !seen.insert(meta.ino()) {
                continue;
            }
            total += round_up(meta.len().max(1), 4096);
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// Set every inode's atime and ctime (and their nanoseconds) to the epoch, and the
/// superblock's times and write counter, with debugfs: mke2fs copies them from the build
/// tree, where they are the time of unpacking.
fn fix_inode_times(tree: &Path, image: &Path, epoch: u64, work: &Path) -> Result<(), BuildError> {
    let mut script = String::new();
    let mut paths = vec![String::from("/")];
    let mut pending = vec![(tree.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let mut entries: Vec<_> = fs_err::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(BuildError::Failed(format!(
                    "{}: a file name that is not UTF-8 cannot be fixed up with debugfs",
                    entry.path().display()
                )));
            };
            if name.contains(['"', '\n']) {
                return Err(BuildError::Failed(format!(
                    "{}: a file name with a double quote or newline cannot be fixed up with debugfs",
                    entry.path().display()
                )));
            }
            let path = format!("{prefix}/{name}");
            if entry.file_type()?.is_dir() {
                pending.push((entry.path(), path.clone()));
            }
            paths.push(path);
        }
    }
    for path in &paths {
        for (field, value) in [
            ("atime", format!("@{epoch}")),
            ("ctime", format!("@{epoch}")),
            ("atime_extra", "0".to_string()),
            ("ctime_extra", "0".to_string()),
            ("crtime", format!("@{epoch}")),
            ("crtime_extra", "0".to_string()),
        ] {
            script.push_str(&format!("sif \"{path}\" {field} {value}\n"));
        }
    }
    for (field, value) in [
        ("mtime", format!("@{epoch}")),
        ("wtime", format!("@{epoch}")),
        ("lastcheck", format!("@{epoch}")),
        ("mkfs_time", format!("@{epoch}")),
        ("kbytes_written", "0".to_string()),
    ] {
        script.push_str(&format!("ssv {field} {value}\n"));
    }
    let script_path = work.join("debugfs.cmds");
    fs_err::write(&script_path, script)?;
    let output = tools::run(
        "resetting inode times in the root file system",
        tools::command(DEBUGFS)
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(image),
    )?;
    let _ = output;
    Ok(())
}

/// Copy `part` into `disk` at `offset`, leaving all-zero blocks as holes.
fn write_at(disk: &Path, offset: u64, part: &Path) -> Result<(), BuildError> {
    let mut input = fs_err::File::open(part)?;
    let mut output = fs_err::OpenOptions::new().write(true).open(disk)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut position = offset;
    loop {
        let mut filled = 0;
        while filled < buffer.len() {
            let read = input.read(&mut buffer[filled..])?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            break;
        }
        for chunk in buffer[..filled].chunks(64 * 1024) {
            if chunk.iter().any(|&byte| byte != 0) {
                output.seek(SeekFrom::Start(position))?;
                output.write_all(chunk)?;
            }
            position += chunk.len() as u64;
        }
    }
    output.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stable_versioned_and_distinct() {
        let a = derived_guid("k", "root-partition");
        assert_eq!(a, derived_guid("k", "root-partition"));
        assert_ne!(a, derived_guid("k", "esp-partition"));
        assert_ne!(a, derived_guid("other", "root-partition"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "version 4 layout: {a}");
        assert!("89ab".contains(&a[19..20]), "RFC 4122 variant: {a}");
    }
}
