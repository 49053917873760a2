//! The compiled CRI descriptor must match the upstream wire contract exactly.

use prost_reflect::{Cardinality, DescriptorPool, Kind};
use std::collections::BTreeSet;

const TABLE: &str = include_str!("../wire/cri-v1-wire.tsv");

fn kind_name(kind: &Kind) -> (&'static str, String) {
    match kind {
        Kind::Double => ("double", String::new()),
        Kind::Float => ("float", String::new()),
        Kind::Int32 => ("int32", String::new()),
        Kind::Int64 => ("int64", String::new()),
        Kind::Uint32 => ("uint32", String::new()),
        Kind::Uint64 => ("uint64", String::new()),
        Kind::Sint32 => ("sint32", String::new()),
        Kind::Sint64 => ("sint64", String::new()),
        Kind::Fixed32 => ("fixed32", String::new()),
        Kind::Fixed64 => ("fixed64", String::new()),
        Kind::Sfixed32 => ("sfixed32", String::new()),
        Kind::Sfixed64 => ("sfixed64", String::new()),
        Kind::Bool => ("bool", String::new()),
        Kind::String => ("string", String::new()),
        Kind::Bytes => ("bytes", String::new()),
        Kind::Message(m) => ("message", m.full_name().to_string()),
        Kind::Enum(e) => ("enum", e.full_name().to_string()),
    }
}

/// Every fact of the compiled descriptor, one row each, in the table's format.
fn descriptor_rows() -> BTreeSet<String> {
    let pool = DescriptorPool::decode(cri_proto::FILE_DESCRIPTOR_SET).expect("descriptor decodes");
    let mut rows = BTreeSet::new();
    for svc in pool.services() {
        for m in svc.methods() {
            let stream = match (m.is_client_streaming(), m.is_server_streaming()) {
                (false, false) => "",
                (false, true) => "server-stream",
                (true, false) => "client-stream",
                (true, true) => "bidi-stream",
            };
            rows.insert(format!(
                "rpc\t{}\t{}\t{}\t{}\t{}",
                svc.name(),
                m.name(),
                m.input().full_name(),
                m.output().full_name(),
                stream
            ));
        }
    }
    for msg in pool.all_messages() {
        let map = if msg.is_map_entry() { "\tmap-entry" } else { "" };
        rows.insert(format!("message\t{}{}", msg.full_name(), map));
        for f in msg.fields() {
            let label = match f.cardinality() {
                Cardinality::Repeated => "repeated",
                Cardinality::Required => "required",
                Cardinality::Optional => "optional",
            };
            let (ty, ty_name) = kind_name(&f.kind());
            let oneof = f.containing_oneof().map(|o| o.name().to_string()).unwrap_or_default();
            let redact = if f.options().get_field_by_name("debug_redact").and_then(|v| v.as_bool()) == Some(true) {
                "redact"
            } else {
                ""
            };
            rows.insert(format!(
                "field\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                msg.full_name(),
                f.name(),
                f.number(),
                label,
                ty,
                ty_name,
                oneof,
                redact
            ));
        }
    }
    for e in pool.all_enums() {
        for v in e.values() {
            rows.insert(format!("enum\t{}\t{}\t{}", e.full_name(), v.name(), v.number()));
        }
    }
    rows
}

fn table_rows() -> BTreeSet<String> {
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            // Normalise trailing empty columns to the descriptor's row width.
            let mut cols: Vec<&str> = l.split('\t').collect();
            let width = match cols[0] {
                "rpc" => 6,
                "field" => 9,
                "enum" => 4,
                _ => cols.len(),
            };
            cols.resize(width, "");
            if cols[0] == "message" {
                while cols.last() == Some(&"") {
                    cols.pop();
                }
            }
            cols.join("\t")
        })
        .collect()
}

#[test]
fn descriptor_matches_wire_contract() {
    let want = table_rows();
    let have = descriptor_rows();
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "CRI descriptor differs from the wire contract\nmissing ({}):\n{}\nextra ({}):\n{}",
        missing.len(),
        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
        extra.len(),
        extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
    );
    assert!(want.len() > 800, "table looks truncated: {} rows", want.len());
}

#[test]
fn vendored_table_matches_shared_copy() {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/cri/cri-v1-wire.tsv");
    if let Ok(text) = std::fs::read_to_string(shared) {
        assert_eq!(text, TABLE, "cri-proto/wire/cri-v1-wire.tsv is out of date with {shared}");
    }
}

#[test]
fn four_redacted_fields() {
    let n = TABLE.lines().filter(|l| l.starts_with("field") && l.ends_with("\tredact")).count();
    assert_eq!(n, 4);
}
