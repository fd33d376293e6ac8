//! Points `lib.rs` at the skeletons `ironclad-bpf`'s build script generated (its `links`
//! metadata `out_dir`).

fn main() {
    let Some(dir) = std::env::var_os("DEP_IRONCLAD_BPF_OUT_DIR") else {
        eprintln!("error: DEP_IRONCLAD_BPF_OUT_DIR is not set: ironclad-bpf's build script must export its out_dir");
        std::process::exit(1);
    };
    println!("cargo:rerun-if-env-changed=DEP_IRONCLAD_BPF_OUT_DIR");
    println!(
        "cargo:rustc-env=IRONCLAD_BPF_OUT_DIR={}",
        dir.to_string_lossy()
    );
}
