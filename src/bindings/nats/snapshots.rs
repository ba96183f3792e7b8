//! Snapshots in a JetStream Object Store bucket: the market's state as data, with the `seq` it
//! covers, the journal message holding that event, and the state hash, so recovery reads far
//! less than the whole journal. A snapshot is replaced only once the new one is stored whole.

use std::collections::HashMap;

use async_nats::jetstream::{self, object_store, stream};
use tokio::io::AsyncReadExt;

use super::Subjects;
use crate::{Snapshot, StateHash};

/// Where a stored snapshot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The last event it includes.
    pub(crate) seq: u64,
    /// The journal message holding that event (replay reads from there, skipping what it has).
    pub(crate) journal: u64,
    /// Its state hash.
    pub(crate) hash: StateHash,
    /// Its size in bytes.
    pub(crate) bytes: usize,
}

/// The bucket of one market's snapshots.
pub(crate) struct Snapshots {
    store: object_store::ObjectStore,
    name: String,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Snapshots {
    /// Binds the bucket, creating it if needed.
    pub(crate) async fn open(
        js: &jetstream::Context,
        subjects: &Subjects,
        market: &str,
        replicas: usize,
    ) -> Result<Snapshots, async_nats::Error> {
        let bucket = subjects.snapshots_bucket();
        let store = match js.get_object_store(&bucket).await {
            Ok(store) => store,
            Err(_) => {
                js.create_object_store(object_store::Config {
                    bucket,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await?
            }
        };
        Ok(Snapshots { store, name: market.to_owned() })
    }

    /// Binds the bucket if it exists.
    pub(crate) async fn bind(
        js: &jetstream::Context,
        subjects: &Subjects,
        market: &str,
    ) -> Option<Snapshots> {
        let store = js.get_object_store(subjects.snapshots_bucket()).await.ok()?;
        Some(Snapshots { store, name: market.to_owned() })
    }

    /// Stores `snapshot`, taken when the journal's message `journal` held its last event.
    pub(crate) async fn put(&self, snapshot: &Snapshot, journal: u64) -> Result<Stored, async_nats::Error> {
        let json = snapshot.to_json();
        let hash = StateHash(*blake3::hash(&json).as_bytes());
        let stored = Stored { seq: snapshot.seq, journal, hash, bytes: json.len() };
        let metadata = HashMap::from([
            ("seq".to_owned(), stored.seq.to_string()),
            ("journal".to_owned(), journal.to_string()),
            ("state_hash".to_owned(), hash.to_string()),
        ]);
        let meta = object_store::ObjectMetadata {
            name: self.name.clone(),
            description: Some(format!("market `{}` as of event {}", self.name, stored.seq)),
            chunk_size: Some(1 << 20),
            metadata,
            headers: None,
        };
        self.store.put(meta, &mut json.as_slice()).await?;
        Ok(stored)
    }

    /// The latest snapshot, if one was stored, checked against its recorded hash.
    pub(crate) async fn latest(&self) -> Result<Option<(Snapshot, Stored)>, async_nats::Error> {
        let info = match self.store.info(&self.name).await {
            Ok(info) if !info.deleted => info,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let field = |k: &str| info.metadata.get(k).cloned().ok_or_else(|| format!("snapshot without `{k}`"));
        let seq: u64 = field("seq")?.parse()?;
        let journal: u64 = field("journal")?.parse()?;
        let hash: StateHash = field("state_hash")?.parse()?;
        let mut object = self.store.get(&self.name).await?;
        let mut json = Vec::with_capacity(info.size);
        object.read_to_end(&mut json).await?;
        let snapshot = Snapshot::from_json(&json)?;
        let found = snapshot.hash();
        if found != hash || snapshot.seq != seq {
            return Err(format!(
                "snapshot of event {seq} reads as event {} with hash {found}, not {hash}",
                snapshot.seq
            )
            .into());
        }
        Ok(Some((snapshot, Stored { seq, journal, hash, bytes: json.len() })))
    }
}
