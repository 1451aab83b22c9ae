//! The command line: clap types live here and nowhere else.
//!
//! Each subcommand's arguments become a plain settings struct for `commands`, so the
//! pipeline never sees clap. Exit codes: 0 ok, 1 a finding or failed check, 2 usage or
//! internal error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands::{
    self, CommandError, EvalSettings, FetchSettings, Globals, LockSettings, RenderSettings,
};

/// kiln: declarative, reproducible, air-gapped node images for MicroK8s GPU clusters.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, max_term_width = 100)]
pub struct Cli {
    /// Profile directory (holding cluster.toml) or the cluster file itself.
    #[arg(
        long,
        short = 'p',
        global = true,
        env = "KILN_PROFILE",
        default_value = "."
    )]
    profile: PathBuf,

    /// Secrets file (TOML: NAME = "value"); KILN_SECRET_<NAME> variables override it.
    #[arg(long, global = true, env = "KILN_SECRETS", hide_env_values = true)]
    secrets: Option<PathBuf>,

    /// Fail, naming each difference, when the profile and kiln.lock disagree.
    #[arg(long, global = true)]
    locked: bool,

    /// Content-addressed store [default: $XDG_CACHE_HOME/kiln].
    #[arg(long, global = true, env = "KILN_STORE", hide_env_values = true)]
    store: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the merged profile (every node's layers applied, defaults filled in).
    Eval(EvalArgs),
    /// Render every configuration file of the chosen nodes into a directory.
    Render(RenderArgs),
    /// Check the profile for the failures that break a cluster (exit 1 on an error).
    Lint(LintArgs),
    /// Build outputs from the lock and the store (after lint finds no error).
    #[command(subcommand)]
    Build(BuildCommand),
    /// Rebuild outputs without the step cache and compare byte for byte (exit 1 on a
    /// difference, naming the first differing step, partition and file).
    Check(CheckArgs),
    /// Boot node disk images in QEMU (no network beyond the VMs) and check the first-boot
    /// program's stages (exit 1 on a failed or missing stage).
    Verify(VerifyArgs),
    /// Pin every external input the profile needs in kiln.lock (needs the network).
    Lock(LockArgs),
    /// Download what kiln.lock names and the store lacks, verified (needs the network).
    Fetch(FetchArgs),
    /// Write a raw node disk image to a USB stick or disk, read it back and compare; refuses
    /// mounted, system, fixed (without --force) and too small disks.
    Flash(FlashArgs),
    /// Inspect the content-addressed store, or fill it from a bundle.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Look into a bundle file.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Delete every blob in the store that the profile's kiln.lock does not refer to.
    Gc(JsonArgs),
    /// Serve a tree over HTTP for PXE boot and installers, after verifying it against its
    /// kiln-tree.json (exit 1 without serving when it fails).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Listen on this address only (e.g. 10.1.24.1:8080; port 0 picks a free port).
    #[arg(long, value_name = "IP:PORT")]
    addr: std::net::SocketAddr,
    /// The tree to serve [default: out/<cluster>/pxe, the profile's cluster].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BuildCommand {
    /// The offline bundle: one file with everything a node needs (out/<cluster>/bundle.tar).
    Bundle(BundleArgs),
    /// Bootable GPT disk images of nodes (out/<cluster>/<node>.raw and .qcow2).
    Disk(DiskArgs),
    /// Each node's layer alone: what its disk adds to the base OS, as a tar
    /// (out/<cluster>/<node>.layer.tar). Needs no base-OS packages.
    Layer(DiskArgs),
    /// A USB installer: a hybrid ISO that boots UEFI and writes a node's disk image to its
    /// install disk (out/<cluster>/usb-<node>.iso, or usb.iso for several nodes).
    Usb(DiskArgs),
    /// A PXE set: iPXE scripts per node (by MAC), the installer's kernel and initramfs and
    /// the nodes' images, for `kiln serve` at --base-url (out/<cluster>/pxe).
    Pxe(PxeArgs),
}

#[derive(Debug, Args)]
struct PxeArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// Where the tree will be served (every URL in it starts with this), e.g.
    /// http://10.0.0.1:8080 for `kiln serve --addr 10.0.0.1:8080`.
    #[arg(long, value_name = "URL")]
    base_url: String,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Boot this node (repeatable; default: every node).
    #[arg(long)]
    node: Vec<String>,
    /// Boot this image (raw or qcow2) instead of building the node's disk; needs one --node.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Seconds each VM may take to reach its verdict.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Boot the nodes together on a private network between the VMs (NFS, joins).
    #[arg(long)]
    cluster: bool,
    /// CPU acceleration: `auto` uses KVM only when a probe boot shows it works.
    #[arg(long, default_value = "auto", value_parser = ["auto", "kvm", "tcg"])]
    accel: String,
    /// Keep the VMs' overlays and serial logs even when every node is ready.
    #[arg(long)]
    keep: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Outputs to check: `disk` (every node's disk, the default), `usb` (the ISO of every
    /// node), `pxe` (the PXE set of every node), or one node's: `disk:NODE`, `usb:NODE`,
    /// `pxe:NODE`.
    #[arg(value_name = "OUTPUT")]
    outputs: Vec<String>,
    /// The base URL the PXE set was built for (to check `pxe`).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Keep the second build's steps even when they match.
    #[arg(long)]
    keep: bool,
    /// Directory of the output links (for out/<cluster>/manifest.json).
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DiskArgs {
    /// Build this node's output (repeatable).
    #[arg(long, required_unless_present = "all")]
    node: Vec<String>,
    /// Build every node's output.
    #[arg(long, conflicts_with = "node")]
    all: bool,
    /// Directory for the output links.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Print the step report (which steps were reused, which built) as JSON.
    #[arg(long)]
    json: bool,
}

impl From<DiskArgs> for commands::build::DiskSettings {
    fn from(args: DiskArgs) -> Self {
        commands::build::DiskSettings {
            nodes: args.node,
            all: args.all,
            out: args.out,
            json: args.json,
        }
    }
}

#[derive(Debug, Args)]
struct BundleArgs {
    /// Compression of the bundle.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "zstd"])]
    compression: String,
    /// Carry the base OS's .debs too (to rebuild images at an air-gapped site).
    #[arg(long)]
    include_debs: bool,
    /// Directory for the output links.
    #[arg(long, default_value = "out")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct LintArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = LintFormat::Human)]
    format: LintFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LintFormat {
    /// Each finding with its source line and hint.
    Human,
    /// One line per finding.
    Table,
    /// JSON.
    Json,
    /// SARIF 2.1.0, for CI code scanning.
    Sarif,
}

#[derive(Debug, Args)]
struct FlashArgs {
    /// The raw disk image (out/<cluster>/<node>.raw, not the .qcow2).
    image: PathBuf,
    /// The whole disk to overwrite (/dev/sdX, /dev/disk/by-id/...), or a file to copy to.
    device: PathBuf,
    /// Allow a fixed (non-removable) disk, such as a new server's.
    #[arg(long)]
    force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Read block devices from this sysfs tree (for tests).
    #[arg(long, hide = true, default_value = "/sys")]
    sysfs: PathBuf,
    /// Read the mount table from this mountinfo file (for tests).
    #[arg(long, hide = true, default_value = "/proc/self/mountinfo")]
    mountinfo: PathBuf,
    /// Treat DEVICE, a regular file, as the block device MAJ:MIN of --sysfs (for tests).
    #[arg(long, hide = true, value_name = "MAJ:MIN")]
    assume_block: Option<crate::flash::mounts::DeviceNumber>,
}

#[derive(Debug, Args)]
struct LockArgs {
    /// Re-resolve this entry (an image reference, a chart, snap or file name, or `base`).
    #[arg(long, value_name = "NAME")]
    update: Vec<String>,
    /// Fetch REGISTRY's artifacts from URL instead (digests are unchanged).
    #[arg(long, value_name = "REGISTRY=URL", value_parser = parse_mirror)]
    mirror: Vec<(String, String)>,
}

#[derive(Debug, Args)]
struct FetchArgs {
    /// Parallel downloads.
    #[arg(long, short = 'j', default_value_t = 4)]
    jobs: usize,
    /// Never touch the network: list what the store lacks (exit 1 if anything).
    #[arg(long)]
    offline: bool,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
    /// Fetch REGISTRY's artifacts (or `debian`'s packages) from URL instead.
    #[arg(long, value_name = "REGISTRY=URL", value_parser = parse_mirror)]
    mirror: Vec<(String, String)>,
}

fn parse_mirror(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((registry, url)) if !registry.is_empty() && url.contains("://") => {
            Ok((registry.to_string(), url.trim_end_matches('/').to_string()))
        }
        _ => Err(format!(
            "`{text}` is not REGISTRY=URL (e.g. docker.io=https://mirror.lab:5000)"
        )),
    }
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Re-hash every blob and name the bad ones (exit 1 if any).
    Verify(JsonArgs),
    /// Fill the store from a bundle (verified first), so a site can build with no network.
    Import(FileArgs),
    /// Add files to the store and print their digests, to pin what kiln cannot download
    /// (snaps from `snap download`).
    Add(AddArgs),
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// The bundle's contents by component, with sizes.
    Inspect(FileArgs),
    /// Check every member against the manifest (exit 1 naming the first problem).
    Verify(FileArgs),
}

#[derive(Debug, Args)]
struct FileArgs {
    /// The bundle file.
    file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct JsonArgs {
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Print only this node's merged settings.
    #[arg(long)]
    node: Option<String>,
    /// Print JSON instead of TOML.
    #[arg(long)]
    json: bool,
    /// Name the file:line that set PATH (e.g. `nodes.gpu1.gpu.driver`) and what it overrode.
    #[arg(long, value_name = "PATH")]
    explain: Option<String>,
}

#[derive(Debug, Args)]
struct RenderArgs {
    /// Render this node (repeatable).
    #[arg(long, required_unless_present = "all")]
    node: Vec<String>,
    /// Render every node.
    #[arg(long, conflicts_with = "node")]
    all: bool,
    /// Output directory; one sub-directory per node is written.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

impl Cli {
    fn run(self) -> Result<(), CommandError> {
        let globals = Globals {
            profile: self.profile,
            secrets: self.secrets,
            store: self.store,
            locked: self.locked,
        };
        match self.command {
            Command::Eval(args) => commands::eval::run(
                &globals,
                &EvalSettings {
                    node: args.node,
                    json: args.json,
                    explain: args.explain,
                },
            ),
            Command::Render(args) => commands::render::run(
                &globals,
                &RenderSettings {
                    nodes: if args.all { Vec::new() } else { args.node },
                    out: args.out,
                },
            ),
            Command::Build(BuildCommand::Bundle(args)) => commands::build::bundle(
                &globals,
                &commands::build::BuildSettings {
                    compression: args.compression.parse().map_err(
                        |error: crate::build::archive::ArchiveError| {
                            CommandError::Usage(error.to_string())
                        },
                    )?,
                    include_debs: args.include_debs,
                    out: args.out,
                },
            ),
            Command::Build(BuildCommand::Disk(args)) => {
                commands::build::disk(&globals, &args.into())
            }
            Command::Build(BuildCommand::Usb(args)) => commands::build::usb(&globals, &args.into()),
            Command::Build(BuildCommand::Pxe(args)) => {
                commands::build::pxe(&globals, &args.disk.into(), &args.base_url)
            }
            Command::Build(BuildCommand::Layer(args)) => {
                commands::build::layer(&globals, &args.into())
            }
            Command::Verify(args) => commands::verify::run(
                &globals,
                &commands::verify::VerifySettings {
                    nodes: args.node,
                    image: args.image,
                    timeout: std::time::Duration::from_secs(args.timeout),
                    cluster: args.cluster,
                    accel: match args.accel.as_str() {
                        "kvm" => crate::verify::Accel::Kvm,
                        "tcg" => crate::verify::Accel::Tcg,
                        _ => crate::verify::Accel::Auto,
                    },
                    keep: args.keep,
                    json: args.json,
                },
            ),
            Command::Check(args) => commands::check::run(
                &globals,
                &commands::check::CheckSettings {
                    outputs: args.outputs,
                    base_url: args.base_url,
                    keep: args.keep,
                    out: args.out,
                    json: args.json,
                },
            ),
            Command::Lint(args) => commands::lint::run(
                &globals,
                match args.format {
                    LintFormat::Human => commands::lint::Format::Human,
                    LintFormat::Table => commands::lint::Format::Table,
                    LintFormat::Json => commands::lint::Format::Json,
                    LintFormat::Sarif => commands::lint::Format::Sarif,
                },
            ),
            Command::Lock(args) => commands::lock::run(
                &globals,
                &LockSettings {
                    update: args.update,
                    mirrors: args.mirror,
                },
            ),
            Command::Fetch(args) => commands::fetch::run(
                &globals,
                &FetchSettings {
                    jobs: args.jobs,
                    offline: args.offline,
                    json: args.json,
                    mirrors: args.mirror,
                },
            ),
            Command::Flash(args) => commands::flash::run(&commands::flash::FlashSettings {
                image: args.image,
                device: args.device,
                force: args.force,
                json: args.json,
                view: crate::flash::SystemView {
                    sysfs: args.sysfs,
                    mountinfo: args.mountinfo,
                    assume_block: args.assume_block,
                },
            }),
            Command::Store(StoreCommand::Import(args)) => {
                commands::bundle::import(&globals, &args.file, args.json)
            }
            Command::Bundle(BundleCommand::Inspect(args)) => {
                commands::bundle::inspect(&args.file, args.json)
            }
            Command::Bundle(BundleCommand::Verify(args)) => {
                commands::bundle::verify(&args.file, args.json)
            }
            Command::Store(StoreCommand::Add(args)) => {
                commands::store::add(&globals, &args.files, args.json)
            }
            Command::Store(StoreCommand::Verify(args)) => {
                commands::store::verify(&globals, args.json)
            }
            Command::Gc(args) => commands::store::gc(&globals, args.json),
            Command::Serve(args) => commands::serve::run(
                &globals,
                &commands::serve::ServeSettings {
                    addr: args.addr,
                    root: args.root,
                },
            ),
        }
    }
}

/// Parse the command line, run, and turn the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(error.exit_code())
        }
    }
}
