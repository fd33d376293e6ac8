//! The `process` block: who a process is, the same for every event kind that names one
//! (egress, dns, tls, sentinel, bandwidth), filled from the process cache
//! (ironclad-bpf's `ProcessMonitor`). Also what a cgroup path says about a container,
//! and the redaction of arguments.
//!
//! ```
//! use ironclad_events::process::{container_of, Redactor};
//!
//! let c = container_of(
//!     "/system.slice/docker-4f1e5a0b6c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f.scope",
//! )
//! .expect("a docker scope");
//! assert_eq!((c.runtime, &c.id[..8]), ("docker", "4f1e5a0b"));
//!
//! let redactor = Redactor::new(&[]).expect("built-in rules");
//! let args = redactor.redact(["mysql", "-u", "app", "--password=hunter2"]);
//! assert_eq!(args, ["mysql", "-u", "app", "--password=[redacted]"]);
//! ```

use serde::Serialize;

/// What replaces a redacted argument (or the value part of `--flag=value`).
pub const REDACTED: &str = "[redacted]";

/// A process as the process cache knows it, attached to an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProcessBlock {
    /// Process (thread-group) id.
    pub pid: u32,
    /// Parent's process id.
    pub ppid: u32,
    /// The process's command name (its main thread's, as set at exec), not the name of
    /// the thread that acted (the event's own `comm`).
    pub comm: String,
    /// The executable's path as executed (the argument of `execve`; a relative one made
    /// absolute where a candidate is the very file the kernel ran); for a script, its
    /// interpreter. A path in the process's own mount namespace: see `exe_file`.
    pub exe: Option<String>,
    /// The file the kernel ran (for a script, its interpreter): device and inode, what
    /// egress rules match. Unlike `exe`, a path in the process's own mount namespace
    /// (which a process in a private mount namespace can point anywhere), it names
    /// the file itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_file: Option<ExeFile>,
    /// For a script run through `#!`: the script's path (`exe` is the interpreter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// The argument vector, bounded by the kernel's capture size and redacted.
    pub args: Vec<String>,
    /// The arguments were longer than the capture size.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub args_truncated: bool,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// When the process started, RFC 3339 (with `pid`, a name no later process has).
    pub start_time: String,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// The cgroup's path under the cgroup2 root, when known.
    pub cgroup: Option<String>,
    /// The container the cgroup belongs to, if its path names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// The wait status, when the process had exited before the event was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Parent, grandparent, ... (bounded by the policy's lineage depth).
    pub ancestors: Vec<Ancestor>,
}

/// A file by device and inode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ExeFile {
    /// The device, `major:minor` (as `/proc/PID/maps` writes it).
    pub dev: String,
    /// The inode number.
    pub ino: u64,
}

impl ExeFile {
    /// From the kernel's device encoding (`MKDEV`: major in the bits above 20).
    pub fn from_kernel(dev: u32, ino: u64) -> Self {
        Self {
            dev: format!("{}:{}", dev >> 20, dev & 0xf_ffff),
            ino,
        }
    }
}

/// One ancestor of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Ancestor {
    /// Its process id.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its executable path, when known.
    pub exe: Option<String>,
}

/// A container, as its cgroup path names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman` or `kubernetes` (a pod's cgroup whose
    /// runtime the path does not say).
    pub runtime: &'static str,
    /// The container id (64 hex digits).
    pub id: String,
    /// The Kubernetes pod's uid, when the path is under `kubepods`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container a cgroup path belongs to, from the patterns the runtimes use:
/// systemd scopes `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`; cgroupfs directories `/docker/<id>`, `/kubepods/.../pod<uid>/<id>`;
/// pod slices `kubepods-<qos>-pod<uid>.slice` (`_` in the uid stands for `-`).
pub fn container_of(path: &str) -> Option<Container> {
    let mut pod_uid = None;
    let mut found: Option<Container> = None;
    let mut parent = "";
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if let Some(uid) = part
            .strip_suffix(".slice")
            .and_then(|s| s.rsplit_once("-pod"))
            .map(|(_, uid)| uid.replace('_', "-"))
            .or_else(|| part.strip_prefix("pod").map(str::to_string))
        {
            if uid.len() == 36 {
                pod_uid = Some(uid);
            }
        }
        let scoped = part.strip_suffix(".scope").and_then(|s| {
            [
                ("docker-", "docker"),
                ("cri-containerd-", "containerd"),
                ("crio-", "cri-o"),
                ("libpod-", "podman"),
            ]
            .iter()
            .find_map(|(prefix, runtime)| Some((*runtime, s.strip_prefix(prefix)?)))
        });
        if let Some((runtime, id)) = scoped.filter(|(_, id)| is_container_id(id)) {
            found = Some(Container {
                runtime,
                id: id.to_string(),
                pod_uid: None,
            });
        } else if is_container_id(part) {
            let runtime = match parent {
                "docker" => "docker",
                "libpod_parent" => "podman",
                _ if pod_uid.is_some() => "kubernetes",
                _ => "unknown",
            };
            found = Some(Container {
                runtime,
                id: part.to_string(),
                pod_uid: None,
            });
        }
        parent = part;
    }
    found.map(|mut c| {
        c.pod_uid = pod_uid;
        c
    })
}

/// A bad redaction pattern.
#[derive(Debug, thiserror::Error)]
#[error("redaction pattern {pattern:?}: {source}")]
pub struct RedactError {
    /// The pattern.
    pub pattern: String,
    /// What the regex compiler said.
    #[source]
    pub source: regex::Error,
}

/// Replaces secrets in argument vectors with [`REDACTED`].
///
/// Built in: the value of `--NAME=value` and the argument after `--NAME` or `-NAME` when
/// NAME contains `pass`, `secret`, `token`, `key`, `auth` or `credential` (any case);
/// the password of a `user:password` credential given to `-u`, `--user`, `-U` or
/// `--proxy-user` (curl, wget and their kind); a secret header's value (`-H
/// 'Authorization: Bearer ...'`, `Cookie:`, `X-Api-Key:`); a URL's `user:password@`
/// password and the values of its query parameters whose names hold one of those words
/// (`?token=...`, `&sig=...`). Extra patterns: an argument matching any of them is
/// replaced whole.
#[derive(Debug, Clone)]
pub struct Redactor {
    extra: Vec<regex::Regex>,
}

const SECRET_WORDS: &[&str] = &["pass", "secret", "token", "key", "auth", "credential"];

/// Flags whose value is a `user:password` credential.
const CREDENTIAL_FLAGS: &[&str] = &["-u", "--user", "-U", "--proxy-user"];

/// Words (beyond [`SECRET_WORDS`]) that make a query parameter's value a credential:
/// signed URLs' signatures (`X-Amz-Signature`), session ids; and `sig` itself.
const SECRET_PARAM_WORDS: &[&str] = &["signature", "session"];

fn secret_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "sig"
        || SECRET_WORDS
            .iter()
            .chain(SECRET_PARAM_WORDS)
            .any(|w| lower.contains(w))
}

/// Headers whose value is a credential.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// `user:password` with the password redacted (the argument as it is without a `:`).
fn redact_credential(value: &str) -> String {
    match value.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => value.to_string(),
    }
}

/// `Name: value` with the value redacted when the header carries a credential.
fn redact_header(arg: &str) -> Option<String> {
    let (name, _) = arg.split_once(':')?;
    SECRET_HEADERS
        .contains(&name.trim().to_ascii_lowercase().as_str())
        .then(|| format!("{name}: {REDACTED}"))
}

/// A URL or path with the values of its secret query parameters redacted
/// (`/p?token=[redacted]&page=2`): what an event may say of a request target.
pub fn redact_query(target: &str) -> String {
    let Some((base, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if secret_param(name) => format!("{name}={REDACTED}"),
            _ => param.to_string(),
        })
        .collect();
    let mut out = format!("{base}?{}", params.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn secret_flag(flag: &str) -> bool {
    let name = flag.trim_start_matches('-').to_ascii_lowercase();
    flag.starts_with('-') && SECRET_WORDS.iter().any(|w| name.contains(w))
}

impl Redactor {
    /// The built-in rules plus `patterns` (regular expressions, `regex` crate syntax).
    pub fn new(patterns: &[String]) -> Result<Self, RedactError> {
        let extra = patterns
            .iter()
            .map(|p| {
                regex::Regex::new(p).map_err(|source| RedactError {
                    pattern: p.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { extra })
    }

    /// The arguments with secrets replaced.
    pub fn redact<I, S>(&self, args: I) -> Vec<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        let mut next_is_secret = false;
        let mut next_is_credential = false;
        let mut next_is_header = false;
        for arg in args {
            let arg = arg.as_ref();
            if std::mem::take(&mut next_is_secret) || self.extra.iter().any(|r| r.is_match(arg)) {
                out.push(REDACTED.to_string());
                continue;
            }
            if std::mem::take(&mut next_is_credential) {
                out.push(redact_credential(arg));
                continue;
            }
            if std::mem::take(&mut next_is_header) {
                out.push(redact_header(arg).unwrap_or_else(|| arg.to_string()));
                continue;
            }
            if let Some((flag, value)) = arg.split_once('=') {
                if secret_flag(flag) {
                    out.push(format!("{flag}={REDACTED}"));
                    continue;
                }
                if CREDENTIAL_FLAGS.contains(&flag) {
                    out.push(format!("{flag}={}", redact_credential(value)));
                    continue;
                }
            }
            if CREDENTIAL_FLAGS.contains(&arg) {
                next_is_credential = true;
            } else if arg == "-H" || arg == "--header" {
                next_is_header = true;
            } else if secret_flag(arg) {
                next_is_secret = true;
            }
            out.push(redact_query(&redact_url_password(arg)));
        }
        out
    }
}

/// `scheme://user:password@host...` with the password redacted.
fn redact_url_password(arg: &str) -> String {
    let Some((scheme, rest)) = arg.split_once("://") else {
        return arg.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority
        .rsplit_once('@')
        .and_then(|(userinfo, host)| Some((userinfo.split_once(':')?.0, host)))
    {
        Some((user, host)) => {
            format!(
                "{scheme}://{user}:{REDACTED}@{host}{}",
                &rest[authority_end..]
            )
        }
        None => arg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_read_from_every_runtime_layout() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let pod = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9";
        let pod_ = pod.replace('-', "_");
        let cases = [
            (format!("/system.slice/docker-{id}.scope"), "docker", None),
            (format!("/docker/{id}"), "docker", None),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_}.slice/cri-containerd-{id}.scope"),
                "containerd",
                Some(pod),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{pod_}.slice/crio-{id}.scope"),
                "cri-o",
                Some(pod),
            ),
            (format!("/kubepods/besteffort/pod{pod}/{id}"), "kubernetes", Some(pod)),
            (format!("/machine.slice/libpod-{id}.scope"), "podman", None),
        ];
        for (path, runtime, pod_uid) in cases {
            let c = container_of(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(c.runtime, runtime, "{path}");
            assert_eq!(c.id, id, "{path}");
            assert_eq!(c.pod_uid.as_deref(), pod_uid, "{path}");
        }
        for plain in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/system.slice/docker.service",
            "/system.slice/docker-notanid.scope",
        ] {
            assert_eq!(container_of(plain), None, "{plain}");
        }
    }

    #[test]
    fn secrets_in_arguments_are_redacted() {
        let r = Redactor::new(&["^AKIA[0-9A-Z]{16}$".to_string()]).expect("pattern");
        let got = r.redact([
            "curl",
            "-H",
            "x",
            "--token",
            "abc",
            "--api-key=k1",
            "https://bob:pw@example.com/path",
            "AKIAABCDEFGHIJKLMNOP",
            "--verbose",
            "plain",
        ]);
        assert_eq!(
            got,
            [
                "curl",
                "-H",
                "x",
                "--token",
                REDACTED,
                "--api-key=[redacted]",
                "https://bob:[redacted]@example.com/path",
                REDACTED,
                "--verbose",
                "plain"
            ]
        );
        let err = Redactor::new(&["(".to_string()]).expect_err("bad pattern");
        assert!(err.to_string().contains("\"(\""), "{err}");
    }

    /// Regression (red team, round 3): `curl --user u:password` and a token in a URL's
    /// query appeared whole in every event's `process.args`.
    #[test]
    fn credentials_headers_and_query_secrets_in_arguments_are_redacted() {
        let r = Redactor::new(&[]).expect("no pattern");
        let got = r.redact([
            "curl",
            "--user",
            "alice:s3cr3t",
            "-u",
            "bob:hunter2",
            "--proxy-user=carol:pw9",
            "-H",
            "Authorization: Bearer eyJabc",
            "-H",
            "Accept: text/plain",
            "https://example.test/p?token=tok-1&page=2&X-Amz-Signature=abc#top",
            "sudo",
            "-u",
            "root",
        ]);
        assert_eq!(
            got,
            [
                "curl",
                "--user",
                "alice:[redacted]",
                "-u",
                "bob:[redacted]",
                "--proxy-user=carol:[redacted]",
                "-H",
                "Authorization: [redacted]",
                "-H",
                "Accept: text/plain",
                "https://example.test/p?token=[redacted]&page=2&X-Amz-Signature=[redacted]#top",
                "sudo",
                "-u",
                "root",
            ]
        );
        assert_eq!(redact_query("/a?b=1"), "/a?b=1");
        assert_eq!(redact_query("/a?sig=x&b"), "/a?sig=[redacted]&b");
    }
}
