//! Profiles: loading layers, merging them, reading typed settings and validating them.
//!
//! `load` reads the cluster file and roles and merges each node's layers; `validate` reads
//! typed settings and checks the cluster as a whole, producing the only `ValidCluster`.

pub mod de;
pub mod explain;
pub mod load;
pub mod merge;
pub mod model;
pub mod secrets;
pub mod source;
pub mod validate;
pub mod value;

pub use validate::{ValidCluster, ValidNode};

use std::path::Path;

use crate::diag::Findings;

/// Load and validate a profile in one step.
pub fn load_valid(profile: &Path) -> Result<ValidCluster, Findings> {
    validate::validate(load::load(profile)?)
}
