//! `ironclad-api`'s suites, one test binary: each module is one suite (a file beside this
//! one).

mod contract;
mod go_client;
