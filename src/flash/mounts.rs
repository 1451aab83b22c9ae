//! The mount table, as the kernel writes it in `/proc/self/mountinfo`.
//!
//! mountinfo rather than `/proc/self/mounts` because each line carries the device number
//! of the mounted file system (`MAJ:MIN`), which names a block device without trusting the
//! source string; the source string is still kept, since file systems such as btrfs report
//! an anonymous device number (`0:NN`) and only the source names their disk. Fields are
//! separated by single spaces, and the kernel escapes space, tab, newline and backslash in
//! paths as octal (`\040`, `\011`, `\012`, `\134`).
//!
//! See: <https://www.kernel.org/doc/html/latest/filesystems/proc.html> (3.5, /proc/PID/mountinfo)

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A block device's number, `MAJ:MIN`, as in sysfs `dev` files and mountinfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceNumber {
    /// The driver's number.
    pub major: u32,
    /// The device's number within the driver.
    pub minor: u32,
}

impl FromStr for DeviceNumber {
    type Err = String;

    fn from_str(text: &str) -> Result<DeviceNumber, String> {
        let parsed = text
            .trim()
            .split_once(':')
            .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)));
        match parsed {
            Some((major, minor)) => Ok(DeviceNumber { major, minor }),
            None => Err(format!(
                "`{text}` is not a device number MAJ:MIN (e.g. 8:16)"
            )),
        }
    }
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.major, self.minor)
    }
}

/// One mounted file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The device number of the mounted file system (`0:NN` for those without a block
    /// device of their own, and for btrfs).
    pub number: DeviceNumber,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// What was mounted, as given to mount(2): a device path, or `tmpfs`, `server:/export`.
    pub source: String,
}

/// A mountinfo line kiln cannot read. kiln then refuses to flash: a mount table it does
/// not understand cannot show that the device is free.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct MountTableError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

/// Parse the text of a mountinfo file.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, MountTableError> {
    let mut mounts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let problem = |problem: String| MountTableError {
            line: index + 1,
            problem,
        };
        let fields: Vec<&str> = line.split(' ').collect();
        // Six fixed fields, any number of optional fields, a lone `-`, then the file
        // system type, the source and the super block's options.
        let separator = fields
            .iter()
            .skip(6)
            .position(|field| *field == "-")
            .map(|position| position + 6)
            .ok_or_else(|| problem("no ` - ` separator after the sixth field".into()))?;
        let source = fields
            .get(separator + 2)
            .ok_or_else(|| problem("no mount source after the file system type".into()))?;
        mounts.push(Mount {
            number: fields[2].parse().map_err(problem)?,
            mount_point: PathBuf::from(unescape(fields[4])),
            source: unescape(source),
        });
    }
    Ok(mounts)
}

/// Undo the kernel's octal escapes (`\040` is a space); anything else is kept as it is.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).filter(|digits| {
            bytes[index] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match octal.and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok())
        {
            Some(byte) => {
                out.push(byte);
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_with_optional_fields() {
        let mounts = parse_mountinfo(
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue\n",
        )
        .unwrap();
        assert_eq!(
            mounts,
            [Mount {
                number: DeviceNumber {
                    major: 98,
                    minor: 0
                },
                mount_point: PathBuf::from("/mnt2"),
                source: "/dev/root".into(),
            }]
        );
    }

    #[test]
    fn octal_escapes_in_the_mount_point_and_source() {
        let mounts = parse_mountinfo(
            "90 27 8:17 / /media/usb\\040stick\\011x rw - vfat /dev/disk/by-label/MY\\040USB\\134 rw\n",
        )
        .unwrap();
        assert_eq!(mounts[0].mount_point, PathBuf::from("/media/usb stick\tx"));
        assert_eq!(mounts[0].source, "/dev/disk/by-label/MY USB\\");
    }

    #[test]
    fn a_backslash_without_three_octal_digits_is_kept() {
        assert_eq!(unescape("a\\09b\\"), "a\\09b\\");
        assert_eq!(unescape("\\0401"), " 1");
    }

    #[test]
    fn a_separator_among_the_first_six_fields_is_not_the_separator() {
        // A mount point named `-` must not end the fixed fields early.
        let mounts = parse_mountinfo("1 0 0:5 / - rw - tmpfs tmpfs rw\n").unwrap();
        assert_eq!(mounts[0].mount_point, PathBuf::from("-"));
        assert_eq!(mounts[0].source, "tmpfs");
    }

    #[test]
    fn a_broken_line_is_named() {
        let error = parse_mountinfo("22 27 0:21 / /proc rw - proc proc rw\n22 27 0:21 / /x rw\n")
            .unwrap_err();
        assert_eq!(error.line, 2);
        let error = parse_mountinfo("22 27 zero / /proc rw - proc proc rw\n").unwrap_err();
        assert!(error.problem.contains("`zero`"), "{error}");
    }

    #[test]
    fn device_numbers_round_trip() {
        let number: DeviceNumber = "259:3".parse().unwrap();
        assert_eq!(number.to_string(), "259:3");
        assert!("8".parse::<DeviceNumber>().is_err());
        assert!("8:x".parse::<DeviceNumber>().is_err());
    }
}
