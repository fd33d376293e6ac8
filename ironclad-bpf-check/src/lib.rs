//! Compile-time checks of the BPF boundary, in a crate of their own so that nothing
//! else waits for them: this crate compiles only while
//! - every map, program and BTF type `ironclad_bpf::names` lists (its `names_list.rs`)
//!   is in the skeleton libbpf-cargo generated from the compiled object, and
//! - every Rust mirror in `ironclad_core::abi` has the size, field offsets and constants
//!   of its C struct in `bpf-src/include/ironclad.h`, as the objects' BTF has them.
//!
//! A map renamed in `bpf-src/`, or a field added to a C struct but not to its mirror,
//! fails the workspace's build here. The skeletons (about 6 MB of generated code) are
//! compiled nowhere else: `ironclad-bpf` itself, which every other crate waits for,
//! embeds the objects without them. This crate is never published nor depended on;
//! `cargo build --workspace` (and so every test build) compiles it.
//!
//! ```text
//! $ cargo build -p ironclad-bpf-check
//! error[E0609]: no field `ic_v4_fast` on type `&ShieldMaps<'_>`
//! ```

mod layout;
mod names;

/// The skeletons `ironclad-bpf`'s build script generated from the compiled objects.
#[allow(
    missing_docs,
    unused_imports,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn,
    non_camel_case_types,
    non_upper_case_globals,
    dead_code
)]
mod skel {
    // One module per shipped object (`<name>_skel`), listed by ironclad-bpf's build script.
    include!(concat!(env!("IRONCLAD_BPF_OUT_DIR"), "/skeletons.rs"));
}
