//! Annotation overrides and custom metadata from arbitrary key/value text (lines `k=v`).
#![no_main]
use std::collections::BTreeMap;

use command_issuer::api::IssuerSpec;
use command_issuer::config::sign_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let annotations: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let key = if k.contains('/') { k.to_string() } else { format!("command-issuer.keyfactor.com/{k}") };
            (key, v.to_string())
        })
        .collect();
    let _ = sign_config(&IssuerSpec::default(), &annotations);
});
