//! Feeds fetched over HTTPS from a local server on 127.0.0.1: a 200 is enforced, a 304
//! changes nothing, and a 500, a truncated body, an oversized body, a slow server and
//! a body that is not a feed all leave the last good set in the kernel; with the server
//! down, a restarted daemon enforces the cached copy at once.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ironclad_testing::ca_signed_cert;
use ironclad_testing::require_privileges;

use crate::common::{Daemon, Lab};

struct FeedServer {
    child: Child,
    port: u16,
    control: PathBuf,
    log: PathBuf,
}

impl FeedServer {
    fn start(dir: &Path, cert: &Path, key: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/feed_server.py");
        let (control, log) = (dir.join("control"), dir.join("requests.log"));
        std::fs::write(&control, "status 503\n").expect("control");
        let mut child = Command::new("python3")
            .arg(script)
            .args([cert, key, &control, &log])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port: {line:?}"));
        Self {
            child,
            port,
            control,
            log,
        }
    }

    fn serve(&self, mode: &str) {
        std::fs::write(&self.control, mode).expect("control");
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fetched_feeds_keep_the_last_good_set_through_every_failure() {
    require_privileges!();
    let lab = Lab::new("fffetch", 13);
    let dir = lab.dir.path();
    let (ca, cert, key) = ca_signed_cert(dir).expect("certificates");
    let server = FeedServer::start(dir, &cert, &key);
    let good = dir.join("good.txt");
    std::fs::write(&good, "# remote list\n10.211.13.3\n").expect("list");
    server.serve(&format!("ok {} \"v1\"", good.display()));
    let config = lab.write_config(
        "policy.yaml",
        &format!(
            "shield:\n  sample_rate: 1\n  feed_cache: cache\n  deny_feeds:\n    - name: remote\n      url: https://127.0.0.1:{}/feed.txt\n      format: plain\n      refresh: 1s\n      timeout: 2s\n      max_bytes: 1000\n      ca_file: {}\n",
            server.port,
            ca.display()
        ),
    );
    let mut args = lab.run_args(&config);
    args.push("--detach-on-exit".into());
    let daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");
    daemon.wait_for("feed `remote` fetched: 26 bytes, 1 entries");
    daemon.wait_for_more("reloaded:", 0);
    assert_eq!(lab.ping(3, 2), 0, "the fetched entry is dropped");
    assert!(lab.reaches(2));
    let cached = dir.join("cache/remote.feed");
    assert_eq!(std::fs::read(&cached).ok(), std::fs::read(&good).ok());
    let slot = lab.status()["slot"].clone();

    // 304: a conditional request, nothing reloaded, nothing written to the maps.
    daemon.wait_for_more("feed `remote`: not modified", 0);
    assert!(
        server.requests().contains("if-none-match=\"v1\""),
        "{}",
        server.requests()
    );
    assert_eq!(
        daemon.log().matches("reloaded:").count(),
        1,
        "{}",
        daemon.log()
    );
    assert_eq!(lab.status()["slot"], slot, "no policy switch");

    for (mode, message) in [
        (
            "status 500",
            "fetch failed, the last good copy stays: HTTP 500",
        ),
        ("truncate", "fetch failed, the last good copy stays"),
        (
            "oversize",
            "the body is larger than the limit of 1000 bytes",
        ),
        ("slow", "no complete answer within 2s"),
        ("garbage", "the download is not a valid feed"),
    ] {
        let before = daemon.log().matches(message).count();
        server.serve(mode);
        daemon.wait_for_more(message, before);
        assert_eq!(lab.ping(3, 1), 0, "{mode}: the last good set stays");
        assert!(lab.reaches(2), "{mode}");
        assert_eq!(
            std::fs::read(&cached).ok(),
            std::fs::read(&good).ok(),
            "{mode}"
        );
    }
    assert!(
        daemon.log().contains("cut short"),
        "the truncated body: {}",
        daemon.log()
    );
    assert_eq!(
        daemon.log().matches("reloaded:").count(),
        1,
        "{}",
        daemon.log()
    );
    assert_eq!(lab.status()["slot"], slot);
    let mut daemon = daemon;
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    assert!(lab.reaches(3), "--detach-on-exit removed the Shield");

    // The server is down: a new daemon enforces the cached copy at once.
    drop(server);
    let mut again = Daemon::spawn(&args);
    again.wait_for("ready");
    assert_eq!(
        lab.ping(3, 2),
        0,
        "enforced from the cache with the server down"
    );
    again.wait_for("feed `remote`: fetch failed, the last good copy stays");
    assert_eq!(lab.ping(3, 1), 0);
    again.signal("TERM");
    assert!(again.wait().success(), "{}", again.log());
}
