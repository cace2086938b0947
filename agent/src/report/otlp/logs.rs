//! The logs request: verdict transitions (`"type":"verdict"` NDJSON lines) as OTLP
//! log records. Body: the summary. Severity: WARN for a raised warning, ERROR for
//! a raised critical, INFO for a cleared verdict; the text is connwatch's own word
//! (`warning`, `critical`, `cleared`). Attributes: the event, kind, severity and
//! client address, and the evidence flattened (`connwatch.evidence.<key>`).

use super::common::{Origin, flatten, resource, scope, string, unix_nanos};
use super::proto::{
    AnyValue, ExportLogsServiceRequest, LogRecord, ResourceLogs, ScopeLogs, SeverityNumber,
    any_value,
};
use crate::diagnose::transitions::{Change, VerdictLine};
use crate::model::{Report, Severity};

/// The `event_name` of every record.
pub const EVENT_NAME: &str = "connwatch.verdict";

/// The severity number and text of a transition.
pub fn severity(event: Change, severity: Severity) -> (SeverityNumber, &'static str) {
    match (event, severity) {
        (Change::Cleared, _) => (SeverityNumber::Info, "cleared"),
        (Change::Raised, Severity::Warning) => (SeverityNumber::Warn, "warning"),
        (Change::Raised, Severity::Critical) => (SeverityNumber::Error, "critical"),
    }
}

fn event_name(event: Change) -> &'static str {
    match event {
        Change::Raised => "raised",
        Change::Cleared => "cleared",
    }
}

/// One transition as a log record, at its report's time.
pub fn log_record(report: &Report, line: &VerdictLine) -> LogRecord {
    let time = unix_nanos(report.ts);
    let (number, text) = severity(line.event, line.severity);
    let mut attributes = vec![
        string("connwatch.event", event_name(line.event)),
        string("connwatch.verdict.kind", line.kind.as_str()),
        string("connwatch.verdict.severity", line.severity.as_str()),
    ];
    if let Some(addr) = line.addr {
        attributes.push(string("client.address", &addr.to_string()));
    }
    for (key, value) in &line.evidence {
        flatten(&format!("connwatch.evidence.{key}"), value, &mut attributes);
    }
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        severity_number: number as i32,
        severity_text: text.to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(line.summary.clone())),
        }),
        attributes,
        event_name: EVENT_NAME.to_owned(),
    }
}

/// The request of one interval: each instance's transitions under its resource;
/// `None` when nothing changed.
pub fn logs_request(
    origin: &Origin,
    transitions: &[(&Report, Vec<VerdictLine>)],
) -> Option<ExportLogsServiceRequest> {
    let resource_logs: Vec<ResourceLogs> = transitions
        .iter()
        .filter(|(_, lines)| !lines.is_empty())
        .map(|(report, lines)| ResourceLogs {
            resource: Some(resource(origin, report)),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: lines.iter().map(|l| log_record(report, l)).collect(),
            }],
        })
        .collect();
    (!resource_logs.is_empty()).then_some(ExportLogsServiceRequest { resource_logs })
}
