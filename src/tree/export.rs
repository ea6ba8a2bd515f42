//! What replication reads out of the tree besides the namespace: a
//! manifest's entries and a chunk's stored form, both checked.

use super::Entry;
use super::{Result, Tree};
use crate::ids::{ChunkId, ManifestId};

impl Tree {
    /// Calls `f(start, entry)` for each entry of a manifest, in file order;
    /// `f` returns false to stop.
    pub fn manifest_entries(
        &self,
        manifest: ManifestId,
        mut f: impl FnMut(u64, Entry) -> bool,
    ) -> Result<()> {
        self.data
            .reader
            .for_each_entry(manifest, |start, entry| Ok(f(start, entry)))?;
        Ok(())
    }

    /// A chunk's stored form (codec header and payload), verified against
    /// its id before it is handed out.
    pub fn read_stored_chunk(&self, id: ChunkId) -> Result<Vec<u8>> {
        Ok(self.data.store.read_stored_chunk(id)?)
    }
}
