//! Files holding keys, certificates and secrets: written atomically (a temporary file in
//! the same directory, then a rename, so a reader never sees half a file) and, for
//! anything secret, readable by the owner alone (mode 0600, directories 0700).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file or directory could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct FileError {
    /// The file or directory.
    pub path: PathBuf,
    /// What was being done, e.g. `read`, `write`, `create directory`.
    pub action: &'static str,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl FileError {
    pub(crate) fn new(path: &Path, action: &'static str, source: io::Error) -> FileError {
        FileError {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

/// The mode of files only their owner may read (keys, token stores).
pub(crate) const PRIVATE: u32 = 0o600;
/// The mode of files anyone may read (certificates).
pub(crate) const PUBLIC: u32 = 0o644;

/// Writes `bytes` to `path` readable by the owner alone (0600), atomically: a temporary
/// file beside it is written, synced and renamed over `path`. A missing parent
/// directory is created (0700).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    write_atomic(path, bytes, PRIVATE)
}

/// Writes `bytes` to `path` with `mode`, atomically (temporary file + rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| {
            FileError::new(
                path,
                "write",
                io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
            )
        })?
        .to_string_lossy();
    let temp = path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(FileError::new(path, "write", e));
    }
    fs::rename(&temp, path).map_err(|e| {
        let _ = fs::remove_file(&temp);
        FileError::new(path, "write", e)
    })
}

/// Creates `dir` (and its parents) readable by the owner alone (0700) when it is missing;
/// an existing directory is left as it is.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| FileError::new(dir, "create directory", e))
}

/// Reads a text file.
pub(crate) fn read_string(path: &Path) -> Result<String, FileError> {
    fs::read_to_string(path).map_err(|e| FileError::new(path, "read", e))
}

/// Reads a text file, `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, FileError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::new(path, "read", e)),
    }
}

#[cfg(test)]
pub(crate) fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_replaced_whole_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the file itself: {names:?}");
    }

    #[test]
    fn private_dirs_are_0700_and_missing_files_read_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        assert_eq!(mode_of(&sub), 0o700);
        assert_eq!(read_optional(&sub.join("none")).unwrap(), None);
        let err = read_string(&sub.join("none")).unwrap_err();
        assert!(err.to_string().contains("a/b/none"), "{err}");
    }
}
