//! Verifiable output trees: a directory of regular files with a manifest at its root,
//! `kiln-tree.json`, that lists every file with its sha256 and size.
//!
//! A tree is what kiln hands to machines through a server (a PXE tree: kernel, initrd,
//! iPXE scripts, NoCloud files, disk images), so whoever serves it can first check that
//! it is exactly what kiln wrote, and refuse it otherwise. This module owns the manifest's
//! format and both ends: [`write_manifest`] after a build, [`verify_tree`] before use.
//!
//! The manifest is canonical, so identical trees give byte-identical manifests: files
//! sorted by path (byte order), paths relative with `/` and no `.` or `..` components,
//! regular files only (directories are implied by the paths), pretty-printed JSON with a
//! trailing newline.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::Digest;

/// The manifest's file name, at the root of the tree.
pub const MANIFEST_FILE: &str = "kiln-tree.json";
/// Where [`write_manifest`] writes the manifest before renaming it into place.
const PARTIAL_FILE: &str = ".kiln-tree.json.partial";
/// The manifest format this kiln writes and reads.
const VERSION: u32 = 1;
/// What a failed check tells the user to do.
const REBUILD: &str = "rebuild it with `kiln build pxe`";

/// A tree's manifest: every regular file below the root except the manifest itself.
/// Its files are always sorted by path, and every path is relative and free of `.` and
/// `..`: [`write_manifest`] makes it so, and deserializing refuses anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedManifest")]
pub struct Manifest {
    version: u32,
    files: Vec<TreeFile>,
}

/// A manifest as read, before its checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UncheckedManifest {
    version: u32,
    files: Vec<TreeFile>,
}

/// One file of a tree, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeFile {
    /// Relative to the root, `/`-separated (`ipxe/52-54-00-6b-00-01.ipxe`).
    pub path: String,
    /// The sha256 of the contents; in the manifest, the 64 hex digits alone.
    #[serde(with = "hex_digest")]
    pub sha256: Digest,
    /// Size in bytes.
    pub size: u64,
}

impl Manifest {
    /// Every file, sorted by path.
    pub fn files(&self) -> &[TreeFile] {
        &self.files
    }

    /// The file listed at `path` (relative, `/`-separated, as in the manifest), if any.
    pub fn file(&self, path: &str) -> Option<&TreeFile> {
        self.files
            .binary_search_by(|file| file.path.as_str().cmp(path))
            .ok()
            .map(|index| &self.files[index])
    }

    /// The manifest's canonical text: what [`write_manifest`] writes.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest serializes");
        text.push('\n');
        text
    }
}

impl TryFrom<UncheckedManifest> for Manifest {
    type Error = String;

    /// Check that a manifest is canonical: the version this kiln reads, and valid paths in
    /// strictly increasing order. The error is the reason alone.
    fn try_from(manifest: UncheckedManifest) -> Result<Manifest, String> {
        if manifest.version != VERSION {
            return Err(format!(
                "version {} is not one this kiln reads (it reads version {VERSION})",
                manifest.version
            ));
        }
        for file in &manifest.files {
            check_path(&file.path)
                .map_err(|reason| format!("the listed path `{}` {reason}", file.path))?;
        }
        if let Some(pair) = manifest
            .files
            .windows(2)
            .find(|pair| pair[0].path >= pair[1].path)
        {
            return Err(format!(
                "files are not sorted by path, or a path repeats: `{}` comes after `{}`",
                pair[1].path, pair[0].path
            ));
        }
        Ok(Manifest {
            version: manifest.version,
            files: manifest.files,
        })
    }
}

/// Why a listed path is not one a manifest may hold; the reason completes "the path ...".
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.starts_with('/') {
        return Err("is absolute");
    }
    if path.contains('\0') {
        return Err("holds a NUL byte");
    }
    if path == MANIFEST_FILE {
        return Err("is the manifest itself");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("has an empty component (`//` or a trailing `/`)"),
            "." | ".." => return Err("has a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// The manifest holds the hex digits alone, the way `sha256sum` prints them.
mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::store::Digest;

    pub fn serialize<S: Serializer>(digest: &Digest, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(digest.hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::from_hex(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a sha256 (64 lower-case hex digits)"
            ))
        })
    }
}

/// What is wrong with one path of a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Listed, but nothing is there.
    #[error("listed in kiln-tree.json but missing")]
    Missing,
    /// Listed, but not a regular file.
    #[error("listed in kiln-tree.json but a {kind}, not a regular file")]
    NotRegular {
        /// What is there instead (`directory`, `symbolic link`, ...).
        kind: &'static str,
    },
    /// Listed with another size.
    #[error("size {found} bytes, expected {expected} (kiln-tree.json)")]
    Size {
        /// The size on disk.
        found: u64,
        /// The size the manifest lists.
        expected: u64,
    },
    /// Listed with another sha256.
    #[error("sha256 differs from kiln-tree.json")]
    Sha256,
    /// There, but not listed.
    #[error("an unlisted {kind}: kiln-tree.json does not name it")]
    Unlisted {
        /// What it is (`file`, `symbolic link`, ...).
        kind: &'static str,
    },
}

/// Why a tree's manifest could not be written, or the tree does not match it.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The tree differs from its manifest; `path` is the first difference.
    #[error("{path}: {problem}; {REBUILD}")]
    Mismatch {
        /// Relative to the root.
        path: String,
        /// What is wrong.
        problem: Problem,
    },
    /// A tree holds directories and regular files only.
    #[error("{}: a {kind}; a tree holds directories and regular files only", path.display())]
    NotRegular {
        /// The offending path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The manifest lists paths as UTF-8.
    #[error("{}: the name is not UTF-8, so kiln-tree.json cannot list it", path.display())]
    NotUtf8 {
        /// The offending path.
        path: PathBuf,
    },
    /// The root is not a directory.
    #[error("{} is not a directory; {REBUILD}", root.display())]
    NoRoot {
        /// The root.
        root: PathBuf,
    },
    /// The root holds no manifest.
    #[error("{} does not exist, so nothing says what the tree should hold; {REBUILD}", manifest.display())]
    NoManifest {
        /// The manifest's path.
        manifest: PathBuf,
    },
    /// The manifest is not one this kiln wrote.
    #[error("{}: {reason}; {REBUILD}", manifest.display())]
    BadManifest {
        /// The manifest's path.
        manifest: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file (the message names it).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Hash every regular file below `root` and write the manifest, `root/kiln-tree.json`,
/// atomically (to `.kiln-tree.json.partial`, fsynced, then renamed). Refuses symbolic
/// links and special files. An existing manifest is replaced, never listed.
pub fn write_manifest(root: &Path) -> Result<Manifest, TreeError> {
    let mut files = Vec::new();
    for (path, entry) in walk(root, &[MANIFEST_FILE, PARTIAL_FILE])? {
        match entry {
            Entry::Directory => continue,
            Entry::Other(kind) => {
                return Err(TreeError::NotRegular {
                    path: root.join(path),
                    kind,
                })
            }
            Entry::File { .. } => {}
        }
        let (sha256, size) = Digest::of_reader(fs_err::File::open(root.join(&path))?)?;
        files.push(TreeFile { path, sha256, size });
    }
    let manifest = Manifest {
        version: VERSION,
        files,
    };
    let partial = root.join(PARTIAL_FILE);
    let mut file = fs_err::File::create(&partial)?;
    file.write_all(manifest.to_json().as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs_err::rename(&partial, root.join(MANIFEST_FILE))?;
    fs_err::File::open(root)?.sync_all()?;
    Ok(manifest)
}

/// Check the tree below `root` against its manifest: every listed file is there, a
/// regular file of the listed size and sha256, and nothing else is (but the manifest and
/// directories). Cheap checks (presence, kind, size) run over the whole tree before any
/// file is hashed, so a missing file is named at once, not after gigabytes of hashing;
/// within each pass the first problem by path is the error.
pub fn verify_tree(root: &Path) -> Result<Manifest, TreeError> {
    if !root.is_dir() {
        return Err(TreeError::NoRoot {
            root: root.to_path_buf(),
        });
    }
    let manifest = read_manifest(root)?;
    let found = walk(root, &[MANIFEST_FILE])?;
    let mismatch = |path: &str, problem| TreeError::Mismatch {
        path: path.to_string(),
        problem,
    };
    let (mut listed, mut found) = (manifest.files.iter().peekable(), found.iter().peekable());
    loop {
        match (listed.peek(), found.peek()) {
            (None, None) => break,
            (Some(file), Some((path, _))) if file.path < *path => {
                return Err(mismatch(&file.path, Problem::Missing))
            }
            (Some(file), None) => return Err(mismatch(&file.path, Problem::Missing)),
            (Some(file), Some((path, entry))) if file.path == *path => {
                match *entry {
                    Entry::Directory => {
                        let kind = "directory";
                        return Err(mismatch(path, Problem::NotRegular { kind }));
                    }
                    Entry::Other(kind) => return Err(mismatch(path, Problem::NotRegular { kind })),
                    Entry::File { size } if size != file.size => {
                        return Err(mismatch(
                            path,
                            Problem::Size {
                                found: size,
                                expected: file.size,
                            },
                        ))
                    }
                    Entry::File { .. } => {}
                }
                listed.next();
                found.next();
            }
            // Directories are implied by the paths below them, not listed.
            (_, Some((_, Entry::Directory))) => {
                found.next();
            }
            (_, Some((path, entry))) => {
                let kind = match entry {
                    Entry::Other(kind) => kind,
                    _ => "file",
                };
                return Err(mismatch(path, Problem::Unlisted { kind }));
            }
        }
    }
    for file in &manifest.files {
        let (sha256, size) = Digest::of_reader(fs_err::File::open(root.join(&file.path))?)?;
        if size != file.size {
            // Changed since the first pass.
            return Err(mismatch(
                &file.path,
                Problem::Size {
                    found: size,
                    expected: file.size,
                },
            ));
        }
        if sha256 != file.sha256 {
            return Err(mismatch(&file.path, Problem::Sha256));
        }
    }
    Ok(manifest)
}

/// Read and parse `root/kiln-tree.json`.
fn read_manifest(root: &Path) -> Result<Manifest, TreeError> {
    let path = root.join(MANIFEST_FILE);
    let text = match fs_err::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(TreeError::NoManifest { manifest: path })
        }
        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
            return Err(TreeError::BadManifest {
                manifest: path,
                reason: "not UTF-8 text".into(),
            })
        }
        Err(error) => return Err(error.into()),
    };
    serde_json::from_str(&text).map_err(|error| TreeError::BadManifest {
        manifest: path,
        reason: match error.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("not valid JSON: {error}")
            }
            _ => error.to_string(),
        },
    })
}

/// What the walk found at a path.
#[derive(Debug, Clone, Copy)]
enum Entry {
    /// A directory (the walk goes into it too).
    Directory,
    /// A regular file of this size.
    File { size: u64 },
    /// Anything else but a directory: its kind, in words.
    Other(&'static str),
}

/// Every entry below `root` (but the root's entries named in `skip`), with paths relative
/// and `/`-separated, sorted by path. Does not follow symbolic links.
fn walk(root: &Path, skip: &[&str]) -> Result<Vec<(String, Entry)>, TreeError> {
    let mut found = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(directory) = pending.pop() {
        for entry in fs_err::read_dir(root.join(&directory))? {
            let entry = entry?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| TreeError::NotUtf8 { path: entry.path() })?;
            if directory.is_empty() && skip.contains(&name.as_str()) {
                continue;
            }
            let path = if directory.is_empty() {
                name
            } else {
                format!("{directory}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                found.push((path.clone(), Entry::Directory));
                pending.push(path);
            } else if kind.is_file() {
                let size = entry.metadata()?.len();
                found.push((path, Entry::File { size }));
            } else {
                found.push((path, Entry::Other(kind_name(kind))));
            }
        }
    }
    // Sorting the whole list, not each directory, gives the manifest's order: `a-b` sorts
    // before `a/b`, which a depth-first walk would not give.
    found.sort_by(|left, right| left.0.cmp(&right.0));
    Ok(found)
}

/// A file type other than a regular file or directory, in words.
fn kind_name(kind: std::fs::FileType) -> &'static str {
    if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small PXE-like tree: nested directories, a NoCloud file, and an empty file.
    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, contents) in [
            ("vmlinuz", "kernel"),
            ("initrd.img", "initrd"),
            ("ipxe/52-54-00-6b-00-01.ipxe", "#!ipxe\nchain boot\n"),
            ("ipxe-x", "sorts before ipxe/ by bytes"),
            ("nocloud/n1/meta-data", "instance-id: n1\n"),
            ("nocloud/n1/user-data", ""),
        ] {
            let target = dir.path().join(path);
            fs_err::create_dir_all(target.parent().unwrap()).unwrap();
            fs_err::write(target, contents).unwrap();
        }
        dir
    }

    /// The sample tree with its manifest written.
    fn written_tree() -> tempfile::TempDir {
        let tree = sample_tree();
        write_manifest(tree.path()).unwrap();
        tree
    }

    fn verify_problem(root: &Path) -> (String, Problem) {
        match verify_tree(root) {
            Err(TreeError::Mismatch { path, problem }) => (path, problem),
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn written_manifest_verifies_and_lists_every_file_sorted() {
        let tree = sample_tree();
        let written = write_manifest(tree.path()).unwrap();
        let paths: Vec<&str> = written
            .files()
            .iter()
            .map(|file| file.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "initrd.img",
                "ipxe-x",
                "ipxe/52-54-00-6b-00-01.ipxe",
                "nocloud/n1/meta-data",
                "nocloud/n1/user-data",
                "vmlinuz",
            ]
        );
        assert_eq!(verify_tree(tree.path()).unwrap(), written);
        let kernel = written.file("vmlinuz").unwrap();
        assert_eq!(kernel.size, 6);
        assert_eq!(kernel.sha256, Digest::of_bytes(b"kernel"));
        assert!(written.file("ipxe").is_none());
        assert!(written.file(MANIFEST_FILE).is_none());
        assert!(!tree.path().join(PARTIAL_FILE).exists());
    }

    #[test]
    fn manifest_text_is_canonical() {
        let tree = tempfile::tempdir().unwrap();
        fs_err::write(tree.path().join("a.txt"), "a").unwrap();
        write_manifest(tree.path()).unwrap();
        let text = fs_err::read_to_string(tree.path().join(MANIFEST_FILE)).unwrap();
        assert_eq!(
            text,
            "{\n  \"version\": 1,\n  \"files\": [\n    {\n      \"path\": \"a.txt\",\n      \
             \"sha256\": \"ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb\",\n      \
             \"size\": 1\n    }\n  ]\n}\n"
        );
    }

    #[test]
    fn identical_trees_give_identical_manifest_bytes() {
        let (first, second) = (sample_tree(), sample_tree());
        write_manifest(first.path()).unwrap();
        write_manifest(second.path()).unwrap();
        let read = |dir: &Path| fs_err::read(dir.join(MANIFEST_FILE)).unwrap();
        assert_eq!(read(first.path()), read(second.path()));
        // Writing again over an existing manifest (and a stale partial) changes nothing.
        fs_err::write(first.path().join(PARTIAL_FILE), "left by a killed kiln").unwrap();
        write_manifest(first.path()).unwrap();
        assert_eq!(read(first.path()), read(second.path()));
    }

    #[test]
    fn a_changed_file_of_the_same_size_is_a_sha256_difference() {
        let tree = written_tree();
        fs_err::write(
            tree.path().join("ipxe/52-54-00-6b-00-01.ipxe"),
            "#!ipxe\nchain evil\n",
        )
        .unwrap();
        let (path, problem) = verify_problem(tree.path());
        assert_eq!(path, "ipxe/52-54-00-6b-00-01.ipxe");
        assert_eq!(problem, Problem::Sha256);
        assert_eq!(
            verify_tree(tree.path()).unwrap_err().to_string(),
            "ipxe/52-54-00-6b-00-01.ipxe: sha256 differs from kiln-tree.json; \
             rebuild it with `kiln build pxe`"
        );
    }

    #[test]
    fn a_file_of_another_size_is_named_with_both_sizes() {
        let tree = written_tree();
        fs_err::write(tree.path().join("vmlinuz"), "a longer kernel").unwrap();
        assert_eq!(
            verify_problem(tree.path()),
            (
                "vmlinuz".into(),
                Problem::Size {
                    found: 15,
                    expected: 6
                }
            )
        );
    }

    #[test]
    fn a_missing_file_is_named_before_any_hashing() {
        let tree = written_tree();
        // A sha256 difference sorts first, but a missing file is found without hashing.
        fs_err::write(tree.path().join("initrd.img"), "INITRD").unwrap();
        fs_err::remove_file(tree.path().join("nocloud/n1/meta-data")).unwrap();
        assert_eq!(
            verify_problem(tree.path()),
            ("nocloud/n1/meta-data".into(), Problem::Missing)
        );
    }

    #[test]
    fn an_unlisted_file_is_named() {
        let tree = written_tree();
        fs_err::write(tree.path().join("nocloud/n1/vendor-data"), "x").unwrap();
        assert_eq!(
            verify_problem(tree.path()),
            (
                "nocloud/n1/vendor-data".into(),
                Problem::Unlisted { kind: "file" }
            )
        );
    }

    #[test]
    fn a_listed_file_replaced_by_a_link_or_directory_is_not_regular() {
        let tree = written_tree();
        fs_err::remove_file(tree.path().join("vmlinuz")).unwrap();
        std::os::unix::fs::symlink("initrd.img", tree.path().join("vmlinuz")).unwrap();
        assert_eq!(
            verify_problem(tree.path()),
            (
                "vmlinuz".into(),
                Problem::NotRegular {
                    kind: "symbolic link"
                }
            )
        );
        fs_err::remove_file(tree.path().join("vmlinuz")).unwrap();
        fs_err::create_dir(tree.path().join("vmlinuz")).unwrap();
        assert_eq!(
            verify_problem(tree.path()),
            ("vmlinuz".into(), Problem::NotRegular { kind: "directory" })
        );
    }

    #[test]
    fn write_refuses_links_and_special_files() {
        let tree = sample_tree();
        std::os::unix::fs::symlink("/etc/passwd", tree.path().join("ipxe/passwd")).unwrap();
        match write_manifest(tree.path()) {
            Err(TreeError::NotRegular { path, kind }) => {
                assert_eq!(path, tree.path().join("ipxe/passwd"));
                assert_eq!(kind, "symbolic link");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        fs_err::remove_file(tree.path().join("ipxe/passwd")).unwrap();
        let fifo = tree.path().join("nocloud/fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `name` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = write_manifest(tree.path()).unwrap_err();
        assert!(error
            .to_string()
            .ends_with("nocloud/fifo: a FIFO; a tree holds directories and regular files only"));
        assert!(!tree.path().join(MANIFEST_FILE).exists());
    }

    #[test]
    fn a_missing_manifest_is_named() {
        let tree = sample_tree();
        let error = verify_tree(tree.path()).unwrap_err();
        assert!(
            matches!(&error, TreeError::NoManifest { manifest } if manifest == &tree.path().join(MANIFEST_FILE))
        );
        assert!(error.to_string().contains("kiln-tree.json does not exist"));
    }

    #[test]
    fn a_malformed_manifest_is_named_with_the_reason() {
        let tree = sample_tree();
        let cases = [
            (
                "not json",
                "not valid JSON: expected ident at line 1 column 2",
            ),
            (r#"{"version": 1, "files": ["#, "not valid JSON: EOF"),
            (r#"{"version": 2, "files": []}"#, "version 2"),
            (
                r#"{"version": 1, "files": [], "extra": 1}"#,
                "unknown field",
            ),
            (
                r#"{"version": 1, "files": [{"path": "../x", "sha256": "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb", "size": 1}]}"#,
                "`../x` has a `.` or `..` component",
            ),
            (
                r#"{"version": 1, "files": [{"path": "/etc/passwd", "sha256": "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb", "size": 1}]}"#,
                "is absolute",
            ),
            (
                r#"{"version": 1, "files": [{"path": "a", "sha256": "CA978112", "size": 1}]}"#,
                "is not a sha256",
            ),
            (
                r#"{"version": 1, "files": [
                    {"path": "b", "sha256": "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb", "size": 1},
                    {"path": "a", "sha256": "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb", "size": 1}]}"#,
                "not sorted",
            ),
        ];
        for (text, expected) in cases {
            fs_err::write(tree.path().join(MANIFEST_FILE), text).unwrap();
            let error = verify_tree(tree.path()).unwrap_err();
            assert!(
                matches!(error, TreeError::BadManifest { .. }),
                "{text}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains("kiln-tree.json: ") && message.contains(expected),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn a_missing_root_is_named() {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path().join("pxe");
        assert!(matches!(verify_tree(&root), Err(TreeError::NoRoot { .. })));
    }

    #[test]
    fn an_empty_tree_round_trips() {
        let tree = tempfile::tempdir().unwrap();
        fs_err::create_dir(tree.path().join("empty")).unwrap();
        let written = write_manifest(tree.path()).unwrap();
        assert!(written.files().is_empty());
        assert_eq!(verify_tree(tree.path()).unwrap(), written);
    }
}
