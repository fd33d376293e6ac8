//! Signed policy bundles: a directory holding `policy.yaml` and the files it refers to
//! (feeds, a GeoIP database), a `manifest.json` listing the SHA-256 of every file and a
//! serial, and `manifest.sig`, a detached Ed25519 signature of the manifest.
//!
//! ```no_run
//! use std::path::Path;
//! use ironclad_policy::bundle::{generate_key, sign_bundle, verify_bundle, TrustedKey};
//!
//! generate_key(Path::new("/root/ironclad-signing"))?;        // writes the key and .pub
//! sign_bundle(Path::new("bundle"), Path::new("/root/ironclad-signing"), None)?; // serial 1
//! let key = TrustedKey::from_file(Path::new("/etc/ironclad/signing.pub"))?;
//! let verified = verify_bundle(Path::new("bundle"), &key, None, Path::new("/var/lib/ironclad/staging"))?;
//! println!("serial {} at {}", verified.accepted.serial, verified.policy.display());
//! # Ok::<(), ironclad_policy::bundle::BundleError>(())
//! ```
//!
//! Verification reads every listed file once, checks its hash and writes it into a
//! private staging directory, and the policy is compiled from there: a file swapped
//! after the check is never read. A bundle is refused when the signature does not verify
//! with the trusted key, a file differs from its hash, is missing or is not listed, the
//! serial is older than the last accepted one (rollback), or the same serial comes with
//! a different manifest.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name inside a bundle.
pub const MANIFEST: &str = "manifest.json";
/// The detached signature's file name inside a bundle.
pub const SIGNATURE: &str = "manifest.sig";
/// The policy's file name inside a bundle.
pub const POLICY: &str = "policy.yaml";
/// The largest file a bundle may hold (a GeoIP City database fits).
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// Why a bundle was refused or could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key file is not a key.
    #[error("{path}: {message}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("{path}: not a bundle manifest: {message}")]
    BadManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The signature does not verify with the trusted key: the manifest was changed, or
    /// signed with another key.
    #[error("{path}: the signature does not verify with the trusted key (tampered manifest, or signed with another key)")]
    BadSignature {
        /// The signature file.
        path: PathBuf,
    },
    /// A listed file's content differs from its hash.
    #[error("{path}: the content does not match the signed manifest")]
    Tampered {
        /// The file.
        path: PathBuf,
    },
    /// A file in the bundle is not listed in the manifest, or a listed one is missing.
    #[error("{path}: {message}")]
    Unlisted {
        /// The file.
        path: PathBuf,
        /// Listed-but-missing or present-but-unlisted.
        message: String,
    },
    /// The serial is older than the last accepted one.
    #[error("serial {serial} is older than the accepted serial {accepted} (rollback refused)")]
    Rollback {
        /// The bundle's serial.
        serial: u64,
        /// The last accepted serial.
        accepted: u64,
    },
    /// The accepted serial came again with different content.
    #[error("serial {serial} was already accepted with a different manifest (a new bundle needs a new serial)")]
    SerialReused {
        /// The serial.
        serial: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The signed content: a serial and each file's SHA-256 (hex), by path in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Manifest {
    /// Increases with every bundle; older serials are refused.
    pub serial: u64,
    /// Relative path (with `/`) → SHA-256, lowercase hex.
    pub files: BTreeMap<String, String>,
}

/// What the verifier remembers of the last bundle it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Accepted {
    /// Its serial.
    pub serial: u64,
    /// SHA-256 of its manifest (hex).
    pub manifest_sha256: String,
}

impl Accepted {
    /// Reads the record written by [`Accepted::save`]; `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Self>, BundleError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| BundleError::BadManifest {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Writes the record atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec(self).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    }
}

/// A public key bundles must be signed with.
#[derive(Debug, Clone)]
pub struct TrustedKey(VerifyingKey);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim();
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The key's hex line, skipping `#` comment lines.
fn key_line(path: &Path) -> Result<String, BundleError> {
    let bytes = crate::feeds::read_regular_file(path, 64 * 1024).map_err(|message| {
        BundleError::BadKey {
            path: path.to_path_buf(),
            message,
        }
    })?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| BundleError::BadKey {
            path: path.to_path_buf(),
            message: "no key in the file".to_string(),
        })
}

impl TrustedKey {
    /// Reads a public key file written by [`generate_key`] (64 hex digits).
    pub fn from_file(path: &Path) -> Result<Self, BundleError> {
        let bad = |message: &str| BundleError::BadKey {
            path: path.to_path_buf(),
            message: message.to_string(),
        };
        let bytes: [u8; 32] =
            unhex(&key_line(path)?).ok_or_else(|| bad("not a public key (64 hex digits)"))?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| bad("not a valid Ed25519 public key"))
    }
}

fn signing_key(path: &Path) -> Result<SigningKey, BundleError> {
    let seed: [u8; 32] = unhex(&key_line(path)?).ok_or_else(|| BundleError::BadKey {
        path: path.to_path_buf(),
        message: "not a private key (64 hex digits)".to_string(),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes a new key pair: the private key to `path` (mode 0600) and the public key to
/// `path.pub`. Refuses to overwrite an existing key.
pub fn generate_key(path: &Path) -> Result<PathBuf, BundleError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut seed = [0u8; 32];
    let mut filled = 0;
    while filled < seed.len() {
        filled +=
            rustix::rand::getrandom(&mut seed[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(|e| io(path)(e.into()))?;
    }
    let key = SigningKey::from_bytes(&seed);
    let public = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.pub", ext.to_string_lossy()),
        None => "pub".to_string(),
    });
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    writeln!(
        file,
        "# Ironclad policy signing key (Ed25519, private): keep it off the hosts\n{}",
        hex(&seed)
    )
    .map_err(io(path))?;
    std::fs::write(
        &public,
        format!(
            "# Ironclad policy signing key (Ed25519, public): --trusted-key on the hosts\n{}\n",
            hex(key.verifying_key().as_bytes())
        ),
    )
    .map_err(io(&public))?;
    Ok(public)
}

/// Every regular file under `dir`, as relative `/`-separated paths, except the manifest
/// and the signature.
fn bundle_files(dir: &Path) -> Result<Vec<String>, BundleError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for entry in std::fs::read_dir(&here).map_err(io(&here))? {
            let entry = entry.map_err(io(&here))?;
            let kind = entry.file_type().map_err(io(&entry.path()))?;
            let name = rel.join(entry.file_name());
            if kind.is_dir() {
                stack.push(name);
            } else {
                let text = name.to_string_lossy().replace('\\', "/");
                if text != MANIFEST && text != SIGNATURE {
                    out.push(text);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_limited(path: &Path) -> Result<Vec<u8>, BundleError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Err(BundleError::Unlisted {
            path: path.to_path_buf(),
            message: format!("not a regular file of at most {MAX_FILE_BYTES} bytes"),
        });
    }
    crate::feeds::read_regular_file(path, MAX_FILE_BYTES).map_err(|message| BundleError::Unlisted {
        path: path.to_path_buf(),
        message,
    })
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Signs the bundle in `dir` with the private key at `key`: writes `manifest.json` (every
/// file's hash and the serial) and `manifest.sig`. The serial is `serial`, or one more
/// than the manifest already there (1 for a new bundle).
pub fn sign_bundle(dir: &Path, key: &Path, serial: Option<u64>) -> Result<Manifest, BundleError> {
    let key = signing_key(key)?;
    if !dir.join(POLICY).is_file() {
        return Err(BundleError::Unlisted {
            path: dir.join(POLICY),
            message: "a bundle needs its policy.yaml".to_string(),
        });
    }
    let manifest_path = dir.join(MANIFEST);
    let serial = match serial {
        Some(serial) => serial,
        None => match std::fs::read(&manifest_path) {
            Ok(bytes) => {
                serde_json::from_slice::<Manifest>(&bytes)
                    .map(|m| m.serial)
                    .unwrap_or(0)
                    + 1
            }
            Err(_) => 1,
        },
    };
    let mut files = BTreeMap::new();
    for rel in bundle_files(dir)? {
        let bytes = read_limited(&dir.join(&rel))?;
        files.insert(rel, sha256(&bytes));
    }
    let manifest = Manifest { serial, files };
    let mut text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    text.push(b'\n');
    let signature = key.sign(&text);
    std::fs::write(&manifest_path, &text).map_err(io(&manifest_path))?;
    let sig_path = dir.join(SIGNATURE);
    std::fs::write(&sig_path, format!("{}\n", hex(&signature.to_bytes())))
        .map_err(io(&sig_path))?;
    Ok(manifest)
}

/// A bundle that passed verification.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Verified {
    /// The policy file, in the staging directory (compile this one).
    pub policy: PathBuf,
    /// What to remember as accepted once the policy is applied.
    pub accepted: Accepted,
    /// The verified manifest.
    pub manifest: Manifest,
}

/// A relative path that stays inside its directory (no `..`, not absolute).
fn inside(rel: &str) -> bool {
    Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
}

/// Parses a manifest's bytes and checks every listed path stays inside the bundle
/// (relative, no `..`, no empty name). The verifier calls it after the signature
/// verified; it is total (fuzzed): any bytes give a manifest or a message.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    for (rel, hash) in &manifest.files {
        if rel.is_empty() || !inside(rel) {
            return Err(format!("`{rel}` leaves the bundle directory"));
        }
        if unhex::<32>(hash).is_none() {
            return Err(format!(
                "`{rel}`: `{hash}` is not a SHA-256 (64 hex digits)"
            ));
        }
    }
    Ok(manifest)
}

/// Verifies the bundle in `dir` against `key` and the last accepted bundle, and copies
/// its files into `staging` (emptied first). Nothing is applied here: the caller compiles
/// [`Verified::policy`], applies it, then saves [`Verified::accepted`].
pub fn verify_bundle(
    dir: &Path,
    key: &TrustedKey,
    last: Option<&Accepted>,
    staging: &Path,
) -> Result<Verified, BundleError> {
    let manifest_path = dir.join(MANIFEST);
    let sig_path = dir.join(SIGNATURE);
    let text = read_limited(&manifest_path)?;
    let sig_text = std::fs::read_to_string(&sig_path).map_err(io(&sig_path))?;
    let signature = unhex::<64>(&sig_text)
        .map(|b| Signature::from_bytes(&b))
        .ok_or_else(|| BundleError::BadSignature {
            path: sig_path.clone(),
        })?;
    key.0
        .verify_strict(&text, &signature)
        .map_err(|_| BundleError::BadSignature {
            path: sig_path.clone(),
        })?;
    let manifest = parse_manifest(&text).map_err(|message| BundleError::BadManifest {
        path: manifest_path.clone(),
        message,
    })?;
    let accepted = Accepted {
        serial: manifest.serial,
        manifest_sha256: sha256(&text),
    };
    if let Some(last) = last {
        if manifest.serial < last.serial {
            return Err(BundleError::Rollback {
                serial: manifest.serial,
                accepted: last.serial,
            });
        }
        if manifest.serial == last.serial && accepted.manifest_sha256 != last.manifest_sha256 {
            return Err(BundleError::SerialReused {
                serial: manifest.serial,
            });
        }
    }
    if !manifest.files.contains_key(POLICY) {
        return Err(BundleError::Unlisted {
            path: dir.join(POLICY),
            message: "the manifest does not list policy.yaml".to_string(),
        });
    }
    for rel in bundle_files(dir)? {
        if !manifest.files.contains_key(&rel) {
            return Err(BundleError::Unlisted {
                path: dir.join(rel),
                message: "in the bundle but not in the signed manifest".to_string(),
            });
        }
    }
    if staging.exists() {
        std::fs::remove_dir_all(staging).map_err(io(staging))?;
    }
    std::fs::create_dir_all(staging).map_err(io(staging))?;
    for (rel, hash) in &manifest.files {
        if !inside(rel) {
            return Err(BundleError::BadManifest {
                path: manifest_path.clone(),
                message: format!("`{rel}` leaves the bundle directory"),
            });
        }
        let source = dir.join(rel);
        let bytes = read_limited(&source).map_err(|e| match e {
            BundleError::Io { source: s, .. } if s.kind() == std::io::ErrorKind::NotFound => {
                BundleError::Unlisted {
                    path: source.clone(),
                    message: "listed in the manifest but missing".to_string(),
                }
            }
            other => other,
        })?;
        if sha256(&bytes) != *hash {
            return Err(BundleError::Tampered { path: source });
        }
        let target = staging.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&target, &bytes).map_err(io(&target))?;
    }
    Ok(Verified {
        policy: staging.join(POLICY),
        accepted,
        manifest,
    })
}

/// Why a path a bundle's policy names is not inside the bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathEscape {
    /// The path has a `..` component (resolved or not, it is refused).
    #[error("`{0}` has a `..` component")]
    ParentComponent(PathBuf),
    /// The path, with every symbolic link resolved, lies outside the bundle.
    #[error("`{path}` resolves to `{resolved}`, outside the bundle")]
    Outside {
        /// As named.
        path: PathBuf,
        /// With links resolved.
        resolved: PathBuf,
    },
    /// The path (or the bundle directory) could not be resolved.
    #[error("`{path}` cannot be resolved: {message}")]
    Unresolved {
        /// As named.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Resolves `path` (absolute, or relative to `dir`) and checks it lies inside `dir`:
/// no `..` component anywhere, and the path with every symbolic link resolved
/// (`realpath(3)`) below `dir` resolved the same way. A textual prefix test is not
/// enough: `dir/feeds/../../../tmp/x` starts with `dir`.
pub fn resolve_inside(path: &Path, dir: &Path) -> Result<PathBuf, PathEscape> {
    let joined = dir.join(path);
    if joined
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(PathEscape::ParentComponent(path.to_path_buf()));
    }
    let unresolved = |p: &Path, e: std::io::Error| PathEscape::Unresolved {
        path: p.to_path_buf(),
        message: e.to_string(),
    };
    let root = std::fs::canonicalize(dir).map_err(|e| unresolved(dir, e))?;
    let resolved = std::fs::canonicalize(&joined).map_err(|e| unresolved(path, e))?;
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(PathEscape::Outside {
            path: path.to_path_buf(),
            resolved,
        })
    }
}

/// The files a compiled policy reads ([`CompiledConfig::files_read`](crate::config::CompiledConfig::files_read):
/// feeds of every kind, GeoIP databases, IDS rule files, CA files) that are not inside
/// `dir` (a bundle being signed, or the verified copy of one), each with the reason:
/// such a policy would let an unsigned file decide what is enforced, so `sign` and the
/// daemon refuse it. Paths are resolved ([`resolve_inside`]): `..` components and
/// symbolic links leading out are caught.
pub fn outside_paths(
    config: &crate::config::CompiledConfig,
    dir: &Path,
) -> Vec<(crate::config::ReadFile, PathEscape)> {
    config
        .files_read()
        .into_iter()
        .filter_map(|f| resolve_inside(&f.path, dir).err().map(|e| (f, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(dir: &Path) {
        std::fs::create_dir_all(dir.join("feeds")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.join(POLICY),
            "shield:\n  deny_feeds:\n    - path: feeds/list.txt\n      format: plain\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("feeds/list.txt"), "192.0.2.1\n").unwrap_or_else(|e| panic!("{e}"));
    }

    /// Regression: `feeds/../../../../tmp/x/outside.txt` passed the old textual prefix
    /// test and let an unsigned file decide what is dropped.
    #[test]
    fn bundle_paths_are_resolved_not_compared_as_text() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let staging = tmp.path().join("state/bundle");
        let outside = tmp.path().join("x");
        for dir in [staging.join("feeds"), outside.clone()] {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(staging.join("feeds/list.txt"), "192.0.2.1\n")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(outside.join("outside.txt"), "0.0.0.0/0\n")
            .unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(&outside, staging.join("linked"))
            .unwrap_or_else(|e| panic!("{e}"));
        let inside = resolve_inside(Path::new("feeds/list.txt"), &staging);
        assert_eq!(
            inside.ok(),
            std::fs::canonicalize(staging.join("feeds/list.txt")).ok()
        );
        let dotdot = resolve_inside(Path::new("feeds/../../../x/outside.txt"), &staging);
        assert!(
            matches!(dotdot, Err(PathEscape::ParentComponent(_))),
            "{dotdot:?}"
        );
        let absolute = resolve_inside(&outside.join("outside.txt"), &staging);
        assert!(
            matches!(absolute, Err(PathEscape::Outside { .. })),
            "{absolute:?}"
        );
        let linked = resolve_inside(Path::new("linked/outside.txt"), &staging);
        assert!(
            matches!(linked, Err(PathEscape::Outside { .. })),
            "{linked:?}"
        );
        let missing = resolve_inside(Path::new("feeds/none.txt"), &staging);
        assert!(
            matches!(missing, Err(PathEscape::Unresolved { .. })),
            "{missing:?}"
        );
        // The same through a compiled policy, as the daemon checks it.
        let policy = staging.join(POLICY);
        std::fs::write(
            &policy,
            "shield:\n  deny_feeds:\n    - path: feeds/list.txt\n      format: plain\n    \
             - path: feeds/../../../x/outside.txt\n      format: plain\n    \
             - path: linked/outside.txt\n      format: plain\n      name: linked\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let compiled = crate::config::compile_file(&policy).unwrap_or_else(|e| panic!("{e}"));
        let refused: Vec<String> = outside_paths(&compiled, &staging)
            .iter()
            .map(|(f, _)| {
                f.path
                    .strip_prefix(&staging)
                    .unwrap_or(&f.path)
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            refused,
            ["feeds/../../../x/outside.txt", "linked/outside.txt"]
        );
    }

    /// A bundle holding a symbolic link (to a directory outside it) is neither signed
    /// nor accepted: only regular files travel in a bundle.
    #[test]
    fn a_symlinked_directory_in_a_bundle_is_refused() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (dir, staging) = (tmp.path().join("b"), tmp.path().join("staging"));
        bundle(&dir);
        let secret = tmp.path().join("k");
        let public = generate_key(&secret).unwrap_or_else(|e| panic!("{e}"));
        let key = TrustedKey::from_file(&public).unwrap_or_else(|e| panic!("{e}"));
        sign_bundle(&dir, &secret, None).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(tmp.path().join("elsewhere")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), dir.join("more"))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = verify_bundle(&dir, &key, None, &staging).expect_err("an unlisted link");
        assert!(matches!(err, BundleError::Unlisted { .. }), "{err}");
        let err = sign_bundle(&dir, &secret, None).expect_err("a link is not signed");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn sign_verify_tamper_rollback_and_wrong_key() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (dir, staging) = (tmp.path().join("b"), tmp.path().join("staging"));
        bundle(&dir);
        let secret = tmp.path().join("k");
        let public = generate_key(&secret).unwrap_or_else(|e| panic!("{e}"));
        assert!(generate_key(&secret).is_err(), "never overwrites a key");
        let key = TrustedKey::from_file(&public).unwrap_or_else(|e| panic!("{e}"));
        let m = sign_bundle(&dir, &secret, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m.serial, m.files.len()), (1, 2));
        let v = verify_bundle(&dir, &key, None, &staging).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(v.policy).ok(),
            std::fs::read(dir.join(POLICY)).ok()
        );
        let first = v.accepted;
        // The same bundle again is fine (a restart); serial 2 next.
        assert!(verify_bundle(&dir, &key, Some(&first), &staging).is_ok());
        assert_eq!(
            sign_bundle(&dir, &secret, None).map(|m| m.serial).ok(),
            Some(2)
        );
        let second = verify_bundle(&dir, &key, Some(&first), &staging)
            .unwrap_or_else(|e| panic!("{e}"))
            .accepted;
        // Rollback: serial 1 after 2.
        sign_bundle(&dir, &secret, Some(1)).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            verify_bundle(&dir, &key, Some(&second), &staging),
            Err(BundleError::Rollback {
                serial: 1,
                accepted: 2
            })
        ));
        // A flipped byte in a feed.
        sign_bundle(&dir, &secret, Some(3)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("feeds/list.txt"), "192.0.2.3\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            verify_bundle(&dir, &key, Some(&second), &staging),
            Err(BundleError::Tampered { .. })
        ));
        // A flipped byte in the manifest.
        sign_bundle(&dir, &secret, Some(4)).unwrap_or_else(|e| panic!("{e}"));
        let mut text = std::fs::read(dir.join(MANIFEST)).unwrap_or_default();
        let at = text.iter().position(|b| *b == b'4').unwrap_or(0);
        text[at] = b'9';
        std::fs::write(dir.join(MANIFEST), text).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            verify_bundle(&dir, &key, Some(&second), &staging),
            Err(BundleError::BadSignature { .. })
        ));
        // Another key.
        let other = tmp.path().join("other");
        generate_key(&other).unwrap_or_else(|e| panic!("{e}"));
        sign_bundle(&dir, &other, Some(5)).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            verify_bundle(&dir, &key, Some(&second), &staging),
            Err(BundleError::BadSignature { .. })
        ));
        // An extra file nobody signed.
        sign_bundle(&dir, &secret, Some(6)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("feeds/extra.txt"), "x").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            verify_bundle(&dir, &key, Some(&second), &staging),
            Err(BundleError::Unlisted { .. })
        ));
    }

    #[test]
    fn accepted_records_round_trip() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = tmp.path().join("state/accepted.json");
        assert_eq!(Accepted::load(&path).ok(), Some(None));
        let a = Accepted {
            serial: 7,
            manifest_sha256: "ab".into(),
        };
        a.save(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Accepted::load(&path).ok(), Some(Some(a)));
    }
}
