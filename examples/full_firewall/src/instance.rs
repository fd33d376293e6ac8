//! One daemon per pin root and per run directory. `run` locks both directories
//! (`flock` on the directory itself: bpffs holds pins and directories, no lock files)
//! before it touches anything, and holds the locks until it exits. A second start on
//! either fails at once, naming the pid that holds the lock (from `/proc/locks`), and
//! leaves the live daemon's pins, links, control socket and health report alone.

use std::fs::{DirBuilder, File, TryLockError};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

/// The locks a running daemon holds; released when dropped (or when the process ends,
/// however it ends).
#[derive(Debug)]
pub(crate) struct InstanceLock {
    _dirs: Vec<File>,
}

/// What refused the start: the directory and the pid holding its lock.
#[derive(Debug)]
pub(crate) struct Held {
    pub dir: PathBuf,
    pub pid: Option<u32>,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(
                f,
                "another full_firewall (pid {pid}) is running on {}: stop it first; nothing was changed",
                self.dir.display()
            ),
            None => write!(
                f,
                "another full_firewall is running on {}: stop it first; nothing was changed",
                self.dir.display()
            ),
        }
    }
}

/// Locks `pin_dir` and `run_dir`, making them if missing (the run directory with mode
/// 0700: it holds the control socket and the pending-confirmation files). `Ok(Err(_))`
/// when another process holds either lock. A directory that cannot be made or opened
/// is not locked (a warning says so): what uses it later reports its own error, as it
/// did before (bpffs not mounted, no privileges).
pub(crate) fn lock(pin_dir: &Path, run_dir: &Path) -> Result<Result<InstanceLock, Held>> {
    let mut dirs = Vec::new();
    for (dir, mode) in [(pin_dir, 0o755), (run_dir, 0o700)] {
        let opened = DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .and_then(|()| File::open(dir));
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(
                    "{} is not locked against a second daemon: {e}",
                    dir.display()
                );
                continue;
            }
        };
        match file.try_lock() {
            Ok(()) => dirs.push(file),
            Err(TryLockError::WouldBlock) => {
                return Ok(Err(Held {
                    dir: dir.to_path_buf(),
                    pid: holder(&file),
                }))
            }
            Err(TryLockError::Error(e)) => {
                return Err(anyhow!(e).context(format!("locking {}", dir.display())))
            }
        }
    }
    Ok(Ok(InstanceLock { _dirs: dirs }))
}

/// The pid holding a `flock` on `file`'s inode, from `/proc/locks` (procfs's parser: the
/// device as major and minor, then the inode, as `stat` gives them).
fn holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    procfs::locks()
        .ok()?
        .into_iter()
        .find(|lock| {
            lock.lock_type == procfs::LockType::FLock
                && lock.devmaj == major
                && lock.devmin == minor
                && lock.inode == meta.ino()
        })
        .and_then(|lock| u32::try_from(lock.pid?).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_one_is_taken_again() {
        let root = tempfile::tempdir().expect("tempdir");
        let (pins, run) = (root.path().join("pins"), root.path().join("run"));
        let first = lock(&pins, &run).expect("lock").expect("free");
        let mode = std::fs::metadata(&run).expect("run dir").mode() & 0o777;
        assert_eq!(mode, 0o700, "the run directory is private");
        // Another open file description of the same directory: refused like a
        // second process (flock locks belong to the open file, not the process).
        let held = lock(&pins, &run).expect("lock").expect_err("held");
        assert_eq!(held.dir, pins);
        assert_eq!(held.pid, Some(std::process::id()));
        assert!(held
            .to_string()
            .contains(&format!("pid {}", std::process::id())));
        let held = lock(&root.path().join("other"), &run)
            .expect("lock")
            .expect_err("held");
        assert_eq!(held.dir, run);
        drop(first);
        lock(&pins, &run).expect("lock").expect("free again");
    }
}
