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
//!
//! `policy_flow`: the `mixed` grants plus 20 `[[labels]]` entries and 4 flow rules
//! (issue 26), decided in a session whose history is 1,000 calls (each recorded in
//! its taint as the gateway records a returning call): an egress call a rule refuses
//! after untrusted input, the same call in a fresh session, a labelled call no rule
//! refuses, and an unlabelled call.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_guard_core::flow::{Label, Labels, Taint, TaintMark, TaintReason};
use mcp_guard_core::policy::{Condition, FlowRule, GrantPolicyBuilder, ToolLabel};
use mcp_guard_core::{Action, CallContext, Grant, GrantPolicy, Operation, Principal, Target, TargetKind};

const N: usize = 1000;

fn mixed() -> GrantPolicy {
    mixed_grants().build().expect("grants compile")
}

fn mixed_grants() -> GrantPolicyBuilder {
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
    b
}

/// The `mixed` grants with labels on 20 servers' tools and four flow rules.
fn with_flow() -> GrantPolicy {
    let mut b = mixed_grants();
    let kinds = [
        Labels::of([Label::UntrustedInput]),
        Labels::of([Label::PrivateData]),
        Labels::of([Label::Egress]),
        Labels::of([Label::Destructive, Label::Egress]),
    ];
    for i in 0..20 {
        b = b.label(
            ToolLabel::new(kinds[i % 4])
                .servers([format!("srv-{i}")])
                .tools([format!("tool_{i}*"), format!("*_{}", i + 100)]),
        );
    }
    b.flow_rule(
        FlowRule::new()
            .named("no-egress-after-untrusted")
            .after(Labels::of([Label::UntrustedInput]))
            .calls(Labels::of([Label::Egress])),
    )
    .flow_rule(
        FlowRule::new()
            .named("trifecta")
            .after(Labels::of([Label::UntrustedInput, Label::PrivateData]))
            .calls(Labels::of([Label::Egress, Label::Destructive])),
    )
    .flow_rule(
        FlowRule::new()
            .named("agents-never-destroy")
            .endpoints(["agents-*"])
            .calls(Labels::of([Label::Destructive])),
    )
    .flow_rule(
        FlowRule::new()
            .named("no-private-after-untrusted-on-infra")
            .after(Labels::of([Label::UntrustedInput]))
            .calls(Labels::of([Label::PrivateData]))
            .when(Condition::arg("/repo").is_in(["secrets"])),
    )
    .build()
    .expect("grants, labels and rules compile")
}

/// A session taint after `n` calls of the labelled tools, in turn (every call records
/// its labels, as the policy layer does when a call returns).
fn history(policy: &GrantPolicy, n: usize) -> Arc<Taint> {
    let taint = Taint::new();
    for i in 0..n {
        let server = format!("srv-{}", i % 20);
        let tool = format!("tool_{}", i % 20);
        for label in policy.labels_of(&server, &tool).iter() {
            let mut mark = TaintMark::new(label, TaintReason::Labelled, format!("{server}__{tool}"));
            mark.call = Some(format!("call-{i}"));
            taint.record(mark);
        }
    }
    Arc::new(taint)
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

fn flow_decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_flow");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    let policy = with_flow();
    let principal = Arc::new(Principal::user("alice").with_roles(["role-0", "role-2", "role-7"]));
    let mut tainted = CallContext::new(principal.clone(), "engineering-eu");
    tainted.taint = Some(history(&policy, 1000));
    assert_eq!(
        tainted.taint.as_ref().map(|t| t.labels().len()),
        Some(4),
        "the history set every label"
    );
    let mut fresh = CallContext::new(principal, "engineering-eu");
    fresh.taint = Some(Arc::new(Taint::new()));
    // Grant 2: allow, role-2, srv-2, names `*_2` and `tool_2`; srv-2 is egress.
    let egress = call("srv-2", "tool_2");
    let refused = policy.decide(&egress, &tainted);
    assert_eq!(refused.rule(), Some("no-egress-after-untrusted"), "{refused:?}");
    assert!(policy.decide(&egress, &fresh).is_allow());
    // Grant 0: allow, role-0, srv-0, `tool_0` (srv-0's tools are untrusted input).
    let untrusted = call("srv-0", "tool_0");
    assert!(policy.decide(&untrusted, &tainted).is_allow());
    // Grant 107: allow, role-7, srv-7, `tool_{107,x107}`; srv-7's labels are for
    // `tool_7*` and `*_107`, so `tool_x107` carries none.
    let unlabelled = call("srv-7", "tool_x107");
    assert!(policy.labels_of("srv-7", "tool_x107").is_empty());
    assert!(policy.decide(&unlabelled, &tainted).is_allow());
    for (name, op, cx) in [
        ("1000_calls/egress_refused", &egress, &tainted),
        ("fresh/egress_allowed", &egress, &fresh),
        ("1000_calls/labelled_allowed", &untrusted, &tainted),
        ("1000_calls/unlabelled", &unlabelled, &tainted),
    ] {
        g.bench_function(name, |b| b.iter(|| policy.decide(black_box(op), black_box(cx))));
    }
    g.finish();
}

criterion_group!(benches, decisions, flow_decisions);
criterion_main!(benches);
