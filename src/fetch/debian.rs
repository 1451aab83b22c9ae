//! The base OS from Debian's (or Ubuntu's) archive: resolving a package list to the exact
//! set of .debs, and where to download them.
//!
//! Resolution runs mmdebstrap for real (its `--simulate` is not exact) and keeps what apt
//! downloaded, together with the archive's Packages lists. Each .deb is locked with the
//! archive's own Priority and Section, because a minbase install selects by the archive's
//! Priority, which can differ from the .deb's control file; a repository rebuilt from the
//! .debs alone would silently drop apt and its libraries (see build-facts.md).
//!
//! Archive URLs come from the build host's apt sources unless a set names a mirror: kiln
//! never hard-codes a mirror host.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::lock::file::{LockedBase, LockedDeb};

/// What went wrong resolving the base OS.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    /// mmdebstrap is missing.
    #[error("mmdebstrap is not installed: install it with `apt-get install mmdebstrap`")]
    NoMmdebstrap,
    /// mmdebstrap failed.
    #[error("mmdebstrap could not resolve the base OS ({suite}): {detail}")]
    Mmdebstrap {
        /// Suite.
        suite: String,
        /// The end of its output.
        detail: String,
    },
    /// A downloaded .deb is not in the archive's Packages lists.
    #[error(
        "{file} is not listed in the archive's Packages files (name {name}, version {version})"
    )]
    NotListed {
        /// The .deb.
        file: String,
        /// Package.
        name: String,
        /// Version.
        version: String,
    },
    /// The .deb does not match the archive's checksum.
    #[error("{file}: sha256 {actual} differs from the archive's {listed}")]
    Checksum {
        /// The .deb.
        file: String,
        /// What it hashes to.
        actual: String,
        /// What the archive says.
        listed: String,
    },
    /// No apt source on this host serves the suite.
    #[error(
        "no apt source of this machine serves suite `{suite}`: name a mirror in the base-OS set"
    )]
    NoSource {
        /// Suite.
        suite: String,
    },
    /// File access.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One `deb` source of the host's apt configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptSource {
    /// Archive base URL, without a trailing `/`.
    pub uri: String,
    /// Suites.
    pub suites: Vec<String>,
    /// Components.
    pub components: Vec<String>,
}

/// Parse one-line (`sources.list`) and deb822 (`*.sources`) apt source files.
pub fn parse_sources(text: &str, deb822: bool) -> Vec<AptSource> {
    let mut sources = Vec::new();
    if deb822 {
        for paragraph in text.split("\n\n") {
            let mut fields: BTreeMap<String, String> = BTreeMap::new();
            for line in paragraph
                .lines()
                .filter(|line| !line.trim_start().starts_with('#'))
            {
                if let Some((key, value)) = line.split_once(':') {
                    fields.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
                }
            }
            let types = fields.get("types").map(String::as_str).unwrap_or("");
            if !types.split_whitespace().any(|kind| kind == "deb") {
                continue;
            }
            let words = |key: &str| -> Vec<String> {
                fields
                    .get(key)
                    .map(|value| value.split_whitespace().map(String::from).collect())
                    .unwrap_or_default()
            };
            for uri in words("uris") {
                sources.push(AptSource {
                    uri: uri.trim_end_matches('/').to_string(),
                    suites: words("suites"),
                    components: words("components"),
                });
            }
        }
    } else {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace().peekable();
            if words.next() != Some("deb") {
                continue;
            }
            // Skip an options block such as [arch=amd64 signed-by=...].
            if words.peek().is_some_and(|word| word.starts_with('[')) {
                for word in words.by_ref() {
                    if word.ends_with(']') {
                        break;
                    }
                }
            }
            let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
                continue;
            };
            sources.push(AptSource {
                uri: uri.trim_end_matches('/').to_string(),
                suites: vec![suite.to_string()],
                components: words.map(String::from).collect(),
            });
        }
    }
    sources
}

/// The host's apt sources (`sources.list` and `sources.list.d/` under `etc_apt`).
pub fn host_sources(etc_apt: &Path) -> Vec<AptSource> {
    let mut sources = Vec::new();
    if let Ok(text) = fs_err::read_to_string(etc_apt.join("sources.list")) {
        sources.extend(parse_sources(&text, false));
    }
    let mut entries: Vec<PathBuf> = fs_err::read_dir(etc_apt.join("sources.list.d"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    for path in entries {
        let deb822 = path.extension().is_some_and(|ext| ext == "sources");
        let list = path.extension().is_some_and(|ext| ext == "list");
        if deb822 || list {
            if let Ok(text) = fs_err::read_to_string(&path) {
                sources.extend(parse_sources(&text, deb822));
            }
        }
    }
    sources
}

/// The archive URL for a suite: the set's mirror, else the first host source serving it.
pub fn archive_url(
    suite: &str,
    mirror: Option<&str>,
    sources: &[AptSource],
) -> Result<String, DebianError> {
    if let Some(mirror) = mirror {
        return Ok(mirror.trim_end_matches('/').to_string());
    }
    sources
        .iter()
        .find(|source| source.suites.iter().any(|candidate| candidate == suite))
        .map(|source| source.uri.clone())
        .ok_or_else(|| DebianError::NoSource {
            suite: suite.to_string(),
        })
}

/// A stanza of a Packages file: the fields kiln locks.
#[derive(Clone, Debug, Default)]
struct Stanza {
    suite: String,
    package: String,
    version: String,
    architecture: String,
    filename: String,
    sha256: String,
    size: u64,
    priority: String,
    section: String,
}

fn parse_packages(text: &str) -> Vec<Stanza> {
    let mut stanzas = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut stanza = Stanza::default();
        for line in paragraph.lines() {
            if line.starts_with(' ') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim().to_string();
            match key {
                "Package" => stanza.package = value,
                "Version" => stanza.version = value,
                "Architecture" => stanza.architecture = value,
                "Filename" => stanza.filename = value,
                "SHA256" => stanza.sha256 = value,
                "Size" => stanza.size = value.parse().unwrap_or(0),
                "Priority" => stanza.priority = value,
                "Section" => stanza.section = value,
                _ => {}
            }
        }
        if !stanza.package.is_empty() {
            stanzas.push(stanza);
        }
    }
    stanzas
}

/// `name_version_arch.deb` as apt names downloads (`:` in versions is written `%3a`).
fn parse_deb_name(file_name: &str) -> Option<(String, String, String)> {
    let stem = file_name.strip_suffix(".deb")?;
    let mut parts = stem.splitn(3, '_');
    let name = parts.next()?.to_string();
    let version = parts.next()?.replace("%3a", ":");
    let architecture = parts.next()?.to_string();
    Some((name, version, architecture))
}

fn sha256_of(path: &Path) -> Result<String, std::io::Error> {
    let mut file = fs_err::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The result of resolving a base OS: the locked .debs and where the files are now.
pub struct Resolution {
    /// Every .deb, locked, sorted by name.
    pub debs: Vec<LockedDeb>,
    /// The downloaded files, by package name (to put in the store).
    pub files: BTreeMap<String, PathBuf>,
}

/// Resolve a base OS to its exact .deb set by running mmdebstrap, with `work` (an empty
/// directory) left holding the downloaded .debs. `archive` is given to mmdebstrap as its
/// mirror; `None` lets mmdebstrap use the host's apt sources.
pub fn resolve(
    base: &LockedBase,
    archive: Option<&str>,
    work: &Path,
) -> Result<Resolution, DebianError> {
    if Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err(DebianError::NoMmdebstrap);
    }
    let debs_dir = work.join("debs");
    let lists_dir = work.join("lists");
    fs_err::create_dir_all(&debs_dir)?;
    fs_err::create_dir_all(&lists_dir)?;
    let mut command = Command::new("mmdebstrap");
    command
        .arg("--quiet")
        .arg(format!("--variant={}", base.variant))
        .arg(format!("--components={}", base.components.join(",")))
        .arg("--architectures=amd64")
        .arg("--skip=essential/unlink")
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {}",
            debs_dir.display()
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/lib/apt/lists {}",
            lists_dir.display()
        ));
    if !base.packages.is_empty() {
        command.arg(format!("--include={}", base.packages.join(",")));
    }
    command.arg(&base.suite).arg("/dev/null");
    if let Some(archive) = archive {
        command.arg(archive);
    }
    let output = command.output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut detail: Vec<&str> = stderr.lines().rev().take(8).collect();
        detail.reverse();
        return Err(DebianError::Mmdebstrap {
            suite: base.suite.clone(),
            detail: detail.join("\n"),
        });
    }
    let mut stanzas: BTreeMap<(String, String, String), Stanza> = BTreeMap::new();
    for entry in fs_err::read_dir(&lists_dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with("_Packages") {
            // HOST_PATH_dists_SUITE_COMPONENT_binary-ARCH_Packages
            let suite = name
                .split_once("_dists_")
                .and_then(|(_, rest)| rest.split('_').next())
                .unwrap_or(&base.suite)
                .to_string();
            for mut stanza in parse_packages(&fs_err::read_to_string(&path)?) {
                stanza.suite = suite.clone();
                let key = (
                    stanza.package.clone(),
                    stanza.version.clone(),
                    stanza.architecture.clone(),
                );
                stanzas.entry(key).or_insert(stanza);
            }
        }
    }
    let mut debs = Vec::new();
    let mut files = BTreeMap::new();
    let mut entries: Vec<PathBuf> = fs_err::read_dir(&debs_dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    entries.sort();
    for path in entries {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let Some((name, version, architecture)) = parse_deb_name(&file_name) else {
            continue;
        };
        let stanza = stanzas
            .get(&(name.clone(), version.clone(), architecture.clone()))
            .ok_or_else(|| DebianError::NotListed {
                file: file_name.clone(),
                name: name.clone(),
                version: version.clone(),
            })?;
        let actual = sha256_of(&path)?;
        if actual != stanza.sha256 {
            return Err(DebianError::Checksum {
                file: file_name,
                actual,
                listed: stanza.sha256.clone(),
            });
        }
        debs.push(LockedDeb {
            name: name.clone(),
            version,
            architecture,
            suite: stanza.suite.clone(),
            filename: stanza.filename.clone(),
            digest: format!("sha256:{actual}"),
            size: stanza.size,
            priority: stanza.priority.clone(),
            section: stanza.section.clone(),
        });
        files.insert(name, path);
    }
    Ok(Resolution { debs, files })
}

/// The newest `Date:` of the archive Release files mmdebstrap fetched into `work/lists`, as
/// seconds since the epoch: a lock's SOURCE_DATE_EPOCH that comes from the archive, not
/// from the clock of the machine that ran `kiln lock`.
pub fn release_date(work: &Path) -> Option<u64> {
    let mut newest = None;
    for entry in fs_err::read_dir(work.join("lists")).ok()? {
        let path = entry.ok()?.path();
        let name = path.file_name()?.to_str()?.to_string();
        if !(name.ends_with("_InRelease") || name.ends_with("_Release")) {
            continue;
        }
        let text = fs_err::read_to_string(&path).ok()?;
        let date = text
            .lines()
            .find_map(|line| line.strip_prefix("Date:"))
            .and_then(|value| parse_rfc2822(value.trim()));
        newest = newest.max(date);
    }
    newest
}

/// `Sat, 10 May 2025 09:52:17 UTC` (the form Release files use) as seconds since the epoch.
fn parse_rfc2822(text: &str) -> Option<u64> {
    let text = text.split_once(", ").map(|(_, rest)| rest).unwrap_or(text);
    let mut words = text.split_whitespace();
    let day: i64 = words.next()?.parse().ok()?;
    let month = match words.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = words.next()?.parse().ok()?;
    let mut clock = words
        .next()?
        .split(':')
        .map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if !matches!(words.next(), Some("UTC" | "GMT" | "+0000") | None) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn release_dates() {
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_rfc2822("Sat, 10 May 2025 09:52:17 UTC"),
            Some(1_746_870_737)
        );
        assert_eq!(
            parse_rfc2822("Tue, 29 Feb 2000 12:00:00 UTC"),
            Some(951_825_600)
        );
        assert_eq!(parse_rfc2822("Sat, 10 Foo 2025 09:52:17 UTC"), None);
    }

    use super::*;

    #[test]
    fn one_line_and_deb822_sources() {
        let one_line = "# comment\ndeb [signed-by=/k.gpg] http://ftp.example/debian/ bookworm main contrib\ndeb-src http://x bookworm main\n";
        assert_eq!(
            parse_sources(one_line, false),
            vec![AptSource {
                uri: "http://ftp.example/debian".into(),
                suites: vec!["bookworm".into()],
                components: vec!["main".into(), "contrib".into()],
            }]
        );
        let deb822 = "Types: deb\n# note\nURIs: http://a.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb-src\nURIs: http://b\nSuites: bookworm\n";
        let parsed = parse_sources(deb822, true);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            archive_url("bookworm-updates", None, &parsed).unwrap(),
            "http://a.example/debian"
        );
        assert!(archive_url("noble", None, &parsed).is_err());
        assert_eq!(
            archive_url("noble", Some("http://m/ubuntu/"), &parsed).unwrap(),
            "http://m/ubuntu"
        );
    }

    #[test]
    fn deb_file_names() {
        assert_eq!(
            parse_deb_name("libc6_2.36-9+deb12u10_amd64.deb"),
            Some(("libc6".into(), "2.36-9+deb12u10".into(), "amd64".into()))
        );
        assert_eq!(
            parse_deb_name("systemd_1%3a252.38-1~deb12u1_amd64.deb")
                .unwrap()
                .1,
            "1:252.38-1~deb12u1"
        );
    }

    #[test]
    fn packages_stanzas() {
        let text = "Package: apt\nVersion: 2.6.1\nArchitecture: amd64\nPriority: required\nSection: admin\nFilename: pool/main/a/apt/apt_2.6.1_amd64.deb\nSize: 1372\nSHA256: ab\nDescription: x\n continued\n\nPackage: b\nVersion: 1\n";
        let stanzas = parse_packages(text);
        assert_eq!(stanzas.len(), 2);
        assert_eq!(stanzas[0].priority, "required");
        assert_eq!(stanzas[0].filename, "pool/main/a/apt/apt_2.6.1_amd64.deb");
        assert_eq!(stanzas[0].size, 1372);
    }
}
