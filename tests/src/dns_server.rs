//! A small authoritative DNS server for fault injection: answers NXDOMAIN, SERVFAIL or nothing.
