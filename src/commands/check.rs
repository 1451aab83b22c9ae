//! `kiln check`: rebuild outputs without the step cache and compare them byte for byte.

use std::path::PathBuf;

use serde_json::json;

use crate::build::check::{compare, Difference};
use crate::build::step::{remove_tree, Steps};
use crate::commands::build::{
    build_disks, prepare, select_nodes, store_steps, work_root, OUT_MANIFEST,
};
use crate::commands::{CommandError, Globals};

/// `kiln check` settings.
#[derive(Debug)]
pub struct CheckSettings {
    /// Outputs to check: `disk` (every node) or `disk:NODE`.
    pub outputs: Vec<String>,
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
    let mut names = Vec::new();
    let mut all = false;
    let outputs = if settings.outputs.is_empty() {
        vec!["disk".to_string()]
    } else {
        settings.outputs.clone()
    };
    for output in &outputs {
        match output.split_once(':') {
            None if output == "disk" => all = true,
            Some(("disk", node)) => names.push(node.to_string()),
            _ => {
                return Err(CommandError::Usage(format!(
                    "unknown output `{output}`: name `disk` (every node's disk) or `disk:NODE`"
                )))
            }
        }
    }
    let nodes = select_nodes(cluster, &names, all)?;
    let failed = |error: crate::build::BuildError| CommandError::Failed(error.to_string());

    eprintln!("check: the build, from the step cache where it can");
    let first = build_disks(globals, &prepared, &nodes, &store_steps(&prepared.store))?;

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
        let output = format!("disk:{}", a.node);
        let mut difference = None;
        for (step_a, step_b) in a.steps().iter().zip(b.steps().iter()) {
            let name = step_a
                .dir
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.get(65..))
                .unwrap_or("step")
                .to_string();
            if let Some(found) = compare(&name, step_a, step_b).map_err(failed)? {
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
                eprintln!("check: {output} differs between two builds of the same inputs");
                eprintln!(
                    "  first differing step: {} (key {})",
                    found.step,
                    &found.key[..16]
                );
                eprintln!("  output: {}", found.output);
                eprintln!("  {}", found.detail);
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
