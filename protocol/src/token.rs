//! Login tokens: minted by the app's backend, checked by the server.
//!
//! ```text
//! token     = b64(user_id) "." b64(device_id) "." expires "." b64(signature)
//! signature = HMAC-SHA256(key = secret as UTF-8 bytes,
//!                         msg = "missive-token-v1\n" user_id "\n" device_id "\n" expires)
//! ```
//! `b64` is base64url without padding; `expires` is Unix seconds in decimal. User and device ids
//! are opaque UTF-8 strings of 1 to 64 bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Longest user or device id, in bytes.
pub const MAX_ID_LEN: usize = crate::ids::MAX_ID_LEN;

/// Why a token was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token signature does not match")]
    BadSignature,
    #[error("token expired at {0} (Unix seconds)")]
    Expired(u64),
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user_id: String,
    pub device_id: String,
    pub expires: u64,
}

fn mac(secret: &[u8], user: &str, device: &str, expires: u64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("missive-token-v1\n{user}\n{device}\n{expires}").as_bytes());
    mac
}

/// Checks that `id` is usable as a user or device id ([`crate::ids::check`]).
pub fn check_id(id: &str) -> Result<(), &'static str> {
    crate::ids::check(id)
}

/// Mints a token for `user` on `device`, valid until `expires` (Unix seconds).
pub fn mint(secret: &[u8], user: &str, device: &str, expires: u64) -> String {
    let sig = mac(secret, user, device, expires).finalize().into_bytes();
    format!(
        "{}.{}.{}.{}",
        B64.encode(user),
        B64.encode(device),
        expires,
        B64.encode(sig)
    )
}

/// Verifies `token` at time `now` (Unix seconds). The signature is compared in constant time.
pub fn verify(secret: &[u8], token: &str, now: u64) -> Result<Claims, TokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [user, device, expires, sig] = parts[..] else {
        return Err(TokenError::Malformed("expected four dot-separated parts"));
    };
    let text = |part: &str| -> Result<String, TokenError> {
        let raw = B64
            .decode(part)
            .map_err(|_| TokenError::Malformed("bad base64"))?;
        let s = String::from_utf8(raw).map_err(|_| TokenError::Malformed("id is not UTF-8"))?;
        check_id(&s).map_err(TokenError::Malformed)?;
        Ok(s)
    };
    let user = text(user)?;
    let device = text(device)?;
    // Canonical decimal only, so one set of claims has exactly one token text.
    let canonical = !expires.is_empty()
        && expires.bytes().all(|b| b.is_ascii_digit())
        && (expires == "0" || !expires.starts_with('0'));
    let expires: u64 = expires
        .parse()
        .ok()
        .filter(|_| canonical)
        .ok_or(TokenError::Malformed(
            "expiry is not a canonical decimal number",
        ))?;
    let sig = B64
        .decode(sig)
        .map_err(|_| TokenError::Malformed("bad base64 signature"))?;
    mac(secret, &user, &device, expires)
        .verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    if expires <= now {
        return Err(TokenError::Expired(expires));
    }
    Ok(Claims {
        user_id: user,
        device_id: device,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_then_verify() {
        let t = mint(b"s3cret", "alice", "phone.1", 2_000);
        let c = verify(b"s3cret", &t, 1_000).unwrap();
        assert_eq!(c.user_id, "alice");
        assert_eq!(c.device_id, "phone.1");
        assert_eq!(c.expires, 2_000);
    }

    #[test]
    fn refuses_wrong_secret_expiry_and_tampering() {
        let t = mint(b"s3cret", "alice", "d", 2_000);
        assert_eq!(verify(b"other", &t, 1_000), Err(TokenError::BadSignature));
        assert_eq!(
            verify(b"s3cret", &t, 2_000),
            Err(TokenError::Expired(2_000))
        );
        let forged = t.replacen(&B64.encode("alice"), &B64.encode("mallory"), 1);
        assert_eq!(
            verify(b"s3cret", &forged, 1_000),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verify(b"s3cret", "a.b", 1),
            Err(TokenError::Malformed(_))
        ));
        let padded = t.replacen(".2000.", ".02000.", 1);
        assert!(matches!(
            verify(b"s3cret", &padded, 1_000),
            Err(TokenError::Malformed(_))
        ));
        let newline = mint(b"s3cret", "a\nb", "c", 2_000);
        assert!(matches!(
            verify(b"s3cret", &newline, 1_000),
            Err(TokenError::Malformed(_))
        ));
    }

    /// Every way a token can be damaged is refused, and none of them panics. The signature is
    /// checked before the expiry, so an expired token with a forged signature tells the sender
    /// nothing about the expiry (and a forged expiry cannot turn into "expired").
    #[test]
    fn refuses_truncated_garbage_and_every_tampered_part() {
        let secret = b"s3cret";
        let t = mint(secret, "alice", "phone", 2_000);
        // Every proper prefix: either malformed or a signature mismatch, never accepted.
        for n in 0..t.len() {
            let cut = &t[..n];
            assert!(
                matches!(
                    verify(secret, cut, 1_000),
                    Err(TokenError::Malformed(_) | TokenError::BadSignature)
                ),
                "prefix of {n} bytes: {:?}",
                verify(secret, cut, 1_000)
            );
        }
        // Garbage of all kinds.
        for g in [
            "",
            ".",
            "...",
            "....",
            "a.b.c.d",
            "not-a-token",
            "\u{0}\u{1}\u{2}",
            "YWxpY2U.cGhvbmU.2000",
            "YWxpY2U.cGhvbmU.-1.AAAA",
            "YWxpY2U.cGhvbmU.2000.!!!!",
            "//8.cGhvbmU.2000.AAAA", // user id bytes ff ff: not UTF-8
            "YWxpY2U.cGhvbmU.18446744073709551616.AAAA", // expiry past u64
        ] {
            assert!(verify(secret, g, 1_000).is_err(), "{g:?} accepted");
        }
        let parts: Vec<&str> = t.split('.').collect();
        let join = |p: &[&str]| p.join(".");
        // A fifth part, or a missing one.
        assert!(matches!(
            verify(secret, &format!("{t}.x"), 1_000),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verify(secret, &join(&parts[..3]), 1_000),
            Err(TokenError::Malformed(_))
        ));
        // Another user, another device, a later expiry: all keep the old signature.
        for (i, replacement) in [
            (0, B64.encode("bob")),
            (1, B64.encode("tablet")),
            (2, "99999999999".to_string()),
        ] {
            let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            p[i] = replacement;
            assert_eq!(
                verify(secret, &p.join("."), 1_000),
                Err(TokenError::BadSignature),
                "part {i} replaced"
            );
        }
        // Each bit of the signature matters; a shortened or lengthened one is refused.
        let sig = B64.decode(parts[3]).unwrap();
        for bit in 0..sig.len() * 8 {
            let mut s = sig.clone();
            s[bit / 8] ^= 1 << (bit % 8);
            let forged = join(&[parts[0], parts[1], parts[2], &B64.encode(&s)]);
            assert_eq!(
                verify(secret, &forged, 1_000),
                Err(TokenError::BadSignature),
                "bit {bit} flipped"
            );
        }
        for len in [0, 1, 16, 31, 33, 64] {
            let mut s = sig.clone();
            s.resize(len, 0);
            let forged = join(&[parts[0], parts[1], parts[2], &B64.encode(&s)]);
            assert_eq!(
                verify(secret, &forged, 1_000),
                Err(TokenError::BadSignature),
                "signature of {len} bytes"
            );
        }
        // Padding is not base64url-without-padding.
        let padded = join(&[parts[0], parts[1], parts[2], &format!("{}=", parts[3])]);
        assert!(verify(secret, &padded, 1_000).is_err());
        // Expired and badly signed: the signature error wins.
        assert_eq!(verify(b"other", &t, 5_000), Err(TokenError::BadSignature));
        // The untouched token still verifies.
        assert_eq!(verify(secret, &t, 1_000).unwrap().user_id, "alice");
    }

    #[test]
    fn known_token_pins_the_format() {
        // Mobile and backend teams can check their minting code against this value.
        let t = mint(b"secret", "alice", "phone", 1_900_000_000);
        assert!(t.starts_with("YWxpY2U.cGhvbmU.1900000000."));
        assert_eq!(verify(b"secret", &t, 0).unwrap().user_id, "alice");
    }
}
