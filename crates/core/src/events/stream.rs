//! The Redis transport of market events: appending them to the stream `{prefix}:market_events` and
//! announcing them on the channel of the same name, measuring the listeners' backlog, and setting aside
//! entries that cannot be understood (`{prefix}:market_events:dead`).

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{MarketEvent, CONSUMER_GROUP, STREAM_FIELD};
use crate::{cache::Cache, Result};

/// Set on the copy the api announces on the channel: it is already in the stream, so a listener's
/// bridge does not append it again.
const APPENDED_MARK: &str = "appended";

/// The most undelivered entries `EventStream::backlog` counts one by one when Redis cannot tell.
const BACKLOG_COUNT_MAX: usize = 10_000;

/// What `EventStream::backlog` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBacklog {
    pub entries: u64,
    pub pending: u64,
    pub lag: u64,
}

/// Appending events to the stream and announcing them on the channel.
#[derive(Clone)]
pub struct EventStream {
    cache: Cache,
    max_len: usize,
}

impl EventStream {
    pub fn new(cache: Cache, max_len: usize) -> Self {
        Self { cache, max_len }
    }

    /// `XADD` (bounded with `MAXLEN ~`) and `PUBLISH` of each event, in one pipeline.
    #[tracing::instrument(name = "stream append", skip_all, fields(db.system.name = "redis", events = events.len()))]
    pub async fn append(&self, events: &[MarketEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let key = self.cache.keys.market_events();
        let mut pipe = redis::pipe();
        for event in events {
            let json = event.to_json();
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .arg("*")
                .arg(STREAM_FIELD)
                .arg(&json)
                .ignore();
            let mut announced: serde_json::Value = serde_json::from_str(&json).expect("valid json");
            announced[APPENDED_MARK] = serde_json::Value::Bool(true);
            pipe.cmd("PUBLISH").arg(&key).arg(announced.to_string()).ignore();
        }
        let () = pipe.query_async(&mut self.cache.conn().await?).await?;
        Ok(())
    }

    /// How far the listeners are behind: the stream's entries, and of the consumer group the entries
    /// delivered but not yet acknowledged (`pending`) and not yet delivered (`lag`). Zeros before the
    /// stream exists.
    pub async fn backlog(&self) -> Result<StreamBacklog> {
        let key = self.cache.keys.market_events();
        let mut conn = self.cache.conn().await?;
        let entries: u64 = conn.xlen(&key).await?;
        if entries == 0 {
            return Ok(StreamBacklog { entries, pending: 0, lag: 0 });
        }
        let groups: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(&key).await?;
        let Some(group) = groups.groups.into_iter().find(|g| g.name == CONSUMER_GROUP) else {
            // No listener has joined yet: everything waits.
            return Ok(StreamBacklog { entries, pending: 0, lag: entries });
        };
        let lag = match group.lag {
            Some(lag) => lag as u64,
            // Redis cannot tell (a trim or deletion since the group's position): count what follows the
            // last delivered entry, up to a bound.
            None => {
                let after = format!("({}", group.last_delivered_id);
                let ids: redis::streams::StreamRangeReply =
                    conn.xrange_count(&key, after, "+", BACKLOG_COUNT_MAX).await?;
                ids.ids.len() as u64
            }
        };
        Ok(StreamBacklog { entries, pending: group.pending as u64, lag })
    }

    /// Whether a channel message is one the api already appended to the stream.
    pub fn already_appended(message: &serde_json::Value) -> bool {
        message.get(APPENDED_MARK).and_then(serde_json::Value::as_bool) == Some(true)
    }

    /// Copies an entry that could not be understood to `{prefix}:market_events:dead`, with the reason.
    #[tracing::instrument(name = "dead letter", skip_all, fields(db.system.name = "redis", entry = entry_id))]
    pub async fn dead_letter(
        &self,
        entry_id: &str,
        fields: &HashMap<String, String>,
        reason: &str,
    ) -> Result<()> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.cache.keys.market_events_dead()).arg("MAXLEN").arg("~").arg(self.max_len).arg("*");
        cmd.arg("source_entry").arg(entry_id).arg("reason").arg(reason);
        for (field, value) in fields {
            cmd.arg(field).arg(value);
        }
        let _: String = cmd.query_async(&mut self.cache.conn().await?).await?;
        Ok(())
    }
}
