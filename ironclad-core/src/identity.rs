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
    /// The kernel's device and inode of the file at `path` (following links): the
    /// device of its superblock, as [`exe_identity`] reads it.
    pub fn of_path(path: &Path) -> Result<Self, CoreError> {
        let id = exe_identity(path).map_err(|source| CoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            kernel_dev: id.dev,
            ino: id.ino,
        })
    }
}

/// The identity the kernel gives the executable at `path` (links followed): the four
/// fields the exec and connect hooks read from the file's inode in
/// `bpf-src/lib/proc.h` (`ic_exe_of_file`), computed here from the same fields:
///
/// - the device of the inode's superblock (`i_sb->s_dev`), read from the mount table
///   for the mount the file was opened through. `stat`'s `st_dev` is not always it:
///   on overlayfs it is the device of the layer holding the file, on btrfs a
///   subvolume's own anonymous device;
/// - the inode number (`i_ino`);
/// - the modification time, seconds and nanoseconds (`i_mtime`). Not the change time:
///   a package manager keeps the package's modification time and the install sets the
///   change time, so the two differ on every installed binary.
///
/// A file renamed or hard-linked keeps its identity; a file rewritten in place keeps
/// its inode but not its modification time, so it is a different executable until the
/// policy naming it is applied again; a file replaced (a package upgrade writes a new
/// file and renames it over the old) is a new inode.
pub fn exe_identity(path: &Path) -> std::io::Result<crate::abi::ProcExe> {
    exe_identity_in(path, Path::new("/proc/self/mountinfo"))
}

/// [`exe_identity`] with the mount table of another mount namespace: for
/// `/proc/PID/exe`, pass `/proc/PID/mountinfo`, since the link leads to a mount of
/// that process's namespace.
pub fn exe_identity_in(path: &Path, mountinfo: &Path) -> std::io::Result<crate::abi::ProcExe> {
    identity_with(path, |mnt_id| {
        Ok(mount_devices(mountinfo)?.get(&mnt_id).copied())
    })
}

/// The devices of mounts by mount id, gathered across mount namespaces as they are
/// met: [`exe_identity_in`] for every process of the host without reading a mount
/// table per process. Mount ids are unique on the system while mounted, so one table
/// serves every namespace; a mount not seen yet makes it read the namespace's table.
#[derive(Debug, Default)]
pub struct MountDevices {
    devices: std::collections::HashMap<u64, u32>,
}

impl MountDevices {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`exe_identity_in`]: `mountinfo` is read only when the file's mount is new.
    pub fn exe_identity(
        &mut self,
        path: &Path,
        mountinfo: &Path,
    ) -> std::io::Result<crate::abi::ProcExe> {
        identity_with(path, |mnt_id| {
            if let Some(dev) = self.devices.get(&mnt_id) {
                return Ok(Some(*dev));
            }
            self.devices.extend(mount_devices(mountinfo)?);
            Ok(self.devices.get(&mnt_id).copied())
        })
    }
}

/// The identity of `path`, the device of its mount given by `device_of(mount id)`.
fn identity_with(
    path: &Path,
    device_of: impl FnOnce(u64) -> std::io::Result<Option<u32>>,
) -> std::io::Result<crate::abi::ProcExe> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let st = statx(
        CWD,
        path,
        AtFlags::empty(),
        StatxFlags::INO | StatxFlags::MTIME | StatxFlags::MNT_ID,
    )?;
    let mut dev = None;
    if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        dev = device_of(st.stx_mnt_id)?;
    }
    let dev = match dev {
        Some(dev) => dev,
        // No mount id (kernels before 5.8): `st_dev` is the superblock's device on
        // every filesystem but overlayfs and btrfs.
        None => {
            let udev = rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor);
            user_dev_to_kernel(udev).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("device number {udev} does not fit the kernel encoding"),
                )
            })?
        }
    };
    Ok(crate::abi::ProcExe {
        dev,
        ino: st.stx_ino,
        mtime_sec: st.stx_mtime.tv_sec,
        mtime_nsec: st.stx_mtime.tv_nsec,
    })
}

/// Mount id → the mounted superblock's device, kernel encoding (`major << 20 | minor`),
/// from a `mountinfo` table (`/proc/self/mountinfo`, `/proc/PID/mountinfo`): each
/// line's first field and third (`major:minor`).
pub fn mount_devices(mountinfo: &Path) -> std::io::Result<std::collections::HashMap<u64, u32>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(mountinfo)?))
}

fn parse_mountinfo(text: &str) -> std::collections::HashMap<u64, u32> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id: u64 = fields.next()?.parse().ok()?;
            let (major, minor) = fields.nth(1)?.split_once(':')?;
            let (major, minor): (u32, u32) = (major.parse().ok()?, minor.parse().ok()?);
            (major < (1 << 12) && minor < (1 << 20)).then_some((id, (major << 20) | minor))
        })
        .collect()
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

    #[test]
    fn the_mount_table_is_read_once_per_mount_and_gives_the_same_identity() {
        let exe = std::env::current_exe().expect("test binary");
        let direct = exe_identity(&exe).expect("identity");
        let mut mounts = MountDevices::new();
        let first = mounts
            .exe_identity(&exe, Path::new("/proc/self/mountinfo"))
            .expect("identity");
        assert_eq!(first, direct);
        // The mount is known now: the table is not read again (it does not exist).
        let again = mounts
            .exe_identity(&exe, Path::new("/nonexistent/mountinfo"))
            .expect("no second read");
        assert_eq!(again, direct);
        // A mount never seen needs its table.
        let mut empty = MountDevices::new();
        assert!(empty
            .exe_identity(&exe, Path::new("/nonexistent/mountinfo"))
            .is_err());
    }

    use super::*;

    #[test]
    fn the_superblock_device_comes_from_the_mount_line() {
        let table = "22 1 0:21 / /proc rw - proc proc rw\n\
                     36 35 98:3 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw\n\
                     40 1 0:52 / /var/lib/c rw - overlay overlay rw,lowerdir=/l\n";
        let devices = parse_mountinfo(table);
        assert_eq!(devices.get(&36), Some(&(98 << 20 | 3)));
        assert_eq!(devices.get(&40), Some(&52));
        assert_eq!(devices.len(), 3);
        assert!(parse_mountinfo("x y z\n1 2 nodev / /").is_empty());
    }

    #[test]
    fn an_installed_binary_is_named_by_its_modification_time_not_its_change_time() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("ic-ident-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("tool");
        std::fs::write(&file, b"#!/bin/sh\n").expect("write");
        // What dpkg leaves: the package's modification time, years before the change time.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
        let meta = std::fs::metadata(&file).expect("stat");
        assert_ne!(meta.mtime(), meta.ctime());
        let id = exe_identity(&file).expect("identity");
        assert_eq!((id.mtime_sec, id.ino), (1_500_000_000, meta.ino()));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

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
