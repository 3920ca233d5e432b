//! The module's one error type, and its conversion to a JavaScript `Error` (the only place
//! errors cross into JS). Messages name what was wrong, never a URL, host or key.

use wasm_bindgen::JsValue;

/// Something the module refused or could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// A configuration field is missing or invalid (the field's name).
    #[error("{}", self.message())]
    Config(&'static str),
    /// The envelope store failed (IndexedDB mirror).
    #[error("{}", self.message())]
    Store(#[from] vantage_agent::buffer::StoreError),
    /// `loadEnvelope` after `finishLoad`, or the like.
    #[error("{}", self.message())]
    Usage(&'static str),
}

impl WasmError {
    /// The message `Display` writes too: `vantage: ` and what was wrong (the config field's
    /// name, the misuse, the store's error). Joined by hand: `to_string` would link
    /// `core::fmt`'s machinery into the module for this alone (README "Size").
    pub fn message(&self) -> String {
        match self {
            WasmError::Config(field) => ["vantage: invalid config field `", field, "`"].concat(),
            WasmError::Store(e) => ["vantage: envelope store failed: ", &e.message()].concat(),
            WasmError::Usage(what) => ["vantage: ", what].concat(),
        }
    }
}

impl From<WasmError> for JsValue {
    fn from(e: WasmError) -> JsValue {
        js_sys::Error::new(&e.message()).into()
    }
}

#[cfg(test)]
mod tests {
    use vantage_agent::buffer::StoreError;

    use super::*;

    #[test]
    fn messages_name_what_was_wrong() {
        let config = WasmError::Config("collectorKey");
        assert_eq!(config.to_string(), "vantage: invalid config field `collectorKey`");
        let store = WasmError::from(StoreError::Corrupt("bad".into()));
        assert_eq!(
            store.to_string(),
            "vantage: envelope store failed: envelope store is corrupt: bad"
        );
        let usage = WasmError::Usage("finishLoad called twice");
        assert_eq!(usage.to_string(), "vantage: finishLoad called twice");
        for e in [config, store, usage] {
            assert_eq!(e.message(), e.to_string());
        }
    }
}
