//! `ironclad-policy`'s integration suites, one test binary: each module is one suite (a
//! file beside this one).

mod fuzz_corpus;
mod runtime_rules;
mod sources;
