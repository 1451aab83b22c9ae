//! Deterministic, streaming tar archives, and reading them back safely.
//!
//! The bundle is one tar per cluster, and kiln promises that it comes out byte-for-byte
//! the same on any machine, any day. Zarf's packages do not: tar headers carry the
//! builder's timestamps, so two builds of the same package differ
//! (See: https://github.com/zarf-dev/zarf/issues/4702). Here every header is a pure
//! function of the member's path, mode and bytes plus `SOURCE_DATE_EPOCH`: entries sorted
//! byte-wise by path, uid/gid 0 with empty owner names, no atime/ctime, no pax timestamps,
//! a gzip header with mtime 0, no file name and a fixed OS byte, and zstd at a fixed level.
//!
//! Bundles hold container images and driver packages of many GiB, so memory must not grow
//! with them. Zarf needs about twice a package's size in RAM to split it; here each file is
//! read once, in 1 MiB chunks that are hashed and written in the same pass, so what
//! `write` holds at any time is a few MiB whatever the size of the bundle.
//!
//! `read` is the other side: bundles arrive on a USB stick or over a network we do not
//! control, so it refuses any entry that could write outside the directory it is unpacked
//! into (absolute paths, `..`, links, devices) and any duplicate path, naming the entry.
//! This module owns the tar format for kiln; the bundle step decides what goes in.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

/// Size of a tar block: headers are one block, data is padded to whole blocks.
const BLOCK_SIZE: usize = 512;

/// Size of the chunks file members are read, hashed and written in.
const CHUNK_SIZE: usize = 1 << 20;

/// Mode of the parent directory entries written for members' parents.
const DIRECTORY_MODE: u32 = 0o755;

/// The zstd level: fixed, since another level gives other bytes.
const ZSTD_LEVEL: i32 = 3;

/// The gzip header's OS byte: 255 ("unknown"), so the header does not depend on the
/// platform flate2 was built for.
const GZIP_OPERATING_SYSTEM: u8 = 255;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How the tar stream is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream; the choice when members are already compressed blobs.
    None,
    /// gzip (deflate, level 6), readable everywhere.
    Gzip,
    /// zstd level 3, single-threaded: faster and smaller than gzip.
    Zstd,
}

impl Compression {
    /// The file name extension of an archive compressed this way, without the leading dot.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "tar.gz",
            Compression::Zstd => "tar.zst",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = ArchiveError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(ArchiveError::UnknownCompression {
                value: value.to_owned(),
            }),
        }
    }
}

/// Where a member's bytes come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Bytes already in memory (rendered files, the manifest).
    Bytes(Vec<u8>),
    /// A regular file, streamed in 1 MiB chunks.
    File(PathBuf),
}

/// One regular file to put in an archive.
#[derive(Clone, Debug)]
pub struct Member {
    /// Path inside the archive: relative, `/`-separated, with no empty, `.` or `..`
    /// components.
    pub path: String,
    /// Permission bits (at most `0o7777`), written as given.
    pub mode: u32,
    /// Where the bytes come from.
    pub source: Source,
    /// sha256 (lowercase hex) and size the bytes must have, when the caller knows them
    /// (a blob from the store): a mismatch is an error once the member is written.
    pub expected: Option<(String, u64)>,
}

/// A member as written: its path, the sha256 (lowercase hex) and size of its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Path inside the archive.
    pub path: String,
    /// sha256 of the member's bytes, lowercase hex.
    pub sha256: String,
    /// Size of the member's bytes.
    pub size: u64,
}

/// A regular-file entry met by [`read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// Position of the entry in the archive, counting every entry from 0 (GNU long-name
    /// records are part of the entry they name).
    pub index: usize,
    /// The normalized path: relative, `/`-separated, no `.` or empty components.
    pub path: String,
    /// Permission bits from the header.
    pub mode: u32,
    /// Size of the entry's bytes.
    pub size: u64,
}

/// Everything that can go wrong writing or reading an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A compression name that is not one of ours.
    #[error("unknown compression `{value}`: use one of `none`, `gzip`, `zstd`")]
    UnknownCompression { value: String },

    /// A member whose path or mode cannot go into an archive as given.
    #[error("member `{path}`: {reason}; fix the member list given to the archive writer")]
    InvalidMember { path: String, reason: String },

    /// Two members at the same path, or a member at a path another member needs as a
    /// directory.
    #[error("member `{path}` is given twice{detail}; each path may appear once in an archive")]
    DuplicateMember { path: String, detail: String },

    /// A member's source file could not be opened or read.
    #[error("member `{member}`: cannot read `{}`: {source}; check that the file exists and is readable", file.display())]
    Source {
        member: String,
        file: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A member's source is not a regular file.
    #[error("member `{member}`: `{}` is not a regular file; only regular files can be archived", file.display())]
    NotAFile { member: String, file: PathBuf },

    /// A member's source file changed size while it was being archived.
    #[error("member `{member}`: `{}` changed while being archived ({detail}); rebuild once nothing else writes to it, and delete the partial archive", file.display())]
    Changed {
        member: String,
        file: PathBuf,
        detail: String,
    },

    /// A member's size differs from the size the caller expected.
    #[error("member `{member}`: expected {expected} bytes, found {actual}; the source is not the pinned artifact: fetch it again (`kiln store verify`), and delete the partial archive")]
    SizeMismatch {
        member: String,
        expected: u64,
        actual: u64,
    },

    /// A member's sha256 differs from the digest the caller expected.
    #[error("member `{member}`: expected sha256 {expected}, found {actual}; the source is not the pinned artifact: fetch it again (`kiln store verify`), and delete the partial archive")]
    DigestMismatch {
        member: String,
        expected: String,
        actual: String,
    },

    /// Writing the archive (or compressing it) failed.
    #[error("writing the archive failed at {at}: {source}; check free space on the output's disk, and delete the partial archive")]
    Write {
        /// What was being written: a member, or the end of the archive.
        at: String,
        #[source]
        source: io::Error,
    },

    /// Reading or decompressing the archive failed outside any entry.
    #[error("reading the archive failed{at}: {source}; the archive is truncated or corrupt: copy it again")]
    Read {
        /// Where: empty, or " after entry #N `path`".
        at: String,
        #[source]
        source: io::Error,
    },

    /// An entry that must not be unpacked.
    #[error("archive entry #{index} `{path}`: {reason}; refusing to unpack it: the archive was not made by kiln or was tampered with")]
    Refused {
        index: usize,
        path: String,
        reason: String,
    },

    /// Reading an entry's bytes failed, in `read` or in the visitor.
    #[error("archive entry #{index} `{path}`: {source}; the archive is truncated or corrupt: copy it again")]
    EntryData {
        index: usize,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Write `members` (in any order: they are sorted here by path, byte-wise) as a tar stream
/// to `out`, compressed as asked, and return every member written with its sha256 and
/// size, in archive order.
///
/// Every entry has uid/gid 0, empty owner names, the member's mode, and mtime `epoch`
/// (`SOURCE_DATE_EPOCH`); headers are GNU, with no atime/ctime and no pax records. Every
/// parent directory of a member gets its own entry (mode 0755), sorted with the members.
/// File sources are read once, in 1 MiB chunks hashed and written in the same pass.
///
/// On error the output is incomplete: the caller deletes it. A member whose `expected`
/// size differs from its source's size is refused before any of its bytes are written; a
/// digest mismatch is reported once the member is written.
pub fn write(
    out: impl Write,
    compression: Compression,
    epoch: u64,
    members: Vec<Member>,
) -> Result<Vec<Written>, ArchiveError> {
    let plan = plan(members)?;
    let mut out = Encoder::new(out, compression).map_err(|source| ArchiveError::Write {
        at: "the start".to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    let mut buffer = vec![0; CHUNK_SIZE];
    for (name, entry) in plan {
        match entry {
            Planned::Directory => {
                let header = header(EntryType::Directory, DIRECTORY_MODE, 0, epoch);
                write_header(&mut out, &name, header).map_err(|source| ArchiveError::Write {
                    at: format!("directory `{name}`"),
                    source,
                })?;
            }
            Planned::File(member) => {
                written.push(write_member(&mut out, member, epoch, &mut buffer)?);
            }
        }
    }
    let end_error = |source| ArchiveError::Write {
        at: "the end of the archive".to_owned(),
        source,
    };
    // Two zero blocks end a tar stream.
    out.write_all(&[0; 2 * BLOCK_SIZE]).map_err(end_error)?;
    out.finish().map_err(end_error)?;
    Ok(written)
}

/// An entry to write. The plan is keyed by the entry's name in the archive (directories
/// end in `/`, as GNU tar writes them), so its order is the archive's order and parents
/// come before their children.
enum Planned {
    Directory,
    File(Member),
}

fn plan(members: Vec<Member>) -> Result<BTreeMap<String, Planned>, ArchiveError> {
    let mut plan = BTreeMap::new();
    let mut directories = HashSet::new();
    for member in &members {
        check_member(member)?;
        let mut end = 0;
        while let Some(offset) = member.path[end..].find('/') {
            end += offset;
            directories.insert(member.path[..end].to_owned());
            end += 1;
        }
    }
    for member in members {
        if directories.contains(&member.path) {
            return Err(ArchiveError::DuplicateMember {
                detail: " (other members are inside it, as a directory)".to_owned(),
                path: member.path,
            });
        }
        let path = member.path.clone();
        if plan.insert(path.clone(), Planned::File(member)).is_some() {
            return Err(ArchiveError::DuplicateMember {
                path,
                detail: String::new(),
            });
        }
    }
    for directory in directories {
        plan.insert(format!("{directory}/"), Planned::Directory);
    }
    Ok(plan)
}

fn check_member(member: &Member) -> Result<(), ArchiveError> {
    let invalid = |reason: &str| ArchiveError::InvalidMember {
        path: member.path.clone(),
        reason: reason.to_owned(),
    };
    let path = &member.path;
    if path.is_empty() {
        return Err(invalid("the path is empty"));
    }
    if path.starts_with('/') {
        return Err(invalid(
            "the path is absolute; give it relative to the archive's root",
        ));
    }
    if path.contains('\0') {
        return Err(invalid("the path contains a NUL byte"));
    }
    if path.contains('\\') {
        return Err(invalid(
            "the path contains `\\`; separate components with `/`",
        ));
    }
    for component in path.split('/') {
        match component {
            "" => {
                return Err(invalid(
                    "the path has an empty component (`//` or a trailing `/`)",
                ))
            }
            "." => return Err(invalid("the path has a `.` component")),
            ".." => return Err(invalid("the path has a `..` component")),
            _ => {}
        }
    }
    if member.mode > 0o7777 {
        return Err(invalid(&format!(
            "mode {:o} has bits beyond the permission bits (0o7777); give only those",
            member.mode
        )));
    }
    Ok(())
}

/// A deterministic header: GNU format (`new_gnu` leaves atime, ctime and the device
/// numbers empty), owner 0:0 with empty names, the given mode and mtime. The name is set
/// by [`write_header`].
fn header(entry_type: EntryType, mode: u32, size: u64, mtime: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    // A fresh header's owner names are already empty; these only make that explicit, and
    // an empty name fits any header, so they cannot fail.
    let _ = header.set_username("");
    let _ = header.set_groupname("");
    header
}

/// Write `header` named `name`. The name is copied as is (the tar crate's `set_path`
/// would drop a directory's trailing `/`); one longer than the header's 100 bytes goes in
/// a GNU long-name record first, as GNU tar does, with a header as fixed as the others.
fn write_header(out: &mut impl Write, name: &str, mut header: Header) -> io::Result<()> {
    let bytes = name.as_bytes();
    let slot = &mut header.as_old_mut().name;
    if bytes.len() <= slot.len() {
        slot[..bytes.len()].copy_from_slice(bytes);
    } else {
        let mut long_name = self::header(EntryType::GNULongName, 0o644, bytes.len() as u64 + 1, 0);
        let marker = b"././@LongLink";
        long_name.as_old_mut().name[..marker.len()].copy_from_slice(marker);
        long_name.set_cksum();
        out.write_all(long_name.as_bytes())?;
        out.write_all(bytes)?;
        out.write_all(&[0])?;
        pad(out, bytes.len() as u64 + 1)?;
        // Readers take the name from the record; the header keeps what fits, like GNU tar.
        let slot = &mut header.as_old_mut().name;
        let length = slot.len();
        slot.copy_from_slice(&bytes[..length]);
    }
    header.set_cksum();
    out.write_all(header.as_bytes())
}

/// Fill the last block of an entry's data, `size` bytes long, with zeros.
fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    let partial = (size % BLOCK_SIZE as u64) as usize;
    if partial != 0 {
        out.write_all(&[0; BLOCK_SIZE][..BLOCK_SIZE - partial])?;
    }
    Ok(())
}

fn write_member(
    out: &mut impl Write,
    member: Member,
    epoch: u64,
    buffer: &mut [u8],
) -> Result<Written, ArchiveError> {
    let Member {
        path,
        mode,
        source,
        expected,
    } = member;
    let write_error = |source: io::Error| ArchiveError::Write {
        at: format!("member `{path}`"),
        source,
    };
    let (sha256, size) = match source {
        Source::Bytes(bytes) => {
            let size = bytes.len() as u64;
            check_expected_size(&path, expected.as_ref(), size)?;
            let header = header(EntryType::Regular, mode, size, epoch);
            write_header(out, &path, header).map_err(write_error)?;
            out.write_all(&bytes).map_err(write_error)?;
            pad(out, size).map_err(write_error)?;
            (hex(&Sha256::digest(&bytes)), size)
        }
        Source::File(file_path) => {
            let source_error = |source: io::Error| ArchiveError::Source {
                member: path.clone(),
                file: file_path.clone(),
                source,
            };
            let changed = |detail: String| ArchiveError::Changed {
                member: path.clone(),
                file: file_path.clone(),
                detail,
            };
            let mut file = fs_err::File::open(&file_path).map_err(source_error)?;
            // The size comes from the open handle, so it describes the file we read.
            let metadata = file.metadata().map_err(source_error)?;
            if !metadata.is_file() {
                return Err(ArchiveError::NotAFile {
                    member: path,
                    file: file_path,
                });
            }
            let size = metadata.len();
            check_expected_size(&path, expected.as_ref(), size)?;
            let header = header(EntryType::Regular, mode, size, epoch);
            write_header(out, &path, header).map_err(write_error)?;
            let mut hasher = Sha256::new();
            let mut remaining = size;
            while remaining > 0 {
                let want = buffer
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let chunk = &mut buffer[..want];
                let filled = read_full(&mut file, chunk).map_err(source_error)?;
                if filled == 0 {
                    // The header already promised `size` bytes: the archive cannot be
                    // finished honestly.
                    return Err(changed(format!(
                        "it had {size} bytes when opened, only {} could be read",
                        size - remaining
                    )));
                }
                let chunk = &chunk[..filled];
                hasher.update(chunk);
                out.write_all(chunk).map_err(write_error)?;
                remaining -= filled as u64;
            }
            // A file that grew meanwhile would be cut short silently: make sure it ended
            // where it was expected to.
            if read_full(&mut file, &mut [0; 1]).map_err(source_error)? != 0 {
                return Err(changed(format!(
                    "it had {size} bytes when opened, and grew while being read"
                )));
            }
            pad(out, size).map_err(write_error)?;
            (hex(&hasher.finalize()), size)
        }
    };
    if let Some((expected_sha256, _)) = &expected {
        if !expected_sha256.eq_ignore_ascii_case(&sha256) {
            return Err(ArchiveError::DigestMismatch {
                member: path,
                expected: expected_sha256.clone(),
                actual: sha256,
            });
        }
    }
    Ok(Written { path, sha256, size })
}

fn check_expected_size(
    path: &str,
    expected: Option<&(String, u64)>,
    actual: u64,
) -> Result<(), ArchiveError> {
    match expected {
        Some(&(_, expected)) if expected != actual => Err(ArchiveError::SizeMismatch {
            member: path.to_owned(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Read until `buffer` is full or the input ends; return how many bytes were read.
pub(crate) fn read_full(input: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// The compressor in front of the output.
enum Encoder<W: Write> {
    // Tar writes 512-byte headers; a buffer turns them and the padding into large writes.
    None(BufWriter<W>),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(out: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(BufWriter::with_capacity(CHUNK_SIZE, out)),
            // mtime 0 and no file name: the header depends on nothing but the bytes.
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(GZIP_OPERATING_SYSTEM)
                    .write(out, flate2::Compression::default()),
            ),
            Compression::Zstd => {
                // Single-threaded (the crate's default without the `zstdmt` feature), a
                // content checksum always (so `zstd -t` checks the bytes), no content
                // size since the stream's length is not known up front.
                let mut encoder = zstd::Encoder::new(out, ZSTD_LEVEL)?;
                encoder.include_checksum(true)?;
                encoder.include_contentsize(false)?;
                Encoder::Zstd(encoder)
            }
        })
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Encoder::None(mut out) => out.flush(),
            Encoder::Gzip(encoder) => encoder.finish()?.flush(),
            Encoder::Zstd(encoder) => encoder.finish()?.flush(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(out) => out.write(bytes),
            Encoder::Gzip(encoder) => encoder.write(bytes),
            Encoder::Zstd(encoder) => encoder.write(bytes),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Encoder::None(out) => out.write_all(bytes),
            Encoder::Gzip(encoder) => encoder.write_all(bytes),
            Encoder::Zstd(encoder) => encoder.write_all(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(out) => out.flush(),
            Encoder::Gzip(encoder) => encoder.flush(),
            Encoder::Zstd(encoder) => encoder.flush(),
        }
    }
}

/// Read an archive, plain or compressed (gzip or zstd, told apart by their magic bytes),
/// and call `visit` for each regular-file entry with its normalized path, mode, size and a
/// reader of its bytes.
///
/// Directory entries are checked but not visited. Refused, with an error naming the entry
/// and its index: absolute paths, `..` components, paths that are empty or escape the root
/// after normalization, symlinks, hard links, devices, FIFOs and any other entry type, and
/// a path met twice (after normalization, so `./a` and `a` are the same path), including a
/// file at a path that another entry uses as a directory. `visit` need not read all of an
/// entry's bytes.
pub fn read(
    input: impl Read,
    visit: &mut dyn FnMut(&EntryInfo, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let read_error = |at: String, source: io::Error| ArchiveError::Read { at, source };
    let mut input = input;
    let mut magic = [0u8; 4];
    let filled =
        read_full(&mut input, &mut magic).map_err(|error| read_error(String::new(), error))?;
    let input = io::Cursor::new(magic[..filled].to_vec()).chain(input);
    let decoder: Box<dyn Read> = if magic[..filled].starts_with(&GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else if magic[..filled] == ZSTD_MAGIC {
        Box::new(zstd::Decoder::new(input).map_err(|error| read_error(String::new(), error))?)
    } else {
        Box::new(input)
    };

    let mut archive = tar::Archive::new(decoder);
    let entries = archive
        .entries()
        .map_err(|error| read_error(String::new(), error))?;
    let mut seen = Seen::default();
    let mut last: Option<(usize, String)> = None;
    for (index, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|error| {
            let at = match &last {
                Some((index, path)) => format!(" after entry #{index} `{path}`"),
                None => " at the first entry".to_owned(),
            };
            read_error(at, error)
        })?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: &str| ArchiveError::Refused {
            index,
            path: raw_path.clone(),
            reason: reason.to_owned(),
        };
        let entry_type = entry.header().entry_type();
        let is_directory = match entry_type {
            EntryType::Regular | EntryType::Continuous => false,
            EntryType::Directory => true,
            EntryType::Symlink => return Err(refuse("it is a symbolic link")),
            EntryType::Link => return Err(refuse("it is a hard link")),
            EntryType::Char | EntryType::Block => return Err(refuse("it is a device")),
            EntryType::Fifo => return Err(refuse("it is a FIFO")),
            other => {
                return Err(refuse(&format!(
                    "its type `{}` is not a regular file or directory",
                    char::from(other.as_byte()).escape_default()
                )))
            }
        };
        if std::str::from_utf8(&entry.path_bytes()).is_err() {
            return Err(refuse("its path is not UTF-8"));
        }
        let path = normalize(&raw_path).map_err(&refuse)?;
        if path.is_empty() {
            if is_directory {
                // `./`, the root itself, as `tar -C dir .` writes it.
                last = Some((index, raw_path));
                continue;
            }
            return Err(refuse("its path is empty after normalization"));
        }
        seen.insert(&path, is_directory)
            .map_err(|reason| refuse(&reason))?;
        let mode = entry
            .header()
            .mode()
            .map_err(|error| refuse(&format!("its mode is unreadable ({error})")))?;
        let size = entry.size();
        if !is_directory {
            let info = EntryInfo {
                index,
                path: path.clone(),
                mode,
                size,
            };
            visit(&info, &mut entry)?;
        }
        last = Some((index, path));
    }
    Ok(())
}

/// Normalize an entry path: drop empty and `.` components; refuse absolute paths, `..`
/// and anything else that could name a place outside the root once unpacked.
fn normalize(path: &str) -> Result<String, &'static str> {
    if path.starts_with('/') {
        return Err("its path is absolute");
    }
    if path.contains('\\') {
        // Not a separator here, but one on Windows, where `..\x` escapes.
        return Err("its path contains `\\`");
    }
    if path.contains('\0') {
        return Err("its path contains a NUL byte");
    }
    let mut components = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("its path has a `..` component"),
            component => components.push(component),
        }
    }
    Ok(components.join("/"))
}

/// Paths met so far, to refuse duplicates and files that others use as directories.
#[derive(Default)]
struct Seen {
    files: HashSet<String>,
    /// Directories named by an entry of their own.
    directory_entries: HashSet<String>,
    /// Every directory so far: named by an entry, or a parent of an entry's path.
    directories: HashSet<String>,
}

impl Seen {
    fn insert(&mut self, path: &str, is_directory: bool) -> Result<(), String> {
        let mut end = 0;
        while let Some(offset) = path[end..].find('/') {
            end += offset;
            let parent = &path[..end];
            if self.files.contains(parent) {
                return Err(format!(
                    "its parent `{parent}` is an earlier file entry, not a directory"
                ));
            }
            self.directories.insert(parent.to_owned());
            end += 1;
        }
        if self.files.contains(path) {
            return Err("its path duplicates an earlier entry".to_owned());
        }
        if is_directory {
            if !self.directory_entries.insert(path.to_owned()) {
                return Err("its path duplicates an earlier entry".to_owned());
            }
            self.directories.insert(path.to_owned());
        } else {
            if self.directories.contains(path) {
                return Err("its path is a directory of earlier entries".to_owned());
            }
            self.files.insert(path.to_owned());
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_dot_and_empty_components_and_refuses_parent() {
        assert_eq!(normalize("./a//b/./c").unwrap(), "a/b/c");
        assert_eq!(normalize("./").unwrap(), "");
        assert!(normalize("a/../b").is_err());
        assert!(normalize("/a").is_err());
        assert!(normalize("..\\a").is_err());
    }

    #[test]
    fn compression_names_round_trip() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(
                compression.to_string().parse::<Compression>().unwrap(),
                compression
            );
        }
        assert!("xz".parse::<Compression>().is_err());
        assert_eq!(Compression::Zstd.extension(), "tar.zst");
    }
}
