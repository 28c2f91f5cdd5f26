//! Rug pulls: a real upstream whose definitions change between reads.

use std::fmt::Write as _;
use std::process::Command;

use rmcp::model::CallToolRequestParams;

use crate::support::*;

fn config(variant_file: &std::path::Path) -> String {
    let mut c = String::from(AUTH);
    let _ = write!(
        c,
        "[servers.alpha]\ntransport = \"stdio\"\ncommand = \"{BIN}\"\nargs = [\"fixture\", \"--name\", \"alpha\", \"--variant-file\", \"{}\"]\n\n",
        variant_file.display()
    );
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"*\"]\n");
    c
}

fn cli(args: &[&str], config: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("MCP_GUARD_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn changed_definitions_are_quarantined_with_a_diff_until_approved() {
    let gw_dir = tempfile::tempdir().unwrap();
    let variant = gw_dir.path().join("variant");
    std::fs::write(&variant, "base").unwrap();
    let cfg_text = config(&variant);
    // Approve the base definitions, then start the gateway with the lock file beside
    // its config (the fixture helper writes gateway.toml into its own directory).
    let gw = GatewayProc::start_with_lock(&cfg_text, |cfg| {
        let (ok, out) = cli(&["tools", "approve"], cfg);
        assert!(ok, "{out}");
        assert!(out.contains("definition(s) approved"), "{out}");
    })
    .await;
    let cfg_path = gw.dir.path().join("gateway.toml");
    let client = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    assert!(names(&client).await.contains(&"alpha__echo".to_owned()));

    let cases: [(&str, &str, &str, &str); 5] = [
        (
            "desc",
            "alpha__echo",
            "definition changed",
            "~ description: \"Returns the text it is given.\" -> \"Returns the text it is given, politely.\"",
        ),
        (
            "param",
            "alpha__echo",
            "definition changed",
            "~ inputSchema.properties.text.description: \"Text to return\" -> \"Text to return verbatim\"",
        ),
        (
            "default",
            "alpha__echo",
            "definition changed",
            "+ inputSchema.properties.text.default: \"hello\"",
        ),
        (
            "new",
            "alpha__echo_twice",
            "new tool",
            "+ (new) {\"description\":\"Returns the text twice.\"",
        ),
        ("rename", "alpha__repeat", "new tool", "\"name\":\"repeat\""),
    ];
    for (variant_name, tool, reason, diff_line) in cases {
        std::fs::write(&variant, variant_name).unwrap();
        client
            .call_tool(CallToolRequestParams::new("alpha__announce"))
            .await
            .unwrap();
        // Wait until the gateway has re-read the catalogue: the call then says the
        // tool awaits approval (a brand-new tool was never listed, so absence alone
        // proves nothing).
        let held = eventually(10, async || {
            client
                .call_tool(
                    CallToolRequestParams::new(tool).with_arguments(args(&serde_json::json!({"text": "x"}))),
                )
                .await
                .is_err_and(|e| e.to_string().contains("awaiting approval"))
        })
        .await;
        assert!(held, "{variant_name}: {tool} must be held for approval");
        // The list follows once the listing connection has re-read too (the call was
        // checked on this session's own process, which may see the change first).
        let unlisted = eventually(10, async || !names(&client).await.contains(&tool.to_owned())).await;
        assert!(unlisted, "{variant_name}: {tool} must not be listed");
        let (pending, out) = cli(&["tools", "diff"], &cfg_path);
        assert!(!pending, "diff exits non-zero while something waits");
        assert!(
            out.contains(reason) && out.contains(diff_line),
            "{variant_name}:\n{out}"
        );
        let (ok, out) = cli(&["tools", "approve"], &cfg_path);
        assert!(ok, "{out}");
        let back = eventually(10, async || names(&client).await.contains(&tool.to_owned())).await;
        assert!(back, "{variant_name}: {tool} returns after approval");
        let r = client
            .call_tool(
                CallToolRequestParams::new(tool).with_arguments(args(&serde_json::json!({"text": "ok"}))),
            )
            .await
            .unwrap();
        assert!(text_of(&r).starts_with("ok"), "{variant_name}");
    }
    let (nothing, out) = cli(&["tools", "diff"], &cfg_path);
    assert!(nothing && out.contains("nothing waits for approval"), "{out}");
    let _ = client.cancel().await;
    gw.stop().await;
}
