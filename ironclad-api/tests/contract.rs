//! The `.proto` contract only grows within v1: every line of `proto/v1.baseline` (the
//! contract as published) is still described exactly so by the compiled descriptor.

use ironclad_api::contract::{breaking_changes, lines};
use ironclad_api::DESCRIPTOR_SET;

const BASELINE: &str = include_str!("../proto/v1.baseline");

#[test]
fn v1_keeps_every_published_method_field_and_value() {
    let current = lines(DESCRIPTOR_SET).expect("descriptor");
    let broken = breaking_changes(BASELINE, &current);
    assert!(
        broken.is_empty(),
        "breaking changes to ironclad.control.v1 (removed, renumbered or retyped):\n{}",
        broken.join("\n")
    );
    // Everything compiled is in the baseline too: a new item is added to it when it is
    // published (`IRONCLAD_BLESS_CONTRACT=1 cargo test -p ironclad-api` rewrites it).
    let listed: Vec<&str> = BASELINE
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let unlisted: Vec<&String> = current
        .iter()
        .filter(|c| !listed.contains(&c.as_str()))
        .collect();
    if std::env::var_os("IRONCLAD_BLESS_CONTRACT").is_some() {
        let mut text = String::from(
            "# ironclad.control.v1 as published: each line must stay (tests/contract.rs).\n",
        );
        for line in &current {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/proto/v1.baseline"),
            text,
        )
        .expect("write baseline");
        return;
    }
    assert!(
        unlisted.is_empty(),
        "not in proto/v1.baseline yet: {unlisted:#?}"
    );
}

#[test]
fn the_check_refuses_a_removed_a_renumbered_and_a_retyped_field() {
    let current = lines(DESCRIPTOR_SET).expect("descriptor");
    let field = current
        .iter()
        .find(|l| l.starts_with("field ironclad.control.v1.RuleEntry 1 "))
        .expect("RuleEntry.id")
        .clone();
    assert_eq!(field, "field ironclad.control.v1.RuleEntry 1 id string");
    // The same descriptor without the field, with it renumbered, with it retyped.
    let without: Vec<String> = current.iter().filter(|l| **l != field).cloned().collect();
    assert_eq!(breaking_changes(&field, &without), vec![field.clone()]);
    let renumbered: Vec<String> = without
        .iter()
        .cloned()
        .chain(["field ironclad.control.v1.RuleEntry 9 id string".to_string()])
        .collect();
    assert_eq!(breaking_changes(&field, &renumbered), vec![field.clone()]);
    let retyped: Vec<String> = without
        .iter()
        .cloned()
        .chain(["field ironclad.control.v1.RuleEntry 1 id uint64".to_string()])
        .collect();
    assert_eq!(breaking_changes(&field, &retyped), vec![field.clone()]);
    // An addition is not a break.
    let grown: Vec<String> = current
        .iter()
        .cloned()
        .chain(["field ironclad.control.v1.RuleEntry 7 note string".to_string()])
        .collect();
    assert!(breaking_changes(&field, &grown).is_empty());
}
