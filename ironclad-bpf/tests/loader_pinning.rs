//! Pinning across processes: a map written by one process is read back, unchanged, by a
//! second process that reuses the pin; `unpin` leaves the pin root empty; and every step
//! leaves an audit record.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ironclad_bpf::{JsonLinesFile, Loader, Shield};
use ironclad_core::abi::{Action, Rule};
use ironclad_testing::require_privileges;
use ironclad_testing::BpffsDir;

const ROLE: &str = "IRONCLAD_TEST_PIN_ROLE";
const PIN_ROOT: &str = "IRONCLAD_TEST_PIN_ROOT";
const AUDIT: &str = "IRONCLAD_TEST_AUDIT_FILE";
const THIS_TEST: &str = "loader_pinning::pinned_map_written_by_one_process_is_read_by_another";
const RULE_NET: &str = "203.0.113.0/24";

/// The body of the child processes: `write` loads the Shield and writes a rule,
/// `read` loads it again (reusing the pins) and prints the rule it finds.
fn child(role: &str) {
    let pin_root = std::env::var(PIN_ROOT).expect("pin root");
    let audit = std::env::var(AUDIT).expect("audit file");
    let loader = Loader::builder()
        .pin_root(&pin_root)
        .audit_sink(Arc::new(JsonLinesFile::open(&audit).expect("audit file")))
        .build()
        .expect("loader");
    let shield = Shield::load(&loader).expect("load shield");
    let net = RULE_NET.parse().expect("cidr");
    match role {
        "write" => {
            assert!(shield.object().pinned_maps().iter().all(|p| !p.reused));
            shield
                .insert_rule(net, 4242, Action::Deny)
                .expect("write rule");
        }
        "read" => {
            assert!(shield.object().pinned_maps().iter().all(|p| p.reused));
            let rule = shield.rule(net).expect("lookup").expect("rule present");
            println!("READ-BACK rule_id={} action={}", rule.rule_id, rule.action);
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn_role(role: &str, pin_root: &Path, audit: &Path) -> String {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", THIS_TEST, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(PIN_ROOT, pin_root)
        .env(AUDIT, audit)
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child `{role}` failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn pinned_map_written_by_one_process_is_read_by_another() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return;
    }
    require_privileges!();
    let pins = BpffsDir::new("pin").expect("bpffs dir");
    let logs = tempfile::tempdir().expect("tempdir");
    let audit = logs.path().join("audit.jsonl");

    spawn_role("write", pins.path(), &audit);
    let shield_dir = pins.path().join("shield");
    assert!(
        shield_dir.join("ic_v4_fast").exists(),
        "map pinned by the writer"
    );

    let stdout = spawn_role("read", pins.path(), &audit);
    assert!(
        stdout.contains(&format!(
            "READ-BACK rule_id=4242 action={}",
            Action::Deny as u8
        )),
        "reader saw: {stdout}"
    );

    // This process adopts the same pins, checks the value once more, then detaches.
    let loader = Loader::builder()
        .pin_root(pins.path())
        .audit_sink(Arc::new(JsonLinesFile::open(&audit).expect("audit")))
        .build()
        .expect("loader");
    let shield = Shield::load(&loader).expect("load");
    assert_eq!(
        shield
            .rule(RULE_NET.parse().expect("cidr"))
            .expect("lookup"),
        Some(Rule::new(4242, Action::Deny))
    );
    drop(shield);
    let removed = loader.remove_pins("shield").expect("unpin");
    assert!(removed >= 7, "every map pin removed, got {removed}");
    let left: Vec<_> = std::fs::read_dir(pins.path())
        .expect("read pin root")
        .collect();
    assert!(left.is_empty(), "pin root not empty after detach: {left:?}");

    let text = std::fs::read_to_string(&audit).expect("audit log");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let has = |action: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        records
            .iter()
            .any(|r| r["action"] == action && r["outcome"] == "ok" && pred(r))
    };
    assert!(has("audit", &|r| r["object"] == "shield"), "audit record");
    assert!(has("load", &|r| r["object"] == "shield"), "load record");
    assert!(
        has("pin", &|r| r["target"]
            .as_str()
            .is_some_and(|t| t.ends_with("shield/ic_v4_fast"))),
        "pin record"
    );
    assert!(
        has("reuse", &|r| r["target"]
            .as_str()
            .is_some_and(|t| t.ends_with("shield/ic_v4_fast"))),
        "reuse record"
    );
    assert!(
        has("map_update", &|r| {
            r["target"] == "ic_v4_fast"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("new table with 1 elements"))
        }),
        "record of the new fast-path table"
    );
    assert!(
        has("map_update", &|r| r["target"] == "ic_shield_active"
            && r["detail"].as_str().is_some_and(|d| d
                .contains("policy switch")
                && d.contains("1 IPv4"))),
        "record of the policy switch"
    );
    assert!(has("unpin", &|_| true), "unpin record");
    assert!(records.iter().all(|r| r["who"]["pid"].as_u64().is_some()));
}

/// Copies this test binary where an unprivileged user can execute it.
fn copy_for_nobody() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("loader_pinning");
    std::fs::copy(std::env::current_exe().expect("exe"), &exe).expect("copy");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, exe)
}

#[test]
fn privileged_test_without_root_fails_naming_the_missing_capability() {
    require_privileges!();
    let (dir, exe) = copy_for_nobody();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&exe)
        .args(["--exact", THIS_TEST, "--nocapture", "--test-threads=1"])
        .env_remove(ironclad_testing::OPT_OUT_VAR)
        .current_dir(dir.path())
        .output()
        .expect("setpriv (util-linux) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "unprivileged run must fail:\n{text}");
    assert!(text.contains("cannot run"), "{text}");
    assert!(text.contains("CAP_BPF"), "names CAP_BPF:\n{text}");
    assert!(
        text.contains("CAP_NET_ADMIN"),
        "names CAP_NET_ADMIN:\n{text}"
    );
    assert!(text.contains("uid 65534"), "{text}");
}

const UNPRIV_PIN_ROOT: &str = "IRONCLAD_TEST_UNPRIV_PIN_ROOT";

#[test]
fn loading_without_privileges_is_a_typed_error_naming_capabilities() {
    if let Ok(pin_root) = std::env::var(UNPRIV_PIN_ROOT) {
        // Child, running as nobody: the load must fail with the typed capability error.
        let result = Loader::builder()
            .pin_root(Path::new(&pin_root).join("root"))
            .build()
            .and_then(|loader| Shield::load(&loader).map(|_| ()));
        match result {
            Ok(()) => println!("LOAD-OK"),
            Err(e) => println!("LOAD-ERROR: {e}"),
        }
        return;
    }
    require_privileges!();
    let (_dir, exe) = copy_for_nobody();
    let pins = BpffsDir::new("unpriv").expect("bpffs dir");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "--exact",
            "loader_pinning::loading_without_privileges_is_a_typed_error_naming_capabilities",
            "--nocapture",
        ])
        .env(UNPRIV_PIN_ROOT, pins.path())
        .output()
        .expect("setpriv");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("LOAD-"))
        .unwrap_or_default();
    assert!(
        line.starts_with("LOAD-ERROR: creating the pin root")
            && line.contains("needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"),
        "{text}"
    );
    assert!(!pins.path().join("root").exists());
}

/// `bpftool -j map lookup pinned PATH key SLOT 0 0 0`: the inner map id in `slot`, if any.
fn slot_inner_id(outer: &Path, slot: u8) -> Option<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "lookup", "pinned"])
        .arg(outer)
        .args(["key", &slot.to_string(), "0", "0", "0"])
        .output()
        .expect("bpftool");
    if !out.status.success() {
        return None;
    }
    // `null` for an empty slot; otherwise the id as little-endian hex bytes.
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let bytes: Vec<u8> = value["value"]
        .as_array()?
        .iter()
        .filter_map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
        .collect();
    Some(u64::from(u32::from_le_bytes(bytes.try_into().ok()?)))
}

/// Regression (hardening): an agent killed (`kill -9`) during a reload left the spare
/// slot's tables (92 MB of `map_bytes` at a million prefixes) until the next reload. A
/// table planted in the spare slot (with bpftool, as a crashed agent leaves it) is
/// released by the next load.
#[test]
fn tables_left_in_the_spare_slot_are_released_at_load() {
    require_privileges!();
    let pins = BpffsDir::new("spare").expect("bpffs dir");
    let logs = tempfile::tempdir().expect("tempdir");
    let audit = logs.path().join("audit.jsonl");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .audit_sink(Arc::new(JsonLinesFile::open(&audit).expect("audit file")))
        .build()
        .expect("loader");
    let policy = ironclad_policy::config::compile_str(
        "shield:\n  ipv6_lookup: trie\n  deny: [203.0.113.0/24, 2001:db8::/32]\n",
        Path::new("p.yaml"),
    )
    .expect("policy");
    let shield = Shield::load(&loader).expect("load");
    shield
        .replace(policy.shield.as_ref().expect("shield"))
        .expect("replace");
    let outer = pins.path().join("shield/ic_v6_trie");
    let (active, spare) = match (slot_inner_id(&outer, 0), slot_inner_id(&outer, 1)) {
        (Some(id), None) => ((0u8, id), 1u8),
        (None, Some(id)) => ((1u8, id), 0u8),
        other => panic!("one slot holds the IPv6 table: {other:?}"),
    };
    drop(shield);
    // What a crash mid-reload leaves: a table in the slot packets do not read.
    let planted = Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(&outer)
        .args([
            "key",
            &spare.to_string(),
            "0",
            "0",
            "0",
            "value",
            "id",
            &active.1.to_string(),
        ])
        .output()
        .expect("bpftool");
    assert!(planted.status.success(), "{planted:?}");
    assert!(slot_inner_id(&outer, spare).is_some(), "planted");
    let again = Shield::load(&loader).expect("load again");
    assert_eq!(
        slot_inner_id(&outer, spare),
        None,
        "the spare slot is empty"
    );
    assert_eq!(
        slot_inner_id(&outer, active.0),
        Some(active.1),
        "the active table stays"
    );
    assert_eq!(
        again.release_spare_slot().expect("release"),
        0,
        "nothing left"
    );
    let net = "203.0.113.0/24".parse().expect("cidr");
    assert!(
        again.rule(net).expect("lookup").is_some(),
        "the policy is intact"
    );
    let log = std::fs::read_to_string(&audit).expect("audit");
    assert!(log.contains("left by an earlier agent"), "{log}");
}

#[test]
fn status_without_pins_is_a_pin_error_carrying_enoent() {
    let empty = tempfile::tempdir().expect("tempdir");
    let err = Shield::status_from_pins(empty.path()).expect_err("nothing is pinned there");
    assert!(
        matches!(err, ironclad_bpf::BpfError::Pin { .. }),
        "a typed pin error: {err:?}"
    );
    assert_eq!(err.errno(), Some(libc::ENOENT), "{err:?}");
    assert!(
        err.to_string()
            .contains(&empty.path().display().to_string()),
        "the message names the path: {err}"
    );
}

/// Pins at `path`, as an older build would have, an array of maps `name` (2 slots) whose
/// template and one table (in `slot`) are arrays of `entries` values of `value` bytes.
fn pin_old_outer(path: &Path, name: &str, (value, entries): (u32, u32), slot: u32) {
    use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
    use std::os::fd::{AsFd, AsRawFd};
    std::fs::remove_file(path).expect("unpin");
    let opts = || libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    let old_table = |name: &str| {
        MapHandle::create(MapType::Array, Some(name), 4, value, entries, &opts()).expect("table")
    };
    let template = old_table("old_template");
    let outer_opts = libbpf_sys::bpf_map_create_opts {
        inner_map_fd: template.as_fd().as_raw_fd() as u32,
        ..opts()
    };
    let mut outer =
        MapHandle::create(MapType::ArrayOfMaps, Some(name), 4, 4, 2, &outer_opts).expect("outer");
    let table = old_table("old_table");
    outer
        .update(
            &slot.to_ne_bytes(),
            &table.as_fd().as_raw_fd().to_ne_bytes(),
            MapFlags::ANY,
        )
        .expect("slot");
    outer.pin(path).expect("pin");
}

/// Regression (upgrade): the fast-path tables grew from 512- to 520-byte blocks, and an
/// outer map pinned by the older build (whose inner-map template the verifier checks the
/// program against) passed the pin check, which compared only the outer map. Its inner
/// tables now make it a stale pin: refused by default, replaced on request.
#[test]
fn an_outer_map_whose_tables_have_another_shape_is_a_stale_pin() {
    require_privileges!();
    let pins = BpffsDir::new("inner").expect("bpffs dir");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    drop(Shield::load(&loader).expect("load"));
    // What the older build pinned: an array of maps of 512-byte blocks, one in slot 0.
    let path = pins.path().join("shield/ic_v4_fast");
    pin_old_outer(&path, "ic_v4_fast", (512, 73_728), 0);
    stale_then_replaced(
        &loader,
        pins.path(),
        ("value 512 B", "value 520 B"),
        "shield:\n  deny: [203.0.113.0/24, 198.51.100.7/32]\n",
    );
}

/// Loading through `loader` is refused as a stale pin whose message names what was found
/// and what is expected; a loader that replaces stale pins loads, and `policy` goes into
/// the new tables.
fn stale_then_replaced(
    loader: &Loader,
    pin_root: &Path,
    (found, expected): (&str, &str),
    policy: &str,
) -> Shield {
    let err = Shield::load(loader).expect_err("stale");
    let text = err.to_string();
    assert!(
        matches!(err, ironclad_bpf::BpfError::StalePin { .. })
            && text.contains(found)
            && text.contains(expected),
        "{text}"
    );
    let replacing = Loader::builder()
        .pin_root(pin_root)
        .replace_stale_pins(true)
        .build()
        .expect("loader");
    let shield = Shield::load(&replacing).expect("replaced");
    let policy = ironclad_policy::config::compile_str(policy, Path::new("p.yaml")).expect("policy");
    shield
        .replace(policy.shield.as_ref().expect("shield"))
        .expect("a policy loads into the new tables");
    shield
}

/// Regression (upgrade): the compiled IPv6 table's first level went from one entry per /16
/// to one per /22 of 2000::/3, and its record count from 196,608 to 278,528 records of
/// the same 24 bytes. An outer map pinned by the older build holds tables the new program
/// would misread, and the kernel refuses new-sized tables in it: a stale pin, though type
/// and sizes of key and value are the same.
#[test]
fn an_ipv6_table_with_another_record_count_is_a_stale_pin() {
    require_privileges!();
    let pins = BpffsDir::new("inner6").expect("bpffs dir");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    drop(Shield::load(&loader).expect("load"));
    let path = pins.path().join("shield/ic_v6_fast");
    pin_old_outer(&path, "ic_v6_fast", (24, 196_608), 1);
    let expected = format!("{} entries", ironclad_core::abi::SHIELD_V6_RECORDS);
    let shield = stale_then_replaced(
        &loader,
        pins.path(),
        ("196608 entries", &expected),
        "shield:\n  deny: [2001:db8:bad::/48, 203.0.113.0/24]\n  ipv6_lookup: fast\n",
    );
    // A restart of the same build keeps its pins: the tries, sized per policy, are not
    // compared by their size.
    drop(shield);
    let again = Shield::load(&loader).expect("the same build's pins are not stale");
    assert!(
        again
            .rule("2001:db8:bad::/48".parse().expect("net"))
            .expect("lookup")
            .is_some(),
        "the policy is intact"
    );
}
