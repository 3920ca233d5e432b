//! `getaddrinfo` return codes (`EAI_*`).

use super::{Entry, ErrnoFlavor, find};
use crate::taxonomy::ErrorType;
use crate::taxonomy::ErrorType::{DnsFailed, DnsNameNotResolved};

/// Classifies a non-zero `getaddrinfo` return code.
///
/// - "No such name" codes (`EAI_NONAME`, `EAI_NODATA`, `EAI_ADDRFAMILY`; Windows
///   `WSAHOST_NOT_FOUND`, `WSANO_DATA`) are [`ErrorType::DnsNameNotResolved`]: the name does
///   not exist, or has no address of a usable family.
/// - `EAI_AGAIN` (`WSATRY_AGAIN`) is [`ErrorType::DnsFailed`]: it means "temporary failure",
///   which glibc returns for a SERVFAIL, a resolver timeout and an unreachable resolver alike,
///   so neither `dns.timed_out` nor `dns.unreachable` can be claimed.
/// - `EAI_FAIL`, `EAI_SYSTEM`, `EAI_MEMORY`, and every other code (including 0) give the
///   documented fallback [`ErrorType::DnsFailed`].
///
/// [`ErrnoFlavor::Linux`] and [`ErrnoFlavor::Darwin`] read the same table, because the two
/// Unix numberings do not overlap: glibc, musl and OpenBSD use negative codes (`EAI_NONAME` is
/// -2), while Apple, FreeBSD, NetBSD and Android's bionic use positive ones (`EAI_NONAME` is 8).
/// That way an Android host can pass its codes as Linux. [`ErrnoFlavor::Windows`] reads the
/// `WSA*` codes that Windows' `getaddrinfo` returns (`EAI_NONAME` is `WSAHOST_NOT_FOUND`,
/// 11001).
pub fn getaddrinfo(flavor: ErrnoFlavor, code: i32) -> ErrorType {
    lookup(flavor, code).map_or(DnsFailed, |entry| entry.2.clone())
}

/// The table row for `code`, if the flavour's table has one.
pub(crate) fn lookup(flavor: ErrnoFlavor, code: i32) -> Option<&'static Entry<i32>> {
    match flavor {
        ErrnoFlavor::Linux | ErrnoFlavor::Darwin => find(UNIX, code),
        ErrnoFlavor::Windows => find(WINDOWS, code),
    }
}

/// Negative: glibc/musl/OpenBSD `netdb.h` (checked against `libc` in the tests).
/// Positive: Apple/FreeBSD/NetBSD/bionic `netdb.h`.
static UNIX: &[Entry<i32>] = &[
    (-2, "EAI_NONAME", DnsNameNotResolved),
    (-3, "EAI_AGAIN", DnsFailed),
    (-4, "EAI_FAIL", DnsFailed),
    (-5, "EAI_NODATA", DnsNameNotResolved),
    (-9, "EAI_ADDRFAMILY", DnsNameNotResolved),
    (-10, "EAI_MEMORY", DnsFailed),
    (-11, "EAI_SYSTEM", DnsFailed),
    (1, "EAI_ADDRFAMILY", DnsNameNotResolved),
    (2, "EAI_AGAIN", DnsFailed),
    (4, "EAI_FAIL", DnsFailed),
    (6, "EAI_MEMORY", DnsFailed),
    (7, "EAI_NODATA", DnsNameNotResolved),
    (8, "EAI_NONAME", DnsNameNotResolved),
    (11, "EAI_SYSTEM", DnsFailed),
];

/// Windows `winerror.h`; `ws2def.h` defines the `EAI_*` names as these.
static WINDOWS: &[Entry<i32>] = &[
    (11001, "WSAHOST_NOT_FOUND", DnsNameNotResolved),
    (11002, "WSATRY_AGAIN", DnsFailed),
    (11003, "WSANO_RECOVERY", DnsFailed),
    (11004, "WSANO_DATA", DnsNameNotResolved),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::testutil::{assert_unique_codes, round_trips};
    use crate::taxonomy::Phase;
    use proptest::prelude::*;

    fn check(flavor: ErrnoFlavor, cases: &[(i32, ErrorType)]) {
        for (code, expected) in cases {
            assert_eq!(&getaddrinfo(flavor, *code), expected, "{flavor:?} {code}");
        }
    }

    #[test]
    fn tables_have_unique_codes() {
        assert_unique_codes(UNIX);
        assert_unique_codes(WINDOWS);
    }

    #[test]
    fn glibc_numbering() {
        let cases = [
            (-2, DnsNameNotResolved),
            (-5, DnsNameNotResolved),
            (-9, DnsNameNotResolved),
            (-3, DnsFailed),
            (-4, DnsFailed),
            (-10, DnsFailed),
            (-11, DnsFailed),
            (-1, DnsFailed),  // EAI_BADFLAGS
            (-8, DnsFailed),  // EAI_SERVICE
            (-12, DnsFailed), // EAI_OVERFLOW
        ];
        check(ErrnoFlavor::Linux, &cases);
        // OpenBSD numbers its codes like glibc.
        check(ErrnoFlavor::Darwin, &cases);
    }

    #[test]
    fn bsd_numbering() {
        let cases = [
            (8, DnsNameNotResolved),
            (7, DnsNameNotResolved),
            (1, DnsNameNotResolved),
            (2, DnsFailed),
            (4, DnsFailed),
            (6, DnsFailed),
            (11, DnsFailed),
            (3, DnsFailed),  // EAI_BADFLAGS
            (9, DnsFailed),  // EAI_SERVICE
            (14, DnsFailed), // EAI_OVERFLOW
        ];
        check(ErrnoFlavor::Darwin, &cases);
        // Android's bionic numbers its codes like the BSDs.
        check(ErrnoFlavor::Linux, &cases);
    }

    #[test]
    fn windows_numbering() {
        check(
            ErrnoFlavor::Windows,
            &[
                (11001, DnsNameNotResolved),
                (11002, DnsFailed),
                (11003, DnsFailed),
                (11004, DnsNameNotResolved),
                (-2, DnsFailed),
                (8, DnsFailed),
                (10022, DnsFailed), // WSAEINVAL, as EAI_BADFLAGS
            ],
        );
    }

    #[test]
    fn unknown_codes_fall_back_to_dns_failed() {
        for flavor in [ErrnoFlavor::Linux, ErrnoFlavor::Darwin, ErrnoFlavor::Windows] {
            for code in [0, -100, 100, i32::MIN, i32::MAX] {
                assert_eq!(getaddrinfo(flavor, code), DnsFailed, "{flavor:?} {code}");
            }
        }
    }

    /// The negative numbers are glibc's: checked against `libc`, so they cannot drift.
    /// (`libc` does not export glibc's `EAI_ADDRFAMILY`, -9, which needs `_GNU_SOURCE`.)
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn linux_numbers_match_libc() {
        fn libc_value(name: &str) -> Option<i32> {
            Some(match name {
                "EAI_NONAME" => libc::EAI_NONAME,
                "EAI_AGAIN" => libc::EAI_AGAIN,
                "EAI_FAIL" => libc::EAI_FAIL,
                "EAI_NODATA" => libc::EAI_NODATA,
                "EAI_MEMORY" => libc::EAI_MEMORY,
                "EAI_SYSTEM" => libc::EAI_SYSTEM,
                "EAI_ADDRFAMILY" => -9,
                _ => return None,
            })
        }
        for (code, name, _) in UNIX.iter().filter(|e| e.0 < 0) {
            assert_eq!(libc_value(name), Some(*code), "{name}");
        }
        check(
            ErrnoFlavor::Linux,
            &[
                (libc::EAI_NONAME, DnsNameNotResolved),
                (libc::EAI_NODATA, DnsNameNotResolved),
                (libc::EAI_AGAIN, DnsFailed),
                (libc::EAI_FAIL, DnsFailed),
                (libc::EAI_SYSTEM, DnsFailed),
                (libc::EAI_MEMORY, DnsFailed),
                (libc::EAI_BADFLAGS, DnsFailed),
                (libc::EAI_FAMILY, DnsFailed),
                (libc::EAI_SOCKTYPE, DnsFailed),
                (libc::EAI_SERVICE, DnsFailed),
                (libc::EAI_OVERFLOW, DnsFailed),
            ],
        );
    }

    proptest! {
        #[test]
        fn any_code_gives_a_dns_label(code in any::<i32>()) {
            for flavor in [ErrnoFlavor::Linux, ErrnoFlavor::Darwin, ErrnoFlavor::Windows] {
                let t = getaddrinfo(flavor, code);
                prop_assert!(round_trips(&t));
                prop_assert_eq!(t.phase(), Phase::Dns);
            }
        }
    }
}
