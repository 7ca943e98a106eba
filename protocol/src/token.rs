//! Login tokens: minted by the app's backend, checked by the server. Two forms, told apart by
//! their number of parts:
//!
//! ```text
//! v1 token     = b64(user_id) "." b64(device_id) "." expires "." b64(signature)
//! v1 signature = HMAC-SHA256(key = secret as UTF-8 bytes,
//!                            msg = "missive-token-v1\n" user_id "\n" device_id "\n" expires)
//! v2 token     = b64(user_id) "." b64(device_id) "." issued "." expires "." b64(signature)
//! v2 signature = HMAC-SHA256(key = secret as UTF-8 bytes,
//!                            msg = "missive-token-v2\n" user_id "\n" device_id "\n" issued
//!                                  "\n" expires)
//! ```
//! `b64` is base64url without padding; `issued` and `expires` are Unix seconds in canonical
//! decimal, `issued <= expires`. User and device ids are opaque UTF-8 strings of 1 to 64 bytes.
//! The issue time lets a server revoke the tokens of a user issued until some moment; a v1
//! token has none, so any revocation of its user voids it.

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
    /// When a v2 token was issued (Unix seconds); `None` for a v1 token.
    pub issued: Option<u64>,
}

fn mac(secret: &[u8], user: &str, device: &str, issued: Option<u64>, expires: u64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    let input = match issued {
        None => format!("missive-token-v1\n{user}\n{device}\n{expires}"),
        Some(issued) => format!("missive-token-v2\n{user}\n{device}\n{issued}\n{expires}"),
    };
    mac.update(input.as_bytes());
    mac
}

/// Checks that `id` is usable as a user or device id ([`crate::ids::check`]).
pub fn check_id(id: &str) -> Result<(), &'static str> {
    crate::ids::check(id)
}

/// Mints a v1 token for `user` on `device`, valid until `expires` (Unix seconds). It carries
/// no issue time, so a server that has revoked any of the user's tokens refuses it: mint v2
/// ([`mint_v2`]) where tokens may be revoked.
pub fn mint(secret: &[u8], user: &str, device: &str, expires: u64) -> String {
    let sig = mac(secret, user, device, None, expires)
        .finalize()
        .into_bytes();
    format!(
        "{}.{}.{}.{}",
        B64.encode(user),
        B64.encode(device),
        expires,
        B64.encode(sig)
    )
}

/// Mints a v2 token for `user` on `device`, issued at `issued` and valid until `expires` (Unix
/// seconds). `issued` must not be after `expires` (such a token is refused as malformed).
pub fn mint_v2(secret: &[u8], user: &str, device: &str, issued: u64, expires: u64) -> String {
    let sig = mac(secret, user, device, Some(issued), expires)
        .finalize()
        .into_bytes();
    format!(
        "{}.{}.{}.{}.{}",
        B64.encode(user),
        B64.encode(device),
        issued,
        expires,
        B64.encode(sig)
    )
}

/// A canonical decimal: digits only, no leading zero, within u64 (so one set of claims has
/// exactly one token text).
fn seconds(part: &str, what: &'static str) -> Result<u64, TokenError> {
    let canonical = !part.is_empty()
        && part.bytes().all(|b| b.is_ascii_digit())
        && (part == "0" || !part.starts_with('0'));
    part.parse()
        .ok()
        .filter(|_| canonical)
        .ok_or(TokenError::Malformed(what))
}

/// Verifies `token`, of either form, at time `now` (Unix seconds). The signature is compared in
/// constant time, and checked before the expiry. The issue time of a v2 token is not compared
/// with `now` (the minting backend's clock may run ahead); revocation is the server's business.
pub fn verify(secret: &[u8], token: &str, now: u64) -> Result<Claims, TokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    let (user, device, issued, expires, sig) = match parts[..] {
        [user, device, expires, sig] => (user, device, None, expires, sig),
        [user, device, issued, expires, sig] => (user, device, Some(issued), expires, sig),
        _ => {
            return Err(TokenError::Malformed(
                "expected four (v1) or five (v2) dot-separated parts",
            ))
        }
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
    let expires = seconds(expires, "expiry is not a canonical decimal number")?;
    let issued = match issued {
        None => None,
        Some(i) => Some(seconds(i, "issue time is not a canonical decimal number")?),
    };
    if issued.is_some_and(|i| i > expires) {
        return Err(TokenError::Malformed("issued after it expires"));
    }
    let sig = B64
        .decode(sig)
        .map_err(|_| TokenError::Malformed("bad base64 signature"))?;
    mac(secret, &user, &device, issued, expires)
        .verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    if expires <= now {
        return Err(TokenError::Expired(expires));
    }
    Ok(Claims {
        user_id: user,
        device_id: device,
        expires,
        issued,
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
    fn v2_mint_then_verify_and_every_tampered_part_is_refused() {
        let secret = b"s3cret";
        let t = mint_v2(secret, "alice", "phone", 1_500, 2_000);
        assert_eq!(t.split('.').count(), 5);
        let c = verify(secret, &t, 1_000).unwrap();
        assert_eq!(
            c,
            Claims {
                user_id: "alice".into(),
                device_id: "phone".into(),
                expires: 2_000,
                issued: Some(1_500),
            }
        );
        // The issue time is not compared with now (the backend's clock may be ahead).
        assert!(verify(secret, &t, 0).is_ok());
        assert_eq!(verify(secret, &t, 2_000), Err(TokenError::Expired(2_000)));
        assert_eq!(verify(b"other", &t, 1_000), Err(TokenError::BadSignature));
        let parts: Vec<&str> = t.split('.').collect();
        let with = |i: usize, v: &str| {
            let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            p[i] = v.to_string();
            p.join(".")
        };
        // Each part is signed: an earlier or later issue time keeps the old signature.
        for (i, v) in [
            (0, B64.encode("bob")),
            (1, B64.encode("tablet")),
            (2, "1499".into()),
            (2, "1999".into()),
            (3, "2001".into()),
        ] {
            assert_eq!(
                verify(secret, &with(i, &v), 1_000),
                Err(TokenError::BadSignature),
                "part {i} = {v}"
            );
        }
        // Canonical decimals only, and not issued after it expires.
        for (i, v) in [(2, "01500"), (2, ""), (2, "-1"), (2, "2001"), (3, "+2000")] {
            assert!(
                matches!(
                    verify(secret, &with(i, v), 1_000),
                    Err(TokenError::Malformed(_))
                ),
                "part {i} = {v:?}"
            );
        }
        let upside_down = mint_v2(secret, "alice", "phone", 2_001, 2_000);
        assert!(matches!(
            verify(secret, &upside_down, 1_000),
            Err(TokenError::Malformed(_))
        ));
        // The forms do not share signatures: a v1 signature in the v2 form, and the other way.
        let v1 = mint(secret, "alice", "phone", 2_000);
        let v1_sig = v1.rsplit('.').next().unwrap();
        assert_eq!(
            verify(secret, &with(4, v1_sig), 1_000),
            Err(TokenError::BadSignature)
        );
        let v2_sig_in_v1 = format!("{}.{}.2000.{}", parts[0], parts[1], parts[4]);
        assert_eq!(
            verify(secret, &v2_sig_in_v1, 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verify(secret, &v1, 1_000).unwrap().issued, None);
        // Six parts.
        assert!(matches!(
            verify(secret, &format!("{t}.x"), 1_000),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn known_v2_token_pins_the_format() {
        let t = mint_v2(b"secret", "alice", "phone", 1_800_000_000, 1_900_000_000);
        assert!(t.starts_with("YWxpY2U.cGhvbmU.1800000000.1900000000."));
        let c = verify(b"secret", &t, 0).unwrap();
        assert_eq!(c.issued, Some(1_800_000_000));
    }

    #[test]
    fn known_token_pins_the_format() {
        // Mobile and backend teams can check their minting code against this value.
        let t = mint(b"secret", "alice", "phone", 1_900_000_000);
        assert!(t.starts_with("YWxpY2U.cGhvbmU.1900000000."));
        assert_eq!(verify(b"secret", &t, 0).unwrap().user_id, "alice");
    }
}
