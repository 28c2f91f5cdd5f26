//! Conditions on a grant: tests on the endpoint name, on principal attributes and on
//! call arguments (by JSON pointer).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::{Pattern, PolicyError};
use crate::call::{CallContext, Operation};

/// What a [`Condition`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// The name of the endpoint the call came through.
    Endpoint,
    /// A principal attribute (`team`, `department`...), by key.
    Attribute(String),
    /// A call argument, by JSON pointer (RFC 6901) into the arguments object: `/repo`,
    /// `/options/force`. Only operations that carry arguments (`tools/call`,
    /// `prompts/get`) have any.
    Argument(String),
}

/// How a [`Condition`] tests its subject.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Test {
    /// Equal to the value (numbers compare by value: `1` equals `1.0`).
    Eq(Value),
    /// Not equal to the value; an absent subject is "not equal".
    Ne(Value),
    /// A string matching the glob (non-strings never match).
    Glob(String),
    /// Equal to one of the values.
    In(Vec<Value>),
}

/// One test on one subject, optionally negated.
///
/// A subject that is absent (an attribute the principal lacks, a pointer that resolves
/// to nothing) never satisfies `eq`, `glob` or `in`, and does satisfy `ne`; negation
/// is applied last, so `not eq` behaves like `ne`.
///
/// # Example
/// ```
/// use mcp_guard_core::policy::Condition;
/// let only_two_repos = Condition::arg("/repo").is_in(["infra", "docs"]);
/// let not_prod = Condition::endpoint().glob("prod-*").negate();
/// # let _ = (only_two_repos, not_prod);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Condition {
    subject: Subject,
    test: Test,
    negated: bool,
}

/// The subject half of a [`Condition`] under construction.
#[derive(Debug, Clone)]
#[must_use]
pub struct ConditionOn(Subject);

impl Condition {
    /// A condition on the endpoint name.
    pub fn endpoint() -> ConditionOn {
        ConditionOn(Subject::Endpoint)
    }

    /// A condition on the principal attribute `key`.
    pub fn attr(key: impl Into<String>) -> ConditionOn {
        ConditionOn(Subject::Attribute(key.into()))
    }

    /// A condition on the argument at JSON `pointer` (`/repo`).
    pub fn arg(pointer: impl Into<String>) -> ConditionOn {
        ConditionOn(Subject::Argument(pointer.into()))
    }

    /// A condition from its parts.
    pub fn new(subject: Subject, test: Test) -> Self {
        Self {
            subject,
            test,
            negated: false,
        }
    }

    /// Inverts the test.
    pub fn negate(mut self) -> Self {
        self.negated = !self.negated;
        self
    }

    /// What it looks at.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// How it tests.
    pub fn test(&self) -> &Test {
        &self.test
    }

    /// Whether the test is inverted.
    pub fn is_negated(&self) -> bool {
        self.negated
    }

    pub(super) fn compile(&self) -> Result<CompiledCondition, PolicyError> {
        if let Subject::Argument(p) = &self.subject
            && !p.starts_with('/')
        {
            return Err(PolicyError::InvalidRule {
                rule: p.clone(),
                source: "an argument pointer starts with '/' (RFC 6901)".into(),
            });
        }
        let op = match &self.test {
            Test::Eq(v) => Op::Eq(v.clone()),
            Test::Ne(v) => Op::Ne(v.clone()),
            Test::Glob(g) => Op::Glob(Pattern::new(g)?),
            Test::In(vs) => {
                let strings: HashSet<Arc<str>> = vs.iter().filter_map(Value::as_str).map(Arc::from).collect();
                let others = vs.iter().filter(|v| !v.is_string()).cloned().collect();
                Op::In { strings, others }
            }
        };
        Ok(CompiledCondition {
            subject: self.subject.clone(),
            op,
            negated: self.negated,
        })
    }
}

impl ConditionOn {
    /// Equal to `value`.
    pub fn eq(self, value: impl Into<Value>) -> Condition {
        Condition::new(self.0, Test::Eq(value.into()))
    }

    /// Not equal to `value` (an absent subject is not equal).
    pub fn ne(self, value: impl Into<Value>) -> Condition {
        Condition::new(self.0, Test::Ne(value.into()))
    }

    /// A string matching `glob`.
    pub fn glob(self, glob: impl Into<String>) -> Condition {
        Condition::new(self.0, Test::Glob(glob.into()))
    }

    /// Equal to one of `values`.
    pub fn is_in<I: IntoIterator<Item = V>, V: Into<Value>>(self, values: I) -> Condition {
        Condition::new(self.0, Test::In(values.into_iter().map(Into::into).collect()))
    }
}

#[derive(Debug)]
enum Op {
    Eq(Value),
    Ne(Value),
    Glob(Pattern),
    In {
        strings: HashSet<Arc<str>>,
        others: Vec<Value>,
    },
}

/// A condition with its glob compiled.
#[derive(Debug)]
pub(super) struct CompiledCondition {
    subject: Subject,
    op: Op,
    negated: bool,
}

/// JSON equality where numbers compare by value.
fn json_eq(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(l), Value::Number(r)) => {
            l == r || matches!((l.as_f64(), r.as_f64()), (Some(lf), Some(rf)) if lf == rf)
        }
        _ => left == right,
    }
}

impl CompiledCondition {
    pub(super) fn is_argument(&self) -> bool {
        matches!(self.subject, Subject::Argument(_))
    }

    /// Whether the condition holds for this operation and context.
    pub(super) fn holds(&self, op: &Operation, ctx: &CallContext) -> bool {
        let outcome = match &self.subject {
            Subject::Endpoint => self.test_str(Some(&ctx.endpoint)),
            Subject::Attribute(k) => self.test_str(ctx.principal.attributes().get(k).map(String::as_str)),
            Subject::Argument(p) => op
                .arguments
                .as_ref()
                .and_then(|args| pointer(args, p))
                .map_or(Outcome::Absent, |v| self.test_value(v)),
        };
        self.finish(outcome)
    }

    fn test_str(&self, s: Option<&str>) -> Outcome {
        let Some(s) = s else { return Outcome::Absent };
        Outcome::Tested(match &self.op {
            Op::Eq(v) => v.as_str() == Some(s),
            Op::Ne(v) => v.as_str() != Some(s),
            Op::Glob(g) => g.is_match(s),
            Op::In { strings, .. } => strings.contains(s),
        })
    }

    fn test_value(&self, v: &Value) -> Outcome {
        Outcome::Tested(match &self.op {
            Op::Eq(x) => json_eq(v, x),
            Op::Ne(x) => !json_eq(v, x),
            Op::Glob(g) => v.as_str().is_some_and(|s| g.is_match(s)),
            Op::In { strings, others } => match v {
                Value::String(s) => strings.contains(s.as_str()),
                other => others.iter().any(|o| json_eq(other, o)),
            },
        })
    }

    fn finish(&self, outcome: Outcome) -> bool {
        let raw = match outcome {
            Outcome::Tested(b) => b,
            // Absent: never eq/glob/in; always ne.
            Outcome::Absent => matches!(self.op, Op::Ne(_)),
        };
        raw != self.negated
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    Absent,
    Tested(bool),
}

/// An RFC 6901 pointer into an arguments object.
fn pointer<'a>(args: &'a serde_json::Map<String, Value>, p: &str) -> Option<&'a Value> {
    let rest = p.strip_prefix('/')?;
    let (first, tail) = match rest.split_once('/') {
        Some((f, t)) => (f, Some(t)),
        None => (rest, None),
    };
    let key = first.replace("~1", "/").replace("~0", "~");
    let v = args.get(&key)?;
    match tail {
        None => Some(v),
        Some(t) => v.pointer(&format!("/{t}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Principal};
    use serde_json::json;

    fn ctx() -> CallContext {
        CallContext::new(
            Arc::new(Principal::user("a").with_attribute("team", "infra")),
            "engineering-eu",
        )
    }

    #[expect(clippy::needless_pass_by_value, reason = "json! literals at call sites")]
    fn op(args: Value) -> Operation {
        Operation::new(Action::Call, None, "x").with_arguments(args.as_object().cloned())
    }

    #[expect(clippy::needless_pass_by_value, reason = "built inline at call sites")]
    fn holds(c: Condition, args: Value) -> bool {
        c.compile().unwrap().holds(&op(args), &ctx())
    }

    #[test]
    fn endpoint_and_attributes() {
        assert!(holds(Condition::endpoint().glob("engineering-*"), json!({})));
        assert!(holds(Condition::endpoint().eq("engineering-eu"), json!({})));
        assert!(!holds(Condition::endpoint().ne("engineering-eu"), json!({})));
        assert!(holds(
            Condition::endpoint().is_in(["a", "engineering-eu"]),
            json!({})
        ));
        assert!(!holds(Condition::endpoint().glob("prod-*"), json!({})));
        assert!(holds(Condition::endpoint().glob("prod-*").negate(), json!({})));
        assert!(holds(Condition::attr("team").eq("infra"), json!({})));
        assert!(!holds(Condition::attr("dept").eq("infra"), json!({})));
        assert!(!holds(Condition::attr("dept").glob("*"), json!({})));
        assert!(!holds(Condition::attr("dept").is_in(["x"]), json!({})));
        assert!(holds(Condition::attr("dept").ne("x"), json!({})));
    }

    #[test]
    fn arguments_by_pointer() {
        let args = json!({"repo": "infra", "n": 2, "opts": {"force": true}, "a/b": "slash"});
        assert!(holds(
            Condition::arg("/repo").is_in(["infra", "docs"]),
            args.clone()
        ));
        assert!(holds(Condition::arg("/n").eq(2.0), args.clone()));
        assert!(holds(Condition::arg("/n").is_in([1, 2]), args.clone()));
        assert!(holds(Condition::arg("/opts/force").eq(true), args.clone()));
        assert!(holds(Condition::arg("/a~1b").eq("slash"), args.clone()));
        assert!(holds(Condition::arg("/repo").glob("in*"), args.clone()));
        assert!(
            !holds(Condition::arg("/n").glob("*"), args.clone()),
            "glob needs a string"
        );
        for c in [
            Condition::arg("/missing").eq("x"),
            Condition::arg("/missing").glob("*"),
            Condition::arg("/missing").is_in(["x"]),
            Condition::arg("/missing").ne("x").negate(),
        ] {
            assert!(!holds(c, args.clone()));
        }
        assert!(holds(Condition::arg("/missing").ne("x"), args.clone()));
        assert!(holds(Condition::arg("/repo").eq("other").negate(), args));
        assert!(
            Condition::arg("repo").eq("x").compile().is_err(),
            "pointer without /"
        );
    }
}
