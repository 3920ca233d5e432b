//! The native runtime (feature `native`): a tokio background task, a sled buffer, a hyper +
//! rustls uploader and network probes around the sans-IO core.

pub mod probe;
