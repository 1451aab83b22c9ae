//! Rendering: every configuration file of every node, from templates.
//!
//! Templates are tera files under `templates/` (built into the binary, so an installed kiln
//! needs no checkout); a file of the same name under a profile's own `templates/` replaces
//! kiln's. The context is plain JSON built from the validated cluster, so a template can use
//! anything `kiln eval --json` shows. Output is deterministic: sorted files, no timestamps,
//! fixed modes. Files that end up holding a secret value are mode 0600.

pub mod context;
pub mod shell;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use include_dir::{include_dir, Dir};
use sha2::{Digest, Sha256};

use crate::diag::{did_you_mean, Diagnostic, Findings};
use crate::profile::secrets::Secrets;
use crate::profile::source::display_path;
use crate::profile::{ValidCluster, ValidNode};

/// kiln's own templates, built into the binary.
static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// Name of the file listing a rendered tree's files; also marks a directory as kiln's.
pub const MANIFEST: &str = "manifest.json";

/// One rendered file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedFile {
    /// Contents.
    pub contents: Vec<u8>,
    /// Unix permission bits.
    pub mode: u32,
}

/// Every file rendered for one node, by path relative to the node's directory.
#[derive(Clone, Debug, Default)]
pub struct RenderedTree {
    /// Files by relative path (`cloud-init/user-data`, `root/etc/microk8s.yaml`, ...).
    pub files: BTreeMap<String, RenderedFile>,
}

/// Rendered trees by node name.
#[derive(Debug, Default)]
pub struct Rendered {
    /// Trees by node name.
    pub nodes: BTreeMap<String, RenderedTree>,
}

impl RenderedTree {
    fn add(&mut self, path: impl Into<String>, contents: String, mode: u32) {
        self.files.insert(
            path.into(),
            RenderedFile {
                contents: contents.into_bytes(),
                mode,
            },
        );
    }

    /// The manifest: every file with its mode, size and sha256, as canonical JSON.
    pub fn manifest(&self) -> String {
        let files: Vec<serde_json::Value> = self
            .files
            .iter()
            .map(|(path, file)| {
                serde_json::json!({
                    "path": path,
                    "mode": format!("{:04o}", file.mode),
                    "size": file.contents.len(),
                    "sha256": format!("{:x}", Sha256::digest(&file.contents)),
                })
            })
            .collect();
        let mut text =
            serde_json::to_string_pretty(&serde_json::json!({ "version": 1, "files": files }))
                .expect("manifest serializes");
        text.push('\n');
        text
    }

    /// Write the tree into `dir`, replacing an earlier rendering there. Refuses a non-empty
    /// directory that kiln did not write, so a wrong `--out` loses nothing.
    pub fn write_to(&self, dir: &Path) -> Result<(), Diagnostic> {
        use std::os::unix::fs::PermissionsExt;
        let io = |error: std::io::Error| Diagnostic::error("io", error.to_string());
        if dir.exists() {
            let empty = fs_err::read_dir(dir).map_err(io)?.next().is_none();
            if !empty && !dir.join(MANIFEST).is_file() {
                return Err(Diagnostic::error(
                    "output-not-kiln",
                    format!(
                        "{} exists, is not empty and was not written by kiln",
                        display_path(dir)
                    ),
                )
                .hint("choose another --out directory, or empty this one"));
            }
            fs_err::remove_dir_all(dir).map_err(io)?;
        }
        fs_err::create_dir_all(dir).map_err(io)?;
        for (path, file) in &self.files {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                fs_err::create_dir_all(parent).map_err(io)?;
            }
            fs_err::write(&target, &file.contents).map_err(io)?;
            fs_err::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))
                .map_err(io)?;
        }
        fs_err::write(dir.join(MANIFEST), self.manifest()).map_err(io)?;
        Ok(())
    }
}

/// The templates kiln renders, with kiln's and the profile's sources.
struct Templates {
    tera: tera::Tera,
}

/// Collect kiln's built-in templates as `(name, text)`.
fn builtin_templates() -> Vec<(String, String)> {
    fn walk(dir: &Dir<'static>, out: &mut Vec<(String, String)>) {
        for file in dir.files() {
            let name = file.path().to_string_lossy().replace('\\', "/");
            if name.ends_with(".md") {
                continue;
            }
            if let Some(text) = file.contents_utf8() {
                out.push((name, text.to_string()));
            }
        }
        for sub in dir.dirs() {
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&TEMPLATES, &mut out);
    out.sort();
    out
}

fn profile_templates(profile_dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, Diagnostic> {
    let root = profile_dir.join("templates");
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in
            fs_err::read_dir(&dir).map_err(|error| Diagnostic::error("io", error.to_string()))?
        {
            let path = entry
                .map_err(|error| Diagnostic::error("io", error.to_string()))?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(&root)
                    .expect("walked below root")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((name, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Templates {
    fn load(profile_dir: &Path) -> Result<Self, Findings> {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(Vec::new());
        let builtin = builtin_templates();
        let mut sources: HashMap<String, String> = builtin.iter().cloned().collect();
        for (name, path) in profile_templates(profile_dir)? {
            if !sources.contains_key(&name) {
                let names = builtin.iter().map(|(name, _)| name.as_str());
                let mut diagnostic = Diagnostic::error(
                    "unknown-template",
                    format!(
                        "profile template `{name}` ({}) replaces none of kiln's templates",
                        display_path(&path)
                    ),
                );
                diagnostic = match did_you_mean(&name, names) {
                    Some(suggestion) => diagnostic.hint(format!("did you mean `{suggestion}`?")),
                    None => diagnostic.hint("a profile's templates/ holds files named like kiln's templates/, to replace them"),
                };
                return Err(diagnostic.into());
            }
            let text = fs_err::read_to_string(&path)
                .map_err(|error| Diagnostic::error("io", error.to_string()))?;
            sources.insert(name, text);
        }
        let mut names: Vec<&String> = sources.keys().collect();
        names.sort();
        for name in names {
            tera.add_raw_template(name, &sources[name])
                .map_err(|error| {
                    Diagnostic::error(
                        "template",
                        format!("template `{name}` does not parse: {}", error_chain(&error)),
                    )
                })?;
        }
        tera.register_filter("yaml", yaml_filter);
        tera.register_filter("sh", shell_filter);
        // Tera lets templates read the environment; kiln's outputs must not depend on the
        // machine or shell that builds them (nor leak what is in it).
        tera.register_function("get_env", |_: &HashMap<String, tera::Value>| {
            Err(tera::Error::msg(
                "templates cannot read environment variables: the output would depend on the \
                 machine that builds it; use a profile value, or a secret for secret values",
            ))
        });
        Ok(Templates { tera })
    }

    fn render(&self, name: &str, context: &tera::Context) -> Result<String, Diagnostic> {
        self.tera.render(name, context).map_err(|error| {
            Diagnostic::error(
                "template",
                format!("rendering `{name}` failed: {}", error_chain(&error)),
            )
        })
    }
}

fn error_chain(error: &tera::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

/// `{{ value | yaml }}`: a YAML scalar, or flow JSON for a collection. With `indent=N`, the
/// text to put right after `key:` on a line whose key sits at column N (block style).
fn yaml_filter(
    value: &serde_json::Value,
    arguments: &HashMap<String, serde_json::Value>,
) -> tera::Result<serde_json::Value> {
    let text = match arguments.get("indent").and_then(serde_json::Value::as_u64) {
        Some(indent) => yaml::after_key(value, indent as usize),
        None => yaml::scalar(value),
    };
    Ok(serde_json::Value::String(text))
}

/// `{{ value | sh }}`: one shell word.
fn shell_filter(
    value: &serde_json::Value,
    _arguments: &HashMap<String, serde_json::Value>,
) -> tera::Result<serde_json::Value> {
    let text = match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    Ok(serde_json::Value::String(shell::quote(&text)))
}

/// Render one of kiln's templates (or the profile's replacement) with a JSON context: for
/// files that are not per node, such as the bundle's `install.sh`.
pub fn render_template(
    cluster: &ValidCluster,
    name: &str,
    data: &serde_json::Value,
) -> Result<String, Findings> {
    let templates = Templates::load(&cluster.profile_dir)?;
    let context = tera::Context::from_value(data.clone())
        .map_err(|error| Diagnostic::error("template", format!("context for `{name}`: {error}")))?;
    Ok(templates.render(name, &context)?)
}

/// Render every node of a validated cluster.
pub fn render(cluster: &ValidCluster, secrets: &Secrets) -> Result<Rendered, Findings> {
    let resolved = secrets
        .resolve_all(context::secret_references(cluster))
        .map_err(Findings)?;
    let templates = Templates::load(&cluster.profile_dir)?;
    let manifests = context::profile_manifests(cluster)?;
    let mut rendered = Rendered::default();
    for node in &cluster.nodes {
        let tree = render_node(cluster, node, &templates, &resolved, &manifests)?;
        rendered.nodes.insert(node.name.clone(), tree);
    }
    Ok(rendered)
}

const READ_ONLY: u32 = 0o644;
const EXECUTABLE: u32 = 0o755;
const ROOT_ONLY: u32 = 0o600;

fn render_node(
    cluster: &ValidCluster,
    node: &ValidNode,
    templates: &Templates,
    secrets: &BTreeMap<String, String>,
    manifests: &[(String, String)],
) -> Result<RenderedTree, Findings> {
    let mut tree = RenderedTree::default();
    let mut base = context::node_context(cluster, node, secrets);

    // Registry mirrors first: the launch configuration embeds their hosts.toml text.
    let mut registries = Vec::new();
    for (registry, mirror) in &cluster.settings.registries.mirrors {
        let mut context = base.clone();
        context.insert("registry", &context::registry_context(registry, mirror));
        let text = templates.render("containerd/hosts.toml", &context)?;
        registries.push(serde_json::json!({ "name": registry, "hosts_toml": text }));
        // MicroK8s nodes get theirs from the launch configuration's
        // `containerdRegistryConfigs`, which the snap's install hook writes to
        // args/certs.d/ before containerd first starts.
        if node.settings.containerd {
            tree.add(
                format!("root/etc/containerd/certs.d/{registry}/hosts.toml"),
                text.clone(),
                READ_ONLY,
            );
        }
    }
    base.insert("registries", &registries);

    let releases = context::releases(cluster, secrets, |chart, context_extra| {
        let name = format!("helm/{chart}.toml");
        if templates
            .tera
            .get_template_names()
            .any(|known| known == name)
        {
            let mut context = base.clone();
            context.extend(context_extra);
            templates.render(&name, &context).map(Some)
        } else {
            Ok(None)
        }
    })?;
    let first_control_plane = cluster
        .first_control_plane()
        .is_some_and(|first| first.name == node.name);
    base.insert(
        "releases",
        &if first_control_plane {
            releases.clone()
        } else {
            Vec::new()
        },
    );
    base.insert(
        "manifests",
        &if first_control_plane {
            manifests
                .iter()
                .map(|(name, _)| name.clone())
                .collect::<Vec<_>>()
        } else {
            Vec::new()
        },
    );

    tree.add(
        "cloud-init/meta-data",
        templates.render("cloud-init/meta-data", &base)?,
        READ_ONLY,
    );
    tree.add(
        "cloud-init/user-data",
        templates.render("cloud-init/user-data", &base)?,
        READ_ONLY,
    );
    tree.add(
        "cloud-init/network-config",
        templates.render("cloud-init/network-config", &base)?,
        READ_ONLY,
    );
    // Files only kiln's disk images carry (install.sh leaves an existing machine's alone):
    // cloud-init looks for its NoCloud seed and nothing else, so it never probes a cloud's
    // metadata address; and the resolver the profile names.
    tree.add(
        "image/etc/cloud/cloud.cfg.d/90-kiln.cfg",
        templates.render("image/cloud.cfg", &base)?,
        READ_ONLY,
    );
    tree.add(
        "image/etc/resolv.conf",
        templates.render("image/resolv.conf", &base)?,
        READ_ONLY,
    );
    tree.add(
        "root/usr/lib/kiln/firstboot",
        templates.render("kiln/firstboot.sh", &base)?,
        EXECUTABLE,
    );
    tree.add(
        "root/etc/systemd/system/kiln-firstboot.service",
        templates.render("kiln/kiln-firstboot.service", &base)?,
        READ_ONLY,
    );
    tree.add(
        "root/usr/local/sbin/kiln-status",
        templates.render("kiln/kiln-status.sh", &base)?,
        EXECUTABLE,
    );

    if node.settings.kubernetes.is_some() {
        tree.add(
            "root/etc/microk8s.yaml",
            templates.render("microk8s/launch-config.yaml", &base)?,
            ROOT_ONLY,
        );
    }
    if node.settings.containerd {
        tree.add(
            "root/etc/containerd/config.toml",
            templates.render("containerd/config.toml", &base)?,
            READ_ONLY,
        );
    }
    if node.settings.gpu.is_some() {
        tree.add(
            "root/usr/lib/kiln/nvidia-setup",
            templates.render("nvidia/nvidia-setup.sh", &base)?,
            EXECUTABLE,
        );
        tree.add(
            "root/etc/modprobe.d/kiln-nvidia.conf",
            templates.render("nvidia/modprobe.conf", &base)?,
            READ_ONLY,
        );
    }
    if node.settings.dns_server {
        tree.add(
            "root/etc/dnsmasq.d/kiln.conf",
            templates.render("dnsmasq/kiln.conf", &base)?,
            READ_ONLY,
        );
    }
    if node.settings.nfs_server {
        tree.add(
            "root/etc/exports",
            templates.render("nfs/exports", &base)?,
            READ_ONLY,
        );
    }
    if node.settings.nfs_client {
        if let Some(nfs) = &cluster.settings.nfs {
            if let Some(mount_point) = &nfs.mount_point {
                let unit = context::mount_unit_name(mount_point);
                tree.add(
                    format!("root/etc/systemd/system/{unit}"),
                    templates.render("nfs/nfs.mount", &base)?,
                    READ_ONLY,
                );
            }
        }
    }
    if first_control_plane {
        for release in &releases {
            let name = release["name"].as_str().expect("release names are strings");
            let values = release["values"].clone();
            let mode = if release["holds_secrets"] == serde_json::Value::Bool(true) {
                ROOT_ONLY
            } else {
                READ_ONLY
            };
            tree.add(
                format!("root/etc/kiln/helm/{name}.values.yaml"),
                yaml::to_document(&values),
                mode,
            );
        }
        for (name, secret) in &cluster.settings.kubernetes.secrets {
            let mut context = base.clone();
            context.insert("secret", &context::kubernetes_secret(name, secret, secrets));
            tree.add(
                format!("root/etc/kiln/manifests/10-secret-{name}.yaml"),
                templates.render("kubernetes/secret.yaml", &context)?,
                ROOT_ONLY,
            );
        }
        if let Some(microk8s) = &cluster.settings.microk8s {
            if !microk8s.ingress_tcp.is_empty() {
                tree.add(
                    "root/etc/kiln/manifests/20-ingress-tcp.yaml",
                    templates.render("microk8s/ingress-tcp.yaml", &base)?,
                    READ_ONLY,
                );
                tree.add(
                    "root/etc/kiln/patches/ingress-tcp-ports.yaml",
                    templates.render("microk8s/ingress-tcp-ports.yaml", &base)?,
                    READ_ONLY,
                );
            }
        }
        for (name, text) in manifests {
            tree.add(
                format!("root/etc/kiln/manifests/50-{name}"),
                text.clone(),
                READ_ONLY,
            );
        }
    }

    // Files that hold secrets are known above; this net also catches a secret that a
    // profile's own template writes: any file showing a secret (as written, JSON-escaped, or
    // any line of a multi-line one) is for root alone, and keeps its execute bit for root.
    let needles = secret_needles(secrets);
    for file in tree.files.values_mut() {
        let text = String::from_utf8_lossy(&file.contents);
        if needles.iter().any(|needle| text.contains(needle.as_str())) {
            file.mode = if file.mode & 0o100 != 0 {
                0o700
            } else {
                ROOT_ONLY
            };
        }
    }
    Ok(tree)
}

/// Strings whose presence in a file means it shows a secret.
fn secret_needles(secrets: &BTreeMap<String, String>) -> Vec<String> {
    let mut needles = Vec::new();
    for value in secrets.values().filter(|value| !value.is_empty()) {
        needles.push(value.clone());
        let escaped = serde_json::to_string(value).expect("strings serialize");
        needles.push(escaped[1..escaped.len() - 1].to_string());
        // Multi-line secrets (keys, certificates) are written as indented blocks: their
        // lines are what shows. Short lines (PEM armour, blank) would match anything.
        if value.contains('\n') {
            needles.extend(
                value
                    .lines()
                    .map(str::trim)
                    .filter(|line| line.len() >= 16 && !line.starts_with("-----"))
                    .map(String::from),
            );
        }
    }
    needles.sort();
    needles.dedup();
    needles
}
