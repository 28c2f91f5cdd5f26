//! One `GrantPolicy` decision over 1,000 grants (patterns compiled once, at build).
//!
//! Two policies:
//! - `mixed`: 1,000 grants over 50 roles and 20 servers, name globs and literals,
//!   endpoint and argument conditions on some, one deny in ten; the principal holds
//!   three roles. Cases: a call that is allowed, a call refused by a deny, a call no
//!   grant matches (default deny), and a list entry.
//! - `one_role`: 1,000 grants all for the principal's role on one server, each with
//!   its own name glob (the index must narrow by name, not by role or server).
//!
//! `linear` runs the same decision scanning every grant, for comparison.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_guard_core::policy::Condition;
use mcp_guard_core::{Action, CallContext, Grant, GrantPolicy, Operation, Principal, Target, TargetKind};

const N: usize = 1000;

fn mixed() -> GrantPolicy {
    let mut b = GrantPolicy::builder();
    for i in 0..N {
        let mut g = if i % 10 == 9 {
            Grant::deny()
        } else {
            Grant::allow()
        };
        g = g
            .named(format!("g{i}"))
            .roles([format!("role-{}", i % 50)])
            .servers([format!("srv-{}", i % 20)]);
        g = match i % 4 {
            0 => g.names([format!("tool_{i}")]),
            1 => g.names([format!("tool_{i}_*")]),
            2 => g.names([format!("*_{i}"), format!("tool_{i}")]),
            _ => g.names([format!("tool_{{{i},x{i}}}")]),
        };
        if i % 5 == 0 {
            g = g.when(Condition::endpoint().glob("engineering-*"));
        }
        if i % 7 == 0 {
            g = g.when(Condition::arg("/repo").is_in(["infra", "docs"]));
        }
        if i % 3 == 0 {
            g = g.kinds([TargetKind::Tool]);
        }
        b = b.grant(g);
    }
    b.build().expect("grants compile")
}

fn one_role() -> GrantPolicy {
    let mut b = GrantPolicy::builder();
    for i in 0..N {
        b = b.grant(
            Grant::allow()
                .named(format!("g{i}"))
                .roles(["eng"])
                .servers(["github"])
                .names([format!("op{i}_*")]),
        );
    }
    b.build().expect("grants compile")
}

fn call(server: &str, name: &str) -> Operation {
    Operation::new(
        Action::Call,
        Some(Target::new(server, name, TargetKind::Tool)),
        format!("{server}__{name}"),
    )
    .with_arguments(
        serde_json::json!({"repo": "infra", "title": "x"})
            .as_object()
            .cloned(),
    )
}

fn decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_1000_grants");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    let policy = mixed();
    // role-7 holds grants 7, 57, 107...; role-27: 27, 77...; role-42: 42, 92...
    let ctx = CallContext::new(
        Arc::new(Principal::user("alice").with_roles(["role-7", "role-27", "role-42"])),
        "engineering-eu",
    );
    // Grant 107: allow, role-7, srv-7, names `tool_{107,x107}`.
    let allowed = call("srv-7", "tool_107");
    assert!(policy.decide(&allowed, &ctx).is_allow());
    // Alice's roles hold no deny (7 + 50k, 27 + 50k, 42 + 50k never end in 9): bob's do.
    let bob = CallContext::new(
        Arc::new(Principal::user("bob").with_roles(["role-9"])),
        "engineering-eu",
    );
    // Grant 59: deny, role-9, srv-19, names `tool_{59,x59}`.
    let denied = call("srv-19", "tool_59");
    assert!(!policy.decide(&denied, &bob).is_allow());
    assert_eq!(policy.decide(&denied, &bob).rule(), Some("g59"));
    let nothing = call("srv-3", "no_such_tool");
    assert!(!policy.decide(&nothing, &ctx).is_allow());
    let listed = Operation::new(
        Action::List,
        Some(Target::new("srv-7", "tool_107", TargetKind::Tool)),
        "srv-7__tool_107",
    );
    for (name, op, cx) in [
        ("mixed/allow", &allowed, &ctx),
        ("mixed/deny", &denied, &bob),
        ("mixed/default_deny", &nothing, &ctx),
        ("mixed/list", &listed, &ctx),
    ] {
        assert_eq!(policy.decide(op, cx), policy.decide_linear(op, cx));
        g.bench_function(name, |b| b.iter(|| policy.decide(black_box(op), black_box(cx))));
    }
    g.bench_function("mixed/allow/linear", |b| {
        b.iter(|| policy.decide_linear(black_box(&allowed), black_box(&ctx)));
    });

    let policy = one_role();
    let eng = CallContext::new(Arc::new(Principal::user("alice").with_roles(["eng"])), "e");
    let op = call("github", "op777_create");
    assert_eq!(policy.decide(&op, &eng).rule(), Some("g777"));
    g.bench_function("one_role/allow", |b| {
        b.iter(|| policy.decide(black_box(&op), black_box(&eng)));
    });
    g.bench_function("one_role/allow/linear", |b| {
        b.iter(|| policy.decide_linear(black_box(&op), black_box(&eng)));
    });
    g.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
