//! `kiln check`: rebuild outputs without the step cache and compare them byte for byte.

use std::path::PathBuf;

use serde_json::json;

use crate::build::check::{compare, Difference};
use crate::build::disk::NodeDisk;
use crate::build::step::{remove_tree, StepOutput, Steps};
use crate::build::tree::MANIFEST_FILE;
use crate::commands::build::{
    build_disks, build_pxe, build_usb, prepare, select_nodes, store_steps, work_root, OUT_MANIFEST,
};
use crate::commands::{CommandError, Globals};
use crate::profile::ValidNode;

/// `kiln check` settings.
#[derive(Debug)]
pub struct CheckSettings {
    /// Outputs to check: `disk`, `usb`, `pxe` (every node) or `disk:NODE`, `usb:NODE`,
    /// `pxe:NODE`.
    pub outputs: Vec<String>,
    /// The PXE set's base URL (needed to check `pxe`).
    pub base_url: Option<String>,
    /// Keep the second build's steps even when they match.
    pub keep: bool,
    /// Where `out/<cluster>/manifest.json` is.
    pub out: PathBuf,
    /// JSON result on stdout.
    pub json: bool,
}

/// Run `kiln check`.
pub fn run(globals: &Globals, settings: &CheckSettings) -> Result<(), CommandError> {
    let prepared = prepare(globals)?;
    let cluster = &prepared.cluster;
    let outputs = if settings.outputs.is_empty() {
        vec!["disk".to_string()]
    } else {
        settings.outputs.clone()
    };
    // (kind, node or None for every node)
    let mut wanted: Vec<(String, Option<String>)> = Vec::new();
    for output in &outputs {
        let (kind, node) = match output.split_once(':') {
            None => (output.as_str(), None),
            Some((kind, node)) => (kind, Some(node.to_string())),
        };
        if !matches!(kind, "disk" | "usb" | "pxe") {
            return Err(CommandError::Usage(format!(
                "unknown output `{output}`: name `disk`, `usb` or `pxe` (every node) or `disk:NODE`, `usb:NODE`, `pxe:NODE`"
            )));
        }
        wanted.push((kind.to_string(), node));
    }
    let base = match (
        wanted.iter().any(|(kind, _)| kind == "pxe"),
        &settings.base_url,
    ) {
        (true, None) => {
            return Err(CommandError::Usage(
                "checking `pxe` needs the --base-url it was built with".into(),
            ))
        }
        (true, Some(url)) => Some(crate::build::pxe::base_url(url).map_err(CommandError::Usage)?),
        (false, _) => None,
    };
    let all = wanted.iter().any(|(_, node)| node.is_none());
    // select_nodes takes each node once, however many of its outputs are named.
    let names: Vec<String> = wanted.iter().filter_map(|(_, node)| node.clone()).collect();
    let nodes = select_nodes(cluster, &names, all)?;
    let failed = |error: crate::build::BuildError| CommandError::Failed(error.to_string());

    eprintln!("check: the build, from the step cache where it can");
    let cached = store_steps(&prepared.store);
    let first = build_disks(globals, &prepared, &nodes, &cached)?;

    let scratch = prepared
        .store
        .root()
        .join("tmp")
        .join(format!("check-{}", std::process::id()));
    eprintln!(
        "check: building again without the step cache, into {}",
        scratch.display()
    );
    let fresh = Steps::new(
        scratch.join("steps"),
        prepared.store.root().join("tmp"),
        work_root(&prepared.store),
    )
    .without_cache();
    let second = match build_disks(globals, &prepared, &nodes, &fresh) {
        Ok(second) => second,
        Err(error) => {
            let _ = remove_tree(&scratch);
            return Err(error);
        }
    };

    // Tool versions recorded by the build in out/<cluster>/manifest.json, if any.
    let out_manifest: serde_json::Value = fs_err::read_to_string(
        settings
            .out
            .join(&cluster.settings.cluster.name)
            .join(OUT_MANIFEST),
    )
    .ok()
    .and_then(|text| serde_json::from_str(&text).ok())
    .unwrap_or(serde_json::Value::Null);

    let mut results = Vec::new();
    let mut differences: Vec<(String, Difference)> = Vec::new();
    for (a, b) in first.iter().zip(second.iter()) {
        if !wanted
            .iter()
            .any(|(kind, node)| kind == "disk" && node.as_ref().is_none_or(|n| *n == a.node))
        {
            continue;
        }
        let output = format!("disk:{}", a.node);
        let mut difference = None;
        for (step_a, step_b) in a.steps().iter().zip(b.steps().iter()) {
            if let Some(found) = compare(&step_name(step_a), step_a, step_b).map_err(failed)? {
                difference = Some(found);
                break;
            }
        }
        let raw = &a.disk.record.outputs[crate::build::disk::DISK_RAW];
        match &difference {
            None => eprintln!(
                "check: {output} is reproducible: both builds give sha256 {} ({} bytes)",
                raw.sha256, raw.size
            ),
            Some(found) => {
                say_difference(&output, found);
                let recorded = &out_manifest["outputs"][&output]["tools"];
                let now = a
                    .steps()
                    .iter()
                    .fold(serde_json::Map::new(), |mut all, step| {
                        if let Some(tools) = step.record.inputs["inputs"]["tools"].as_object() {
                            all.extend(tools.clone());
                        }
                        all
                    });
                if let Some(recorded) = recorded.as_object() {
                    let changed: Vec<String> = recorded
                        .iter()
                        .filter(|(tool, version)| now.get(*tool) != Some(version))
                        .map(|(tool, version)| {
                            format!(
                                "{tool} {} (recorded) vs {} (now)",
                                version.as_str().unwrap_or("?"),
                                now.get(tool).and_then(|v| v.as_str()).unwrap_or("none")
                            )
                        })
                        .collect();
                    if !changed.is_empty() {
                        eprintln!(
                            "  note: out/{}/{OUT_MANIFEST} was built with other tool versions: {}",
                            cluster.settings.cluster.name,
                            changed.join(", ")
                        );
                    }
                }
                differences.push((output.clone(), found.clone()));
            }
        }
        results.push(json!({
            "output": output,
            "reproducible": difference.is_none(),
            "sha256": raw.sha256,
            "difference": difference,
        }));
    }
    // The install media: their installer and medium steps, built from each side's disks.
    for (kind, node) in wanted.iter().filter(|(kind, _)| kind != "disk") {
        let pick = |disks: &[NodeDisk]| -> Vec<NodeDisk> {
            disks
                .iter()
                .filter(|disk| node.as_ref().is_none_or(|n| *n == disk.node))
                .cloned()
                .collect()
        };
        let chosen: Vec<&ValidNode> = nodes
            .iter()
            .filter(|n| node.as_ref().is_none_or(|name| *name == n.name))
            .copied()
            .collect();
        let output = match node {
            Some(node) => format!("{kind}:{node}"),
            None => kind.clone(),
        };
        let media = |disks: &[NodeDisk], steps: &Steps| {
            if kind == "usb" {
                build_usb(&prepared, &chosen, &pick(disks), steps)
            } else {
                let base = base.as_deref().expect("checked above");
                build_pxe(&prepared, &chosen, &pick(disks), steps, base)
            }
        };
        let both = media(&first, &cached)
            .and_then(|left| media(&second, &fresh).map(|right| (left, right)));
        let (left, right) = match both {
            Ok(both) => both,
            Err(error) => {
                let _ = remove_tree(&scratch);
                return Err(error);
            }
        };
        // The nodes' disk steps first: a medium differs when a disk on it does.
        let chain = |disks: Vec<NodeDisk>, media: (StepOutput, StepOutput)| {
            let mut steps: Vec<StepOutput> = disks
                .iter()
                .flat_map(|disk| disk.steps().into_iter().cloned())
                .collect();
            steps.extend([media.0, media.1]);
            steps
        };
        let left = chain(pick(&first), left);
        let right = chain(pick(&second), right);
        let mut difference = None;
        for (a, b) in left.iter().zip(right.iter()) {
            if let Some(found) = compare(&step_name(a), a, b).map_err(failed)? {
                difference = Some(found);
                break;
            }
        }
        let (file, digest) = left
            .last()
            .and_then(|step| {
                step.record
                    .outputs
                    .iter()
                    .find(|(file, _)| file.ends_with(".iso") || file.ends_with(MANIFEST_FILE))
                    .map(|(file, output)| (file.clone(), output.sha256.clone()))
            })
            .unwrap_or_default();
        match &difference {
            None => eprintln!(
                "check: {output} is reproducible: both builds give {file} with sha256 {digest}"
            ),
            Some(found) => {
                say_difference(&output, found);
                differences.push((output.clone(), found.clone()));
            }
        }
        results.push(json!({
            "output": output,
            "reproducible": difference.is_none(),
            "sha256": digest,
            "difference": difference,
        }));
    }
    if differences.is_empty() && !settings.keep {
        let _ = remove_tree(&scratch);
    } else {
        eprintln!(
            "check: the second build is kept in {} for inspection",
            scratch.display()
        );
    }
    if settings.json {
        crate::commands::print_out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&json!({ "outputs": results }))
                .expect("JSON values serialize")
        ))?;
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(CommandError::Failed(format!(
            "{} output(s) are not reproducible: {}",
            differences.len(),
            differences
                .iter()
                .map(|(output, _)| output.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// A step's name: its directory's name after the key and the hyphen.
fn step_name(step: &StepOutput) -> String {
    step.dir
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.get(65..))
        .unwrap_or("step")
        .to_string()
}

/// Say where two builds of `output` first differ.
fn say_difference(output: &str, found: &Difference) {
    eprintln!("check: {output} differs between two builds of the same inputs");
    eprintln!(
        "  first differing step: {} (key {})",
        found.step,
        &found.key[..16]
    );
    eprintln!("  output: {}", found.output);
    eprintln!("  {}", found.detail);
}
