//! What the veth-pair comparisons share: running a command, compiling the small C
//! traffic generators in this directory, and the frame sender (`blast.c`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ironclad_testing::NetNs;

/// Runs `program` with `args`, fails the benchmark with its stderr if it fails, and
/// returns its stdout.
pub(crate) fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compiles `benches/support/NAME.c` into `dir/NAME`.
pub(crate) fn build_c(dir: &Path, name: &str) -> PathBuf {
    let bin = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/support")
        .join(format!("{name}.c"));
    sh(
        "cc",
        &[
            "-O2",
            "-o",
            &bin.display().to_string(),
            &src.display().to_string(),
        ],
    );
    bin
}

/// Runs a generator in `ns` that prints the nanoseconds its loop took.
pub(crate) fn timed(ns: &NetNs, argv: &[&str]) -> Duration {
    let out = ns.exec(argv).unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nanos: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{} output: {e}", argv[0]));
    Duration::from_nanos(nanos)
}

/// `blast.c` in a namespace: prebuilt UDP frames out of `iface` to `mac`.
pub(crate) struct Blast<'a> {
    pub(crate) ns: &'a NetNs,
    pub(crate) bin: &'a Path,
    pub(crate) iface: &'a str,
    pub(crate) mac: String,
    pub(crate) sources: &'a Path,
    /// `[DSTIP, SPORT, DPORT]`, or blast's defaults when empty.
    pub(crate) to: Vec<String>,
}

impl Blast<'_> {
    /// Sends `count` frames; returns the sender's own time.
    pub(crate) fn send(&self, count: u64) -> Duration {
        let (bin, count, sources) = (
            self.bin.display().to_string(),
            count.to_string(),
            self.sources.display().to_string(),
        );
        let mut argv = vec![
            bin.as_str(),
            self.iface,
            count.as_str(),
            self.mac.as_str(),
            sources.as_str(),
        ];
        argv.extend(self.to.iter().map(String::as_str));
        timed(self.ns, &argv)
    }
}

/// The MAC address of `iface` (this namespace's).
pub(crate) fn mac_of(iface: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string()
}

/// What the side-by-side comparisons run on a path: nothing, Ironclad, or nftables.
#[derive(Clone, Copy)]
#[allow(
    dead_code,
    reason = "the firewall benchmarks compare configurations; the Shield's includes this file for the rest"
)]
pub(crate) enum Config {
    Bare,
    Ironclad,
    Nftables,
}

#[allow(
    dead_code,
    reason = "the firewall benchmarks compare configurations; the Shield's includes this file for the rest"
)]
impl Config {
    pub(crate) const ALL: [Self; 3] = [Self::Bare, Self::Ironclad, Self::Nftables];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Ironclad => "ironclad",
            Self::Nftables => "nftables",
        }
    }
}
