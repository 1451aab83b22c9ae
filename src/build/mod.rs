//! Build outputs: deterministic archives, container image archives, and the offline bundle.
//! Each output is a step in the store, keyed by the hash of its inputs.

pub mod archive;
pub mod bundle;
pub mod image_archive;
