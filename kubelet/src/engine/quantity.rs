//! Resource quantities for the engine, on top of the manifest parser.

use crate::manifest::quantity::ParsedQuantity;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The value of a quantity in base units, as a float.
pub fn parse(q: &str) -> Option<f64> {
    ParsedQuantity::parse(q).ok().map(|p| p.nanos() as f64 / 1e9)
}

/// CPU in millicores, rounded up like Kubernetes' MilliValue.
pub fn millis(q: &Quantity) -> Option<i64> {
    ParsedQuantity::parse(&q.0).ok().map(|p| p.milli_value())
}

/// A quantity in whole base units, rounded up like Kubernetes' Value.
pub fn value(q: &Quantity) -> Option<i64> {
    ParsedQuantity::parse(&q.0).ok().map(|p| p.value())
}
