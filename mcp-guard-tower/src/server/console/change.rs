//! Changes to the configuration file: an edit of the document (format-preserving:
//! comments, order and layout stay), checked as `mcp-guard check` checks it, applied
//! through the reloader, and only then written over the file (a temporary file
//! renamed over it). A change to a file whose digest is not the one the form was
//! rendered from is refused as stale.

use mcp_guard_core::policy::Pattern;
use toml_edit::{Array, DocumentMut, Item, TableLike, Value};

use super::State;
use crate::server::ReloadReport;

/// Why a change was not applied. Nothing was changed, in the file or the gateway.
#[derive(Debug)]
pub(super) enum Refused {
    /// The file changed since the form was rendered.
    Stale,
    /// The configuration was built in code, not read from a file.
    NoFile,
    /// The edit does not fit the file, or the result does not check or build: the
    /// message `mcp-guard check` (or the reload) gives.
    Invalid(String),
    /// The file could not be read or written.
    Io(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stale => f.write_str(
                "the configuration changed since this page was loaded (another operator's change, or an edit of the file); reload the page and decide again",
            ),
            Self::NoFile => f.write_str(
                "this gateway's configuration was built in code, not read from a file, so the console cannot change it",
            ),
            Self::Invalid(m) => write!(f, "the change would leave the configuration invalid: {m}"),
            Self::Io(m) => f.write_str(m),
        }
    }
}

/// What an applied change did.
#[derive(Debug)]
pub(super) struct Applied {
    pub(super) report: ReloadReport,
    pub(super) before: String,
    pub(super) after: String,
}

impl State {
    /// Applies `edit` to the configuration file whose digest must still be `expected`:
    /// checked, reloaded, then written. One change at a time.
    pub(super) async fn change(
        &self,
        expected: &str,
        edit: impl FnOnce(&mut DocumentMut) -> Result<(), String>,
    ) -> Result<Applied, Refused> {
        self.change_text(expected, |text| {
            let mut doc: DocumentMut = text
                .parse()
                .map_err(|e: toml_edit::TomlError| e.message().to_owned())?;
            edit(&mut doc)?;
            Ok(doc.to_string())
        })
        .await
    }

    /// Replaces the configuration file's text with what `make` returns from it.
    pub(super) async fn change_text(
        &self,
        expected: &str,
        make: impl FnOnce(&str) -> Result<String, String>,
    ) -> Result<Applied, Refused> {
        let path = self.p.config_path.clone().ok_or(Refused::NoFile)?;
        let _one_at_a_time = self.change.lock().await;
        let bytes =
            std::fs::read(&path).map_err(|e| Refused::Io(format!("cannot read {}: {e}", path.display())))?;
        let before = super::digest(&bytes);
        if !super::same(&before, expected) {
            return Err(Refused::Stale);
        }
        let text = String::from_utf8(bytes).map_err(|_| Refused::Invalid("the file is not UTF-8".into()))?;
        let new_text = make(&text).map_err(Refused::Invalid)?;
        if new_text == text {
            return Ok(Applied {
                report: ReloadReport::default(),
                after: before.clone(),
                before,
            });
        }
        let loaded =
            crate::server::load_config_text(&path, &new_text).map_err(|e| Refused::Invalid(e.to_string()))?;
        let after = loaded.digest.clone();
        // Written beside the file first (so a full disk refuses the change before the
        // gateway takes it), renamed over it once the gateway took it.
        let aside = path.with_extension("console.tmp");
        std::fs::write(&aside, &new_text)
            .map_err(|e| Refused::Io(format!("cannot write {}: {e}", aside.display())))?;
        let report = match self.p.reloader.reload(loaded).await {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&aside);
                return Err(Refused::Invalid(e.to_string()));
            }
        };
        if let Err(e) = std::fs::rename(&aside, &path) {
            let _ = std::fs::remove_file(&aside);
            // Put the gateway back on the file as it is.
            if let Ok(old) = crate::server::load_config_text(&path, &text) {
                let _ = self.p.reloader.reload(old).await;
            }
            return Err(Refused::Io(format!("cannot write {}: {e}", path.display())));
        }
        Ok(Applied {
            report,
            before,
            after,
        })
    }
}

/// The table (or inline table) at `path` under `root`.
fn table_at<'a>(root: &'a mut dyn TableLike, path: &[&str]) -> Result<&'a mut dyn TableLike, String> {
    let mut t = root;
    for (i, key) in path.iter().enumerate() {
        t = t
            .get_mut(key)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| format!("the file has no [{}]", path[..=i].join(".")))?;
    }
    Ok(t)
}

fn strings(item: Option<&Item>) -> Vec<String> {
    item.and_then(Item::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn array_mut<'a>(t: &'a mut dyn TableLike, key: &str) -> Result<&'a mut Array, String> {
    if t.get(key).is_none() {
        t.insert(key, Item::Value(Value::Array(Array::new())));
    }
    t.get_mut(key)
        .and_then(Item::as_array_mut)
        .ok_or_else(|| format!("{key} is not a list"))
}

fn remove_value(a: &mut Array, value: &str) {
    a.retain(|v| v.as_str() != Some(value));
    // `["echo", "add"]` becomes `["add"]`, not `[ "add"]`; a multi-line list keeps its
    // line breaks.
    if let Some(first) = a.get_mut(0) {
        let inline = first
            .decor()
            .prefix()
            .and_then(|p| p.as_str())
            .is_some_and(|p| !p.contains('\n'));
        if inline {
            first.decor_mut().set_prefix("");
        }
    }
}

/// Switches tool `tool` (the upstream's name) of `server` on or off on `endpoint`:
/// off takes an exact entry out of `tools` and, where a glob still matches, names
/// the tool in `disabled_tools`; on takes it out of `disabled_tools` and, where no
/// glob matches, adds it to `tools`.
pub(super) fn toggle_tool(
    doc: &mut DocumentMut,
    endpoint: &str,
    server: &str,
    tool: &str,
    on: bool,
) -> Result<(), String> {
    let sel = table_at(doc.as_table_mut(), &["endpoints", endpoint, "servers", server])?;
    let matched = |globs: &[String]| {
        globs
            .iter()
            .any(|g| Pattern::new(g).is_ok_and(|p| p.is_match(tool)))
    };
    if on {
        if let Some(off) = sel.get_mut("disabled_tools").and_then(Item::as_array_mut) {
            remove_value(off, tool);
            if off.is_empty() {
                sel.remove("disabled_tools");
            }
        }
        if !matched(&strings(sel.get("tools"))) {
            array_mut(sel, "tools")?.push(tool);
        }
    } else {
        remove_value(array_mut(sel, "tools")?, tool);
        if matched(&strings(sel.get("tools")))
            && !strings(sel.get("disabled_tools")).iter().any(|t| t == tool)
        {
            array_mut(sel, "disabled_tools")?.push(tool);
        }
    }
    Ok(())
}

/// Sets `endpoints.ENDPOINT.redaction.DIRECTION` (`requests` or `responses`).
pub(super) fn set_redaction(
    doc: &mut DocumentMut,
    endpoint: &str,
    direction: &str,
    on: bool,
) -> Result<(), String> {
    if !matches!(direction, "requests" | "responses") {
        return Err(format!("{direction:?} is not a redaction direction"));
    }
    let ep = table_at(doc.as_table_mut(), &["endpoints", endpoint])?;
    if ep.get("redaction").is_none() {
        let mut t = toml_edit::Table::new();
        t.set_implicit(false);
        ep.insert("redaction", Item::Table(t));
    }
    let r = ep
        .get_mut("redaction")
        .and_then(Item::as_table_like_mut)
        .ok_or("redaction is not a table")?;
    r.insert(direction, toml_edit::value(on));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# the team's gateway\n[endpoints.main]\ndescription = \"main\" # kept\n\n\
        [endpoints.main.servers.alpha]\n# every tool\ntools = [\"*\"]\n\n\
        [endpoints.main.servers.beta]\ntools = [\"echo\", \"add\"]\n";

    fn doc() -> DocumentMut {
        FILE.parse().unwrap()
    }

    #[test]
    fn a_tool_matched_by_a_glob_is_switched_off_by_name_and_back_on() {
        let mut d = doc();
        toggle_tool(&mut d, "main", "alpha", "echo", false).unwrap();
        let off = d.to_string();
        assert!(off.contains("disabled_tools = [\"echo\"]"), "{off}");
        assert!(
            off.contains("# the team's gateway") && off.contains("# every tool") && off.contains("# kept")
        );
        toggle_tool(&mut d, "main", "alpha", "echo", true).unwrap();
        assert_eq!(d.to_string(), FILE, "switching back on restores the file");
    }

    #[test]
    fn an_exact_entry_is_taken_out_and_put_back() {
        let mut d = doc();
        toggle_tool(&mut d, "main", "beta", "echo", false).unwrap();
        let off = d.to_string();
        assert!(
            off.contains("tools = [\"add\"]") && !off.contains("disabled_tools"),
            "{off}"
        );
        toggle_tool(&mut d, "main", "beta", "echo", true).unwrap();
        assert!(d.to_string().contains("\"add\", \"echo\""), "{d}");
    }

    #[test]
    fn unknown_places_are_named() {
        let mut d = doc();
        assert_eq!(
            toggle_tool(&mut d, "main", "gamma", "echo", false).unwrap_err(),
            "the file has no [endpoints.main.servers.gamma]"
        );
        assert_eq!(d.to_string(), FILE);
    }

    #[test]
    fn hostile_names_stay_strings() {
        let mut d = doc();
        toggle_tool(&mut d, "main", "alpha", "x\"]\n[evil]\na = [\"", false).unwrap();
        let text = d.to_string();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert!(!parsed.contains_key("evil"), "{text}");
    }

    #[test]
    fn redaction_directions_are_set() {
        let mut d = doc();
        set_redaction(&mut d, "main", "responses", true).unwrap();
        let cfg: mcp_guard_core::config::GatewayConfig = toml::from_str(&d.to_string()).unwrap();
        assert!(cfg.endpoints["main"].redaction.responses);
        assert!(set_redaction(&mut d, "main", "sideways", true).is_err());
    }
}
