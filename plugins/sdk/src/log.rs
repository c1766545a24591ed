//! Logging macros bridged to the host's `tracing`, with the plugin's name
//! and version attached by the host. Never log secret values: log names, and
//! let the host fill placeholders in (it also redacts revealed values).
//!
//! ```no_run
//! # use rebound_plugin_sdk::info;
//! # let (id, vm, bytes) = ("snap-1", "vm-1", 42);
//! info!("snapshot {} ready", id; "workload" => vm, "size" => bytes);
//! ```

pub use crate::bindings::rebound::provider::log::Level;

/// Emit one record (what the macros call).
pub fn emit(level: Level, message: &str, fields: &[(String, String)]) {
    crate::bindings::rebound::provider::log::log(level, message, fields);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:expr, $fmt:literal $(, $arg:expr)* $(; $($key:literal => $value:expr),+ )? $(,)?) => {
        $crate::log::emit(
            $level,
            &format!($fmt $(, $arg)*),
            &[$($( ($key.to_string(), $value.to_string()) ),+)?],
        )
    };
}

#[macro_export]
macro_rules! trace { ($($t:tt)*) => { $crate::__log!($crate::log::Level::Trace, $($t)*) }; }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::__log!($crate::log::Level::Debug, $($t)*) }; }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::__log!($crate::log::Level::Info, $($t)*) }; }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::__log!($crate::log::Level::Warn, $($t)*) }; }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::__log!($crate::log::Level::Error, $($t)*) }; }
