//! The config string of `vantage_agent_new`: the agent's TOML schema, as TOML or as JSON.

use std::path::Path;

use vantage_agent::native::AgentConfig;

use crate::error::FfiError;

/// Parses `text` (JSON when its first non-blank character is `{`, else TOML) as the native
/// agent's config (see `vantage_agent::native::config`), with `data_dir`, when given,
/// replacing the config's own.
pub(crate) fn parse(text: &str, data_dir: Option<&Path>) -> Result<AgentConfig, FfiError> {
    let mut table: toml::Table = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| FfiError::Config(format!("config (JSON): {e}")))?
    } else {
        text.parse().map_err(|e| FfiError::Config(format!("config (TOML): {e}")))?
    };
    if let Some(dir) = data_dir {
        let dir =
            dir.to_str().ok_or_else(|| FfiError::invalid("data_dir is not UTF-8"))?.to_owned();
        table.insert("data_dir".into(), toml::Value::String(dir));
    }
    // One schema, one set of error messages: the agent's TOML reader checks everything.
    let toml_text = toml::to_string(&table)
        .map_err(|e| FfiError::Config(format!("config: cannot be represented as TOML: {e}")))?;
    Ok(AgentConfig::from_toml_str(&toml_text).map_err(vantage_agent::native::AgentError::from)?)
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
        let json = serde_json::json!({
            "collector_key": KEY,
            "app": {"id": "com.example.app", "version": "1.0", "platform": "ios"},
            "services": [{"id": "checkout", "hosts": ["api.example.com"]}],
            "collectors": [{"url": "https://127.0.0.1:8443"}],
        })
        .to_string();
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
    }
}
