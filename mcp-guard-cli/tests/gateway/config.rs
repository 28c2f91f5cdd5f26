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

/// Every TOML code block of the README and of `docs/` passes `mcp-guard check`: a
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
    assert!(
        blocks >= 8,
        "only {blocks} toml blocks found in the README and docs/"
    );
}

/// Imports one fixture file with the binary, checks the result with `check`, and
/// returns the config text and what the command said on standard error.
fn import_file(format: &str, file: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let src = format!(
        "{}/tests/gateway/fixtures/import/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = dir.path().join("gw.toml");
    let (ok, _, err) = run(&["import", format, &src, "--output", out.to_str().unwrap()]);
    assert!(ok, "import {format} {file}: {err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let (ok, stdout, check_err) = run(&["check", "--config", out.to_str().unwrap()]);
    assert!(
        ok,
        "{file}: the imported config does not pass check: {stdout}{check_err}\n{text}"
    );
    let source = std::fs::read_to_string(&src).unwrap();
    for canary in source
        .match_indices("test-canary-")
        .map(|(i, _)| &source[i..i + 23])
    {
        assert!(
            !text.contains(canary),
            "{file}: a secret value was copied: {canary}\n{text}"
        );
    }
    (text, err)
}

#[test]
fn import_reads_each_clients_own_file_format() {
    // Claude Desktop: literal secrets become placeholders named after server and key.
    let (text, err) = import_file("claude-desktop", "claude_desktop_config.json");
    assert!(
        text.contains("\"GITHUB_PERSONAL_ACCESS_TOKEN\" = \"${GITHUB_GITHUB_PERSONAL_ACCESS_TOKEN}\""),
        "{text}"
    );
    assert!(err.contains("GITHUB_GITHUB_PERSONAL_ACCESS_TOKEN"), "{err}");

    // Cursor: `${env:NAME}` keeps its name and the text around it; an argument that
    // only the editor can fill in is kept as a comment, with the reason.
    let (text, err) = import_file("cursor", "cursor-mcp.json");
    assert!(
        text.contains("\"Authorization\" = \"Bearer ${SENTRY_TOKEN}\""),
        "{text}"
    );
    assert!(text.contains("\"PGPASSWORD\" = \"${PGPASSWORD}\""), "{text}");
    assert!(
        text.contains("# note: envFile \"${workspaceFolder}/.env\" was not read"),
        "{text}"
    );
    assert!(
        text.contains("# NOT IMPORTED: argument \"${workspaceFolder}\" uses ${workspaceFolder}"),
        "{text}"
    );
    assert!(
        !text.contains("[endpoints.default.servers.workspace-files]"),
        "{text}"
    );
    assert!(
        err.contains("not imported (left commented out): workspace-files"),
        "{err}"
    );

    // VS Code: JSON with comments, `inputs` referenced as `${input:id}`, http and sse.
    let (text, _) = import_file("vscode", "vscode-mcp.json");
    assert!(
        text.contains("\"PERPLEXITY_API_KEY\" = \"${PERPLEXITY_KEY}\""),
        "{text}"
    );
    assert!(
        text.contains("[servers.legacy-events]\ntransport = \"sse\""),
        "{text}"
    );
    assert!(
        text.contains("\"Authorization\" = \"${GITHUB_AUTHORIZATION}\""),
        "{text}"
    );

    // A custom-server block: its `${NAME}` placeholders stay as they are.
    let (text, _) = import_file("server", "custom-server.json");
    assert!(text.contains("[servers.issue-tracker]\ndescription = \"Issues and comments of the team's tracker\"\ntransport = \"http\""), "{text}");
    assert!(text.contains("\"X-Tenant\" = \"${TRACKER_TENANT}\""), "{text}");

    // The MCP Registry: packages become commands (npx, uvx, docker), remotes HTTP
    // servers; non-secret defaults are kept, secrets become placeholders, and docker's
    // `-e NAME={token}` passes the variable through the environment.
    let (text, _) = import_file("registry", "registry-npm-server.json");
    assert!(
        text.contains("args = [\"-y\", \"@example/weather-mcp@1.4.0\", \"--units\", \"metric\"]"),
        "{text}"
    );
    assert!(text.contains("\"LOG_LEVEL\" = \"info\""), "{text}");
    assert!(
        text.contains("command = \"uvx\"\nargs = [\"weather-mcp==1.4.0\"]"),
        "{text}"
    );
    let (text, _) = import_file("registry", "registry-oci-server.json");
    assert!(
        text.contains("args = [\"run\", \"-i\", \"--rm\", \"-e\", \"CODE_HOST_TOKEN\", \"ghcr.io/example/code-host-mcp:0.9.1\"]"),
        "{text}"
    );
    assert!(
        text.contains("\"CODE_HOST_TOKEN\" = \"${CODE_HOST_TOKEN}\""),
        "{text}"
    );
    assert!(text.contains("[servers.code-host-remote]\ndescription = \"Repositories, issues and pull requests.\"\ntransport = \"http\"\nurl = \"https://api.example.com/mcp\""), "{text}");
}

/// An imported server is not just valid text: the config connects to it.
#[test]
fn an_imported_custom_server_connects() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("server.json");
    let block = serde_json::json!({
        "name": "Calc", "transport": "stdio", "command": BIN, "args": ["fixture", "--name", "calc"],
        "env": {"CALC_TOKEN": "${CALC_TOKEN}"}
    });
    std::fs::write(&src, block.to_string()).unwrap();
    let out = dir.path().join("gw.toml");
    let (ok, _, err) = run(&[
        "import",
        "server",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let out = Command::new(BIN)
        .args(["check", "--connect", "--config", out.to_str().unwrap()])
        .env("CALC_TOKEN", "not-a-real-secret")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("add"), "{text}");
}
