#![allow(clippy::unwrap_used)]
//! The native agent's configuration: TOML parsing with errors that name the field, and the
//! failure-domain rules (registrable domain, /24, ASN, fixed addresses).

use vantage_agent::native::{Agent, AgentConfig, AgentError, ConfigError, validate};

const KEY: &str = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a";

fn base(collectors: &str) -> String {
    format!(
        r#"
data_dir = "/tmp/vantage-config-test-never-created"
collector_key = "{KEY}"

[app]
id = "com.example.shop"
version = "4.2.0"
platform = "linux"

[[services]]
id = "checkout"
hosts = ["api.example.com", "https://pay.example.org/v1"]

{collectors}
"#
    )
}

const TWO_GOOD: &str = r#"
[[collectors]]
url = "https://vantage-a.example.net"
fixed_addrs = ["192.0.2.10:443"]
asn = 64500

[[collectors]]
url = "https://vantage-b.example-other.io:8443"
fixed_addrs = ["198.51.100.7:8443"]
asn = 64501
"#;

#[test]
fn a_good_config_parses_and_has_no_warnings() {
    let c = AgentConfig::from_toml_str(&base(TWO_GOOD)).unwrap();
    assert_eq!(c.collectors.len(), 2);
    assert_eq!(c.collectors[1].port(), 8443);
    assert_eq!(c.collectors[1].host().as_str(), "vantage-b.example-other.io");
    assert_eq!(c.collectors[0].envelopes_path(), "/v1/envelopes");
    assert_eq!(c.services[0].hosts[1].as_str(), "pay.example.org");
    assert_eq!(c.app.sdk(), vantage_agent::native::config::DEFAULT_SDK);
    assert_eq!(c.limits.max_bytes, 1024 * 1024, "documented default");
    assert_eq!(c.report_interval, Some(std::time::Duration::from_secs(30)), "documented default");
    let tuned = format!(
        "{}\n[sampling]\nsuccess_fraction = 0.5\nreport_interval_secs = 15\n",
        base(TWO_GOOD)
    );
    let tuned = AgentConfig::from_toml_str(&tuned).unwrap();
    assert_eq!(tuned.report_interval, Some(std::time::Duration::from_secs(15)));
    assert_eq!(validate(&c).unwrap(), []);
}

#[test]
fn each_invalid_field_is_named() {
    let cases: &[(&str, &str, &str)] = &[
        // (what to replace in the good config, replacement, field the error must name)
        ("https://vantage-a.example.net", "http://vantage-a.example.net", "collectors[0].url"),
        ("https://vantage-b.example-other.io:8443", "https://vantage b.io", "collectors[1].url"),
        (
            "https://vantage-b.example-other.io:8443",
            "https://user@b.example.io",
            "collectors[1].url",
        ),
        (
            "https://vantage-b.example-other.io:8443",
            "https://b.example.io:99999",
            "collectors[1].url",
        ),
        ("198.51.100.7:8443", "198.51.100.7", "collectors[1].fixed_addrs[0]"),
        (KEY, "abcd", "collector_key"),
        (r#"id = "checkout""#, r#"id = "check out""#, "services[0].id"),
        (r#""api.example.com""#, r#""bad host..com""#, "services[0].hosts[0]"),
        (r#"version = "4.2.0""#, r#"version = """#, "app.version"),
        (r#"platform = "linux""#, "platform = \"li\\nnux\"", "app.platform"),
        (r#"data_dir = "/tmp/vantage-config-test-never-created""#, r#"data_dir = """#, "data_dir"),
    ];
    for (from, to, field) in cases {
        let text = base(TWO_GOOD).replacen(from, to, 1);
        assert_ne!(text, base(TWO_GOOD), "the case {field} changed nothing");
        let err = AgentConfig::from_toml_str(&text).unwrap_err();
        assert_eq!(err.field(), Some(*field), "{err}");
        assert!(err.to_string().starts_with(field), "{err}");
    }
}

#[test]
fn tuning_errors_name_their_table_and_field() {
    let cases: &[(&str, &str)] = &[
        ("[buffer]\nmax_bytes = 0", "buffer.max_bytes"),
        ("[buffer]\nmax_age_secs = 0", "buffer.max_age_secs"),
        ("[delivery]\nmax_in_flight = 0", "delivery.max_in_flight"),
        ("[delivery]\nmax_per_second = 0", "delivery.max_per_second"),
        ("[delivery]\nbase_backoff_ms = 5000\nmax_backoff_ms = 10", "delivery.max_backoff_ms"),
        ("[delivery]\nrequest_timeout_ms = 0", "delivery.request_timeout_ms"),
        ("[sampling]\nfailure_fraction = 1.5", "sampling.failure_fraction"),
        ("[sampling]\nsuccess_fraction = -0.1", "sampling.success_fraction"),
        ("[scope]\ninterval_secs = 0", "scope.interval_secs"),
        ("[sampling]\nreport_interval_secs = 0", "sampling.report_interval_secs"),
    ];
    for (extra, field) in cases {
        let text = format!("{}\n{extra}\n", base(TWO_GOOD));
        let err = AgentConfig::from_toml_str(&text).unwrap_err();
        assert_eq!(err.field(), Some(*field), "{err}");
    }
    let text = base(TWO_GOOD).replacen("[app]", "dns_servers = [\"nonsense\"]\n\n[app]", 1);
    assert_eq!(AgentConfig::from_toml_str(&text).unwrap_err().field(), Some("dns_servers[0]"));
    let text =
        base(TWO_GOOD).replacen("[app]", "extra_ca_files = [\"/nonexistent/ca.pem\"]\n\n[app]", 1);
    assert_eq!(AgentConfig::from_toml_str(&text).unwrap_err().field(), Some("extra_ca_files[0]"));
}

#[test]
fn schema_errors_name_the_key() {
    let cases: &[(String, &str)] = &[
        (format!("{}\n[buffer]\nmax_bytez = 5\n", base(TWO_GOOD)), "max_bytez"),
        (base(TWO_GOOD).replacen("asn = 64500", "asn = 64500\nasm = 1", 1), "asm"),
        (format!("{}\n[delivery]\nmax_in_flight = \"many\"\n", base(TWO_GOOD)), "max_in_flight"),
        (base(TWO_GOOD).replacen("collector_key", "collector_kee", 1), "collector_key"),
        (base(TWO_GOOD).replacen("[app]", "[app]\ncolour = 1", 1), "colour"),
    ];
    for (text, key) in cases {
        let err = AgentConfig::from_toml_str(text).unwrap_err();
        assert!(matches!(err, ConfigError::Toml(_)), "{err:?}");
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

#[test]
fn a_collector_in_a_monitored_services_domain_is_refused() {
    for (url, service_field) in [
        ("https://vantage.example.com", "services[0].hosts[0]"),
        ("https://reports.pay.example.org", "services[0].hosts[1]"),
        ("https://EXAMPLE.com", "services[0].hosts[0]"),
    ] {
        let collectors =
            format!("[[collectors]]\nurl = \"{url}\"\nfixed_addrs = [\"192.0.2.1:443\"]\n");
        let c = AgentConfig::from_toml_str(&base(&collectors)).unwrap();
        let err = validate(&c).unwrap_err();
        assert_eq!(err.field(), Some("collectors[0].url"), "{err}");
        assert!(err.to_string().contains(service_field), "{err}");
    }
    // A different registrable domain under the same public suffix is fine.
    let ok = "[[collectors]]\nurl = \"https://example-reports.com\"\nfixed_addrs = [\"192.0.2.1:443\"]\n";
    assert!(validate(&AgentConfig::from_toml_str(&base(ok)).unwrap()).is_ok());
    // The builder runs the same check.
    let c = AgentConfig::from_toml_str(&base("[[collectors]]\nurl = \"https://v.example.com\"\n"))
        .unwrap();
    let err = Agent::start(c, None).unwrap_err();
    assert!(
        matches!(err, AgentError::Config(ref e) if e.field() == Some("collectors[0].url")),
        "{err}"
    );
}

#[test]
fn shared_failure_domains_are_warned_about() {
    let collectors = r#"
[[collectors]]
url = "https://a.vantage-reports.net"
fixed_addrs = ["192.0.2.10:443"]
asn = 64500

[[collectors]]
url = "https://b.vantage-reports.net"
fixed_addrs = ["192.0.2.200:443"]
asn = 64500

[[collectors]]
url = "https://198.51.100.9"
"#;
    let c = AgentConfig::from_toml_str(&base(collectors)).unwrap();
    let warnings = validate(&c).unwrap();
    let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 3, "{text:#?}");
    assert!(
        text[0].starts_with(
            "collectors[1].url: shares registrable domain vantage-reports.net with collectors[0]"
        ),
        "{text:#?}"
    );
    assert!(
        text[1].starts_with("collectors[1].fixed_addrs: shares the address prefix 192.0.2.0/24"),
        "{text:#?}"
    );
    assert!(text[2].starts_with("collectors[1].asn: shares AS64500"), "{text:#?}");

    let none_fixed = "[[collectors]]\nurl = \"https://a.reports-one.net\"\n\n[[collectors]]\nurl = \"https://b.reports-two.org\"\n";
    let warnings = validate(&AgentConfig::from_toml_str(&base(none_fixed)).unwrap()).unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].field, "collectors");
    assert!(warnings[0].message.contains("no collector has fixed_addrs"));

    // IP-literal collectors (tests) are allowed, compared by prefix only.
    let ips = "[[collectors]]\nurl = \"https://127.0.0.1:9\"\n\n[[collectors]]\nurl = \"https://127.0.0.1:10\"\n";
    let warnings = validate(&AgentConfig::from_toml_str(&base(ips)).unwrap()).unwrap();
    assert!(warnings.iter().any(|w| w.message.contains("127.0.0.0/24")), "{warnings:?}");
}

#[test]
fn missing_services_or_collectors_are_errors() {
    let c = AgentConfig::from_toml_str(&base("")).unwrap();
    assert_eq!(validate(&c).unwrap_err().field(), Some("collectors"));
    let no_services = base(TWO_GOOD).replacen("[[services]]\nid = \"checkout\"\nhosts = [\"api.example.com\", \"https://pay.example.org/v1\"]", "", 1);
    let c = AgentConfig::from_toml_str(&no_services).unwrap();
    assert_eq!(validate(&c).unwrap_err().field(), Some("services"));
    let dup = "[[collectors]]\nurl = \"https://a.reports.net\"\n\n[[collectors]]\nurl = \"https://a.reports.net/\"\n";
    let c = AgentConfig::from_toml_str(&base(dup)).unwrap();
    assert_eq!(validate(&c).unwrap_err().field(), Some("collectors[1].url"));
}

#[test]
fn a_config_file_resolves_relative_paths_next_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = vantage_tests::tls::TestCa::new("config test CA");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    let text = base(TWO_GOOD).replacen(
        "data_dir = \"/tmp/vantage-config-test-never-created\"",
        "data_dir = \"state\"\nextra_ca_files = [\"ca.pem\"]",
        1,
    );
    let path = dir.path().join("vantage.toml");
    std::fs::write(&path, text).unwrap();
    let c = AgentConfig::from_toml_file(&path).unwrap();
    assert_eq!(c.data_dir, dir.path().join("state"));
    assert_eq!(c.extra_roots, vec![ca.cert_der()]);
    let err = AgentConfig::from_toml_file(dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}
