//! `kiln eval`: print the merged profile, or explain where one value came from.

use crate::commands::{CommandError, EvalSettings, Globals};
use crate::profile::{explain::explain, load_valid, ValidCluster};

fn node_view(cluster: &ValidCluster, name: &str) -> Result<serde_json::Value, CommandError> {
    let node = cluster.node(name).ok_or_else(|| {
        let names: Vec<&str> = cluster
            .nodes
            .iter()
            .map(|node| node.name.as_str())
            .collect();
        CommandError::Usage(format!(
            "no node named `{name}`; nodes: {}",
            names.join(", ")
        ))
    })?;
    let mut view = serde_json::to_value(&node.settings)
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    if let serde_json::Value::Object(map) = &mut view {
        map.insert("hostname".into(), node.hostname().into());
    }
    Ok(view)
}

/// Run `kiln eval`.
pub fn run(globals: &Globals, settings: &EvalSettings) -> Result<(), CommandError> {
    let cluster = load_valid(&globals.profile)?;
    if let Some(path) = &settings.explain {
        let explanation = explain(&cluster, path)?;
        let text = if settings.json {
            let json = serde_json::to_string_pretty(&explanation).expect("explanations serialize");
            format!("{json}\n")
        } else {
            explanation.to_string()
        };
        return print_out(&text);
    }
    let output = match &settings.node {
        Some(name) => node_view(&cluster, name)?,
        None => {
            let mut view = serde_json::to_value(&cluster.settings)
                .map_err(|error| CommandError::Internal(error.to_string()))?;
            let mut nodes = serde_json::Map::new();
            for node in &cluster.nodes {
                nodes.insert(node.name.clone(), node_view(&cluster, &node.name)?);
            }
            if let serde_json::Value::Object(map) = &mut view {
                map.insert("nodes".into(), serde_json::Value::Object(nodes));
            }
            view
        }
    };
    let text = if settings.json {
        let json = serde_json::to_string_pretty(&output).expect("JSON values serialize");
        format!("{json}\n")
    } else {
        toml::to_string_pretty(&output)
            .map_err(|error| CommandError::Internal(error.to_string()))?
    };
    print_out(&text)
}

/// Write to stdout; a closed pipe (`kiln eval | head`) is not an error.
pub fn print_out(text: &str) -> Result<(), CommandError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CommandError::from),
    }
}
