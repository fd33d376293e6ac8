//! `ironclad-sentinel`'s suites, one test binary: each module is one suite (a file beside
//! this one). The guest suite's tests are ignored on the host and run in the guest
//! kernels (`guest/run.sh`).

mod sentinel_fail_closed;
mod sentinel_guest;
