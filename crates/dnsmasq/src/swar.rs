//! Byte tests eight bytes at a time in a 64-bit register (SWAR), for the
//! names and fields of a log line: a few to a few dozen bytes, where a byte
//! loop costs several instructions a byte and memchr's dispatch and set-up
//! dominate.

pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
pub(crate) const HIGH: u64 = 0x8080_8080_8080_8080;

/// The eight bytes of `b` (exactly eight long) as one little-endian word:
/// byte `i` of `b` is bits `8 * i ..` of the word.
#[inline(always)]
pub(crate) fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// The high bit of each byte of `w` that is an ASCII capital (`A`-`Z`).
#[inline(always)]
pub(crate) fn upper_bits(w: u64) -> u64 {
    let low7 = w & !HIGH;
    // The high bit of a byte ends up set when the byte is >= 'A', resp. > 'Z';
    // no carry crosses a byte because each lane holds at most 0x7f + 0x3f.
    let ge_a = low7 + ONES * u64::from(0x80 - b'A');
    let gt_z = low7 + ONES * u64::from(0x7f - b'Z');
    ge_a & !gt_z & !w & HIGH
}

/// Lower-cases the ASCII capitals among eight bytes at once.
#[inline(always)]
pub(crate) fn lower_word(w: u64) -> u64 {
    w | (upper_bits(w) >> 2)
}

/// The high bit of each byte of `w` that equals `b`, and no other bit. Exact
/// in every byte (the shorter has-zero-byte test can also flag the bytes
/// above a match, which a search from the right must not see).
#[inline(always)]
pub(crate) fn eq_bits(w: u64, b: u8) -> u64 {
    let x = w ^ (ONES * u64::from(b));
    let low7 = !HIGH;
    // A byte of `x` is zero exactly when neither its low seven bits (which
    // carry into the high bit when added to 0x7f) nor its high bit are set.
    !(((x & low7) + low7) | x | low7)
}

/// Whether every byte of `s` is ASCII and none is a capital: the test that
/// lets a name be used as it is, as `&str`, without a UTF-8 check or a copy.
#[inline]
pub(crate) fn is_lower_ascii(s: &[u8]) -> bool {
    let n = s.len();
    // Bytes that are not ASCII, or are capitals, leave a high bit here. The
    // words may overlap: a byte tested twice changes nothing.
    let bad = |w: u64| (w & HIGH) | upper_bits(w);
    if n >= 8 {
        let mut acc = 0;
        let mut i = 0;
        while n - i > 8 {
            acc |= bad(word(&s[i..i + 8]));
            i += 8;
        }
        acc |= bad(word(&s[n - 8..]));
        acc == 0
    } else if n >= 4 {
        let w = u64::from(half(&s[..4])) | u64::from(half(&s[n - 4..])) << 32;
        bad(w) == 0
    } else {
        s.iter().all(|&b| b.is_ascii() && !b.is_ascii_uppercase())
    }
}

#[inline(always)]
fn half(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(b);
    u32::from_le_bytes(w)
}

/// Position of the last `b` in `s[lo..]`, eight bytes a step from the right.
#[inline(always)]
pub(crate) fn rfind_from(s: &[u8], lo: usize, b: u8) -> Option<usize> {
    let mut end = s.len();
    while end - lo >= 8 {
        let m = eq_bits(word(&s[end - 8..end]), b);
        if m != 0 {
            return Some(end - 1 - m.leading_zeros() as usize / 8);
        }
        end -= 8;
    }
    if end == lo {
        return None;
    }
    if end >= 8 {
        // Fewer than eight bytes of the window are left: load the eight that
        // end here and ignore those before `lo`.
        let below = 8 - (end - lo);
        let m = eq_bits(word(&s[end - 8..end]), b) & (HIGH << (8 * below));
        if m != 0 {
            return Some(end - 1 - m.leading_zeros() as usize / 8);
        }
        None
    } else {
        s[lo..end].iter().rposition(|&c| c == b).map(|p| lo + p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lower_word_matches_std() {
        for i in 0u32..=255 {
            let bytes = [i as u8, b'A', b'Z', b'@', b'[', b'a', 0xC1, i as u8 ^ 0x80];
            let mut want = bytes;
            want.make_ascii_lowercase();
            assert_eq!(
                lower_word(u64::from_le_bytes(bytes)).to_le_bytes(),
                want,
                "{i}"
            );
        }
    }

    #[test]
    fn eq_bits_is_exact_in_every_byte() {
        for b in 0u32..=255 {
            for c in 0u32..=255 {
                let bytes = [
                    c as u8,
                    b as u8,
                    c as u8,
                    0,
                    0xff,
                    b as u8 ^ 1,
                    0x80,
                    b as u8,
                ];
                let want: u64 = bytes
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| if x == b as u8 { 0x80 << (8 * i) } else { 0 })
                    .sum();
                assert_eq!(eq_bits(u64::from_le_bytes(bytes), b as u8), want);
            }
        }
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                4 => proptest::sample::select(b"abz.-09".to_vec()),
                1 => proptest::sample::select(b"AZ@[`{\x7f\x00\x80\xc1\xdf\xff".to_vec()),
                1 => any::<u8>(),
            ],
            0..40,
        )
    }

    proptest! {
        #[test]
        fn is_lower_ascii_agrees_with_a_byte_loop(s in bytes()) {
            let want = s.iter().all(|&b| b.is_ascii() && !b.is_ascii_uppercase());
            prop_assert_eq!(is_lower_ascii(&s), want);
        }

        #[test]
        fn rfind_from_agrees_with_rposition(
            s in bytes(),
            lo in 0usize..40,
            b in proptest::sample::select(b".a \x00\xff".to_vec()),
        ) {
            let lo = lo.min(s.len());
            let want = s[lo..].iter().rposition(|&c| c == b).map(|p| lo + p);
            prop_assert_eq!(rfind_from(&s, lo, b), want);
        }
    }
}
