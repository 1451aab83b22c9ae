//! Build outputs: deterministic archives, container image archives, the offline bundle,
//! and bootable node disks. Each output is a step in the store, keyed by the hash of its
//! inputs (see [`step`]). Outputs written as a directory to hand to machines carry a
//! manifest that a server verifies first (see [`tree`]).

pub mod archive;
pub mod bundle;
pub mod check;
pub mod disk;
pub mod image_archive;
pub mod installer;
pub mod node;
pub mod pxe;
pub mod rootfs;
pub mod step;
pub mod tools;
pub mod tree;
pub mod uki;
pub mod usb;

/// What went wrong in a build step.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Tools the step runs are not installed.
    #[error("{programs} not installed: install with `apt-get install {packages}`")]
    MissingTools {
        /// The programs.
        programs: String,
        /// The packages to install.
        packages: String,
    },
    /// An input is not in the store.
    #[error("{what} ({digest}) is not in the store: run `kiln fetch` first")]
    Missing {
        /// What it is.
        what: String,
        /// Its digest.
        digest: String,
    },
    /// The step needs root.
    #[error("{0} needs root: it keeps the owners, device nodes and extended attributes of the root file system (run it with sudo)")]
    NotRoot(String),
    /// A step failed; the message says where and why.
    #[error("{0}")]
    Failed(String),
    /// Writing or reading an archive failed.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    /// File access.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<bundle::BundleError> for BuildError {
    fn from(error: bundle::BundleError) -> Self {
        BuildError::Failed(error.to_string())
    }
}
