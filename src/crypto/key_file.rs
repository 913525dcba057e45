//! The master key's file: read it, or create it once, privately, so that
//! replicas starting together share one key.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::{CryptoError, MasterKey, random_bytes};

/// Reads the master key from `path`, or, if there is no such file, generates
/// one and writes it there as base64 with mode 0600.
///
/// The key is written to a private temporary file first and then hard-linked
/// into place, so no reader ever sees a partly written key and two processes
/// starting together end up sharing one key.
pub fn load_or_create_key_file(path: &Path) -> Result<MasterKey, CryptoError> {
    let io_err = |source| CryptoError::KeyFile {
        path: path.to_owned(),
        source,
    };
    match read_key_file(path) {
        Err(CryptoError::KeyFile { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }

    let key = MasterKey::generate();
    let tmp = path.with_extension(format!("tmp-{}", hex::encode(random_bytes::<8>())));
    let text = format!("{}\n", key.to_base64());
    let written = write_private(&tmp, text.as_bytes(), IfExists::Fail)
        .and_then(|()| fs::hard_link(&tmp, path));
    // The temporary name is only a staging step; failing to remove it loses nothing.
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
            }
            Ok(key)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(e) => Err(io_err(e)),
    }
}

fn read_key_file(path: &Path) -> Result<MasterKey, CryptoError> {
    let text = fs::read_to_string(path).map_err(|source| CryptoError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    warn_if_readable_by_others(path);
    MasterKey::from_base64(text.trim()).map_err(|_| CryptoError::InvalidKeyFile {
        path: path.to_owned(),
    })
}

/// What [`write_private`] does with a file already at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfExists {
    /// Fail with `AlreadyExists`.
    Fail,
    /// Truncate it and make it private.
    Replace,
}

/// Writes `contents` to a file only its owner may read or write (mode 0600
/// on Unix), and syncs it to disk.
pub(crate) fn write_private(path: &Path, contents: &[u8], if_exists: IfExists) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true);
    match if_exists {
        IfExists::Fail => options.create_new(true),
        IfExists::Replace => options.create(true).truncate(true),
    };
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // The mode given to `open` applies only to a file it creates.
    #[cfg(unix)]
    if if_exists == IfExists::Replace {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "key file is accessible to other users; it should have mode 0600");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");

        let created = load_or_create_key_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(
            fs::read_to_string(&path).unwrap().trim(),
            created.to_base64()
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no staging file left behind"
        );

        let loaded = load_or_create_key_file(&path).unwrap();
        assert_eq!(loaded.0, created.0);
        let blob = created.encrypt(b"secret", b"aad");
        assert_eq!(loaded.decrypt(&blob, b"aad").unwrap(), b"secret");
    }

    #[test]
    fn key_file_with_junk_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        fs::write(&path, "junk").unwrap();
        assert!(matches!(
            load_or_create_key_file(&path),
            Err(CryptoError::InvalidKeyFile { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "junk");
    }

    #[cfg(unix)]
    #[test]
    fn replacing_a_private_file_truncates_it_and_takes_its_access_away() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.json");
        fs::write(&path, "a longer earlier content").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

        assert_eq!(
            write_private(&path, b"new", IfExists::Fail)
                .unwrap_err()
                .kind(),
            io::ErrorKind::AlreadyExists
        );
        write_private(&path, b"new", IfExists::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
