//! `kiln flash`: write a node's raw disk image to a device (a USB stick, a new server's
//! disk), read it back and compare.
//!
//! Deciding whether a device may be written needs the machine's view of its block devices
//! and mounts: `mounts` reads the mount table, `sysfs` finds which disk a partition or a
//! device-mapper device lives on. Both read files below a root they are given, so tests
//! hand them a fake machine.

pub mod mounts;
pub mod sysfs;

#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/common/fake_sysfs.rs"]
mod testing;
