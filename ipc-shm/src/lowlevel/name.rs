//! Segment names: validation and unpredictable generation.

use crate::error::{Error, Result};
use crate::sys;

/// The longest name `shm_open` accepts on Linux, leading `/` included (`NAME_MAX` + 1).
pub const MAX_NAME_LEN: usize = 255;

/// The prefix of generated names: `/ipc-` followed by 16 random hex digits.
pub const GENERATED_PREFIX: &str = "/ipc-";

/// Normalises a user-supplied name to the `/name` form `shm_open` wants.
///
/// Accepts `name` and `/name` (Python's `SharedMemory(name=...)` takes the bare form); rejects
/// an empty name, a `/` or NUL after the leading slash, `.`/`..`, and names longer than
/// [`MAX_NAME_LEN`].
pub fn normalize(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let invalid = |why| Err(Error::InvalidName(name.to_owned(), why));
    if bare.is_empty() {
        return invalid("empty");
    }
    if bare.contains('/') {
        return invalid("contains '/' after the leading slash");
    }
    if bare.contains('\0') {
        return invalid("contains NUL");
    }
    if bare == "." || bare == ".." {
        return invalid("is a directory name");
    }
    if bare.len() + 1 > MAX_NAME_LEN {
        return invalid("longer than 255 bytes");
    }
    Ok(format!("/{bare}"))
}

/// A fresh unpredictable name, `/ipc-<16 hex digits>` from the OS random source.
pub fn generate() -> Result<String> {
    generate_with_prefix(GENERATED_PREFIX)
}

/// A fresh unpredictable name `<prefix><16 hex digits>` (`prefix` starts with `/`).
pub fn generate_with_prefix(prefix: &str) -> Result<String> {
    let mut bytes = [0u8; 8];
    sys::random_bytes(&mut bytes).map_err(|e| Error::io("getrandom", e))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    normalize(&format!("{prefix}{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_rejects() {
        assert_eq!(normalize("abc").unwrap(), "/abc");
        assert_eq!(normalize("/abc").unwrap(), "/abc");
        for bad in ["", "/", "a/b", "/a/b", "a\0b", "..", &"x".repeat(255)] {
            assert!(
                matches!(normalize(bad), Err(Error::InvalidName(..))),
                "{bad:?}"
            );
        }
        assert!(normalize(&"x".repeat(254)).is_ok());
    }

    #[test]
    fn generated_names_are_distinct_and_well_formed() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("/ipc-") && a.len() == 5 + 16);
        assert!(a[5..].bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
