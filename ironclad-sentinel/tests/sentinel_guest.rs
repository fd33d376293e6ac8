//! The Sentinel against a root attacker, in a guest kernel with BPF-LSM.
//!
//! These tests need a kernel whose active LSMs include `bpf`; the machines that build
//! Ironclad cannot load LSM programs, so `guest/run.sh` (part of `./dev.sh test`) boots
//! each kernel of `guest/kernels` in QEMU and runs them there with `--ignored`. A test
//! starts an agent (`examples/sentinel_agent`, copied into a protected directory of a
//! fresh tmpfs), attacks it as root with the usual tools, and checks that the attempt
//! failed with EPERM, left the target unchanged, and produced a denial event. The attacks
//! that need nothing but a running agent are the steps of one test against one agent
//! (`attacks_on_a_running_agent_are_refused_step_by_step`); the tests that start an
//! agent their own way (an update manager, monitor-only, the daemons) have their own.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const EPERM_TEXT: &str = "Operation not permitted";
/// Where the agent's files live inside each test's tmpfs.
const BASE: &str = "opt/agent";

/// Fails (never skips) when the kernel cannot run these tests.
fn require_guest() {
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    assert!(
        lsm.split(',').any(|l| l.trim() == "bpf"),
        "these tests need a kernel with BPF-LSM active (LSMs: {lsm:?}); run them with guest/run.sh"
    );
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests run as root"
    );
}

fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples/sentinel_agent")
}

/// Writes a copy of the agent binary to `dest`, executable. The binary is read once per
/// test process and kept in memory: under TCG the guest reads the host's files through
/// 9p at about 13 MB/s, and each world's two copies of the 27 MB debug binary took four
/// of a test's twelve seconds (issue 56: the guests are CI's longest path).
fn install_agent(dest: &Path) {
    static AGENT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes = AGENT.get_or_init(|| read(&agent_binary()));
    std::fs::write(dest, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dest.display()));
}

/// A test's world: a tmpfs with a protected config directory and agent binary, an
/// unprotected and a monitored file, and the running agent.
struct World {
    root: PathBuf,
    pin_root: PathBuf,
    agent: Option<Agent>,
    /// The arguments the world's agent was started with, besides its paths.
    extra: Vec<String>,
    /// The events file's complete lines before the current step (`mark_events`):
    /// `events` reads only what came after, so a step sees its own events, never an
    /// earlier step's.
    events_from: usize,
}

struct Agent {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl World {
    fn with(name: &str, extra: &[&str]) -> World {
        require_guest();
        let root = PathBuf::from("/run/ironclad-sentinel-test").join(name);
        std::fs::create_dir_all(&root).expect("test root");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&root)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs at {}", root.display());
        // The agent lives in <tmpfs>/opt/agent/{etc,bin}: the directories above its
        // paths are renamable, so the test can try.
        let base = root.join(BASE);
        std::fs::create_dir_all(base.join("etc/conf.d")).expect("etc");
        std::fs::create_dir_all(base.join("bin")).expect("bin");
        std::fs::write(
            base.join("etc/app.yaml"),
            "shield:\n  deny: [192.0.2.0/24]\n",
        )
        .expect("config");
        std::fs::write(base.join("etc/conf.d/extra.yaml"), "extra: 1\n").expect("nested");
        std::fs::write(base.join("unprotected.txt"), "free\n").expect("unprotected");
        std::fs::write(base.join("monitored.txt"), "watched\n").expect("monitored");
        install_agent(&base.join("bin/agent"));
        install_agent(&base.join("bin/agent.previous"));
        let pin_root = PathBuf::from("/sys/fs/bpf").join(format!("ict-{name}"));
        let mut world = World {
            root,
            pin_root,
            agent: None,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            events_from: 0,
        };
        world.start_agent();
        world
    }

    /// A path under the agent's base directory.
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(BASE).join(rel)
    }

    fn events_file(&self) -> PathBuf {
        self.path("events.jsonl")
    }

    /// Starts the agent with the world's arguments.
    fn start_agent(&mut self) {
        let started = Instant::now();
        let binary = self.path("bin/agent");
        let mut child = Command::new(&binary)
            .arg("--pin-root")
            .arg(&self.pin_root)
            .arg("--events")
            .arg(self.events_file())
            .arg("--audit")
            .arg(self.path("audit.jsonl"))
            .arg("--protect")
            .arg(self.path("etc"))
            .arg("--protect")
            .arg(self.path("bin"))
            .arg("--monitor")
            .arg(self.path("monitored.txt"))
            .args(&self.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "spawning {} (exists: {}): {e}",
                    binary.display(),
                    binary.exists()
                )
            });
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("agent output");
        assert!(
            line.starts_with("ready "),
            "agent did not start: {line:?} (status {:?})",
            child.try_wait()
        );
        let ready: Value = serde_json::from_str(&line["ready ".len()..]).expect("ready json");
        let pid = child.id();
        assert_eq!(
            ready["agent_pid"],
            u64::from(pid),
            "registered as the agent"
        );
        assert_eq!(ready["hooks"], ironclad_bpf::sentinel::PROGRAMS.len());
        // Where a guest's minutes go: the agent's start (the Sentinel's and the Shield's
        // objects loaded and attached) against the test's own steps.
        eprintln!("agent ready in {:.1} s", started.elapsed().as_secs_f64());
        self.agent = Some(Agent {
            child,
            stdin,
            stdout,
            pid,
        });
    }

    fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("agent running")
    }

    /// Sends the agent a command and returns its one-line reply.
    fn ask(&mut self, command: &str) -> String {
        let agent = self.agent();
        writeln!(agent.stdin, "{command}").expect("write command");
        agent.stdin.flush().expect("flush");
        let mut line = String::new();
        agent.stdout.read_line(&mut line).expect("read reply");
        line.trim_end().to_string()
    }

    fn pid(&mut self) -> u32 {
        self.agent().pid
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.events_file())
            .unwrap_or_default()
            .lines()
            .skip(self.events_from)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// From now on `events` reads only the events written after this call (the complete
    /// lines so far are skipped; a line the agent is still writing is not complete).
    fn mark_events(&mut self) {
        self.events_from = std::fs::read_to_string(self.events_file())
            .unwrap_or_default()
            .matches('\n')
            .count();
    }

    /// Waits for an event with this op and verdict whose fields match `pred`.
    fn expect_event(&self, op: &str, verdict: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e["op"] == op && e["verdict"] == verdict && pred(e))
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {verdict} {op} event; events: {:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn expect_denied_on(&self, op: &str, path: &Path) -> Value {
        let path = path.display().to_string();
        self.expect_event(op, "denied", |e| e["path"] == path.as_str())
    }

    /// The agent answers: it is alive and still the agent.
    fn assert_alive(&mut self) {
        assert!(self.ask("status").contains("agent_pid"), "agent answers");
        let pid = self.pid();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent stat");
        let run_state = state
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("?");
        assert!(
            run_state != "T" && run_state != "Z",
            "agent state {run_state}"
        );
    }

    /// Stops the agent the only way there is: asking it.
    fn quit(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let stopping = Instant::now();
            let _ = writeln!(agent.stdin, "quit");
            let _ = agent.stdin.flush();
            let _ = agent.child.wait();
            eprintln!("agent stopped in {:.1} s", stopping.elapsed().as_secs_f64());
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.quit();
        let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn sh(script: &str) -> Output {
    run("sh", &["-c", script])
}

#[track_caller]
fn assert_eperm(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded");
    assert!(
        stderr.contains(EPERM_TEXT) || stderr.contains("permission denied"),
        "{what}: expected EPERM, got {stderr:?}"
    );
}

/// `bpftool map update <selector> key 0 0 0 0 value hex 01 00 ...` on the Shield's
/// 16-byte configuration value.
fn bpftool_map_update(selector: &[&str]) -> Output {
    let mut args = vec!["map", "update"];
    args.extend_from_slice(selector);
    args.extend_from_slice(&["key", "0", "0", "0", "0", "value", "hex", "01"]);
    args.extend_from_slice(&["00"; 15]);
    run("bpftool", &args)
}

/// A binary built next to the test's `examples/` directory (`target/debug/NAME`).
fn sibling_binary(name: &str) -> PathBuf {
    agent_binary()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name)
}

/// Spawns `command` and reads its stderr until a line contains `ready`; returns the
/// child and what it logged so far (the rest of its stderr is drained in the background).
fn spawn_until(command: &mut Command, ready: &str) -> (Child, String) {
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut log = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).expect("log") == 0 {
            panic!("exited before `{ready}`: {log}");
        }
        log.push_str(&line);
        if line.contains(ready) {
            break;
        }
    }
    std::thread::spawn(move || for _ in stderr.lines() {});
    (child, log)
}

/// The body of `GET path` from the daemon's metrics listener on 127.0.0.1:`port`.
fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    body.to_string()
}

/// A daemon test's world: a fresh tmpfs at `/run/ironclad-sentinel-test/NAME` (the
/// root), its `etc` directory (to protect) and `stopper`, a copy of `kill` to name as
/// the update manager (the way an operator stops a protected agent).
fn daemon_root(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let root = PathBuf::from("/run/ironclad-sentinel-test").join(name);
    std::fs::create_dir_all(&root).expect("root");
    assert!(run("mount", &["-t", "tmpfs", "tmpfs", arg(&root)])
        .status
        .success());
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    let stopper = root.join("stopper");
    std::fs::copy("/usr/bin/kill", &stopper).expect("copy kill");
    (root, etc, stopper)
}

/// A protected agent or daemon a test started, with its update manager `stopper`: when
/// the test ends, also by failing, it is stopped the way an operator would. (A failed
/// assertion once left its agent running and registered, and every later test's agent
/// was refused the registration, one failure reported as twelve.)
struct Protected {
    child: Option<Child>,
    stopper: PathBuf,
}

impl Protected {
    fn new(child: Child, stopper: &Path) -> Self {
        Self {
            child: Some(child),
            stopper: stopper.to_path_buf(),
        }
    }

    fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Protected {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new(&self.stopper)
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// Stops an agent with its update manager (a copy of `kill`), checks it exits cleanly
/// and that `protected` is writable again (its Sentinel is gone).
fn stop_with_update_manager(mut agent: Protected, protected: &Path) {
    let mut child = agent.child.take().expect("the agent runs");
    let out = run(arg(&agent.stopper), &["-TERM", &child.id().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = child.wait().expect("agent exit");
    assert!(status.success(), "agent exit status {status}");
    std::fs::write(protected, "changed after stop\n").expect("unprotected after stop");
}

/// A test path as the `&str` a command line takes.
fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
}

/// The interface the shared agent's Shield is attached to (a dummy device).
const ATTACKED_IFACE: &str = "ictxdp0";

/// A dummy interface, deleted when dropped.
struct Dummy(&'static str);

impl Dummy {
    fn new(name: &'static str) -> Dummy {
        let _ = run("ip", &["link", "del", name]);
        let out = run("ip", &["link", "add", name, "type", "dummy"]);
        assert!(out.status.success(), "ip link add: {out:?}");
        let out = run("ip", &["link", "set", name, "up"]);
        assert!(out.status.success(), "ip link set up: {out:?}");
        Dummy(name)
    }
}

impl Drop for Dummy {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", self.0]);
    }
}

/// The attacks on one running agent, one step after another (each a function below,
/// named for what it shows), against one agent with its Shield attached to a dummy
/// interface: every attack is refused with EPERM, leaves its target unchanged and
/// produces a denial event of its own (each step reads only the events written after it
/// began). Then the steps that change the world: what anyone may still do, the agent's
/// crash and restart, what the agent itself may still do, and a monitored file's
/// changes.
///
/// One agent for all of them because an agent's start and stop cost 13 s of an
/// emulated CPU (the Sentinel's and the Shield's objects loaded, attached and
/// detached), and twenty of them were most of the Sentinel suite's minutes in each
/// guest kernel. A step that fails does not stop the others; the test fails naming
/// every step that did, each step's panic printed above it. A step whose attack got
/// through can break the steps after it: the first failure named is the one to read.
#[test]
#[ignore = "BPF-LSM: runs in a guest kernel (guest/run.sh, part of ./dev.sh test)"]
fn attacks_on_a_running_agent_are_refused_step_by_step() {
    #[allow(clippy::type_complexity, reason = "a table of named steps")]
    let steps: &[(&str, fn(&mut World))] = &[
        (
            "rm_rf_of_the_protected_config_directory_is_refused",
            rm_rf_of_the_protected_config_directory_is_refused,
        ),
        (
            "appending_to_a_protected_file_is_refused",
            appending_to_a_protected_file_is_refused,
        ),
        ("truncate_is_refused", truncate_is_refused),
        (
            "moving_away_and_moving_over_are_refused",
            moving_away_and_moving_over_are_refused,
        ),
        (
            "a_hard_link_is_refused_and_cannot_be_written_through",
            a_hard_link_is_refused_and_cannot_be_written_through,
        ),
        (
            "chmod_chown_and_setfattr_are_refused",
            chmod_chown_and_setfattr_are_refused,
        ),
        (
            "creating_a_file_in_the_protected_directory_is_refused",
            creating_a_file_in_the_protected_directory_is_refused,
        ),
        (
            "an_io_uring_write_open_is_refused",
            an_io_uring_write_open_is_refused,
        ),
        (
            "a_bind_mount_over_the_directory_is_refused",
            a_bind_mount_over_the_directory_is_refused,
        ),
        (
            "copying_a_new_binary_over_the_agent_is_refused",
            copying_a_new_binary_over_the_agent_is_refused,
        ),
        (
            "bpftool_map_update_on_a_shield_map_is_refused",
            bpftool_map_update_on_a_shield_map_is_refused,
        ),
        (
            "bpftool_link_detach_and_removing_a_pin_are_refused",
            bpftool_link_detach_and_removing_a_pin_are_refused,
        ),
        (
            "the_shields_xdp_link_cannot_be_detached_or_unpinned",
            the_shields_xdp_link_cannot_be_detached_or_unpinned,
        ),
        (
            "kill_9_and_kill_stop_of_the_agent_are_refused",
            kill_9_and_kill_stop_of_the_agent_are_refused,
        ),
        (
            "ptrace_attach_to_the_agent_is_refused",
            ptrace_attach_to_the_agent_is_refused,
        ),
        (
            "a_second_copy_of_the_agent_cannot_register_or_update_a_map",
            a_second_copy_of_the_agent_cannot_register_or_update_a_map,
        ),
        (
            "unprotected_files_are_unaffected",
            unprotected_files_are_unaffected,
        ),
        (
            "protection_survives_an_agent_crash_and_a_restarted_agent_takes_over",
            protection_survives_an_agent_crash_and_a_restarted_agent_takes_over,
        ),
        (
            "the_agent_still_updates_its_config_and_maps",
            the_agent_still_updates_its_config_and_maps,
        ),
        // Last: it renames and removes the monitored file, without which an agent (the
        // crash step's restart) refuses to start.
        (
            "a_monitored_file_reports_changes_and_allows_them",
            a_monitored_file_reports_changes_and_allows_them,
        ),
    ];
    let _iface = Dummy::new(ATTACKED_IFACE);
    let mut w = World::with("attacks", &["--iface", ATTACKED_IFACE]);
    let mut failed = Vec::new();
    for (name, step) in steps {
        w.mark_events();
        let began = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            step(&mut w);
            // Whatever the step did, the agent answers and is not stopped.
            w.assert_alive();
        }));
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        eprintln!(
            "step {name}: {verdict} in {:.1} s",
            began.elapsed().as_secs_f64()
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} steps failed (their panics are above): {failed:#?}",
        failed.len(),
        steps.len()
    );
}

fn rm_rf_of_the_protected_config_directory_is_refused(w: &mut World) {
    let before = read(&w.path("etc/app.yaml"));
    let out = run("rm", &["-rf", arg(&w.path("etc"))]);
    assert_eperm(&out, "rm -rf");
    assert_eq!(read(&w.path("etc/app.yaml")), before);
    assert!(w.path("etc/conf.d/extra.yaml").exists());
    w.expect_denied_on("unlink", &w.path("etc/app.yaml"));
}

fn appending_to_a_protected_file_is_refused(w: &mut World) {
    let file = w.path("etc/app.yaml");
    let before = read(&file);
    assert_eperm(&sh(&format!("echo x >> {}", file.display())), "echo x >>");
    // The same directly, for the exact errno.
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect_err("append open");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    assert_eq!(read(&file), before);
    w.expect_denied_on("open_write", &file);
}

fn truncate_is_refused(w: &mut World) {
    let file = w.path("etc/app.yaml");
    let before = read(&file);
    assert_eperm(&run("truncate", &["-s0", arg(&file)]), "truncate -s0");
    let c_path = std::ffi::CString::new(arg(&file)).expect("c path");
    // SAFETY: truncate(2) reads a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::truncate(c_path.as_ptr(), 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    assert_eq!(read(&file), before);
    w.expect_denied_on("truncate", &file);
}

fn moving_away_and_moving_over_are_refused(w: &mut World) {
    let file = w.path("etc/app.yaml");
    let before = read(&file);
    let away = w.path("stolen.yaml");
    assert_eperm(&run("mv", &[arg(&file), arg(&away)]), "mv away");
    w.expect_denied_on("rename", &file);
    let evil = w.path("evil.yaml");
    std::fs::write(&evil, "shield: {}\n").expect("evil file");
    assert_eperm(&run("mv", &["-f", arg(&evil), arg(&file)]), "mv over");
    assert_eq!(read(&file), before);
    assert!(!away.exists());
    // Renaming a directory above the protected one would take its path away.
    for ancestor in [w.path(""), w.root.join("opt")] {
        let moved = ancestor.with_extension("moved");
        let err = std::fs::rename(&ancestor, &moved).expect_err("rename of an ancestor");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EPERM),
            "{}",
            ancestor.display()
        );
    }
}

fn a_hard_link_is_refused_and_cannot_be_written_through(w: &mut World) {
    let file = w.path("etc/app.yaml");
    let before = read(&file);
    let link = w.path("link.yaml");
    assert_eperm(&run("ln", &[arg(&file), arg(&link)]), "ln");
    assert!(!link.exists());
    w.expect_denied_on("link", &file);
    // Writing through a path the attacker controls fails as well: no such path exists,
    // and a write-open of the inode by any name is refused.
    assert_eperm(
        &sh(&format!(
            "ln {} {} ; echo x >> {}",
            file.display(),
            link.display(),
            file.display()
        )),
        "ln then write",
    );
    assert_eq!(read(&file), before);
}

fn chmod_chown_and_setfattr_are_refused(w: &mut World) {
    let file = w.path("etc/app.yaml");
    let mode_before = mode(&file);
    let f = arg(&file);
    assert_eperm(&run("chmod", &["777", f]), "chmod 777");
    w.expect_denied_on("chmod", &file);
    assert_eperm(&run("chown", &["nobody", f]), "chown");
    w.expect_denied_on("chown", &file);
    assert_eperm(
        &run("setfattr", &["-n", "trusted.evil", "-v", "1", f]),
        "setfattr",
    );
    w.expect_denied_on("xattr", &file);
    assert_eq!(mode(&file), mode_before);
    let meta = std::fs::metadata(&file).expect("metadata");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    let xattr = run("getfattr", &["-n", "trusted.evil", f]);
    assert!(!xattr.status.success(), "no xattr was set");
}

fn creating_a_file_in_the_protected_directory_is_refused(w: &mut World) {
    for rel in ["etc/new.yaml", "etc/conf.d/new.yaml"] {
        let path = w.path(rel);
        assert_eperm(&run("touch", &[arg(&path)]), "touch");
        assert!(!path.exists());
        w.expect_denied_on("create", &path);
    }
    let err = std::fs::create_dir(w.path("etc/newdir")).expect_err("mkdir");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let err = std::os::unix::fs::symlink("/etc/passwd", w.path("etc/sym")).expect_err("symlink");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
}

fn an_io_uring_write_open_is_refused(w: &mut World) {
    use io_uring::{opcode, types, IoUring};
    let file = w.path("etc/app.yaml");
    let before = read(&file);
    let path = std::ffi::CString::new(arg(&file)).expect("c path");
    let mut ring = IoUring::new(4).expect("io_uring");
    let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(libc::O_WRONLY | libc::O_APPEND)
        .build()
        .user_data(7);
    // SAFETY: `path` outlives the submission, which completes before this block ends.
    unsafe { ring.submission().push(&open).expect("queue") };
    ring.submit_and_wait(1).expect("submit");
    let cqe = ring.completion().next().expect("completion");
    assert_eq!(cqe.user_data(), 7);
    assert_eq!(cqe.result(), -libc::EPERM, "io_uring openat result");
    assert_eq!(read(&file), before);
    w.expect_denied_on("open_write", &file);
}

fn a_bind_mount_over_the_directory_is_refused(w: &mut World) {
    let evil = w.path("evil");
    std::fs::create_dir_all(&evil).expect("evil dir");
    std::fs::write(evil.join("app.yaml"), "shield: {}\n").expect("evil config");
    let etc = w.path("etc");
    let out = run("mount", &["--bind", arg(&evil), arg(&etc)]);
    assert_eperm(&out, "mount --bind");
    let err = rustix::mount::mount_bind(&evil, &etc).expect_err("mount(2) MS_BIND");
    assert_eq!(err.raw_os_error(), libc::EPERM);
    // Over the directory above it, too.
    let err = rustix::mount::mount_bind(&evil, w.path("")).expect_err("mount over the parent");
    assert_eq!(err.raw_os_error(), libc::EPERM);
    assert_eq!(
        read(&etc.join("app.yaml")),
        b"shield:\n  deny: [192.0.2.0/24]\n"
    );
    w.expect_denied_on("mount", &etc);
    // A change of propagation mounts nothing over anything: allowed, as `ip netns exec`
    // and container runtimes make it on `/` (an ancestor of every protected path) in
    // their own mount namespace; refused, they failed on any host with the Sentinel.
    let out = run(
        "unshare",
        &[
            "--mount",
            "sh",
            "-c",
            "mount --make-rslave / && mount --make-private /",
        ],
    );
    assert!(out.status.success(), "propagation changes: {out:?}");
    let out = run("ip", &["netns", "add", "ict-mount"]);
    assert!(out.status.success(), "ip netns add: {out:?}");
    let out = run("ip", &["netns", "exec", "ict-mount", "true"]);
    let _ = run("ip", &["netns", "del", "ict-mount"]);
    assert!(out.status.success(), "ip netns exec: {out:?}");
}

fn copying_a_new_binary_over_the_agent_is_refused(w: &mut World) {
    let binary = w.path("bin/agent");
    let before = read(&binary);
    // Over the running binary the kernel answers "text file busy" before any LSM;
    // replacing it means unlinking it first, which the Sentinel refuses.
    let out = run("cp", &["/bin/true", arg(&binary)]);
    assert!(!out.status.success(), "cp over the running agent");
    let out = run("cp", &["--remove-destination", "/bin/true", arg(&binary)]);
    assert_eperm(&out, "cp --remove-destination over the agent");
    w.expect_denied_on("unlink", &binary);
    assert!(read(&binary) == before, "agent binary unchanged");
    // The same binary when it is not running: the write-open itself is refused.
    let idle = w.path("bin/agent.previous");
    let idle_before = read(&idle);
    let out = run("cp", &["/bin/true", arg(&idle)]);
    assert_eperm(&out, "cp over an agent binary");
    w.expect_denied_on("open_write", &idle);
    assert!(read(&idle) == idle_before, "binary unchanged");
    let out = run("cp", &["/bin/true", arg(&w.path("bin/agent2"))]);
    assert_eperm(&out, "cp a new binary into the agent's directory");
}

fn bpftool_map_update_on_a_shield_map_is_refused(w: &mut World) {
    let before = w.ask("shield-config");
    assert!(!before.is_empty() && !before.starts_with("err"), "{before}");
    let pin = w.pin_root.join("shield/ic_shield_config");
    let out = bpftool_map_update(&["pinned", arg(&pin)]);
    assert_eperm(&out, "bpftool map update pinned");
    w.expect_event("bpf_map", "denied", |_| true);
    // By id as well: a writable fd to the map is refused.
    let id: u64 = w.ask("shield-config-id").parse().expect("map id");
    let out = bpftool_map_update(&["id", &id.to_string()]);
    assert_eperm(&out, "bpftool map update id");
    w.expect_event("bpf_map", "denied", |e| e["arg"] == id);
    assert_eq!(w.ask("shield-config"), before, "map unchanged");
}

fn bpftool_link_detach_and_removing_a_pin_are_refused(w: &mut World) {
    let pin = w.pin_root.join("sentinel/links/ic_file_open");
    assert!(pin.exists());
    let listed = run("bpftool", &["prog", "show", "-j"]);
    let progs: Value = serde_json::from_slice(&listed.stdout).expect("bpftool json");
    let lsm_progs = progs
        .as_array()
        .expect("list")
        .iter()
        .filter(|p| p["type"] == "lsm")
        .count();
    assert!(
        lsm_progs >= ironclad_bpf::sentinel::PROGRAMS.len(),
        "the hooks are listed ({lsm_progs})"
    );
    // Every link id the kernel has (listing ids needs no fd): the Sentinel's are refused.
    let mut refused = 0;
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: `next` is a valid u32 the call writes the next id into.
        if unsafe { libbpf_sys::bpf_link_get_next_id(id, &mut next) } != 0 {
            break;
        }
        id = next;
        let out = run("bpftool", &["link", "detach", "id", &id.to_string()]);
        if String::from_utf8_lossy(&out.stderr).contains(EPERM_TEXT) {
            refused += 1;
        }
    }
    assert!(
        refused >= ironclad_bpf::sentinel::PROGRAMS.len(),
        "refused detaching {refused} links"
    );
    w.expect_event("bpf_link", "denied", |_| true);
    let out = run("rm", &["-f", arg(&pin)]);
    assert_eperm(&out, "rm of a pin");
    assert!(pin.exists());
    w.expect_event("unlink", "denied", |e| e["name"] == "ic_file_open");
    let out = run("bpftool", &["link", "detach", "pinned", arg(&pin)]);
    assert_eperm(&out, "bpftool link detach pinned");
    // Still enforcing.
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(w.path("etc/app.yaml"))
        .expect_err("still protected");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    w.assert_alive();
}

/// Regression (enforcement you can prove): with the Sentinel enforcing, `bpftool link
/// detach` succeeded on the Shield's XDP link (the links of the features were never
/// protected, only the Sentinel's own). Now a feature's link is protected like the
/// Sentinel's: detaching it by its pin or by its id, and removing its pin, are refused
/// with an event, and it stays attached.
fn the_shields_xdp_link_cannot_be_detached_or_unpinned(w: &mut World) {
    let iface = ATTACKED_IFACE;
    let pin = w.pin_root.join(format!("shield/link_{iface}"));
    assert!(pin.exists(), "{}", pin.display());
    let id = w.ask("shield-link-id");
    let link: u64 = id.parse().unwrap_or_else(|_| panic!("a link id: {id}"));
    assert_eq!(w.ask("shield-link-health"), "Attached");

    let out = run("bpftool", &["link", "detach", "pinned", arg(&pin)]);
    assert_eperm(&out, "bpftool link detach pinned (the Shield's link)");
    w.expect_event("bpf_link", "denied", |e| e["arg"] == link);
    let out = run("bpftool", &["link", "detach", "id", &id]);
    assert_eperm(&out, "bpftool link detach id (the Shield's link)");
    let out = run("rm", &["-f", arg(&pin)]);
    assert_eperm(&out, "rm of the Shield's link pin");
    assert!(pin.exists());
    // The legacy netlink path cannot remove a link attachment either.
    let out = run("ip", &["link", "set", "dev", iface, "xdp", "off"]);
    assert!(!out.status.success(), "ip link set xdp off: {out:?}");
    assert_eq!(w.ask("shield-link-health"), "Attached", "still attached");
}

fn kill_9_and_kill_stop_of_the_agent_are_refused(w: &mut World) {
    let pid = w.pid().to_string();
    for signal in ["-9", "-STOP", "-TERM"] {
        let out = run("kill", &[signal, &pid]);
        assert_eperm(&out, &format!("kill {signal}"));
    }
    let err = rustix::process::kill_process(
        rustix::process::Pid::from_raw(w.pid() as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect_err("kill(2)");
    assert_eq!(err.raw_os_error(), libc::EPERM);
    let agent_pid = w.pid();
    w.expect_event("signal", "denied", |e| {
        e["target_pid"] == agent_pid && e["arg"] == 9
    });
    w.expect_event("signal", "denied", |e| e["arg"] == 19);
    std::thread::sleep(Duration::from_millis(200));
    w.assert_alive();
}

fn ptrace_attach_to_the_agent_is_refused(w: &mut World) {
    let pid = w.pid();
    let out = run(
        "gdb",
        &[
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "call (int)getpid()",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ptrace: Operation not permitted"),
        "gdb: {text}"
    );
    // /proc/pid/mem asks the same question; the kernel reports a refusal there as EACCES.
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .expect_err("/proc/pid/mem");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EACCES | libc::EPERM)),
        "{err}"
    );
    w.expect_event("ptrace", "denied", |e| e["target_pid"] == pid);
    w.assert_alive();
}

fn a_second_copy_of_the_agent_cannot_register_or_update_a_map(w: &mut World) {
    let before = w.ask("shield-config");
    // The same binary (same inode), run by the attacker.
    let out = run(arg(&w.path("bin/agent")), &["--intrude", arg(&w.pin_root)]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("register: Err(Refused)"), "{text}");
    assert!(text.contains("open map: Err("), "{text}");
    assert!(text.contains(EPERM_TEXT), "{text}");
    w.expect_event("register", "denied", |e| {
        e["exe"] == arg(&w.path("bin/agent"))
    });
    // A copy elsewhere is not the agent's executable at all.
    let copy = w.path("copy-of-agent");
    std::fs::copy(w.path("bin/agent"), &copy).expect("copy");
    let out = run(arg(&copy), &["--intrude", arg(&w.pin_root)]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("register: Err(Refused)"), "{text}");
    assert_eq!(w.ask("shield-config"), before, "map unchanged");
    w.assert_alive();
}

fn the_agent_still_updates_its_config_and_maps(w: &mut World) {
    let file = w.path("etc/app.yaml");
    let reply = w.ask(&format!("write {} shield: {{}}", file.display()));
    assert_eq!(reply, "ok");
    assert_eq!(read(&file), b"shield: {}");
    assert_eq!(w.ask(&format!("append {} # more", file.display())), "ok");
    assert_eq!(read(&file), b"shield: {}# more");
    let new = w.path("etc/conf.d/added-by-agent.yaml");
    assert_eq!(w.ask(&format!("write {} a: 1", new.display())), "ok");
    // A file the agent adds later is protected like the rest.
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&new)
        .expect_err("new file protected");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    assert_eq!(w.ask("map-update"), "ok");
}

fn unprotected_files_are_unaffected(w: &mut World) {
    let free = w.path("unprotected.txt");
    let out = sh(&format!(
        "echo more >> {f} && chmod 600 {f} && mv {f} {f}.2 && mv {f}.2 {f} && truncate -s1 {f}",
        f = free.display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&free), b"f");
    std::fs::write(w.path("new-file"), "x").expect("create elsewhere");
    std::fs::remove_file(w.path("new-file")).expect("remove elsewhere");
    // prctl is untouched for everyone else.
    let out = sh("cat /proc/self/status >/dev/null");
    assert!(out.status.success());
    let name = std::ffi::CString::new("renamed").expect("name");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_NAME) still works");
    assert!(!w.events().iter().any(|e| e["path"]
        .as_str()
        .is_some_and(|p| p.contains("unprotected.txt"))));
}

#[test]
#[ignore = "BPF-LSM: runs in a guest kernel (guest/run.sh, part of ./dev.sh test)"]
fn the_update_manager_can_replace_the_binary() {
    // The update manager: a copy of install(1), which replaces a file by unlinking it and
    // writing a new one (a running executable cannot be rewritten in place).
    std::fs::create_dir_all("/run/ironclad-sentinel-test").expect("dir");
    let manager = PathBuf::from("/run/ironclad-sentinel-test/updater");
    std::fs::copy("/usr/bin/install", &manager).expect("copy install");
    let w = World::with("manager", &["--manager", arg(&manager)]);
    let binary = w.path("bin/agent");
    let out = run(arg(&manager), &["/bin/true", arg(&binary)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&binary), read(Path::new("/bin/true")));
    // Plain cp still may not.
    let out = run("cp", &["/bin/false", arg(&binary)]);
    assert_eperm(&out, "cp");
    let _ = std::fs::remove_file(&manager);
}

fn a_monitored_file_reports_changes_and_allows_them(w: &mut World) {
    let file = w.path("monitored.txt");
    let f = arg(&file);
    let out = sh(&format!("echo change >> {f} && chmod 640 {f}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&file), b"watched\nchange\n");
    for op in ["open_write", "write", "chmod"] {
        let e = w.expect_event(op, "allowed", |e| e["path"] == f);
        assert_eq!(e["comm"], if op == "chmod" { "chmod" } else { "sh" });
    }
    let moved = w.path("monitored.moved");
    std::fs::rename(&file, &moved).expect("rename allowed");
    w.expect_event("rename", "allowed", |e| e["path"] == f);
    std::fs::remove_file(&moved).expect("unlink allowed");
    w.expect_event("unlink", "allowed", |_| true);
}

#[test]
#[ignore = "BPF-LSM: runs in a guest kernel (guest/run.sh, part of ./dev.sh test)"]
fn monitor_only_mode_reports_what_it_would_refuse() {
    let w = World::with("monitor-only", &["--monitor-only"]);
    let file = w.path("etc/app.yaml");
    let out = sh(&format!("echo x >> {}", file.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.expect_event("open_write", "would_deny", |e| e["path"] == arg(&file));
}

fn protection_survives_an_agent_crash_and_a_restarted_agent_takes_over(w: &mut World) {
    let file = w.path("etc/app.yaml");
    {
        let agent = w.agent();
        writeln!(agent.stdin, "crash").expect("crash");
        let _ = agent.child.wait();
    }
    w.agent = None;
    // The registration died with the process; the pinned hooks did not.
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect_err("still protected after the crash");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    // The same command line, as a service manager restarts it.
    w.start_agent();
    let reply = w.ask(&format!("write {} restarted", file.display()));
    assert_eq!(reply, "ok");
    assert_eq!(read(&file), b"restarted");
}

#[test]
#[ignore = "BPF-LSM: runs in a guest kernel (guest/run.sh, part of ./dev.sh test)"]
fn full_firewall_enables_the_sentinel_from_its_policy() {
    require_guest();
    let (root, etc, stopper) = daemon_root("full-firewall");
    let watched = root.join("watched.conf");
    std::fs::write(&watched, "a\n").expect("watched");
    let policy = etc.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "sentinel:\n  protect: [{}]\n  monitor: [{}]\n  update_manager: {}\n",
            etc.display(),
            watched.display(),
            stopper.display()
        ),
    )
    .expect("policy");
    let before = read(&policy);
    let events = root.join("events.jsonl");
    let mut command = Command::new(sibling_binary("full_firewall"));
    command
        .args(["run", "--config"])
        .arg(&policy)
        .args([
            "--pin-dir",
            "/sys/fs/bpf/ict-full-firewall",
            "--detach-on-exit",
        ])
        .arg("--audit-log")
        .arg(root.join("audit.jsonl"))
        .arg("--events")
        .arg(&events)
        .args(["--metrics", "127.0.0.1:0"]);
    let (child, log) = spawn_until(&mut command, "full_firewall: ready");
    let child = Protected::new(child, &stopper);
    assert!(log.contains("sentinel enforcing"), "{log}");
    let pid = child.id().to_string();
    let port: u16 = log
        .split("metrics on http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the metrics address in the log: {log}"));

    assert_eperm(&run("rm", &["-rf", arg(&etc)]), "rm -rf");
    assert_eq!(read(&policy), before);
    assert_eperm(&run("kill", &["-TERM", &pid]), "kill -TERM");
    let out = sh(&format!("echo b >> {}", watched.display()));
    assert!(out.status.success(), "monitored file is writable");
    let deadline = Instant::now() + Duration::from_secs(20);
    let policy_path = policy.display().to_string();
    let watched_path = watched.display().to_string();
    loop {
        let lines: Vec<Value> = std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let denied = lines.iter().any(|e| {
            e["kind"] == "sentinel" && e["verdict"] == "denied" && e["path"] == policy_path.as_str()
        });
        let reported = lines.iter().any(|e| {
            e["kind"] == "sentinel"
                && e["verdict"] == "allowed"
                && e["path"] == watched_path.as_str()
        });
        if denied && reported {
            break;
        }
        assert!(Instant::now() < deadline, "daemon events: {lines:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // What the Sentinel counts in the kernel besides its events (records its ring had
    // no room for: none here) reaches /metrics and the dashboard's features table, read
    // every second; so does the process cache it starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = http_get(port, "/metrics");
        let status: Value = serde_json::from_str(&http_get(port, "/api/status")).expect("JSON");
        let row = |name: &str| {
            status["programs"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == name))
                .cloned()
                .unwrap_or_default()
        };
        let (sentinel, cache) = (row("sentinel"), row("processes"));
        if page.contains("\nironclad_kernel_events_lost_total{source=\"sentinel\"} 0\n")
            && sentinel["counters"]["events_lost"] == 0
            && cache["counters"]["records"].as_u64() >= Some(1)
        {
            assert_eq!(sentinel["up"], true, "{sentinel}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Sentinel's and the process cache's counters: {sentinel} {cache}\n{page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The update manager stops it; --detach-on-exit removes the Sentinel.
    stop_with_update_manager(child, &policy);
    let _ = run("umount", &["-l", arg(&root)]);
}

#[test]
#[ignore = "BPF-LSM: runs in a guest kernel (guest/run.sh, part of ./dev.sh test)"]
fn embed_agent_runs_under_its_sentinel_and_forwards_every_kind_of_event() {
    require_guest();
    let (root, etc, stopper) = daemon_root("embed-agent");
    // The egress firewall's cgroup: a child of a cgroup2 mount of our own.
    let cgroup_mount = root.join("cgroup");
    std::fs::create_dir_all(&cgroup_mount).expect("cgroup mount point");
    assert!(
        run("mount", &["-t", "cgroup2", "cgroup2", arg(&cgroup_mount)])
            .status
            .success()
    );
    let cgroup = cgroup_mount.join("ict-embed");
    let _ = std::fs::create_dir(&cgroup);
    let service = std::net::TcpListener::bind("127.0.0.1:0").expect("service");
    let service_port = service.local_addr().expect("addr").port();
    let policy = etc.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "shield:\n  deny: [127.0.0.2]\n  sample_rate: 1\n\
             egress:\n  default: allow\n  rules:\n    - dst: 127.0.0.1\n      ports: [{service_port}]\n      action: deny\n"
        ),
    )
    .expect("policy");
    let before = read(&policy);
    let collector = ironclad_testing::LineCollector::start().expect("collector");
    let forward = collector.port();
    let mut command = Command::new(sibling_binary("embed_agent"));
    command
        .arg("--policy")
        .arg(&policy)
        .args(["--iface", "lo", "--pin-dir", "/sys/fs/bpf/ict-embed-agent"])
        .arg("--cgroup")
        .arg(&cgroup)
        .args(["--forward", &format!("127.0.0.1:{forward}")])
        .arg("--protect")
        .arg(&etc)
        .arg("--update-manager")
        .arg(&stopper)
        .arg("--audit-log")
        .arg(root.join("audit.jsonl"))
        .args(["--require-sentinel", "--detach-on-exit"]);
    let (child, log) = spawn_until(&mut command, "agent running");
    let child = Protected::new(child, &stopper);
    assert!(log.contains("Enforcing"), "the Sentinel enforces: {log}");
    let pid = child.id().to_string();

    // The Sentinel: root cannot remove the agent's policy or stop the agent.
    assert_eperm(&run("rm", &["-rf", arg(&etc)]), "rm -rf");
    assert_eq!(read(&policy), before);
    assert_eperm(&run("kill", &["-9", &pid]), "kill -9");
    // The Shield on lo: a source it denies gets no answer.
    let out = run(
        "ping",
        &[
            "-n",
            "-q",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "127.0.0.2",
            "127.0.0.1",
        ],
    );
    assert!(
        !out.status.success(),
        "the denied source is dropped: {out:?}"
    );
    // The egress firewall: a process in the cgroup cannot reach the service.
    let out = sh(&format!(
        "echo $$ > {}/cgroup.procs && exec curl -s --max-time 5 http://127.0.0.1:{service_port}/",
        cgroup.display()
    ));
    assert_eq!(
        out.status.code(),
        Some(7),
        "curl could not connect: {out:?}\nthe agent's log until it ran:\n{log}"
    );

    let policy_path = policy.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events: Vec<Value> = collector
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| v["event"].clone())
            .collect();
        let sentinel = events.iter().any(|e| {
            e["kind"] == "sentinel" && e["verdict"] == "denied" && e["path"] == policy_path.as_str()
        });
        let signal = events
            .iter()
            .any(|e| e["kind"] == "sentinel" && e["op"] == "signal" && e["verdict"] == "denied");
        let shield = events
            .iter()
            .any(|e| e["kind"] == "shield_drop" && e["src"] == "127.0.0.2");
        let connect = events
            .iter()
            .any(|e| e["kind"] == "connect" && e["comm"] == "curl" && e["verdict"] == "deny");
        if sentinel && signal && shield && connect {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forwarded: sentinel {sentinel}, signal {signal}, shield {shield}, connect {connect}: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Its updater stops it; --detach-on-exit takes everything out of the kernel.
    stop_with_update_manager(child, &policy);
    let _ = std::fs::remove_dir(&cgroup);
    let _ = run("umount", &["-l", arg(&cgroup_mount)]);
    let _ = run("umount", &["-l", arg(&root)]);
}

#[test]
#[ignore = "BPF-LSM: runs in a guest kernel (guest/run.sh, part of ./dev.sh test)"]
fn a_missing_protected_path_is_refused_before_anything_loads() {
    require_guest();
    let pin_root = PathBuf::from("/sys/fs/bpf/ict-missing-path");
    let out = Command::new(agent_binary())
        .arg("--pin-root")
        .arg(&pin_root)
        .args([
            "--events",
            "/run/ict-missing.jsonl",
            "--audit",
            "/run/ict-missing-audit.jsonl",
        ])
        .args(["--protect", "/nonexistent/agent.yaml"])
        .stdin(Stdio::null())
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("protect /nonexistent/agent.yaml: No such file or directory"),
        "{stderr}"
    );
    assert!(!pin_root.join("sentinel").exists(), "nothing was loaded");
    let audit = std::fs::read_to_string("/run/ict-missing-audit.jsonl").expect("audit log");
    assert!(audit.contains("\"action\":\"alert\""), "{audit}");
}

#[test]
#[ignore = "BPF-LSM: runs in a guest kernel (guest/run.sh, part of ./dev.sh test)"]
fn an_agent_on_overlayfs_registers_and_protects() {
    // Containers run agents from overlayfs, where stat() reports a per-layer device the
    // kernel's inode does not carry. The lower and upper layers are different file
    // systems here, as in a container image.
    require_guest();
    let root = PathBuf::from("/run/ironclad-sentinel-test/overlay");
    let upper_fs = root.join("upperfs");
    std::fs::create_dir_all(&root).expect("root");
    assert!(run("mount", &["-t", "tmpfs", "tmpfs", arg(&root)])
        .status
        .success());
    std::fs::create_dir_all(&upper_fs).expect("upper fs");
    assert!(run("mount", &["-t", "tmpfs", "tmpfs", arg(&upper_fs)])
        .status
        .success());
    let lower = root.join("lower");
    std::fs::create_dir_all(lower.join("bin")).expect("lower bin");
    std::fs::create_dir_all(lower.join("etc")).expect("lower etc");
    install_agent(&lower.join("bin/agent"));
    std::fs::write(lower.join("etc/app.yaml"), "a: 1\n").expect("config");
    for dir in ["upper", "work"] {
        std::fs::create_dir_all(upper_fs.join(dir)).expect("overlay dirs");
    }
    let merged = root.join("merged");
    std::fs::create_dir_all(&merged).expect("merged");
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper_fs.join("upper").display(),
        upper_fs.join("work").display()
    );
    assert!(run(
        "mount",
        &["-t", "overlay", "overlay", "-o", &options, arg(&merged)]
    )
    .status
    .success());
    let pin_root = PathBuf::from("/sys/fs/bpf/ict-overlay");
    let mut child = Command::new(merged.join("bin/agent"))
        .arg("--pin-root")
        .arg(&pin_root)
        .arg("--events")
        .arg(root.join("events.jsonl"))
        .arg("--audit")
        .arg(root.join("audit.jsonl"))
        .arg("--protect")
        .arg(merged.join("etc"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the agent from overlayfs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("agent output");
    assert!(
        line.starts_with("ready "),
        "agent did not register: {line:?}"
    );
    let file = merged.join("etc/app.yaml");
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect_err("protected on overlayfs");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    writeln!(stdin, "write {} a: 2", file.display()).expect("command");
    let mut reply = String::new();
    stdout.read_line(&mut reply).expect("reply");
    assert_eq!(reply.trim_end(), "ok", "the agent writes its own config");
    writeln!(stdin, "quit").expect("quit");
    let _ = child.wait();
    for mount in [&merged, &upper_fs, &root] {
        let _ = run("umount", &["-l", arg(mount)]);
    }
}

/// Every BPF link the kernel holds, by id (listing ids needs no fd).
fn every_link_id() -> Vec<u32> {
    let mut ids = Vec::new();
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: `next` is a valid u32 the call writes the next id into.
        if unsafe { libbpf_sys::bpf_link_get_next_id(id, &mut next) } != 0 {
            return ids;
        }
        id = next;
        ids.push(id);
    }
}

/// Every pinned link under `dir` (the daemon's pins are `link_*`), recursively.
fn link_pins(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(link_pins(&path));
        } else if entry.file_name().to_string_lossy().starts_with("link_") {
            out.push(path);
        }
    }
    out
}

/// Whether this kernel has tcx links (6.6): the stateful firewall is attached by them
/// there, by classic tc filters before.
fn kernel_has_tcx() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 6)
}

/// Sends `messages` (each a type and, for tc messages, an ifindex) as one rtnetlink
/// batch through one sendmsg(), from python: what `tc` never does, an attacker may.
fn netlink_batch(messages: &[(u16, i32)]) -> Output {
    let list: Vec<String> = messages.iter().map(|(t, i)| format!("({t},{i})")).collect();
    let script = format!(
        "import socket,struct\n\
         s=socket.socket(socket.AF_NETLINK,socket.SOCK_RAW,0)\n\
         b=b''\n\
         for n,(t,i) in enumerate([{}]):\n\
         \x20   body=struct.pack('=BBHiIII',0,0,0,i,0,0xfffffff2,0)\n\
         \x20   b+=struct.pack('=IHHII',16+len(body),t,0x5,n+1,0)+body\n\
         s.sendto(b,(0,0))\n",
        list.join(",")
    );
    run("python3", &["-c", &script])
}

/// Enforcement you can prove, through the daemon as shipped: `full_firewall` with every
/// feature that attaches something (the Shield's XDP, the stateful firewall and
/// scrubbing — tcx links from 6.6, classic tc filters before —, the identity
/// firewall's cgroup hooks and its DNS programs, telemetry, TLS capture's uprobes, the
/// process cache) under its Sentinel. A root attacker tries `bpftool link detach` on
/// every link the kernel has and on every pinned one, removes the pins, and `ip link
/// set xdp off`; then `tc` on the firewall's interface (its filters deleted, its clsact
/// qdisc deleted or added, a filter that passes everything added before the
/// firewall's), a tcx program attached before the firewall's, and a raw rtnetlink
/// batch hiding a filter deletion behind harmless requests: nothing is detached or
/// added (each attempt refused with EPERM and a Sentinel event, or not a link kind the
/// kernel can detach), the daemon never had to repair anything, and the traffic each
/// feature decides is decided as before.
#[test]
#[ignore = "BPF-LSM: runs in a guest kernel (guest/run.sh, part of ./dev.sh test)"]
fn every_link_of_the_daemons_features_stays_attached_under_its_sentinel() {
    require_guest();
    let (root, etc, stopper) = daemon_root("links");
    let ns = ironclad_testing::NetNs::new("ictlinks").expect("netns");
    let veth = ironclad_testing::VethPair::new(
        &ns,
        &["10.250.0.1/24"],
        &["10.250.0.2/24", "10.250.0.3/24"],
    )
    .expect("veth");
    let cgroup = ironclad_testing::TestCgroup::new("ictlinks").expect("cgroup");
    let denied = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let denied_port = denied.local_addr().expect("addr").port();
    std::thread::spawn(move || for _ in denied.incoming() {});
    let dropped = std::net::TcpListener::bind("10.250.0.1:9").expect("listener :9");
    std::thread::spawn(move || for _ in dropped.incoming() {});
    let tcx = kernel_has_tcx();
    let firewall = format!(
        "firewall:\n  interfaces: [{iface}]\n  rules:\n    - {{direction: in, proto: tcp, dport: 9, action: drop}}\n  scrub:\n    - {{interface: {iface}, ttl_floor: 64}}\n",
        iface = veth.host()
    );
    let policy = etc.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "sentinel:\n  protect: [{etc}]\n  update_manager: {stopper}\n\
             shield:\n  deny: [10.250.0.3]\n\
             egress:\n  default: allow\n  rules:\n    - dst: 127.0.0.0/8\n      ports: [{denied_port}]\n      proto: tcp\n      action: deny\n    - dst_domain: \"*.example.test\"\n      action: allow\n\
             telemetry:\n  dns: true\n  bandwidth: true\n\
             processes:\n  capacity: 1024\n\
             tls:\n  scope: [{{comm: openssl}}]\n{firewall}",
            etc = etc.display(),
            stopper = stopper.display(),
        ),
    )
    .expect("policy");
    let pins = PathBuf::from("/sys/fs/bpf/ict-links");
    let audit = root.join("audit.jsonl");
    let events = root.join("events.jsonl");
    let mut command = Command::new(sibling_binary("full_firewall"));
    command
        .args(["run", "--config"])
        .arg(&policy)
        .args([
            "--iface",
            veth.host(),
            "--pin-dir",
            arg(&pins),
            "--detach-on-exit",
        ])
        .arg("--cgroup")
        .arg(cgroup.path())
        .arg("--audit-log")
        .arg(&audit)
        .arg("--run-dir")
        .arg(root.join("run"))
        .arg("--events")
        .arg(&events);
    let (child, log) = spawn_until(&mut command, "full_firewall: ready");
    let child = Protected::new(child, &stopper);
    assert!(log.contains("sentinel enforcing"), "{log}");
    let mechanism = if tcx { "tcx" } else { "tc clsact" };
    assert!(
        log.contains(&format!(
            "firewall on {}: {mechanism} ingress and egress",
            veth.host()
        )),
        "the firewall by this kernel's mechanism: {log}"
    );

    // What each feature decides, before.
    let enforced = |when: &str| {
        assert!(
            ironclad_testing::ping(&ns, "10.250.0.2", "10.250.0.1", 2, "0.2").expect("ping") >= 1,
            "{when}: .2 passes"
        );
        assert_eq!(
            ironclad_testing::ping(&ns, "10.250.0.3", "10.250.0.1", 2, "0.2").expect("ping"),
            0,
            "{when}: the Shield drops .3"
        );
        let out = cgroup
            .command("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{denied_port}")])
            .output()
            .expect("bash");
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(EPERM_TEXT),
            "{when}: the identity firewall refuses: {out:?}"
        );
        assert!(
            !ns.tcp_connects("10.250.0.2", "10.250.0.1", 9, 1.0)
                .expect("connect"),
            "{when}: the firewall drops :9"
        );
    };
    enforced("before");

    let pinned = link_pins(&pins);
    // The links the kernel can detach (XDP, cgroup, tcx): the Shield's, the identity
    // firewall's four and its two DNS programs', and with tcx the firewall's two. The
    // others (tracepoints, uprobes) cannot be detached by anyone; their pins are
    // protected all the same.
    let mut detachable = vec![
        format!("shield/link_{}", veth.host()),
        "egress/link_ic_connect4".to_string(),
        "egress/link_ic_connect6".to_string(),
        "egress/link_ic_sendmsg4".to_string(),
        "egress/link_ic_sendmsg6".to_string(),
        "egress/link_ic_dns_out".to_string(),
        "egress/link_ic_dns_in".to_string(),
    ];
    if tcx {
        detachable.push(format!("firewall/link_{}_in", veth.host()));
        detachable.push(format!("firewall/link_{}_out", veth.host()));
    }
    for want in &detachable {
        assert!(
            pinned.iter().any(|p| p.ends_with(want)),
            "{want} pinned: {pinned:?}"
        );
    }
    // The attacker: every link id the kernel has, then every pin.
    let mut refused = 0;
    for id in every_link_id() {
        let out = run("bpftool", &["link", "detach", "id", &id.to_string()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "link {id} detached: {out:?}");
        assert!(
            err.contains(EPERM_TEXT) || err.contains("not supported"),
            "link {id}: {err}"
        );
        refused += usize::from(err.contains(EPERM_TEXT));
    }
    for pin in &pinned {
        let out = run("bpftool", &["link", "detach", "pinned", arg(pin)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} detached: {out:?}", pin.display());
        if detachable.iter().any(|d| pin.ends_with(d)) {
            assert_eperm(
                &out,
                &format!("bpftool link detach pinned {}", pin.display()),
            );
        } else {
            assert!(
                err.contains(EPERM_TEXT) || err.contains("not supported"),
                "{}: {err}",
                pin.display()
            );
        }
        assert_eperm(
            &run("rm", &["-f", arg(pin)]),
            &format!("rm {}", pin.display()),
        );
        assert!(pin.exists(), "{}", pin.display());
    }
    assert!(
        refused >= detachable.len(),
        "refused {refused} of the kernel's links, {} detachable pinned",
        detachable.len()
    );
    // BPF_LINK_UPDATE: a program of the attacker's own (XDP_PASS) swapped into the
    // Shield's link through an fd of its pin (the Sentinel decides on the link the fd
    // resolves to, whatever the fd came from).
    let attacker = libbpf_rs::ObjectBuilder::default()
        .open_memory(ironclad_bpf::object::baseline().elf())
        .expect("open the attacker's object")
        .load()
        .expect("load the attacker's object");
    let pass = attacker
        .progs_mut()
        .find(|p| p.name() == "ic_baseline_xdp")
        .expect("an XDP program");
    let shield_pin = pins.join(format!("shield/link_{}", veth.host()));
    let swapped = libbpf_rs::Link::open(&shield_pin).and_then(|mut l| l.update_prog(&pass));
    assert!(
        swapped
            .as_ref()
            .err()
            .is_some_and(|e| e.kind() == libbpf_rs::ErrorKind::PermissionDenied),
        "BPF_LINK_UPDATE of the Shield's link: {swapped:?}"
    );
    drop(attacker);
    // BPF_PROG_DETACH of the identity firewall's cgroup programs: a link attachment is
    // not a program attachment, and stays.
    let shown =
        ironclad_testing::bpftool(&["cgroup", "show", &cgroup.path().display().to_string()])
            .expect("bpftool cgroup show");
    let connect4 = shown
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "ic_connect4"))
        .and_then(|p| p["id"].as_u64())
        .unwrap_or_else(|| panic!("ic_connect4 on the cgroup: {shown}"));
    let out = run(
        "bpftool",
        &[
            "cgroup",
            "detach",
            &cgroup.path().display().to_string(),
            "connect4",
            "id",
            &connect4.to_string(),
        ],
    );
    assert!(!out.status.success(), "BPF_PROG_DETACH: {out:?}");
    let out = run("ip", &["link", "set", "dev", veth.host(), "xdp", "off"]);
    assert!(!out.status.success(), "ip link set xdp off: {out:?}");

    // tc on the firewall's interface, whichever mechanism carries the firewall.
    let dev = veth.host();
    let tc_attacks = [
        format!("tc filter del dev {dev} ingress"),
        format!("tc filter del dev {dev} egress"),
        format!("tc chain del dev {dev} ingress chain 0"),
        format!("tc qdisc del dev {dev} clsact"),
        format!("tc qdisc add dev {dev} clsact"),
        format!("tc filter add dev {dev} ingress pref 1 matchall action ok"),
    ];
    for attack in &tc_attacks {
        assert_eperm(&sh(attack), attack);
    }
    // A tcx program put before the firewall's (BPF_F_BEFORE, first in the chain): on
    // a kernel without tcx the request is refused before the kernel could say so.
    let attacker = libbpf_rs::ObjectBuilder::default()
        .open_memory(ironclad_bpf::object::baseline().elf())
        .expect("open the attacker's object")
        .load()
        .expect("load the attacker's object");
    let pass_tc = attacker
        .progs()
        .find(|p| p.name() == "ic_baseline_tc")
        .expect("a tc program");
    let ifindex = ironclad_bpf::ifindex(dev).expect("ifindex");
    let opts = libbpf_sys::bpf_tcx_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_tcx_opts>() as libbpf_sys::size_t,
        flags: libbpf_sys::BPF_F_BEFORE,
        ..Default::default()
    };
    // SAFETY: the program is loaded and outlives the call; `opts` is initialised with
    // its size; a link returned is destroyed at once.
    let (link, errno) = unsafe {
        use libbpf_rs::AsRawLibbpf;
        let link = libbpf_sys::bpf_program__attach_tcx(
            pass_tc.as_libbpf_object().as_ptr(),
            i32::try_from(ifindex).expect("ifindex"),
            &opts,
        );
        let errno = std::io::Error::last_os_error().raw_os_error();
        if !link.is_null() {
            libbpf_sys::bpf_link__destroy(link);
        }
        (link, errno)
    };
    assert!(
        link.is_null() && errno == Some(libc::EPERM),
        "a tcx program before the firewall's: {errno:?}"
    );
    drop(attacker);
    // One sendmsg() with many requests: the deletion hidden behind a harmless query
    // (RTM_GETLINK), and behind 64 of them (more than the Sentinel reads: refused
    // whole); a batch of queries alone passes.
    let (getlink, deltfilter) = (18u16, 45u16);
    let index = i32::try_from(ifindex).expect("ifindex");
    assert_eperm(
        &netlink_batch(&[(getlink, 0), (deltfilter, index)]),
        "a deletion second in a batch",
    );
    let mut long = vec![(getlink, 0); 64];
    long.push((deltfilter, index));
    assert_eperm(&netlink_batch(&long), "a deletion 65th in a batch");
    let queries = netlink_batch(&[(getlink, 0), (getlink, 0)]);
    assert!(queries.status.success(), "queries pass: {queries:?}");
    let tc_refusals = tc_attacks.len() + 3;

    // A Sentinel event for each refusal, in the daemon's own events.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let denials = |op: &str| {
            std::fs::read_to_string(&events)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["kind"] == "sentinel" && e["op"] == op && e["verdict"] == "denied")
                .count()
        };
        let (link_denials, tc_denials) = (denials("bpf_link"), denials("tc"));
        if link_denials >= detachable.len() && tc_denials >= tc_refusals {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{link_denials} bpf_link denials for {} detachable pinned links, {tc_denials} tc denials of {tc_refusals}",
            detachable.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The daemon checks its links every second: nothing was undone, nothing repaired.
    std::thread::sleep(Duration::from_secs(3));
    let records = std::fs::read_to_string(&audit).expect("audit log");
    assert!(
        !records.lines().any(|l| l.contains("\"action\":\"repair\"")),
        "no link was detached, so nothing was repaired: {records}"
    );
    enforced("after");
    let status = run(
        arg(&sibling_binary("full_firewall")),
        &["health", "--ready", "--run-dir", arg(&root.join("run"))],
    );
    assert!(status.status.success(), "ready: {status:?}");

    stop_with_update_manager(child, &policy);
    let _ = run("umount", &["-l", arg(&root)]);
}
