//! Reading files the operator names (policies, feeds, databases, keys) without ever
//! blocking: a FIFO, a device or a socket at such a path is refused at once instead of
//! wedging the reader in `open(2)` or `read(2)`.
//!
//! ```
//! use ironclad_core::fsutil::{read_regular_file, ReadFileError};
//!
//! let dir = std::env::temp_dir().join(format!("ic-fsutil-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! std::fs::write(dir.join("list.txt"), "192.0.2.1\n")?;
//! assert_eq!(read_regular_file(&dir.join("list.txt"), 1024)?, b"192.0.2.1\n");
//! assert!(matches!(
//!     read_regular_file(&dir, 1024),
//!     Err(ReadFileError::NotRegular { kind: "a directory" })
//! ));
//! std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file could not be read. The message does not repeat the path: callers put it
/// in front (`FILE: message`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadFileError {
    /// `open(2)`, `fstat(2)` or `read(2)` failed.
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
    /// Not a regular file (a FIFO, a device, a socket, a directory).
    #[error("not a regular file ({kind})")]
    NotRegular {
        /// What it is instead, e.g. `a FIFO`.
        kind: &'static str,
    },
    /// Larger than the caller's limit.
    #[error("{len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size (or what was read before the limit was passed).
        len: u64,
        /// The limit.
        limit: u64,
    },
}

/// What a file type is called in messages.
fn kind_name(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

/// Opens `path` for reading without blocking (`O_NONBLOCK | O_NOCTTY`: opening a FIFO
/// with no writer returns at once) and checks, on the open descriptor, that it is a
/// regular file. Symbolic links are followed.
pub fn open_regular_file(path: &Path) -> Result<std::fs::File, ReadFileError> {
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadFileError::Io)?;
    let meta = file.metadata().map_err(ReadFileError::Io)?;
    if !meta.is_file() {
        return Err(ReadFileError::NotRegular {
            kind: kind_name(meta.file_type()),
        });
    }
    Ok(file)
}

/// Reads the regular file at `path`, at most `limit` bytes; anything else (a FIFO, a
/// device, a directory, a larger file) is refused without blocking.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, ReadFileError> {
    let mut bytes = Vec::new();
    read_regular_file_into(path, limit, &mut bytes)?;
    Ok(bytes)
}

/// [`read_regular_file`] into `bytes` (cleared first): a buffer kept from an earlier
/// read is filled again without the page faults of a fresh allocation (a 15 MB feed
/// read into new memory spends most of its time faulting pages in).
pub fn read_regular_file_into(
    path: &Path,
    limit: u64,
    bytes: &mut Vec<u8>,
) -> Result<(), ReadFileError> {
    read_regular_file_keep(path, limit, bytes).map(drop)
}

/// [`read_regular_file_into`], giving back the open file: its inode stays readable
/// after another file is renamed over `path` (a caller can read this version again
/// later instead of keeping its bytes).
pub fn read_regular_file_keep(
    path: &Path,
    limit: u64,
    bytes: &mut Vec<u8>,
) -> Result<std::fs::File, ReadFileError> {
    bytes.clear();
    let file = open_regular_file(path)?;
    let len = file.metadata().map_err(ReadFileError::Io)?.len();
    if len > limit {
        return Err(ReadFileError::TooLarge { len, limit });
    }
    bytes.reserve(usize::try_from(len).unwrap_or(0));
    (&file)
        .take(limit.saturating_add(1))
        .read_to_end(bytes)
        .map_err(ReadFileError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadFileError::TooLarge {
            len: bytes.len() as u64,
            limit,
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("ic-fsutil-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let fifo = dir.join("feed.txt");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap_or_else(|e| panic!("mkfifo: {e}"));
        assert!(status.success());
        // Without O_NONBLOCK this open would wait for a writer forever.
        let err = read_regular_file(&fifo, 1024).expect_err("a FIFO");
        assert_eq!(err.to_string(), "not a regular file (a FIFO)");
        let err = read_regular_file(Path::new("/dev/zero"), 1024).expect_err("a device");
        assert_eq!(err.to_string(), "not a regular file (a character device)");
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn the_limit_is_kept() {
        let dir = std::env::temp_dir().join(format!("ic-fsutil-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("big");
        std::fs::write(&file, vec![b'x'; 100]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_regular_file(&file, 100).map(|b| b.len()).ok(),
            Some(100)
        );
        let err = read_regular_file(&file, 99).expect_err("too large");
        assert_eq!(err.to_string(), "100 bytes, more than the limit of 99");
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    }
}
