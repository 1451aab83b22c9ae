//! `kiln flash`: write a node's raw disk image to a device (a USB stick, a new server's
//! disk), read it back and compare.
//!
//! This module owns the refusals that make the wrong disk hard to hit (a qcow2 image, a
//! partition, a mounted disk, the disk holding `/`, a fixed disk without `--force`, a
//! device smaller than the image), the copy and the read-back. It reads the machine only
//! through a [`SystemView`], so every refusal is tested against a fake machine. The clock
//! and the progress bars stay in `commands::flash`.

pub mod mounts;
pub mod sysfs;

#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/common/fake_sysfs.rs"]
mod testing;

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use fs_err::os::unix::fs::OpenOptionsExt;
use sha2::{Digest as _, Sha256};

use crate::build::archive::read_full;
use crate::flash::mounts::{parse_mountinfo, DeviceNumber, Mount};
use crate::flash::sysfs::{BlockDevice, Sysfs};
use crate::store::Digest;

/// Bytes per read and write: large enough that a USB stick sees long sequential writes,
/// small enough that memory stays bounded.
pub const CHUNK: usize = 4 * 1024 * 1024;
/// The first bytes of every qcow2 image.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// How kiln sees the machine when it decides whether a device may be written.
///
/// On a running system this is `/sys` and `/proc/self/mountinfo`, and DEVICE's device
/// number comes from `stat` (a block device node's `st_rdev`). Tests point `sysfs` and
/// `mountinfo` at a fake tree and table, and, since they cannot make a device node without
/// root, give DEVICE's number with `assume_block`: a regular file then stands for the disk
/// that number names in the fake sysfs. Every check runs unchanged on that view, and the
/// writes land in the regular file. `assume_block` is refused for a real block device, so
/// it can never make a real disk pass for another.
#[derive(Clone, Debug)]
pub struct SystemView {
    /// The sysfs tree.
    pub sysfs: PathBuf,
    /// The mount table, in mountinfo format.
    pub mountinfo: PathBuf,
    /// Treat DEVICE, a regular file, as the block device with this number.
    pub assume_block: Option<DeviceNumber>,
}

impl Default for SystemView {
    fn default() -> SystemView {
        SystemView {
            sysfs: PathBuf::from("/sys"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            assume_block: None,
        }
    }
}

/// Why flashing refused, or failed.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The image is a qcow2, which would land on the device as a qcow2 file, not a disk.
    #[error("{} is a qcow2 image; a device needs the raw disk\nhint: flash the .raw that `kiln build disk` writes beside it, or convert this one with `qemu-img convert -O raw {} IMAGE.raw`", path.display(), path.display())]
    Qcow2 {
        /// The image.
        path: PathBuf,
    },
    /// The image is not a regular file, or is empty.
    #[error("{} is not a disk image: {problem}", path.display())]
    NotAnImage {
        /// The image.
        path: PathBuf,
        /// What it is instead.
        problem: &'static str,
    },
    /// DEVICE is the image itself.
    #[error("{} is the image itself", path.display())]
    SameFile {
        /// The device.
        path: PathBuf,
    },
    /// DEVICE does not exist in `/dev`, where a new file would be a typo, not a copy.
    #[error("there is no device {}\nhint: `lsblk -o NAME,MODEL,SIZE,TRAN` lists the disks", path.display())]
    NoSuchDevice {
        /// The device.
        path: PathBuf,
    },
    /// DEVICE does not exist and cannot be created.
    #[error("{} does not exist, and neither does its directory", path.display())]
    NoDirectory {
        /// The device.
        path: PathBuf,
    },
    /// DEVICE is a symlink to nothing (an unplugged disk's `/dev/disk/by-id` link).
    #[error("{} is a symlink to {}, which does not exist; is the disk plugged in?", path.display(), target.display())]
    DanglingLink {
        /// The device.
        path: PathBuf,
        /// Where the link points.
        target: PathBuf,
    },
    /// DEVICE is a directory, a character device or the like.
    #[error("{} is neither a block device nor a regular file", path.display())]
    NotADevice {
        /// The device.
        path: PathBuf,
    },
    /// `assume_block` was given for a real block device.
    #[error("{} is a real block device; --assume-block is only for tests on regular files", path.display())]
    AssumedRealDevice {
        /// The device.
        path: PathBuf,
    },
    /// sysfs does not list DEVICE's number.
    #[error("{} is block device {number}, which {}/dev/block does not list", path.display(), sysfs.display())]
    NotInSysfs {
        /// The device.
        path: PathBuf,
        /// Its number.
        number: DeviceNumber,
        /// The sysfs root.
        sysfs: PathBuf,
    },
    /// DEVICE is a partition.
    #[error("{} is partition {partition} of disk {disk}, not a whole disk\nhint: give the whole disk, /dev/{disk}: the image carries its own partition table", path.display())]
    Partition {
        /// The device.
        path: PathBuf,
        /// The partition's kernel name.
        partition: String,
        /// Its disk's kernel name.
        disk: String,
    },
    /// DEVICE is, or is on, the disk holding `/`.
    #[error("{} is {what}, which holds this machine's root file system (/)\nhint: that is the running system's own disk; check the device name with `lsblk -o NAME,MODEL,SIZE,TRAN,MOUNTPOINTS`", path.display())]
    RootDisk {
        /// The device.
        path: PathBuf,
        /// `disk NAME`, or `partition NAME of disk NAME`.
        what: String,
    },
    /// DEVICE or a partition of it is mounted.
    #[error("{} is mounted: {}\nhint: unmount it first (`umount {}`), after checking that this is the disk you mean", path.display(), describe_mounts(mounts), mount_points(mounts))]
    Mounted {
        /// The device.
        path: PathBuf,
        /// Each mount on it.
        mounts: Vec<Mount>,
    },
    /// DEVICE is a fixed disk and `--force` was not given.
    #[error("{} is a fixed disk, not removable media: {name}, {}, {}\nhint: if this is the disk you mean to overwrite (`lsblk -o NAME,MODEL,SIZE,TRAN` lists them), add --force", path.display(), model.as_deref().unwrap_or("model unknown"), describe_size(*size))]
    NotRemovable {
        /// The device.
        path: PathBuf,
        /// The disk's kernel name.
        name: String,
        /// Its vendor and model.
        model: Option<String>,
        /// Its size in bytes.
        size: u64,
    },
    /// sysfs gives no size for DEVICE.
    #[error("{} ({name}) has no size in sysfs; is it a disk with no medium in it?", path.display())]
    NoSize {
        /// The device.
        path: PathBuf,
        /// Its kernel name.
        name: String,
    },
    /// DEVICE is smaller than the image.
    #[error("{} holds {} ({size} bytes), but the image is {} ({image_size} bytes)\nhint: use a larger device, or make a smaller image: `kiln build disk` sizes the root from its content plus `[image] headroom`", path.display(), describe_size(*size), describe_size(*image_size))]
    TooSmall {
        /// The device.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The image's size in bytes.
        image_size: u64,
    },
    /// The kernel says the device is in use (`O_EXCL` gave `EBUSY`).
    #[error("{} is in use: mounted, swap, or under device-mapper, LVM or md\nhint: `lsblk {}` shows what holds it", path.display(), path.display())]
    Busy {
        /// The device.
        path: PathBuf,
    },
    /// The mount table could not be read.
    #[error("mount table {}: {problem}; kiln cannot tell whether the device is free", path.display())]
    MountTable {
        /// The table.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The image changed length while it was written.
    #[error("{} changed while it was written: read {read} bytes, expected {expected}", path.display())]
    ImageChanged {
        /// The image.
        path: PathBuf,
        /// Bytes read.
        read: u64,
        /// Its length when the copy started.
        expected: u64,
    },
    /// The device ended before the image's length on read-back.
    #[error("{} ended after {read} bytes on read-back; the image is {expected}", path.display())]
    ShortRead {
        /// The device.
        path: PathBuf,
        /// Bytes read back.
        read: u64,
        /// The image's length.
        expected: u64,
    },
    /// What was read back differs from the image.
    #[error("{} does not read back as the image\n  image:  sha256 {}\n  device: sha256 {}\nhint: the device may be failing, or be fake flash that claims more space than it has; try another", path.display(), image.hex(), device.hex())]
    Mismatch {
        /// The device.
        path: PathBuf,
        /// The image's digest.
        image: Digest,
        /// The digest of what the device holds over the image's length.
        device: Digest,
    },
    /// Reading or writing failed (the message names the file).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl FlashError {
    /// Whether kiln refused before writing anything (a usage error), rather than failing
    /// while writing or verifying.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            FlashError::ImageChanged { .. }
                | FlashError::ShortRead { .. }
                | FlashError::Mismatch { .. }
                | FlashError::Io(_)
        )
    }
}

/// A raw disk image, opened and checked.
#[derive(Debug)]
pub struct Image {
    /// Where it is.
    pub path: PathBuf,
    /// Its length in bytes (holes included).
    pub len: u64,
    file: fs_err::File,
}

impl Image {
    /// Open `path`, refusing what is not a raw disk image.
    pub fn open(path: &Path) -> Result<Image, FlashError> {
        let mut file = fs_err::File::open(path)?;
        let metadata = file.metadata()?;
        let problem = if !metadata.is_file() {
            Some("not a regular file")
        } else if metadata.len() == 0 {
            Some("it is empty")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(FlashError::NotAnImage {
                path: path.to_path_buf(),
                problem,
            });
        }
        let mut magic = Vec::with_capacity(QCOW2_MAGIC.len());
        (&mut file)
            .take(QCOW2_MAGIC.len() as u64)
            .read_to_end(&mut magic)?;
        if magic == QCOW2_MAGIC {
            return Err(FlashError::Qcow2 {
                path: path.to_path_buf(),
            });
        }
        file.seek(SeekFrom::Start(0))?;
        Ok(Image {
            path: path.to_path_buf(),
            len: metadata.len(),
            file,
        })
    }

    /// The image's bytes, from the start.
    pub fn reader(&mut self) -> &mut impl Read {
        &mut self.file
    }
}

/// Where the image goes, once every check has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A regular file, made or extended to the image's length: a copy.
    File {
        /// The file, symlinks resolved.
        path: PathBuf,
        /// Whether it is to be created.
        create: bool,
    },
    /// A whole disk that passed every check.
    Disk {
        /// The device node, symlinks resolved.
        path: PathBuf,
        /// The kernel's name.
        name: String,
        /// Vendor and model.
        model: Option<String>,
        /// Size in bytes.
        size: u64,
        /// Whether it is a real block device (not a test's regular file).
        real: bool,
    },
}

impl Target {
    /// The path that is written.
    pub fn path(&self) -> &Path {
        match self {
            Target::File { path, .. } | Target::Disk { path, .. } => path,
        }
    }

    /// What the target is, for the line before writing.
    pub fn describe(&self) -> String {
        match self {
            Target::File { path, create } => format!(
                "{} ({} file)",
                path.display(),
                if *create { "new" } else { "existing" }
            ),
            Target::Disk {
                path,
                name,
                model,
                size,
                ..
            } => format!(
                "{} ({name}, {}, {})",
                path.display(),
                model.as_deref().unwrap_or("model unknown"),
                describe_size(*size)
            ),
        }
    }
}

/// Decide whether `device` may receive `image`, reading the machine through `view`;
/// `force` allows a fixed (non-removable) disk. Nothing is written.
pub fn choose_target(
    image: &Image,
    device: &Path,
    view: &SystemView,
    force: bool,
) -> Result<Target, FlashError> {
    let path = match fs_err::canonicalize(device) {
        Ok(path) => path,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return new_file(device),
        Err(error) => return Err(error.into()),
    };
    let metadata = fs_err::metadata(&path)?;
    let image_metadata = image.file.metadata()?;
    if (metadata.dev(), metadata.ino()) == (image_metadata.dev(), image_metadata.ino()) {
        return Err(FlashError::SameFile { path });
    }
    let is_block = metadata.file_type().is_block_device();
    let (number, real) = match view.assume_block {
        Some(_) if is_block => return Err(FlashError::AssumedRealDevice { path }),
        Some(number) if metadata.is_file() => (number, false),
        None if is_block => (number_of(metadata.rdev()), true),
        None if metadata.is_file() => {
            return Ok(Target::File {
                path,
                create: false,
            })
        }
        _ => return Err(FlashError::NotADevice { path }),
    };
    let sysfs = Sysfs::new(&view.sysfs);
    let Some(device) = sysfs.by_number(number) else {
        return Err(FlashError::NotInSysfs {
            path,
            number,
            sysfs: view.sysfs.clone(),
        });
    };
    let mounts = read_mounts(&view.mountinfo)?;
    let disk = sysfs.parent_disk(&device).unwrap_or_else(|| device.clone());
    // The root disk first, so a partition of it is named as such and not sent off to try
    // the whole disk next.
    let root_disks: Vec<BlockDevice> = mounts
        .iter()
        .filter(|mount| mount.mount_point == Path::new("/"))
        .flat_map(|mount| mount_disks(&sysfs, mount))
        .collect();
    if root_disks.contains(&disk) {
        let what = if disk == device {
            format!("disk {}", disk.name)
        } else {
            format!("partition {} of disk {}", device.name, disk.name)
        };
        return Err(FlashError::RootDisk { path, what });
    }
    if disk != device {
        return Err(FlashError::Partition {
            path,
            partition: device.name,
            disk: disk.name,
        });
    }
    let on_device: Vec<Mount> = mounts
        .into_iter()
        .filter(|mount| {
            mount_disks(&sysfs, mount).contains(&device)
                || (mount.source.starts_with('/')
                    && fs_err::canonicalize(&mount.source).is_ok_and(|source| source == path))
        })
        .collect();
    if !on_device.is_empty() {
        return Err(FlashError::Mounted {
            path,
            mounts: on_device,
        });
    }
    let model = sysfs.model(&device);
    let Some(size) = sysfs.size(&device) else {
        return Err(FlashError::NoSize {
            path,
            name: device.name,
        });
    };
    if !force && !sysfs.is_removable(&device) {
        return Err(FlashError::NotRemovable {
            path,
            name: device.name,
            model,
            size,
        });
    }
    if size < image.len {
        return Err(FlashError::TooSmall {
            path,
            size,
            image_size: image.len,
        });
    }
    Ok(Target::Disk {
        path,
        name: device.name,
        model,
        size,
        real,
    })
}

/// A DEVICE that does not exist: a new file, if its directory exists and is not `/dev`.
fn new_file(device: &Path) -> Result<Target, FlashError> {
    if let Ok(target) = fs_err::read_link(device) {
        return Err(FlashError::DanglingLink {
            path: device.to_path_buf(),
            target,
        });
    }
    let parent = match device.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let Ok(parent) = fs_err::canonicalize(parent) else {
        return Err(FlashError::NoDirectory {
            path: device.to_path_buf(),
        });
    };
    // `dd of=/dev/sdx` with a mistyped name fills devtmpfs with a file and reports
    // success; a missing name in /dev is a device that is not there. /dev/shm is a
    // tmpfs for files.
    if parent.starts_with("/dev") && !parent.starts_with("/dev/shm") {
        return Err(FlashError::NoSuchDevice {
            path: device.to_path_buf(),
        });
    }
    let name = device.file_name().ok_or_else(|| FlashError::NoDirectory {
        path: device.to_path_buf(),
    })?;
    Ok(Target::File {
        path: parent.join(name),
        create: true,
    })
}

/// The device number in a `st_rdev`.
fn number_of(rdev: u64) -> DeviceNumber {
    DeviceNumber {
        major: libc::major(rdev),
        minor: libc::minor(rdev),
    }
}

/// The mount table at `path`.
fn read_mounts(path: &Path) -> Result<Vec<Mount>, FlashError> {
    let problem = |problem: String| FlashError::MountTable {
        path: path.to_path_buf(),
        problem,
    };
    let text = fs_err::read_to_string(path).map_err(|error| problem(error.to_string()))?;
    parse_mountinfo(&text).map_err(|error| problem(error.to_string()))
}

/// The whole disks a mount lives on, found by its device number and by its source.
fn mount_disks(sysfs: &Sysfs, mount: &Mount) -> Vec<BlockDevice> {
    [
        sysfs.by_number(mount.number),
        source_device(sysfs, &mount.source),
    ]
    .into_iter()
    .flatten()
    .flat_map(|device| sysfs.whole_disks(&device))
    .collect()
}

/// The block device a mount's source names: by its number if it is a device node, else by
/// its kernel name if it is a name in `/dev` (btrfs reports an anonymous device number,
/// and `/dev/mapper/NAME` links resolve to `/dev/dm-N`).
fn source_device(sysfs: &Sysfs, source: &str) -> Option<BlockDevice> {
    if !source.starts_with('/') {
        return None;
    }
    let path = fs_err::canonicalize(source).unwrap_or_else(|_| PathBuf::from(source));
    if let Ok(metadata) = fs_err::metadata(&path) {
        if metadata.file_type().is_block_device() {
            return sysfs.by_number(number_of(metadata.rdev()));
        }
    }
    if path.parent() == Some(Path::new("/dev")) {
        return sysfs.by_name(&path.file_name()?.to_string_lossy());
    }
    None
}

/// What flashing writes to and reads back from: a file or a block device, or in tests a
/// buffer.
pub trait Device: Read + Write + Seek {
    /// Make every byte written durable, and make the read-back come from the device, not
    /// from the page cache.
    fn sync(&mut self) -> io::Result<()>;
}

impl Device for fs_err::File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()?;
        // After fsync the cached pages are clean, and DONTNEED drops them, so the
        // read-back reads the medium. Advice that is not taken only weakens the check, so
        // its result is not an error.
        // SAFETY: the descriptor is open for the life of `self`; fadvise reads no memory.
        unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(self.file()),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        Ok(())
    }
}

/// Open the target for writing and reading back. A real disk is opened with `O_EXCL`, so
/// the kernel refuses it while anything holds it, whatever the mount table said; a file is
/// created or set to the image's length.
pub fn open_target(target: &Target, len: u64) -> Result<fs_err::File, FlashError> {
    let mut options = fs_err::OpenOptions::new();
    options.read(true).write(true);
    match target {
        Target::File { create, .. } => {
            options.create_new(*create);
        }
        Target::Disk { real: true, .. } => {
            options.custom_flags(libc::O_EXCL);
        }
        Target::Disk { real: false, .. } => {}
    }
    let file = match options.open(target.path()) {
        Err(error) if error.kind() == io::ErrorKind::ResourceBusy => {
            return Err(FlashError::Busy {
                path: target.path().to_path_buf(),
            })
        }
        other => other?,
    };
    if let Target::File { .. } = target {
        file.set_len(len)?;
    }
    Ok(file)
}

/// Write every byte of the image to the device from its start, holes as the zeros they
/// read as (the device may hold old data), then sync. `progress` gets the bytes written so
/// far. Returns the image's digest.
pub fn write_image(
    image: &mut Image,
    device: &mut impl Device,
    progress: &mut dyn FnMut(u64),
) -> Result<Digest, FlashError> {
    let expected = image.len;
    let path = image.path.clone();
    device.seek(SeekFrom::Start(0))?;
    // Exactly the length the checks saw: an image that grows meanwhile is not written
    // past it, one that shrinks is an error below.
    let (digest, written) = stream(
        image.reader().take(expected),
        |chunk| device.write_all(chunk),
        progress,
    )?;
    if written != expected {
        return Err(FlashError::ImageChanged {
            path,
            read: written,
            expected,
        });
    }
    device.flush()?;
    device.sync()?;
    Ok(digest)
}

/// Read the device back over the image's `len` bytes and compare with the image's digest.
/// `progress` gets the bytes read so far. Returns the device's digest when it matches.
pub fn read_back(
    path: &Path,
    device: &mut impl Device,
    len: u64,
    image: &Digest,
    progress: &mut dyn FnMut(u64),
) -> Result<Digest, FlashError> {
    device.seek(SeekFrom::Start(0))?;
    let (digest, read) = stream(device.take(len), |_| Ok(()), progress)?;
    if read != len {
        return Err(FlashError::ShortRead {
            path: path.to_path_buf(),
            read,
            expected: len,
        });
    }
    if &digest != image {
        return Err(FlashError::Mismatch {
            path: path.to_path_buf(),
            image: image.clone(),
            device: digest,
        });
    }
    Ok(digest)
}

/// Read `reader` to its end in [`CHUNK`]s, hashing each and handing it to `each`;
/// `progress` gets the bytes done so far. Returns the digest and the length.
fn stream(
    mut reader: impl Read,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
    progress: &mut dyn FnMut(u64),
) -> io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let read = read_full(&mut reader, &mut buffer)?;
        if read == 0 {
            return Ok((Digest::from_hasher(hasher), done));
        }
        hasher.update(&buffer[..read]);
        each(&buffer[..read])?;
        done += read as u64;
        progress(done);
    }
}

/// A size for people: GiB or MiB with one decimal.
pub fn describe_size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

fn describe_mounts(mounts: &[Mount]) -> String {
    mounts
        .iter()
        .map(|mount| format!("{} on {}", mount.source, mount.mount_point.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The mount points as `umount` arguments, quoted for a shell where they need it.
fn mount_points(mounts: &[Mount]) -> String {
    mounts
        .iter()
        .map(|mount| {
            let point = mount.mount_point.display().to_string();
            let plain = point.chars().all(|character| {
                character.is_ascii_alphanumeric() || "/._-+:@".contains(character)
            });
            if plain {
                point
            } else {
                format!("'{}'", point.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A device that loses one bit of what is written to it: a failing or fake stick.
    struct FlakyDevice {
        bytes: Cursor<Vec<u8>>,
        flip_at: u64,
    }

    impl Read for FlakyDevice {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            self.bytes.read(buffer)
        }
    }

    impl Write for FlakyDevice {
        fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
            let start = self.bytes.position();
            let written = self.bytes.write(buffer)?;
            if (start..start + written as u64).contains(&self.flip_at) {
                self.bytes.get_mut()[self.flip_at as usize] ^= 1;
            }
            Ok(written)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for FlakyDevice {
        fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
            self.bytes.seek(position)
        }
    }

    impl Device for FlakyDevice {
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn image_of(dir: &Path, bytes: &[u8]) -> Image {
        let path = dir.join("node.raw");
        fs_err::write(&path, bytes).unwrap();
        Image::open(&path).unwrap()
    }

    fn flash_to(device: &mut FlakyDevice, bytes: &[u8]) -> Result<Digest, FlashError> {
        let dir = tempfile::tempdir().unwrap();
        let mut image = image_of(dir.path(), bytes);
        let digest = write_image(&mut image, device, &mut |_| {})?;
        assert_eq!(digest, Digest::of_bytes(bytes));
        read_back(
            Path::new("/dev/fake"),
            device,
            image.len,
            &digest,
            &mut |_| {},
        )
    }

    #[test]
    fn a_device_that_reads_back_what_was_written_verifies() {
        let bytes: Vec<u8> = (0..CHUNK + 1000).map(|index| index as u8).collect();
        // Old data past the image's end is not part of the comparison.
        let mut device = FlakyDevice {
            bytes: Cursor::new(vec![0xaa; CHUNK * 2]),
            flip_at: u64::MAX,
        };
        let digest = flash_to(&mut device, &bytes).unwrap();
        assert_eq!(digest, Digest::of_bytes(&bytes));
        assert_eq!(&device.bytes.get_ref()[..bytes.len()], &bytes[..]);
    }

    #[test]
    fn one_flipped_bit_in_the_second_chunk_is_a_mismatch_naming_both_digests() {
        let bytes: Vec<u8> = (0..CHUNK + 1000).map(|index| index as u8).collect();
        let mut device = FlakyDevice {
            bytes: Cursor::new(Vec::new()),
            flip_at: CHUNK as u64 + 10,
        };
        let error = flash_to(&mut device, &bytes).unwrap_err();
        let FlashError::Mismatch {
            image,
            device: read,
            ..
        } = &error
        else {
            panic!("not a mismatch: {error}");
        };
        assert_eq!(image, &Digest::of_bytes(&bytes));
        assert_ne!(read, image);
        let message = error.to_string();
        assert!(message.contains(image.hex()) && message.contains(read.hex()));
        assert!(!error.is_refusal());
    }

    #[test]
    fn a_device_that_ends_early_is_a_short_read() {
        let dir = tempfile::tempdir().unwrap();
        let image = image_of(dir.path(), b"0123456789");
        let mut device = FlakyDevice {
            bytes: Cursor::new(b"01234".to_vec()),
            flip_at: u64::MAX,
        };
        let error = read_back(
            Path::new("/dev/fake"),
            &mut device,
            image.len,
            &Digest::of_bytes(b"0123456789"),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                FlashError::ShortRead {
                    read: 5,
                    expected: 10,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_new_file_in_dev_is_refused_as_a_missing_device() {
        let error = new_file(Path::new("/dev/kiln-no-such-disk")).unwrap_err();
        assert!(matches!(error, FlashError::NoSuchDevice { .. }), "{error}");
        if Path::new("/dev/shm").is_dir() {
            assert!(new_file(Path::new("/dev/shm/kiln-copy.raw")).is_ok());
        }
    }

    #[test]
    fn mount_points_are_quoted_for_the_shell_where_they_need_it() {
        let mount = |point: &str| Mount {
            number: DeviceNumber { major: 0, minor: 0 },
            mount_point: point.into(),
            source: String::new(),
        };
        assert_eq!(
            mount_points(&[mount("/mnt/usb-1"), mount("/media/it's here")]),
            "/mnt/usb-1 '/media/it'\\''s here'"
        );
    }

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(describe_size(512 * 1024 * 1024), "512.0 MiB");
        assert_eq!(describe_size(16_008_609_792), "14.9 GiB");
    }
}
