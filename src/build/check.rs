//! `kiln check`: is an output a pure function of its inputs? Build it again with the step
//! cache turned off and compare byte for byte. On a difference, name the first step whose
//! output differs and, inside it, the first differing file: a tar member for the root file
//! system and node layer steps; for a disk, the partition and then the file (the kernel
//! image's section on the ESP; the inode's path on the ext4 root, found with debugfs).

use std::io::Read;
use std::path::Path;

use crate::build::disk::{BOOT_PATH, DISK_QCOW2, DISK_RAW};
use crate::build::step::StepOutput;
use crate::build::tools::{self, DEBUGFS, MCOPY};
use crate::build::uki;
use crate::build::BuildError;

/// The first difference between two builds of the same step.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Difference {
    /// The step's name in the store.
    pub step: String,
    /// Its kind.
    pub kind: String,
    /// Its key (the same on both sides: the inputs are the same).
    pub key: String,
    /// The output file that differs.
    pub output: String,
    /// Where inside it, and how.
    pub detail: String,
}

/// Compare two builds of the same step; `None` when every output file is identical.
pub fn compare(
    name: &str,
    first: &StepOutput,
    second: &StepOutput,
) -> Result<Option<Difference>, BuildError> {
    let outputs = &first.record.outputs;
    for (file, output) in outputs {
        let other = second.record.outputs.get(file);
        if other == Some(output) {
            continue;
        }
        let a = first.path(file);
        let b = second.path(file);
        let detail = if file.ends_with(".tar") {
            tar_difference(&a, &b)?
        } else if file == DISK_RAW {
            disk_difference(&a, &b)?
        } else if file == DISK_QCOW2 {
            "the raw disks are identical but their qcow2 conversions differ (qemu-img)".into()
        } else {
            first_byte_difference(&a, &b)?
                .map(|offset| format!("first differing byte at offset {offset}"))
                .unwrap_or_else(|| "the sizes differ".into())
        };
        return Ok(Some(Difference {
            step: name.to_string(),
            kind: first.record.kind.clone(),
            key: first.key.clone(),
            output: file.clone(),
            detail,
        }));
    }
    Ok(None)
}

/// One tar member as the comparison sees it: header fields and content digest.
#[derive(PartialEq, Eq, Debug)]
struct MemberView {
    path: String,
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    size: u64,
    sha256: String,
}

fn members(path: &Path) -> Result<Vec<MemberView>, BuildError> {
    use sha2::Digest as _;
    let file = std::io::BufReader::new(fs_err::File::open(path)?);
    let mut archive = tar::Archive::new(file);
    let mut views = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header().clone();
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let link = entry
            .link_name_bytes()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let mut hasher = sha2::Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let read = entry.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        views.push(MemberView {
            path,
            kind: header.entry_type().as_byte(),
            mode: header.mode().unwrap_or(0),
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mtime: header.mtime().unwrap_or(0),
            link,
            size: header.size().unwrap_or(0),
            sha256: format!("{:x}", hasher.finalize()),
        });
    }
    Ok(views)
}

/// The first tar member that differs, and how.
fn tar_difference(a: &Path, b: &Path) -> Result<String, BuildError> {
    let first = members(a)?;
    let second = members(b)?;
    for (x, y) in first.iter().zip(second.iter()) {
        if x == y {
            continue;
        }
        if x.path != y.path {
            return Ok(format!(
                "the members differ from `{}` (first build) / `{}` (second build) on: a file is in one build only",
                x.path, y.path
            ));
        }
        let mut what = Vec::new();
        if x.sha256 != y.sha256 {
            what.push(format!(
                "content (sha256 {} vs {})",
                &x.sha256[..12],
                &y.sha256[..12]
            ));
        }
        if x.mode != y.mode {
            what.push(format!("mode ({:o} vs {:o})", x.mode, y.mode));
        }
        if x.mtime != y.mtime {
            what.push(format!("mtime ({} vs {})", x.mtime, y.mtime));
        }
        if (x.uid, x.gid) != (y.uid, y.gid) {
            what.push(format!(
                "owner ({}:{} vs {}:{})",
                x.uid, x.gid, y.uid, y.gid
            ));
        }
        if x.link != y.link || x.kind != y.kind {
            what.push("type or link target".into());
        }
        return Ok(format!("file `{}` differs: {}", x.path, what.join(", ")));
    }
    Ok(format!(
        "one build has more members ({} vs {})",
        first.len(),
        second.len()
    ))
}

/// The offset of the first differing byte, or `None` if one file is a prefix of the other.
fn first_byte_difference(a: &Path, b: &Path) -> Result<Option<u64>, BuildError> {
    let mut first = std::io::BufReader::new(fs_err::File::open(a)?);
    let mut second = std::io::BufReader::new(fs_err::File::open(b)?);
    let mut x = vec![0u8; 1 << 20];
    let mut y = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let read_x = read_full(&mut first, &mut x)?;
        let read_y = read_full(&mut second, &mut y)?;
        let common = read_x.min(read_y);
        if let Some(index) = (0..common).find(|&index| x[index] != y[index]) {
            return Ok(Some(offset + index as u64));
        }
        if read_x != read_y || read_x == 0 {
            return Ok(None);
        }
        offset += common as u64;
    }
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = reader.read(&mut buffer[filled..])?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

/// A GPT partition: number, name, byte range.
#[derive(Debug)]
pub struct Partition {
    /// 1-based number.
    pub number: usize,
    /// Its GPT name.
    pub name: String,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// The partitions of a GPT disk (512-byte sectors).
pub fn partitions(disk: &Path) -> Result<Vec<Partition>, BuildError> {
    let mut file = fs_err::File::open(disk)?;
    let mut header = [0u8; 1024];
    read_full(&mut file, &mut header)?;
    if &header[512..520] != b"EFI PART" {
        return Err(BuildError::Failed(format!(
            "{} has no GPT header",
            disk.display()
        )));
    }
    let u64_at = |bytes: &[u8], at: usize| {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    };
    let u32_at = |bytes: &[u8], at: usize| {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    };
    let entries_lba = u64_at(&header, 512 + 72);
    let count = u32_at(&header, 512 + 80) as usize;
    let size = u32_at(&header, 512 + 84) as usize;
    let mut table = vec![0u8; count * size];
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(entries_lba * 512))?;
    read_full(&mut file, &mut table)?;
    let mut parts = Vec::new();
    for index in 0..count {
        let entry = &table[index * size..(index + 1) * size];
        if entry[..16].iter().all(|&byte| byte == 0) {
            continue;
        }
        let name: Vec<u16> = entry[56..128]
            .chunks(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .take_while(|&unit| unit != 0)
            .collect();
        parts.push(Partition {
            number: index + 1,
            name: String::from_utf16_lossy(&name),
            start: u64_at(entry, 32) * 512,
            end: (u64_at(entry, 40) + 1) * 512,
        });
    }
    Ok(parts)
}

/// Where two disks first differ: the partition, and inside it the file.
fn disk_difference(a: &Path, b: &Path) -> Result<String, BuildError> {
    let Some(offset) = first_byte_difference(a, b)? else {
        return Ok("the disks differ in size".into());
    };
    let parts = partitions(a)?;
    let Some(part) = parts
        .iter()
        .find(|part| offset >= part.start && offset < part.end)
    else {
        return Ok(format!(
            "the partition table differs (first differing byte at offset {offset}, outside every partition)"
        ));
    };
    let within = offset - part.start;
    let place = format!(
        "partition {} ({}) at byte {within} of the partition",
        part.number, part.name
    );
    let inner = if part.name == "ESP" {
        esp_difference(a, b, part.start)?
    } else {
        ext4_difference(a, b, part.start, within)?
    };
    Ok(format!("{place}: {inner}"))
}

fn esp_difference(a: &Path, b: &Path, start: u64) -> Result<String, BuildError> {
    let scratch = std::env::temp_dir().join(format!("kiln-check-esp-{}", std::process::id()));
    fs_err::create_dir_all(&scratch)?;
    let mut images = Vec::new();
    for (index, disk) in [a, b].iter().enumerate() {
        let target = scratch.join(format!("uki-{index}.efi"));
        tools::run(
            "reading the kernel image from the ESP",
            tools::command(MCOPY)
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-n")
                .arg("-i")
                .arg(format!("{}@@{start}", disk.display()))
                .arg(format!("::/{BOOT_PATH}"))
                .arg(&target),
        )?;
        images.push(fs_err::read(&target)?);
    }
    let _ = fs_err::remove_dir_all(&scratch);
    if images[0] == images[1] {
        return Ok(format!(
            "the FAT file system's metadata differs; /{BOOT_PATH} is identical"
        ));
    }
    let sections = uki::sections(&images[0]).unwrap_or_default();
    let other = uki::sections(&images[1]).unwrap_or_default();
    for ((name, range), (_, range_b)) in sections.iter().zip(other.iter()) {
        let x = images[0].get(range.clone());
        let y = images[1].get(range_b.clone());
        if x != y {
            return Ok(format!("file /{BOOT_PATH} differs in its {name} section"));
        }
    }
    Ok(format!("file /{BOOT_PATH} differs in its PE headers"))
}

/// Name the file that owns the differing block of an ext4 partition: `icheck` maps a data
/// block to its inode; a block of an inode table maps to the inodes stored in it.
fn ext4_difference(a: &Path, b: &Path, start: u64, within: u64) -> Result<String, BuildError> {
    let image = format!("{}?offset={start}", a.display());
    let image_b = format!("{}?offset={start}", b.display());
    let block_size = 4096u64;
    let block = within / block_size;
    let debugfs = |image: &str, request: &str| -> Result<String, BuildError> {
        let output = tools::run(
            "reading the root file system with debugfs",
            tools::command(DEBUGFS).arg("-R").arg(request).arg(image),
        )?;
        Ok(String::from_utf8_lossy(&output).into_owned())
    };
    let icheck = debugfs(&image, &format!("icheck {block}"))?;
    let inode = icheck
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|field| field.parse::<u64>().ok());
    if let Some(inode) = inode {
        let path = inode_path(&debugfs, &image, inode)?;
        return Ok(format!(
            "the content of file {path} differs (block {block})"
        ));
    }
    // An inode table block?
    let stats = debugfs(&image, "stats")?;
    let inodes_per_group = stats
        .lines()
        .find_map(|line| line.strip_prefix("Inodes per group:"))
        .and_then(|value| value.trim().parse::<u64>().ok());
    let inode_size = stats
        .lines()
        .find_map(|line| line.strip_prefix("Inode size:"))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(256);
    let mut group = 0u64;
    for line in stats.lines() {
        let line = line.trim();
        if line.starts_with("Group") {
            if let Some(number) = line
                .split_whitespace()
                .nth(1)
                .and_then(|word| word.trim_end_matches(':').parse::<u64>().ok())
            {
                group = number;
            }
        }
        if let Some(rest) = line.split("inode table at ").nth(1) {
            let range = rest.split([',', ' ']).next().unwrap_or("");
            let (from, to) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(from), Ok(to), Some(per_group)) =
                (from.parse::<u64>(), to.parse::<u64>(), inodes_per_group)
            {
                if (from..=to).contains(&block) {
                    let byte = (block - from) * block_size + within % block_size;
                    let inode = group * per_group + byte / inode_size + 1;
                    let path = inode_path(&debugfs, &image, inode)?;
                    let x = debugfs(&image, &format!("stat <{inode}>"))?;
                    let y = debugfs(&image_b, &format!("stat <{inode}>"))?;
                    let fields: Vec<String> = x
                        .lines()
                        .zip(y.lines())
                        .filter(|(l, r)| l != r)
                        .map(|(l, r)| format!("`{}` vs `{}`", l.trim(), r.trim()))
                        .take(3)
                        .collect();
                    return Ok(format!(
                        "the inode of file {path} differs: {}",
                        if fields.is_empty() {
                            "in fields debugfs does not show".to_string()
                        } else {
                            fields.join("; ")
                        }
                    ));
                }
            }
        }
    }
    Ok(format!(
        "block {block}, which belongs to no file: file system metadata (superblock, group descriptors, bitmaps or journal)"
    ))
}

fn inode_path(
    debugfs: &dyn Fn(&str, &str) -> Result<String, BuildError>,
    image: &str,
    inode: u64,
) -> Result<String, BuildError> {
    let output = debugfs(image, &format!("ncheck {inode}"))?;
    Ok(output
        .lines()
        .nth(1)
        .and_then(|line| line.split_once(char::is_whitespace))
        .map(|(_, path)| path.trim().to_string())
        .unwrap_or_else(|| format!("<inode {inode}>")))
}
