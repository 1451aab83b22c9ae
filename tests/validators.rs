//! The real validators, run over every file kiln renders for the shipped profiles.
//!
//! Snapshot tests pin the bytes kiln writes, but not whether the programs that read those
//! bytes on a node accept them. Here each file goes through the tool that will consume it (or
//! the closest offline equivalent): cloud-init's own schema check and network parser,
//! shellcheck, `systemd-analyze verify`, YAML 1.2 (serde_yaml) and YAML 1.1 (PyYAML, as used by
//! cloud-init) parsers, the `toml` crate, plus the structural rules of MicroK8s' launch
//! configuration, containerd's hosts.toml and exports(5). A missing tool fails the test and
//! names its Debian package: these checks are never skipped silently.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The shipped profiles.
const PROFILES: [&str; 2] = ["sai", "demo"];

/// Top-level keys of the cloud-config modules kiln's user-data may use. cloud-init 22.4's
/// `schema` does not flag unknown top-level keys, so a misspelt module would pass it silently.
const CLOUD_CONFIG_KEYS: &[&str] = &[
    "hostname",
    "fqdn",
    "prefer_fqdn_over_hostname",
    "manage_etc_hosts",
    "timezone",
    "ssh_pwauth",
    "disable_root",
    "users",
    "ntp",
    "runcmd",
    "write_files",
    "bootcmd",
    "packages",
    "snap",
];

/// Top-level keys of a MicroK8s launch configuration (reference §1, cluster-agent's schema).
/// MicroK8s only warns about unknown keys and ignores them.
const LAUNCH_CONFIG_KEYS: &[&str] = &[
    "version",
    "addonRepositories",
    "addons",
    "extraKubeletArgs",
    "extraKubeAPIServerArgs",
    "extraKubeProxyArgs",
    "extraKubeControllerManagerArgs",
    "extraKubeSchedulerArgs",
    "extraKubeliteEnv",
    "extraContainerdArgs",
    "extraContainerdEnv",
    "extraDqliteArgs",
    "extraDqliteEnv",
    "extraMicroK8sClusterAgentArgs",
    "extraMicroK8sClusterAgentEnv",
    "extraMicroK8sAPIServerProxyArgs",
    "extraMicroK8sAPIServerProxyEnv",
    "extraEtcdArgs",
    "extraEtcdEnv",
    "extraFlanneldArgs",
    "extraFlanneldEnv",
    "extraSANs",
    "containerdRegistryConfigs",
    "extraConfigFiles",
    "persistentClusterToken",
    "join",
    "extraCNIEnv",
    "extraFIPSEnv",
];

/// Launch configuration keys that only version 0.2.0 (MicroK8s 1.28+) accepts.
const LAUNCH_CONFIG_KEYS_0_2: &[&str] = &["extraCNIEnv", "extraFIPSEnv"];

/// Port of MicroK8s' cluster agent, which `join.url` must name.
const CLUSTER_AGENT_PORT: &str = "25000";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// One shipped profile, rendered into a scratch directory.
struct Rendered {
    profile: &'static str,
    /// Keeps the scratch directory alive.
    _guard: common::Kiln,
    /// `render --all --out` directory: one subdirectory per node.
    out: PathBuf,
    /// Every file below `out`, as `NODE/relative/path`.
    files: Vec<String>,
}

impl Rendered {
    fn new(profile: &'static str) -> Self {
        let (guard, out) = common::render_profile(profile);
        let files = common::files_below(&out);
        assert!(!files.is_empty(), "nothing rendered for profile {profile}");
        Rendered {
            profile,
            _guard: guard,
            out,
            files,
        }
    }

    /// Rendered files whose `NODE/...` path satisfies `keep`.
    fn matching(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        self.files
            .iter()
            .filter(|path| keep(path))
            .cloned()
            .collect()
    }

    /// The rendered nodes, in name order.
    fn nodes(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .map(|path| node_of(path).to_string())
            .collect()
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.out.join(relative)
    }

    fn read(&self, relative: &str) -> String {
        fs_err::read_to_string(self.path(relative)).unwrap()
    }

    /// `PROFILE:NODE/path`, for messages.
    fn label(&self, relative: &str) -> String {
        format!("{}:{relative}", self.profile)
    }
}

/// Render every shipped profile.
fn rendered_profiles() -> Vec<Rendered> {
    PROFILES.into_iter().map(Rendered::new).collect()
}

/// The node directory a `NODE/...` path belongs to.
fn node_of(path: &str) -> &str {
    path.split('/').next().unwrap()
}

/// `kiln eval --json` of a shipped profile: the merged settings, including each node's role.
fn eval_profile(profile: &str) -> serde_json::Value {
    let mut args = vec![
        "--profile".to_string(),
        common::repo()
            .join("profiles")
            .join(profile)
            .display()
            .to_string(),
    ];
    let secrets = secrets_file(profile);
    if secrets.exists() {
        args.extend(["--secrets".to_string(), secrets.display().to_string()]);
    }
    args.extend(["eval".to_string(), "--json".to_string()]);
    let run = common::Kiln::new().args(args).run();
    assert_eq!(
        run.code, 0,
        "kiln eval failed for {profile}:\n{}",
        run.stderr
    );
    serde_json::from_str(&run.stdout).expect("kiln eval --json prints JSON")
}

fn secrets_file(profile: &str) -> PathBuf {
    common::repo()
        .join("tests/fixtures")
        .join(format!("{profile}-secrets.toml"))
}

/// Run a validator. A validator that is not installed is a test failure naming the Debian
/// package that provides it.
fn run_tool(command: &mut Command, package: &str) -> Output {
    let program = command.get_program().to_string_lossy().to_string();
    match command.output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed: install the Debian package `{package}` \
             (these validators are required, never skipped)"
        ),
        Err(error) => panic!("cannot run `{program}`: {error}"),
    }
}

/// A validator's exit status, stdout and stderr, for a failure message.
fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Fail with every problem found, not just the first.
fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s)\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// Every YAML document of a (possibly multi-document) file, parsed with serde_yaml.
fn yaml_documents(text: &str) -> Result<Vec<serde_yaml::Value>, String> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .map(|(index, document)| {
            serde_yaml::Value::deserialize(document)
                .map_err(|error| format!("document {}: {error}", index + 1))
        })
        .collect()
}

/// The single YAML document of a file, which must be a mapping.
fn yaml_mapping(text: &str) -> Result<serde_yaml::Mapping, String> {
    let mut documents = yaml_documents(text)?;
    if documents.len() != 1 {
        return Err(format!(
            "expected one YAML document, found {}",
            documents.len()
        ));
    }
    match documents.remove(0) {
        serde_yaml::Value::Mapping(mapping) => Ok(mapping),
        other => Err(format!("expected a YAML mapping, found {other:?}")),
    }
}

/// Strings of a YAML sequence (an absent key gives none; anything else is an error).
fn yaml_strings(value: Option<&serde_yaml::Value>, what: &str) -> Result<Vec<String>, String> {
    match value {
        None => Ok(Vec::new()),
        Some(serde_yaml::Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what}: {item:?} is not a string"))
            })
            .collect(),
        Some(other) => Err(format!("{what}: {other:?} is not a sequence")),
    }
}

/// Copy a tree, keeping symbolic links as links (systemd's unit directories are full of them).
fn copy_tree(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for entry in fs_err::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs_err::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), &target).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cloud-init
// ---------------------------------------------------------------------------------------------

#[test]
fn user_data_passes_cloud_init_schema() {
    let mut problems = Vec::new();
    for rendered in rendered_profiles() {
        let files = rendered.matching(|path| path.ends_with("/cloud-init/user-data"));
        assert_eq!(
            files.len(),
            rendered.nodes().len(),
            "{}: not every node has cloud-init/user-data",
            rendered.profile
        );
        for file in files {
            let label = rendered.label(&file);
            let text = rendered.read(&file);
            if !text.starts_with("#cloud-config\n") {
                problems.push(format!(
                    "{label}: does not start with `#cloud-config`, so cloud-init does not read it \
                     as cloud-config (first line: {:?})",
                    text.lines().next().unwrap_or("")
                ));
            }

            let output = run_tool(
                Command::new("cloud-init")
                    .args(["schema", "-c"])
                    .arg(rendered.path(&file)),
                "cloud-init",
            );
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            if !output.status.success() {
                problems.push(format!(
                    "{label}: cloud-init schema rejects it: {}",
                    describe(&output)
                ));
            } else if printed.contains("DEPRECATED") {
                // Exit 0, but deprecated forms are errors in newer cloud-init (nodes run 24.x).
                problems.push(format!(
                    "{label}: cloud-init schema reports deprecations: {}",
                    describe(&output)
                ));
            }

            match yaml_mapping(&text) {
                Ok(mapping) => {
                    for key in mapping.keys() {
                        match key.as_str() {
                            Some(name) if CLOUD_CONFIG_KEYS.contains(&name) => {}
                            _ => problems.push(format!(
                                "{label}: top-level key {key:?} is not a cloud-config module kiln \
                                 uses (allowed: {})",
                                CLOUD_CONFIG_KEYS.join(", ")
                            )),
                        }
                    }
                }
                Err(error) => problems.push(format!("{label}: {error}")),
            }
        }
    }
    assert_no_problems("cloud-init user-data", &problems);
}

/// The image-only cloud-init settings (`/etc/cloud/cloud.cfg.d/90-kiln.cfg`): valid
/// cloud-config, and only the keys kiln means to set there.
#[test]
fn image_cloud_cfg_passes_cloud_init_schema() {
    let mut problems = Vec::new();
    for rendered in rendered_profiles() {
        let files =
            rendered.matching(|path| path.ends_with("/image/etc/cloud/cloud.cfg.d/90-kiln.cfg"));
        assert_eq!(files.len(), rendered.nodes().len(), "{}", rendered.profile);
        for file in files {
            let label = rendered.label(&file);
            // `schema -c` wants the header user-data has; cloud.cfg.d files are read without.
            let text = rendered.read(&file);
            let with_header = rendered.path(&file).with_extension("cloud-config");
            fs_err::write(&with_header, format!("#cloud-config\n{text}")).unwrap();
            let output = run_tool(
                Command::new("cloud-init")
                    .args(["schema", "-c"])
                    .arg(&with_header),
                "cloud-init",
            );
            if !output.status.success() {
                problems.push(format!(
                    "{label}: cloud-init schema rejects it: {}",
                    describe(&output)
                ));
            }
            match yaml_mapping(&text) {
                Ok(mapping) => {
                    let keys: Vec<&str> = mapping.keys().filter_map(|key| key.as_str()).collect();
                    if keys != ["datasource_list", "locale", "growpart", "resize_rootfs"] {
                        problems.push(format!("{label}: unexpected keys {keys:?}"));
                    }
                }
                Err(error) => problems.push(format!("{label}: {error}")),
            }
        }
    }
    assert_no_problems("image cloud.cfg", &problems);
}

/// The DNS server's dnsmasq configuration passes `dnsmasq --test`, and names every node.
#[test]
fn dnsmasq_configuration_passes_dnsmasq_test() {
    let mut problems = Vec::new();
    let mut seen = 0;
    for rendered in rendered_profiles() {
        for file in rendered.matching(|path| path.ends_with("/root/etc/dnsmasq.d/kiln.conf")) {
            seen += 1;
            let label = rendered.label(&file);
            let output = run_tool(
                Command::new("dnsmasq")
                    .arg("--test")
                    .arg("-C")
                    .arg(rendered.path(&file)),
                "dnsmasq-base",
            );
            if !output.status.success() {
                problems.push(format!(
                    "{label}: dnsmasq rejects it: {}",
                    describe(&output)
                ));
            }
            let text = rendered.read(&file);
            for node in rendered.nodes() {
                if !text.contains(&format!(",{node},")) {
                    problems.push(format!("{label}: no host-record for node {node}"));
                }
            }
        }
    }
    assert!(seen > 0, "no profile has a DNS server node");
    assert_no_problems("dnsmasq configuration", &problems);
}

/// The networkd `.network` file cloud-init generated for interface `name`.
fn networkd_file_for(dir: &Path, name: &str) -> Option<String> {
    let network_dir = dir.join("etc/systemd/network");
    let entries = fs_err::read_dir(&network_dir).ok()?;
    let mut found = None;
    for entry in entries {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension == "network")
        {
            let text = fs_err::read_to_string(&path).unwrap();
            if text
                .lines()
                .any(|line| line.trim() == format!("Name={name}"))
            {
                found = Some(text);
            }
        }
    }
    found
}

/// The space-separated values of every `KEY=` line of a networkd file.
fn networkd_values(text: &str, key: &str) -> BTreeSet<String> {
    let prefix = format!("{key}=");
    text.lines()
        .filter_map(|line| line.trim().strip_prefix(&prefix))
        .flat_map(|values| values.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn network_config_is_accepted_by_cloud_init() {
    let mut problems = Vec::new();
    for rendered in rendered_profiles() {
        let files = rendered.matching(|path| path.ends_with("/cloud-init/network-config"));
        assert_eq!(
            files.len(),
            rendered.nodes().len(),
            "{}: not every node has cloud-init/network-config",
            rendered.profile
        );
        for file in files {
            let label = rendered.label(&file);
            let mapping = match yaml_mapping(&rendered.read(&file)) {
                Ok(mapping) => mapping,
                Err(error) => {
                    problems.push(format!("{label}: {error}"));
                    continue;
                }
            };
            if mapping.get("version") != Some(&serde_yaml::Value::from(2)) {
                problems.push(format!(
                    "{label}: `version` is {:?}, not the number 2 (netplan v2 format)",
                    mapping.get("version")
                ));
            }
            let Some(ethernets) = mapping
                .get("ethernets")
                .and_then(|value| value.as_mapping())
            else {
                problems.push(format!("{label}: no `ethernets` mapping"));
                continue;
            };
            if ethernets.is_empty() {
                problems.push(format!("{label}: `ethernets` is empty"));
            }

            let outdir = tempfile::tempdir().unwrap();
            let output = run_tool(
                Command::new("cloud-init")
                    .args(["devel", "net-convert", "-p"])
                    .arg(rendered.path(&file))
                    .args(["-k", "yaml", "-D", "debian", "-O", "networkd", "-d"])
                    .arg(outdir.path()),
                "cloud-init",
            );
            if !output.status.success() {
                problems.push(format!(
                    "{label}: cloud-init devel net-convert rejects it: {}",
                    describe(&output)
                ));
                continue;
            }

            for (id, config) in ethernets {
                let id = id.as_str().unwrap_or_default();
                // cloud-init names the interface after set-name when there is one.
                let name = config
                    .get("set-name")
                    .and_then(|value| value.as_str())
                    .unwrap_or(id);
                let Some(network) = networkd_file_for(outdir.path(), name) else {
                    problems.push(format!(
                        "{label}: cloud-init wrote no .network file with Name={name}; it wrote: \
                         {:?}\nnet-convert said: {}",
                        common::files_below(outdir.path()),
                        describe(&output)
                    ));
                    continue;
                };
                let expected = |key: &str, field: Option<&serde_yaml::Value>, what: &str| {
                    let mut missing = Vec::new();
                    match yaml_strings(field, what) {
                        Ok(wanted) => {
                            if wanted.is_empty() {
                                missing.push(format!("{label}: {name} has no {what}"));
                            }
                            let present = networkd_values(&network, key);
                            for value in wanted {
                                if !present.contains(&value) {
                                    missing.push(format!(
                                        "{label}: {what} {value} of {name} is not in the \
                                         generated networkd file as {key}=:\n{network}"
                                    ));
                                }
                            }
                        }
                        Err(error) => missing.push(format!("{label}: {error}")),
                    }
                    missing
                };
                let nameservers = config.get("nameservers");
                problems.extend(expected("Address", config.get("addresses"), "address"));
                problems.extend(expected(
                    "DNS",
                    nameservers.and_then(|value| value.get("addresses")),
                    "DNS server",
                ));
                problems.extend(expected(
                    "Domains",
                    nameservers.and_then(|value| value.get("search")),
                    "search domain",
                ));
                if let Some(mac) = config
                    .get("match")
                    .and_then(|value| value.get("macaddress"))
                    .and_then(|value| value.as_str())
                {
                    let macs = networkd_values(&network, "MACAddress");
                    if !macs.iter().any(|found| found.eq_ignore_ascii_case(mac)) {
                        problems.push(format!(
                            "{label}: {name} is not matched by MAC {mac}:\n{network}"
                        ));
                    }
                }
            }
        }
    }
    assert_no_problems("cloud-init network-config", &problems);
}

#[test]
fn meta_data_has_an_instance_id() {
    let mut problems = Vec::new();
    for rendered in rendered_profiles() {
        let files = rendered.matching(|path| path.ends_with("/cloud-init/meta-data"));
        assert_eq!(
            files.len(),
            rendered.nodes().len(),
            "{}: not every node has cloud-init/meta-data",
            rendered.profile
        );
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for file in files {
            let label = rendered.label(&file);
            let mapping = match yaml_mapping(&rendered.read(&file)) {
                Ok(mapping) => mapping,
                Err(error) => {
                    problems.push(format!("{label}: {error}"));
                    continue;
                }
            };
            match mapping.get("instance-id").and_then(|value| value.as_str()) {
                Some(id) if !id.trim().is_empty() => {
                    // cloud-init runs per-instance modules again only for a new instance-id.
                    if let Some(other) = seen.insert(id.to_string(), label.clone()) {
                        problems.push(format!("{label}: instance-id {id} is also {other}'s"));
                    }
                }
                other => problems.push(format!(
                    "{label}: `instance-id` is {other:?}, not a non-empty string"
                )),
            }
        }
    }
    assert_no_problems("cloud-init meta-data", &problems);
}

// ---------------------------------------------------------------------------------------------
// Scripts and units
// ---------------------------------------------------------------------------------------------

#[test]
fn scripts_pass_shellcheck() {
    let mut problems = Vec::new();
    for rendered in rendered_profiles() {
        let scripts = rendered.matching(|path| {
            fs_err::read(rendered.path(path))
                .unwrap()
                .starts_with(b"#!")
        });
        assert!(
            scripts.len() >= rendered.nodes().len(),
            "{}: expected at least one script per node, found {scripts:?}",
            rendered.profile
        );
        for file in scripts {
            let label = rendered.label(&file);
            let mode = fs_err::metadata(rendered.path(&file))
                .unwrap()
                .permissions()
                .mode();
            if mode & 0o100 == 0 {
                problems.push(format!(
                    "{label}: a script with mode {:04o}, which its owner cannot execute",
                    mode & 0o7777
                ));
            }
            // --norc: no .shellcheckrc from the environment changes the verdict.
            let output = run_tool(
                Command::new("shellcheck")
                    .arg("--norc")
                    .arg(rendered.path(&file)),
                "shellcheck",
            );
            if !output.status.success() {
                problems.push(format!("{label}: shellcheck: {}", describe(&output)));
            }
        }
    }
    assert_no_problems("shellcheck", &problems);
}

#[test]
fn the_installer_passes_shellcheck() {
    let installer = common::repo().join("templates/installer");
    let output = run_tool(
        Command::new("shellcheck")
            .arg("--norc")
            .arg(installer.join("init.sh"))
            .arg(installer.join("udhcpc.script")),
        "shellcheck",
    );
    assert!(output.status.success(), "{}", describe(&output));
}

/// Host directory of vendor units, copied into the verification root.
const HOST_UNITS: &str = "/usr/lib/systemd/system";

/// Unit suffixes, to tell a line that starts with a unit's name.
const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".target",
    ".mount",
    ".automount",
    ".swap",
    ".path",
    ".timer",
    ".slice",
    ".scope",
    ".device",
];

/// The lines of `systemd-analyze verify` output that may be about the node's own units.
///
/// verify loads the unit's whole dependency graph from the verification root, which holds a
/// copy of the build host's vendor units (`sysinit.target`, `network-online.target`, ...,
/// without which every unit with default dependencies fails to load). A line that *starts* by
/// naming one of those host unit files or another unit (e.g.
/// "/usr/lib/systemd/system/foo.service:3: Unknown key ...", "foo.service: ...") is about the
/// host's systemd packaging, not about kiln's output, and is dropped. Every other line is kept,
/// in particular any line that mentions one of the node's own units anywhere, such as
/// "Failed to create kiln-firstboot.service/start: Unit sysinit.target not found."
fn own_unit_lines(output: &str, root: &Path, own_units: &BTreeSet<String>) -> Vec<String> {
    let root = root.display().to_string();
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| {
            if own_units.iter().any(|unit| line.contains(unit.as_str())) {
                return true;
            }
            let head = line.split(':').next().unwrap_or("");
            let head = head.strip_prefix(&root).unwrap_or(head);
            let host_unit_file =
                head.starts_with("/usr/lib/systemd/") || head.starts_with("/lib/systemd/");
            let other_unit = !head.contains(char::is_whitespace)
                && UNIT_SUFFIXES.iter().any(|suffix| head.ends_with(suffix));
            !(host_unit_file || other_unit)
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    assert!(
        Path::new(HOST_UNITS).is_dir(),
        "{HOST_UNITS} is missing: install the Debian package `systemd`"
    );
    let mut problems = Vec::new();
    let mut checked = 0;
    for rendered in rendered_profiles() {
        for node in rendered.nodes() {
            let units: Vec<String> = rendered.matching(|path| {
                node_of(path) == node
                    && path.contains("/root/")
                    && (path.ends_with(".service") || path.ends_with(".mount"))
            });
            if units.is_empty() {
                problems.push(format!(
                    "{}:{node}: no systemd units rendered",
                    rendered.profile
                ));
                continue;
            }
            let own_units: BTreeSet<String> = units
                .iter()
                .map(|path| path.rsplit('/').next().unwrap().to_string())
                .collect();
            // The node's root file system, on top of the host's vendor units: the units
            // reference the node's programs (/usr/lib/kiln/firstboot) and targets systemd ships.
            let root = tempfile::tempdir().unwrap();
            copy_tree(
                Path::new(HOST_UNITS),
                &root.path().join("usr/lib/systemd/system"),
            );
            copy_tree(&rendered.path(&format!("{node}/root")), root.path());
            for unit in units {
                checked += 1;
                let label = rendered.label(&unit);
                let inside = unit.strip_prefix(&format!("{node}/root/")).unwrap();
                let output = run_tool(
                    Command::new("systemd-analyze")
                        .arg("verify")
                        .arg(format!("--root={}", root.path().display()))
                        .arg(root.path().join(inside))
                        .env("SYSTEMD_LOG_COLOR", "0"),
                    "systemd",
                );
                let printed = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                let own = own_unit_lines(&printed, root.path(), &own_units);
                if !output.status.success() || !own.is_empty() {
                    problems.push(format!(
                        "{label}: systemd-analyze verify: {}\nlines about the node's units:\n{}",
                        describe(&output),
                        own.join("\n")
                    ));
                }
            }
        }
    }
    assert!(checked > 0, "no units were verified");
    assert_no_problems("systemd-analyze verify", &problems);
}

// ---------------------------------------------------------------------------------------------
// YAML and TOML
// ---------------------------------------------------------------------------------------------

/// Parse a file with PyYAML (YAML 1.1, as cloud-init, Ansible and many tools read it) and return
/// its documents as JSON; values JSON cannot hold (dates, ...) become their Python repr.
fn pyyaml_documents(path: &Path) -> Result<serde_json::Value, String> {
    const SCRIPT: &str = "import sys, json, yaml\n\
                          docs = list(yaml.safe_load_all(sys.stdin.buffer))\n\
                          json.dump(docs, sys.stdout, default=repr)\n";
    let mut child = match Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "`python3` is not installed: install the Debian packages `python3` and `python3-yaml`"
        ),
        Err(error) => panic!("cannot run python3: {error}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&fs_err::read(path).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'yaml'"),
        "python3 has no PyYAML: install the Debian package `python3-yaml`"
    );
    if !output.status.success() {
        return Err(format!("PyYAML rejects it: {}", describe(&output)));
    }
    serde_json::from_slice(&output.stdout).map_err(|error| {
        format!(
            "PyYAML's result is not JSON ({error}): {}",
            describe(&output)
        )
    })
}

#[test]
fn yaml_files_parse_under_yaml_1_1_and_1_2() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for rendered in rendered_profiles() {
        let files = rendered.matching(|path| {
            path.ends_with(".yaml")
                || path.ends_with("/cloud-init/user-data")
                || path.ends_with("/cloud-init/network-config")
                || path.ends_with("/cloud-init/meta-data")
        });
        for file in files {
            checked += 1;
            let label = rendered.label(&file);
            let documents = match yaml_documents(&rendered.read(&file)) {
                Ok(documents) => documents,
                Err(error) => {
                    problems.push(format!("{label}: serde_yaml rejects it: {error}"));
                    continue;
                }
            };
            if documents.is_empty() {
                problems.push(format!("{label}: holds no YAML document"));
            }
            let strict = match serde_json::to_value(&documents) {
                Ok(value) => value,
                Err(error) => {
                    problems.push(format!("{label}: not representable as JSON: {error}"));
                    continue;
                }
            };
            match pyyaml_documents(&rendered.path(&file)) {
                // The same bytes must mean the same data to both YAML versions: `yes`, `0644`,
                // `1:20` or `2001-12-14` written plain would read differently.
                Ok(loose) if loose != strict => problems.push(format!(
                    "{label}: YAML 1.1 (PyYAML) and YAML 1.2 (serde_yaml) read different data\n\
                     PyYAML:     {loose}\nserde_yaml: {strict}"
                )),
                Ok(_) => {}
                Err(error) => problems.push(format!("{label}: {error}")),
            }
        }
    }
    assert!(checked > 0, "no YAML files were checked");
    assert_no_problems("YAML", &problems);
}

/// Check a containerd hosts.toml text: a `server` URL and `[host."URL"]` tables with
/// capabilities.
fn hosts_toml_problems(label: &str, text: &str) -> Vec<String> {
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(error) => return vec![format!("{label}: not TOML: {error}")],
    };
    let mut problems = Vec::new();
    match table.get("server").and_then(toml::Value::as_str) {
        Some(server) if server.starts_with("https://") || server.starts_with("http://") => {}
        other => problems.push(format!(
            "{label}: `server` is {other:?}, not an http(s) URL"
        )),
    }
    match table.get("host").and_then(toml::Value::as_table) {
        Some(hosts) if !hosts.is_empty() => {
            for (url, host) in hosts {
                let capabilities = host
                    .get("capabilities")
                    .and_then(toml::Value::as_array)
                    .map(|items| items.iter().map(toml::Value::as_str).collect::<Vec<_>>());
                match capabilities {
                    Some(items)
                        if !items.is_empty()
                            && items.iter().all(|item| {
                                matches!(item, Some("pull" | "resolve" | "push"))
                            }) => {}
                    _ => problems.push(format!(
                        "{label}: host.{url:?}.capabilities is {:?}, not a list of pull/resolve/push",
                        host.get("capabilities")
                    )),
                }
            }
        }
        _ => problems.push(format!("{label}: no [host.\"URL\"] table")),
    }
    problems
}

#[test]
fn hosts_toml_files_are_valid() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for rendered in rendered_profiles() {
        // Every TOML file parses (containerd's config.toml included) ...
        for file in rendered.matching(|path| path.ends_with(".toml")) {
            if let Err(error) = rendered.read(&file).parse::<toml::Table>() {
                problems.push(format!("{}: not TOML: {error}", rendered.label(&file)));
            }
        }
        // ... and registry hosts files, on disk or inside a launch configuration, are complete.
        for file in rendered.matching(|path| {
            let parts: Vec<&str> = path.split('/').collect();
            parts.len() >= 4
                && parts[parts.len() - 1] == "hosts.toml"
                && parts[parts.len() - 3] == "certs.d"
                && parts.get(1) == Some(&"root")
        }) {
            checked += 1;
            problems.extend(hosts_toml_problems(
                &rendered.label(&file),
                &rendered.read(&file),
            ));
        }
        for file in rendered.matching(|path| path.ends_with("/root/etc/microk8s.yaml")) {
            let Ok(documents) = yaml_documents(&rendered.read(&file)) else {
                continue; // reported by the YAML test
            };
            for document in documents {
                let Some(configs) = document
                    .get("containerdRegistryConfigs")
                    .and_then(|value| value.as_mapping())
                else {
                    continue;
                };
                for (registry, text) in configs {
                    checked += 1;
                    let label = format!(
                        "{} containerdRegistryConfigs[{registry:?}]",
                        rendered.label(&file)
                    );
                    match text.as_str() {
                        Some(text) => problems.extend(hosts_toml_problems(&label, text)),
                        None => problems.push(format!("{label}: {text:?} is not a string")),
                    }
                }
            }
        }
    }
    assert!(checked > 0, "no hosts.toml was checked");
    assert_no_problems("containerd hosts.toml", &problems);
}

// ---------------------------------------------------------------------------------------------
// MicroK8s launch configuration
// ---------------------------------------------------------------------------------------------

/// Problems of a map whose values MicroK8s writes into argument/env files: each must be a
/// string (or null, which deletes the flag), never a number or boolean YAML guessed.
fn string_map_problems(label: &str, key: &str, value: &serde_yaml::Value) -> Vec<String> {
    let Some(mapping) = value.as_mapping() else {
        return vec![format!("{label}: `{key}` is {value:?}, not a mapping")];
    };
    mapping
        .iter()
        .filter(|(name, value)| name.as_str().is_none() || !(value.is_string() || value.is_null()))
        .map(|(name, value)| format!("{label}: `{key}` entry {name:?}: {value:?} is not a string"))
        .collect()
}

/// Check one launch configuration document against the schema of reference §1.
fn launch_document_problems(label: &str, document: &serde_yaml::Value) -> Vec<String> {
    let Some(mapping) = document.as_mapping() else {
        return vec![format!(
            "{label}: a document is {document:?}, not a mapping"
        )];
    };
    let mut problems = Vec::new();
    let version = mapping.get("version");
    let version_text = version.and_then(|value| value.as_str());
    if !matches!(version_text, Some("0.1.0" | "0.2.0")) {
        problems.push(format!(
            "{label}: `version` is {version:?}, not the string \"0.1.0\" or \"0.2.0\""
        ));
    }
    for (key, value) in mapping {
        let Some(key) = key.as_str().filter(|key| LAUNCH_CONFIG_KEYS.contains(key)) else {
            problems.push(format!(
                "{label}: top-level key {key:?} is not one MicroK8s accepts (it would be ignored)"
            ));
            continue;
        };
        if LAUNCH_CONFIG_KEYS_0_2.contains(&key) && version_text != Some("0.2.0") {
            problems.push(format!("{label}: `{key}` needs version 0.2.0"));
        }
        match key {
            "version" => {}
            "persistentClusterToken" => {
                if !value.is_string() {
                    problems.push(format!("{label}: `{key}` is {value:?}, not a string"));
                }
            }
            "extraSANs" => {
                if let Err(error) = yaml_strings(Some(value), key) {
                    problems.push(format!("{label}: {error}"));
                }
            }
            "addons" => match value.as_sequence() {
                Some(addons) => {
                    for addon in addons {
                        if !addon.get("name").is_some_and(serde_yaml::Value::is_string) {
                            problems.push(format!("{label}: addon {addon:?} has no string name"));
                        }
                        if let Err(error) = yaml_strings(addon.get("args"), "addon args") {
                            problems.push(format!("{label}: {error}"));
                        }
                        if addon.get("disable").is_some_and(|value| !value.is_bool()) {
                            problems.push(format!(
                                "{label}: addon {addon:?}: `disable` is not a boolean"
                            ));
                        }
                    }
                }
                None => problems.push(format!("{label}: `addons` is {value:?}, not a list")),
            },
            "join" => {
                if !value.get("url").is_some_and(serde_yaml::Value::is_string) {
                    problems.push(format!("{label}: `join.url` is not a string: {value:?}"));
                }
                if value.get("worker").is_some_and(|worker| !worker.is_bool()) {
                    problems.push(format!(
                        "{label}: `join.worker` is not a boolean: {value:?}"
                    ));
                }
            }
            "addonRepositories" => {
                if !value.is_sequence() {
                    problems.push(format!("{label}: `{key}` is {value:?}, not a list"));
                }
            }
            // containerdRegistryConfigs, extraConfigFiles, extra*Args and extra*Env: maps
            // whose values MicroK8s writes into files verbatim.
            _ => {
                problems.extend(string_map_problems(label, key, value));
                if key == "extraConfigFiles" {
                    let names = value
                        .as_mapping()
                        .into_iter()
                        .flat_map(|files| files.keys());
                    for name in
                        names.filter(|name| name.as_str().is_some_and(|name| name.contains('/')))
                    {
                        problems.push(format!("{label}: extraConfigFiles name {name:?} has a `/`"));
                    }
                }
            }
        }
    }
    problems
}

/// A `HOST:25000/TOKEN[/FINGERPRINT]` join URL, split into its IPv4 host and token.
fn parse_join_url(url: &str) -> Result<(Ipv4Addr, String), String> {
    let (address, path) = url
        .split_once('/')
        .ok_or_else(|| format!("join url {url:?} has no /TOKEN"))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("join url {url:?} has no :{CLUSTER_AGENT_PORT}"))?;
    let host: Ipv4Addr = host
        .parse()
        .map_err(|_| format!("join url {url:?}: host {host:?} is not an IPv4 literal"))?;
    if port != CLUSTER_AGENT_PORT {
        return Err(format!(
            "join url {url:?}: port {port} is not the cluster agent's {CLUSTER_AGENT_PORT}"
        ));
    }
    let token = path.split('/').next().unwrap_or_default().to_string();
    Ok((host, token))
}

#[test]
fn launch_configurations_follow_the_microk8s_schema() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for rendered in rendered_profiles() {
        let merged = eval_profile(rendered.profile);
        let nodes = merged["nodes"].as_object().expect("eval lists nodes");
        let first_control_plane = nodes
            .iter()
            .find(|(_, node)| node["kubernetes"] == "control-plane")
            .map(|(name, node)| (name.clone(), node["ip"].as_str().unwrap().to_string()));
        let mut cluster_token = None;
        // Join URLs, checked once the first control plane's token is known.
        let mut joins = Vec::new();
        for name in nodes.keys() {
            let role = nodes[name]["kubernetes"].as_str();
            let file = format!("{name}/root/etc/microk8s.yaml");
            let label = rendered.label(&file);
            let exists = rendered.path(&file).is_file();
            match (role, exists) {
                (None, false) => continue,
                (None, true) => {
                    problems.push(format!("{label}: rendered for a node without Kubernetes"));
                    continue;
                }
                (Some(_), false) => {
                    problems.push(format!("{label}: missing for a {role:?} node"));
                    continue;
                }
                (Some(_), true) => {}
            }
            checked += 1;
            let documents = match yaml_documents(&rendered.read(&file)) {
                Ok(documents) if !documents.is_empty() => documents,
                Ok(_) => {
                    problems.push(format!("{label}: holds no YAML document"));
                    continue;
                }
                Err(error) => {
                    problems.push(format!("{label}: {error}"));
                    continue;
                }
            };
            for document in &documents {
                problems.extend(launch_document_problems(&label, document));
            }
            let find = |key: &str| {
                documents
                    .iter()
                    .rev()
                    .find_map(|document| document.get(key))
            };
            let is_first = first_control_plane
                .as_ref()
                .is_some_and(|(first, _)| first == name);
            let join = find("join");
            if is_first {
                match find("persistentClusterToken").and_then(|value| value.as_str()) {
                    Some(token) if token.chars().count() >= 32 => {
                        cluster_token = Some(token.to_string())
                    }
                    other => problems.push(format!(
                        "{label}: the first control plane needs a persistentClusterToken of at \
                         least 32 characters, has {other:?}"
                    )),
                }
                if join.is_some() {
                    problems.push(format!("{label}: the first control plane must not join"));
                }
            } else {
                match join
                    .and_then(|join| join.get("url"))
                    .and_then(|url| url.as_str())
                {
                    Some(url) => joins.push((label.clone(), url.to_string())),
                    None => problems.push(format!("{label}: a joining node has no join.url")),
                }
            }
            let worker_flag = join.and_then(|join| join.get("worker"));
            if role == Some("worker") {
                if worker_flag != Some(&serde_yaml::Value::Bool(true)) {
                    problems.push(format!(
                        "{label}: a worker needs `join.worker: true`, has {worker_flag:?}"
                    ));
                }
                // After a worker joins, clustered.lock makes `microk8s enable` refuse to run.
                if find("addons").is_some() {
                    problems.push(format!("{label}: a worker must not list addons"));
                }
            } else if worker_flag.is_some_and(|flag| flag.as_bool() == Some(true)) {
                problems.push(format!(
                    "{label}: a control plane joins with `worker: true`"
                ));
            }
        }
        for (label, url) in joins {
            match parse_join_url(&url) {
                Ok((host, token)) => {
                    if let Some((first, ip)) = &first_control_plane {
                        if host.to_string() != *ip {
                            problems.push(format!(
                                "{label}: joins {host}, not the first control plane {first} ({ip})"
                            ));
                        }
                    }
                    if cluster_token.as_deref() != Some(token.as_str()) {
                        problems.push(format!(
                            "{label}: the join token is not the first control plane's \
                             persistentClusterToken"
                        ));
                    }
                }
                Err(error) => problems.push(format!("{label}: {error}")),
            }
        }
    }
    assert!(checked > 0, "no launch configuration was checked");
    assert_no_problems("MicroK8s launch configuration", &problems);
}

// ---------------------------------------------------------------------------------------------
// NFS exports and file modes
// ---------------------------------------------------------------------------------------------

/// Problems of one exports(5) line: `PATH CLIENT(options) ...`. A space between a client and
/// its `(options)` exports the path to the world with those options, and the client with the
/// defaults: a classic, silent mistake.
fn exports_line_problems(line: &str) -> Vec<String> {
    let mut fields = line.split_whitespace();
    let mut problems = Vec::new();
    let path = fields.next().unwrap_or_default();
    if !path.starts_with('/') {
        problems.push(format!(
            "{line:?}: the export {path:?} is not an absolute path"
        ));
    }
    let clients: Vec<&str> = fields.collect();
    if clients.is_empty() {
        problems.push(format!("{line:?}: no client"));
    }
    for client in clients {
        let well_formed = client.split_once('(').is_some_and(|(host, rest)| {
            !host.is_empty()
                && rest.len() > 1
                && rest.ends_with(')')
                && !rest[..rest.len() - 1].contains(['(', ')'])
        });
        if !well_formed {
            problems.push(format!(
                "{line:?}: {client:?} is not CLIENT(options) (no space before the parenthesis)"
            ));
        }
    }
    problems
}

#[test]
fn exports_lines_are_well_formed() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for rendered in rendered_profiles() {
        for file in rendered.matching(|path| path.ends_with("/root/etc/exports")) {
            let label = rendered.label(&file);
            let text = rendered.read(&file);
            let lines: Vec<&str> = text
                .lines()
                .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
                .collect();
            if lines.is_empty() {
                problems.push(format!("{label}: exports nothing"));
            }
            for line in lines {
                checked += 1;
                problems.extend(
                    exports_line_problems(line)
                        .into_iter()
                        .map(|problem| format!("{label}: {problem}")),
                );
            }
        }
    }
    assert!(checked > 0, "no exports line was checked");
    assert_no_problems("/etc/exports", &problems);
}

/// The test secrets, as the values that must not be world-readable.
fn test_secrets() -> Vec<(String, String)> {
    let table: toml::Table = fs_err::read_to_string(secrets_file("sai"))
        .unwrap()
        .parse()
        .expect("the test secrets are TOML");
    table
        .into_iter()
        .map(|(name, value)| {
            let value = value
                .as_str()
                .expect("secret values are strings")
                .to_string();
            (name, value)
        })
        .collect()
}

/// Whether `text` holds `secret`: verbatim, JSON/YAML double-quote escaped, or (multi-line)
/// as an indented block, where each line of the secret follows its own indentation.
fn holds_secret(text: &str, secret: &str) -> bool {
    let secret = secret.trim_end_matches('\n');
    if secret.is_empty() {
        return false;
    }
    let escaped = serde_json::to_string(secret).unwrap();
    if text.contains(secret) || text.contains(&escaped[1..escaped.len() - 1]) {
        return true;
    }
    let dedent = |text: &str| {
        text.lines()
            .map(str::trim_start)
            .collect::<Vec<_>>()
            .join("\n")
    };
    secret.contains('\n') && dedent(text).contains(&dedent(secret))
}

#[test]
fn only_files_holding_secrets_are_root_only() {
    let secrets = test_secrets();
    assert!(!secrets.is_empty(), "no test secrets");
    let mut problems = Vec::new();
    let mut root_only = 0;
    for rendered in rendered_profiles() {
        for file in &rendered.files {
            let label = rendered.label(file);
            let mode = fs_err::metadata(rendered.path(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777;
            let text =
                String::from_utf8_lossy(&fs_err::read(rendered.path(file)).unwrap()).to_string();
            let held: Vec<&str> = secrets
                .iter()
                .filter(|(_, value)| holds_secret(&text, value))
                .map(|(name, _)| name.as_str())
                .collect();
            if mode == 0o600 {
                root_only += 1;
            }
            match (held.is_empty(), mode == 0o600) {
                (false, false) => problems.push(format!(
                    "{label}: holds secret(s) {held:?} but has mode {mode:04o}, not 0600"
                )),
                (true, true) => problems.push(format!(
                    "{label}: mode 0600 although it holds none of the test secrets"
                )),
                _ => {}
            }
        }
    }
    assert!(
        root_only > 0,
        "no file is 0600: the secrets were not rendered at all?"
    );
    assert_no_problems("file modes", &problems);
}
