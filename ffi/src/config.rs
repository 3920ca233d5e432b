//! The config string of `vantage_agent_new`: the agent's TOML schema, as TOML or as JSON.

use std::path::Path;

use vantage_agent::native::AgentConfig;

use crate::error::FfiError;

/// Parses `text` (JSON when its first non-blank character is `{`, else TOML) as the native
/// agent's config (see `vantage_agent::native::config`), with `data_dir`, when given,
/// replacing the config's own. Both formats go through the agent's one reader, so they have
/// the same schema and the same error messages (after a `config (JSON):` or `config (TOML):`
/// prefix for syntax and schema errors).
pub(crate) fn parse(text: &str, data_dir: Option<&Path>) -> Result<AgentConfig, FfiError> {
    let dir = match data_dir {
        Some(d) => {
            Some(d.to_str().ok_or_else(|| FfiError::invalid("data_dir is not UTF-8"))?.into())
        }
        None => None,
    };
    let (format, parsed) = if text.trim_start().starts_with('{') {
        ("JSON", AgentConfig::from_json_str(text, dir))
    } else {
        ("TOML", AgentConfig::from_toml_str_with_data_dir(text, dir))
    };
    parsed.map_err(|e| match e {
        vantage_agent::native::ConfigError::Toml(msg) => {
            FfiError::Config(format!("config ({format}): {msg}"))
        }
        e => vantage_agent::native::AgentError::from(e).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "4310ee97e1bc2f0fcd1ac8b1e9e2ab5d5a9a1e4b1f0b4b38d1a4e2b6d4f1662a";

    fn toml_text() -> String {
        format!(
            "collector_key = \"{KEY}\"\n[app]\nid = \"com.example.app\"\nversion = \"1.0\"\n\
             platform = \"ios\"\n[[services]]\nid = \"checkout\"\nhosts = [\"api.example.com\"]\n\
             [[collectors]]\nurl = \"https://127.0.0.1:8443\"\n"
        )
    }

    #[test]
    fn toml_and_json_give_the_same_config_with_the_given_data_dir() {
        let json = format!(
            r#"{{"collector_key": "{KEY}",
                "app": {{"id": "com.example.app", "version": "1.0", "platform": "ios"}},
                "services": [{{"id": "checkout", "hosts": ["api.example.com"]}}],
                "collectors": [{{"url": "https://127.0.0.1:8443"}}]}}"#
        );
        let dir = Path::new("/tmp/vantage-ffi-config-test");
        let a = parse(&toml_text(), Some(dir)).unwrap();
        let b = parse(&json, Some(dir)).unwrap();
        assert_eq!(a.data_dir, dir);
        assert_eq!(b.data_dir, dir);
        assert_eq!(a.app, b.app);
        assert_eq!(a.collectors, b.collectors);
        assert_eq!(a.services.len(), 1);
    }

    #[test]
    fn errors_name_the_format_or_the_field() {
        let e = parse("{ not json", None).unwrap_err();
        assert!(e.to_string().starts_with("config (JSON)"), "{e}");
        let e = parse("= nope", None).unwrap_err();
        assert!(e.to_string().starts_with("config (TOML)"), "{e}");
        let bad = toml_text().replace("https://127.0.0.1:8443", "http://127.0.0.1:8443");
        let e = parse(&bad, Some(Path::new("/tmp/x"))).unwrap_err();
        assert!(e.to_string().contains("collectors[0].url"), "{e}");
        let colour = toml_text().replace("[app]", "[app]\ncolour = 1");
        let e = parse(&colour, Some(Path::new("/tmp/x"))).unwrap_err();
        assert!(
            e.to_string().starts_with("config (TOML): line 3, column 1: unknown field `colour`"),
            "{e}"
        );
        let e = parse(r#"{"data_dir": "/tmp/x", "collector_key": 7}"#, None).unwrap_err();
        assert!(
            e.to_string().contains("`collector_key`: expected a string, found an integer"),
            "{e}"
        );
        assert!(e.to_string().starts_with("config (JSON): line 1, column 41"), "{e}");
    }
}
