//! The fuzz corpus seeds are valid feeds: each parses strictly with its target's format,
//! so the fuzzers start from the real formats.

use std::path::Path;

use ironclad_policy::feeds::{read_feed, FeedFormat, Strictness};

#[test]
fn feed_seeds_parse_strictly() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let targets = [
        ("feed_plain", vec![FeedFormat::Plain]),
        ("feed_spamhaus", vec![FeedFormat::Spamhaus]),
        ("feed_feodo", vec![FeedFormat::Feodo]),
        ("feed_firehol", vec![FeedFormat::Firehol]),
        (
            "feed_csv",
            vec![FeedFormat::Csv {
                column: "ip".into(),
            }],
        ),
        (
            "feed_json",
            vec![
                FeedFormat::Json { field: None },
                FeedFormat::Json {
                    field: Some("ip".into()),
                },
            ],
        ),
    ];
    for (target, formats) in targets {
        let dir = corpus.join(target);
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let parsed = formats
                .iter()
                .find_map(|f| read_feed(&path, f, Strictness::Strict).ok())
                .unwrap_or_else(|| panic!("{} parses with no format of {target}", path.display()));
            assert!(!parsed.prefixes.is_empty(), "{}", path.display());
            seeds += 1;
        }
        assert!(seeds > 0, "{target} has seeds");
    }
}
