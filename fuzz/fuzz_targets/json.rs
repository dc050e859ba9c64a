#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fallback_config_fuzz::json::run(data));
