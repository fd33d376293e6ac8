//! The contract as lines, to check that v1 only grows.
//!
//! [`lines`] describes every method, message field and enum value of the compiled
//! `control.proto` as one line each (`field ironclad.control.v1.RuleEntry 1 id
//! string`). `proto/v1.baseline` holds those lines as first published; the test suite
//! checks that each of them is still described exactly so ([`breaking_changes`]):
//! removing, renumbering or retyping anything is refused, adding is not.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::FileDescriptorSet;

use crate::ApiError;

fn type_name(field: &prost_types::FieldDescriptorProto) -> String {
    let label = match field.label() {
        Label::Repeated => "repeated ",
        _ => "",
    };
    let ty = match field.r#type() {
        Type::Message | Type::Enum => field.type_name().trim_start_matches('.').to_string(),
        other => other
            .as_str_name()
            .trim_start_matches("TYPE_")
            .to_lowercase(),
    };
    let oneof = field
        .oneof_index
        .map(|i| format!(" oneof#{i}"))
        .unwrap_or_default();
    format!("{label}{ty}{oneof}")
}

/// Every method, field and enum value of the descriptor set `encoded`, one line each,
/// sorted.
///
/// # Errors
/// [`ApiError::Descriptor`] when `encoded` is not a descriptor set.
pub fn lines(encoded: &[u8]) -> Result<Vec<String>, ApiError> {
    let set = FileDescriptorSet::decode(encoded)?;
    let mut out = Vec::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                out.push(format!(
                    "rpc {package}.{}.{} {} -> {}{}",
                    service.name(),
                    method.name(),
                    method.input_type().trim_start_matches('.'),
                    if method.server_streaming() {
                        "stream "
                    } else {
                        ""
                    },
                    method.output_type().trim_start_matches('.'),
                ));
            }
        }
        for message in &file.message_type {
            for field in &message.field {
                out.push(format!(
                    "field {package}.{} {} {} {}",
                    message.name(),
                    field.number(),
                    field.name(),
                    type_name(field)
                ));
            }
        }
        for e in &file.enum_type {
            for value in &e.value {
                out.push(format!(
                    "enum {package}.{} {} {}",
                    e.name(),
                    value.number(),
                    value.name()
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The lines of `baseline` (one per line, `#` comments and blank lines ignored) that
/// `current` no longer has: each is a breaking change.
pub fn breaking_changes(baseline: &str, current: &[String]) -> Vec<String> {
    baseline
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !current.iter().any(|c| c == l))
        .map(str::to_string)
        .collect()
}
