//! The live source's helpers around its Redis pollers: forwarding each instance's
//! snapshots into the event loop, and logging their status changes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::model::{InstanceKey, RedisSnapshot, RedisStatus};
use crate::source::redis::{RedisPoller, spawn_poller_with};

/// Runs `poller` every `interval` and forwards its snapshots, tagged with `key`.
pub(crate) fn forward_snapshots(
    poller: RedisPoller,
    key: InstanceKey,
    interval: Duration,
    tx: mpsc::Sender<(InstanceKey, RedisSnapshot)>,
) -> anyhow::Result<tokio::task::AbortHandle> {
    let (mut rx, _task) =
        spawn_poller_with(poller, interval).context("starting the Redis poller")?;
    let forward = tokio::spawn(async move {
        while let Some(snapshot) = rx.recv().await {
            if tx.send((key, snapshot)).await.is_err() {
                return;
            }
        }
    });
    Ok(forward.abort_handle())
}

/// One log line per change of an instance's Redis status, not one per poll.
pub(crate) fn log_status_change(
    last: &mut BTreeMap<InstanceKey, RedisStatus>,
    key: InstanceKey,
    snapshot: &RedisSnapshot,
) {
    if last.get(&key) == Some(&snapshot.status) {
        return;
    }
    last.insert(key, snapshot.status);
    let target = snapshot.target.map(|t| t.to_string()).unwrap_or_default();
    match (snapshot.status, &snapshot.error) {
        (RedisStatus::Ok, _) => log::info!("redis {target} ({key}): INFO joined"),
        (status, Some(err)) => {
            log::warn!("redis {target} ({key}): {status:?}: {err}; reporting from kernel data")
        }
        (status, None) => {
            log::warn!("redis {target} ({key}): {status:?}; reporting from kernel data")
        }
    }
}

pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
