//! How the CLI shows what the API answers: tables for lists (the columns a
//! person scans for, per kind), YAML for single objects, or the raw answer
//! as JSON or YAML with `-o`; and the exit codes scripts can test.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

/// `-o`: how to print an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for lists, YAML for one object.
    #[default]
    Table,
    Json,
    Yaml,
}

/// The columns of a list: header and JSON pointer into each item.
pub type Columns = &'static [(&'static str, &'static str)];

pub const PLANS: Columns = &[
    ("NAME", "/name"),
    ("STATE", "/lifecycle/state"),
    ("PRIMARY", "/lifecycle/primary"),
    ("STANDBY", "/lifecycle/standby"),
    ("EPOCH", "/lifecycle/epoch"),
    // A former primary whose fence the failover could not confirm.
    ("UNFENCED", "/lifecycle/unfenced"),
    ("REVISION", "/revision"),
];
pub const RUNS: Columns = &[
    ("ID", "/id"),
    ("PLAN", "/plan"),
    ("WORKFLOW", "/workflow"),
    ("STATUS", "/status"),
    ("CREATED", "/created_at_ms"),
];
pub const COMPLIANCE: Columns = &[
    ("PLAN", "/plan"),
    ("STATE", "/state"),
    ("PHASE", "/phase"),
    ("RPO LAG MS", "/rpo_lag_ms"),
    ("RPO OBJ MS", "/rpo_objective_ms"),
    ("RPO MET", "/rpo_met"),
    ("RTO FORECAST MS", "/rto_forecast_ms"),
    ("RTO OBJ MS", "/rto_objective_ms"),
    ("RTO MET", "/rto_met"),
    ("DRILL MET", "/drill/met"),
];
pub const EVENTS: Columns = &[
    ("AT", "/at_ms"),
    ("PLAN", "/plan"),
    ("KIND", "/kind"),
    ("DETAIL", "/detail"),
];
pub const AUDIT: Columns = &[
    ("AT", "/at_ms"),
    ("PRINCIPAL", "/principal"),
    ("ACTION", "/action"),
    ("TARGET", "/target"),
];
pub const PLUGINS: Columns = &[
    ("NAME", "/name"),
    ("VERSION", "/version"),
    ("PLATFORM", "/platform"),
    ("CONTRACT", "/contract"),
    ("ENABLED", "/enabled"),
    ("QUARANTINED", "/quarantined"),
    ("CRASHES", "/recent_crashes"),
];
pub const SITES: Columns = &[
    ("NAME", "/name"),
    ("PLUGIN", "/plugin"),
    ("SOURCE", "/source"),
    ("REVISION", "/revision"),
];
pub const TOKENS: Columns = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("ROLE", "/role"),
    ("CREATED BY", "/created_by"),
    ("REVOKED", "/revoked_at_ms"),
];

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The answer as text in `format`; `columns` is how a list shows as a table
/// (`None`: a single object, shown as YAML).
pub fn render(value: &Value, format: Format, columns: Option<Columns>) -> String {
    match (format, columns) {
        (Format::Json, _) => serde_json::to_string_pretty(value).unwrap_or_default(),
        (Format::Yaml, _) | (Format::Table, None) => {
            serde_yaml_ng::to_string(value).unwrap_or_default()
        }
        (Format::Table, Some(columns)) => {
            let mut table = Table::new();
            table
                .load_preset(UTF8_BORDERS_ONLY)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(columns.iter().map(|(h, _)| *h));
            for item in value["items"].as_array().into_iter().flatten() {
                table.add_row(columns.iter().map(|(_, p)| cell(item.pointer(p))));
            }
            let mut text = table.to_string();
            if let Some(next) = value["next"].as_str() {
                text.push_str(&format!("\n(more: --after {next})"));
            }
            text
        }
    }
}

/// Exit codes (documented in docs/api.md, "The CLI").
pub mod exit {
    /// Anything else: a file not read, a host not reached.
    pub const ERROR: u8 = 1;
    /// The host refused the request as invalid or not allowed now (4xx).
    pub const REFUSED: u8 = 3;
    /// Not logged in, or the role does not allow it (401, 403).
    pub const DENIED: u8 = 4;
    /// No such plan, run, site or plugin (404).
    pub const NOT_FOUND: u8 = 5;
    /// The run ended failed.
    pub const RUN_FAILED: u8 = 6;
    /// The run ended cancelled.
    pub const RUN_CANCELLED: u8 = 7;
    /// The host failed (5xx).
    pub const HOST_ERROR: u8 = 8;
}

/// An error with the exit code a script sees.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The code for an HTTP refusal.
    pub fn for_status(status: u16) -> u8 {
        match status {
            401 | 403 => exit::DENIED,
            404 => exit::NOT_FOUND,
            400..=499 => exit::REFUSED,
            _ => exit::HOST_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Exit, Format, PLANS, exit, render};

    #[test]
    fn lists_show_as_tables_and_objects_as_yaml() {
        let page = json!({"items": [
            {"name": "shop", "revision": 2, "lifecycle": {"state": "protected", "primary": "a", "standby": "b", "epoch": 1}}
        ], "next": "shop"});
        let text = render(&page, Format::Table, Some(PLANS));
        assert!(
            text.contains("NAME") && text.contains("protected"),
            "{text}"
        );
        assert!(text.contains("--after shop"), "{text}");
        let yaml = render(&page["items"][0], Format::Table, None);
        assert!(yaml.contains("name: shop"), "{yaml}");
        let json = render(&page, Format::Json, Some(PLANS));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).ok(),
            Some(page)
        );
    }

    #[test]
    fn refusals_map_to_distinct_exit_codes() {
        assert_eq!(Exit::for_status(422), exit::REFUSED);
        assert_eq!(Exit::for_status(409), exit::REFUSED);
        assert_eq!(Exit::for_status(403), exit::DENIED);
        assert_eq!(Exit::for_status(404), exit::NOT_FOUND);
        assert_eq!(Exit::for_status(502), exit::HOST_ERROR);
    }
}
