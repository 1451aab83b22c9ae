//! `kiln serve`: verify a tree, then serve it over HTTP until killed.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use crate::build::tree::verify_tree;
use crate::commands::{CommandError, Globals};
use crate::profile::load::cluster_path;
use crate::serve::{self, Tree};

/// `kiln serve` settings.
#[derive(Debug)]
pub struct ServeSettings {
    /// Where to listen; port 0 picks a free port (the start line names it).
    pub addr: SocketAddr,
    /// The tree; `None` means `out/<cluster>/pxe` of the profile's cluster.
    pub root: Option<PathBuf>,
}

/// Run `kiln serve`: refuse a tree that fails verification (exit 1), then bind (exit 2 when
/// that fails) and serve.
pub fn run(globals: &Globals, settings: &ServeSettings) -> Result<(), CommandError> {
    let root = match &settings.root {
        Some(root) => root.clone(),
        None => default_root(globals)?,
    };
    let manifest = verify_tree(&root).map_err(|error| {
        CommandError::Failed(format!("refusing to serve {}: {error}", root.display()))
    })?;
    let listener = TcpListener::bind(settings.addr)
        .map_err(|error| CommandError::Usage(bind_error(settings.addr, &error)))?;
    let bound = listener.local_addr()?;
    eprintln!(
        "serving {} ({} files, verified) on http://{bound}/",
        root.display(),
        manifest.files().len()
    );
    serve::run(listener, Tree::new(root, manifest)).map_err(|error| {
        CommandError::Internal(format!("accepting connections on {bound} failed: {error}"))
    })
}

/// `out/<cluster>/pxe`, the cluster named by the profile.
fn default_root(globals: &Globals) -> Result<PathBuf, CommandError> {
    let cluster_file = cluster_path(&globals.profile);
    if !cluster_file.exists() {
        return Err(CommandError::Usage(format!(
            "no --root given, and no profile at {} to find out/<cluster>/pxe from: pass --root DIR (or --profile)",
            cluster_file.display()
        )));
    }
    let cluster = crate::profile::load_valid(&globals.profile).map_err(|_| {
        CommandError::Usage(format!(
            "no --root given, and the profile {} does not load (`kiln lint` says why), so its cluster's out/<cluster>/pxe is unknown: pass --root DIR",
            cluster_file.display()
        ))
    })?;
    Ok(PathBuf::from("out")
        .join(&cluster.settings.cluster.name)
        .join("pxe"))
}

/// The OS's reason a bind failed, with what to do about it.
fn bind_error(addr: SocketAddr, error: &std::io::Error) -> String {
    let hint = match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another program listens on port {} (`ss -ltnp 'sport = :{}'` names it); stop it or pick another port",
            addr.port(),
            addr.port()
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "no interface of this machine has the address {} (`ip -brief address` lists them)",
            addr.ip()
        ),
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a port from 1024 up".into()
        }
        _ => "check the address and port".into(),
    };
    format!("cannot listen on {addr}: {error}\nhint: {hint}")
}
