//! Login tokens.
//!
//! Input: byte 0 picks the mode.
//! - even: the rest (as lossy UTF-8) is a token, verified with [`SECRET`]. It must not panic,
//!   must never verify at `now = u64::MAX`, and if it verifies at `now = 0` its claims must
//!   pass `check_id` and mint back (v1, or v2 when it has an issue time, never after its
//!   expiry) to exactly this text (one set of claims, one token text).
//!   `SECRET` is the secret of `protocol/vectors/tokens.json`, so that vector, in the corpus,
//!   verifies and its mutations probe the canonical-form checks.
//! - odd: the rest is read with `arbitrary` as (user, device, expires, edits). The token
//!   minted for them verifies back to the same claims before it expires (when both ids pass
//!   `check_id`; otherwise it is refused as malformed), is refused as expired from `expires`
//!   on and under another secret; after the ASCII edits, a token that still verifies must be
//!   the unedited one. The same holds for the v2 token minted for them with an issue time of
//!   half the expiry.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use missive_protocol::token::{check_id, mint, mint_v2, verify, Claims, TokenError};

const SECRET: &[u8] = b"secret";

#[derive(Arbitrary, Debug)]
enum Edit {
    Delete(u16),
    Insert(u16, u8),
    Replace(u16, u8),
}

#[derive(Arbitrary, Debug)]
struct Minted<'a> {
    user: &'a str,
    device: &'a str,
    expires: u64,
    edits: Vec<Edit>,
}

fn raw(token: &str) {
    assert!(
        verify(SECRET, token, u64::MAX).is_err(),
        "verified at now = u64::MAX"
    );
    if let Ok(claims) = verify(SECRET, token, 0) {
        assert!(check_id(&claims.user_id).is_ok());
        assert!(check_id(&claims.device_id).is_ok());
        assert!(claims.expires > 0);
        let again = match claims.issued {
            None => mint(SECRET, &claims.user_id, &claims.device_id, claims.expires),
            Some(issued) => {
                assert!(issued <= claims.expires);
                mint_v2(SECRET, &claims.user_id, &claims.device_id, issued, claims.expires)
            }
        };
        assert_eq!(
            again, token,
            "a second token text for the same claims verifies"
        );
    }
}

fn minted(m: Minted) {
    let v1 = mint(SECRET, m.user, m.device, m.expires);
    check_minted(&m, v1, None);
    let v2 = mint_v2(SECRET, m.user, m.device, m.expires / 2, m.expires);
    check_minted(&m, v2, Some(m.expires / 2));
}

/// `token`, minted for `m` (with issue time `issued`), verifies as it should; so does it after
/// `m`'s edits only if they left it unchanged.
fn check_minted(m: &Minted, token: String, issued: Option<u64>) {
    raw(&token);
    let ids_ok = check_id(m.user).is_ok() && check_id(m.device).is_ok();
    if m.expires > 0 {
        let got = verify(SECRET, &token, m.expires - 1);
        if ids_ok {
            let want = Claims {
                user_id: m.user.to_owned(),
                device_id: m.device.to_owned(),
                expires: m.expires,
                issued,
            };
            assert_eq!(got, Ok(want));
            assert_eq!(
                verify(b"another secret", &token, m.expires - 1),
                Err(TokenError::BadSignature)
            );
        } else {
            assert!(
                matches!(got, Err(TokenError::Malformed(_))),
                "bad id not refused as malformed: {got:?}"
            );
        }
    }
    if ids_ok {
        assert_eq!(
            verify(SECRET, &token, m.expires),
            Err(TokenError::Expired(m.expires))
        );
    }

    if m.edits.is_empty() {
        return;
    }
    // Tokens are ASCII; edits keep them ASCII so byte positions are char positions.
    let mut bytes = token.clone().into_bytes();
    for edit in &m.edits {
        let at = |i: u16, n: usize| i as usize % (n + 1);
        match *edit {
            Edit::Delete(i) if !bytes.is_empty() => {
                let i = at(i, bytes.len() - 1);
                bytes.remove(i);
            }
            Edit::Delete(_) => {}
            Edit::Insert(i, b) => {
                let i = at(i, bytes.len());
                bytes.insert(i, b & 0x7f);
            }
            Edit::Replace(i, b) if !bytes.is_empty() => {
                let i = at(i, bytes.len() - 1);
                bytes[i] = b & 0x7f;
            }
            Edit::Replace(..) => {}
        }
    }
    let edited = String::from_utf8(bytes).expect("ASCII edits of an ASCII token");
    raw(&edited);
    if edited != token && m.expires > 0 {
        let got = verify(SECRET, &edited, m.expires - 1);
        assert!(got.is_err(), "edited token {edited:?} verifies: {got:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        raw(&String::from_utf8_lossy(rest));
    } else if let Ok(m) = Minted::arbitrary_take_rest(Unstructured::new(rest)) {
        minted(m);
    }
});
