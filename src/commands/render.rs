//! `kiln render`: write every configuration file of the chosen nodes.

use crate::commands::{CommandError, Globals, RenderSettings};
use crate::profile::load_valid;
use crate::profile::secrets::Secrets;
use crate::render;

/// Run `kiln render`.
pub fn run(globals: &Globals, settings: &RenderSettings) -> Result<(), CommandError> {
    let cluster = load_valid(&globals.profile)?;
    for name in &settings.nodes {
        if cluster.node(name).is_none() {
            let names: Vec<&str> = cluster
                .nodes
                .iter()
                .map(|node| node.name.as_str())
                .collect();
            return Err(CommandError::Usage(format!(
                "no node named `{name}`; nodes: {}",
                names.join(", ")
            )));
        }
    }
    let secrets = Secrets::load(globals.secrets.as_deref(), std::env::vars())?;
    let rendered = render::render(&cluster, &secrets)?;
    for (name, tree) in &rendered.nodes {
        if settings.nodes.is_empty() || settings.nodes.contains(name) {
            let dir = settings.out.join(name);
            tree.write_to(&dir)?;
            eprintln!(
                "rendered {} files for {name} into {}",
                tree.files.len(),
                dir.display()
            );
        }
    }
    Ok(())
}
