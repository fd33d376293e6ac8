//! Listing running processes from /proc, to seed the kernel's process tables.

use std::path::PathBuf;

use crate::error::{BpfError, Result};

/// Every running process: its pid and the path of its `/proc/PID/exe` link (kernel
/// threads included; their link cannot be followed).
pub(crate) fn running() -> Result<Vec<(u32, PathBuf)>> {
    let dir = std::fs::read_dir("/proc").map_err(|source| BpfError::Io {
        path: PathBuf::from("/proc"),
        source,
    })?;
    Ok(dir
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, entry.path().join("exe")))
        })
        .collect())
}
