//! Compiles every `bpf-src/*.bpf.c` into a CO-RE object and a libbpf-rs skeleton in
//! `OUT_DIR` (the skeletons for `ironclad-bpf-check`, which finds them through this
//! package's `links` metadata), and generates the helper-name table and the helper
//! allowlist from data files in `bpf-src/`. Nothing generated here is committed.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

/// Helpers that no Ironclad program may ever call, whatever the allowlist says.
const NEVER_ALLOWED: &[&str] = &[
    "probe_write_user",
    "override_return",
    "send_signal",
    "send_signal_thread",
    "sys_bpf",
];

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let src = bpf_src_dir(&manifest)?;
    let include = src.join("include");
    let lib = src.join("lib");
    let arch = bpf_arch()?;
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=IRONCLAD_BPF_SRC");

    let mut objects = programs_in(&src)?;
    if env::var_os("CARGO_FEATURE_TEST_OBJECTS").is_some() {
        objects.extend(programs_in(&src.join("tests"))?);
    }

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // docs.rs builds the documentation without clang or a BPF target: there each object
    // is empty (the documentation does not embed or describe them) and no skeleton is
    // generated. Nothing else sets DOCS_RS; a library built that way loads nothing.
    println!("cargo:rerun-if-env-changed=DOCS_RS");
    let docs_only = env::var_os("DOCS_RS").is_some();
    let mut registry = String::new();
    // The shipped objects' skeleton modules, for ironclad-bpf-check to include.
    let mut skeletons = String::new();
    for (name, path) in &objects {
        let obj = out.join(format!("{name}.bpf.o"));
        let skel = out.join(format!("{name}.skel.rs"));
        if docs_only {
            fs::write(&obj, []).map_err(|e| format!("{}: {e}", obj.display()))?;
        } else {
            build_object(path, &obj, &skel, &clang, &include, arch, &lib, &[])?;
        }
        let rel = path.strip_prefix(&src).unwrap_or(path).display();
        let upper = name.to_uppercase();
        // The build for older kernels, if the object has one: the same source with
        // IC_COMPAT defined, embedded as this object's fallback.
        let mut fallback = String::from("None");
        if COMPAT.contains(&name.as_str()) {
            let compat = out.join(format!("{name}_compat.bpf.o"));
            if docs_only {
                fs::write(&compat, []).map_err(|e| format!("{}: {e}", compat.display()))?;
            } else {
                let skel = out.join(format!("{name}_compat.skel.rs"));
                build_object(
                    path,
                    &compat,
                    &skel,
                    &clang,
                    &include,
                    arch,
                    &lib,
                    &["-DIC_COMPAT"],
                )?;
            }
            writeln!(
                registry,
                "static {upper}_COMPAT_ELF: crate::object::Aligned<[u8; {size}]> = crate::object::Aligned(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}_compat.bpf.o\")));\n\
                 /// The compiled `bpf-src/{rel}` object with `IC_COMPAT` (for kernels that lack what the main build needs).\n\
                 pub(crate) static {upper}_COMPAT: crate::object::EmbeddedObject = crate::object::EmbeddedObject::new(\"{name}\", &{upper}_COMPAT_ELF.0, None);",
                size = fs::metadata(&compat).map_err(|e| e.to_string())?.len(),
            )
            .map_err(|e| e.to_string())?;
            fallback = format!("Some(&{upper}_COMPAT)");
        }
        writeln!(
            registry,
            "static {upper}_ELF: crate::object::Aligned<[u8; {size}]> = crate::object::Aligned(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.bpf.o\")));\n\
             /// The compiled `bpf-src/{rel}` object, embedded in the binary.\n\
             pub(crate) static {upper}: crate::object::EmbeddedObject = crate::object::EmbeddedObject::new(\"{name}\", &{upper}_ELF.0, {fallback});",
            size = fs::metadata(&obj).map_err(|e| e.to_string())?.len(),
        )
        .map_err(|e| e.to_string())?;
        if !docs_only && path.parent() == Some(src.as_path()) {
            writeln!(
                skeletons,
                "/// Skeleton generated from `bpf-src/{name}.bpf.c`.\n\
                 pub(crate) mod {name}_skel {{ include!(concat!(env!(\"IRONCLAD_BPF_OUT_DIR\"), \"/{name}.skel.rs\")); }}"
            )
            .map_err(|e| e.to_string())?;
        }
    }
    write_if_changed(&out.join("objects.rs"), &registry)?;
    write_if_changed(&out.join("skeletons.rs"), &skeletons)?;
    // The skeletons (`<name>.skel.rs`, their modules in `skeletons.rs`) are compiled by the workspace's
    // `ironclad-bpf-check` crate only, which checks names.rs and the Rust ABI mirrors
    // against them: here they would be type-checked in every build of this crate (about
    // 6 MB of generated code, most of its compile time) for nothing it runs. Its build
    // script finds them through this `links` metadata (DEP_IRONCLAD_BPF_OUT_DIR).
    println!("cargo::metadata=out_dir={}", out.display());

    let helpers = helper_ids(&include.join(arch).join("vmlinux.h"))?;
    let mut table = String::from("/// `enum bpf_func_id` of the kernel this tree's vmlinux.h came from: (id, name).\npub(crate) static HELPER_NAMES: &[(u32, &str)] = &[\n");
    for (id, name) in &helpers {
        writeln!(table, "    ({id}, \"{name}\"),").map_err(|e| e.to_string())?;
    }
    table.push_str("];\n");
    write_if_changed(&out.join("helpers.rs"), &table)?;

    let names: BTreeSet<&str> = helpers.values().map(String::as_str).collect();
    let allow = allowlist(&src.join("allowlist.txt"), &names)?;
    let mut gen = String::from(
        "/// The built-in allowlist from `bpf-src/allowlist.txt`: (object, program, [callees]).\npub(crate) static BUILTIN_ALLOWLIST: &[(&str, &str, &[&str])] = &[\n",
    );
    for ((object, program), callees) in &allow {
        let list: Vec<String> = callees.iter().map(|c| format!("\"{c}\"")).collect();
        writeln!(
            gen,
            "    (\"{object}\", \"{program}\", &[{}]),",
            list.join(", ")
        )
        .map_err(|e| e.to_string())?;
    }
    gen.push_str("];\n");
    let never: Vec<String> = NEVER_ALLOWED.iter().map(|n| format!("\"{n}\"")).collect();
    writeln!(
        gen,
        "/// Helpers no program may call, whatever any allowlist says.\npub(crate) static NEVER_ALLOWED: &[&str] = &[{}];",
        never.join(", ")
    )
    .map_err(|e| e.to_string())?;
    write_if_changed(&out.join("allowlist.rs"), &gen)?;
    Ok(())
}

/// The kernel architecture the objects are built for, from the crate's target (not the
/// build machine): libbpf's name, which is also the directory of its `vmlinux.h` under
/// `bpf-src/include/`. It decides how the uprobes read their arguments (`struct pt_regs`
/// on x86, `struct user_pt_regs` on arm64) through bpf_tracing.h's `__TARGET_ARCH_*`.
fn bpf_arch() -> Result<&'static str, String> {
    println!("cargo:rerun-if-env-changed=CARGO_CFG_TARGET_ARCH");
    let target = env::var("CARGO_CFG_TARGET_ARCH").map_err(|e| e.to_string())?;
    match target.as_str() {
        "x86_64" => Ok("x86"),
        "aarch64" => Ok("arm64"),
        other => Err(format!(
            "no BPF build for target architecture {other}: Ironclad's objects are built for x86_64 and aarch64 (bpf-src/include/<arch>/vmlinux.h)"
        )),
    }
}

/// The objects built a second time with `IC_COMPAT` defined, for kernels that lack what
/// their main build needs (the kernel's BTF says; the loader picks the build, see
/// `ironclad_bpf::kernel`): TLS capture without task storage (5.11) and `bpf_loop`
/// (5.17), for Linux 5.10 to 5.16; the Sentinel without task storage and
/// `bpf_get_current_task_btf` (5.11), for 5.10.
const COMPAT: &[&str] = &["tls", "sentinel"];

/// Compiles one `.bpf.c` into its CO-RE object and libbpf-rs skeleton, for `arch`, with
/// `defines` added to clang's arguments.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per build of an object"
)]
fn build_object(
    path: &Path,
    obj: &Path,
    skel: &Path,
    clang: &str,
    include: &Path,
    arch: &str,
    lib: &Path,
    defines: &[&str],
) -> Result<(), String> {
    SkeletonBuilder::new()
        .source(path)
        .obj(obj)
        .clang(clang)
        .clang_args(
            [
                format!("-I{}", include.join(arch).display()),
                format!("-I{}", include.display()),
                format!("-I{}", lib.display()),
                format!("-D__TARGET_ARCH_{arch}"),
                "-Wall".to_string(),
                "-Werror".to_string(),
                "-Wno-unused-function".to_string(),
            ]
            .into_iter()
            .chain(defines.iter().map(|d| (*d).to_string())),
        )
        .build_and_generate(skel)
        .map(|_| ())
        .map_err(|e| format!("building {}: {e:#}", path.display()))
}

fn bpf_src_dir(manifest: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os("IRONCLAD_BPF_SRC") {
        return Ok(PathBuf::from(dir));
    }
    for candidate in [manifest.join("bpf-src"), manifest.join("../bpf-src")] {
        if candidate.join("include/ironclad.h").is_file() {
            return candidate.canonicalize().map_err(|e| e.to_string());
        }
    }
    Err("cannot find bpf-src/ (set IRONCLAD_BPF_SRC)".to_string())
}

fn programs_in(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        if let Some(stem) = file.strip_suffix(".bpf.c") {
            found.push((stem.to_string(), path.clone()));
        }
    }
    found.sort();
    Ok(found)
}

/// Parses `BPF_FUNC_<name> = <id>,` from `enum bpf_func_id` in vmlinux.h.
fn helper_ids(vmlinux: &Path) -> Result<BTreeMap<u32, String>, String> {
    let text =
        fs::read_to_string(vmlinux).map_err(|e| format!("reading {}: {e}", vmlinux.display()))?;
    let mut ids = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("BPF_FUNC_") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(" = ") else {
            continue;
        };
        let value = value.trim_end_matches(',');
        if let Ok(id) = value.parse::<u32>() {
            ids.insert(id, name.to_string());
        }
    }
    if ids.len() < 100 {
        return Err(format!(
            "{} has no usable enum bpf_func_id ({} entries)",
            vmlinux.display(),
            ids.len()
        ));
    }
    Ok(ids)
}

type AllowTable = BTreeMap<(String, String), Vec<String>>;

fn allowlist(path: &Path, helpers: &BTreeSet<&str>) -> Result<AllowTable, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut table = AllowTable::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let at = |msg: String| format!("{}:{line_no}: {msg}", path.display());
        let (target, callees) = line
            .split_once(':')
            .ok_or_else(|| at("expected `<object>.<program>: <helpers...>`".into()))?;
        let (object, program) = target
            .trim()
            .split_once('.')
            .ok_or_else(|| at(format!("`{target}` is not `<object>.<program>`")))?;
        let mut list = Vec::new();
        for callee in callees.split_whitespace() {
            if let Some(kfunc) = callee.strip_prefix("kfunc:") {
                list.push(format!("kfunc:{kfunc}"));
                continue;
            }
            if NEVER_ALLOWED.contains(&callee) {
                return Err(at(format!("helper `{callee}` is never allowed")));
            }
            if !helpers.contains(callee) {
                return Err(at(format!("unknown helper `{callee}`")));
            }
            list.push(callee.to_string());
        }
        let key = (object.to_string(), program.to_string());
        if table.insert(key, list).is_some() {
            return Err(at(format!("`{target}` is listed twice")));
        }
    }
    Ok(table)
}

fn write_if_changed(path: &Path, contents: &str) -> Result<(), String> {
    if fs::read_to_string(path).ok().as_deref() == Some(contents) {
        return Ok(());
    }
    fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}
