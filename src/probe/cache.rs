//! The OS answer cache: positive answers and remembered agent timeouts, per connection
//! URI and domain UUID, with a TTL. It persists between invocations in one JSON file in
//! the user's cache directory, written atomically (temp file + rename), so a second
//! `scan` within the TTL asks no agent and never waits for a frozen one again.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::snapshot::{AgentStatus, OsAnswer};

/// What we remember about one guest's OS probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub name: String,
    /// Unix seconds when the answer was stored.
    pub stored_at: u64,
    pub agent: AgentStatus,
    pub os: OsAnswer,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    /// Key: `URI uuid`.
    entries: HashMap<String, CacheEntry>,
}

const FORMAT_VERSION: u32 = 1;

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// In-memory cache, optionally backed by a file.
#[derive(Debug)]
pub struct OsCache {
    path: Option<PathBuf>,
    entries: HashMap<String, CacheEntry>,
    dirty: bool,
}

fn key(uri: &str, uuid: &str) -> String {
    format!("{uri} {uuid}")
}

impl OsCache {
    /// A cache that lives only in memory.
    pub fn in_memory() -> OsCache {
        OsCache {
            path: None,
            entries: HashMap::new(),
            dirty: false,
        }
    }

    /// Load from `path`; a missing, unreadable or corrupt file is an empty cache (the
    /// cache only ever saves time, it is never a source of truth).
    pub fn load(path: &Path) -> OsCache {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .filter(|f| f.version == FORMAT_VERSION)
            .map(|f| f.entries)
            .unwrap_or_default();
        OsCache {
            path: Some(path.to_path_buf()),
            entries,
            dirty: false,
        }
    }

    /// A fresh entry (younger than `ttl_secs`), if any.
    pub fn get(&self, uri: &str, uuid: &str, ttl_secs: u64) -> Option<&CacheEntry> {
        let e = self.entries.get(&key(uri, uuid))?;
        let age = now_unix().saturating_sub(e.stored_at);
        (age < ttl_secs).then_some(e)
    }

    pub fn put(&mut self, uri: &str, uuid: &str, entry: CacheEntry) {
        self.entries.insert(key(uri, uuid), entry);
        self.dirty = true;
    }

    /// Write the file (when backed by one and changed), dropping entries older than
    /// `ttl_secs`. Errors are returned for the caller to mention, never fatal.
    pub fn save(&mut self, ttl_secs: u64) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let now = now_unix();
        self.entries
            .retain(|_, e| now.saturating_sub(e.stored_at) < ttl_secs.max(1));
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let file = CacheFile {
            version: FORMAT_VERSION,
            entries: self.entries.clone(),
        };
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("cache"),
            std::process::id()
        ));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&file)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::OsSource;

    fn entry(stored_at: u64) -> CacheEntry {
        CacheEntry {
            name: "vm".into(),
            stored_at,
            agent: AgentStatus::Ok,
            os: OsAnswer::known("Ubuntu".into(), None, OsSource::GuestGetOsinfo),
        }
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let mut c = OsCache::in_memory();
        c.put("u", "1", entry(now_unix()));
        c.put("u", "2", entry(now_unix() - 100));
        assert!(c.get("u", "1", 60).is_some());
        assert!(c.get("u", "2", 60).is_none());
        assert!(c.get("other", "1", 60).is_none());
    }

    #[test]
    fn survives_a_round_trip_and_ignores_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/os-cache.json");
        let mut c = OsCache::load(&path);
        c.put("u", "1", entry(now_unix()));
        c.save(60).unwrap();
        let again = OsCache::load(&path);
        assert_eq!(
            again.get("u", "1", 60),
            Some(&entry(again.get("u", "1", 60).unwrap().stored_at))
        );
        std::fs::write(&path, b"{not json").unwrap();
        assert!(OsCache::load(&path).get("u", "1", 60).is_none());
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }
}
