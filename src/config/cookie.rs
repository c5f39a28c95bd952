//! The per-user cookie file: the cluster's shared secret when none is given.
//!
//! Like Erlang's `~/.erlang.cookie`: a node or coordinator with no `cookie`
//! setting reads its secret from a file (the `cookie_file` setting, by
//! default `$HOME/.combtest/cookie`), created with a fresh random secret on
//! first use. The file is refused if others than its owner may read or
//! write it, so no other local user can learn the secret and run suites on
//! the node.
//!
//! - [`source`]: which cookie the settings put in force (no I/O).
//! - [`in_force`]: that cookie itself, reading or creating the file.
//! - [`load_or_create`]: the file alone.
//!
//! A new file appears atomically and whole: the secret is written to a temp
//! file (mode 0600) in the same directory, synced, then hard-linked to the
//! file's name, which fails if the name exists. Of processes racing to
//! create the file one wins; the others read the winner's file.
//!
//! The secret is never printed, logged or put in an error.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::{Cookie, Settings, Source};

/// The cookie file's path under the home directory.
pub const IN_HOME: &str = ".combtest/cookie";

/// Random bytes in a new secret (written as twice as many hex digits).
const SECRET_BYTES: usize = 32;

/// Where the cookie in force comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieSource {
    /// The `cookie` setting, from this layer.
    Given(Source),
    /// The cookie file at this path.
    File(PathBuf),
}

impl fmt::Display for CookieSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CookieSource::Given(Source::CommandLine) => {
                write!(f, "the cookie given on the command line")
            }
            CookieSource::Given(Source::Env(var)) => {
                write!(f, "the cookie in environment variable {var}")
            }
            CookieSource::Given(Source::File(path)) => {
                write!(f, "the cookie in config file {}", path.display())
            }
            CookieSource::Given(Source::Default) => write!(f, "the default cookie"),
            CookieSource::File(path) => write!(f, "the cookie file {}", path.display()),
        }
    }
}

/// Why there is no cookie to use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// No cookie is set and there is no home directory for the default file.
    #[error(
        "no cookie file: HOME is not set; set --cookie, COMBTEST_COOKIE or COMBTEST_COOKIE_FILE"
    )]
    NoHome,
    /// Others than the file's owner may read or write it.
    #[error(
        "cookie file {} has mode {mode:04o}, which lets others than its owner read or write \
         it: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Something other than a regular file is at the path.
    #[error(
        "cookie file {} is not a regular file: remove it, or name another file with \
         --cookie-file or COMBTEST_COOKIE_FILE",
        path.display()
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file holds no secret.
    #[error(
        "cookie file {} is empty: write the cluster's secret into it, or remove it to have a \
         new one created",
        path.display()
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is not UTF-8 text.
    #[error(
        "cookie file {} is not UTF-8 text: write the cluster's secret into it as text, or \
         remove it to have a new one created",
        path.display()
    )]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read cookie file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's directory could not be created.
    #[error(
        "cannot create directory {} for the cookie file: {source}; create it (chmod 700) or \
         set --cookie, COMBTEST_COOKIE or COMBTEST_COOKIE_FILE",
        dir.display()
    )]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file could not be created.
    #[error(
        "cannot create cookie file {}: {source}; write a secret into it yourself (chmod 600) \
         or set --cookie or COMBTEST_COOKIE",
        path.display()
    )]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The default cookie file, [`IN_HOME`] under `home` (the `HOME`
/// environment variable's value); `None` if `home` is unset or empty.
pub fn default_path(home: Option<&OsStr>) -> Option<PathBuf> {
    home.filter(|home| !home.is_empty()).map(|home| Path::new(home).join(IN_HOME))
}

/// Which cookie `settings` put in force: the `cookie` setting if set, else
/// the cookie file (the `cookie_file` setting, whose default is
/// [`default_path`]). Does no I/O; the file may not exist yet.
pub fn source(settings: &Settings) -> Result<CookieSource, CookieError> {
    if settings.cookie.value.is_some() {
        return Ok(CookieSource::Given(settings.cookie.source.clone()));
    }
    match &settings.cookie_file.value {
        Some(path) => Ok(CookieSource::File(path.clone())),
        None => Err(CookieError::NoHome),
    }
}

/// The cookie in force and where it comes from: the `cookie` setting, or
/// else the cookie file's secret, the file created if it does not exist
/// ([`load_or_create`]).
pub fn in_force(settings: &Settings) -> Result<(Cookie, CookieSource), CookieError> {
    if let Some(cookie) = &settings.cookie.value {
        return Ok((cookie.clone(), CookieSource::Given(settings.cookie.source.clone())));
    }
    let path = settings.cookie_file.value.as_ref().ok_or(CookieError::NoHome)?;
    Ok((load_or_create(path)?, CookieSource::File(path.clone())))
}

/// The secret in the cookie file at `path` (without one trailing newline),
/// creating the file with a fresh random secret (and its directory, mode
/// 0700) if it does not exist.
///
/// Refuses a file that others than its owner may read or write (any of the
/// mode bits `0o077`), a path that is not a regular file (a symlink is
/// followed), and an empty or non-UTF-8 file.
pub fn load_or_create(path: &Path) -> Result<Cookie, CookieError> {
    match load(path)? {
        Some(cookie) => Ok(cookie),
        None => create(path),
    }
}

/// The secret in the file at `path`, or `None` if there is none.
fn load(path: &Path) -> Result<Option<Cookie>, CookieError> {
    let read_error = |source| CookieError::Read { path: path.to_path_buf(), source };
    // Checked before opening, so that a FIFO is refused rather than waited on,
    // and again on the open file, which is what is read.
    match fs::metadata(path) {
        Ok(metadata) => check(path, &metadata)?,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(read_error(error)),
    }
    let mut file = File::open(path).map_err(read_error)?;
    check(path, &file.metadata().map_err(read_error)?)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_error)?;
    let text =
        String::from_utf8(bytes).map_err(|_| CookieError::NotText { path: path.to_path_buf() })?;
    let secret = match text.strip_suffix('\n') {
        Some(line) => line.strip_suffix('\r').unwrap_or(line),
        None => &text,
    };
    match secret.parse::<Cookie>() {
        Ok(cookie) => Ok(Some(cookie)),
        Err(_) => Err(CookieError::Empty { path: path.to_path_buf() }),
    }
}

/// Refuses what is not a regular file only its owner may read and write.
fn check(path: &Path, metadata: &Metadata) -> Result<(), CookieError> {
    if !metadata.is_file() {
        return Err(CookieError::NotAFile { path: path.to_path_buf() });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CookieError::Permissions { path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// Creates the cookie file at `path` with a new secret; if another process
/// creates it first, its secret.
fn create(path: &Path) -> Result<Cookie, CookieError> {
    let create_error = |source| CookieError::Create { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CookieError::CreateDir { dir: dir.to_path_buf(), source })?;

    let secret = hex(&rand::random::<[u8; SECRET_BYTES]>());
    let name = path.file_name().unwrap_or(OsStr::new("cookie")).to_string_lossy();
    let suffix = hex(&rand::random::<[u8; 8]>());
    let temp = TempFile(dir.join(format!(".{name}.{}.{suffix}.tmp", std::process::id())));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp.0)
        .map_err(create_error)?;
    // The mode given to `open` is narrowed by the umask; make it exactly 0600.
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(create_error)?;
    file.write_all(format!("{secret}\n").as_bytes()).map_err(create_error)?;
    file.sync_all().map_err(create_error)?;
    drop(file);

    match fs::hard_link(&temp.0, path) {
        Ok(()) => {
            // Make the new name durable; the temp file goes when `temp` drops.
            File::open(dir).and_then(|dir| dir.sync_all()).map_err(create_error)?;
            Ok(secret.parse().expect("a new secret is not empty"))
        }
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            // Another process created the file first: use its secret.
            load(path)?.ok_or_else(|| create_error(error))
        }
        Err(error) => Err(create_error(error)),
    }
}

/// A temp file, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Lowercase hex digits of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Barrier};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The names in `dir`.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_first_use_creates_the_file_with_mode_0600_in_a_0700_directory() {
        let home = tempfile::tempdir().unwrap();
        let path = default_path(Some(home.path().as_os_str())).unwrap();
        assert_eq!(path, home.path().join(".combtest").join("cookie"));
        let cookie = load_or_create(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let secret = cookie.expose();
        assert_eq!(secret.len(), 2 * SECRET_BYTES, "{secret}");
        assert!(secret.chars().all(|c| c.is_ascii_hexdigit()), "{secret}");
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{secret}\n"));
        // No temp file is left behind.
        assert_eq!(names(path.parent().unwrap()), ["cookie"]);
    }

    #[test]
    fn a_second_use_reads_the_same_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first, second);
        // Another file gets another secret.
        assert_ne!(load_or_create(&dir.path().join("other")).unwrap(), first);
    }

    #[test]
    fn an_existing_file_is_read_without_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        for (text, secret) in [
            ("s3cret\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("a b\n\n", "a b\n"),
        ] {
            fs::write(&path, text).unwrap();
            set_mode(&path, 0o600);
            assert_eq!(load_or_create(&path).unwrap().expose(), secret, "{text:?}");
        }
        set_mode(&path, 0o400);
        assert_eq!(load_or_create(&path).unwrap().expose(), "a b\n");
    }

    #[test]
    fn processes_racing_to_create_the_file_all_get_the_winners_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("cookie");
        let start = Arc::new(Barrier::new(8));
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    load_or_create(&path).unwrap()
                })
            })
            .collect();
        let cookies: Vec<Cookie> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let on_disk = load_or_create(&path).unwrap();
        assert!(cookies.iter().all(|c| *c == on_disk));
        assert_eq!(names(&dir.path().join("sub")), ["cookie"]);
    }

    #[test]
    fn a_creator_that_loses_the_race_uses_the_winner_s_file() {
        // The winner linked its file between the loser's look and its link.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        fs::write(&path, "winner\n").unwrap();
        set_mode(&path, 0o600);
        assert_eq!(create(&path).unwrap().expose(), "winner");
        assert_eq!(names(dir.path()), ["cookie"]);
        // The winner's file is checked like any other.
        set_mode(&path, 0o644);
        assert!(matches!(create(&path), Err(CookieError::Permissions { .. })));
        assert_eq!(names(dir.path()), ["cookie"]);
    }

    #[test]
    fn a_file_others_may_read_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        fs::write(&path, "s3cret\n").unwrap();
        set_mode(&path, 0o644);
        let error = load_or_create(&path).unwrap_err();
        assert!(matches!(error, CookieError::Permissions { mode: 0o644, .. }), "{error}");
        let p = path.display();
        assert_eq!(
            error.to_string(),
            format!(
                "cookie file {p} has mode 0644, which lets others than its owner read or write \
                 it: run `chmod 600 {p}`"
            )
        );
        assert!(!error.to_string().contains("s3cret"));
        for refused in [0o640, 0o604, 0o620, 0o602, 0o660] {
            set_mode(&path, refused);
            assert!(matches!(load_or_create(&path), Err(CookieError::Permissions { .. })));
        }
        // The file is left as it was.
        assert_eq!(fs::read_to_string(&path).unwrap(), "s3cret\n");
    }

    #[test]
    fn an_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        for text in ["", "\n"] {
            fs::write(&path, text).unwrap();
            set_mode(&path, 0o600);
            let error = load_or_create(&path).unwrap_err();
            assert!(matches!(error, CookieError::Empty { .. }), "{error}");
            assert!(error.to_string().contains(" is empty: "), "{error}");
        }
        fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(load_or_create(&path), Err(CookieError::NotText { .. })));
    }

    #[test]
    fn a_directory_at_the_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        DirBuilder::new().mode(0o700).create(&path).unwrap();
        let error = load_or_create(&path).unwrap_err();
        assert!(matches!(error, CookieError::NotAFile { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "cookie file {} is not a regular file: remove it, or name another file with \
                 --cookie-file or COMBTEST_COOKIE_FILE",
                path.display()
            )
        );
    }

    #[test]
    fn a_path_through_a_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let path = blocker.join("cookie");
        let error = load_or_create(&path).unwrap_err();
        assert!(matches!(error, CookieError::Read { .. }), "{error}");
        let expected = format!("cannot read cookie file {}: ", path.display());
        assert!(error.to_string().starts_with(&expected), "{error}");
        assert_eq!(error.to_string().lines().count(), 1);
    }

    #[test]
    fn the_default_path_needs_a_home() {
        assert_eq!(default_path(None), None);
        assert_eq!(default_path(Some(OsStr::new(""))), None);
        let path = default_path(Some(OsStr::new("/home/u"))).unwrap();
        assert_eq!(path, Path::new("/home/u/.combtest/cookie"));
        assert_eq!(
            CookieError::NoHome.to_string(),
            "no cookie file: HOME is not set; set --cookie, COMBTEST_COOKIE or \
             COMBTEST_COOKIE_FILE"
        );
    }
}
