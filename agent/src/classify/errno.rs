//! POSIX `errno`, Winsock and Win32 socket error numbers.

use super::{Entry, find, gai};
use crate::taxonomy::ErrorType;
use crate::taxonomy::ErrorType::{
    Abandoned, TcpAborted, TcpAddressInvalid, TcpAddressUnreachable, TcpClosed, TcpFailed,
    TcpRefused, TcpReset, TcpTimedOut,
};

/// Which platform's numbering an error code uses.
///
/// `errno` values differ between platforms (`ECONNREFUSED` is 111 on Linux, 61 on macOS and
/// the BSDs, `WSAECONNREFUSED` 10061 on Windows), so a code is only meaningful together with
/// its flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrnoFlavor {
    /// Linux and Android: the `asm-generic` numbering used on x86, ARM, RISC-V, PowerPC, s390x
    /// and LoongArch. (Linux on MIPS and SPARC numbers `errno` differently; [`super::io_error`]
    /// does not use raw codes there.)
    Linux,
    /// macOS, iOS and the other Apple OSes, and the BSDs (FreeBSD, NetBSD, OpenBSD, DragonFly),
    /// which share the 4.4BSD numbering of the socket errors.
    Darwin,
    /// Windows: Winsock `WSAE*` codes, the `WSAHOST_NOT_FOUND` family that Rust's standard
    /// library reports for failed lookups, and the Win32 `ERROR_*` codes that overlapped
    /// (IOCP) socket operations complete with.
    Windows,
}

impl ErrnoFlavor {
    /// The flavour of the platform this crate was compiled for: Windows on Windows, Darwin on
    /// Apple OSes and the BSDs, Linux everywhere else (including WebAssembly, where no `errno`
    /// exists).
    pub const NATIVE: ErrnoFlavor = if cfg!(windows) {
        ErrnoFlavor::Windows
    } else if cfg!(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly",
    )) {
        ErrnoFlavor::Darwin
    } else {
        ErrnoFlavor::Linux
    };

    /// The flavour whose table matches the raw codes in this platform's `std::io::Error`, or
    /// `None` where they are numbered differently (Linux on MIPS/SPARC, WASI, other OSes).
    pub(crate) const TRUSTED_NATIVE: Option<ErrnoFlavor> = if cfg!(windows)
        || cfg!(any(
            target_vendor = "apple",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly",
        ))
        || cfg!(all(
            any(target_os = "linux", target_os = "android"),
            not(any(
                target_arch = "mips",
                target_arch = "mips64",
                target_arch = "mips32r6",
                target_arch = "mips64r6",
                target_arch = "sparc",
                target_arch = "sparc64",
            )),
        )) {
        Some(ErrnoFlavor::NATIVE)
    } else {
        None
    };
}

/// Classifies an `errno` (or, for [`ErrnoFlavor::Windows`], a Winsock/Win32 error) number.
///
/// Routing failures (`ENETUNREACH`, `EHOSTUNREACH`, `ENETDOWN`, `EHOSTDOWN`) are
/// [`ErrorType::TcpAddressUnreachable`]. Decisions for ambiguous codes:
///
/// - `EACCES`/`EPERM`: [`ErrorType::TcpFailed`]. A local firewall or a `prohibit` route
///   refused the packet; that is client policy, not the path.
/// - `EINVAL` on Linux: [`ErrorType::TcpAddressUnreachable`], because Linux fails `connect()`
///   with `EINVAL` over a `blackhole` route. On Darwin and Windows it is `TcpFailed`.
/// - `EAFNOSUPPORT`: [`ErrorType::TcpAddressUnreachable`] (no route for that address family,
///   e.g. an IPv6 address on an IPv4-only host), as Chromium does.
/// - `ECANCELED` (Linux; the BSDs disagree on its number) and `WSAECANCELLED`:
///   [`ErrorType::Abandoned`].
/// - Windows `WSAHOST_NOT_FOUND` .. `WSANO_DATA` (11001–11004): the DNS types of
///   [`super::getaddrinfo`], since Rust's standard library reports failed lookups on Windows
///   as these raw OS errors.
///
/// Any other code, including 0, gives the documented fallback [`ErrorType::TcpFailed`].
pub fn errno(flavor: ErrnoFlavor, code: i32) -> ErrorType {
    lookup(flavor, code).map_or(TcpFailed, |entry| entry.2.clone())
}

/// The table row for `code`, if the flavour's table has one.
pub(crate) fn lookup(flavor: ErrnoFlavor, code: i32) -> Option<&'static Entry<i32>> {
    match flavor {
        ErrnoFlavor::Linux => find(LINUX, code),
        ErrnoFlavor::Darwin => find(DARWIN, code),
        ErrnoFlavor::Windows => find(WINDOWS, code).or_else(|| gai::lookup(flavor, code)),
    }
}

/// Linux `asm-generic/errno.h` (checked against `libc` in the tests).
static LINUX: &[Entry<i32>] = &[
    (1, "EPERM", TcpFailed),
    (13, "EACCES", TcpFailed),
    (22, "EINVAL", TcpAddressUnreachable),
    (32, "EPIPE", TcpClosed),
    (64, "ENONET", TcpAddressUnreachable),
    (97, "EAFNOSUPPORT", TcpAddressUnreachable),
    (99, "EADDRNOTAVAIL", TcpAddressInvalid),
    (100, "ENETDOWN", TcpAddressUnreachable),
    (101, "ENETUNREACH", TcpAddressUnreachable),
    (102, "ENETRESET", TcpReset),
    (103, "ECONNABORTED", TcpAborted),
    (104, "ECONNRESET", TcpReset),
    (107, "ENOTCONN", TcpClosed),
    (108, "ESHUTDOWN", TcpClosed),
    (110, "ETIMEDOUT", TcpTimedOut),
    (111, "ECONNREFUSED", TcpRefused),
    (112, "EHOSTDOWN", TcpAddressUnreachable),
    (113, "EHOSTUNREACH", TcpAddressUnreachable),
    (125, "ECANCELED", Abandoned),
];

/// Darwin `sys/errno.h`; the socket errors (35–65) are the 4.4BSD numbers shared by the BSDs.
static DARWIN: &[Entry<i32>] = &[
    (1, "EPERM", TcpFailed),
    (13, "EACCES", TcpFailed),
    (22, "EINVAL", TcpFailed),
    (32, "EPIPE", TcpClosed),
    (47, "EAFNOSUPPORT", TcpAddressUnreachable),
    (49, "EADDRNOTAVAIL", TcpAddressInvalid),
    (50, "ENETDOWN", TcpAddressUnreachable),
    (51, "ENETUNREACH", TcpAddressUnreachable),
    (52, "ENETRESET", TcpReset),
    (53, "ECONNABORTED", TcpAborted),
    (54, "ECONNRESET", TcpReset),
    (57, "ENOTCONN", TcpClosed),
    (58, "ESHUTDOWN", TcpClosed),
    (60, "ETIMEDOUT", TcpTimedOut),
    (61, "ECONNREFUSED", TcpRefused),
    (64, "EHOSTDOWN", TcpAddressUnreachable),
    (65, "EHOSTUNREACH", TcpAddressUnreachable),
];

/// Winsock `WSAE*` codes and the Win32 `ERROR_*` codes of overlapped socket I/O.
/// (`WSAHOST_NOT_FOUND` and friends come from the `getaddrinfo` table.)
static WINDOWS: &[Entry<i32>] = &[
    (64, "ERROR_NETNAME_DELETED", TcpReset),
    (109, "ERROR_BROKEN_PIPE", TcpClosed),
    (121, "ERROR_SEM_TIMEOUT", TcpTimedOut),
    (258, "WAIT_TIMEOUT", TcpTimedOut),
    (1225, "ERROR_CONNECTION_REFUSED", TcpRefused),
    (1226, "ERROR_GRACEFUL_DISCONNECT", TcpClosed),
    (1231, "ERROR_NETWORK_UNREACHABLE", TcpAddressUnreachable),
    (1232, "ERROR_HOST_UNREACHABLE", TcpAddressUnreachable),
    (1234, "ERROR_PORT_UNREACHABLE", TcpRefused),
    (1236, "ERROR_CONNECTION_ABORTED", TcpAborted),
    (1460, "ERROR_TIMEOUT", TcpTimedOut),
    (10013, "WSAEACCES", TcpFailed),
    (10022, "WSAEINVAL", TcpFailed),
    (10047, "WSAEAFNOSUPPORT", TcpAddressUnreachable),
    (10049, "WSAEADDRNOTAVAIL", TcpAddressInvalid),
    (10050, "WSAENETDOWN", TcpAddressUnreachable),
    (10051, "WSAENETUNREACH", TcpAddressUnreachable),
    (10052, "WSAENETRESET", TcpReset),
    (10053, "WSAECONNABORTED", TcpAborted),
    (10054, "WSAECONNRESET", TcpReset),
    (10057, "WSAENOTCONN", TcpClosed),
    (10058, "WSAESHUTDOWN", TcpClosed),
    (10060, "WSAETIMEDOUT", TcpTimedOut),
    (10061, "WSAECONNREFUSED", TcpRefused),
    (10064, "WSAEHOSTDOWN", TcpAddressUnreachable),
    (10065, "WSAEHOSTUNREACH", TcpAddressUnreachable),
    (10101, "WSAEDISCON", TcpClosed),
    (10103, "WSAECANCELLED", Abandoned),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::testutil::{assert_unique_codes, round_trips};
    use crate::taxonomy::{ErrorType::*, Phase};
    use proptest::prelude::*;

    fn check(flavor: ErrnoFlavor, cases: &[(i32, ErrorType)]) {
        for (code, expected) in cases {
            assert_eq!(&errno(flavor, *code), expected, "{flavor:?} {code}");
        }
    }

    #[test]
    fn tables_have_unique_codes() {
        assert_unique_codes(LINUX);
        assert_unique_codes(DARWIN);
        assert_unique_codes(WINDOWS);
    }

    #[test]
    fn linux_table() {
        check(
            ErrnoFlavor::Linux,
            &[
                (111, TcpRefused),
                (104, TcpReset),
                (102, TcpReset),
                (110, TcpTimedOut),
                (101, TcpAddressUnreachable),
                (113, TcpAddressUnreachable),
                (100, TcpAddressUnreachable),
                (112, TcpAddressUnreachable),
                (64, TcpAddressUnreachable),
                (97, TcpAddressUnreachable),
                (22, TcpAddressUnreachable),
                (99, TcpAddressInvalid),
                (103, TcpAborted),
                (32, TcpClosed),
                (107, TcpClosed),
                (108, TcpClosed),
                (13, TcpFailed),
                (1, TcpFailed),
                (125, Abandoned),
            ],
        );
    }

    #[test]
    fn darwin_table() {
        check(
            ErrnoFlavor::Darwin,
            &[
                (61, TcpRefused),
                (54, TcpReset),
                (52, TcpReset),
                (60, TcpTimedOut),
                (51, TcpAddressUnreachable),
                (65, TcpAddressUnreachable),
                (50, TcpAddressUnreachable),
                (64, TcpAddressUnreachable),
                (47, TcpAddressUnreachable),
                (49, TcpAddressInvalid),
                (53, TcpAborted),
                (32, TcpClosed),
                (57, TcpClosed),
                (58, TcpClosed),
                (13, TcpFailed),
                (1, TcpFailed),
                (22, TcpFailed),
            ],
        );
    }

    #[test]
    fn windows_table() {
        check(
            ErrnoFlavor::Windows,
            &[
                (10061, TcpRefused),
                (10054, TcpReset),
                (10052, TcpReset),
                (10060, TcpTimedOut),
                (10051, TcpAddressUnreachable),
                (10065, TcpAddressUnreachable),
                (10050, TcpAddressUnreachable),
                (10064, TcpAddressUnreachable),
                (10047, TcpAddressUnreachable),
                (10049, TcpAddressInvalid),
                (10053, TcpAborted),
                (10057, TcpClosed),
                (10058, TcpClosed),
                (10101, TcpClosed),
                (10013, TcpFailed),
                (10022, TcpFailed),
                (10103, Abandoned),
                (64, TcpReset),
                (109, TcpClosed),
                (121, TcpTimedOut),
                (258, TcpTimedOut),
                (1460, TcpTimedOut),
                (1225, TcpRefused),
                (1234, TcpRefused),
                (1226, TcpClosed),
                (1231, TcpAddressUnreachable),
                (1232, TcpAddressUnreachable),
                (1236, TcpAborted),
                (11001, DnsNameNotResolved),
                (11002, DnsFailed),
                (11003, DnsFailed),
                (11004, DnsNameNotResolved),
            ],
        );
    }

    #[test]
    fn flavors_do_not_share_numbers() {
        // 111 is ECONNREFUSED on Linux only; 61 on Darwin only.
        assert_eq!(errno(ErrnoFlavor::Darwin, 111), TcpFailed);
        assert_eq!(errno(ErrnoFlavor::Linux, 61), TcpFailed); // ENODATA
        assert_eq!(errno(ErrnoFlavor::Linux, 11001), TcpFailed);
        assert_eq!(errno(ErrnoFlavor::Windows, 111), TcpFailed);
    }

    #[test]
    fn unknown_codes_fall_back_to_tcp_failed() {
        for flavor in [ErrnoFlavor::Linux, ErrnoFlavor::Darwin, ErrnoFlavor::Windows] {
            for code in [0, -1, 2, 11, 115, 9999, i32::MIN, i32::MAX] {
                assert_eq!(errno(flavor, code), TcpFailed, "{flavor:?} {code}");
            }
        }
    }

    #[test]
    fn native_flavor_matches_the_target() {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert_eq!(ErrnoFlavor::NATIVE, ErrnoFlavor::Linux);
        #[cfg(target_vendor = "apple")]
        assert_eq!(ErrnoFlavor::NATIVE, ErrnoFlavor::Darwin);
        #[cfg(windows)]
        assert_eq!(ErrnoFlavor::NATIVE, ErrnoFlavor::Windows);
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        assert_eq!(ErrnoFlavor::TRUSTED_NATIVE, Some(ErrnoFlavor::Linux));
    }

    /// The Linux table's numbers are the real platform's: every row's name is looked up in
    /// `libc`, so a typo or a drift fails here rather than in the field.
    #[cfg(target_os = "linux")]
    #[test]
    fn linux_numbers_match_libc() {
        fn libc_value(name: &str) -> Option<i32> {
            Some(match name {
                "EPERM" => libc::EPERM,
                "EACCES" => libc::EACCES,
                "EINVAL" => libc::EINVAL,
                "EPIPE" => libc::EPIPE,
                "ENONET" => libc::ENONET,
                "EAFNOSUPPORT" => libc::EAFNOSUPPORT,
                "EADDRNOTAVAIL" => libc::EADDRNOTAVAIL,
                "ENETDOWN" => libc::ENETDOWN,
                "ENETUNREACH" => libc::ENETUNREACH,
                "ENETRESET" => libc::ENETRESET,
                "ECONNABORTED" => libc::ECONNABORTED,
                "ECONNRESET" => libc::ECONNRESET,
                "ENOTCONN" => libc::ENOTCONN,
                "ESHUTDOWN" => libc::ESHUTDOWN,
                "ETIMEDOUT" => libc::ETIMEDOUT,
                "ECONNREFUSED" => libc::ECONNREFUSED,
                "EHOSTDOWN" => libc::EHOSTDOWN,
                "EHOSTUNREACH" => libc::EHOSTUNREACH,
                "ECANCELED" => libc::ECANCELED,
                _ => return None,
            })
        }
        for (code, name, _) in LINUX {
            assert_eq!(libc_value(name), Some(*code), "{name}");
        }
        // And the mappings the design names, spelled with libc's constants.
        check(
            ErrnoFlavor::Linux,
            &[
                (libc::ECONNREFUSED, TcpRefused),
                (libc::ECONNRESET, TcpReset),
                (libc::ETIMEDOUT, TcpTimedOut),
                (libc::ENETUNREACH, TcpAddressUnreachable),
                (libc::EHOSTUNREACH, TcpAddressUnreachable),
                (libc::ENETDOWN, TcpAddressUnreachable),
                (libc::EHOSTDOWN, TcpAddressUnreachable),
                (libc::EADDRNOTAVAIL, TcpAddressInvalid),
                (libc::ECONNABORTED, TcpAborted),
                (libc::EPIPE, TcpClosed),
                (libc::ENOTCONN, TcpClosed),
                (libc::EACCES, TcpFailed),
                (libc::EPERM, TcpFailed),
                (libc::EINVAL, TcpAddressUnreachable),
                (libc::ENETRESET, TcpReset),
                (libc::EAGAIN, TcpFailed),
                (libc::EINPROGRESS, TcpFailed),
            ],
        );
    }

    proptest! {
        #[test]
        fn any_code_gives_a_connection_label(code in any::<i32>()) {
            for flavor in [ErrnoFlavor::Linux, ErrnoFlavor::Darwin, ErrnoFlavor::Windows] {
                let t = errno(flavor, code);
                prop_assert!(round_trips(&t));
                // Transport errors stay in the connection phase; the exceptions are
                // cancellation and the Windows lookup codes.
                prop_assert!(
                    t.phase() == Phase::Connection || t == Abandoned || t.is_dns(),
                    "{flavor:?} {code} -> {t}"
                );
                prop_assert_eq!(lookup(flavor, code).map(|e| e.0), lookup(flavor, code).map(|_| code));
            }
        }
    }
}
