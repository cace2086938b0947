//! What the server's replies and the stream's failures mean for the connection's
//! status: [`Failure`]s, the statuses error replies stand for, and the values of
//! `CONFIG GET`. Pure: no I/O.

use ::redis::Value;

use super::conn::{error_text, kind_name};
use super::stream::ConnError;
use crate::model::RedisStatus;

/// Why the connection is down, and what that means.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) status: RedisStatus,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(status: RedisStatus, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

/// The status an error reply means, when it means more than "error".
pub(super) fn status_of_error_reply(msg: &str) -> Option<RedisStatus> {
    if msg.starts_with("WRONGPASS")
        || msg.starts_with("ERR invalid password")
        || msg.starts_with("ERR invalid username-password pair")
    {
        Some(RedisStatus::AuthFailed)
    } else if msg.starts_with("NOAUTH") {
        Some(RedisStatus::NoAuth)
    } else if msg.starts_with("ERR max number of clients") || msg.starts_with("DENIED") {
        Some(RedisStatus::Rejected)
    } else if msg.starts_with("NOPERM") {
        Some(RedisStatus::NoPerm)
    } else {
        None
    }
}

/// One line, at most 300 characters.
pub(super) fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// An I/O failure on a connection that was working: it is gone.
pub(super) fn io_failure(e: ConnError) -> Failure {
    let status = match e {
        ConnError::Protocol(_) => RedisStatus::Error,
        ConnError::Tls(_) => RedisStatus::TlsFailed,
        _ => RedisStatus::Unreachable,
    };
    Failure::new(status, e.to_string())
}

/// `CONFIG GET name` → `[name, value]`; an empty array: the server has no such
/// parameter.
pub(super) fn config_value(reply: &Value, name: &str) -> Result<Option<u64>, String> {
    match reply {
        Value::ServerError(e) => Err(error_text(e)),
        Value::Array(items) if items.is_empty() => Ok(None),
        Value::Array(items) => match items.as_slice() {
            [_, Value::BulkString(v)] => Ok(std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())),
            _ => Err(format!("unexpected reply to CONFIG GET {name}")),
        },
        other => Err(format!(
            "unexpected {} in reply to CONFIG GET {name}",
            kind_name(other)
        )),
    }
}

pub(super) fn rejection(msg: &str) -> Failure {
    Failure::new(RedisStatus::Rejected, format!("connection rejected: {msg}"))
}

pub(super) fn no_auth(msg: &str) -> Failure {
    Failure::new(
        RedisStatus::NoAuth,
        format!("{msg} (give the password with --password-file FILE or REDISCLI_AUTH)"),
    )
}

/// An I/O failure while setting the connection up. A hang-up before the first reply
/// is how Redis turns a client away when its error did not reach us.
pub(super) fn setup_io_failure(e: ConnError, first_exchange: bool) -> Failure {
    if first_exchange && e.is_hangup() {
        Failure::new(
            RedisStatus::Rejected,
            format!(
                "connection closed by the server right after connect, before any reply \
                 (maxclients reached or protected mode?): {e}"
            ),
        )
    } else {
        io_failure(e)
    }
}

/// The ACL rule that lets a user run every command the poller sends besides AUTH
/// (which every user may run): `INFO <section>`, `CONFIG GET <name>`, `CLIENT SETNAME`.
pub const ACL_RULE: &str = "+info +config|get +client|setname";

/// An ACL denial (`NOPERM …`) of `what` (INFO, CONFIG GET), with the rule to grant
/// `user` (`None`: the default user).
pub(super) fn no_perm_message(what: &str, msg: &str, user: Option<&str>) -> String {
    let user = user.unwrap_or("default");
    one_line(&format!(
        "{what}: {msg}; grant user {user} what connwatch sends: ACL SETUSER {user} {ACL_RULE}"
    ))
}
