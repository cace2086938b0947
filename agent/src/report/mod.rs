//! Renderers: one [`crate::model::Report`], shown five ways. None of them decides
//! anything; they only show what the report holds.
//!
//! - [`text`]: the table a person reads during an incident;
//! - [`json`]: one NDJSON line per report;
//! - [`prometheus`]: the text exposition served on `/metrics`;
//! - [`html`]: a self-contained page for a capture's analysis;
//! - [`otlp`]: the metrics and verdict transitions as OTLP messages.
//!
//! [`rows`] chooses which client rows an NDJSON stream writes (`--clients`);
//! [`peaks`] keeps the worst figures of a verdict over a series (HTML, `analyze`).

pub mod html;
pub mod json;
mod json_row;
pub mod otlp;
pub mod peaks;
pub mod prometheus;
pub mod rows;
pub mod text;

pub use json::{render_json, write_line};
pub use text::render_text;
