//! Any bytes given as a bundle manifest give a manifest whose every path stays inside
//! the bundle, or a message; never a panic. Each listed path, and the input itself taken
//! as a path, is resolved against a real directory: a resolved path is always inside it.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ironclad_policy::bundle::{parse_manifest, resolve_inside};
use libfuzzer_sys::fuzz_target;

/// A bundle-like directory with a file, a subdirectory and a link leading out of it.
fn bundle_dir() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ic-fuzz-bundle-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("feeds"));
        let _ = std::fs::write(dir.join("feeds/list.txt"), "192.0.2.1\n");
        let _ = std::os::unix::fs::symlink("/etc", dir.join("out"));
        dir
    })
}

fn check(path: &Path) {
    let dir = bundle_dir();
    if let Ok(resolved) = resolve_inside(path, dir) {
        let root = std::fs::canonicalize(dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(resolved.starts_with(&root), "{} escaped", resolved.display());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = parse_manifest(data) {
        for rel in manifest.files.keys() {
            assert!(!rel.is_empty() && !rel.starts_with('/') && !rel.split('/').any(|c| c == ".."));
            check(Path::new(rel));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check(Path::new(text));
    }
});
