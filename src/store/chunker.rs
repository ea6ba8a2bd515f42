//! Which cut search a store's chunks are cut with: recorded when the store
//! is made, and kept for its life. New chunks deduplicate against stored
//! ones only where both were cut alike, so a store made by a build
//! before stores recorded their search keeps FastCDC's cuts, and a mount
//! cannot switch a store to another search.

use super::schema::{CF_META, META_CHUNKER};
use super::{Result, Store, StoreError};
use crate::chunk::CutSearch;

impl Store {
    /// The cut search this store's chunks were cut with.
    pub fn chunker(&self) -> Result<CutSearch> {
        match self.db.get_cf(self.cf(CF_META), META_CHUNKER)? {
            None => Ok(CutSearch::UNRECORDED),
            Some(name) => std::str::from_utf8(&name)
                .ok()
                .and_then(|name| name.parse().ok())
                .ok_or_else(|| {
                    let name = String::from_utf8_lossy(&name);
                    StoreError::Corrupt(format!(
                        "unknown chunker record {name:?} (made by a newer ckptfs?)"
                    ))
                }),
        }
    }

    /// The cut search to chunk with: `requested` (`--chunker`) on a store
    /// this open made, which records it; otherwise the store's own, which
    /// an explicit request must match.
    pub fn settle_chunker(&self, requested: Option<CutSearch>) -> Result<CutSearch> {
        let recorded = self.chunker()?;
        match requested {
            None => Ok(recorded),
            Some(requested) if requested == recorded => Ok(recorded),
            Some(requested) if self.made_now => {
                let mut txn = self.txn();
                txn.batch
                    .put_cf(self.cf(CF_META), META_CHUNKER, requested.to_string());
                self.commit(txn, true)?;
                Ok(requested)
            }
            Some(requested) => Err(StoreError::ChunkerMismatch {
                path: self.root().to_path_buf(),
                recorded,
                requested,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW_STORES: CutSearch = CutSearch::NEW_STORES;

    #[test]
    fn a_new_store_records_its_search_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.chunker().unwrap(), NEW_STORES);
            assert_eq!(store.settle_chunker(None).unwrap(), NEW_STORES);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.settle_chunker(Some(NEW_STORES)).unwrap(), NEW_STORES);
        for other in CutSearch::ALL.into_iter().filter(|&s| s != NEW_STORES) {
            let err = store.settle_chunker(Some(other)).unwrap_err();
            assert!(matches!(err, StoreError::ChunkerMismatch { .. }), "{err}");
            let named = format!("--chunker {NEW_STORES}; --chunker {other}");
            assert!(err.to_string().contains(&named), "{err}");
        }
    }

    #[test]
    fn a_first_mount_may_ask_for_any_search_and_the_store_keeps_it() {
        for search in CutSearch::ALL {
            let dir = tempfile::tempdir().unwrap();
            {
                let store = Store::open(dir.path()).unwrap();
                assert_eq!(store.settle_chunker(Some(search)).unwrap(), search);
            }
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.settle_chunker(None).unwrap(), search);
            for other in CutSearch::ALL.into_iter().filter(|&s| s != search) {
                assert!(store.settle_chunker(Some(other)).is_err());
            }
        }
    }

    #[test]
    fn a_store_without_a_record_was_cut_by_fastcdc() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.db.delete_cf(store.cf(CF_META), META_CHUNKER).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.settle_chunker(None).unwrap(), CutSearch::FastCdc);
        assert!(store.settle_chunker(Some(CutSearch::Rollsum)).is_err());
    }

    #[test]
    fn an_unknown_record_is_refused_as_corrupt_not_taken_for_fastcdc() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .db
                .put_cf(store.cf(CF_META), META_CHUNKER, b"gear")
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let err = store.settle_chunker(None).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("gear"), "{err}");
    }
}
