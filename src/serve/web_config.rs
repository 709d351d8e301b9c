//! The web configuration file of Prometheus's exporter-toolkit (`--web.config.file`):
//! TLS and basic auth, read the way node_exporter and every exporter of the Prometheus
//! project read them, so one file (and `promtool check web-config`) serves them all.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12             # TLS12 (default) or TLS13
//!   max_version: TLS13
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt, e.g. `htpasswd -nbBC 10 "" PASSWORD`
//! ```
//!
//! The file is read once at start; every problem is one line and exit 2. Keys the
//! exporter-toolkit knows but this exporter does not implement (cipher suites, curves,
//! inline certificates, allowed SANs, rate limits) are refused by name rather than
//! silently ignored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Response headers a web config may add: exporter-toolkit's list, for the same reason
/// (consistency across the Prometheus ecosystem), with its fixed values where it has any.
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// How many successful logins are remembered (so a scrape with good credentials costs
/// a SHA-256, not a bcrypt run of ~50 ms); the memory is cleared when full.
const AUTH_CACHE_ENTRIES: usize = 256;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    // Known to the exporter-toolkit, not implemented here: refused by name.
    cert: Option<serde_norway::Value>,
    key: Option<serde_norway::Value>,
    client_ca: Option<serde_norway::Value>,
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// Who must present a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// The TLS part, checked: the files exist and parse, the key matches the certificate.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    /// TLS 1.2 allowed (else 1.3 only).
    pub tls12: bool,
    /// TLS 1.3 allowed (else 1.2 only).
    pub tls13: bool,
    pub prefer_server_cipher_suites: bool,
}

/// A web configuration file, read and checked.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// Where it was read from (for log lines).
    pub path: Option<PathBuf>,
    /// The rustls server configuration, when the file asks for TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tls_settings: Option<TlsSettings>,
    /// Basic auth, when the file has users.
    pub auth: Option<Arc<BasicAuth>>,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls_settings)
            .field("users", &self.auth.as_ref().map(|a| a.users.len()))
            .field("headers", &self.headers)
            .finish()
    }
}

/// Read and check a web configuration file. The error is one line naming the file.
pub fn load(path: &Path) -> Result<WebConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("web config file {}: cannot read it: {e}", path.display()))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, dir)
        .map(|mut c| {
            c.path = Some(path.to_path_buf());
            c
        })
        .map_err(|e| format!("web config file {}: {}", path.display(), one_line(&e)))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parse the YAML text; relative paths are taken from `dir` (the file's folder).
pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
    // An empty file (or one of comments only) is valid: plain HTTP, no auth.
    let value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    if value.is_null() {
        return Ok(WebConfig::default());
    }
    // From the text again (not the value): the error then names the key and the line.
    let raw: RawFile = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    if raw.rate_limit.is_some() {
        return Err(unsupported("rate_limit"));
    }
    let tls_settings = match raw.tls_server_config {
        Some(t) => tls_settings(t, dir)?,
        None => None,
    };
    let tls = match &tls_settings {
        Some(s) => Some(Arc::new(server_config(s)?)),
        None => None,
    };
    let auth = match raw.basic_auth_users {
        Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users)?)),
        _ => None,
    };
    let mut headers = Vec::new();
    if let Some(http) = raw.http_server_config {
        // HTTP/2 is never offered (Prometheus scrapes over HTTP/1.1); the key is accepted
        // so one file fits every exporter of a host.
        let _ = http.http2;
        for (name, value) in http.headers.unwrap_or_default() {
            headers.push(extra_header(&name, &value)?);
        }
    }
    Ok(WebConfig {
        path: None,
        tls,
        tls_settings,
        auth,
        headers,
    })
}

fn unsupported(key: &str) -> String {
    format!("{key} is not supported by this exporter (remove it; see docs/serve.md)")
}

fn extra_header(name: &str, value: &str) -> Result<(String, String), String> {
    let Some((canonical, allowed)) = EXTRA_HEADERS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    else {
        let names: Vec<&str> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "http_server_config.headers: {name:?} is not one of {}",
            names.join(", ")
        ));
    };
    if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
        return Err(format!(
            "http_server_config.headers: {canonical} must be one of {}, got {value:?}",
            allowed.join(", ")
        ));
    }
    if value.is_empty() || value.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!(
            "http_server_config.headers: {canonical} has an empty value or control characters"
        ));
    }
    Ok((canonical.to_string(), value.to_string()))
}

fn tls_version(key: &str, v: &str) -> Result<u8, String> {
    match v {
        "TLS10" => Ok(10),
        "TLS11" => Ok(11),
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        _ => Err(format!(
            "tls_server_config.{key}: unknown TLS version {v:?} (TLS10, TLS11, TLS12 or TLS13)"
        )),
    }
}

fn tls_settings(t: RawTls, dir: &Path) -> Result<Option<TlsSettings>, String> {
    for (key, set) in [
        ("cert", t.cert.is_some()),
        ("key", t.key.is_some()),
        ("client_ca", t.client_ca.is_some()),
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ] {
        if set {
            let hint = match key {
                "cert" | "key" | "client_ca" => " (use cert_file, key_file, client_ca_file)",
                "cipher_suites" | "curve_preferences" => {
                    " (rustls offers only modern suites and curves)"
                }
                _ => "",
            };
            return Err(format!(
                "{}{hint}",
                unsupported(&format!("tls_server_config.{key}"))
            ));
        }
    }
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let (cert_file, key_file) = (nonempty(t.cert_file), nonempty(t.key_file));
    let client_ca_file = nonempty(t.client_ca_file);
    let client_auth_type = nonempty(t.client_auth_type);
    let enabled = cert_file.is_some()
        || key_file.is_some()
        || client_ca_file.is_some()
        || client_auth_type.is_some();
    if !enabled {
        // As the exporter-toolkit does: an empty TLS section means plain HTTP.
        return Ok(None);
    }
    let cert_file = cert_file.ok_or("tls_server_config: cert_file is missing")?;
    let key_file = key_file.ok_or("tls_server_config: key_file is missing")?;
    let client_auth = match client_auth_type.as_deref() {
        None | Some("NoClientCert") => ClientAuth::NoClientCert,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
        Some(other @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert")) => {
            return Err(format!(
                "tls_server_config.client_auth_type {other} (an unverified client certificate) is not supported: use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
            ))
        }
        Some(other) => {
            return Err(format!(
                "tls_server_config.client_auth_type: unknown value {other:?} (NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ))
        }
    };
    match (client_auth, &client_ca_file) {
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err("tls_server_config: client_ca_file is set but client_auth_type is not (VerifyClientCertIfGiven or RequireAndVerifyClientCert)".into())
        }
        (ClientAuth::NoClientCert, None) => {}
        (_, None) => {
            return Err(
                "tls_server_config: client_auth_type verifies client certificates and needs client_ca_file"
                    .into(),
            )
        }
        (_, Some(_)) => {}
    }
    let min = match t.min_version.as_deref() {
        Some(v) => tls_version("min_version", v)?,
        None => 12,
    };
    let max = match t.max_version.as_deref() {
        Some(v) => tls_version("max_version", v)?,
        None => 13,
    };
    if max < 12 {
        return Err(format!(
            "tls_server_config.max_version TLS{max}: TLS 1.0 and 1.1 are not offered (TLS12 or TLS13)"
        ));
    }
    if min > max {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let at = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    };
    Ok(Some(TlsSettings {
        cert_file: at(cert_file),
        key_file: at(key_file),
        client_auth,
        client_ca_file: client_ca_file.map(at),
        // TLS 1.0 and 1.1 as a minimum mean "1.2 and up" here: rustls has nothing older.
        tls12: min <= 12,
        tls13: max >= 13,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
    }))
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("tls_server_config.{key} {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.{key} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls configuration for `s`, on the `ring` provider.
pub fn server_config(s: &TlsSettings) -> Result<rustls::ServerConfig, String> {
    let certs = read_certs("cert_file", &s.cert_file)?;
    let key_bytes = std::fs::read(&s.key_file)
        .map_err(|e| format!("tls_server_config.key_file {}: {e}", s.key_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        format!(
            "tls_server_config.key_file {}: no usable PEM private key ({e})",
            s.key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (s.tls13, &rustls::version::TLS13),
        (s.tls12, &rustls::version::TLS12),
    ]
    .into_iter()
    .filter_map(|(on, v)| on.then_some(v))
    .collect();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match (s.client_auth, &s.client_ca_file) {
        (ClientAuth::NoClientCert, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs("client_ca_file", ca)? {
                roots.add(c).map_err(|e| {
                    format!("tls_server_config.client_ca_file {}: {e}", ca.display())
                })?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if auth == ClientAuth::VerifyClientCertIfGiven {
                v.allow_unauthenticated()
            } else {
                v
            };
            let v = v
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(v)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls_server_config: cert_file {} and key_file {}: {e}",
            s.cert_file.display(),
            s.key_file.display()
        )
    })?;
    config.ignore_client_order = s.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What a request's `Authorization` header amounts to, before any bcrypt run.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No usable `Authorization: Basic` header.
    Missing,
    /// These credentials succeeded before (a hash lookup, no bcrypt).
    Remembered,
    /// To be checked with bcrypt (slow: run it off the request path).
    Check { user: String, password: Vec<u8> },
}

/// Basic auth against bcrypt hashes, remembering successful logins.
pub struct BasicAuth {
    users: HashMap<String, String>,
    /// A hash of the cost of the users' hashes, for unknown users: their request costs
    /// as much as a known user's, so timing does not tell which names exist.
    decoy: String,
    remembered: Mutex<HashSet<[u8; 32]>>,
}

impl BasicAuth {
    /// Check every hash now, so a bad one is an error at start, not a 401 at 3 am.
    pub fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, String> {
        let mut cost = 4;
        for (user, hash) in &users {
            if user.contains(':') {
                return Err(format!(
                    "basic_auth_users: the user name {user:?} has a ':', which basic auth cannot carry"
                ));
            }
            let parts: bcrypt::HashParts = hash.parse().map_err(|e| {
                format!("basic_auth_users: {user}: not a bcrypt hash ({e}); make one with `htpasswd -nbBC 10 \"\" PASSWORD`")
            })?;
            cost = cost.max(parts.get_cost());
        }
        let decoy = bcrypt::hash_with_salt(b"decoy password", cost.min(31), [7; 16])
            .map(|h| h.to_string())
            .map_err(|e| format!("basic_auth_users: {e}"))?;
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            decoy,
            remembered: Mutex::new(HashSet::new()),
        })
    }

    fn key(user: &str, password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password);
        h.finalize().into()
    }

    /// Read an `Authorization` header value.
    pub fn credentials(&self, header: Option<&[u8]>) -> Credentials {
        use base64::Engine;
        let Some(h) = header else {
            return Credentials::Missing;
        };
        let Some(b64) = std::str::from_utf8(h).ok().and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        }) else {
            return Credentials::Missing;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return Credentials::Missing;
        };
        let Some(colon) = raw.iter().position(|&b| b == b':') else {
            return Credentials::Missing;
        };
        let Ok(user) = String::from_utf8(raw[..colon].to_vec()) else {
            return Credentials::Missing;
        };
        let password = raw[colon + 1..].to_vec();
        let remembered = self
            .remembered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&Self::key(&user, &password));
        if remembered {
            Credentials::Remembered
        } else {
            Credentials::Check { user, password }
        }
    }

    /// The bcrypt check (tens of milliseconds at cost 10): true when the user exists and
    /// the password matches; a success is remembered.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.decoy.as_str(), false),
        };
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok {
            let mut r = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
            if r.len() >= AUTH_CACHE_ENTRIES {
                r.clear();
            }
            r.insert(Self::key(user, password));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `scrape-secret`, cost 4 (fast tests), made by Python's bcrypt.
    const HASH_2B: &str = "$2b$04$xsja4UIp8fVnzRSPzVA8J.1ciY992JumQNhCKcHwqi8xaqvyvzAKu";

    fn basic(user: &str, pass: &str) -> Vec<u8> {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
        .into_bytes()
    }

    #[test]
    fn an_empty_file_is_plain_http() {
        let dir = Path::new("/nonexistent");
        for text in ["", "# nothing\n", "---\n"] {
            let c = parse(text, dir).unwrap();
            assert!(c.tls.is_none() && c.auth.is_none() && c.headers.is_empty());
        }
        let c = parse("tls_server_config: {}\nbasic_auth_users: {}\n", dir).unwrap();
        assert!(c.tls.is_none() && c.auth.is_none());
    }

    #[test]
    fn users_and_headers_parse() {
        // htpasswd writes $2y$, Python and Go $2b$/$2a$: the same algorithm.
        let y = HASH_2B.replacen("$2b$", "$2y$", 1);
        let text = format!(
            "basic_auth_users:\n  prometheus: {HASH_2B}\n  other: '{y}'\nhttp_server_config:\n  http2: false\n  headers:\n    x-content-type-options: nosniff\n    Strict-Transport-Security: max-age=31536000\n"
        );
        let c = parse(&text, Path::new(".")).unwrap();
        let auth = c.auth.unwrap();
        assert!(auth.verify("prometheus", b"scrape-secret"));
        assert!(auth.verify("other", b"scrape-secret"));
        assert!(!auth.verify("prometheus", b"wrong"));
        assert!(!auth.verify("nobody", b"scrape-secret"));
        assert_eq!(
            c.headers,
            vec![
                (
                    "Strict-Transport-Security".to_string(),
                    "max-age=31536000".to_string()
                ),
                ("X-Content-Type-Options".to_string(), "nosniff".to_string()),
            ]
        );
    }

    #[test]
    fn credentials_are_read_and_successes_remembered() {
        let users = BTreeMap::from([("prometheus".to_string(), HASH_2B.to_string())]);
        let auth = BasicAuth::new(users).unwrap();
        assert_eq!(auth.credentials(None), Credentials::Missing);
        assert_eq!(auth.credentials(Some(b"Bearer abc")), Credentials::Missing);
        assert_eq!(
            auth.credentials(Some(b"Basic !!notbase64")),
            Credentials::Missing
        );
        let good = basic("prometheus", "scrape-secret");
        let Credentials::Check { user, password } = auth.credentials(Some(&good)) else {
            panic!("not checked yet")
        };
        assert_eq!(
            (user.as_str(), &password[..]),
            ("prometheus", &b"scrape-secret"[..])
        );
        assert!(auth.verify(&user, &password));
        assert_eq!(auth.credentials(Some(&good)), Credentials::Remembered);
        // A wrong password is never remembered, and ':' may appear in a password.
        let bad = basic("prometheus", "scrape:secret");
        let Credentials::Check { user, password } = auth.credentials(Some(&bad)) else {
            panic!("a wrong password must be checked")
        };
        assert_eq!(password, b"scrape:secret");
        assert!(!auth.verify(&user, &password));
        assert!(matches!(
            auth.credentials(Some(&bad)),
            Credentials::Check { .. }
        ));
    }

    #[test]
    fn bad_files_are_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cases: &[(&str, &str)] = &[
            ("tls_server_config:\n  cert_fil: x\n", "cert_fil"),
            ("basic_auth_user:\n  a: b\n", "basic_auth_user"),
            ("basic_auth_users:\n  a: plaintext\n", "not a bcrypt hash"),
            ("basic_auth_users: [a, b]\n", "basic_auth_users"),
            ("tls_server_config:\n  cert_file: c.pem\n", "key_file is missing"),
            ("tls_server_config:\n  key_file: k.pem\n", "cert_file is missing"),
            (
                "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n",
                "c.pem",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Sometimes\n",
                "unknown value",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n",
                "not supported",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n",
                "client_auth_type is not",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS14\n",
                "unknown TLS version",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  max_version: TLS11\n",
                "not offered",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n",
                "above max_version",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "cipher_suites is not supported",
            ),
            ("rate_limit:\n  burst: 1\n", "rate_limit is not supported"),
            (
                "http_server_config:\n  headers:\n    X-Powered-By: me\n",
                "X-Powered-By",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "deny, sameorigin",
            ),
            ("tls_server_config: [\n", "line 2"),
        ];
        for (text, needle) in cases {
            let p = d.join("web.yml");
            std::fs::write(&p, text).unwrap();
            let e = load(&p).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.starts_with("web config file "), "{e}");
            assert!(!e.contains('\n'), "{e:?}");
        }
        let e = load(&d.join("missing.yml")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn tls_files_are_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("c.pem"), "not a certificate\n").unwrap();
        std::fs::write(d.join("k.pem"), "not a key\n").unwrap();
        let p = d.join("web.yml");
        std::fs::write(
            &p,
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n",
        )
        .unwrap();
        let e = load(&p).unwrap_err();
        // Relative to the web config's folder, as the exporter-toolkit does.
        assert!(e.contains(&d.join("c.pem").display().to_string()), "{e}");
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
