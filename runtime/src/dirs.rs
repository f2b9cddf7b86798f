//! Private directories: the compile cache and the blob cache keep what
//! they store where no other user can write.

use std::path::Path;

/// Creates `dir` and its parents, mode 0700.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `dir` (mode 0700) if missing, and refuses it if other users
/// can write it or another user owns it. `what` names it in errors
/// ("compile cache directory").
pub(crate) fn create_private_dir(dir: &Path, what: &str) -> Result<(), String> {
    private_dir(dir).map_err(|e| format!("cannot create {what} {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{what} {} is writable by other users (expected mode 0700)",
                dir.display()
            ));
        }
        if let Ok(me) = std::fs::metadata("/proc/self")
            && me.uid() != meta.uid()
        {
            return Err(format!("{what} {} is owned by another user", dir.display()));
        }
    }
    Ok(())
}
