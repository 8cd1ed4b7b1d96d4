//! The import check of `cargo xtask lint`: the agent's modules import each
//! other without cycles, and down the data path only.
//!
//! Every file of `sensor/src` is a module; an import is any `crate::a::b`
//! path in it (in `use` items, braces expanded, or inline), resolved to the
//! longest module path that exists. Two rules:
//! - no cycle between files (a child module may use its parent's items —
//!   `config::web` its `ConfigError` — as Rust modules do; any other
//!   import counts);
//! - a file in stage folder `X` imports nothing from a stage that comes
//!   after `X` in [`STAGES`] (imports within a folder are free; files at
//!   the root — `main`, `cli`, `failure` — are the edge and may import
//!   anything).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

/// The stage folders, in data-path order: a folder may import from the
/// folders before it, never from those after it.
pub const STAGES: [&str; 12] = [
    "util", "config", "kernel", "collect", "enrich", "detect", "ledger", "alerts", "export",
    "audit", "tail", "cmd",
];

/// A module path (`["kernel", "loader"]`) and the file it lives in.
#[derive(Debug)]
struct Module {
    path: Vec<String>,
    file: PathBuf,
}

fn modules(src: &Path) -> Result<Vec<Module>> {
    let mut out = Vec::new();
    walk(src, src, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Module>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = entry?.path();
        if p.is_dir() {
            walk(root, &p, out)?;
            continue;
        }
        if p.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let rel = p.strip_prefix(root)?.with_extension("");
        let mut path: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if path.last().is_some_and(|l| l == "mod" || l == "main") {
            path.pop();
        }
        out.push(Module { path, file: p });
    }
    Ok(())
}

/// Every `crate::...` path in `text`, braces of `use` items expanded.
pub fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        // `$crate::` is a macro's own crate, not ours.
        let is_dollar = at > 0 && rest.as_bytes()[at - 1] == b'$';
        let after = &rest[at + "crate::".len()..];
        let end = path_end(after);
        if !is_dollar {
            expand(&[], &after[..end], &mut out);
        }
        rest = &after[end..];
    }
    out
}

/// Where the path (with nested braces) starting at `s` ends.
fn path_end(s: &str) -> usize {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            '}' => return i,
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => return i,
            _ => {}
        }
    }
    s.len()
}

/// `a::{b, c::{d}}` → `a::b`, `a::c::d`.
fn expand(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
    let s = s.trim();
    if let Some(open) = s.find('{') {
        let head: Vec<String> = s[..open]
            .split("::")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        let inner = &s[open + 1..s.rfind('}').unwrap_or(s.len())];
        let mut base = prefix.to_vec();
        base.extend(head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&base, &inner[start..], out);
    } else {
        let mut p = prefix.to_vec();
        p.extend(
            s.split("::")
                .map(|x| x.split_whitespace().next().unwrap_or("").to_string())
                .filter(|x| !x.is_empty() && x != "self"),
        );
        if !p.is_empty() {
            out.push(p);
        }
    }
}

/// The file graph: for each module, the modules it imports.
fn graph(mods: &[Module]) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut g = BTreeMap::new();
    for m in mods {
        let text = std::fs::read_to_string(&m.file)?;
        let mut deps = BTreeSet::new();
        for p in crate_paths(&text) {
            // The longest prefix that is a module.
            if let Some(target) = (1..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|c| known.contains(c))
            {
                if target != m.path && !m.path.starts_with(&target) {
                    deps.insert(target.join("::"));
                }
            }
        }
        g.insert(m.path.join("::"), deps);
    }
    Ok(g)
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        if let Some(deps) = s.g.get(v) {
            for w in deps {
                let w = w.as_str();
                if !s.g.contains_key(w) {
                    continue;
                }
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn stage_of(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    STAGES.iter().position(|s| *s == top)
}

/// Imports from a later stage: `(importer, imported)`.
fn upward(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (m, deps) in g {
        let Some(from) = stage_of(m) else { continue };
        for d in deps {
            if let Some(to) = stage_of(d) {
                if to > from {
                    out.push((m.clone(), d.clone()));
                }
            }
        }
    }
    out
}

/// Figures for the report: files per folder, the most imported module.
pub struct Report {
    pub files_per_folder: BTreeMap<String, usize>,
    pub most_imported: (String, usize),
}

/// Runs both rules on `src` and fails with every violation.
pub fn check(src: &Path) -> Result<Report> {
    let mods = modules(src)?;
    let g = graph(&mods)?;
    let cyc = cycles(&g);
    let up = upward(&g);
    let mut files_per_folder = BTreeMap::new();
    for m in &mods {
        let folder = if m.file.parent() == Some(src) {
            "(root)".to_string()
        } else {
            m.path.first().cloned().unwrap_or_default()
        };
        *files_per_folder.entry(folder).or_insert(0) += 1;
    }
    let mut imported: BTreeMap<&str, usize> = BTreeMap::new();
    for deps in g.values() {
        for d in deps {
            *imported.entry(d.as_str()).or_insert(0) += 1;
        }
    }
    let most_imported = imported
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, n)| (m.to_string(), *n))
        .unwrap_or_default();
    let mut problems = Vec::new();
    for c in &cyc {
        problems.push(format!("import cycle: {}", c.join(" → ")));
    }
    for (from, to) in &up {
        problems.push(format!(
            "{from} imports {to}: against the data path ({})",
            STAGES.join(" → ")
        ));
    }
    for m in &mods {
        let top_level_file = m.file.parent() == Some(src);
        if !top_level_file && stage_of(&m.path.join("::")).is_none() {
            problems.push(format!(
                "{}: folder is not a stage ({})",
                m.file.display(),
                STAGES.join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        bail!("imports of {}:\n  {}", src.display(), problems.join("\n  "));
    }
    Ok(Report {
        files_per_folder,
        most_imported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_items_are_expanded() {
        let text = "use crate::{\n    alerts::{rfc3339, AlertJson},\n    collect::Poll,\n    kernel::loader::{self, Sensor},\n};\n\
                    // crate::ignored::in_comment\nfn f() { crate::detect::window::run(); $crate::x::y(); }";
        let got: Vec<String> = crate_paths(text).iter().map(|p| p.join("::")).collect();
        assert_eq!(
            got,
            [
                "alerts::rfc3339",
                "alerts::AlertJson",
                "collect::Poll",
                "kernel::loader",
                "kernel::loader::Sensor",
                "detect::window::run"
            ]
        );
    }

    #[test]
    fn cycles_and_upward_imports_are_found() {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut add = |a: &str, b: &[&str]| {
            g.insert(a.into(), b.iter().map(|s| s.to_string()).collect());
        };
        add("collect", &["kernel::loader"]);
        add("kernel::loader", &["detect"]);
        add("detect", &["collect"]);
        add("export::metrics", &["collect"]);
        let c = cycles(&g);
        assert_eq!(c, vec![vec!["collect", "detect", "kernel::loader"]]);
        let up = upward(&g);
        assert_eq!(
            up,
            vec![("kernel::loader".to_string(), "detect".to_string())]
        );
    }

    #[test]
    fn the_agent_has_no_cycle_and_imports_down_the_data_path() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sensor/src");
        let r = check(&src).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(r.files_per_folder.len() > 5, "{:?}", r.files_per_folder);
    }
}
