//! The Go client under `clients/go` is what the generators make of the current
//! `control.proto` (so it cannot fall behind the contract), and it builds without cgo.
//! Needs Debian's golang-go, protobuf-compiler, protoc-gen-go-grpc and the packaged Go
//! gRPC and protobuf libraries (`dev.sh` installs them): without them the test fails.

#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use ironclad_testing::go::{build_example, go, workspace_root};

#[test]
fn the_committed_go_client_is_generated_from_the_current_proto() {
    let root = workspace_root();
    let tmp = tempfile::tempdir().expect("tmp");
    // protoc-gen-go (protobuf's API v2) from Debian's packaged sources.
    let plugin = tmp.path().join("protoc-gen-go");
    let built = go(&tmp.path().join("gopath"))
        .expect("GOPATH")
        .args(["build", "-o"])
        .arg(&plugin)
        .arg("google.golang.org/protobuf/cmd/protoc-gen-go")
        .output()
        .expect("go");
    assert!(built.status.success(), "{built:?}");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let module = "module=github.com/ironclad-rs/ironclad/clients/go";
    let generated = Command::new("protoc")
        .arg("-I")
        .arg(root.join("ironclad-api/proto"))
        .arg(format!("--plugin=protoc-gen-go={}", plugin.display()))
        .arg(format!("--go_out={}", out.display()))
        .arg(format!("--go_opt={module}"))
        .arg(format!("--go-grpc_out={}", out.display()))
        .arg(format!("--go-grpc_opt={module}"))
        .arg("ironclad/control/v1/control.proto")
        .output()
        .expect("protoc (Debian's protobuf-compiler)");
    assert!(generated.status.success(), "{generated:?}");
    for file in ["control.pb.go", "control_grpc.pb.go"] {
        let fresh = std::fs::read_to_string(out.join("controlv1").join(file)).expect(file);
        let committed = std::fs::read_to_string(root.join("clients/go/controlv1").join(file))
            .expect("committed");
        assert!(
            fresh == committed,
            "clients/go/controlv1/{file} is not what control.proto generates: run `./dev.sh go-client`"
        );
    }
}

#[test]
fn the_go_example_builds_without_cgo() {
    let tmp = tempfile::tempdir().expect("tmp");
    let binary = build_example(tmp.path()).expect("the Go example (Debian's golang-go)");
    // No cgo: statically linked, no program interpreter (the dynamic loader) named.
    let bytes = std::fs::read(&binary).expect("binary");
    assert!(
        !bytes.windows(8).any(|w| w == b"ld-linux"),
        "the example is dynamically linked"
    );
    assert!(Path::new(&binary).exists());
}
