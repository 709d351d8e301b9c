//! The scan cache, per connection URI and domain UUID, each part with its own TTL:
//!
//! - OS answers: positive answers and remembered agent timeouts, so a second `scan` within
//!   the TTL asks no agent and never waits for a frozen one again;
//! - definition facts: what the XML of a shut-off domain said (drives, ISOs, libosinfo id,
//!   disks, interfaces), kept with the domain's definition tag (see
//!   [`crate::hypervisor::definition_tag`]). A scan reuses them only while the bulk
//!   statistics give the same tag — a changed ISO, disk, memory or vCPU count always means
//!   a fresh read — so libvirt's one-RPC-per-domain XML read is paid once, not every scan.
//!   With a statistics TTL the facts of running domains are kept too, for listings below;
//! - listings: with a statistics TTL (`--stats-ttl`, 0 by default), a host's domain list
//!   with each domain's state, memory, CPU time and definition tag, so a rescan within the
//!   TTL asks libvirt for none of it (a fleet over slow links rescans cheaply).
//!
//! It persists between invocations in one JSON file in the user's cache directory, written
//! atomically (temp file + rename).
//!
//! The file is read as untrusted: only a regular file, not through a link, at most
//! [`MAX_FILE`] bytes (a FIFO or /dev/zero planted there neither hangs nor fills memory),
//! and an entry stored "in the future" is dropped. It is written into a 0700 directory
//! through a temporary file created exclusively, 0600, never through a link.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::domxml::DomainXmlFacts;
use crate::hypervisor::DomainInfo;
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

/// What the XML of one domain said, and under which definition tag (`None`: a running
/// domain's, kept only for listings reused under a statistics TTL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionEntry {
    #[serde(default)]
    pub tag: Option<u64>,
    /// Unix seconds when the XML was read.
    pub stored_at: u64,
    pub facts: DomainXmlFacts,
}

#[derive(Debug, Default, Deserialize)]
struct CacheFile {
    version: u32,
    /// Key: `URI uuid`.
    entries: HashMap<String, CacheEntry>,
    /// Key: `URI uuid`. Absent in files of earlier releases.
    #[serde(default)]
    definitions: HashMap<String, DefinitionEntry>,
    /// Key: URI. Absent in files of earlier releases.
    #[serde(default)]
    listings: HashMap<String, Listing>,
}

/// One host's domain list as a scan read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    /// Unix seconds when the list was read.
    pub stored_at: u64,
    pub domains: Vec<ListedDomain>,
}

/// One domain of a [`Listing`]: what libvirt said, with its definition tag (which
/// [`DomainInfo`] itself does not serialize).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedDomain {
    #[serde(flatten)]
    pub info: DomainInfo,
    pub tag: Option<u64>,
}

/// At most this many domains of one listing are read back from the file.
const MAX_LISTED: usize = 100_000;

const FORMAT_VERSION: u32 = 1;

/// The largest cache file read: far above what thousands of VMs need.
pub const MAX_FILE: u64 = 16 << 20;

/// The bytes of `path` when it is a regular file of at most [`MAX_FILE`] bytes.
fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long each part of the cache is kept, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    pub os: u64,
    pub definition: u64,
    pub statistics: u64,
}

impl Ttls {
    /// Keeps every entry (for a save that only removes one thing).
    pub const KEEP: Ttls = Ttls {
        os: u64::MAX,
        definition: u64::MAX,
        statistics: u64::MAX,
    };
}

/// In-memory cache, optionally backed by a file.
#[derive(Debug)]
pub struct OsCache {
    path: Option<PathBuf>,
    entries: HashMap<String, CacheEntry>,
    definitions: HashMap<String, DefinitionEntry>,
    listings: HashMap<String, Listing>,
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
            definitions: HashMap::new(),
            listings: HashMap::new(),
            dirty: false,
        }
    }

    /// Load from `path`; a missing, unreadable or corrupt file is an empty cache (the
    /// cache only ever saves time, it is never a source of truth).
    pub fn load(path: &Path) -> OsCache {
        let now = now_unix();
        let file = read_bounded(path)
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .filter(|f| f.version == FORMAT_VERSION)
            .unwrap_or_default();
        let (mut entries, mut definitions, mut listings) =
            (file.entries, file.definitions, file.listings);
        // An entry from the future would never expire: not ours, or a clock gone wrong.
        entries.retain(|_, e| e.stored_at <= now + 60);
        definitions.retain(|_, e| e.stored_at <= now + 60);
        listings.retain(|_, l| l.stored_at <= now + 60 && l.domains.len() <= MAX_LISTED);
        OsCache {
            path: Some(path.to_path_buf()),
            entries,
            definitions,
            listings,
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

    /// The facts read from `uuid`'s XML under definition tag `tag`, when younger than
    /// `ttl_secs`.
    pub fn definition(
        &self,
        uri: &str,
        uuid: &str,
        tag: u64,
        ttl_secs: u64,
    ) -> Option<&DefinitionEntry> {
        let e = self.definitions.get(&key(uri, uuid))?;
        let age = now_unix().saturating_sub(e.stored_at);
        (e.tag == Some(tag) && age < ttl_secs).then_some(e)
    }

    /// The facts last read from `uuid`'s XML, whatever their tag, when younger than
    /// `ttl_secs`: for a listing reused under a statistics TTL, which has no fresher tag
    /// to compare with.
    pub fn last_definition(
        &self,
        uri: &str,
        uuid: &str,
        ttl_secs: u64,
    ) -> Option<&DefinitionEntry> {
        let e = self.definitions.get(&key(uri, uuid))?;
        let age = now_unix().saturating_sub(e.stored_at);
        (age < ttl_secs).then_some(e)
    }

    pub fn put_definition(
        &mut self,
        uri: &str,
        uuid: &str,
        tag: Option<u64>,
        facts: DomainXmlFacts,
    ) {
        let entry = DefinitionEntry {
            tag,
            stored_at: now_unix(),
            facts,
        };
        self.definitions.insert(key(uri, uuid), entry);
        self.dirty = true;
    }

    /// `uri`'s domain list with its age in seconds, when younger than `ttl_secs`.
    pub fn listing(&self, uri: &str, ttl_secs: u64) -> Option<(Vec<DomainInfo>, u64)> {
        let l = self.listings.get(uri)?;
        let age = now_unix().saturating_sub(l.stored_at);
        (age < ttl_secs).then(|| {
            let domains = l
                .domains
                .iter()
                .map(|d| DomainInfo {
                    definition_tag: d.tag,
                    ..d.info.clone()
                })
                .collect();
            (domains, age)
        })
    }

    /// Forget `uri`'s listing; whether there was one.
    pub fn remove_listing(&mut self, uri: &str) -> bool {
        let had = self.listings.remove(uri).is_some();
        self.dirty |= had;
        had
    }

    pub fn put_listing(&mut self, uri: &str, domains: &[DomainInfo]) {
        let domains = domains
            .iter()
            .map(|d| ListedDomain {
                info: d.clone(),
                tag: d.definition_tag,
            })
            .collect();
        let listing = Listing {
            stored_at: now_unix(),
            domains,
        };
        self.listings.insert(uri.to_string(), listing);
        self.dirty = true;
    }

    /// Forget what is stored for domains of `uri` that are not in `listed` (undefined
    /// since), so a long-running `serve` or `top` does not keep every domain it ever saw.
    pub fn forget_others(&mut self, uri: &str, listed: &std::collections::HashSet<&str>) {
        let prefix = format!("{uri} ");
        let gone = |k: &String| {
            k.strip_prefix(&prefix)
                .is_some_and(|uuid| !listed.contains(uuid))
        };
        let before = self.entries.len() + self.definitions.len();
        self.entries.retain(|k, _| !gone(k));
        self.definitions.retain(|k, _| !gone(k));
        if self.entries.len() + self.definitions.len() != before {
            self.dirty = true;
        }
    }

    /// Write the file (when backed by one and changed), dropping each part once older
    /// than its TTL. Errors are returned for the caller to mention, never fatal.
    pub fn save(&mut self, ttls: Ttls) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let now = now_unix();
        self.entries
            .retain(|_, e| now.saturating_sub(e.stored_at) < ttls.os.max(1));
        self.definitions
            .retain(|_, e| now.saturating_sub(e.stored_at) < ttls.definition);
        self.listings
            .retain(|_, l| now.saturating_sub(l.stored_at) < ttls.statistics);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // What CacheFile reads back, written from borrowed maps (no copy of either).
        #[derive(Serialize)]
        struct Written<'a> {
            version: u32,
            entries: &'a HashMap<String, CacheEntry>,
            definitions: &'a HashMap<String, DefinitionEntry>,
            listings: &'a HashMap<String, Listing>,
        }
        let file = Written {
            version: FORMAT_VERSION,
            entries: &self.entries,
            definitions: &self.definitions,
            listings: &self.listings,
        };
        // tempfile creates it with O_EXCL, 0600, under a random name: no link planted
        // in the directory is followed, and two runs never write into one file.
        let mut tmp = tempfile::Builder::new()
            .prefix(".os-cache-")
            .suffix(".tmp")
            .tempfile_in(dir)?;
        tmp.write_all(&serde_json::to_vec(&file)?)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::OsSource;

    fn ttls(secs: u64) -> Ttls {
        Ttls {
            os: secs,
            definition: secs,
            statistics: secs,
        }
    }

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
    fn hostile_files_are_neither_followed_nor_read_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        // A FIFO: opening it must not wait for a writer.
        let fifo = dir.path().join("fifo.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string and mode.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t = std::time::Instant::now();
        assert!(OsCache::load(&fifo).get("u", "a", 60).is_none());
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        // A character device that never ends.
        assert!(OsCache::load(Path::new("/dev/zero")).entries.is_empty());
        // A link to a real cache is not followed.
        let real = dir.path().join("real.json");
        let mut c = OsCache::load(&real);
        c.put("u", "a", entry(now_unix()));
        c.save(ttls(60)).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(OsCache::load(&link).entries.is_empty());
        assert!(OsCache::load(&real).get("u", "a", 60).is_some());
        // An entry from the future is dropped.
        let mut c = OsCache::load(&real);
        c.put("u", "b", entry(now_unix() + 86_400));
        c.save(ttls(100_000)).unwrap();
        let c = OsCache::load(&real);
        assert!(c.get("u", "b", 100_000).is_none());
        assert!(c.get("u", "a", 60).is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&real).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn survives_a_round_trip_and_ignores_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/os-cache.json");
        let mut c = OsCache::load(&path);
        c.put("u", "1", entry(now_unix()));
        c.save(ttls(60)).unwrap();
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
