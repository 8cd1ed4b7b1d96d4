//! Off the node: Prometheus metrics (bounded labels) and the HTTP endpoint.

pub mod http;
pub mod labels;
pub mod metrics;
