//! kiln: declarative, reproducible, air-gapped node images and bundles for MicroK8s GPU
//! clusters.
//!
//! The pipeline, one module per stage: `profile` (load, merge, validate) → `render`
//! (every configuration file of every node). `commands` is the thin glue the CLI calls.

// Diagnostics carry a position, notes and a hint, so they are larger than clippy's budget
// for an error type. They are made only on the failure path, where a few bytes of copying
// do not matter, and keeping them unboxed keeps every call site plain.
#![allow(clippy::result_large_err)]

pub mod build;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod fetch;
pub mod flash;
pub mod lint;
pub mod lock;
pub mod profile;
pub mod render;
pub mod report;
pub mod serve;
pub mod store;
pub mod verify;
