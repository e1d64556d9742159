//! The configuration loader's TOML step (`Config::from_toml`, which
//! `Config::load` layers the same way) on arbitrary text: it refuses or
//! accepts, it never panics, hangs or allocates without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_server::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text) {
        // Accepted means checked: the collector's settings compile.
        assert!(config.gc.validate().is_ok());
        assert!(config.gc.batch_size >= 1);
    }
});
