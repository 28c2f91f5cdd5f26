//! `check`, broken configs and `import`.

use std::process::Command;

use crate::support::*;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_names_file_line_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[gateway]\nseparator = \"__\"\n\n[servers.github]\ntransport = \"http\"\nurl = \"ftp://example.com\"\n\n[endpoints.eng.servers.gitlab]\ntools = [\"*\"]\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let (ok, _, err) = run(&["check", "--config", p]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{p}:6: servers.github.url: \"ftp://example.com\" must be an http:// or https:// URL"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:8: endpoints.eng.servers.gitlab: unknown server \"gitlab\""
        )),
        "{err}"
    );
    // serve refuses the same file and never starts half-configured
    let (ok, _, err) = run(&["serve", "--config", p, "--listen", "127.0.0.1:0"]);
    assert!(
        !ok && err.contains("invalid configuration") && !err.contains("listening"),
        "{err}"
    );
}

#[test]
fn syntax_errors_and_unknown_fields_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[servers.a]\ntransport = \"stdio\"\ncommand = \"x\"\ncomand = \"y\"\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.toml:") && err.contains("comand"), "{err}");
    std::fs::write(&path, "[servers.a\n").unwrap();
    let (ok, _, err) = run(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok && err.contains("bad.toml:1:"), "{err}");
}

#[test]
fn check_accepts_a_good_config_and_warns_about_nothing_exposed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    let mut c = String::from(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\n");
    std::fs::write(&path, c).unwrap();
    let (ok, out, err) = run(&["check", "--config", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("endpoints.main.servers.alpha: exposes nothing"),
        "{out}"
    );
    assert!(
        out.contains("ok (1 servers, 1 endpoints, 2 grants)")
            || out.contains("ok (1 servers, 1 endpoints, 1 grants)"),
        "{out}"
    );
}

#[test]
fn tools_marks_what_is_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    let mut c = String::from(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\"]\n");
    std::fs::write(&path, c).unwrap();
    let (ok, out, err) = run(&["tools", "--config", path.to_str().unwrap(), "--endpoint", "main"]);
    assert!(ok, "{err}");
    assert!(out.contains("[x] tool     alpha__echo"), "{out}");
    assert!(out.contains("[ ] tool     alpha__crash"), "{out}");
}

#[test]
fn import_claude_desktop_never_copies_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("claude_desktop_config.json");
    std::fs::write(&src, r#"{"mcpServers": {"memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"], "env": {"API_KEY": "sk-live-canary"}}}}"#).unwrap();
    let out = dir.path().join("gw.toml");
    let (ok, _, err) = run(&[
        "import",
        "claude-desktop",
        src.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("MEMORY_API_KEY"), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains("sk-live-canary"));
    let (ok, _, err) = run(&["check", "--config", out.to_str().unwrap()]);
    assert!(ok, "{err}");
}

#[test]
fn demo_runs_and_makes_a_call() {
    let out = Command::new(BIN)
        .args(["demo", "--once", "--port", "0"])
        .env("MCP_GUARD_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("calc__add(2, 40) = 42"), "{stdout}");
}

/// Every ```toml block of the README and of `docs/` passes `mcp-guard check`: a
/// reader can copy any of them into a file and start from it.
#[test]
fn the_documented_config_examples_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut pages = vec![std::path::PathBuf::from(format!("{root}/README.md"))];
    let mut docs: Vec<_> = std::fs::read_dir(format!("{root}/docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    let dir = tempfile::tempdir().unwrap();
    let mut blocks = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let name = page.file_name().unwrap().to_string_lossy();
        for (i, block) in text.split("```toml\n").skip(1).enumerate() {
            let toml = &block[..block.find("```").unwrap()];
            let path = dir.path().join(format!("{name}-{i}.toml"));
            std::fs::write(&path, toml).unwrap();
            let (ok, out, err) = run(&["check", "--config", path.to_str().unwrap()]);
            assert!(ok, "{name}: toml block {i}: {out}{err}");
            blocks += 1;
        }
    }
    assert!(blocks >= 8, "only {blocks} toml blocks found in the README and docs/");
}
