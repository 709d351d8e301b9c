//! The Grafana dashboard in `contrib/grafana/`: its structure, and every query of every
//! panel (and of its variables) run against a real Prometheus that scrapes `serve` on the
//! harness, each required to return series.
//!
//! Grafana's variables are replaced as Grafana would with "All" selected (`$instance`,
//! `$domain` → `.*`) and a 1 s scrape interval (`$__rate_interval` → 4 s, Grafana's
//! floor of four scrape intervals); a second pass selects two domains and checks that no
//! other domain shows.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::prometheus::{Prometheus, Serve};
use common::*;
use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/grafana/dismount_iso_qemu.json"
);

/// The datasource every panel, target and query variable names.
const DATASOURCE_UID: &str = "${DS_PROMETHEUS}";

/// Prometheus's scrape interval here, and Grafana's interval variables for it.
const SCRAPE: Duration = Duration::from_secs(1);
const BUILTINS: [(&str, &str); 5] = [
    ("__rate_interval", "4s"),
    ("__interval_ms", "2000"),
    ("__interval", "2s"),
    ("__range_s", "60"),
    ("__range", "1m"),
];

/// The two domains of the "select some domains" pass, as Grafana writes a multi-value
/// selection into a regex.
const PICKED: [&str; 2] = [UBUNTU, CENTOS];

/// Metrics the issue asks the dashboard to show, each in some panel's query.
const COVERED: [&str; 12] = [
    "libvirt_up",
    "libvirt_domain_state",
    "os_pretty_name",
    "libvirt_domain_cpu_seconds_total",
    "libvirt_domain_memory_current_bytes",
    "libvirt_domain_memory_maximum_bytes",
    "libvirt_domain_block_stats_read_bytes_total",
    "libvirt_domain_block_stats_write_bytes_total",
    "libvirt_domain_interface_stats_receive_bytes_total",
    "libvirt_domain_interface_stats_transmit_bytes_total",
    "libvirt_domain_agent_status",
    "libvirt_domain_media_info",
];

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// One query of the dashboard: a panel's target, or a query variable.
struct Query {
    panel: String,
    ref_id: String,
    expr: String,
    /// Labels the legend shows (`{{label}}`): every series must carry them.
    legend_labels: Vec<String>,
}

/// Every panel, rows' nested panels included (rows themselves have no query).
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("a panels array") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

fn variables(dash: &Value) -> &Vec<Value> {
    dash["templating"]["list"]
        .as_array()
        .expect("a templating list")
}

fn variable<'a>(dash: &'a Value, name: &str) -> &'a Value {
    variables(dash)
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no variable {name}"))
}

fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}"))
        .map(|(label, _)| label.trim().to_string())
        .collect()
}

/// The variable's query as text, whichever form the JSON holds it in.
fn variable_query(v: &Value) -> String {
    v["query"]["query"]
        .as_str()
        .or_else(|| v["query"].as_str())
        .or_else(|| v["definition"].as_str())
        .unwrap_or_else(|| panic!("variable {} has no query", v["name"]))
        .to_string()
}

/// `label_values(SELECTOR, LABEL)` → (SELECTOR, LABEL).
fn parse_label_values(q: &str) -> (String, String) {
    let inner = q
        .trim()
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(…): {q}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .expect("label_values(selector, label)");
    (selector.trim().to_string(), label.trim().to_string())
}

/// Every query of the dashboard: the targets of every panel, then the query variables.
fn queries(dash: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(dash) {
        let title = p["title"].as_str().unwrap_or_default();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                panel: title.to_string(),
                ref_id: t["refId"].as_str().unwrap_or_default().to_string(),
                expr: t["expr"].as_str().unwrap_or_default().to_string(),
                legend_labels: legend_labels(t["legendFormat"].as_str().unwrap_or_default()),
            });
        }
    }
    for v in variables(dash).iter().filter(|v| v["type"] == "query") {
        let (selector, label) = parse_label_values(&variable_query(v));
        out.push(Query {
            panel: format!("variable ${}", v["name"].as_str().unwrap_or_default()),
            ref_id: "-".to_string(),
            expr: selector,
            legend_labels: vec![label],
        });
    }
    out
}

/// Grafana's interpolation of `$name`, `${name}`, `${name:fmt}` and `[[name]]`: the
/// dashboard's own variables from `values`, Grafana's built-ins from [`BUILTINS`].
/// A `$` followed by a digit is a regex group of `label_replace`, left alone.
fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = values.to_vec();
    all.extend(BUILTINS);
    // Longest names first, so `$__interval` never eats the start of `$__interval_ms`.
    all.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = expr.to_string();
    for (name, value) in &all {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("[[{name}]]"), value);
        for fmt in ["regex", "pipe", "raw"] {
            out = out.replace(&format!("${{{name}:{fmt}}}"), value);
        }
        out = out.replace(&format!("${name}"), value);
    }
    out
}

/// A variable left in `expr` after [`substitute`], if any.
fn leftover_variable(expr: &str) -> Option<String> {
    let bytes = expr.as_bytes();
    bytes.iter().enumerate().find_map(|(i, &b)| {
        let next = *bytes.get(i + 1)?;
        (b == b'$' && (next.is_ascii_alphabetic() || next == b'_' || next == b'{'))
            .then(|| expr[i..].chars().take(24).collect())
    })
}

/// Values of `label` over `series`.
fn label_values(series: &[Value], label: &str) -> BTreeSet<String> {
    series
        .iter()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_dashboard_is_well_formed() {
    let dash = dashboard();
    assert!(
        dash["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion {}",
        dash["schemaVersion"]
    );
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(dash["refresh"], "30s");

    // The datasource: a variable every panel, target and query variable refers to, so
    // the dashboard imports onto any Prometheus datasource.
    let ds = variable(&dash, "DS_PROMETHEUS");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let refers = |what: &str, d: &Value| {
        assert_eq!(d["type"], "prometheus", "{what}: datasource {d}");
        assert_eq!(d["uid"], DATASOURCE_UID, "{what}: datasource {d}");
    };

    // The variables: a host, and any number of its domains.
    let instance = variable(&dash, "instance");
    assert_eq!(instance["type"], "query");
    let domain = variable(&dash, "domain");
    assert_eq!(domain["type"], "query");
    assert_eq!(domain["multi"], true, "{domain}");
    assert_eq!(domain["includeAll"], true, "{domain}");
    let (selector, label) = parse_label_values(&variable_query(domain));
    assert_eq!(label, "domain");
    assert!(selector.contains("$instance"), "{selector}");
    for v in variables(&dash).iter().filter(|v| v["type"] == "query") {
        refers(&format!("variable {}", v["name"]), &v["datasource"]);
    }

    let panels = panels(&dash);
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "a panel without a title: {p}");
        assert!(p["type"].as_str().is_some_and(|t| !t.is_empty()), "{title}");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "{title}: id used twice"
        );
        refers(title, &p["datasource"]);

        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(w >= 1 && h >= 1 && x + w <= 24, "{title}: gridPos {g}");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let apart = x + w <= *ox || *ox + ow <= x || y + h <= *oy || *oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((title.to_string(), [x, y, w, h]));

        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
            refers(&format!("{title} {}", t["refId"]), &t["datasource"]);
            // Per-domain figures follow the domain selection.
            if expr.contains("libvirt_domain_") {
                assert!(expr.contains("$domain"), "{title}: ignores $domain: {expr}");
            }
            if expr.contains("libvirt_") || expr.contains("dismount_iso_qemu_") {
                assert!(
                    expr.contains("$instance"),
                    "{title}: ignores $instance: {expr}"
                );
            }
            let done = substitute(expr, &[("instance", ".*"), ("domain", ".*")]);
            assert_eq!(leftover_variable(&done), None, "{title}: {done}");
        }
    }

    let exprs: Vec<String> = queries(&dash).into_iter().map(|q| q.expr).collect();
    for metric in COVERED {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no panel shows {metric}"
        );
    }
    assert!(exprs.iter().any(|e| e.contains("scan_duration_seconds")));
}

/// One pass over every query: (series with every domain, series with [`PICKED`]).
struct Outcome {
    all: Result<Vec<Value>, String>,
    picked: Result<Vec<Value>, String>,
}

impl Outcome {
    fn count(r: &Result<Vec<Value>, String>) -> String {
        match r {
            Ok(series) => series.len().to_string(),
            Err(_) => "error".to_string(),
        }
    }

    /// What is wrong with this query's answer, if anything.
    fn problem(&self, q: &Query) -> Option<String> {
        let all = match &self.all {
            Err(e) => return Some(format!("query failed: {e}")),
            Ok(series) if series.is_empty() => return Some("no series".to_string()),
            Ok(series) => series,
        };
        for label in &q.legend_labels {
            if let Some(s) = all.iter().find(|s| s["metric"][label].as_str().is_none()) {
                return Some(format!("legend shows {{{{{label}}}}} but {s} has none"));
            }
        }
        if !q.expr.contains("$domain") {
            return None;
        }
        let picked = match &self.picked {
            Err(e) => return Some(format!("query with two domains failed: {e}")),
            Ok(series) => series,
        };
        let shown = label_values(picked, "domain");
        let others: Vec<&String> = shown
            .iter()
            .filter(|d| !PICKED.contains(&d.as_str()))
            .collect();
        if !others.is_empty() {
            return Some(format!("with {PICKED:?} selected it shows {others:?}"));
        }
        None
    }
}

fn run_all(prom: &Prometheus, queries: &[Query]) -> Vec<Outcome> {
    let picked = format!("({})", PICKED.join("|"));
    queries
        .iter()
        .map(|q| Outcome {
            all: prom.query(&substitute(
                &q.expr,
                &[("instance", ".*"), ("domain", ".*")],
            )),
            picked: prom.query(&substitute(
                &q.expr,
                &[("instance", ".*"), ("domain", &picked)],
            )),
        })
        .collect()
}

fn print_table(queries: &[Query], outcomes: &[Outcome]) {
    let width = queries.iter().map(|q| q.panel.len()).max().unwrap_or(5);
    println!(
        "{:width$}  {:3}  {:>6}  {:>7}  query (all domains)",
        "panel", "ref", "series", "2 doms"
    );
    for (q, o) in queries.iter().zip(outcomes) {
        println!(
            "{:width$}  {:3}  {:>6}  {:>7}  {}",
            q.panel,
            q.ref_id,
            Outcome::count(&o.all),
            Outcome::count(&o.picked),
            substitute(&q.expr, &[("instance", ".*"), ("domain", ".*")])
        );
    }
}

#[test]
fn every_panel_query_returns_series_from_a_real_prometheus() {
    if !harness_available()
        || !require(
            on_path("prometheus"),
            "prometheus",
            "`scripts/harness.sh deps` provides it (PATH gets $HARNESS_BIN)",
        )
    {
        return;
    }
    let t0 = Instant::now();
    let dash = dashboard();
    let queries = queries(&dash);

    // Prometheus starts (a few seconds) while serve makes its first scan.
    let serve = Serve::start("native", &["--probe-timeout", "3"], 1);
    let mut prom = Prometheus::start("diq", &[serve.addr], SCRAPE);
    serve.wait_healthy(Duration::from_secs(30));
    let healthy = t0.elapsed();
    prom.wait_for("libvirt_up{job=\"diq\"} == 1", Duration::from_secs(30));
    let first_scrape = t0.elapsed();
    // rate() and increase() over $__rate_interval need several samples in the window.
    let rate_interval = substitute("$__rate_interval", &[]);
    prom.wait_for(
        &format!("count_over_time(libvirt_up{{job=\"diq\"}}[{rate_interval}]) >= 4"),
        Duration::from_secs(20),
    );
    let enough_samples = t0.elapsed();

    // A guest busy with another test may miss a scan: ask again until every query
    // answers, for a while.
    let end = Instant::now() + Duration::from_secs(15);
    let mut passes = 0;
    let outcomes = loop {
        passes += 1;
        let outcomes = run_all(&prom, &queries);
        let waiting: Vec<String> = queries
            .iter()
            .zip(&outcomes)
            .filter_map(|(q, o)| {
                o.problem(q)
                    .map(|p| format!("{} {}: {p}", q.panel, q.ref_id))
            })
            .collect();
        if waiting.is_empty() || Instant::now() > end {
            break outcomes;
        }
        println!(
            "pass {passes} at {:.1?}: {}",
            t0.elapsed(),
            waiting.join("; ")
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let done = t0.elapsed();

    print_table(&queries, &outcomes);
    println!(
        "serve healthy {healthy:.1?}, first scrape {first_scrape:.1?}, enough samples \
         {enough_samples:.1?}, queries answered {done:.1?} ({passes} passes)"
    );

    // The variables list the harness's guests.
    let domain_var = queries
        .iter()
        .zip(&outcomes)
        .find(|(q, _)| q.panel == "variable $domain")
        .map(|(_, o)| o.all.clone().unwrap_or_default())
        .unwrap();
    let domains = label_values(&domain_var, "domain");
    for vm in [UBUNTU, CENTOS, PAUSED, WIN_OFF] {
        assert!(domains.contains(vm), "$domain lacks {vm}: {domains:?}");
    }

    let problems: Vec<String> = queries
        .iter()
        .zip(&outcomes)
        .filter_map(|(q, o)| {
            o.problem(q)
                .map(|p| format!("{} {}: {p}\n    {}", q.panel, q.ref_id, q.expr))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{} of {} dashboard queries failed:\n{}",
        problems.len(),
        queries.len(),
        problems.join("\n")
    );
}
