//! The USB installer step: a hybrid ISO (xorriso) that boots UEFI into kiln's installer
//! and carries one or more nodes' disk images. Written to a USB stick as it is (`kiln
//! flash`, `dd`), or attached to a VM as a CD.
//!
//! Layout: an ISO 9660 file system (volume `KILN_INSTALL`) with `kiln/nodes` (a line per
//! node: name, MAC, install disk rule, image size, sha256, GPT disk GUID) and each node's
//! image as `kiln/images/NAME.data` (its non-zero MiBs) with `NAME.map` (where each run of
//! MiBs goes, and the runs of zeros between): a 10 GiB image that is mostly empty stays
//! small on the stick, and the installer still writes and verifies every byte. The
//! installer's EFI system partition is appended as a GPT partition (for USB sticks) and is
//! the El Torito EFI boot image (for CDs).

use std::io::Read;
use std::path::Path;

use serde_json::json;

use crate::build::disk::{NodeDisk, DISK_RAW};
use crate::build::installer::EFIBOOT_IMG;
use crate::build::step::{StepOutput, Steps};
use crate::build::tools::{self, XORRISO};
use crate::build::BuildError;
use crate::profile::ValidNode;

/// Bump when the step makes other bytes from the same inputs.
pub const STEP_VERSION: u32 = 1;

/// The output.
pub const ISO: &str = "installer.iso";

const MIB: usize = 1 << 20;

/// What an install medium (the ISO, the PXE set) carries of one node.
pub struct InstallNode<'a> {
    /// The node.
    pub node: &'a ValidNode,
    /// Its disk.
    pub disk: &'a NodeDisk,
}

/// Build (or reuse) the installer ISO for `nodes`.
pub fn build(
    steps: &Steps,
    installer: &StepOutput,
    nodes: &[InstallNode<'_>],
    epoch: u64,
) -> Result<StepOutput, BuildError> {
    tools::require(&[XORRISO])?;
    let (table, listed) = node_table(nodes)?;
    let inputs = json!({
        "version": STEP_VERSION,
        "installer": installer.key,
        "nodes": listed,
        "table": table,
        "source_date_epoch": epoch,
        "tools": tools::versions(&[XORRISO])?,
    });
    let name = if nodes.len() == 1 {
        format!("usb-{}", nodes[0].node.name)
    } else {
        "usb".to_string()
    };
    steps.run("usb", &name, inputs, |out, work, _key| {
        let staging = work.join("iso");
        let images = staging.join("kiln/images");
        fs_err::create_dir_all(&images)?;
        fs_err::write(staging.join("kiln/nodes"), &table)?;
        split_images(nodes, &images)?;
        for path in [
            staging.clone(),
            staging.join("kiln"),
            images.clone(),
            staging.join("kiln/nodes"),
        ] {
            crate::build::disk::set_mtime(&path, epoch)?;
        }
        for entry in fs_err::read_dir(&images)? {
            crate::build::disk::set_mtime(&entry?.path(), epoch)?;
        }
        let date = chrono_like(epoch);
        tools::run(
            "making the installer ISO",
            tools::command(XORRISO)
                .env("SOURCE_DATE_EPOCH", epoch.to_string())
                .args(["-as", "mkisofs", "-quiet", "-o"])
                .arg(out.join(ISO))
                .args(["-V", "KILN_INSTALL", "-iso-level", "3", "-r"])
                .arg(format!("--modification-date={date}"))
                .arg("-append_partition")
                .arg("2")
                .arg("0xef")
                .arg(installer.path(EFIBOOT_IMG))
                .args([
                    "-appended_part_as_gpt",
                    "-e",
                    "--interval:appended_partition_2:all::",
                    "-no-emul-boot",
                ])
                .arg(&staging),
        )?;
        Ok(())
    })
}

/// The install media's node table (`nodes`: a line per node of name, MAC, install disk
/// rule, image size, sha256 and GPT disk GUID, as the installer reads them) and the nodes'
/// disk steps, for a step's inputs.
pub fn node_table(
    nodes: &[InstallNode<'_>],
) -> Result<(String, Vec<serde_json::Value>), BuildError> {
    let mut table = String::new();
    let mut listed = Vec::new();
    for entry in nodes {
        let rule = entry
            .node
            .settings
            .install_disk
            .as_ref()
            .map(ToString::to_string)
            .ok_or_else(|| {
                BuildError::Failed(format!(
                    "node {} has no install_disk: the installer needs to know which disk to write (e.g. install_disk = \"largest\")",
                    entry.node.name
                ))
            })?;
        let output = &entry.disk.disk.record.outputs[DISK_RAW];
        let guid = disk_guid(&entry.disk.disk.path(DISK_RAW))?;
        table.push_str(&format!(
            "{} {} {} {} {} {}\n",
            entry.node.name,
            entry.node.settings.mac.to_string().to_ascii_lowercase(),
            rule,
            output.size,
            output.sha256,
            guid
        ));
        listed.push(json!({ "node": entry.node.name, "disk": entry.disk.disk.key }));
    }
    Ok((table, listed))
}

/// xorriso's `--modification-date` format, `YYYYMMDDhhmmss00`, of `epoch` in UTC.
fn chrono_like(epoch: u64) -> String {
    let digits: String = crate::build::image_archive::rfc3339(epoch)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("{digits}00")
}

/// The 16 bytes of the GPT header's disk GUID (LBA 1, offset 56), as hex, as the
/// installer reads them back from a disk.
fn disk_guid(raw: &Path) -> Result<String, BuildError> {
    let mut file = fs_err::File::open(raw)?;
    let mut head = vec![0u8; 584];
    file.read_exact(&mut head)?;
    Ok(head[568..584]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// Each node's image as `NAME.data` and `NAME.map` in `images`.
pub fn split_images(nodes: &[InstallNode<'_>], images: &Path) -> Result<(), BuildError> {
    for entry in nodes {
        split_image(
            &entry.disk.disk.path(DISK_RAW),
            &images.join(format!("{}.data", entry.node.name)),
            &images.join(format!("{}.map", entry.node.name)),
        )?;
    }
    Ok(())
}

/// Split a raw image into its non-zero MiBs (`data`) and a map of runs (`map`).
fn split_image(raw: &Path, data: &Path, map: &Path) -> Result<(), BuildError> {
    use std::io::Write;
    let size = fs_err::metadata(raw)?.len() as usize;
    if !size.is_multiple_of(MIB) {
        return Err(BuildError::Failed(format!(
            "{}: {size} bytes is not a whole number of MiB",
            raw.display()
        )));
    }
    let mut input = std::io::BufReader::with_capacity(4 * MIB, fs_err::File::open(raw)?);
    let mut output = std::io::BufWriter::with_capacity(4 * MIB, fs_err::File::create(data)?);
    let mut runs: Vec<(bool, usize, usize)> = Vec::new();
    let mut block = vec![0u8; MIB];
    for index in 0..size / MIB {
        input.read_exact(&mut block)?;
        let zero = block.iter().all(|byte| *byte == 0);
        if !zero {
            output.write_all(&block)?;
        }
        match runs.last_mut() {
            Some((kind, _, length)) if *kind == zero => *length += 1,
            _ => runs.push((zero, index, 1)),
        }
    }
    output.flush()?;
    let text: String = runs
        .iter()
        .map(|(zero, offset, length)| {
            format!("{} {offset} {length}\n", if *zero { "Z" } else { "D" })
        })
        .collect();
    fs_err::write(map, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_xorriso_format() {
        assert_eq!(chrono_like(0), "1970010100000000");
        assert_eq!(chrono_like(1_700_000_000), "2023111422132000");
        assert_eq!(chrono_like(951_782_400), "2000022900000000");
    }

    #[test]
    fn an_image_splits_into_data_and_runs() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let mut bytes = vec![0u8; 4 * MIB];
        bytes[10] = 1;
        bytes[3 * MIB + 5] = 2;
        fs_err::write(&raw, &bytes).unwrap();
        split_image(&raw, &dir.path().join("d"), &dir.path().join("m")).unwrap();
        assert_eq!(
            fs_err::read_to_string(dir.path().join("m")).unwrap(),
            "D 0 1\nZ 1 2\nD 3 1\n"
        );
        assert_eq!(
            fs_err::metadata(dir.path().join("d")).unwrap().len(),
            2 * MIB as u64
        );
    }
}
