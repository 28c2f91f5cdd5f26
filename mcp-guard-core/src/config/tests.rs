use super::*;
use crate::policy::Condition;
use crate::upstream::UpstreamProtocol;

fn parse(v: serde_json::Value) -> GatewayConfig {
    serde_json::from_value(v).unwrap()
}

#[test]
fn audit_defaults_fail_closed_and_bad_values_are_named() {
    let cfg = parse(serde_json::json!({}));
    assert_eq!(cfg.audit.sinks, vec![AuditSinkKind::Sqlite]);
    assert!(!cfg.audit.dangerously_fail_open);
    let cfg = parse(serde_json::json!({"audit": {
        "sinks": [], "rotate_bytes": 10, "mac_key_file": "k", "mac_key_env": "K",
    }}));
    let errors = cfg.validate().unwrap_err().to_string();
    for entry in ["audit.sinks", "audit.rotate_bytes", "audit.mac_key_env"] {
        assert!(errors.contains(entry), "{entry} in {errors}");
    }
    let cfg = parse(serde_json::json!({"audit": {"sinks": ["tracing"], "dangerously_fail_open": true}}));
    let warnings = cfg.validate().unwrap().0;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        serde_json::from_value::<GatewayConfig>(serde_json::json!({"audit": {"sinks": ["kafka"]}})).is_err()
    );
    assert!(serde_json::from_value::<GatewayConfig>(serde_json::json!({"audit": {"rotate": 1}})).is_err());
}

#[test]
fn names_every_bad_entry() {
    let cfg = parse(serde_json::json!({
        "gateway": {"separator": "/"},
        "servers": {
            "a__b": {"transport": "stdio", "command": "x"},
            "h": {"transport": "http", "url": "ftp://x", "headers": {"Authorization": "Bearer ${T"}},
        },
        "endpoints": {"e p": {"servers": {"nope": {"tools": ["[a"]}}}},
    }));
    let errs = cfg.validate().unwrap_err().to_string();
    for needle in [
        "gateway.separator",
        "servers.h.url",
        "servers.h.headers.Authorization",
        "endpoints.e p:",
        "endpoints.e p.servers.nope: unknown server",
        "endpoints.e p.servers.nope.tools",
    ] {
        assert!(errs.contains(needle), "missing {needle:?} in\n{errs}");
    }
}

#[test]
fn zero_limits_before_authentication_are_named() {
    let e = parse(serde_json::json!({
        "gateway": {"public_url": "https://gw.example"},
        "unauthenticated_limits": {"per_minute": 0, "registration_burst": 0, "max_sources": 0},
        "auth": {"server": {"users": [{"id": "a"}], "max_pending_authorizations": 0, "max_state_bytes": 0}},
    }))
    .validate()
    .unwrap_err()
    .to_string();
    for entry in [
        "unauthenticated_limits.per_minute",
        "unauthenticated_limits.registration_burst",
        "unauthenticated_limits.max_sources",
        "auth.server.max_pending_authorizations",
        "auth.server.max_state_bytes",
    ] {
        assert!(e.contains(entry), "{entry}: {e}");
    }
    let ok = parse(serde_json::json!({
        "unauthenticated_limits": {"per_minute": 60, "burst": 10, "audit_interval_secs": 30},
    }));
    assert!(ok.validate().is_ok());
    assert_eq!(ok.unauthenticated_limits.per_minute, Some(60));
}

#[test]
fn start_timeouts_and_protocol_eras_have_defaults_and_bad_values_are_named() {
    let cfg = parse(serde_json::json!({"servers": {
        "s": {"transport": "stdio", "command": "x"},
        "h": {"transport": "http", "url": "http://127.0.0.1:1/mcp"},
        "o": {"transport": "sse", "url": "http://127.0.0.1:1/sse"},
        "l": {"transport": "stdio", "command": "x", "protocol": "legacy", "start_timeout_secs": 5},
        "m": {"transport": "http", "url": "http://127.0.0.1:1/mcp", "protocol": "2026-07-28"},
    }}));
    cfg.validate().unwrap();
    let server = |id: &str| &cfg.servers[id];
    assert_eq!(server("s").start_timeout(), std::time::Duration::from_mins(1));
    assert_eq!(server("h").start_timeout(), std::time::Duration::from_secs(30));
    assert_eq!(server("l").start_timeout(), std::time::Duration::from_secs(5));
    assert_eq!(server("s").protocol(), UpstreamProtocol::Auto);
    assert_eq!(server("l").protocol(), UpstreamProtocol::Legacy);
    assert_eq!(server("m").protocol(), UpstreamProtocol::Modern);
    assert_eq!(server("o").protocol(), UpstreamProtocol::Legacy);
    assert_eq!(cfg.gateway.startup_wait_ms, 3000);

    let errs = parse(serde_json::json!({"servers": {
        "s": {"transport": "stdio", "command": "x", "start_timeout_secs": 0},
        "o": {"transport": "sse", "url": "http://127.0.0.1:1/sse", "protocol": "2026-07-28"},
    }}))
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        errs.contains("servers.s.start_timeout_secs: must be at least 1"),
        "{errs}"
    );
    assert!(
        errs.contains("servers.o.protocol: an sse server speaks only the legacy protocol"),
        "{errs}"
    );
    let bad = serde_json::from_value::<GatewayConfig>(serde_json::json!({"servers": {
        "s": {"transport": "stdio", "command": "x", "protocol": "2025-11-25"},
    }}))
    .unwrap_err()
    .to_string();
    assert!(bad.contains("2025-11-25") && bad.contains("legacy"), "{bad}");
}

#[test]
fn separator_in_server_id_is_rejected() {
    let cfg = parse(serde_json::json!({"servers": {"a__b": {"transport": "stdio", "command": "x"}}}));
    let errs = cfg.validate().unwrap_err().to_string();
    assert!(
        errs.contains("servers.a__b: server id contains the separator"),
        "{errs}"
    );
}

#[test]
fn unknown_fields_are_refused() {
    let r: Result<GatewayConfig, _> = serde_json::from_value(
        serde_json::json!({"servers": {"a": {"transport": "stdio", "command": "x", "comand": "y"}}}),
    );
    assert!(r.unwrap_err().to_string().contains("comand"));
}

#[test]
fn inline_token_is_refused() {
    let cfg = parse(serde_json::json!({"auth": {"tokens": [{"principal": {"id": "a"}, "token": "abc"}]}}));
    assert!(
        cfg.validate()
            .unwrap_err()
            .to_string()
            .contains("auth.tokens[0]: tokens must be given as a ${NAME} placeholder")
    );
}

#[test]
fn bad_jwt_settings_and_public_url_are_named() {
    let errors = |v: serde_json::Value| parse(v).validate().unwrap_err().to_string();
    let e = errors(serde_json::json!({
        "gateway": {"public_url": "gw.example.com"},
        "auth": {"jwt": {"issuer": " ", "jwks_url": "http://idp.example.com/jwks",
                         "algorithms": ["RS256", "HS256", "none"], "leeway_secs": 301}}}));
    for expected in [
        "gateway.public_url: must be an http:// or https:// URL",
        "auth.jwt.issuer: must not be empty",
        "auth.jwt.jwks_url: must be https:// (http:// only on 127.0.0.1, ::1 or localhost)",
        "auth.jwt.algorithms[1]: \"HS256\" is not accepted: asymmetric algorithms only",
        "auth.jwt.algorithms[2]: \"none\" is not accepted",
        "auth.jwt.leeway_secs: at most 300 seconds",
    ] {
        assert!(e.contains(expected), "{expected:?} missing from {e}");
    }
    assert!(!e.contains("algorithms[0]"), "{e}");
    let e = errors(serde_json::json!({"auth": {"jwt": {"issuer": "i"}}}));
    assert!(e.contains("auth.jwt.jwks_file: set jwks_file or jwks_url"), "{e}");
    let e = errors(
        serde_json::json!({"auth": {"jwt": {"issuer": "i", "jwks_file": "k.json",
        "jwks_url": "https://i/jwks"}}}),
    );
    assert!(
        e.contains("auth.jwt.jwks_url: set jwks_file or jwks_url, not both"),
        "{e}"
    );
    let ok = parse(serde_json::json!({"auth": {"jwt": {"issuer": "i",
        "jwks_url": "http://127.0.0.1:9000/jwks"}}}));
    assert!(ok.validate().is_ok());
}

#[test]
fn grant_conditions_parse_and_bad_ones_are_named() {
    let cfg = parse(serde_json::json!({"grants": [
        {"roles": ["eng"], "kinds": ["tool", "template"], "principal_kind": "agent",
         "endpoint": {"glob": "engineering-*"},
         "when": [{"arg": "/repo", "in": ["a", "b"]}, {"attr": "team", "eq": "x", "not": true}]},
    ]}));
    cfg.validate().unwrap();
    let g = &cfg.grants[0];
    assert_eq!(
        g.when[0].condition().unwrap(),
        Condition::arg("/repo").is_in(["a", "b"])
    );
    assert_eq!(
        g.endpoint.as_ref().unwrap().endpoint_condition().unwrap(),
        Condition::endpoint().glob("engineering-*")
    );
    let cfg = parse(serde_json::json!({"grants": [
        {"roles": ["eng"]},
        {"roles": ["eng"], "endpoint": {"eq": "a", "glob": "b"}},
        {"roles": ["eng"], "when": [
            {"arg": "/ok", "eq": 1},
            {"arg": "repo", "eq": "x"},
            {"attr": "team", "eq": 1},
            {"arg": "/x", "attr": "y", "eq": "z"},
            {"arg": "/x", "glob": "[a"},
            {"arg": "/x", "in": [{"a": 1}]},
        ]},
    ]}));
    let errs = cfg.validate().unwrap_err().to_string();
    for needle in [
        "grants[1].endpoint: give exactly one of eq, ne, glob, in",
        "grants[2].when[1].arg: \"repo\" is not a JSON pointer",
        "grants[2].when[2].eq: must be a string",
        "grants[2].when[3]: give exactly one of arg, attr",
        "grants[2].when[4].glob",
        "grants[2].when[5].in",
    ] {
        assert!(errs.contains(needle), "missing {needle:?} in\n{errs}");
    }
    assert!(!errs.contains("when[0]"), "{errs}");
    assert!(
        serde_json::from_value::<GatewayConfig>(
            serde_json::json!({"grants": [{"when": [{"arg": "/x", "equals": 1}]}]})
        )
        .is_err()
    );
}

#[test]
fn rate_limits_parse_and_zero_is_named() {
    let cfg = parse(serde_json::json!({"rate_limits": {
        "per_principal": {"per_minute": 60, "burst": 5}, "per_tool": {"per_minute": 0, "burst": 0}}}));
    let errs = cfg.validate().unwrap_err().to_string();
    assert!(errs.contains("rate_limits.per_tool.per_minute"), "{errs}");
    assert!(errs.contains("rate_limits.per_tool.burst"), "{errs}");
    assert!(!errs.contains("per_principal"), "{errs}");
    assert!(
        serde_json::from_value::<GatewayConfig>(serde_json::json!({"rate_limits": {"per_user": {}}}))
            .is_err()
    );
}
