//! The Go client of the control API (`clients/go`), built the way CI can: with Debian's
//! Go toolchain and Debian's packaged Go libraries (gRPC, protobuf), in GOPATH mode,
//! offline. A Go agent's own build uses modules (`clients/go/go.mod`) instead.

use std::io;
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
/// Go itself must be installed: CI installs it (`dev.sh`'s package list).
///
/// # Errors
/// When the GOPATH directory or its link cannot be made.
pub fn go(gopath: &Path) -> io::Result<Command> {
    let root = workspace_root();
    let link_dir = gopath.join("src/github.com/ironclad-rs/ironclad/clients");
    std::fs::create_dir_all(&link_dir)?;
    let link = link_dir.join("go");
    if !link.exists() {
        std::os::unix::fs::symlink(root.join("clients/go"), &link)?;
    }
    let mut cmd = Command::new("go");
    cmd.current_dir(&link)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:{DEBIAN_GOPATH}", gopath.display()))
        .env("GOCACHE", root.join("target/go/cache"))
        .env("GOFLAGS", "")
        // A Go agent needs no cgo: the client is built without it.
        .env("CGO_ENABLED", "0");
    Ok(cmd)
}

/// Builds `clients/go/example` into `dir` and returns the binary's path.
///
/// # Errors
/// When `go` cannot run (not installed) or the build fails (its output in the error).
pub fn build_example(dir: &Path) -> io::Result<PathBuf> {
    let out = dir.join("ironclad-go-example");
    let built = go(&dir.join("gopath"))?
        .args(["build", "-o"])
        .arg(&out)
        .arg("./example")
        .output()?;
    if !built.status.success() {
        return Err(io::Error::other(format!(
            "go build ./example: {}",
            String::from_utf8_lossy(&built.stderr)
        )));
    }
    Ok(out)
}
