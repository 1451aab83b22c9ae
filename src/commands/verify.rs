//! `kiln verify`: boot node disk images in QEMU, isolated from every network, and judge
//! them by the first-boot program's markers on the serial console.

use std::path::PathBuf;
use std::time::Duration;

use crate::build::disk::DISK_QCOW2;
use crate::commands::build::{build_disks, prepare, select_nodes, store_steps};
use crate::commands::{CommandError, Globals};
use crate::verify::{render_table, verify, Accel, Network, VerifyOptions, VmSpec};

/// `kiln verify` settings.
#[derive(Debug)]
pub struct VerifySettings {
    /// Nodes to boot; empty means every node.
    pub nodes: Vec<String>,
    /// Boot this image instead of building the node's disk.
    pub image: Option<PathBuf>,
    /// Per-VM limit.
    pub timeout: Duration,
    /// Boot the nodes together on one private network between the VMs.
    pub cluster: bool,
    /// KVM, TCG or a probe.
    pub accel: Accel,
    /// Keep the VMs' overlays and logs even when every node is ready.
    pub keep: bool,
    /// JSON on stdout.
    pub json: bool,
}

/// Run `kiln verify`.
pub fn run(globals: &Globals, settings: &VerifySettings) -> Result<(), CommandError> {
    let prepared = prepare(globals)?;
    let cluster = &prepared.cluster;
    let nodes = select_nodes(cluster, &settings.nodes, settings.nodes.is_empty())?;
    let mut vms = Vec::new();
    if let Some(image) = &settings.image {
        let [node] = nodes.as_slice() else {
            return Err(CommandError::Usage(
                "--image boots one image: name its node with --node NAME (for its MAC address)"
                    .into(),
            ));
        };
        if !image.is_file() {
            return Err(CommandError::Usage(format!(
                "{} does not exist",
                image.display()
            )));
        }
        let mut vm = VmSpec::new(node.name.clone(), fs_err::canonicalize(image)?);
        vm.mac = Some(node.settings.mac.to_string());
        vms.push(vm);
    } else {
        let disks = build_disks(globals, &prepared, &nodes, &store_steps(&prepared.store))?;
        for (disk, node) in disks.iter().zip(nodes.iter()) {
            let mut vm = VmSpec::new(disk.node.clone(), disk.disk.path(DISK_QCOW2));
            vm.mac = Some(node.settings.mac.to_string());
            vms.push(vm);
        }
    }
    let work_dir = prepared
        .store
        .root()
        .join("tmp")
        .join(format!("verify-{}", std::process::id()));
    let mut options = VerifyOptions::new(&work_dir);
    options.timeout = settings.timeout;
    options.accel = settings.accel;
    options.network = if settings.cluster {
        Network::Shared {
            port: 20_000 + (std::process::id() % 20_000) as u16,
        }
    } else {
        Network::Restricted
    };
    eprintln!(
        "verify: booting {} ({}), up to {} s each; serial logs in {}",
        vms.iter()
            .map(|vm| vm.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if settings.cluster {
            "together, on a private network between the VMs"
        } else {
            "each on its own restricted network"
        },
        settings.timeout.as_secs(),
        work_dir.display()
    );
    let results =
        verify(&vms, &options).map_err(|error| CommandError::Failed(error.to_string()))?;
    let all_ready = results.iter().all(|result| result.is_ready());
    if settings.json {
        crate::commands::print_out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({ "nodes": results }))
                .expect("JSON values serialize")
        ))?;
    } else {
        crate::commands::print_out(&render_table(&results))?;
    }
    if all_ready && !settings.keep {
        let _ = crate::build::step::remove_tree(&work_dir);
    } else {
        eprintln!(
            "verify: the VMs' overlays and serial logs are kept in {}",
            work_dir.display()
        );
    }
    if all_ready {
        Ok(())
    } else {
        let failed: Vec<&str> = results
            .iter()
            .filter(|result| !result.is_ready())
            .map(|result| result.name.as_str())
            .collect();
        Err(CommandError::Failed(format!(
            "not ready: {} (the table above says where each stopped)",
            failed.join(", ")
        )))
    }
}
