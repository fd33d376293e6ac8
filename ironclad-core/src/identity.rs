//! Process identity, and the one place where device numbers change encoding.
//!
//! The kernel stores a superblock's device as `major << 20 | minor` (`sb->s_dev`, the
//! `MKDEV` encoding); user space sees `stat().st_dev` in the glibc encoding
//! (`major << 8 | minor` for small numbers, with the high bits spread out). The same file
//! reads 266338304 in BPF and 65024 from `stat`. Every comparison of a device number
//! from BPF with one from user space goes through [`kernel_dev_to_user`] or
//! [`user_dev_to_kernel`].

use std::path::{Path, PathBuf};

use crate::error::CoreError;

/// Converts the kernel's `dev_t` (`major << 20 | minor`) to the glibc `st_dev` encoding.
pub fn kernel_dev_to_user(kdev: u32) -> u64 {
    let major = u64::from(kdev >> 20);
    let minor = u64::from(kdev & 0xfffff);
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

/// Converts a glibc `st_dev` to the kernel's `major << 20 | minor`.
///
/// Returns `None` when the major or minor number does not fit the kernel's 12/20-bit
/// fields (no kernel device can have such a number).
pub fn user_dev_to_kernel(udev: u64) -> Option<u32> {
    let major = ((udev >> 8) & 0xfff) | ((udev >> 32) & !0xfff);
    let minor = (udev & 0xff) | ((udev >> 12) & !0xff);
    if major >= (1 << 12) || minor >= (1 << 20) {
        return None;
    }
    u32::try_from((major << 20) | minor).ok()
}

/// Who is acting: recorded in audit records and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Process id (thread-group id).
    pub pid: u32,
    /// Real user id.
    pub uid: u32,
    /// The task's command name (`/proc/PID/comm`).
    pub comm: String,
    /// The executable (`/proc/PID/exe`), if it can be read.
    pub exe: Option<PathBuf>,
}

impl ProcessIdentity {
    /// The identity of the current process.
    pub fn current() -> Result<Self, CoreError> {
        Self::of_pid(std::process::id())
    }

    /// The identity of process `pid`, read from /proc.
    pub fn of_pid(pid: u32) -> Result<Self, CoreError> {
        let base = PathBuf::from(format!("/proc/{pid}"));
        let comm_path = base.join("comm");
        let comm = std::fs::read_to_string(&comm_path)
            .map_err(|source| CoreError::Io {
                path: comm_path,
                source,
            })?
            .trim_end()
            .to_string();
        let status_path = base.join("status");
        let status = std::fs::read_to_string(&status_path).map_err(|source| CoreError::Io {
            path: status_path.clone(),
            source,
        })?;
        let uid = parse_uid(&status).ok_or_else(|| CoreError::Parse {
            path: status_path,
            what: "no valid Uid line".to_string(),
        })?;
        let exe = std::fs::read_link(base.join("exe")).ok();
        Ok(Self {
            pid,
            uid,
            comm,
            exe,
        })
    }
}

fn parse_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Device (in the kernel's encoding) and inode of a file: the identity of an executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Device, kernel encoding (`major << 20 | minor`).
    pub kernel_dev: u32,
    /// Inode number.
    pub ino: u64,
}

impl FileId {
    /// Stats `path` (following links) and converts its device to the kernel encoding.
    pub fn of_path(path: &Path) -> Result<Self, CoreError> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|source| CoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let kernel_dev = user_dev_to_kernel(meta.dev()).ok_or_else(|| CoreError::Parse {
            path: path.to_path_buf(),
            what: format!(
                "device number {} does not fit the kernel encoding",
                meta.dev()
            ),
        })?;
        Ok(Self {
            kernel_dev,
            ino: meta.ino(),
        })
    }
}

/// The mount point of the cgroup v2 hierarchy, from /proc/mounts.
pub fn cgroup2_root() -> std::io::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        .next()
        .ok_or_else(|| std::io::Error::other("no cgroup2 filesystem is mounted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_measured_device_pair() {
        // Same file: 266338304 in BPF (sb->s_dev), 65024 from stat() (major 254, minor 0).
        assert_eq!(kernel_dev_to_user(266_338_304), 65_024);
        assert_eq!(user_dev_to_kernel(65_024), Some(266_338_304));
    }

    #[test]
    fn converts_large_minor_numbers_both_ways() {
        for (major, minor) in [(8u32, 1u32), (259, 3), (0, 300), (4095, 1_048_575)] {
            let kdev = (major << 20) | minor;
            let udev = kernel_dev_to_user(kdev);
            assert_eq!(user_dev_to_kernel(udev), Some(kdev), "{major}:{minor}");
        }
    }

    #[test]
    fn current_identity_names_this_process() {
        let me = ProcessIdentity::current().expect("read /proc/self");
        assert_eq!(me.pid, std::process::id());
        assert!(!me.comm.is_empty());
        assert!(me.exe.is_some());
    }

    #[test]
    fn file_id_matches_stat() {
        use std::os::unix::fs::MetadataExt;
        let exe = std::env::current_exe().expect("current exe");
        let id = FileId::of_path(&exe).expect("stat");
        let meta = std::fs::metadata(&exe).expect("stat");
        assert_eq!(id.ino, meta.ino());
        assert_eq!(kernel_dev_to_user(id.kernel_dev), meta.dev());
    }
}
