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
//! - Also errors: no service, no collector, or the same collector URL twice.
//!
//! IP-literal collector URLs (tests, fixed deployments) have no registrable domain and are only
//! compared by prefix. [`Agent::builder`](super::Agent::builder) runs this at build time; the
//! CLI can run it on a file.

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

/// The registrable domain of `host` (None for IP addresses and names without one).
pub fn registrable_domain(host: &str) -> Option<String> {
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    psl::domain_str(host).map(str::to_ascii_lowercase)
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
    let mut service_domains = BTreeMap::new();
    for (i, s) in config.services.iter().enumerate() {
        for (j, h) in s.hosts.iter().enumerate() {
            if let Some(d) = registrable_domain(h.as_str()) {
                service_domains.entry(d).or_insert(format!("services[{i}].hosts[{j}]"));
            }
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
                        "registrable domain {d} is also the domain of {service_field}: a collector \
                         must live in another failure domain than the services it watches"
                    ),
                ));
            }
            if let Some(first) = domains.insert(d.clone(), i) {
                warnings.push(ConfigWarning {
                    field: field.clone(),
                    message: format!("shares registrable domain {d} with collectors[{first}]"),
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
}
