//! [`Transmit`]: one upload the JavaScript side performs for the core.

use vantage_agent::pipeline::CoreTransmit;
use wasm_bindgen::prelude::*;

/// One envelope to POST to one collector (`collectors[collector] + "/v1/envelopes"`).
#[wasm_bindgen]
#[derive(Debug)]
pub struct Transmit {
    id: u64,
    seq: u64,
    collector: usize,
    bytes: Vec<u8>,
}

impl From<CoreTransmit> for Transmit {
    fn from(t: CoreTransmit) -> Transmit {
        Transmit { id: t.id.0, seq: t.seq, collector: t.collector, bytes: t.bytes }
    }
}

#[wasm_bindgen]
impl Transmit {
    /// Pass back to `Core.handleOutcome`.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> f64 {
        self.id as f64
    }
    /// The envelope's sequence number.
    #[wasm_bindgen(getter)]
    pub fn seq(&self) -> f64 {
        self.seq as f64
    }
    /// The collector's index in the configured order.
    #[wasm_bindgen(getter)]
    pub fn collector(&self) -> usize {
        self.collector
    }
    /// The request body (a copy).
    #[wasm_bindgen(getter)]
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}
