//! The rules, one module per area. Each module lists its rules in `RULES`.

pub mod airgap;
pub mod dashboard;
pub mod dns;
pub mod gpu;
pub mod ingress;
pub mod join;
pub mod jupyterhub;
pub mod metallb;
pub mod storage;
pub mod tls;
pub mod values_schema;

use crate::lint::Rule;

/// Every module's rules, in report order.
pub const GROUPS: &[&[Rule]] = &[
    dns::RULES,
    gpu::RULES,
    storage::RULES,
    jupyterhub::RULES,
    tls::RULES,
    ingress::RULES,
    dashboard::RULES,
    metallb::RULES,
    join::RULES,
    airgap::RULES,
    values_schema::RULES,
];
