//! `kiln build`: lint first (an error-level finding stops it before any work), then the
//! outputs, as store steps linked from `out/<cluster>/`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::build::archive::Compression;
use crate::build::bundle::{self, BundleOptions};
use crate::build::disk::{build_nodes, NodeDisk, DISK_QCOW2, DISK_RAW};
use crate::build::step::{Action, StepOutput, Steps};
use crate::build::usb::InstallNode;
use crate::commands::lint::findings;
use crate::commands::store::{open_store, LOCK_TIMEOUT};
use crate::commands::{CommandError, Globals};
use crate::diag::Severity;
use crate::lint::output;
use crate::lock::file::{LockFile, LOCK_FILE};
use crate::lock::{requested, require_locked};
use crate::profile::load::cluster_path;
use crate::profile::secrets::Secrets;
use crate::profile::{ValidCluster, ValidNode};
use crate::render::{render, render_template};
use crate::store::{Store, StoreLock};

/// `kiln build bundle` settings.
#[derive(Debug)]
pub struct BuildSettings {
    /// Compression of the bundle.
    pub compression: Compression,
    /// Carry the base OS's .debs in the bundle.
    pub include_debs: bool,
    /// Where `<cluster>/` output links go.
    pub out: PathBuf,
}

/// Point `link` at `target`, replacing an older link.
fn link(target: &Path, link: &Path) -> Result<(), CommandError> {
    if let Some(parent) = link.parent() {
        fs_err::create_dir_all(parent)?;
    }
    if link.symlink_metadata().is_ok() {
        fs_err::remove_file(link)?;
    }
    // An absolute target: the link works from wherever it is read.
    let target = fs_err::canonicalize(target)?;
    std::os::unix::fs::symlink(target, link)?;
    Ok(())
}

/// What every build starts from: a profile with no error-level finding, its lock (which
/// must name everything the profile asks for) and the store, locked for building.
pub struct Prepared {
    /// The profile.
    pub cluster: ValidCluster,
    /// kiln.lock.
    pub lock: LockFile,
    /// Its text.
    pub lock_text: String,
    /// The store.
    pub store: Store,
    /// The store's shared lock, held while building.
    pub _store_lock: StoreLock,
}

/// Builds run with umask 022 whatever the caller's: tools create files with it (apt, for
/// one, leaves a directory owned by root instead of `_apt` when `_apt` cannot reach it under
/// umask 077), so it would otherwise reach the outputs.
fn fixed_umask() {
    // SAFETY: umask only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o022);
    }
}

/// Lint, read the lock, check it covers the profile, open and lock the store.
pub fn prepare(globals: &Globals) -> Result<Prepared, CommandError> {
    fixed_umask();
    // Lint before anything else: a profile with an error-level finding builds nothing.
    let (cluster, findings) = findings(globals)?;
    let errors = findings
        .iter()
        .filter(|finding| finding.severity == Severity::Error)
        .count();
    if errors > 0 {
        eprint!("{}", output::human(&findings));
        return Err(CommandError::Failed(format!(
            "kiln build stops before doing any work: {errors} error-level lint finding(s) (`kiln lint` lists them)"
        )));
    }
    let lock_path = cluster_path(&globals.profile).with_file_name(LOCK_FILE);
    if !lock_path.exists() {
        return Err(CommandError::Failed(format!(
            "{} does not exist: run `kiln lock`, then `kiln fetch`",
            lock_path.display()
        )));
    }
    let lock_text = fs_err::read_to_string(&lock_path)?;
    let lock = LockFile::read(&lock_path)?;
    // A build always follows the lock: a profile that asks for something else stops here.
    require_locked(&requested(&cluster)?, &lock, &lock_path)?;
    let store = open_store(globals)?;
    let store_lock = store
        .lock_shared(LOCK_TIMEOUT)
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    Ok(Prepared {
        cluster,
        lock,
        lock_text,
        store,
        _store_lock: store_lock,
    })
}

/// Run `kiln build bundle`.
pub fn bundle(globals: &Globals, settings: &BuildSettings) -> Result<(), CommandError> {
    let Prepared {
        cluster,
        lock,
        lock_text,
        store,
        _store_lock,
    } = prepare(globals)?;
    let install_script = |data: &serde_json::Value| {
        render_template(&cluster, "bundle/install.sh", data)
            .map_err(|findings| findings.to_string())
    };
    let report = bundle::build(
        &cluster,
        &lock,
        &lock_text,
        &store,
        BundleOptions {
            compression: settings.compression,
            include_debs: settings.include_debs || cluster.settings.cluster.bundle_debs,
        },
        &install_script,
    )
    .map_err(|error| CommandError::Failed(error.to_string()))?;
    let out = settings
        .out
        .join(&cluster.settings.cluster.name)
        .join(report.path.file_name().expect("bundle files have names"));
    link(&report.path, &out)?;
    let file_name = report
        .path
        .file_name()
        .expect("bundle files have names")
        .to_string_lossy()
        .into_owned();
    record_output(
        out.parent().expect("out/<cluster>/ holds the link"),
        "bundle",
        json!({
            "step": { "name": "bundle", "key": report.key },
            "files": { file_name: { "sha256": report.sha256, "size": report.size } },
        }),
    )?;
    if report.reused {
        eprintln!(
            "bundle: nothing changed, reusing step {} ({} members, sha256 {})",
            &report.key[..16],
            report.members,
            report.sha256
        );
    } else {
        eprintln!(
            "bundle: built step {} ({} members, {} bytes, sha256 {})",
            &report.key[..16],
            report.members,
            report.size,
            report.sha256
        );
    }
    eprintln!("{} -> {}", out.display(), report.path.display());
    Ok(())
}

/// `kiln build disk` settings.
#[derive(Debug)]
pub struct DiskSettings {
    /// Nodes to build.
    pub nodes: Vec<String>,
    /// Build every node.
    pub all: bool,
    /// Where `<cluster>/` output links go.
    pub out: PathBuf,
    /// Print the step report as JSON on stdout.
    pub json: bool,
}

/// The nodes named, or all of them; an unknown name is a usage error.
pub fn select_nodes<'a>(
    cluster: &'a ValidCluster,
    names: &[String],
    all: bool,
) -> Result<Vec<&'a ValidNode>, CommandError> {
    let known: Vec<&str> = cluster
        .nodes
        .iter()
        .map(|node| node.name.as_str())
        .collect();
    if all || names.is_empty() {
        if !all {
            return Err(CommandError::Usage(format!(
                "name the nodes to build with --node NAME, or give --all (nodes: {})",
                known.join(", ")
            )));
        }
        return Ok(cluster.nodes.iter().collect());
    }
    let mut selected: Vec<&ValidNode> = Vec::new();
    for name in names {
        let node = cluster.node(name).ok_or_else(|| {
            CommandError::Usage(format!(
                "no node named `{name}`{}; nodes: {}",
                crate::diag::did_you_mean(name, known.iter().copied())
                    .map(|hint| format!(" (did you mean `{hint}`?)"))
                    .unwrap_or_default(),
                known.join(", ")
            ))
        })?;
        // A node named twice is built once.
        if !selected.iter().any(|chosen| chosen.name == node.name) {
            selected.push(node);
        }
    }
    Ok(selected)
}

/// Run `kiln build disk`.
pub fn disk(globals: &Globals, settings: &DiskSettings) -> Result<(), CommandError> {
    let prepared = prepare(globals)?;
    let cluster = &prepared.cluster;
    let nodes = select_nodes(cluster, &settings.nodes, settings.all)?;
    let steps = store_steps(&prepared.store);
    eprintln!(
        "disk: {} of cluster {}",
        nodes
            .iter()
            .map(|node| node.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        cluster.settings.cluster.name
    );
    let disks = build_disks(globals, &prepared, &nodes, &steps)?;
    let out_dir = settings.out.join(&cluster.settings.cluster.name);
    let mut outputs = Vec::new();
    for disk in &disks {
        let mut files = serde_json::Map::new();
        for (file, extension) in [(DISK_RAW, "raw"), (DISK_QCOW2, "qcow2")] {
            let name = format!("{}.{extension}", disk.node);
            link(&disk.disk.path(file), &out_dir.join(&name))?;
            let output = &disk.disk.record.outputs[file];
            files.insert(
                name,
                json!({ "sha256": output.sha256, "size": output.size }),
            );
        }
        let entry = json!({
            "step": { "name": format!("disk-{}", disk.node), "key": disk.disk.key },
            "steps": disk.steps().iter().map(|step| json!({ "kind": step.record.kind, "key": step.key })).collect::<Vec<_>>(),
            "tools": disk.steps().iter().fold(serde_json::Map::new(), |mut all, step| {
                if let Some(tools) = step.record.inputs["inputs"]["tools"].as_object() {
                    all.extend(tools.clone());
                }
                all
            }),
            "files": files,
        });
        record_output(&out_dir, &format!("disk:{}", disk.node), entry.clone())?;
        outputs.push(json!({ "output": format!("disk:{}", disk.node), "entry": entry }));
    }
    let links: Vec<PathBuf> = disks
        .iter()
        .flat_map(|disk| {
            ["raw", "qcow2"].map(|extension| out_dir.join(format!("{}.{extension}", disk.node)))
        })
        .collect();
    finish("disk", &steps, &links, outputs, settings.json)
}

/// Run `kiln build usb`: the nodes' disks, the cluster's installer, and a hybrid ISO that
/// installs them.
pub fn usb(globals: &Globals, settings: &DiskSettings) -> Result<(), CommandError> {
    let prepared = prepare(globals)?;
    let cluster = &prepared.cluster;
    let nodes = select_nodes(cluster, &settings.nodes, settings.all)?;
    let steps = store_steps(&prepared.store);
    let disks = build_disks(globals, &prepared, &nodes, &steps)?;
    let (_, iso) = build_usb(&prepared, &nodes, &disks, &steps)?;
    let out_dir = settings.out.join(&cluster.settings.cluster.name);
    let name = if nodes.len() == 1 {
        format!("usb-{}.iso", nodes[0].name)
    } else {
        "usb.iso".to_string()
    };
    let link_path = out_dir.join(&name);
    link(&iso.path(crate::build::usb::ISO), &link_path)?;
    let output = &iso.record.outputs[crate::build::usb::ISO];
    let entry = json!({
        "step": { "name": "usb", "key": iso.key },
        "nodes": nodes.iter().map(|node| node.name.clone()).collect::<Vec<_>>(),
        "files": { name.clone(): { "sha256": output.sha256, "size": output.size } },
    });
    let output_name = format!("usb:{}", name.trim_end_matches(".iso"));
    record_output(&out_dir, &output_name, entry.clone())?;
    finish(
        "usb",
        &steps,
        &[link_path],
        vec![json!({ "output": output_name, "entry": entry })],
        settings.json,
    )
}

/// `kiln build pxe`: the PXE tree of the chosen nodes, served at `base_url`.
pub fn pxe(globals: &Globals, settings: &DiskSettings, base_url: &str) -> Result<(), CommandError> {
    let base = crate::build::pxe::base_url(base_url).map_err(CommandError::Usage)?;
    let prepared = prepare(globals)?;
    let cluster = &prepared.cluster;
    let nodes = select_nodes(cluster, &settings.nodes, settings.all)?;
    let steps = store_steps(&prepared.store);
    let disks = build_disks(globals, &prepared, &nodes, &steps)?;
    let (_, tree) = build_pxe(&prepared, &nodes, &disks, &steps, &base)?;
    let out_dir = settings.out.join(&cluster.settings.cluster.name);
    let link_path = out_dir.join("pxe");
    link(&tree.path(crate::build::pxe::TREE), &link_path)?;
    let manifest = &tree.record.outputs[&format!(
        "{}/{}",
        crate::build::pxe::TREE,
        crate::build::tree::MANIFEST_FILE
    )];
    let entry = json!({
        "step": { "name": "pxe", "key": tree.key },
        "nodes": nodes.iter().map(|node| node.name.clone()).collect::<Vec<_>>(),
        "base_url": base,
        "files": { crate::build::tree::MANIFEST_FILE: { "sha256": manifest.sha256, "size": manifest.size } },
    });
    record_output(&out_dir, "pxe", entry.clone())?;
    finish(
        "pxe",
        &steps,
        &[link_path],
        vec![json!({ "output": "pxe", "entry": entry })],
        settings.json,
    )
}

/// The installer step, then the install medium step made from it.
pub type MediaSteps = (StepOutput, StepOutput);

/// The installer of the cluster whose nodes' disks are `disks`, and their entries.
fn installer_and_entries<'a>(
    prepared: &Prepared,
    nodes: &[&'a ValidNode],
    disks: &'a [NodeDisk],
    steps: &Steps,
) -> Result<(StepOutput, Vec<InstallNode<'a>>), CommandError> {
    let rootfs = &disks
        .first()
        .ok_or_else(|| CommandError::Usage("no nodes to put on the install medium".into()))?
        .rootfs;
    let installer = crate::build::installer::build(steps, rootfs, prepared.lock.source_date_epoch)
        .map_err(|error| CommandError::Failed(error.to_string()))?;
    let entries = nodes
        .iter()
        .zip(disks)
        .map(|(node, disk)| InstallNode { node, disk })
        .collect();
    Ok((installer, entries))
}

/// The installer and the USB ISO of `nodes`, whose disks are `disks`.
pub fn build_usb(
    prepared: &Prepared,
    nodes: &[&ValidNode],
    disks: &[NodeDisk],
    steps: &Steps,
) -> Result<MediaSteps, CommandError> {
    let (installer, entries) = installer_and_entries(prepared, nodes, disks, steps)?;
    let iso =
        crate::build::usb::build(steps, &installer, &entries, prepared.lock.source_date_epoch)
            .map_err(|error| CommandError::Failed(error.to_string()))?;
    Ok((installer, iso))
}

/// The installer and the PXE tree of `nodes`, whose disks are `disks`, served at `base`.
pub fn build_pxe(
    prepared: &Prepared,
    nodes: &[&ValidNode],
    disks: &[NodeDisk],
    steps: &Steps,
    base: &str,
) -> Result<MediaSteps, CommandError> {
    let (installer, entries) = installer_and_entries(prepared, nodes, disks, steps)?;
    let tree = crate::build::pxe::build(
        steps,
        &installer,
        &prepared.cluster.settings.cluster.name,
        &entries,
        base,
    )
    .map_err(|error| CommandError::Failed(error.to_string()))?;
    Ok((installer, tree))
}

/// Say how many of the steps were built and how many reused, list the output links, and
/// with `json` print the step report and the outputs on stdout.
fn finish(
    what: &str,
    steps: &Steps,
    links: &[PathBuf],
    outputs: Vec<serde_json::Value>,
    json: bool,
) -> Result<(), CommandError> {
    let reports = steps.reports();
    let built = reports
        .iter()
        .filter(|report| report.action == Action::Built)
        .count();
    if built == 0 {
        eprintln!(
            "{what}: nothing changed: reused all {} steps",
            reports.len()
        );
    } else {
        eprintln!(
            "{what}: built {built} of {} steps, reused {}",
            reports.len(),
            reports.len() - built
        );
    }
    for path in links {
        eprintln!("{}", path.display());
    }
    if json {
        let report = json!({ "steps": reports, "outputs": outputs });
        crate::commands::print_out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).expect("JSON values serialize")
        ))?;
    }
    Ok(())
}

/// Run `kiln build layer`: each node's layer step alone (its configuration, NoCloud seed
/// and share of the bundle, as a tar), without the base OS.
pub fn layer(globals: &Globals, settings: &DiskSettings) -> Result<(), CommandError> {
    let prepared = prepare(globals)?;
    let cluster = &prepared.cluster;
    let nodes = select_nodes(cluster, &settings.nodes, settings.all)?;
    let steps = store_steps(&prepared.store);
    let secrets = Secrets::load(globals.secrets.as_deref(), std::env::vars())?;
    let rendered = render(cluster, &secrets)?;
    let out_dir = settings.out.join(&cluster.settings.cluster.name);
    let mut outputs = Vec::new();
    let mut links = Vec::new();
    for node in &nodes {
        let tree = rendered.nodes.get(&node.name).ok_or_else(|| {
            CommandError::Internal(format!("node {} was not rendered", node.name))
        })?;
        let layer =
            crate::build::node::build(&steps, cluster, &prepared.lock, &prepared.store, node, tree)
                .map_err(|error| CommandError::Failed(error.to_string()))?;
        let name = format!("{}.layer.tar", node.name);
        link(
            &layer.path(crate::build::node::NODE_TAR),
            &out_dir.join(&name),
        )?;
        let output = &layer.record.outputs[crate::build::node::NODE_TAR];
        let entry = json!({
            "step": { "name": format!("node-{}", node.name), "key": layer.key },
            "files": { name.clone(): { "sha256": output.sha256, "size": output.size } },
        });
        record_output(&out_dir, &format!("layer:{}", node.name), entry.clone())?;
        outputs.push(json!({ "output": format!("layer:{}", node.name), "entry": entry }));
        links.push(out_dir.join(name));
    }
    finish("layer", &steps, &links, outputs, settings.json)
}

/// Steps in the store's `steps/`, built in its `tmp/`, with scratch trees in
/// [`work_root`].
pub fn store_steps(store: &Store) -> Steps {
    Steps::new(
        store.root().join("steps"),
        store.root().join("tmp"),
        work_root(store),
    )
}

/// Where steps put their scratch trees: `$TMPDIR` when it is set, else the store's `tmp/`.
pub fn work_root(store: &Store) -> PathBuf {
    std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| store.root().join("tmp"))
}

/// Render the profile (with the secrets given) and build, or reuse, the disks of `nodes`
/// with `steps`. Rendering is part of the build: each call renders afresh.
pub fn build_disks(
    globals: &Globals,
    prepared: &Prepared,
    nodes: &[&ValidNode],
    steps: &Steps,
) -> Result<Vec<NodeDisk>, CommandError> {
    let secrets = Secrets::load(globals.secrets.as_deref(), std::env::vars())?;
    let rendered = render(&prepared.cluster, &secrets)?;
    build_nodes(
        steps,
        &prepared.cluster,
        &prepared.lock,
        &prepared.store,
        &rendered,
        nodes,
    )
    .map_err(|error| CommandError::Failed(error.to_string()))
}

/// The file in `out/<cluster>/` that lists every output with its sha256 and step key.
pub const OUT_MANIFEST: &str = "manifest.json";

/// Add or replace one output's entry in `out/<cluster>/manifest.json`.
pub fn record_output(
    out_dir: &Path,
    output: &str,
    entry: serde_json::Value,
) -> Result<(), CommandError> {
    let path = out_dir.join(OUT_MANIFEST);
    let mut manifest: serde_json::Value = fs_err::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| json!({ "version": 1, "outputs": {} }));
    manifest["outputs"][output] = entry;
    let manifest = crate::build::bundle::canonical(&manifest);
    fs_err::create_dir_all(out_dir)?;
    let partial = out_dir.join(format!(".{OUT_MANIFEST}.partial"));
    fs_err::write(
        &partial,
        format!(
            "{}\n",
            serde_json::to_string_pretty(&manifest).expect("JSON values serialize")
        ),
    )?;
    fs_err::rename(&partial, &path)?;
    Ok(())
}
