//! Files the decoder reads by path (the generated language model and the
//! trimmed dictionary), removed when the last user drops them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::SphinxError;

/// A file in the temporary directory (`TMPDIR`, else `/tmp`), deleted on
/// drop.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    /// Writes `contents` to a new file named `voice-agent-sphinx-*{suffix}`.
    pub fn write(suffix: &str, contents: &str) -> Result<Self, SphinxError> {
        let dir = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "voice-agent-sphinx-{}-{}-{nanos}{suffix}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let io = |e: std::io::Error| {
            SphinxError::Io(format!(
                "cannot write {}: {e} (is TMPDIR writable?)",
                path.display()
            ))
        };
        // create_new: never follow or clobber a file someone planted there.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(contents.as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { path })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
