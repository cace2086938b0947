//! What every OTLP request carries: the resource (this host, connwatch, the Redis
//! instance), the instrumentation scope, attribute values and times.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::proto::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, Resource, any_value};
use crate::model::Report;

/// Who sends: the host's name, as `host.name` and in `service.instance.id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub host_name: String,
}

/// The value of `service.name`.
pub const SERVICE_NAME: &str = "connwatch";

/// `service.instance.id`: the watched Redis, as `HOST:PORT` (ports joined with
/// `,` when several are one instance), followed by `/` and the `redis_instance`
/// label of a Redis in a container, a pod or another network namespace. Unique in a
/// fleet (the host's name is in it) and stable across the agent's restarts.
pub fn instance_id(origin: &Origin, report: &Report) -> String {
    let ports: Vec<String> = report.ports.iter().map(u16::to_string).collect();
    let mut id = format!("{}:{}", origin.host_name, ports.join(","));
    if let Some(label) = report.instance.as_ref().and_then(|i| i.metric_label()) {
        id.push('/');
        id.push_str(&label);
    }
    id
}

/// The resource of one report: `host.name`, `service.name`, `service.version`,
/// `service.instance.id`, and what is known of a contained Redis
/// (`connwatch.redis_instance`, the Prometheus label; `container.id`; `k8s.pod.uid`);
/// in client mode `connwatch.role: client`.
pub fn resource(origin: &Origin, report: &Report) -> Resource {
    let mut attributes = vec![
        string("host.name", &origin.host_name),
        string("service.name", SERVICE_NAME),
        string("service.version", env!("CARGO_PKG_VERSION")),
        string("service.instance.id", &instance_id(origin, report)),
    ];
    // Client mode (`--remote-port`): the series are this host's connections.
    if report.role == crate::model::Role::Client {
        attributes.push(string("connwatch.role", report.role.as_str()));
    }
    if let Some(i) = &report.instance {
        if let Some(label) = i.metric_label() {
            attributes.push(string("connwatch.redis_instance", &label));
        }
        if let Some(c) = &i.container_id {
            attributes.push(string("container.id", c));
        }
        if let Some(p) = &i.pod_uid {
            attributes.push(string("k8s.pod.uid", p));
        }
    }
    Resource { attributes }
}

/// The instrumentation scope: connwatch itself.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SERVICE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

pub fn string(key: &str, value: &str) -> KeyValue {
    key_value(key, any_value::Value::StringValue(value.to_owned()))
}

pub fn key_value(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A JSON scalar as an attribute value; `None` for null, objects and arrays of
/// anything but scalars.
fn scalar(v: &Value) -> Option<any_value::Value> {
    Some(match v {
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Null | Value::Array(_) | Value::Object(_) => return None,
    })
}

/// Appends `value` under `key` as flat attributes: an object's members as
/// `key.member` (recursively), an array of scalars as an array value, any other
/// array as its JSON text. Nulls (unknown) are left out.
pub fn flatten(key: &str, value: &Value, out: &mut Vec<KeyValue>) {
    match value {
        Value::Null => {}
        Value::Object(members) => {
            for (name, v) in members {
                flatten(&format!("{key}.{name}"), v, out);
            }
        }
        Value::Array(items) => {
            let values: Option<Vec<AnyValue>> = items
                .iter()
                .map(|v| scalar(v).map(|value| AnyValue { value: Some(value) }))
                .collect();
            let value = match values {
                Some(values) => any_value::Value::ArrayValue(ArrayValue { values }),
                None => any_value::Value::StringValue(value.to_string()),
            };
            out.push(key_value(key, value));
        }
        scalar_value => {
            if let Some(v) = scalar(scalar_value) {
                out.push(key_value(key, v));
            }
        }
    }
}
