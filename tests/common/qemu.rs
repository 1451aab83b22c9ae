//! Boot a disk image in QEMU (TCG, OVMF, serial console to a file) over a copy-on-write
//! overlay, isolated from every network: the one NIC, when asked for, is QEMU user
//! networking with `restrict=on`, so no guest packet leaves this machine. Success is judged
//! by markers on the serial console, never by QEMU's exit code.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// OVMF's code and a template of its variables (package ovmf).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// A running VM; killed when dropped.
pub struct Vm {
    child: Child,
    /// The serial console log.
    pub serial: PathBuf,
    /// The overlay the VM writes to.
    pub overlay: PathBuf,
}

/// Boot `disk` (qcow2) in `dir`, with a restricted NIC with `mac` when given; the overlay is
/// `grow` bytes larger than the image.
pub fn boot(disk: &Path, dir: &Path, mac: Option<&str>, grow: u64) -> Vm {
    fs_err::create_dir_all(dir).unwrap();
    let overlay = dir.join("overlay.qcow2");
    let size = image_size(disk) + grow;
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(disk)
        .arg(&overlay)
        .arg(size.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "qemu-img create failed");
    let (mut command, serial) = machine(dir);
    command
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", overlay.display()));
    match mac {
        Some(mac) => restricted_nic(&mut command, mac),
        None => {
            command.args(["-nic", "none"]);
        }
    }
    start(&mut command, serial, overlay)
}

/// Boot the installer `iso` as a USB stick, with blank `disks` (raw files, virtio, each
/// with its serial number) and a restricted NIC with `mac`. QEMU exits when the guest
/// reboots.
pub fn boot_installer(iso: &Path, disks: &[(PathBuf, &str)], dir: &Path, mac: &str) -> Vm {
    fs_err::create_dir_all(dir).unwrap();
    let (mut command, serial) = machine(dir);
    command
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=stick,readonly=on,format=raw",
            iso.display()
        ))
        .args(["-device", "qemu-xhci"])
        .args([
            "-device",
            "usb-storage,drive=stick,removable=on,bootindex=0",
        ]);
    for (index, (disk, serial_number)) in disks.iter().enumerate() {
        command
            .arg("-drive")
            .arg(format!(
                "file={},if=none,id=d{index},format=raw",
                disk.display()
            ))
            .arg("-device")
            .arg(format!(
                "virtio-blk-pci,drive=d{index},serial={serial_number}"
            ));
    }
    restricted_nic(&mut command, mac);
    start(&mut command, serial, dir.join("none"))
}

/// Boot a machine from the network with iPXE (Debian's ipxe-qemu ROM, under SeaBIOS: the
/// ROM's EFI driver leaves the boot to OVMF's own PXE, which cannot run iPXE scripts), a
/// blank disk attached. The NIC is QEMU user networking with `restrict=on`: its DHCP names
/// `bootfile`, and 10.0.2.100:80 reaches `127.0.0.1:port` on this machine, one forwarder
/// (tests/fixtures/tcp-forward.py) per guest connection. Nothing else leaves the VM.
pub fn boot_pxe(disk: &Path, dir: &Path, mac: &str, bootfile: &str, port: u16) -> Vm {
    fs_err::create_dir_all(dir).unwrap();
    let forward = crate::common::repo().join("tests/fixtures/tcp-forward.py");
    let (mut command, serial) = base(dir);
    command
        // SeaBIOS runs the NIC's option ROM only with a VGA device.
        .args(["-vga", "std"])
        .args(["-boot", "n"])
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,restrict=on,bootfile={bootfile},guestfwd=tcp:10.0.2.100:80-cmd:python3 {} 127.0.0.1 {port}",
            forward.display()
        ))
        .arg("-device")
        // The ROM is built for the modern virtio device ID (1af4:1041).
        .arg(format!(
            "virtio-net-pci,netdev=n0,mac={mac},disable-legacy=on,romfile=/usr/lib/ipxe/qemu/pxe-virtio.rom"
        ))
        .arg("-drive")
        .arg(format!("file={},if=none,id=d0,format=raw", disk.display()))
        .args(["-device", "virtio-blk-pci,drive=d0,serial=PXE-DISK-1"]);
    start(&mut command, serial, dir.join("none"))
}

/// QEMU with TCG, q35, 2 vCPUs, 2 GiB, no display, `-no-reboot`, its firmware SeaBIOS;
/// and where its serial console will be logged.
fn base(dir: &Path) -> (Command, PathBuf) {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args([
            "-machine", "q35", "-accel", "tcg", "-m", "2048", "-smp", "2",
        ])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"]);
    (command, dir.join("serial.log"))
}

/// [`base`] with OVMF (its variables copied into `dir`).
fn machine(dir: &Path) -> (Command, PathBuf) {
    let vars = dir.join("OVMF_VARS.fd");
    fs_err::copy(OVMF_VARS, &vars).unwrap();
    let (mut command, serial) = base(dir);
    command
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    (command, serial)
}

/// One NIC with `mac` on QEMU user networking with `restrict=on`: nothing leaves the VM.
fn restricted_nic(command: &mut Command, mac: &str) {
    command
        .args(["-netdev", "user,id=n0,restrict=on"])
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,mac={mac}"));
}

/// Start the VM with its serial console logged to `serial`.
fn start(command: &mut Command, serial: PathBuf, overlay: PathBuf) -> Vm {
    command
        .arg("-serial")
        .arg(format!("file:{}", serial.display()));
    let child = spawn(command);
    Vm {
        child,
        serial,
        overlay,
    }
}

fn spawn(command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 runs (package qemu-system-x86)")
}

fn image_size(disk: &Path) -> u64 {
    let output = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    info["virtual-size"].as_u64().unwrap()
}

impl Vm {
    /// The serial console so far, without terminal escapes.
    pub fn console(&self) -> String {
        let bytes = fs_err::read(&self.serial).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let mut clean = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ ... final byte in @..~
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for next in chars.by_ref() {
                        if ('@'..='~').contains(&next) {
                            break;
                        }
                    }
                }
                continue;
            }
            if c != '\r' {
                clean.push(c);
            }
        }
        clean
    }

    /// Wait until a console line contains `marker`; the line, or the console's last lines
    /// on a timeout or when QEMU exits.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<String, String> {
        let started = Instant::now();
        loop {
            let console = self.console();
            if let Some(line) = console.lines().find(|line| line.contains(marker)) {
                return Ok(line.to_string());
            }
            let exited = self.child.try_wait().ok().flatten().is_some();
            if exited || started.elapsed() > timeout {
                let tail: Vec<&str> = console.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "no `{marker}` on the console after {:?}{}; last lines:\n{}",
                    started.elapsed(),
                    if exited { " (QEMU exited)" } else { "" },
                    tail.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Wait for QEMU to exit by itself (the guest powered off or rebooted).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }

    /// Stop the VM.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}
