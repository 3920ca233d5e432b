//! Failure-domain checks of a configuration: collectors must not share a failure domain with
//! the services they watch, and should not share one with each other.
//!
//! - **Error**: a collector's registrable domain (eTLD+1, from the public suffix list) is the
//!   registrable domain of a monitored service's host. An outage of that domain (its DNS, its
//!   registrar, its CDN account) would take out the service and the place that should report
//!   it at once.
//! - **Warnings**: two collectors share a registrable domain, a /24 (IPv4) or /48 (IPv6) among
//!   their fixed addresses or IP-literal hosts, or a declared ASN; no collector has fixed
//!   addresses (then a DNS outage hides every collector).
//! - Also errors: no service, no collector, or the same collector URL twice; and, in a build
//!   without the `hickory-dns` feature (the C library's), any `dns_servers`, which only that
//!   feature can use (refused, never silently ignored).
//!
//! IP-literal collector URLs (tests, fixed deployments) have no registrable domain and are only
//! compared by prefix.
//!
//! Registrable domains come from the public suffix list with the `psl` feature (part of
//! `native`). Without it (the C library's build) they are approximated: the last two labels of
//! the host, or three when the last two are one of a built-in list of common multi-label public
//! suffixes ([`MULTI_LABEL_SUFFIXES`]: `co.uk`, `com.au`, `co.jp`, ...). The approximation
//! never misses a shared domain (a registrable domain is never shorter than its public suffix
//! plus one label, so it never takes more labels than the real one) but may see one where there
//! is none: two sites under a public suffix outside the list (`a.github.io` and `b.github.io`
//! are both read as `github.io`, `x.appspot.com` and `y.appspot.com` as `appspot.com`) are
//! taken for one domain. Errors and warnings then say that the domain is approximate.
//!
//! [`Agent::builder`](super::Agent::builder) runs this at build time; the CLI can run it on a
//! file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use super::config::{AgentConfig, ConfigError};

/// Something in a config that weakens failure-domain separation without being wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The field it is about (`collectors[1].url`).
    pub field: String,
    /// What is weak.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The registrable domain of `host` (None for IP addresses and names without one), from the
/// public suffix list.
#[cfg(feature = "psl")]
pub fn registrable_domain(host: &str) -> Option<String> {
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    psl::domain_str(host).map(str::to_ascii_lowercase)
}

/// The registrable domain of `host` (None for IP addresses and names without one),
/// approximated without the public suffix list (this build has no `psl` feature): the last
/// two labels, or three when the last two are in [`MULTI_LABEL_SUFFIXES`]. See the module
/// docs for what that misses.
#[cfg(not(feature = "psl"))]
pub fn registrable_domain(host: &str) -> Option<String> {
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = host.rsplit('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return None;
    }
    let suffix_labels = match labels.as_slice() {
        [tld, second, ..] if MULTI_LABEL_SUFFIXES.contains(&format!("{second}.{tld}").as_str()) => {
            2
        }
        _ => 1,
    };
    if labels.len() <= suffix_labels {
        return None;
    }
    let mut domain: Vec<&str> = labels[..=suffix_labels].to_vec();
    domain.reverse();
    Some(domain.join("."))
}

/// Whether this build can use custom `dns_servers` (feature `hickory-dns`); without it
/// [`validate`] refuses them.
pub const DNS_SERVERS_SUPPORTED: bool = cfg!(feature = "hickory-dns");

/// Whether [`registrable_domain`] is exact (from the public suffix list, feature `psl`) or
/// approximated (see the module docs).
pub const REGISTRABLE_DOMAIN_IS_EXACT: bool = cfg!(feature = "psl");

/// Common two-label public suffixes (ICANN section of the public suffix list) that the
/// approximation without the `psl` feature recognises. Not exhaustive: see the module docs.
pub const MULTI_LABEL_SUFFIXES: &[&str] = &[
    "ac.in", "ac.jp", "ac.kr", "ac.nz", "ac.uk", "ac.za", "co.at", "co.id", "co.il", "co.in",
    "co.jp", "co.ke", "co.kr", "co.nz", "co.th", "co.uk", "co.za", "com.ar", "com.au", "com.br",
    "com.cn", "com.co", "com.eg", "com.hk", "com.mx", "com.my", "com.ng", "com.pe", "com.ph",
    "com.pk", "com.sa", "com.sg", "com.tr", "com.tw", "com.ua", "com.vn", "edu.au", "edu.cn",
    "go.jp", "gov.au", "gov.br", "gov.cn", "gov.in", "gov.uk", "gov.za", "ne.jp", "net.au",
    "net.br", "net.cn", "net.in", "net.nz", "or.at", "or.jp", "or.kr", "org.au", "org.br",
    "org.cn", "org.in", "org.mx", "org.nz", "org.uk", "org.za", "plc.uk", "ltd.uk", "me.uk",
];

/// How a registrable domain is named in errors and warnings: with a note when approximate.
fn domain_text(domain: &str) -> String {
    if REGISTRABLE_DOMAIN_IS_EXACT {
        domain.to_owned()
    } else {
        format!("{domain} (approximate: this build has no public suffix list)")
    }
}

fn prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// Checks `config`: `Err` for what must not be deployed, otherwise the warnings.
pub fn validate(config: &AgentConfig) -> Result<Vec<ConfigWarning>, ConfigError> {
    if config.services.is_empty() {
        return Err(ConfigError::invalid("services", "at least one service is required"));
    }
    if config.collectors.is_empty() {
        return Err(ConfigError::invalid("collectors", "at least one collector is required"));
    }
    #[cfg(not(feature = "hickory-dns"))]
    if !config.dns_servers.is_empty() {
        return Err(ConfigError::invalid(
            "dns_servers",
            "custom DNS servers need the agent's `hickory-dns` feature, which this build (the C \
             library's) leaves out: remove the field to resolve collectors with the system \
             resolver",
        ));
    }
    let mut service_domains = BTreeMap::new();
    for (i, s) in config.services.iter().enumerate() {
        for (j, h) in s.hosts.iter().enumerate() {
            if let Some(d) = registrable_domain(h.as_str()) {
                service_domains.entry(d).or_insert(format!("services[{i}].hosts[{j}]"));
            }
        }
        for h in &s.host_suffixes {
            if let Some(d) = registrable_domain(h.as_str()) {
                service_domains.entry(d).or_insert(format!("services[{i}].hosts (\"*.{h}\")"));
            }
        }
    }
    if let Some(id) = &config.unmapped_service {
        if !config.services.iter().any(|s| &s.id == id) {
            return Err(ConfigError::invalid(
                "capture.unmapped_service",
                format!("{id:?} is not the id of a configured service"),
            ));
        }
    }
    let mut warnings = Vec::new();
    let mut domains: BTreeMap<String, usize> = BTreeMap::new();
    let mut prefixes: BTreeMap<String, usize> = BTreeMap::new();
    let mut asns: BTreeMap<u32, usize> = BTreeMap::new();
    let mut urls: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in config.collectors.iter().enumerate() {
        let field = format!("collectors[{i}].url");
        if let Some(first) = urls.insert(c.url(), i) {
            return Err(ConfigError::invalid(
                field,
                format!("the same URL as collectors[{first}]"),
            ));
        }
        let domain = registrable_domain(c.host().as_str());
        if let Some(d) = &domain {
            if let Some(service_field) = service_domains.get(d) {
                return Err(ConfigError::invalid(
                    field,
                    format!(
                        "registrable domain {} is also the domain of {service_field}: a \
                         collector must live in another failure domain than the services it \
                         watches",
                        domain_text(d)
                    ),
                ));
            }
            if let Some(first) = domains.insert(d.clone(), i) {
                warnings.push(ConfigWarning {
                    field: field.clone(),
                    message: format!(
                        "shares registrable domain {} with collectors[{first}]",
                        domain_text(d)
                    ),
                });
            }
        }
        let mut ips: Vec<IpAddr> = c.fixed_addrs.iter().map(|a| a.ip()).collect();
        if let Ok(ip) = c.host().as_str().parse::<IpAddr>() {
            ips.push(ip);
        }
        let mut own: Vec<String> = ips.into_iter().map(prefix).collect();
        own.sort();
        own.dedup();
        for p in own {
            if let Some(first) = prefixes.insert(p.clone(), i) {
                warnings.push(ConfigWarning {
                    field: format!("collectors[{i}].fixed_addrs"),
                    message: format!("shares the address prefix {p} with collectors[{first}]"),
                });
            }
        }
        if let Some(asn) = c.asn {
            if let Some(first) = asns.insert(asn, i) {
                warnings.push(ConfigWarning {
                    field: format!("collectors[{i}].asn"),
                    message: format!("shares AS{asn} with collectors[{first}]"),
                });
            }
        }
    }
    if config.collectors.iter().all(|c| c.fixed_addrs.is_empty()) {
        warnings.push(ConfigWarning {
            field: "collectors".into(),
            message: "no collector has fixed_addrs: a DNS outage would hide every collector".into(),
        });
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_domains() {
        assert_eq!(registrable_domain("api.example.com").as_deref(), Some("example.com"));
        assert_eq!(registrable_domain("a.b.example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(registrable_domain("127.0.0.1"), None);
        assert_eq!(registrable_domain("::1"), None);
    }

    fn config(services: &[&str], collectors: &[&str], extra: &str) -> AgentConfig {
        let hosts: Vec<String> = services.iter().map(|h| format!("{h:?}")).collect();
        let mut text = format!(
            "data_dir = \"/nonexistent\"\n\
             collector_key = \"4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a\"\n\
             {extra}\n\
             [app]\nid = \"app\"\nversion = \"1\"\nplatform = \"linux\"\n\
             [[services]]\nid = \"checkout\"\nhosts = [{}]\n",
            hosts.join(", ")
        );
        for c in collectors {
            text.push_str(&format!("[[collectors]]\nurl = \"https://{c}\"\n"));
        }
        AgentConfig::from_toml_str(&text).unwrap()
    }

    #[test]
    fn wildcard_hosts_count_for_the_domain_rule_and_unmapped_must_be_a_service() {
        let err = validate(&config(&["*.example.com"], &["c.example.com"], "")).unwrap_err();
        assert_eq!(err.field(), Some("collectors[0].url"), "{err}");
        let err = validate(&config(
            &["api.example.com"],
            &["c.other.net"],
            "[capture]\nunmapped_service = \"nope\"",
        ))
        .unwrap_err();
        assert_eq!(err.field(), Some("capture.unmapped_service"), "{err}");
        let ok = config(
            &["api.example.com"],
            &["c.other.net"],
            "[capture]\nunmapped_service = \"checkout\"",
        );
        assert!(validate(&ok).is_ok());
    }

    #[test]
    fn a_collector_in_the_services_domain_is_refused() {
        let err = validate(&config(&["api.example.co.uk"], &["c.example.co.uk"], "")).unwrap_err();
        assert_eq!(err.field(), Some("collectors[0].url"));
        let text = err.to_string();
        assert!(text.contains("example.co.uk"), "{text}");
        assert_eq!(text.contains("approximate"), !REGISTRABLE_DOMAIN_IS_EXACT, "{text}");
        // Another registrable domain under the same public suffix is fine.
        let warnings = validate(&config(&["api.example.co.uk"], &["c.other.co.uk"], "")).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}"); // only: no fixed_addrs
        assert_eq!(warnings[0].field, "collectors");
    }

    #[test]
    fn dns_servers_need_the_hickory_feature() {
        let c = config(&["api.example.com"], &["c.other.net"], "dns_servers = [\"127.0.0.1:53\"]");
        let result = validate(&c);
        if DNS_SERVERS_SUPPORTED {
            assert!(result.is_ok(), "{result:?}");
        } else {
            let err = result.unwrap_err();
            assert_eq!(err.field(), Some("dns_servers"));
            assert!(err.to_string().contains("hickory-dns"), "{err}");
        }
    }

    /// The approximation against the real list: every built-in suffix is a public suffix, and
    /// the approximate domain is the real one or a label-wise suffix of it (never longer), so
    /// it can only see a shared domain where there is none, never miss one.
    #[cfg(not(feature = "psl"))]
    #[test]
    fn the_approximation_never_takes_more_labels_than_the_public_suffix_list() {
        for suffix in MULTI_LABEL_SUFFIXES {
            assert_eq!(psl::suffix_str(suffix), Some(*suffix), "{suffix}");
            assert_eq!(registrable_domain(suffix), None, "{suffix}");
        }
        let hosts = [
            "example.com",
            "api.example.com",
            "a.b.c.example.org",
            "www.example.co.uk",
            "shop.example.com.au",
            "x.example.co.jp",
            "a.github.io",
            "b.example.com.ua",
            "x.appspot.com",
            "deep.a.b.example.pvt.k12.ma.us",
            "svc.example.ck",
            "localhost",
            "Example.COM.",
        ];
        for host in hosts {
            let approx = registrable_domain(host);
            let exact = psl::domain_str(host.trim_end_matches('.')).map(str::to_ascii_lowercase);
            match (&approx, &exact) {
                (Some(a), Some(e)) => {
                    assert!(e == a || e.ends_with(&format!(".{a}")), "{host}: {a} vs {e}")
                }
                (None, None) => {}
                // Only when the real suffix is longer than the two labels kept.
                (None, Some(e)) => panic!("{host}: no approximate domain, real {e}"),
                (Some(_), None) => {}
            }
        }
        assert_eq!(registrable_domain("www.example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(registrable_domain("a.github.io").as_deref(), Some("github.io"));
        assert_eq!(registrable_domain("Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(registrable_domain("localhost"), None);
    }
}
