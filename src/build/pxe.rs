//! The PXE step: a tree that `kiln serve` (or any HTTP server) serves to machines that boot
//! from the network with iPXE. Every URL in it starts with the base URL given at build
//! time, where the tree will be served.
//!
//! Layout (`tree/` of the step; `out/<cluster>/pxe` links to it):
//! - `boot.ipxe`: the script a DHCP server names (filename `URL/boot.ipxe`). It chains the
//!   script of the booting NIC's MAC address, and offers a menu of the nodes when no node has
//!   that MAC address.
//! - `ipxe/MAC.ipxe` (MAC in lower case with hyphens, iPXE's `${netX/mac:hexhyp}`), one per
//!   node: boot the cluster's kernel with kiln's installer (`rdinit=/kiln/init`), the
//!   node's own kernel command line (its root partition by GUID) and `kiln.url=`,
//!   `kiln.node=`.
//! - `vmlinuz`, `initrd.img`: the installer's kernel and initramfs.
//! - `nodes`, `images/NODE.data`, `images/NODE.map`: the node table and images, as on the
//!   USB installer.
//! - `kiln-tree.json`: every file's size and sha256; `kiln serve` refuses a tree that does
//!   not match it.
//!
//! The installer writes the node's image to its install disk, reads it back against the
//! sha256, then hands over to Debian's `/init`, which boots the installed root: the machine
//! comes up in the cluster without a second firmware POST. At a later network boot the
//! installer finds the image already there (the GPT disk GUID) and boots it without
//! writing; a new image (another GUID) is installed over the old one.

use serde_json::json;

use crate::build::disk::{node_cmdline, DISK_RAW};
use crate::build::installer::{CMDLINE_TAIL, INITRD, RDINIT, VMLINUZ};
use crate::build::step::{StepOutput, Steps};
use crate::build::tree::write_manifest;
use crate::build::usb::{node_table, split_images, InstallNode};
use crate::build::BuildError;

/// Bump when the step makes other bytes from the same inputs.
pub const STEP_VERSION: u32 = 1;

/// The served tree, inside the step's directory.
pub const TREE: &str = "tree";

/// The script a DHCP server names.
pub const BOOT_SCRIPT: &str = "boot.ipxe";

/// Check a base URL and return it without a trailing `/`.
pub fn base_url(url: &str) -> Result<String, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "base URL `{url}` does not start with http:// (iPXE and the installer fetch over plain HTTP; `kiln serve` serves it): e.g. --base-url http://10.0.0.1:8080"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let trimmed = &url[..7 + rest.len()];
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!(
            "base URL `{url}` names no host: e.g. --base-url http://10.0.0.1:8080"
        ));
    }
    if let Some(bad) = trimmed
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '$' | '\\'))
    {
        return Err(format!(
            "base URL `{url}` holds {bad:?}, which the kernel command line and iPXE scripts cannot carry"
        ));
    }
    Ok(trimmed.to_string())
}

/// A MAC address as iPXE's `${mac:hexhyp}` spells it: `52-54-00-6b-00-01`.
fn hexhyp(mac: &str) -> String {
    mac.to_ascii_lowercase().replace(':', "-")
}

/// A node's iPXE script path in the tree: `ipxe/52-54-00-6b-00-01.ipxe`.
pub fn node_script(mac: &str) -> String {
    format!("ipxe/{}.ipxe", hexhyp(mac))
}

/// The kernel command line a node boots the installer with.
fn installer_cmdline(entry: &InstallNode<'_>, base: &str) -> String {
    format!(
        "initrd={INITRD} rdinit={RDINIT} {} {CMDLINE_TAIL} kiln.url={base} kiln.node={} BOOTIF=01-{}",
        node_cmdline(&entry.disk.disk.key, &entry.node.settings.kernel_cmdline),
        entry.node.name,
        hexhyp(&entry.node.settings.mac.to_string()),
    )
}

/// The per-node iPXE scripts (path, text) and `boot.ipxe`.
fn scripts(
    cluster: &str,
    nodes: &[InstallNode<'_>],
    base: &str,
) -> (Vec<(String, String)>, String) {
    let mut per_node = Vec::new();
    let mut menu = String::new();
    for entry in nodes {
        let name = &entry.node.name;
        let mac = entry.node.settings.mac.to_string().to_ascii_lowercase();
        let sha256 = &entry.disk.disk.record.outputs[DISK_RAW].sha256;
        per_node.push((
            node_script(&mac),
            format!(
                "#!ipxe\n\
                 # kiln: node {name} of cluster {cluster} ({mac}): install its disk image\n\
                 # (sha256 {sha256}) on the disk its rule picks, verify it, boot it.\n\
                 echo kiln: node {name}: booting the installer from {base}\n\
                 kernel {base}/{VMLINUZ} {cmdline}\n\
                 initrd {base}/{INITRD}\n\
                 boot\n",
                cmdline = installer_cmdline(entry, base),
            ),
        ));
        menu.push_str(&format!("item {} {name} ({mac})\n", hexhyp(&mac)));
    }
    let boot = format!(
        "#!ipxe\n\
         # kiln: network boot of cluster {cluster}. A DHCP server names this script; it\n\
         # chains the script of this machine's MAC address, ipxe/MAC.ipxe.\n\
         chain --autofree {base}/ipxe/${{netX/mac:hexhyp}}.ipxe || goto unknown\n\
         :unknown\n\
         echo kiln: no node of cluster {cluster} has MAC address ${{netX/mac}}\n\
         menu kiln: install which node of cluster {cluster}?\n\
         {menu}\
         item --gap\n\
         item shell an iPXE shell\n\
         choose target || goto shell\n\
         iseq ${{target}} shell && goto shell ||\n\
         chain --autofree {base}/ipxe/${{target}}.ipxe\n\
         :shell\n\
         shell\n"
    );
    (per_node, boot)
}

/// Build (or reuse) the PXE tree for `nodes` of `cluster`, served at `base`.
pub fn build(
    steps: &Steps,
    installer: &StepOutput,
    cluster: &str,
    nodes: &[InstallNode<'_>],
    base: &str,
) -> Result<StepOutput, BuildError> {
    let (table, listed) = node_table(nodes)?;
    let (per_node, boot) = scripts(cluster, nodes, base);
    let inputs = json!({
        "version": STEP_VERSION,
        "installer": installer.key,
        "nodes": listed,
        "table": table,
        "boot": boot,
        "scripts": per_node,
    });
    let name = if nodes.len() == 1 {
        format!("pxe-{}", nodes[0].node.name)
    } else {
        "pxe".to_string()
    };
    steps.run("pxe", &name, inputs, |out, _work, _key| {
        let tree = out.join(TREE);
        let images = tree.join("images");
        fs_err::create_dir_all(&images)?;
        fs_err::create_dir_all(tree.join("ipxe"))?;
        fs_err::copy(installer.path(VMLINUZ), tree.join(VMLINUZ))?;
        fs_err::copy(installer.path(INITRD), tree.join(INITRD))?;
        fs_err::write(tree.join("nodes"), &table)?;
        fs_err::write(tree.join(BOOT_SCRIPT), &boot)?;
        for (path, text) in &per_node {
            fs_err::write(tree.join(path), text)?;
        }
        split_images(nodes, &images)?;
        write_manifest(&tree).map_err(|error| BuildError::Failed(error.to_string()))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_plain_http_with_a_host() {
        assert_eq!(
            base_url("http://10.0.0.1:8080/").unwrap(),
            "http://10.0.0.1:8080"
        );
        assert_eq!(
            base_url("http://pxe.lab/kiln").unwrap(),
            "http://pxe.lab/kiln"
        );
        assert!(base_url("https://10.0.0.1")
            .unwrap_err()
            .contains("http://"));
        assert!(base_url("10.0.0.1").unwrap_err().contains("http://"));
        assert!(base_url("http://").unwrap_err().contains("no host"));
        assert!(base_url("http://a b").unwrap_err().contains("' '"));
        assert!(base_url("http://a/$x").unwrap_err().contains("'$'"));
    }

    #[test]
    fn node_scripts_are_named_as_ipxe_spells_a_mac() {
        assert_eq!(
            node_script("52:54:00:6B:00:01"),
            "ipxe/52-54-00-6b-00-01.ipxe"
        );
    }
}
