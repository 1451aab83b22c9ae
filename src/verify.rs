//! Boot built node disks in QEMU and judge them by their first-boot markers.
//!
//! A node's first-boot program prints one line per stage on the serial console
//! (`kiln: stage NAME ok|skip|fail: REASON`), announces its stages first and its readiness
//! last. This module owns everything between a disk image and that verdict: checking the
//! host's tools, a throwaway copy-on-write overlay per VM (the image itself is never
//! written), starting the QEMUs, reading their serial logs, and killing every QEMU it
//! started, whatever happens.
//!
//! The verdict comes from the console markers only, never from QEMU's exit code: a kernel
//! panic under `-no-reboot` makes QEMU exit 0.
//!
//! Test VMs never reach the outside world: [`Network::Restricted`] is QEMU's user networking
//! with `restrict=on` (the guest reaches nothing), [`Network::Shared`] links the VMs to each
//! other only, and plain user networking, which routes guest packets out of the machine, is
//! not offered.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The QEMU system emulator for the nodes' architecture.
const QEMU: &str = "qemu-system-x86_64";
/// QEMU's image tool, for the overlays.
const QEMU_IMG: &str = "qemu-img";
/// UEFI firmware code, mapped read-only.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// UEFI variable store template; every VM gets its own writable copy.
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// How often the serial logs are read.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How many clean console lines a [`NodeResult`] keeps.
const CONSOLE_TAIL_LINES: usize = 30;
/// How many console lines [`render_table`] shows for a node without a verdict.
const RENDERED_TAIL_LINES: usize = 5;
/// The longest the KVM probe boot may run.
const KVM_PROBE_LIMIT: Duration = Duration::from_secs(8);
/// What QEMU prints on stderr when KVM cannot run the guest.
const KVM_ERRORS: [&str; 3] = [
    "KVM internal error",
    "emulation failure",
    "failed to set MSR",
];
/// Multicast group of [`Network::Shared`]; only VMs on this machine join it.
const SHARED_GROUP: &str = "230.0.0.1";

/// How QEMU runs the guest's CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when a probe boot shows that it works ([`kvm_works`]), TCG otherwise.
    #[default]
    Auto,
    /// KVM; an error when the probe boot shows that it does not work.
    Kvm,
    /// TCG, QEMU's emulator: slow, but works everywhere.
    Tcg,
}

/// The network the VMs get. None of them reaches beyond this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// No network card at all.
    None,
    /// A network card on QEMU's user network with `restrict=on`: the guest gets an address
    /// by DHCP but reaches nothing else.
    #[default]
    Restricted,
    /// One network between the VMs of this run (QEMU socket networking over a multicast
    /// group bound to 127.0.0.1 and this UDP port), with nothing else on it.
    Shared {
        /// The UDP port of the multicast group; runs at the same time need different ports.
        port: u16,
    },
}

/// One VM to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The node's name: names the VM's directory, so letters, digits, `-`, `_` and `.` only.
    pub name: String,
    /// The node's disk image (any format `qemu-img` knows); only read, never written.
    pub image: PathBuf,
    /// The network card's MAC address (`52:54:00:12:34:56`); `None` gives
    /// `52:54:00:ff:00:NN`, NN being the VM's index, so VMs of one run never clash.
    pub mac: Option<String>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Number of virtual CPUs.
    pub cpus: u32,
}

impl VmSpec {
    /// A VM with 2 GiB of memory, 2 virtual CPUs and a MAC address chosen by its index.
    pub fn new(name: impl Into<String>, image: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            mac: None,
            memory_mib: 2048,
            cpus: 2,
        }
    }
}

/// How to run a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// How long each VM may take, from its start, to reach a verdict.
    pub timeout: Duration,
    /// How QEMU runs the guests' CPUs.
    pub accel: Accel,
    /// The network between the VMs.
    pub network: Network,
    /// Where each VM gets its directory `<work_dir>/<name>/` with its overlay, UEFI
    /// variables, serial log and QEMU log. Existing files there are replaced.
    pub work_dir: PathBuf,
}

impl VerifyOptions {
    /// Options with a 300 s timeout, [`Accel::Auto`] and [`Network::Restricted`].
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            timeout: Duration::from_secs(300),
            accel: Accel::Auto,
            network: Network::Restricted,
            work_dir: work_dir.into(),
        }
    }
}

/// What a first-boot stage reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    /// The stage did its work.
    Ok,
    /// The stage had nothing to do (or was done at an earlier boot).
    Skip,
    /// The stage failed; the first boot stopped there.
    Fail,
}

impl StageState {
    /// The word the first-boot program prints.
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Ok => "ok",
            StageState::Skip => "skip",
            StageState::Fail => "fail",
        }
    }
}

/// One stage of one node, as its console reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageResult {
    /// The stage's name (`network`, `containerd`, …).
    pub name: String,
    /// What the stage reported.
    pub state: StageState,
    /// The stage's last line of output, or why it was skipped.
    pub reason: String,
    /// Seconds from the VM's start until the marker was seen (to within the poll interval).
    pub seconds: f64,
}

/// The verdict on one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The first-boot program printed its ready line.
    Ready,
    /// A stage failed, or the first boot stopped.
    Failed {
        /// The stage that failed.
        stage: String,
        /// Its last line of output.
        reason: String,
    },
    /// No verdict within the timeout.
    Timeout,
    /// QEMU ended before the console gave a verdict (it could not start, or the guest shut
    /// down, rebooted or panicked).
    QemuExited {
        /// The exit status and QEMU's last line on stderr.
        detail: String,
    },
}

/// What one VM's boot showed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeResult {
    /// The VM's name ([`VmSpec::name`]).
    pub name: String,
    /// The stages that reported, in the order they did.
    pub stages: Vec<StageResult>,
    /// The stages the first-boot program announced; empty when it never started.
    pub expected: Vec<String>,
    /// Seconds from the VM's start until the ready line was seen.
    pub ready: Option<f64>,
    /// The verdict.
    pub outcome: Outcome,
    /// The console's last lines, without escape sequences or control characters.
    pub console_tail: Vec<String>,
    /// The VM's serial log.
    pub serial_log: PathBuf,
    /// The accelerator the VM ran with: `kvm` or `tcg`.
    pub accel: &'static str,
    /// Seconds from the VM's start until the verdict.
    pub seconds: f64,
}

impl NodeResult {
    /// Did the node reach its ready line?
    pub fn is_ready(&self) -> bool {
        self.outcome == Outcome::Ready
    }
}

/// One stage marker as printed on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageMarker {
    /// The stage's name.
    pub name: String,
    /// What it reported.
    pub state: StageState,
    /// The text after `STATE: `.
    pub reason: String,
}

/// The first-boot markers found in a console log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Markers {
    /// The node the first-boot program announced itself as.
    pub node: Option<String>,
    /// The stages it announced, in order.
    pub expected: Vec<String>,
    /// The first marker of each stage, in the order they appeared.
    pub stages: Vec<StageMarker>,
    /// The stage the first boot stopped at.
    pub stopped_at: Option<String>,
    /// Whether the node's ready line appeared.
    pub ready: bool,
}

/// What can keep a verification from running. A node that fails to boot is not an error
/// but an [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A program is not on `PATH`.
    #[error("`{program}` is not installed (Debian package {package})")]
    MissingProgram {
        /// The program.
        program: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// UEFI firmware is missing.
    #[error("UEFI firmware {} is missing (Debian package ovmf)", path.display())]
    MissingFirmware {
        /// The missing file.
        path: PathBuf,
    },
    /// No VM to boot.
    #[error("no VM to boot")]
    NoVms,
    /// A VM's name cannot name a directory.
    #[error("VM name `{name}` is not usable as a directory name: use letters, digits, `-`, `_` and `.`, not starting with `.` or `-`")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// Two VMs have the same name.
    #[error("two VMs are named `{name}`")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A MAC address is malformed or not a unicast address.
    #[error("VM `{name}`: `{mac}` is not a unicast MAC address like 52:54:00:12:34:56")]
    InvalidMac {
        /// The VM.
        name: String,
        /// The address as given.
        mac: String,
    },
    /// Two VMs would share a MAC address.
    #[error("VMs `{first}` and `{second}` would both have MAC address {mac}")]
    DuplicateMac {
        /// The first VM with the address.
        first: String,
        /// The second.
        second: String,
        /// The address.
        mac: String,
    },
    /// More VMs than default MAC addresses.
    #[error("{count} VMs in one run; at most 256")]
    TooManyVms {
        /// How many were asked for.
        count: usize,
    },
    /// A VM asks for no memory or no CPU.
    #[error("VM `{name}` needs at least 1 MiB of memory and 1 CPU")]
    NoResources {
        /// The VM.
        name: String,
    },
    /// A VM's disk image does not exist.
    #[error("VM `{name}`: disk image {} does not exist", path.display())]
    MissingImage {
        /// The VM.
        name: String,
        /// The image.
        path: PathBuf,
    },
    /// A path QEMU must be given is not UTF-8.
    #[error("path {} is not UTF-8; QEMU options need UTF-8 paths", path.display())]
    NonUtf8Path {
        /// The path.
        path: PathBuf,
    },
    /// `qemu-img` failed or answered something unexpected.
    #[error("`qemu-img {command}` on {}: {message}", path.display())]
    QemuImg {
        /// The subcommand (`info`, `create`).
        command: &'static str,
        /// The image or overlay.
        path: PathBuf,
        /// What went wrong (qemu-img's stderr).
        message: String,
    },
    /// KVM was asked for, but does not work here.
    #[error("KVM does not work on this machine: {reason} (use TCG instead)")]
    KvmUnavailable {
        /// What the probe boot showed.
        reason: String,
    },
    /// A program could not be started.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A file or directory could not be read or written (the message names it).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Strips ANSI escape sequences, carriage returns and other control characters (keeping
/// newlines and tabs) from console output.
pub fn clean_console(text: &str) -> String {
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameter and intermediate bytes, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // Character set designations carry one more byte (`ESC ( B`).
                Some('(' | ')' | '*' | '+' | '-' | '.' | '/' | '#' | '%') => {
                    chars.next();
                }
                // Any other escape is two characters long.
                _ => {}
            },
            // 8-bit CSI.
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            '\n' | '\t' => clean.push(c),
            c if c.is_control() => {}
            c => clean.push(c),
        }
    }
    clean
}

/// Finds the first-boot markers in console output (raw or cleaned).
///
/// A marker is a line containing `kiln: ` at its start or after whitespace, whatever comes
/// before it (a kernel timestamp, a journal prefix such as `firstboot[527]: `). Only the
/// first marker of each stage counts: the console and the journal's echo of it print the
/// same line twice.
pub fn parse_markers(console: &str) -> Markers {
    let mut markers = Markers::default();
    let mut seen = HashSet::new();
    for line in clean_console(console).lines() {
        let Some(marker) = find_marker(line) else {
            continue;
        };
        match marker {
            Marker::Start { node, stages } => {
                if markers.node.is_none() {
                    markers.node = Some(node.to_owned());
                    markers.expected = stages.split_whitespace().map(str::to_owned).collect();
                }
            }
            Marker::Stage(stage) => {
                if seen.insert(stage.name.clone()) {
                    markers.stages.push(stage);
                }
            }
            Marker::Stopped(stage) => {
                markers.stopped_at.get_or_insert_with(|| stage.to_owned());
            }
            Marker::Ready => markers.ready = true,
        }
    }
    markers
}

/// One marker line's meaning.
enum Marker<'a> {
    Start { node: &'a str, stages: &'a str },
    Stage(StageMarker),
    Stopped(&'a str),
    Ready,
}

/// The marker in LINE: the first `kiln: ` (at the start or after whitespace) whose text
/// parses as one, so a prefix or a reason that happens to contain `kiln: ` is harmless.
fn find_marker(line: &str) -> Option<Marker<'_>> {
    const TAG: &str = "kiln: ";
    line.match_indices(TAG)
        .filter(|(at, _)| {
            line[..*at]
                .chars()
                .next_back()
                .is_none_or(char::is_whitespace)
        })
        .find_map(|(at, _)| parse_marker(line[at + TAG.len()..].trim_end()))
}

/// Parses the text after `kiln: `.
fn parse_marker(text: &str) -> Option<Marker<'_>> {
    if let Some(rest) = text.strip_prefix("stage ") {
        let (name, rest) = rest.split_once(' ')?;
        let (state, reason) = rest.split_once(':')?;
        let state = match state {
            "ok" => StageState::Ok,
            "skip" => StageState::Skip,
            "fail" => StageState::Fail,
            _ => return None,
        };
        let reason = reason.strip_prefix(' ').unwrap_or(reason);
        return Some(Marker::Stage(StageMarker {
            name: name.to_owned(),
            state,
            reason: reason.to_owned(),
        }));
    }
    if let Some(rest) = text.strip_prefix("first boot of node ") {
        let (node, stages) = rest.split_once(':')?;
        let stages = stages.trim_start().strip_prefix("stages")?;
        return Some(Marker::Start { node, stages });
    }
    if let Some(rest) = text.strip_prefix("first boot stopped at stage ") {
        let stage = rest.split([';', ' ']).next().filter(|s| !s.is_empty())?;
        return Some(Marker::Stopped(stage));
    }
    if let Some(rest) = text.strip_prefix("node ") {
        let node = rest.strip_suffix(" ready")?;
        return (!node.is_empty() && !node.contains(' ')).then_some(Marker::Ready);
    }
    None
}

/// Does KVM work here? Probed once per process by a real boot of the UEFI firmware with
/// `-accel kvm -cpu host` (no disk, no network, a few seconds at most): `/dev/kvm` existing
/// is not enough, a paravirtualized KVM without vmx/svm fails only once the guest runs.
pub fn kvm_works() -> bool {
    kvm_probe().is_ok()
}

/// The probe boot's result, with the reason when KVM does not work.
fn kvm_probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe_kvm)
}

fn probe_kvm() -> Result<(), String> {
    if !Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm does not exist".to_owned());
    }
    let qemu = find_program(QEMU).ok_or_else(|| format!("{QEMU} is not installed"))?;
    for firmware in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(firmware).is_file() {
            return Err(format!("{firmware} is missing"));
        }
    }
    let dir = std::env::temp_dir().join(format!("kiln-kvm-probe-{}", std::process::id()));
    let result = probe_kvm_in(&qemu, &dir);
    // Best effort: a leftover probe directory in the temp dir is harmless.
    let _ = fs_err::remove_dir_all(&dir);
    result
}

fn probe_kvm_in(qemu: &Path, dir: &Path) -> Result<(), String> {
    let vars = dir.join("OVMF_VARS.fd");
    let serial = dir.join("serial.log");
    let stderr = dir.join("qemu.log");
    let io = |error: std::io::Error| error.to_string();
    fs_err::create_dir_all(dir).map_err(io)?;
    fs_err::copy(OVMF_VARS, &vars).map_err(io)?;
    let stderr_file = fs_err::File::create(&stderr).map_err(io)?;
    let mut command = Command::new(qemu);
    command
        .args([
            "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256",
        ])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .args([
            "-drive",
            &pflash(0, Path::new(OVMF_CODE), true).map_err(|e| e.to_string())?,
        ])
        .args([
            "-drive",
            &pflash(1, &vars, false).map_err(|e| e.to_string())?,
        ])
        .arg("-serial")
        .arg(serial_argument(&serial).map_err(|e| e.to_string())?)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file.into_parts().0);
    let child = command
        .spawn()
        .map_err(|error| format!("cannot run {QEMU}: {error}"))?;
    let mut guard = Qemu(Some(child));
    let started = Instant::now();
    loop {
        // QEMU only stops at a KVM error (it pauses the guest), so stderr is read first.
        let errors = fs_err::read_to_string(&stderr).unwrap_or_default();
        if let Some(line) = errors
            .lines()
            .find(|line| KVM_ERRORS.iter().any(|e| line.contains(e)))
        {
            return Err(format!("the probe boot failed: {}", line.trim()));
        }
        let output = fs_err::metadata(&serial).map(|m| m.len()).unwrap_or(0);
        if output > 0 {
            return Ok(());
        }
        if let Some(status) = guard.try_wait() {
            let last = errors
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(format!("the probe boot ended ({status}) {}", last.trim()));
        }
        if started.elapsed() > KVM_PROBE_LIMIT {
            return Err(format!(
                "the probe boot printed nothing in {} s",
                KVM_PROBE_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running QEMU, killed when dropped: no QEMU outlives the function that started it,
/// even on an error or a panic.
struct Qemu(Option<Child>);

impl Qemu {
    /// The exit status if QEMU has ended.
    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Kills QEMU (if still running) and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            // Fails only when QEMU has already ended, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Boots every VM at once and waits for each one's verdict.
///
/// Checks the tools and every VM before starting any; prepares `<work_dir>/<name>/`
/// (`overlay.qcow2` on top of the image, `OVMF_VARS.fd`, `serial.log`, `qemu.log`); then
/// reads the serial logs every 0.5 s. A node is decided by its ready line, a failed stage,
/// the first boot stopping, the timeout, or QEMU ending; its QEMU is killed right then.
/// The results come in the order of `vms`.
pub fn verify(vms: &[VmSpec], options: &VerifyOptions) -> Result<Vec<NodeResult>, VerifyError> {
    let tools = Tools::find()?;
    let macs = check_vms(vms)?;
    let accel = match options.accel {
        Accel::Tcg => "tcg",
        Accel::Auto if kvm_works() => "kvm",
        Accel::Auto => "tcg",
        Accel::Kvm => match kvm_probe() {
            Ok(()) => "kvm",
            Err(reason) => {
                return Err(VerifyError::KvmUnavailable {
                    reason: reason.clone(),
                })
            }
        },
    };

    let mut images = Vec::with_capacity(vms.len());
    for vm in vms {
        if !vm.image.is_file() {
            return Err(VerifyError::MissingImage {
                name: vm.name.clone(),
                path: vm.image.clone(),
            });
        }
        let image = fs_err::canonicalize(&vm.image)?;
        let format = image_format(&tools.qemu_img, &image)?;
        images.push((image, format));
    }

    let mut machines = Vec::with_capacity(vms.len());
    for (vm, (image, format)) in vms.iter().zip(&images) {
        let dir = options.work_dir.join(&vm.name);
        fs_err::create_dir_all(&dir)?;
        let dir = fs_err::canonicalize(&dir)?;
        let files = VmFiles::new(&dir);
        create_overlay(&tools.qemu_img, image, format, &files.overlay)?;
        fs_err::copy(OVMF_VARS, &files.vars)?;
        fs_err::File::create(&files.serial)?;
        machines.push(Machine::prepare(vm, files));
    }

    // All QEMUs start together, so their clocks start together.
    for ((machine, vm), mac) in machines.iter_mut().zip(vms).zip(&macs) {
        let args = qemu_args(vm, mac, accel, options.network, &machine.files)?;
        let stderr = fs_err::File::create(&machine.files.qemu_log)?;
        let child = Command::new(&tools.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.into_parts().0)
            .spawn()
            .map_err(|source| VerifyError::Spawn {
                program: QEMU,
                source,
            })?;
        machine.qemu = Qemu(Some(child));
        machine.started = Instant::now();
    }

    let mut results: Vec<Option<NodeResult>> = vec![None; machines.len()];
    loop {
        for (machine, result) in machines.iter_mut().zip(results.iter_mut()) {
            if result.is_some() {
                continue;
            }
            *result = machine.poll(options.timeout, accel)?;
        }
        if results.iter().all(Option::is_some) {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(results.into_iter().flatten().collect())
}

/// Where the programs and firmware are.
struct Tools {
    qemu: PathBuf,
    qemu_img: PathBuf,
}

impl Tools {
    fn find() -> Result<Self, VerifyError> {
        let qemu = find_program(QEMU).ok_or(VerifyError::MissingProgram {
            program: QEMU,
            package: "qemu-system-x86",
        })?;
        let qemu_img = find_program(QEMU_IMG).ok_or(VerifyError::MissingProgram {
            program: QEMU_IMG,
            package: "qemu-utils",
        })?;
        for firmware in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(firmware).is_file() {
                return Err(VerifyError::MissingFirmware {
                    path: firmware.into(),
                });
            }
        }
        Ok(Self { qemu, qemu_img })
    }
}

/// PROGRAM's path in `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs_err::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks names, resources and MAC addresses; returns each VM's MAC address.
fn check_vms(vms: &[VmSpec]) -> Result<Vec<String>, VerifyError> {
    if vms.is_empty() {
        return Err(VerifyError::NoVms);
    }
    if vms.len() > 256 {
        return Err(VerifyError::TooManyVms { count: vms.len() });
    }
    let mut names = HashSet::new();
    let mut owners: HashMap<String, &str> = HashMap::new();
    let mut macs = Vec::with_capacity(vms.len());
    for (index, vm) in vms.iter().enumerate() {
        if !is_valid_name(&vm.name) {
            return Err(VerifyError::InvalidName {
                name: vm.name.clone(),
            });
        }
        if !names.insert(vm.name.as_str()) {
            return Err(VerifyError::DuplicateName {
                name: vm.name.clone(),
            });
        }
        if vm.memory_mib == 0 || vm.cpus == 0 {
            return Err(VerifyError::NoResources {
                name: vm.name.clone(),
            });
        }
        let mac = match &vm.mac {
            Some(mac) => normalize_mac(mac).ok_or_else(|| VerifyError::InvalidMac {
                name: vm.name.clone(),
                mac: mac.clone(),
            })?,
            None => default_mac(index),
        };
        if let Some(first) = owners.insert(mac.clone(), &vm.name) {
            return Err(VerifyError::DuplicateMac {
                first: first.to_owned(),
                second: vm.name.clone(),
                mac,
            });
        }
        macs.push(mac);
    }
    Ok(macs)
}

/// Can NAME be a directory name on its own (no `/`, `..`, leading `-` or `.`)?
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// MAC in lower case if it is six hex octets separated by `:` and a unicast address.
fn normalize_mac(mac: &str) -> Option<String> {
    let octets: Vec<&str> = mac.split(':').collect();
    if octets.len() != 6 || octets.iter().any(|o| o.len() != 2) {
        return None;
    }
    let first = u8::from_str_radix(octets[0], 16).ok()?;
    for octet in &octets[1..] {
        u8::from_str_radix(octet, 16).ok()?;
    }
    // The least significant bit of the first octet marks a group address.
    if first & 1 != 0 {
        return None;
    }
    Some(mac.to_ascii_lowercase())
}

/// The MAC address of the VM at INDEX that was given none.
fn default_mac(index: usize) -> String {
    format!("52:54:00:ff:00:{:02x}", index & 0xff)
}

/// The paths of one VM's files.
#[derive(Debug, Clone)]
struct VmFiles {
    overlay: PathBuf,
    vars: PathBuf,
    serial: PathBuf,
    qemu_log: PathBuf,
}

impl VmFiles {
    fn new(dir: &Path) -> Self {
        Self {
            overlay: dir.join("overlay.qcow2"),
            vars: dir.join("OVMF_VARS.fd"),
            serial: dir.join("serial.log"),
            qemu_log: dir.join("qemu.log"),
        }
    }
}

/// Run `qemu-img COMMAND ARGS...`; its stdout, or its stderr as the error about `path`.
fn run_qemu_img(
    qemu_img: &Path,
    command: &'static str,
    args: &[&std::ffi::OsStr],
    path: &Path,
) -> Result<Vec<u8>, VerifyError> {
    let output = Command::new(qemu_img)
        .arg(command)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| VerifyError::Spawn {
            program: QEMU_IMG,
            source,
        })?;
    if !output.status.success() {
        return Err(VerifyError::QemuImg {
            command,
            path: path.to_owned(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

/// The format of IMAGE as `qemu-img info` detects it.
fn image_format(qemu_img: &Path, image: &Path) -> Result<String, VerifyError> {
    let error = |message: String| VerifyError::QemuImg {
        command: "info",
        path: image.to_owned(),
        message,
    };
    let stdout = run_qemu_img(
        qemu_img,
        "info",
        &["--output=json".as_ref(), image.as_os_str()],
        image,
    )?;
    let info: serde_json::Value =
        serde_json::from_slice(&stdout).map_err(|e| error(format!("unreadable JSON: {e}")))?;
    info.get("format")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| error("no `format` in its JSON".to_owned()))
}

/// Creates OVERLAY, a qcow2 image whose writes stay out of IMAGE.
fn create_overlay(
    qemu_img: &Path,
    image: &Path,
    format: &str,
    overlay: &Path,
) -> Result<(), VerifyError> {
    run_qemu_img(
        qemu_img,
        "create",
        &[
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            format.as_ref(),
            "-b".as_ref(),
            image.as_os_str(),
            overlay.as_os_str(),
        ],
        overlay,
    )?;
    Ok(())
}

/// PATH as a value inside a QEMU option list, where a comma is written twice.
fn qemu_value(path: &Path) -> Result<String, VerifyError> {
    let text = path.to_str().ok_or_else(|| VerifyError::NonUtf8Path {
        path: path.to_owned(),
    })?;
    Ok(text.replace(',', ",,"))
}

/// The `-serial` argument logging to PATH. `file:` takes the rest verbatim, so commas are
/// not doubled here (QEMU 7.2 would create a file with `,,` in its name).
fn serial_argument(path: &Path) -> Result<String, VerifyError> {
    let text = path.to_str().ok_or_else(|| VerifyError::NonUtf8Path {
        path: path.to_owned(),
    })?;
    Ok(format!("file:{text}"))
}

/// The `-drive` argument of flash UNIT.
fn pflash(unit: u8, path: &Path, read_only: bool) -> Result<String, VerifyError> {
    let read_only = if read_only { ",readonly=on" } else { "" };
    Ok(format!(
        "if=pflash,format=raw,unit={unit}{read_only},file={}",
        qemu_value(path)?
    ))
}

/// QEMU's arguments for the network card with MAC.
fn network_args(network: Network, mac: &str) -> Vec<String> {
    let device = format!("virtio-net-pci,netdev=n0,mac={mac}");
    let netdev = match network {
        Network::None => return vec!["-nic".into(), "none".into()],
        // restrict=on: never plain user networking, which routes guest packets out.
        Network::Restricted => "user,id=n0,restrict=on".to_owned(),
        Network::Shared { port } => {
            format!("socket,id=n0,mcast={SHARED_GROUP}:{port},localaddr=127.0.0.1")
        }
    };
    vec!["-netdev".into(), netdev, "-device".into(), device]
}

/// QEMU's whole command line for VM.
fn qemu_args(
    vm: &VmSpec,
    mac: &str,
    accel: &str,
    network: Network,
    files: &VmFiles,
) -> Result<Vec<String>, VerifyError> {
    let mut args: Vec<String> = vec!["-name".into(), vm.name.clone()];
    args.extend(["-machine", "q35", "-accel", accel].map(String::from));
    if accel == "kvm" {
        args.extend(["-cpu", "host"].map(String::from));
    }
    args.extend(["-m".into(), vm.memory_mib.to_string()]);
    args.extend(["-smp".into(), vm.cpus.to_string()]);
    args.extend(["-display", "none", "-monitor", "none", "-no-reboot"].map(String::from));
    args.extend(["-serial".into(), serial_argument(&files.serial)?]);
    args.extend(["-drive".into(), pflash(0, Path::new(OVMF_CODE), true)?]);
    args.extend(["-drive".into(), pflash(1, &files.vars, false)?]);
    args.extend([
        "-drive".into(),
        format!(
            "if=virtio,format=qcow2,file={}",
            qemu_value(&files.overlay)?
        ),
    ]);
    args.extend(network_args(network, mac));
    Ok(args)
}

/// One VM being booted.
struct Machine {
    name: String,
    files: VmFiles,
    qemu: Qemu,
    started: Instant,
    /// The serial log, once opened; read on from where the last poll stopped.
    serial: Option<fs_err::File>,
    console: Vec<u8>,
    /// When each stage's marker was first seen.
    seen: HashMap<String, f64>,
    ready: Option<f64>,
}

impl Machine {
    fn prepare(vm: &VmSpec, files: VmFiles) -> Self {
        Self {
            name: vm.name.clone(),
            files,
            qemu: Qemu(None),
            started: Instant::now(),
            serial: None,
            console: Vec::new(),
            seen: HashMap::new(),
            ready: None,
        }
    }

    /// Reads what the console printed since the last poll; returns the verdict once there
    /// is one (and kills QEMU then).
    fn poll(
        &mut self,
        timeout: Duration,
        accel: &'static str,
    ) -> Result<Option<NodeResult>, VerifyError> {
        // Whether QEMU has ended is asked before reading, so the read sees all it printed.
        let exited = self.qemu.try_wait();
        let seconds = self.started.elapsed().as_secs_f64();
        self.read_serial()?;

        let text = String::from_utf8_lossy(&self.console);
        // A line still being written could carry half a reason; while QEMU runs, only
        // complete lines count.
        let complete = match exited {
            Some(_) => &text[..],
            None => text.rfind('\n').map_or("", |end| &text[..=end]),
        };
        let markers = parse_markers(complete);
        for stage in &markers.stages {
            self.seen.entry(stage.name.clone()).or_insert(seconds);
        }
        if markers.ready {
            self.ready.get_or_insert(seconds);
        }

        let outcome = if markers.ready {
            Outcome::Ready
        } else if let Some(failed) = markers.stages.iter().find(|s| s.state == StageState::Fail) {
            Outcome::Failed {
                stage: failed.name.clone(),
                reason: failed.reason.clone(),
            }
        } else if let Some(stage) = &markers.stopped_at {
            Outcome::Failed {
                stage: stage.clone(),
                reason: format!("first boot stopped at stage {stage}"),
            }
        } else if let Some(status) = exited {
            Outcome::QemuExited {
                detail: self.exit_detail(status),
            }
        } else if self.started.elapsed() >= timeout {
            Outcome::Timeout
        } else {
            return Ok(None);
        };
        self.qemu.kill();

        let stages = markers
            .stages
            .iter()
            .map(|stage| StageResult {
                name: stage.name.clone(),
                state: stage.state,
                reason: stage.reason.clone(),
                seconds: self.seen.get(&stage.name).copied().unwrap_or(seconds),
            })
            .collect();
        Ok(Some(NodeResult {
            name: self.name.clone(),
            stages,
            expected: markers.expected,
            ready: self.ready,
            outcome,
            console_tail: console_tail(&text, CONSOLE_TAIL_LINES),
            serial_log: self.files.serial.clone(),
            accel,
            seconds,
        }))
    }

    fn read_serial(&mut self) -> Result<(), VerifyError> {
        if self.serial.is_none() {
            self.serial = Some(fs_err::File::open(&self.files.serial)?);
        }
        if let Some(file) = &mut self.serial {
            file.read_to_end(&mut self.console)?;
        }
        Ok(())
    }

    /// The exit status and QEMU's last line on stderr.
    fn exit_detail(&self, status: ExitStatus) -> String {
        let mut detail = match status.code() {
            Some(0) => "exit status 0 (the guest powered off, rebooted or panicked)".to_owned(),
            Some(code) => format!("exit status {code}"),
            None => status.to_string(),
        };
        let log = fs_err::read_to_string(&self.files.qemu_log).unwrap_or_default();
        if let Some(line) = log.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
            detail.push_str(": ");
            detail.push_str(line);
        }
        detail
    }
}

/// The last COUNT non-empty lines of console TEXT, cleaned.
fn console_tail(text: &str, count: usize) -> Vec<String> {
    let clean = clean_console(text);
    let lines: Vec<&str> = clean
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// A table of every node's stages, then one line per node with its verdict (and, for a
/// node without one, its last console lines).
pub fn render_table(results: &[NodeResult]) -> String {
    let mut rows: Vec<[String; 5]> =
        vec![["NODE", "STAGE", "STATE", "SECONDS", "REASON"].map(String::from)];
    for result in results {
        for stage in &result.stages {
            rows.push([
                result.name.clone(),
                stage.name.clone(),
                stage.state.as_str().to_owned(),
                format!("{:.1}", stage.seconds),
                stage.reason.clone(),
            ]);
        }
        let reported: HashSet<&str> = result.stages.iter().map(|s| s.name.as_str()).collect();
        for stage in result
            .expected
            .iter()
            .filter(|s| !reported.contains(s.as_str()))
        {
            rows.push([
                result.name.clone(),
                stage.clone(),
                "-".to_owned(),
                String::new(),
                "no marker".to_owned(),
            ]);
        }
        if result.stages.is_empty() && result.expected.is_empty() {
            rows.push([
                result.name.clone(),
                "-".to_owned(),
                "-".to_owned(),
                String::new(),
                "the first-boot program never started".to_owned(),
            ]);
        }
    }

    let mut widths = [0; 4];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for [node, stage, state, seconds, reason] in &rows {
        let line = format!(
            "{node:<w0$}  {stage:<w1$}  {state:<w2$}  {seconds:>w3$}  {reason}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        table.push_str(line.trim_end());
        table.push('\n');
    }

    table.push('\n');
    for result in results {
        let verdict = match &result.outcome {
            Outcome::Ready => format!(
                "ready after {:.1} s",
                result.ready.unwrap_or(result.seconds)
            ),
            Outcome::Failed { stage, reason } => {
                format!(
                    "failed at stage {stage} after {:.1} s: {reason}",
                    result.seconds
                )
            }
            Outcome::Timeout => {
                format!("timed out after {:.1} s without a verdict", result.seconds)
            }
            Outcome::QemuExited { detail } => {
                format!("QEMU ended after {:.1} s: {detail}", result.seconds)
            }
        };
        table.push_str(&format!(
            "{}: {verdict} ({}, serial log {})\n",
            result.name,
            result.accel,
            result.serial_log.display()
        ));
        if matches!(
            result.outcome,
            Outcome::Timeout | Outcome::QemuExited { .. }
        ) {
            let tail = &result.console_tail;
            if tail.is_empty() {
                table.push_str("    (the console printed nothing)\n");
            }
            for line in &tail[tail.len().saturating_sub(RENDERED_TAIL_LINES)..] {
                table.push_str(&format!("    {line}\n"));
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3hBdsDxe: loading Boot0001\r\n\
[    5.120000] Linux version 6.1.0-28-amd64\r\n\
kiln: first boot of node demo-server: stages network nfs-server containerd images\r\n\
[   40.01] firstboot[527]: kiln: first boot of node demo-server: stages network nfs-server containerd images\r\n\
kiln: stage network ok: 1 DNS server(s) answer\r\n\
[   41.50] firstboot[527]: kiln: stage network ok: 1 DNS server(s) answer\r\n\
\u{1b}[0;32m  OK  \u{1b}[0m] Started nfs-server.service\r\n\
[   60.00] firstboot[527]: kiln: stage nfs-server skip: nothing to export: see /etc/exports\r\n\
kiln: stage nfs-server skip: a later duplicate must not win\r\n\
kiln: stage containerd fail: ctr: failed to dial \"/run/containerd/containerd.sock\": context deadline exceeded\r\n\
kiln: first boot stopped at stage containerd; it is retried at the next boot (kiln-status shows the stages)\r\n";

    #[test]
    fn parse_markers_keeps_the_first_of_each_stage_after_any_prefix() {
        let markers = parse_markers(CONSOLE);
        assert_eq!(markers.node.as_deref(), Some("demo-server"));
        assert_eq!(
            markers.expected,
            ["network", "nfs-server", "containerd", "images"]
        );
        assert_eq!(
            markers.stages,
            [
                StageMarker {
                    name: "network".into(),
                    state: StageState::Ok,
                    reason: "1 DNS server(s) answer".into(),
                },
                StageMarker {
                    name: "nfs-server".into(),
                    state: StageState::Skip,
                    reason: "nothing to export: see /etc/exports".into(),
                },
                StageMarker {
                    name: "containerd".into(),
                    state: StageState::Fail,
                    reason: "ctr: failed to dial \"/run/containerd/containerd.sock\": context deadline exceeded"
                        .into(),
                },
            ]
        );
        assert_eq!(markers.stopped_at.as_deref(), Some("containerd"));
        assert!(!markers.ready);
    }

    #[test]
    fn parse_markers_reads_a_journal_prefixed_failure() {
        let line = "[  102.26] firstboot[527]: kiln: stage network fail: DNS server 192.168.50.10 does not answer\n";
        let markers = parse_markers(line);
        assert_eq!(markers.stages.len(), 1);
        assert_eq!(markers.stages[0].name, "network");
        assert_eq!(markers.stages[0].state, StageState::Fail);
        assert_eq!(
            markers.stages[0].reason,
            "DNS server 192.168.50.10 does not answer"
        );
    }

    #[test]
    fn parse_markers_sees_the_ready_line_through_escapes() {
        let console = "kiln: stage images ok: imported 3 image archive(s) into containerd\r\n\
\u{1b}[1mkiln: node demo-server ready\u{1b}[0m\r\n";
        let markers = parse_markers(console);
        assert!(markers.ready);
        assert_eq!(
            markers.stages[0].reason,
            "imported 3 image archive(s) into containerd"
        );
        assert_eq!(markers.stopped_at, None);
    }

    #[test]
    fn parse_markers_ignores_look_alikes() {
        let console = "mykiln: stage network fail: not a marker\n\
kiln: stage network maybe: unknown state\n\
kiln: node demo server ready\n\
echo \"kiln: $*\"\n\
kiln: stage\n";
        assert_eq!(parse_markers(console), Markers::default());
    }

    #[test]
    fn parse_markers_takes_the_first_tag_that_parses() {
        // A prefix that is no marker, then the real one whose reason quotes another tag.
        let line = "note kiln: hello kiln: stage helm fail: kiln: stage x ok: y\n";
        let markers = parse_markers(line);
        assert_eq!(markers.stages.len(), 1);
        assert_eq!(markers.stages[0].name, "helm");
        assert_eq!(markers.stages[0].reason, "kiln: stage x ok: y");
    }

    #[test]
    fn clean_console_strips_escapes_and_control_characters() {
        let raw = "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3h\u{1b}]0;title\u{7}\u{1b}(Bboot\r\n\
\u{1b}[0;1;32m  OK  \u{1b}[0m] Reached\u{0} target\u{8}\tx\u{9b}2Ky\r\n";
        assert_eq!(clean_console(raw), "boot\n  OK  ] Reached target\txy\n");
    }

    #[test]
    fn restricted_network_is_user_networking_with_restrict_on() {
        assert_eq!(
            network_args(Network::Restricted, "52:54:00:6b:00:01"),
            [
                "-netdev",
                "user,id=n0,restrict=on",
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:54:00:6b:00:01",
            ]
        );
    }

    #[test]
    fn other_networks_have_no_user_networking() {
        assert_eq!(
            network_args(Network::None, "52:54:00:6b:00:01"),
            ["-nic", "none"]
        );
        assert_eq!(
            network_args(Network::Shared { port: 5555 }, "52:54:00:6b:00:02"),
            [
                "-netdev",
                "socket,id=n0,mcast=230.0.0.1:5555,localaddr=127.0.0.1",
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:54:00:6b:00:02",
            ]
        );
    }

    #[test]
    fn qemu_args_escape_commas_in_options_but_not_in_the_serial_path() {
        let files = VmFiles::new(Path::new("/tmp/a,b/demo"));
        let vm = VmSpec::new("demo", "/images/demo.qcow2");
        let args = qemu_args(&vm, "52:54:00:ff:00:00", "tcg", Network::Restricted, &files)
            .expect("UTF-8 paths");
        assert!(args.contains(&"if=virtio,format=qcow2,file=/tmp/a,,b/demo/overlay.qcow2".into()));
        assert!(
            args.contains(&"if=pflash,format=raw,unit=1,file=/tmp/a,,b/demo/OVMF_VARS.fd".into())
        );
        assert!(args.contains(&"file:/tmp/a,b/demo/serial.log".into()));
        assert!(!args.contains(&"-cpu".into()), "-cpu host only with KVM");
        let user: Vec<&String> = args.iter().filter(|a| a.starts_with("user")).collect();
        assert_eq!(user, ["user,id=n0,restrict=on"]);
    }

    #[test]
    fn mac_addresses_are_checked_and_defaults_do_not_clash() {
        assert_eq!(
            normalize_mac("52:54:00:6B:00:01").as_deref(),
            Some("52:54:00:6b:00:01")
        );
        for bad in [
            "52:54:00:6b:00",
            "52-54-00-6b-00-01",
            "52:54:00:6b:00:0g",
            "01:00:5e:00:00:01",
            "52:54:00:6b:00:001",
        ] {
            assert_eq!(normalize_mac(bad), None, "{bad}");
        }
        let mut first = VmSpec::new("a", "a.img");
        let second = VmSpec::new("b", "b.img");
        let macs = check_vms(&[first.clone(), second.clone()]).expect("valid VMs");
        assert_eq!(macs, ["52:54:00:ff:00:00", "52:54:00:ff:00:01"]);

        first.mac = Some("52:54:00:FF:00:01".into());
        let error = check_vms(&[first.clone(), second]).expect_err("a clash");
        assert!(matches!(error, VerifyError::DuplicateMac { .. }), "{error}");

        first.mac = Some("03:54:00:ff:00:01".into());
        let error = check_vms(&[first]).expect_err("a group address");
        assert!(matches!(error, VerifyError::InvalidMac { .. }), "{error}");
    }

    #[test]
    fn names_must_be_usable_as_directories() {
        for good in ["demo-server", "sai_cp1", "node.2"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "..", ".hidden", "-x", "a/b", "a b", "é"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        let error = check_vms(&[VmSpec::new("../x", "x.img")]).expect_err("a bad name");
        assert!(matches!(error, VerifyError::InvalidName { .. }), "{error}");
    }

    #[test]
    fn render_table_lists_missing_stages_and_the_verdict() {
        let result = NodeResult {
            name: "demo-server".into(),
            stages: vec![StageResult {
                name: "network".into(),
                state: StageState::Fail,
                reason: "DNS server 192.168.50.10 does not answer".into(),
                seconds: 83.6,
            }],
            expected: vec!["network".into(), "images".into()],
            ready: None,
            outcome: Outcome::Failed {
                stage: "network".into(),
                reason: "DNS server 192.168.50.10 does not answer".into(),
            },
            console_tail: vec![],
            serial_log: "/w/demo-server/serial.log".into(),
            accel: "tcg",
            seconds: 83.6,
        };
        assert_eq!(
            render_table(&[result]),
            "NODE         STAGE    STATE  SECONDS  REASON\n\
demo-server  network  fail      83.6  DNS server 192.168.50.10 does not answer\n\
demo-server  images   -               no marker\n\
\n\
demo-server: failed at stage network after 83.6 s: DNS server 192.168.50.10 does not answer (tcg, serial log /w/demo-server/serial.log)\n"
        );
    }

    #[test]
    fn kvm_works_answers_quickly() {
        let started = Instant::now();
        let works = kvm_works();
        let elapsed = started.elapsed();
        println!("kvm_works() = {works} in {elapsed:?} ({:?})", kvm_probe());
        assert!(
            elapsed < Duration::from_secs(30),
            "the probe took {elapsed:?}"
        );
        // The answer is cached: a second call does not boot again.
        let again = Instant::now();
        assert_eq!(kvm_works(), works);
        assert!(again.elapsed() < Duration::from_millis(100));
    }
}
