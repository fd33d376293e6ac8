//! Any text given to the policy loader gives a compiled policy or positioned errors,
//! never a panic. Feed paths resolve below a directory that does not exist, so inputs
//! read no files but those they name absolutely (bounded: regular files only, 64 MiB).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let path = std::path::Path::new("/nonexistent-ironclad-fuzz/policy.yaml");
    match ironclad_policy::config::compile_str(text, path) {
        Ok(compiled) => {
            if let Some(shield) = compiled.shield {
                let _ = shield.owners();
            }
        }
        Err(e) => assert!(!e.diagnostics.is_empty()),
    }
});
