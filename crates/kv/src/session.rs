//! Client sessions: exactly-once application of retried writes (Raft
//! dissertation §6.3), bounded by counts and log indexes, never by wall time.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use understudy_types::limits::{
    KV_SESSIONS_MAX, KV_SESSION_CLIENT_ID_BYTES_MAX, KV_SESSION_RESULTS_RETAINED_MAX,
};

use crate::command::RequestId;
use crate::{KvError, Outcome};

/// One client's session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientSession {
    /// Log index of the last command that used this session (for eviction).
    pub(crate) last_used_index: u64,
    /// Highest sequence applied for this client.
    pub(crate) highest_sequence: u64,
    /// Highest sequence whose result was dropped from `results` (0 if none).
    /// A sequence at or below it that is not retained may have been applied, so
    /// it can never be applied again.
    pub(crate) discarded_through: u64,
    /// Results of the most recent requests, by sequence.
    pub(crate) results: BTreeMap<u64, Outcome>,
}

/// What the session table says about a request.
pub(crate) enum SessionCheck {
    /// Never applied: apply it and `record` the outcome.
    Fresh,
    /// Already applied: this is its first outcome.
    Retry(Outcome),
}

/// Every client's session, with an index by last use for eviction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sessions {
    pub(crate) clients: BTreeMap<Bytes, ClientSession>,
    /// `last_used_index` → client id; derived from `clients`, rebuilt on restore.
    /// Indexes are unique because each log index applies one command.
    #[serde(skip)]
    pub(crate) by_last_used: BTreeMap<u64, Bytes>,
}

impl Sessions {
    /// Number of sessions.
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    /// Judges a request applied at log `index`, touching or opening its session.
    pub(crate) fn check(
        &mut self,
        index: u64,
        request_id: &RequestId,
    ) -> Result<SessionCheck, KvError> {
        let sequence = request_id.sequence;
        let Some(session) = self.clients.get_mut(&request_id.client_id) else {
            // Only the first request may open a session: a later one from an
            // unknown client means its session expired (or was evicted), and we
            // cannot tell whether that request was already applied.
            if sequence != 1 {
                return Err(KvError::SessionExpired);
            }
            self.open(index, request_id.client_id.clone());
            return Ok(SessionCheck::Fresh);
        };
        let verdict = if let Some(outcome) = session.results.get(&sequence) {
            SessionCheck::Retry(outcome.clone())
        } else if sequence <= session.discarded_through {
            // Older than the retained window: it may have been applied; never
            // apply twice. An expired request changes nothing, not even recency.
            return Err(KvError::SessionExpired);
        } else {
            SessionCheck::Fresh
        };
        let previous_index = session.last_used_index;
        session.last_used_index = index;
        let removed = self.by_last_used.remove(&previous_index);
        assert!(removed.is_some(), "session index out of sync with sessions");
        self.by_last_used
            .insert(index, request_id.client_id.clone());
        Ok(verdict)
    }

    fn open(&mut self, index: u64, client_id: Bytes) {
        let session = ClientSession {
            last_used_index: index,
            ..ClientSession::default()
        };
        self.clients.insert(client_id.clone(), session);
        let previous = self.by_last_used.insert(index, client_id);
        assert!(previous.is_none(), "two sessions used at log index {index}");
        if self.clients.len() > KV_SESSIONS_MAX {
            // Evict the session least recently used by log index: deterministic on
            // every replica. The new session has the highest index, so survives.
            // `pop_first` cannot fail: the map holds more than KV_SESSIONS_MAX entries.
            let (_, evicted) = self.by_last_used.pop_first().expect("sessions exist");
            self.clients.remove(&evicted);
        }
    }

    /// Remembers the outcome of a request judged `Fresh`.
    pub(crate) fn record(&mut self, request_id: &RequestId, outcome: Outcome) {
        let session = self
            .clients
            .get_mut(&request_id.client_id)
            .expect("check opened the session of a Fresh request");
        session.results.insert(request_id.sequence, outcome);
        session.highest_sequence = session.highest_sequence.max(request_id.sequence);
        while session.results.len() > KV_SESSION_RESULTS_RETAINED_MAX {
            // `pop_first` cannot fail: the map is longer than the limit (≥ 1).
            let (dropped, _) = session.results.pop_first().expect("results exist");
            session.discarded_through = session.discarded_through.max(dropped);
        }
    }

    /// Validates restored sessions against the limits and rebuilds the index.
    pub(crate) fn rebuild_after_restore(&mut self, last_applied_index: u64) -> Result<(), KvError> {
        if self.clients.len() > KV_SESSIONS_MAX {
            return Err(KvError::SnapshotMalformed);
        }
        self.by_last_used.clear();
        for (client_id, session) in &self.clients {
            let id_ok = !client_id.is_empty() && client_id.len() <= KV_SESSION_CLIENT_ID_BYTES_MAX;
            let results_ok = session.results.len() <= KV_SESSION_RESULTS_RETAINED_MAX
                && session.results.keys().all(|&sequence| {
                    sequence > session.discarded_through && sequence <= session.highest_sequence
                });
            let index_ok = session.last_used_index <= last_applied_index;
            if !id_ok || !results_ok || !index_ok {
                return Err(KvError::SnapshotMalformed);
            }
            if self
                .by_last_used
                .insert(session.last_used_index, client_id.clone())
                .is_some()
            {
                return Err(KvError::SnapshotMalformed);
            }
        }
        Ok(())
    }
}
