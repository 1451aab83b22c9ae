//! The external tools build steps run, their versions (part of every step key), and
//! running them with errors that say what failed and how to fix it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::build::BuildError;

/// An external program and the Debian/Ubuntu package that ships it.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    /// The program.
    pub program: &'static str,
    /// Its package.
    pub package: &'static str,
}

/// mmdebstrap: the root file system.
pub const MMDEBSTRAP: Tool = Tool {
    program: "mmdebstrap",
    package: "mmdebstrap",
};
/// apt: resolves and downloads inside mmdebstrap (the host's apt).
pub const APT: Tool = Tool {
    program: "apt-get",
    package: "apt",
};
/// apt-ftparchive: the flat repository of locked .debs.
pub const APT_FTPARCHIVE: Tool = Tool {
    program: "apt-ftparchive",
    package: "apt-utils",
};
/// unshare: runs mmdebstrap without a network.
pub const UNSHARE: Tool = Tool {
    program: "unshare",
    package: "util-linux",
};
/// GNU tar: unpacks the root file system with owners, devices and xattrs.
pub const TAR: Tool = Tool {
    program: "tar",
    package: "tar",
};
/// mke2fs: the ext4 root.
pub const MKE2FS: Tool = Tool {
    program: "mke2fs",
    package: "e2fsprogs",
};
/// debugfs: fixes the inode times mke2fs copies from the build tree.
pub const DEBUGFS: Tool = Tool {
    program: "debugfs",
    package: "e2fsprogs",
};
/// mkfs.vfat: the EFI system partition.
pub const MKFS_VFAT: Tool = Tool {
    program: "mkfs.vfat",
    package: "dosfstools",
};
/// mtools: files into the EFI system partition without mounting it.
pub const MCOPY: Tool = Tool {
    program: "mcopy",
    package: "mtools",
};
/// mmd: directories in the EFI system partition.
pub const MMD: Tool = Tool {
    program: "mmd",
    package: "mtools",
};
/// sgdisk: the GPT.
pub const SGDISK: Tool = Tool {
    program: "sgdisk",
    package: "gdisk",
};
/// qemu-img: the qcow2 output.
pub const QEMU_IMG: Tool = Tool {
    program: "qemu-img",
    package: "qemu-utils",
};

static VERSIONS: Mutex<BTreeMap<&'static str, String>> = Mutex::new(BTreeMap::new());

/// Is `program` on the PATH?
pub fn exists(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let path = dir.join(program);
            path.is_file()
        })
    })
}

/// Fail with the package to install when a tool is missing.
pub fn require(tools: &[Tool]) -> Result<(), BuildError> {
    let missing: Vec<&Tool> = tools.iter().filter(|tool| !exists(tool.program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|tool| tool.package).collect();
    packages.dedup();
    Err(BuildError::MissingTools {
        programs: missing
            .iter()
            .map(|tool| tool.program)
            .collect::<Vec<_>>()
            .join(", "),
        packages: packages.join(" "),
    })
}

/// The tool's version: its package's version where dpkg knows it, else the first line of
/// `--version`. Tools are step inputs: another version gives another key.
pub fn version(tool: Tool) -> Result<String, BuildError> {
    if let Some(version) = VERSIONS.lock().expect("not poisoned").get(tool.package) {
        return Ok(version.clone());
    }
    require(&[tool])?;
    let from_dpkg = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", tool.package])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success() && !output.stdout.is_empty())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    let version = match from_dpkg {
        Some(version) => version,
        None => {
            let output = Command::new(tool.program).arg("--version").output()?;
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .unwrap_or("unknown")
                .trim()
                .to_string()
        }
    };
    VERSIONS
        .lock()
        .expect("not poisoned")
        .insert(tool.package, version.clone());
    Ok(version)
}

/// `{package: version}` of these tools, for a step key.
pub fn versions(tools: &[Tool]) -> Result<serde_json::Value, BuildError> {
    let mut map = serde_json::Map::new();
    for tool in tools {
        map.insert(tool.package.to_string(), version(*tool)?.into());
    }
    Ok(serde_json::Value::Object(map))
}

/// A command for `tool`, with the environment builds must not depend on made fixed: the C
/// locale, UTC, and no inherited `SOURCE_DATE_EPOCH` (steps set their own).
pub fn command(tool: Tool) -> Command {
    let mut command = Command::new(tool.program);
    command
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "UTC")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("LANGUAGE");
    command
}

/// Run a command to completion; on failure, an error that names `what`, the command line
/// and the end of its output.
pub fn run(what: &str, command: &mut Command) -> Result<Vec<u8>, BuildError> {
    let line = command_line(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| BuildError::Failed(format!("{what}: could not run `{line}`: {error}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(BuildError::Failed(format!(
        "{what}: `{line}` failed ({}):\n{}",
        output.status,
        tail.join("\n")
    )))
}

fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Is this process root? Steps that keep file owners (mmdebstrap, unpacking the root file
/// system) need it.
pub fn is_root() -> bool {
    fs_err::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}
/// xorriso: the USB installer's hybrid ISO.
pub const XORRISO: Tool = Tool {
    program: "xorriso",
    package: "xorriso",
};
