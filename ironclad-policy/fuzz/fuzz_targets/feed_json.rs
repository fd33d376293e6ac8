//! Any text given to the `json` feed parser (strings, or objects with `ip`) gives
//! prefixes or positioned errors, never a panic; strict and lenient mode agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ironclad_policy::feeds::FeedFormat;

fuzz_target!(|text: &str| {
    ironclad_policy_fuzz_check(text, &FeedFormat::Json { field: None });
    ironclad_policy_fuzz_check(text, &FeedFormat::Json { field: Some("ip".into()) });
});

include!("check.rs");
