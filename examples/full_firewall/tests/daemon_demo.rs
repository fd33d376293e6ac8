//! The reference daemon as a user runs it: the binary itself, no library shortcuts.

use std::process::Command;

use ironclad_testing::require_privileges;

const BIN: &str = env!("CARGO_BIN_EXE_full_firewall");

#[test]
fn binary_links_nothing_but_libc() {
    let out = Command::new("ldd").arg(BIN).output().expect("ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    for lib in ["libbpf", "libelf", "libz"] {
        assert!(!text.contains(lib), "{lib} is linked dynamically:\n{text}");
    }
    assert!(text.contains("libc.so"), "{text}");
}

#[test]
fn audit_lists_every_program_and_its_helpers_without_privileges() {
    let out = Command::new(BIN).arg("audit").output().expect("run audit");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let calls = json["shield"]["ic_shield_xdp"]
        .as_array()
        .expect("shield program listed");
    assert!(calls
        .iter()
        .any(|c| c.as_str() == Some("bpf_map_lookup_elem (helper 1)")));
}

/// `completions` and `manpage` are generated from the command line's definition: bash
/// loads the script and completes the subcommands; the page is roff naming every
/// subcommand.
#[test]
fn shell_completions_and_the_manual_page_come_from_the_command_line() {
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <({BIN} completions bash) && complete -p full_firewall && \
             COMP_WORDS=(full_firewall conn) COMP_CWORD=1 && \
             _full_firewall full_firewall conn full_firewall && echo \"${{COMPREPLY[@]}}\""
        ))
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&loaded.stdout);
    assert!(loaded.status.success(), "{loaded:?}");
    assert!(text.contains("-F _full_firewall full_firewall"), "{text}");
    assert!(
        text.lines().last().is_some_and(|l| l.trim() == "conntrack"),
        "`full_firewall conn<TAB>` completes to conntrack: {text}"
    );
    let page = Command::new(BIN).arg("manpage").output().expect("manpage");
    assert!(page.status.success(), "{page:?}");
    let roff = String::from_utf8_lossy(&page.stdout);
    assert!(roff.contains(".TH full_firewall"), "{roff}");
    for sub in [
        "check",
        "run",
        "status",
        "conntrack",
        "rules",
        "completions",
    ] {
        assert!(roff.contains(sub), "{sub} in the page");
    }
    // As `man` shows it.
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("full_firewall.1");
    std::fs::write(&file, page.stdout).expect("page");
    let shown = Command::new("man")
        .args(["-P", "cat", "-l"])
        .arg(&file)
        .env("MANWIDTH", "80")
        .output()
        .expect("man");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("Ironclad reference daemon") && shown.contains("conntrack"),
        "{shown}"
    );
}

#[test]
fn demo_drops_denied_sources_and_cleans_up() {
    require_privileges!();
    let out = Command::new(BIN)
        .args(["demo", "--seconds", "2"])
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = |source: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(source) && l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary for {source}:\n{text}"))
            .to_string()
    };
    for denied in ["10.250.0.66 ", "fd99::66 "] {
        assert!(summary(denied).contains(" 0 received"), "{text}");
    }
    for allowed in ["10.250.0.2 ", "10.250.0.70 ", "10.250.0.65 ", "fd99::2 "] {
        assert!(summary(allowed).contains("0% packet loss"), "{text}");
        assert!(!summary(allowed).contains("100% packet loss"), "{text}");
    }
    // The stateful firewall's part: the admitted port from the admitted source only,
    // and the host's own connection out answered through the default-deny.
    let connect = |src: &str, port: &str| {
        text.lines()
            .find(|l| {
                l.contains(&format!("connect {src} ")) && l.contains(&format!("port {port}:"))
            })
            .unwrap_or_else(|| panic!("no connect line for {src} port {port}:\n{text}"))
            .to_string()
    };
    assert!(connect("10.250.0.2", "8022").contains(": OPEN"), "{text}");
    assert!(connect("fd99::2", "8022").contains(": OPEN"), "{text}");
    assert!(
        connect("10.250.0.70", "8022").contains(": DROPPED"),
        "{text}"
    );
    assert!(
        connect("10.250.0.2", "8023").contains(": DROPPED"),
        "{text}"
    );
    assert!(
        text.contains("host -> http://10.250.0.2:8080/: HTTP/1.0 200 OK"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("tcp  out 10.250.0.1:") && l.contains("-> 10.250.0.2:8080")),
        "conntrack lists the host's connection: {text}"
    );
    // Its flows, in words: each opening with the rule that admitted it, each end.
    assert!(
        text.lines().any(|l| l.contains("tcp in  10.250.0.2:")
            && l.contains("-> 10.250.0.1:8022")
            && l.contains("admitted by firewall.rules[0]")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("-> 10.250.0.2:8080")
            && l.contains(" after ")
            && l.contains(" from the side that opened it")),
        "a flow's end: {text}"
    );
    assert!(text.contains("cleanup: detached"), "{text}");
    // What an operator reads, not Rust's words or protocol numbers, and no audit
    // records on the terminal (they are in the audit log the demo names).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("action="), "{stderr}");
    for word in [
        " Deny",
        " Allow",
        " Drop",
        " Accept",
        " In ",
        " Out ",
        " Tcp",
        " Any ",
        "proto 1 ",
        "NewAccepted",
    ] {
        assert!(
            !text.contains(word),
            "`{word}` in the demo's output:\n{text}"
        );
    }
    // One packet is `1 packet` (`31 packets` is fine).
    assert!(
        !text
            .match_indices("1 packets")
            .any(|(at, _)| at == 0 || !text.as_bytes()[at - 1].is_ascii_digit()),
        "`1 packets` in the demo's output:\n{text}"
    );
    assert!(
        text.contains("drop event: icmp 10.250.0.66 -> 10.250.0.1"),
        "{text}"
    );
}
