//! The Go client of the control API (`clients/go`), built the way CI can: with Debian's
//! Go toolchain and Debian's packaged Go libraries (gRPC, protobuf), in GOPATH mode,
//! offline. A Go agent's own build uses modules (`clients/go/go.mod`) instead.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where Debian's packages put Go libraries.
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// A `go` command in GOPATH mode over `clients/go` and Debian's Go libraries, with its
/// build cache under `target/go/cache` (shared by every test), run in `clients/go`.
/// Panics when Go is not installed: CI installs it (`dev.sh`'s package list).
pub fn go(gopath: &Path) -> Command {
    let root = workspace_root();
    let link_dir = gopath.join("src/github.com/ironclad-rs/ironclad/clients");
    std::fs::create_dir_all(&link_dir).expect("GOPATH");
    let link = link_dir.join("go");
    if !link.exists() {
        std::os::unix::fs::symlink(root.join("clients/go"), &link).expect("GOPATH link");
    }
    let mut cmd = Command::new("go");
    cmd.current_dir(&link)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:{DEBIAN_GOPATH}", gopath.display()))
        .env("GOCACHE", root.join("target/go/cache"))
        .env("GOFLAGS", "")
        // A Go agent needs no cgo: the client is built without it.
        .env("CGO_ENABLED", "0");
    cmd
}

/// Builds `clients/go/example` into `dir` and returns the binary's path.
pub fn build_example(dir: &Path) -> PathBuf {
    let out = dir.join("ironclad-go-example");
    let built = go(&dir.join("gopath"))
        .args(["build", "-o"])
        .arg(&out)
        .arg("./example")
        .output()
        .unwrap_or_else(|e| panic!("go build (is Debian's golang-go installed?): {e}"));
    assert!(built.status.success(), "go build ./example: {built:?}");
    out
}
