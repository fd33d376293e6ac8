//! The reference daemon as users run it, one test binary: each module is one suite (a
//! file beside this one); `common` holds the lab and daemon helpers they share.
//! Privileged tests of different suites never overlap (`ironclad_testing::SuiteGuard`).

mod common;
mod daemon_api;
mod daemon_bundle;
mod daemon_demo;
mod daemon_domains;
mod daemon_fetch;
mod daemon_firewall;
mod daemon_kernel;
mod daemon_metrics;
mod daemon_rollout;
mod daemon_service;
mod daemon_shield;
mod daemon_sources;
