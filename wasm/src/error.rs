//! The module's one error type, and its conversion to a JavaScript `Error` (the only place
//! errors cross into JS). Messages name what was wrong, never a URL, host or key.

use wasm_bindgen::JsValue;

/// Something the module refused or could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// A configuration field is missing or invalid (the field's name).
    #[error("vantage: invalid config field `{0}`")]
    Config(&'static str),
    /// The envelope store failed (IndexedDB mirror).
    #[error("vantage: envelope store failed: {0}")]
    Store(#[from] vantage_agent::buffer::StoreError),
    /// `loadEnvelope` after `finishLoad`, or the like.
    #[error("vantage: {0}")]
    Usage(&'static str),
}

impl From<WasmError> for JsValue {
    fn from(e: WasmError) -> JsValue {
        js_sys::Error::new(&e.to_string()).into()
    }
}
