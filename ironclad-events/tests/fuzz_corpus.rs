//! The fuzz corpus seeds are valid inputs: each decodes (so the fuzzers start from the
//! real formats, and a layout change that breaks them is noticed here).

use std::path::Path;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
            (path.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn decode_seeds_are_valid_records() {
    let seeds = seeds("decode");
    assert_eq!(seeds.len(), 3);
    for (name, bytes) in seeds {
        let event = ironclad_events::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let json: serde_json::Value =
            serde_json::from_str(&event.to_json()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(json["kind"].is_string(), "{name}");
    }
}

#[test]
fn dns_seeds_are_valid_messages() {
    for (name, bytes) in seeds("dns") {
        let message = ironclad_events::dns::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(message.questions.len(), 1, "{name}");
        if message.response {
            assert_eq!(
                message.answers[0].address,
                Some("192.0.2.7".parse().unwrap_or_else(|e| panic!("{e}")))
            );
        }
    }
}
