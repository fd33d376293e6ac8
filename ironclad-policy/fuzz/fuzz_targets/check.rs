// Shared by the feed targets: parse strictly and leniently and check what holds for
// every input.
fn ironclad_policy_fuzz_check(text: &str, format: &ironclad_policy::feeds::FeedFormat) {
    use ironclad_policy::feeds::{parse_feed, Strictness};
    let path = std::path::Path::new("fuzz.txt");
    let strict = parse_feed(text, path, format, Strictness::Strict);
    let lenient = parse_feed(text, path, format, Strictness::Lenient);
    match (strict, lenient) {
        (Ok(strict), Ok(lenient)) => {
            // Nothing bad: both modes read the same entries.
            assert_eq!(strict.prefixes, lenient.prefixes);
            assert_eq!((lenient.skipped, lenient.masked), (0, 0));
        }
        (Err(errors), Ok(lenient)) => {
            // Strict refused; lenient skipped or masked something, or a line the
            // errors name is beyond the text.
            assert!(!errors.diagnostics.is_empty());
            assert!(lenient.skipped + lenient.masked > 0);
            // At most one line per line break, counting a lone CR as one (as the JSON
            // reader's positions do).
            let lines = text.split(['\n', '\r']).count() as u64;
            for d in &errors.diagnostics {
                assert!(d.line <= lines, "{d}");
            }
        }
        (Err(_), Err(_)) => {} // the file's shape is wrong (CSV header, JSON syntax)
        (Ok(_), Err(e)) => panic!("lenient refused what strict accepted: {e}"),
    }
}
