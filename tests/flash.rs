//! `kiln flash` against a fake machine: a sysfs tree and a mount table in the scratch
//! directory, and regular files standing for the disks (`--assume-block MAJ:MIN` names the
//! fake sysfs entry a file stands for). No test opens a real disk.

mod common;

use fs_err::os::unix::fs::FileExt;

use common::fake_sysfs::FakeSysfs;
use common::{Kiln, Run};
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1024 * 1024;
/// Over three of kiln's 4 MiB chunks, and not a whole number of them; the third, 8 to 12
/// MiB, is all hole.
const IMAGE_LEN: u64 = 13 * MIB + 123;
/// What the fake stick holds before it is flashed: not zeros, so holes must be written.
const OLD_BYTE: u8 = 0xff;
/// The machine's own disk holds `/`.
const ROOT_ON_VDA: &str = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw";
/// A file system with no block device, as every mount table has.
const PROC: &str = "22 27 0:21 / /proc rw,nosuid - proc proc rw";

/// A scratch directory holding a fake machine: `vda` (fixed, holding `/`), `sdq` (a
/// removable 32 MiB stick with partition `sdq1`), the image `node.raw` and the file
/// `dev/sdq` standing for the stick.
struct Machine {
    kiln: Kiln,
    sysfs: FakeSysfs,
}

impl Machine {
    fn new() -> Machine {
        let kiln = Kiln::new();
        let sysfs = FakeSysfs::at(kiln.path("sys"));
        sysfs.disk("vda", "254:0", 0, 1 << 24, None);
        sysfs.disk("sdq", "8:16", 1, 32 * MIB / 512, Some("Flash Drive"));
        sysfs.partition("sdq", "sdq1", "8:17");
        let image = fs_err::File::create(kiln.path("node.raw")).unwrap();
        image.set_len(IMAGE_LEN).unwrap();
        // Data at the start, across the first two chunks' boundary and at the very end;
        // holes between.
        image.write_all_at(b"kiln node image", 0).unwrap();
        image.write_all_at(&[0x42; 5000], 4 * MIB - 100).unwrap();
        image.write_all_at(b"end", IMAGE_LEN - 3).unwrap();
        fs_err::create_dir_all(kiln.path("dev")).unwrap();
        fs_err::write(kiln.path("dev/sdq"), vec![OLD_BYTE; 16 * MIB as usize]).unwrap();
        let machine = Machine { kiln, sysfs };
        machine.mounts(&[ROOT_ON_VDA]);
        machine
    }

    /// Replace the mount table.
    fn mounts(&self, lines: &[&str]) {
        let mut text = format!("{PROC}\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        fs_err::write(self.kiln.path("mountinfo"), text).unwrap();
    }

    /// The absolute path of `dev/sdq`, as a mount table would name it.
    fn stick_path(&self) -> String {
        fs_err::canonicalize(self.kiln.path("dev/sdq"))
            .unwrap()
            .display()
            .to_string()
    }

    /// `kiln flash node.raw DEVICE` on the fake machine, with `extra` arguments.
    fn flash(&self, device: &str, extra: &[&str]) -> Run {
        let mut args = vec![
            "flash",
            "node.raw",
            device,
            "--sysfs",
            "sys",
            "--mountinfo",
            "mountinfo",
        ];
        args.extend(extra);
        self.kiln.run_with(&args)
    }

    /// `kiln flash node.raw dev/sdq` with `dev/sdq` standing for the device `number`.
    fn flash_as(&self, number: &str, extra: &[&str]) -> Run {
        let mut args = vec!["--assume-block", number];
        args.extend(extra);
        self.flash("dev/sdq", &args)
    }

    fn sha256(&self, relative: &str) -> String {
        sha256_hex(&fs_err::read(self.kiln.path(relative)).unwrap())
    }

    /// Assert a refusal: exit 2, the message says `reason`, and `dev/sdq` still holds only
    /// its old bytes. Returns stderr for a snapshot.
    fn assert_refused(&self, run: &Run, reason: &str) -> String {
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(reason), "{}", run.stderr);
        assert!(!run.stderr.contains("flash: writing"), "{}", run.stderr);
        let stick = fs_err::read(self.kiln.path("dev/sdq")).unwrap();
        assert_eq!(stick.len(), 16 * MIB as usize);
        assert!(
            stick.iter().all(|byte| *byte == OLD_BYTE),
            "dev/sdq was written"
        );
        run.stderr.clone()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[test]
fn flashing_to_a_new_file_copies_every_byte_and_verifies() {
    let machine = Machine::new();
    let run = machine.flash("copy.raw", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let image = machine.sha256("node.raw");
    assert_eq!(machine.sha256("copy.raw"), image);
    assert!(
        run.stderr.contains(&format!("verified: sha256 {image}\n")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("flash: wrote {IMAGE_LEN} bytes in ")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(" MB/s)\n"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn an_existing_smaller_file_with_old_data_is_extended_and_its_old_bytes_zeroed() {
    let machine = Machine::new();
    fs_err::write(machine.kiln.path("old.raw"), vec![OLD_BYTE; MIB as usize]).unwrap();
    let run = machine.flash("old.raw", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(machine.sha256("old.raw"), machine.sha256("node.raw"));
}

#[test]
fn json_names_the_image_device_size_time_and_digest() {
    let machine = Machine::new();
    let run = machine.flash("copy.raw", &["--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["image"], "node.raw");
    assert!(json["device"].as_str().unwrap().ends_with("/copy.raw"));
    assert_eq!(json["bytes"], IMAGE_LEN);
    assert!(json["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(json["sha256"], machine.sha256("node.raw"));
    assert_eq!(json["verified"], true);
}

#[test]
fn a_removable_stick_is_written_over_the_images_length_and_verified() {
    let machine = Machine::new();
    let run = machine.flash_as("8:16", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("(sdq, Flash Drive, 32.0 MiB"),
        "{}",
        run.stderr
    );
    let stick = fs_err::read(machine.kiln.path("dev/sdq")).unwrap();
    let image = fs_err::read(machine.kiln.path("node.raw")).unwrap();
    // A device keeps its size: the image's bytes, holes as zeros, then the old bytes.
    assert_eq!(stick.len(), 16 * MIB as usize);
    assert_eq!(&stick[..image.len()], &image[..]);
    assert!(stick[image.len()..].iter().all(|byte| *byte == OLD_BYTE));
}

#[test]
fn a_qcow2_image_is_refused_with_a_hint_to_flash_the_raw() {
    let machine = Machine::new();
    fs_err::write(
        machine.kiln.path("node.raw"),
        b"QFI\xfb\x00\x00\x00\x03rest of a qcow2 header",
    )
    .unwrap();
    let run = machine.flash_as("8:16", &[]);
    let stderr = machine.assert_refused(&run, "is a qcow2 image");
    assert!(stderr.contains("qemu-img convert -O raw"), "{stderr}");
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_mounted_disk_is_refused() {
    let machine = Machine::new();
    machine.mounts(&[
        ROOT_ON_VDA,
        "90 27 8:16 / /media/usb\\040stick rw - vfat /dev/sdq rw",
    ]);
    let run = machine.flash_as("8:16", &[]);
    let stderr = machine.assert_refused(&run, "is mounted: /dev/sdq on /media/usb stick");
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_disk_with_a_mounted_partition_is_refused() {
    let machine = Machine::new();
    machine.mounts(&[ROOT_ON_VDA, "90 27 8:17 / /mnt rw - ext4 /dev/sdq1 rw"]);
    let run = machine.flash_as("8:16", &[]);
    machine.assert_refused(&run, "is mounted: /dev/sdq1 on /mnt");
}

#[test]
fn a_partition_mounted_under_an_anonymous_device_number_is_found_by_its_source() {
    // btrfs reports 0:NN in mountinfo; only the source names the partition.
    let machine = Machine::new();
    machine.mounts(&[ROOT_ON_VDA, "90 27 0:52 / /srv rw - btrfs /dev/sdq1 rw"]);
    let run = machine.flash_as("8:16", &[]);
    machine.assert_refused(&run, "is mounted: /dev/sdq1 on /srv");
}

#[test]
fn a_disk_under_a_mounted_device_mapper_volume_is_refused() {
    let machine = Machine::new();
    machine.sysfs.mapper("dm-3", "253:3", &["sdq1"]);
    machine.mounts(&[
        ROOT_ON_VDA,
        "90 27 253:3 / /data rw - ext4 /dev/mapper/stick-crypt rw",
    ]);
    let run = machine.flash_as("8:16", &[]);
    machine.assert_refused(&run, "is mounted: /dev/mapper/stick-crypt on /data");
}

#[test]
fn a_disk_mounted_by_its_path_is_refused() {
    // The mount table names the device by path, under a number sysfs does not list.
    let machine = Machine::new();
    let line = format!("90 27 0:53 / /mnt rw - ext4 {} rw", machine.stick_path());
    machine.mounts(&[ROOT_ON_VDA, &line]);
    let run = machine.flash_as("8:16", &[]);
    machine.assert_refused(&run, "is mounted:");
}

#[test]
fn a_by_id_link_is_resolved_before_the_checks() {
    let machine = Machine::new();
    let line = format!("90 27 0:53 / /mnt rw - ext4 {} rw", machine.stick_path());
    machine.mounts(&[ROOT_ON_VDA, &line]);
    fs_err::create_dir_all(machine.kiln.path("dev/disk/by-id")).unwrap();
    std::os::unix::fs::symlink("../../sdq", machine.kiln.path("dev/disk/by-id/usb-Flash")).unwrap();
    let run = machine.flash("dev/disk/by-id/usb-Flash", &["--assume-block", "8:16"]);
    machine.assert_refused(&run, "is mounted:");
}

#[test]
fn a_link_to_an_unplugged_disk_is_refused_and_nothing_is_created() {
    let machine = Machine::new();
    fs_err::create_dir_all(machine.kiln.path("dev/disk/by-id")).unwrap();
    std::os::unix::fs::symlink("../../sdz", machine.kiln.path("dev/disk/by-id/usb-Gone")).unwrap();
    let run = machine.flash("dev/disk/by-id/usb-Gone", &[]);
    machine.assert_refused(&run, "is a symlink to ../../sdz, which does not exist");
    assert!(!machine.kiln.path("dev/sdz").exists());
}

#[test]
fn the_disk_holding_root_is_refused() {
    let machine = Machine::new();
    machine.mounts(&["27 1 8:17 / / rw,relatime - ext4 /dev/sdq1 rw"]);
    // --force allows a fixed disk, never the system's own.
    let run = machine.flash_as("8:16", &["--force"]);
    let stderr = machine.assert_refused(&run, "holds this machine's root file system (/)");
    insta::assert_snapshot!(stderr);
}

#[test]
fn the_disk_under_a_device_mapper_root_is_refused() {
    let machine = Machine::new();
    machine.sysfs.mapper("dm-0", "253:0", &["sdq1"]);
    machine.mounts(&["27 1 253:0 / / rw - ext4 /dev/mapper/vg-root rw"]);
    let run = machine.flash_as("8:16", &["--force"]);
    machine.assert_refused(
        &run,
        "is disk sdq, which holds this machine's root file system",
    );
}

#[test]
fn a_partition_of_the_root_disk_is_named_as_that_and_not_sent_to_the_whole_disk() {
    let machine = Machine::new();
    machine.mounts(&["27 1 8:17 / / rw,relatime - ext4 /dev/sdq1 rw"]);
    let run = machine.flash_as("8:17", &[]);
    let stderr = machine.assert_refused(
        &run,
        "is partition sdq1 of disk sdq, which holds this machine's root file system (/)",
    );
    assert!(!stderr.contains("give the whole disk"), "{stderr}");
}

#[test]
fn a_partition_is_refused_with_a_hint_to_give_the_whole_disk() {
    let machine = Machine::new();
    let run = machine.flash_as("8:17", &[]);
    let stderr = machine.assert_refused(&run, "is partition sdq1 of disk sdq, not a whole disk");
    assert!(
        stderr.contains("hint: give the whole disk, /dev/sdq"),
        "{stderr}"
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_fixed_disk_is_refused_naming_its_model_and_size_until_forced() {
    let machine = Machine::new();
    machine.sysfs.disk(
        "nvme9n1",
        "259:0",
        0,
        32 * MIB / 512,
        Some("Samsung SSD 990 PRO 2TB"),
    );
    let run = machine.flash_as("259:0", &[]);
    let stderr = machine.assert_refused(&run, "is a fixed disk, not removable media");
    assert!(
        stderr.contains("nvme9n1, Samsung SSD 990 PRO 2TB, 32.0 MiB\n"),
        "{stderr}"
    );
    assert!(stderr.contains("add --force"), "{stderr}");
    insta::assert_snapshot!(stderr);

    let run = machine.flash_as("259:0", &["--force"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let stick = fs_err::read(machine.kiln.path("dev/sdq")).unwrap();
    assert_eq!(
        sha256_hex(&stick[..IMAGE_LEN as usize]),
        machine.sha256("node.raw")
    );
}

#[test]
fn a_device_smaller_than_the_image_is_refused() {
    let machine = Machine::new();
    machine.sysfs.disk("sdr", "8:32", 1, 8 * MIB / 512, None);
    let run = machine.flash_as("8:32", &[]);
    let stderr = machine.assert_refused(&run, "holds 8.0 MiB (8388608 bytes), but the image is");
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_device_sysfs_does_not_list_is_refused() {
    let machine = Machine::new();
    let run = machine.flash_as("8:48", &[]);
    machine.assert_refused(
        &run,
        "is block device 8:48, which sys/dev/block does not list",
    );
}

#[test]
fn an_unreadable_mount_table_is_refused() {
    let machine = Machine::new();
    machine.mounts(&["this is not mountinfo"]);
    let run = machine.flash_as("8:16", &[]);
    machine.assert_refused(&run, "mount table mountinfo: line 2: no ` - ` separator");
}

#[test]
fn the_image_itself_is_refused_as_the_device() {
    let machine = Machine::new();
    let run = machine.flash("node.raw", &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("is the image itself"), "{}", run.stderr);
}
