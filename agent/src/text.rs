//! Numbers as text without `core::fmt`, for the few strings the core builds at run time (delivery
//! messages, IPv6 hosts, key hex in an error).
//!
//! `format!` and `to_string` link the formatting machinery (`fmt::write`, padding, the integer
//! and IP address `Display` impls): 3.5 kB of the browser module (1.6 kB gzipped) that nothing
//! else there needs (wasm/pkg-src/README.md "Size"). The text is the same as `Display`'s;
//! tests compare the two.

/// Appends `n` in decimal.
pub(crate) fn push_decimal(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[start..].iter().for_each(|&d| out.push(char::from(d)));
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `n` in lower-case hex without leading zeros (`{:x}`).
pub(crate) fn push_hex(out: &mut String, n: u16) {
    let mut started = false;
    for shift in [12, 8, 4, 0] {
        let digit = (n >> shift) & 0xf;
        started |= digit != 0 || shift == 0;
        if started {
            out.push(char::from(HEX_DIGITS[usize::from(digit)]));
        }
    }
}

/// `bytes` as lower-case hex, two digits each.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn edges_match_display() {
        for n in [0, 1, 9, 10, 99, 100, 599, 65_535, u32::MAX] {
            let mut s = String::new();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        for n in [0, 1, 0xf, 0x10, 0xabc, 0x1000, u16::MAX] {
            let mut s = String::new();
            push_hex(&mut s, n);
            assert_eq!(s, format!("{n:x}"));
        }
        assert_eq!(hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }

    proptest! {
        #[test]
        fn numbers_match_display(n: u32, h: u16, bytes: Vec<u8>) {
            let mut s = String::new();
            push_decimal(&mut s, n);
            prop_assert_eq!(s, n.to_string());
            let mut s = String::new();
            push_hex(&mut s, h);
            prop_assert_eq!(s, format!("{h:x}"));
            let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(hex(&bytes), want);
        }
    }
}
