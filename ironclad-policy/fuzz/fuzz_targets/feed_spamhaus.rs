//! Any text given to the `spamhaus` feed parser gives prefixes or positioned errors, never a
//! panic; strict and lenient mode agree on the good entries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    ironclad_policy_fuzz_check(text, &ironclad_policy::feeds::FeedFormat::Spamhaus);
});

include!("check.rs");
