//! `kiln::build::archive`: archives are byte-identical whatever the order of the members and
//! the metadata of their files on disk, GNU tar and the compressors' own tools accept them,
//! large members stream in bounded memory, and `read` refuses entries that could escape.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use kiln::build::archive::{self, ArchiveError, Compression, EntryInfo, Member, Source, Written};
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

/// 2023-11-14 22:13:20 UTC.
const EPOCH: u64 = 1_700_000_000;
const EPOCH_UTC: &str = "2023-11-14 22:13:20";

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn pseudo_random(length: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn long_path() -> String {
    format!("rendered/nodes/{}/{}.yaml", "n".repeat(60), "c".repeat(60))
}

/// The fixture: path, mode, bytes, and whether the member comes from a file (else bytes).
fn fixture() -> Vec<(String, u32, Vec<u8>, bool)> {
    vec![
        (
            "bin/install.sh".into(),
            0o755,
            b"#!/bin/sh\necho installing\n".to_vec(),
            true,
        ),
        (
            "manifest.json".into(),
            0o644,
            b"{\"members\":[]}\n".to_vec(),
            false,
        ),
        (
            "images/app.tar".into(),
            0o644,
            pseudo_random(70_001, 1),
            true,
        ),
        (
            "charts/gpu/operator-v1.tgz".into(),
            0o600,
            pseudo_random(512, 2),
            true,
        ),
        ("empty".into(), 0o644, Vec::new(), true),
        (long_path(), 0o640, b"hostname: n1\n".to_vec(), true),
        (
            "a-b.txt".into(),
            0o444,
            b"sorts before a/\n".to_vec(),
            false,
        ),
        (
            "a/x.txt".into(),
            0o4755,
            b"setuid kept as given\n".to_vec(),
            true,
        ),
    ]
}

/// Directories the fixture's paths need, as GNU tar names them.
fn fixture_directories() -> Vec<String> {
    let mut directories = std::collections::BTreeSet::new();
    for (path, ..) in fixture() {
        let mut parts: Vec<&str> = path.split('/').collect();
        parts.pop();
        for end in 1..=parts.len() {
            directories.insert(format!("{}/", parts[..end].join("/")));
        }
    }
    directories.into_iter().collect()
}

/// How the files of one copy of the fixture look on disk.
struct DiskVariant {
    mode: u32,
    mtime: SystemTime,
    owner: Option<u32>,
    reversed: bool,
}

/// Write the fixture's file members under `root` the way `variant` says, and return the
/// members in the variant's order.
fn members_on_disk(root: &Path, variant: &DiskVariant) -> Vec<Member> {
    let mut fixture = fixture();
    if variant.reversed {
        fixture.reverse();
    }
    let mut members = Vec::new();
    for (index, (path, mode, bytes, from_file)) in fixture.into_iter().enumerate() {
        let source = if from_file {
            // Flat names on disk: the member's path must come from the member, not the file.
            let file = root.join(format!("source-{index}"));
            fs_err::write(&file, &bytes).unwrap();
            fs_err::set_permissions(&file, std::fs::Permissions::from_mode(variant.mode)).unwrap();
            let handle = fs_err::File::options().write(true).open(&file).unwrap();
            handle.file().set_modified(variant.mtime).unwrap();
            drop(handle);
            if let Some(owner) = variant.owner {
                std::os::unix::fs::chown(&file, Some(owner), Some(owner)).unwrap();
            }
            Source::File(file)
        } else {
            Source::Bytes(bytes)
        };
        members.push(Member {
            path,
            mode,
            source,
            expected: None,
        });
    }
    members
}

fn build(compression: Compression, members: Vec<Member>) -> (Vec<u8>, Vec<Written>) {
    let mut out = Vec::new();
    let written = archive::write(&mut out, compression, EPOCH, members).unwrap();
    (out, written)
}

fn is_root() -> bool {
    fs_err::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .is_some_and(|uids| uids.split_whitespace().next() == Some("0"))
}

/// The two copies: different temp dirs, orders, modes, mtimes, and (as root) owners.
fn two_builds(compression: Compression) -> [(Vec<u8>, Vec<Written>); 2] {
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let first = members_on_disk(
        first_dir.path(),
        &DiskVariant {
            mode: 0o600,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
            owner: None,
            reversed: false,
        },
    );
    let second = members_on_disk(
        second_dir.path(),
        &DiskVariant {
            mode: 0o777,
            mtime: SystemTime::now(),
            owner: is_root().then_some(4242),
            reversed: true,
        },
    );
    [build(compression, first), build(compression, second)]
}

fn write_temp(bytes: &[u8], compression: Compression) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join(format!("bundle.{}", compression.extension()));
    fs_err::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn same_members_in_any_order_with_any_disk_metadata_give_identical_bytes() {
    for compression in ALL {
        let [(first, first_written), (second, second_written)] = two_builds(compression);
        assert!(
            first == second,
            "{compression}: archives differ ({} and {} bytes)",
            first.len(),
            second.len()
        );
        assert_eq!(first_written, second_written, "{compression}");
    }
}

#[test]
fn written_lists_every_member_in_archive_order_with_its_digest_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let members = members_on_disk(
        dir.path(),
        &DiskVariant {
            mode: 0o644,
            mtime: SystemTime::now(),
            owner: None,
            reversed: true,
        },
    );
    let (_, written) = build(Compression::None, members);
    let mut expected: Vec<Written> = fixture()
        .into_iter()
        .map(|(path, _, bytes, _)| Written {
            path,
            sha256: sha256(&bytes),
            size: bytes.len() as u64,
        })
        .collect();
    expected.sort_by(|left, right| left.path.cmp(&right.path));
    assert_eq!(written, expected);
}

fn mode_string(mode: u32, directory: bool) -> String {
    let mut out = String::from(if directory { "d" } else { "-" });
    for (shift, special, special_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => special_char,
            (false, true) => special_char.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    out
}

#[test]
fn gnu_tar_lists_numeric_owners_the_fixed_mtime_and_the_given_modes() {
    let mut expected: Vec<(String, String)> = fixture()
        .into_iter()
        .map(|(path, mode, bytes, _)| {
            let line = format!(
                "{} 0/0 {} {EPOCH_UTC} {path}",
                mode_string(mode, false),
                bytes.len()
            );
            (path, line)
        })
        .chain(fixture_directories().into_iter().map(|path| {
            let line = format!("{} 0/0 0 {EPOCH_UTC} {path}", mode_string(0o755, true));
            (path, line)
        }))
        .collect();
    // Archive order is byte-wise path order, directories named with their trailing `/`.
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, line)| line).collect();

    for compression in ALL {
        let [(bytes, _), _] = two_builds(compression);
        let (_dir, path) = write_temp(&bytes, compression);
        let output = Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvf"])
            .arg(&path)
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            .output()
            .expect("run GNU tar (Debian package `tar`)");
        assert!(
            output.status.success(),
            "{compression}: tar -tvf failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listed: Vec<String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(listed, expected, "{compression}");
    }
}

#[test]
fn gzip_header_has_mtime_zero_no_file_name_and_a_fixed_os_byte() {
    let [(bytes, _), _] = two_builds(Compression::Gzip);
    assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8], "gzip magic and deflate");
    assert_eq!(
        bytes[3] & 0x08,
        0,
        "FNAME flag set: the header names a file"
    );
    assert_eq!(bytes[3], 0, "no optional gzip header fields");
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "gzip mtime is not zero");
    assert_eq!(bytes[9], 255, "gzip OS byte");
}

#[test]
fn headers_have_no_owner_names_atime_ctime_or_pax_records() {
    let [(bytes, _), _] = two_builds(Compression::None);
    let mut reader = tar::Archive::new(bytes.as_slice());
    let mut entries = reader.entries().unwrap().raw(true);
    let mut types = Vec::new();
    for entry in &mut entries {
        let entry = entry.unwrap();
        let header = entry.header();
        types.push(header.entry_type());
        let gnu = header.as_gnu().expect("a GNU header");
        assert_eq!(gnu.atime, [0; 12], "atime is set");
        assert_eq!(gnu.ctime, [0; 12], "ctime is set");
        assert_eq!(header.username_bytes(), Some(&b""[..]));
        assert_eq!(header.groupname_bytes(), Some(&b""[..]));
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        if header.entry_type() != EntryType::GNULongName {
            assert_eq!(header.mtime().unwrap(), EPOCH);
        }
    }
    assert!(
        types.iter().all(|kind| matches!(
            kind,
            EntryType::Regular | EntryType::Directory | EntryType::GNULongName
        )),
        "unexpected entry types: {types:?}"
    );
    assert!(
        types.contains(&EntryType::GNULongName),
        "the long path needs a long-name record"
    );
}

#[test]
fn gnu_tar_extracts_the_same_bytes() {
    for compression in ALL {
        let [(bytes, _), _] = two_builds(compression);
        let (dir, path) = write_temp(&bytes, compression);
        let target = dir.path().join("unpacked");
        fs_err::create_dir(&target).unwrap();
        let output = Command::new("tar")
            .arg("-xf")
            .arg(&path)
            .arg("-C")
            .arg(&target)
            .output()
            .expect("run GNU tar (Debian package `tar`)");
        assert!(
            output.status.success(),
            "{compression}: tar -xf failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        for (member, _, expected, _) in fixture() {
            let unpacked = fs_err::read(target.join(&member)).unwrap();
            assert!(
                unpacked == expected,
                "{compression}: `{member}` differs after tar -xf"
            );
        }
    }
}

/// The path of `tool` on PATH; a missing tool fails the test, naming the package.
fn require_tool(tool: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|directory| directory.join(tool))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!("`{tool}` is not installed: install the Debian package `{package}`")
        })
}

#[test]
fn gzip_and_zstd_integrity_checks_pass() {
    for (compression, tool, package) in [
        (Compression::Gzip, "gzip", "gzip"),
        (Compression::Zstd, "zstd", "zstd"),
    ] {
        let tool = require_tool(tool, package);
        let [(bytes, _), _] = two_builds(compression);
        let (_dir, path) = write_temp(&bytes, compression);
        let output = Command::new(&tool).arg("-t").arg(&path).output().unwrap();
        assert!(
            output.status.success(),
            "{} -t failed on the {compression} archive: {}",
            tool.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn peak_resident_kib() -> u64 {
    fs_err::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// A sink that only counts, so the output itself takes no memory.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const LARGE_CHILD: &str = "KILN_ARCHIVE_LARGE_FILE_CHILD";

/// Runs itself again in a child process, alone, so that other tests running in parallel
/// threads do not count towards the peak memory it measures.
#[test]
fn a_300_mib_member_streams_in_bounded_memory() {
    if std::env::var_os(LARGE_CHILD).is_none() {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_300_mib_member_streams_in_bounded_memory",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(LARGE_CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The child must really have run the test, not filtered it out.
        assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
        return;
    }

    const SIZE: u64 = 300 << 20;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    {
        let mut file = fs_err::File::create(&big).unwrap();
        file.set_len(SIZE).unwrap();
        for (offset, bytes) in [
            (0, &b"head"[..]),
            (SIZE / 3, b"middle"),
            (SIZE - 4, b"tail"),
        ] {
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(bytes).unwrap();
        }
    }
    let expected_sha256 = {
        let mut hasher = Sha256::new();
        let mut file = fs_err::File::open(&big).unwrap();
        let mut buffer = vec![0; 1 << 16];
        loop {
            let count = file.read(&mut buffer).unwrap();
            if count == 0 {
                break;
            }
            hasher.update(&buffer[..count]);
        }
        format!("{:x}", hasher.finalize())
    };

    for compression in [Compression::None, Compression::Zstd] {
        let before = peak_resident_kib();
        let mut sink = Counter(0);
        let written = archive::write(
            &mut sink,
            compression,
            EPOCH,
            vec![Member {
                path: "images/big.bin".into(),
                mode: 0o644,
                source: Source::File(big.clone()),
                expected: Some((expected_sha256.clone(), SIZE)),
            }],
        )
        .unwrap();
        let growth = peak_resident_kib().saturating_sub(before);
        println!(
            "{compression}: peak grew by {growth} KiB, wrote {} bytes",
            sink.0
        );
        assert!(
            growth < 64 << 10,
            "{compression}: peak memory grew by {growth} KiB"
        );
        assert_eq!(written[0].sha256, expected_sha256);
        assert_eq!(written[0].size, SIZE);
        if compression == Compression::None {
            // Directory, header, data padded to blocks, two end blocks.
            assert_eq!(sink.0, 512 + 512 + SIZE + 1024);
        }
    }

    // And back: `read` streams the entry too.
    let packed = dir.path().join("big.tar.zst");
    archive::write(
        fs_err::File::create(&packed).unwrap(),
        Compression::Zstd,
        EPOCH,
        vec![Member {
            path: "big.bin".into(),
            mode: 0o644,
            source: Source::File(big),
            expected: None,
        }],
    )
    .unwrap();
    let before = peak_resident_kib();
    let mut seen = Vec::new();
    archive::read(fs_err::File::open(&packed).unwrap(), &mut |info, reader| {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 1 << 16];
        loop {
            let count = reader.read(&mut buffer).unwrap();
            if count == 0 {
                break;
            }
            hasher.update(&buffer[..count]);
        }
        seen.push((
            info.path.clone(),
            info.size,
            format!("{:x}", hasher.finalize()),
        ));
        Ok(())
    })
    .unwrap();
    let growth = peak_resident_kib().saturating_sub(before);
    assert!(growth < 64 << 10, "read: peak memory grew by {growth} KiB");
    assert_eq!(seen, vec![("big.bin".to_owned(), SIZE, expected_sha256)]);
}

fn one_member(
    expected: Option<(String, u64)>,
    source: Source,
) -> Result<Vec<Written>, ArchiveError> {
    archive::write(
        io::sink(),
        Compression::None,
        EPOCH,
        vec![Member {
            path: "images/app.tar".into(),
            mode: 0o644,
            source,
            expected,
        }],
    )
}

#[test]
fn an_expected_digest_or_size_mismatch_is_an_error_naming_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.tar");
    fs_err::write(&file, b"the real bytes").unwrap();
    let actual = sha256(b"the real bytes");
    let wrong = sha256(b"other bytes");

    for source in [
        Source::File(file.clone()),
        Source::Bytes(b"the real bytes".to_vec()),
    ] {
        let error = one_member(Some((wrong.clone(), 14)), source.clone()).unwrap_err();
        match &error {
            ArchiveError::DigestMismatch {
                member,
                expected,
                actual: found,
            } => {
                assert_eq!(member, "images/app.tar");
                assert_eq!(expected, &wrong);
                assert_eq!(found, &actual);
            }
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
        assert!(error.to_string().contains("`images/app.tar`"), "{error}");

        let error = one_member(Some((actual.clone(), 15)), source.clone()).unwrap_err();
        assert!(
            matches!(&error, ArchiveError::SizeMismatch { member, expected: 15, actual: 14 } if member == "images/app.tar"),
            "{error:?}"
        );

        // The right pin goes through.
        one_member(Some((actual.clone(), 14)), source).unwrap();
    }
}

#[test]
fn a_missing_source_file_is_an_error_naming_member_and_file() {
    let error = one_member(None, Source::File("/nonexistent/kiln/app.tar".into())).unwrap_err();
    assert!(matches!(error, ArchiveError::Source { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("images/app.tar") && message.contains("/nonexistent/kiln/app.tar"),
        "{message}"
    );
}

#[test]
fn write_refuses_unsafe_paths_bad_modes_and_duplicates() {
    let member = |path: &str, mode: u32| Member {
        path: path.into(),
        mode,
        source: Source::Bytes(b"x".to_vec()),
        expected: None,
    };
    for path in [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "a//b",
        "a/",
        "./a",
        "",
        "a\\..\\b",
    ] {
        let error = archive::write(
            io::sink(),
            Compression::None,
            EPOCH,
            vec![member(path, 0o644)],
        )
        .unwrap_err();
        assert!(
            matches!(&error, ArchiveError::InvalidMember { path: named, .. } if named == path),
            "`{path}`: {error:?}"
        );
    }
    let error = archive::write(
        io::sink(),
        Compression::None,
        EPOCH,
        vec![member("a", 0o100644)],
    )
    .unwrap_err();
    assert!(
        matches!(error, ArchiveError::InvalidMember { .. }),
        "{error:?}"
    );

    let error = archive::write(
        io::sink(),
        Compression::None,
        EPOCH,
        vec![member("a", 0o644), member("b", 0o644), member("a", 0o600)],
    )
    .unwrap_err();
    assert!(
        matches!(&error, ArchiveError::DuplicateMember { path, .. } if path == "a"),
        "{error:?}"
    );

    let error = archive::write(
        io::sink(),
        Compression::None,
        EPOCH,
        vec![member("a", 0o644), member("a/b", 0o644)],
    )
    .unwrap_err();
    assert!(
        matches!(&error, ArchiveError::DuplicateMember { path, .. } if path == "a"),
        "{error:?}"
    );
}

#[test]
fn read_returns_paths_modes_sizes_and_bytes() {
    for compression in ALL {
        let [(bytes, _), _] = two_builds(compression);
        let mut seen = BTreeMap::new();
        let mut indexes = Vec::new();
        archive::read(bytes.as_slice(), &mut |info: &EntryInfo, reader| {
            let mut content = Vec::new();
            reader.read_to_end(&mut content).unwrap();
            assert_eq!(content.len() as u64, info.size, "{}", info.path);
            indexes.push(info.index);
            assert!(seen
                .insert(info.path.clone(), (info.mode, content))
                .is_none());
            Ok(())
        })
        .unwrap();
        let expected: BTreeMap<String, (u32, Vec<u8>)> = fixture()
            .into_iter()
            .map(|(path, mode, bytes, _)| (path, (mode, bytes)))
            .collect();
        assert!(seen == expected, "{compression}: read gave other members");
        // Directories count as entries but are not visited.
        assert!(
            indexes.windows(2).all(|pair| pair[0] < pair[1]),
            "{indexes:?}"
        );
        assert!(
            *indexes.last().unwrap() >= indexes.len(),
            "directory entries must count in the index: {indexes:?}"
        );
    }
}

#[test]
fn read_accepts_an_archive_made_by_gnu_tar() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("tree");
    fs_err::create_dir_all(source.join("etc/kiln")).unwrap();
    fs_err::write(source.join("etc/kiln/node.toml"), b"name = \"n1\"\n").unwrap();
    let packed = dir.path().join("tree.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&packed)
        .arg("-C")
        .arg(&source)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let mut seen = Vec::new();
    archive::read(fs_err::File::open(&packed).unwrap(), &mut |info, reader| {
        let mut content = String::new();
        reader.read_to_string(&mut content).unwrap();
        seen.push((info.path.clone(), content));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![(
            "etc/kiln/node.toml".to_owned(),
            "name = \"n1\"\n".to_owned()
        )]
    );
}

/// One raw entry of a hand-made archive: the name goes into the header as is, which the
/// tar crate's `set_path` would refuse for the malicious ones.
struct Raw<'a> {
    name: &'a [u8],
    kind: EntryType,
    data: &'a [u8],
    link: &'a [u8],
}

fn file(name: &[u8]) -> Raw<'_> {
    Raw {
        name,
        kind: EntryType::Regular,
        data: b"payload",
        link: b"",
    }
}

fn hand_made(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..entry.name.len()].copy_from_slice(entry.name);
        header.as_old_mut().linkname[..entry.link.len()].copy_from_slice(entry.link);
        header.set_entry_type(entry.kind);
        header.set_mode(0o644);
        header.set_size(entry.data.len() as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(entry.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn refused(archive_bytes: &[u8]) -> (usize, String, String, Vec<String>) {
    let mut visited = Vec::new();
    let error = archive::read(archive_bytes, &mut |info, _| {
        visited.push(info.path.clone());
        Ok(())
    })
    .expect_err("the archive must be refused");
    let message = error.to_string();
    match error {
        ArchiveError::Refused { index, path, .. } => (index, path, message, visited),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn read_refuses_entries_that_escape_or_are_not_plain_files_naming_them() {
    let cases: Vec<(&str, Vec<Raw<'_>>, usize, &str)> = vec![
        ("parent", vec![file(b"ok"), file(b"../x")], 1, "../x"),
        ("nested parent", vec![file(b"a/../../x")], 0, "a/../../x"),
        (
            "parent that stays inside",
            vec![file(b"a/../b")],
            0,
            "a/../b",
        ),
        (
            "absolute",
            vec![file(b"ok"), file(b"/etc/passwd")],
            1,
            "/etc/passwd",
        ),
        (
            "symlink",
            vec![
                file(b"ok"),
                Raw {
                    name: b"link",
                    kind: EntryType::Symlink,
                    data: b"",
                    link: b"/etc",
                },
            ],
            1,
            "link",
        ),
        (
            "hard link",
            vec![Raw {
                name: b"hard",
                kind: EntryType::Link,
                data: b"",
                link: b"/etc/shadow",
            }],
            0,
            "hard",
        ),
        (
            "device",
            vec![Raw {
                name: b"dev/sda",
                kind: EntryType::Block,
                data: b"",
                link: b"",
            }],
            0,
            "dev/sda",
        ),
        (
            "duplicate",
            vec![file(b"a"), file(b"b"), file(b"a")],
            2,
            "a",
        ),
        (
            "duplicate after normalization",
            vec![file(b"./a"), file(b"a")],
            1,
            "a",
        ),
        (
            "file used as a directory",
            vec![file(b"a"), file(b"a/b")],
            1,
            "a/b",
        ),
        ("backslash", vec![file(b"..\\x")], 0, "..\\x"),
    ];
    for (case, entries, expected_index, expected_path) in cases {
        let (index, path, message, visited) = refused(&hand_made(&entries));
        assert_eq!(
            (index, path.as_str()),
            (expected_index, expected_path),
            "{case}"
        );
        assert!(
            message.contains(&format!("entry #{expected_index} `{expected_path}`")),
            "{case}: {message}"
        );
        // Nothing at or after the refused entry was handed out.
        assert_eq!(visited.len(), expected_index, "{case}: {visited:?}");
    }
}

#[test]
fn read_refuses_a_malicious_entry_inside_compressed_archives_too() {
    let raw = hand_made(&[file(b"ok"), file(b"../../etc/cron.d/x")]);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&raw).unwrap();
    let gzip = gzip.finish().unwrap();
    let zstd = zstd::encode_all(raw.as_slice(), 1).unwrap();
    for bytes in [gzip, zstd] {
        let (index, path, _, _) = refused(&bytes);
        assert_eq!((index, path.as_str()), (1, "../../etc/cron.d/x"));
    }
}

#[test]
fn read_reports_a_truncated_archive() {
    let [(bytes, _), _] = two_builds(Compression::Zstd);
    let truncated = &bytes[..bytes.len() / 2];
    let error = archive::read(truncated, &mut |_, reader| {
        io::copy(reader, &mut io::sink())
            .map(drop)
            .map_err(|source| ArchiveError::EntryData {
                index: 0,
                path: String::new(),
                source,
            })
    })
    .unwrap_err();
    assert!(
        matches!(
            error,
            ArchiveError::Read { .. } | ArchiveError::EntryData { .. }
        ),
        "{error:?}"
    );
}

#[test]
fn compression_names_and_extensions() {
    for (name, compression, extension) in [
        ("none", Compression::None, "tar"),
        ("gzip", Compression::Gzip, "tar.gz"),
        ("zstd", Compression::Zstd, "tar.zst"),
    ] {
        assert_eq!(name.parse::<Compression>().unwrap(), compression);
        assert_eq!(compression.to_string(), name);
        assert_eq!(compression.extension(), extension);
    }
    let error = "xz".parse::<Compression>().unwrap_err();
    assert!(error.to_string().contains("`xz`"), "{error}");
}
