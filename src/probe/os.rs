//! Turning what a guest says about itself into one readable OS name: pure functions for
//! each link of the detection chain, plus the host's libosinfo database for metadata ids.

use std::path::{Path, PathBuf};

use crate::agent::OsInfo;

/// First Windows build that is Windows 11 (the registry's product name still says 10).
const WINDOWS_11_FIRST_BUILD: u64 = 22_000;

/// `guest-get-osinfo` → text: `pretty-name`, else `name version`. On Windows, a build
/// ≥ 22000 is Windows 11 whatever the registry's product name says.
pub fn from_osinfo(info: &OsInfo) -> Option<String> {
    let text = non_empty(info.pretty_name.as_deref())
        .map(str::to_string)
        .or_else(|| {
            let name = non_empty(info.name.as_deref())?;
            Some(match non_empty(info.version.as_deref()) {
                Some(v) => format!("{name} {v}"),
                None => name.to_string(),
            })
        })?;
    if info.id.as_deref() == Some("mswindows")
        && windows_build(info) >= Some(WINDOWS_11_FIRST_BUILD)
    {
        return Some(text.replacen("Windows 10", "Windows 11", 1));
    }
    Some(text)
}

fn windows_build(info: &OsInfo) -> Option<u64> {
    // kernel-release is the build number ("22631"); version-id may be "10.0.22631" on
    // some agents, so take the last dotted part of either.
    [
        info.kernel_release.as_deref(),
        info.kernel_version.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find_map(|s| s.trim().rsplit('.').next()?.parse().ok())
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// The value of one os-release line's right-hand side (quotes and escapes removed).
fn unquote(v: &str) -> String {
    let v = v.trim();
    let quoted = v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')));
    if !quoted {
        return v.to_string();
    }
    let inner = &v[1..v.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// os-release text → (text, id): `PRETTY_NAME`, else `NAME VERSION`.
pub fn from_os_release(content: &str) -> Option<(String, Option<String>)> {
    let mut pretty = None;
    let mut name = None;
    let mut version = None;
    let mut id = None;
    for line in content.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value);
        if value.is_empty() {
            continue;
        }
        match key.trim() {
            "PRETTY_NAME" => pretty = Some(value),
            "NAME" => name = Some(value),
            "VERSION" => version = Some(value),
            "ID" => id = Some(value),
            _ => {}
        }
    }
    let text = pretty.or_else(|| {
        let name = name?;
        Some(match version {
            Some(v) => format!("{name} {v}"),
            None => name,
        })
    })?;
    Some((text, id))
}

/// `uname -sr` output → text (`Linux 6.1.0-18-amd64`).
pub fn from_uname(output: &str) -> Option<String> {
    let line = output.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.to_string())
}

/// `cmd /c ver` output (`Microsoft Windows [Version 10.0.22631.2428]`) → text, naming
/// Windows 11 by its build.
pub fn from_windows_ver(output: &str) -> Option<String> {
    let line = output.lines().map(str::trim).find(|l| !l.is_empty())?;
    let version = line
        .split_once("[Version ")
        .and_then(|(_, rest)| rest.split(']').next())?;
    let build: Option<u64> = version.split('.').nth(2).and_then(|b| b.parse().ok());
    let major = version.split('.').next().unwrap_or_default();
    let family = match (major, build) {
        ("10", Some(b)) if b >= WINDOWS_11_FIRST_BUILD => "Windows 11",
        ("10", _) => "Windows 10",
        _ => "Windows",
    };
    Some(format!("Microsoft {family} (version {version})"))
}

/// The host's osinfo database (package osinfo-db), for libosinfo ids in domain XML.
#[derive(Debug, Clone)]
pub struct OsinfoDb {
    root: PathBuf,
}

impl OsinfoDb {
    /// `$OSINFO_SYSTEM_DIR` (libosinfo's own override), else `/usr/share/osinfo`.
    pub fn system() -> OsinfoDb {
        let root = std::env::var_os("OSINFO_SYSTEM_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/share/osinfo"));
        OsinfoDb { root }
    }

    pub fn at(root: &Path) -> OsinfoDb {
        OsinfoDb {
            root: root.to_path_buf(),
        }
    }

    /// A readable name for a libosinfo id: from the database when it knows the id, else
    /// derived from the id itself.
    pub fn name_for(&self, id: &str) -> String {
        self.lookup(id).unwrap_or_else(|| derive_name(id))
    }

    fn lookup(&self, id: &str) -> Option<String> {
        // The database stores http://microsoft.com/win/2k22 in os/microsoft.com/win-2k22.xml.
        let rest = id
            .strip_prefix("http://")
            .or_else(|| id.strip_prefix("https://"))?;
        let (host, path) = rest.split_once('/')?;
        if host.contains("..") || host.contains('/') || path.contains("..") {
            return None;
        }
        let file = self
            .root
            .join("os")
            .join(host)
            .join(format!("{}.xml", path.replace('/', "-")));
        let text = std::fs::read_to_string(file).ok()?;
        let doc = roxmltree::Document::parse(&text).ok()?;
        let os = doc
            .descendants()
            .find(|n| n.has_tag_name("os") && n.attribute("id") == Some(id))?;
        os.children()
            .find(|n| n.has_tag_name("name") && !n.attributes().any(|a| a.name() == "lang"))
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }
}

/// A name from the id alone, for hosts without osinfo-db:
/// `http://microsoft.com/win/2k22` → `Windows Server 2022`,
/// `http://ubuntu.com/ubuntu/22.04` → `ubuntu 22.04`.
pub fn derive_name(id: &str) -> String {
    let rest = id
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let mut parts = rest.splitn(2, '/');
    let host = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    if host == "microsoft.com" {
        if let Some(v) = path.strip_prefix("win/") {
            let server = |y: &str| format!("Windows Server 20{y}");
            return match v {
                "2k22" => server("22"),
                "2k19" => server("19"),
                "2k16" => server("16"),
                "2k12r2" => "Windows Server 2012 R2".to_string(),
                "2k12" => server("12"),
                "2k8r2" => "Windows Server 2008 R2".to_string(),
                "2k8" => server("08"),
                other => format!("Windows {other}"),
            };
        }
    }
    let words: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if words.is_empty() {
        id.to_string()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> OsInfo {
        let v: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        serde_json::from_value(serde_json::Value::Object(v)).unwrap()
    }

    #[test]
    fn osinfo_prefers_pretty_name() {
        assert_eq!(
            from_osinfo(&info(&[
                ("pretty-name", "Ubuntu 18.04.6 LTS"),
                ("name", "Ubuntu")
            ])),
            Some("Ubuntu 18.04.6 LTS".into())
        );
        assert_eq!(
            from_osinfo(&info(&[
                ("name", "CentOS Stream"),
                ("version", "10 (Coughlan)")
            ])),
            Some("CentOS Stream 10 (Coughlan)".into())
        );
        assert_eq!(from_osinfo(&info(&[("pretty-name", "  ")])), None);
        assert_eq!(from_osinfo(&OsInfo::default()), None);
    }

    #[test]
    fn windows_11_is_told_by_its_build() {
        let win11 = info(&[
            ("id", "mswindows"),
            ("pretty-name", "Windows 10 Pro"),
            ("kernel-release", "22631"),
            ("version-id", "11"),
        ]);
        assert_eq!(from_osinfo(&win11), Some("Windows 11 Pro".into()));
        let win10 = info(&[
            ("id", "mswindows"),
            ("pretty-name", "Windows 10 Pro"),
            ("kernel-release", "19045"),
        ]);
        assert_eq!(from_osinfo(&win10), Some("Windows 10 Pro".into()));
        let server = info(&[
            ("id", "mswindows"),
            ("pretty-name", "Windows Server 2022 Datacenter"),
            ("kernel-release", "20348"),
        ]);
        assert_eq!(
            from_osinfo(&server),
            Some("Windows Server 2022 Datacenter".into())
        );
    }

    #[test]
    fn os_release_parsing() {
        let centos = "NAME=\"CentOS Stream\"\nVERSION=\"10 (Coughlan)\"\nID=\"centos\"\nPRETTY_NAME=\"CentOS Stream 10 (Coughlan)\"\n";
        assert_eq!(
            from_os_release(centos),
            Some(("CentOS Stream 10 (Coughlan)".into(), Some("centos".into())))
        );
        assert_eq!(
            from_os_release("NAME='Alpine Linux'\nVERSION=3.19\n# comment\n"),
            Some(("Alpine Linux 3.19".into(), None))
        );
        assert_eq!(
            from_os_release("PRETTY_NAME=\"say \\\"hi\\\"\"\n")
                .unwrap()
                .0,
            "say \"hi\""
        );
        assert_eq!(from_os_release("garbage\n"), None);
        assert_eq!(from_os_release(""), None);
    }

    #[test]
    fn windows_ver_and_uname() {
        assert_eq!(
            from_windows_ver("\r\nMicrosoft Windows [Version 10.0.22631.2428]\r\n"),
            Some("Microsoft Windows 11 (version 10.0.22631.2428)".into())
        );
        assert_eq!(
            from_windows_ver("Microsoft Windows [Version 10.0.20348.587]"),
            Some("Microsoft Windows 10 (version 10.0.20348.587)".into())
        );
        assert_eq!(from_windows_ver("nope"), None);
        assert_eq!(
            from_uname("\nLinux 6.1.0-18-amd64\n"),
            Some("Linux 6.1.0-18-amd64".into())
        );
    }

    #[test]
    fn metadata_ids_have_names_without_a_database() {
        let empty = OsinfoDb::at(Path::new("/nonexistent"));
        assert_eq!(
            empty.name_for("http://microsoft.com/win/2k22"),
            "Windows Server 2022"
        );
        assert_eq!(
            empty.name_for("http://ubuntu.com/ubuntu/22.04"),
            "ubuntu 22.04"
        );
        assert_eq!(empty.name_for("http://microsoft.com/win/11"), "Windows 11");
        let traversal = "http://x.org/../../etc/passwd";
        assert_eq!(empty.name_for(traversal), derive_name(traversal));
    }

    #[test]
    fn metadata_ids_use_the_database() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("os/microsoft.com")).unwrap();
        std::fs::write(
            dir.path().join("os/microsoft.com/win-2k22.xml"),
            r#"<libosinfo version="0.0.1"><os id="http://microsoft.com/win/2k22"><short-id>win2k22</short-id><name xml:lang="de">Falsch</name><name>Microsoft Windows Server 2022</name></os></libosinfo>"#,
        )
        .unwrap();
        let db = OsinfoDb::at(dir.path());
        assert_eq!(
            db.name_for("http://microsoft.com/win/2k22"),
            "Microsoft Windows Server 2022"
        );
        assert_eq!(
            db.name_for("http://microsoft.com/win/2k19"),
            "Windows Server 2019"
        );
    }
}
