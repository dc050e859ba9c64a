//! Base64 (RFC 4648): the standard alphabet with padding, and the URL-safe
//! one without (JWT segments). Decoding accepts exactly what the `base64`
//! crate's `STANDARD` engine accepts (canonical padding, no stray bits in
//! the last symbol), or, with [`Padding::Optional`], what its
//! `Indifferent` padding mode accepts; tests check both against the crate.
//!
//! Written out rather than taken from `base64`, whose generic engines
//! were ~7 KB of the wasm for the four calls the filter makes.

/// What padding a decoder accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// `=` up to a multiple of four characters, as encoders write it.
    Canonical,
    /// Canonical, partial or absent (operators paste keys both ways).
    Optional,
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode_with(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        // A chunk of k bytes gives k + 1 symbols.
        for i in 0..=chunk.len() {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(alphabet[index as usize]));
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    encode_with(bytes.as_ref(), STANDARD, true)
}

/// URL-safe base64 without padding (RFC 7515's base64url).
pub fn encode_url(bytes: impl AsRef<[u8]>) -> String {
    encode_with(bytes.as_ref(), URL_SAFE, false)
}

/// The 6-bit value of a standard-alphabet symbol.
fn value(symbol: u8) -> Option<u32> {
    let v = match symbol {
        b'A'..=b'Z' => symbol - b'A',
        b'a'..=b'z' => symbol - b'a' + 26,
        b'0'..=b'9' => symbol - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes standard base64; `None` for anything the `base64` crate
/// refuses: a byte outside the alphabet, `=` other than at the end,
/// padding that `padding` does not allow, a lone final symbol, or a last
/// symbol with bits that encode nothing.
pub fn decode(text: impl AsRef<[u8]>, padding: Padding) -> Option<Vec<u8>> {
    let input = text.as_ref();
    // The last (partial or complete) group is the one that may be padded.
    let rem = input.len() % 4;
    let tail_len = if rem == 0 { input.len().min(4) } else { rem };
    let (body, tail) = input.split_at(input.len() - tail_len);
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    for quad in body.chunks(4) {
        let mut n = 0u32;
        for &symbol in quad {
            n = (n << 6) | value(symbol)?;
        }
        out.extend_from_slice(&n.to_be_bytes()[1..]);
    }
    let (mut symbols, mut pads, mut n) = (0usize, 0usize, 0u32);
    for (i, &b) in tail.iter().enumerate() {
        if b == b'=' {
            // Padding only after two or three symbols, and nothing after it.
            if i < 2 {
                return None;
            }
            pads += 1;
        } else if pads > 0 {
            return None;
        } else {
            n = (n << 6) | value(b)?;
            symbols += 1;
        }
    }
    if !input.is_empty() && symbols < 2 {
        return None;
    }
    if padding == Padding::Canonical && (symbols + pads) % 4 != 0 {
        return None;
    }
    // `symbols` 6-bit values carry `symbols * 6 / 8` whole bytes; the
    // bits left over must be zero.
    let bytes = symbols * 6 / 8;
    let spare = symbols * 6 - bytes * 8;
    if n & ((1 << spare) - 1) != 0 {
        return None;
    }
    let n = n >> spare;
    out.extend_from_slice(&n.to_be_bytes()[4 - bytes..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
    use base64::engine::{DecodePaddingMode, Engine};
    use base64::prelude::BASE64_URL_SAFE_NO_PAD;

    const INDIFFERENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );

    fn check(text: &[u8]) {
        assert_eq!(
            decode(text, Padding::Canonical),
            STANDARD.decode(text).ok(),
            "canonical {:?}",
            String::from_utf8_lossy(text)
        );
        assert_eq!(
            decode(text, Padding::Optional),
            INDIFFERENT.decode(text).ok(),
            "optional {:?}",
            String::from_utf8_lossy(text)
        );
    }

    #[test]
    fn encodes_like_the_base64_crate() {
        let bytes: Vec<u8> = (0..=255).chain((0..=255).rev()).collect();
        for len in 0..bytes.len() {
            for start in [0, 1, 2] {
                let data = &bytes[start..(start + len).min(bytes.len())];
                assert_eq!(encode(data), STANDARD.encode(data));
                assert_eq!(encode_url(data), BASE64_URL_SAFE_NO_PAD.encode(data));
            }
        }
    }

    #[test]
    fn decodes_like_the_base64_crate() {
        // Every string of up to 3 characters over an alphabet with
        // padding, a bad byte, both edge symbols and bits that matter.
        let chars = b"AQgw/+=*\n Pz";
        let mut texts: Vec<Vec<u8>> = vec![vec![]];
        for _ in 0..3 {
            let longer: Vec<Vec<u8>> = texts
                .iter()
                .flat_map(|t| {
                    chars.iter().map(move |&c| {
                        let mut t = t.clone();
                        t.push(c);
                        t
                    })
                })
                .collect();
            texts.extend(longer);
        }
        texts.sort();
        texts.dedup();
        for text in &texts {
            check(text);
            // The same after a complete group, and before one.
            check(&[b"QUJD", &text[..]].concat());
            check(&[&text[..], b"QUJD"].concat());
            check(&[&text[..], b"=="].concat());
        }
        // Encodings of every length round-trip, with and without padding.
        let bytes: Vec<u8> = (0..=255).collect();
        for len in 0..64 {
            let data = &bytes[len..len * 3];
            let text = STANDARD.encode(data);
            check(text.as_bytes());
            check(text.trim_end_matches('=').as_bytes());
            check(&text.as_bytes()[..text.len().saturating_sub(1)]);
            assert_eq!(decode(&text, Padding::Canonical).as_deref(), Some(data));
        }
        for text in [
            "QUJD=x", "QQ", "QQ=", "QQ==", "QR==", "QUI", "QUI=", "QUJ=", "Q===", "=", "====",
        ] {
            check(text.as_bytes());
        }
    }
}
