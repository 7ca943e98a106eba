//! Ids: user, device, group and client message ids, and the one check they all pass.
//!
//! An id is an opaque UTF-8 string of 1 to [`MAX_ID_LEN`] bytes without characters that are
//! invisible or change how text around them is shown: control characters (Unicode category Cc,
//! such as NUL and LF), format characters (Cf: bidirectional overrides such as U+202E, zero
//! width spaces and joiners, the byte order mark), line and paragraph separators (Zl, Zp) and
//! noncharacters. Such ids would let one user look like another in a chat list or a log, and
//! LF separates the fields of a token's signed text.

/// Longest id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Checks that `id` is usable as an id; the error says why not.
pub fn check(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("id is empty")
    } else if id.len() > MAX_ID_LEN {
        Err("id is longer than 64 bytes")
    } else if id.chars().any(char::is_control) {
        Err("id contains a control character")
    } else if id.chars().any(is_invisible) {
        Err("id contains an invisible or text-direction character")
    } else {
        Ok(())
    }
}

/// Format characters (Cf), line and paragraph separators, and noncharacters.
fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFDD0..=0xFDEF
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    ) || (c as u32 & 0xFFFE) == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_pass() {
        for id in [
            "bob",
            "user-42",
            "Zoë",
            "王小明",
            "a b",
            "alice@example.com",
            "😀",
        ] {
            assert_eq!(check(id), Ok(()), "{id:?}");
        }
        assert_eq!(check(&"x".repeat(64)), Ok(()));
    }

    #[test]
    fn empty_long_control_and_invisible_ids_are_refused() {
        assert!(check("").is_err());
        assert!(check(&"x".repeat(65)).is_err());
        for id in [
            "bob\n",
            "bob\0",
            "\u{7f}bob",
            "bob\u{85}",
            "\u{202e}bob",
            "bo\u{200b}b",
            "\u{feff}bob",
            "bob\u{2028}",
            "bob\u{2066}",
            "bob\u{e0041}",
            "bob\u{ffff}",
            "bob\u{1fffe}",
            "b\u{ad}ob",
            "bob\u{fdd0}",
        ] {
            assert!(check(id).is_err(), "{id:?} passed");
        }
    }
}
