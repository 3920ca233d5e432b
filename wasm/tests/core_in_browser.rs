#![allow(clippy::unwrap_used)]
//! The exported `Core` in headless Chromium (wasm-bindgen-test): configuration errors, consent,
//! classification, sealing into the journal, transmits and outcomes, with the browser's RNG.
//! Run with `.ci/test-wasm.sh`.
#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use js_sys::{Array, Object, Reflect, Uint8Array};
use vantage_agent::wire::Envelope;
use vantage_wasm::Core;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const KEY: &str = "104e5b6df553445fbb386e1d7add3a635db7a7392820f0e181593087f4dfac4a";
const T0: f64 = 1_767_225_600_000.0;

fn set(o: &Object, k: &str, v: impl Into<JsValue>) {
    Reflect::set(o, &k.into(), &v.into()).unwrap();
}

fn get(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &k.into()).unwrap()
}

fn options() -> Object {
    let o = Object::new();
    set(&o, "collectorKey", KEY);
    let collectors = Array::new();
    collectors.push(&"http://127.0.0.1:1".into());
    collectors.push(&"http://127.0.0.1:2".into());
    set(&o, "collectors", collectors);
    set(&o, "appId", "com.example.web");
    set(&o, "sealDelayMs", 100.0);
    o
}

fn error_message(e: JsValue) -> String {
    get(&e, "message").as_string().unwrap()
}

#[wasm_bindgen_test]
fn config_errors_name_the_field() {
    let o = options();
    set(&o, "collectorKey", "abc");
    assert!(error_message(Core::new(&o).unwrap_err()).contains("collectorKey"));
    let o = options();
    set(&o, "collectors", Array::new());
    assert!(error_message(Core::new(&o).unwrap_err()).contains("collectors"));
    let o = options();
    set(&o, "maxBytes", -1.0);
    assert!(error_message(Core::new(&o).unwrap_err()).contains("maxBytes"));
}

#[wasm_bindgen_test]
fn nothing_is_kept_before_consent() {
    let mut core = Core::new(&options()).unwrap();
    core.finish_load(1.0).unwrap();
    let r = core.record("web", "http://127.0.0.1:9/x", "tcp.failed", 0, 5.0, "", T0);
    assert_eq!(r, "not_consented");
    assert_eq!(core.seal_pending(T0 + 1000.0).unwrap(), 0);
    assert_eq!(core.take_journal().length(), 0);
    assert!(core.poll_transmit(T0 + 1000.0).unwrap().is_none());
}

#[wasm_bindgen_test]
fn a_failure_is_sealed_journalled_sent_and_removed_after_202() {
    let mut core = Core::new(&options()).unwrap();
    core.finish_load(1.0).unwrap();
    let secret = core.grant(T0).unwrap();
    assert_eq!(secret.len(), 32);
    assert!(core.grant(T0).is_none(), "already granted");
    let t = Core::classify_fetch("network", 0, 0.0, 0.0);
    assert_eq!(t, "tcp.failed");
    assert_eq!(
        core.record("web", "http://127.0.0.1:9/secret-path?q=1", &t, 0, 3.0, "", T0),
        "kept"
    );
    assert_eq!(core.record("web", "not a url at all", "tcp.failed", 0, 3.0, "", T0), "invalid");
    assert_eq!(core.poll_seal(T0 + 50.0).unwrap(), 0, "not due before sealDelayMs");
    assert_eq!(core.poll_timeout(), Some(T0 + 100.0));
    assert_eq!(core.poll_seal(T0 + 100.0).unwrap(), 1);

    let journal = core.take_journal();
    assert_eq!(journal.length(), 1);
    let put = journal.get(0);
    assert_eq!(get(&put, "op").as_string().unwrap(), "put");
    assert_eq!(get(&put, "seq").as_f64().unwrap(), 1.0);
    assert_eq!(get(&put, "failures").as_f64().unwrap(), 1.0);
    let stored = Uint8Array::new(&get(&put, "bytes")).to_vec();

    let tx = core.poll_transmit(T0 + 100.0).unwrap().unwrap();
    assert_eq!(tx.bytes(), stored, "the stored bytes are the ones sent");
    assert_eq!(tx.collector(), 0);
    let envelope = Envelope::decode(&tx.bytes()).unwrap();
    let key: vantage_agent::wire::CollectorPublicKey = KEY.parse().unwrap();
    assert_eq!(envelope.key_id, key.key_id());
    // The path never reaches the (sealed, but still) envelope in the clear.
    assert!(!String::from_utf8_lossy(&stored).contains("secret-path"));

    // A network error fails over to the second collector after backoff.
    assert_eq!(core.delivery_error_label(), None);
    assert_eq!(
        core.handle_outcome(tx.id(), 0, 0.0, T0 + 110.0, Some("timeout".into())).unwrap(),
        "retry"
    );
    assert_eq!(core.delivery_error_label().as_deref(), Some("tcp.timed_out"));
    assert!(core.delivery_error_message().unwrap().contains("no answer in time"));
    let later = core.poll_timeout().unwrap();
    let tx2 = core.poll_transmit(later).unwrap().unwrap();
    assert_eq!(tx2.collector(), 1);
    assert_eq!(core.handle_outcome(tx2.id(), 202, 0.0, later, None).unwrap(), "delivered");
    // The first collector's last attempt still failed: its cause stays until it accepts.
    assert_eq!(core.delivery_error_label().as_deref(), Some("tcp.timed_out"));
    let journal = core.take_journal();
    assert_eq!(journal.length(), 1);
    assert_eq!(get(&journal.get(0), "op").as_string().unwrap(), "remove");
    let stats = core.stats();
    assert_eq!(get(&stats, "deliveredFailures").as_f64().unwrap(), 1.0);
    assert_eq!(get(&stats, "storedEnvelopes").as_f64().unwrap(), 0.0);
}

#[wasm_bindgen_test]
fn a_restart_restores_envelopes_identity_and_sequence() {
    let mut first = Core::new(&options()).unwrap();
    first.finish_load(1.0).unwrap();
    let secret = first.grant(T0).unwrap();
    first.record("web", "https://api.example.com/", "tcp.timed_out", 0, 9.0, "h2", T0);
    first.seal_pending(T0 + 1.0).unwrap();
    let put = first.take_journal().get(0);
    let next = first.next_seq();
    assert_eq!(next, 2.0);

    let mut second = Core::new(&options()).unwrap();
    second
        .load_envelope(
            get(&put, "seq").as_f64().unwrap(),
            get(&put, "createdAt").as_f64().unwrap(),
            get(&put, "failures").as_f64().unwrap(),
            Uint8Array::new(&get(&put, "bytes")).to_vec(),
        )
        .unwrap();
    second.finish_load(next).unwrap();
    assert!(second.load_envelope(9.0, T0, 1.0, vec![1]).is_err(), "load after finishLoad");
    second.restore_consent(&secret, T0).unwrap();
    assert!(second.is_granted());
    assert_eq!(second.next_seq(), 2.0);
    assert_eq!(second.envelopes().unwrap().length(), 1);
    let tx = second.poll_transmit(T0 + 2.0).unwrap().unwrap();
    assert_eq!(tx.seq(), 1.0);
    // Withdrawal deletes everything and journals a clear.
    second.withdraw(T0 + 3.0).unwrap();
    let journal = second.take_journal();
    assert_eq!(get(&journal.get(journal.length() - 1), "op").as_string().unwrap(), "clear");
    assert!(!second.is_granted());
    assert_eq!(second.envelopes().unwrap().length(), 0);
}

#[wasm_bindgen_test]
fn the_browsers_rng_gives_fresh_identities() {
    let mut a = Core::new(&options()).unwrap();
    let mut b = Core::new(&options()).unwrap();
    a.finish_load(1.0).unwrap();
    b.finish_load(1.0).unwrap();
    assert_ne!(a.grant(T0).unwrap(), b.grant(T0).unwrap());
}
