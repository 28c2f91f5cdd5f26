//! An index over compiled grants, so a decision looks at the few grants that could
//! match instead of scanning all of them.
//!
//! Each field a grant constrains by name (principal id or role, endpoint, server, name)
//! has a [`FieldIndex`]: grants that leave the field open, a hash map from literal
//! values, and one [`GlobSet`] for the real globs. A decision intersects the candidate
//! bit sets of the four fields and evaluates only the grants left, in config order,
//! with the full check (so the index can only narrow, never widen, what matches).

use std::cell::RefCell;
use std::collections::HashMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::PolicyError;

/// A fixed-size bit set over grant positions.
#[derive(Debug, Clone, Default)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn zeros(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }

    fn reset(&mut self, n: usize) {
        self.0.clear();
        self.0.resize(n.div_ceil(64), 0);
    }

    pub(super) fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn or(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    fn and(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a &= b;
        }
    }

    /// Set positions, ascending.
    pub(super) fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(w * 64 + bit)
            })
        })
    }
}

fn is_literal(glob: &str) -> bool {
    !glob.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// The grants listed under one literal value: positions when they are few, a bit set
/// when setting them one by one would cost more than OR-ing words.
#[derive(Debug)]
enum Hits {
    Few(Vec<u32>),
    Many(Bits),
}

impl Hits {
    fn add_to(&self, out: &mut Bits) {
        match self {
            Self::Few(v) => {
                for &i in v {
                    out.set(i as usize);
                }
            }
            Self::Many(b) => out.or(b),
        }
    }
}

/// Candidates by one field.
#[derive(Debug)]
pub(super) struct FieldIndex {
    always: Bits,
    exact: HashMap<Box<str>, Hits>,
    globs: GlobSet,
    glob_owner: Vec<u32>,
}

/// Collects one field's patterns, grant by grant.
pub(super) struct FieldIndexBuilder {
    n: usize,
    always: Bits,
    exact: HashMap<Box<str>, Vec<u32>>,
    globs: GlobSetBuilder,
    glob_owner: Vec<u32>,
}

impl FieldIndexBuilder {
    pub(super) fn new(n: usize) -> Self {
        Self {
            n,
            always: Bits::zeros(n),
            exact: HashMap::new(),
            globs: GlobSetBuilder::new(),
            glob_owner: Vec::new(),
        }
    }

    /// Registers grant `i`'s patterns for this field. `open_when_empty`: whether an
    /// empty list means "any value" (endpoints, servers, names) or "no value"
    /// (principal ids).
    pub(super) fn add(
        &mut self,
        i: usize,
        patterns: &[String],
        open_when_empty: bool,
    ) -> Result<(), PolicyError> {
        let pos = u32::try_from(i).map_err(|_| PolicyError::InvalidRule {
            rule: format!("grant #{i}"),
            source: "too many grants".into(),
        })?;
        if (patterns.is_empty() && open_when_empty) || patterns.iter().any(|p| p == "*") {
            self.always.set(i);
            return Ok(());
        }
        for p in patterns {
            if is_literal(p) {
                self.exact.entry(p.as_str().into()).or_default().push(pos);
            } else {
                let glob = GlobBuilder::new(p)
                    .literal_separator(false)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| PolicyError::InvalidRule {
                        rule: p.clone(),
                        source: Box::new(e),
                    })?;
                self.globs.add(glob);
                self.glob_owner.push(pos);
            }
        }
        Ok(())
    }

    /// Registers grant `i` under literal keys (roles); `*` stands for every value.
    pub(super) fn add_exact(&mut self, i: usize, keys: &[String]) {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "add() has checked the same position on another field"
        )]
        let pos = i as u32;
        for k in keys {
            if k == "*" {
                self.always.set(i);
            } else {
                self.exact.entry(k.as_str().into()).or_default().push(pos);
            }
        }
    }

    pub(super) fn build(self) -> Result<FieldIndex, PolicyError> {
        let words = self.n.div_ceil(64);
        let exact = self
            .exact
            .into_iter()
            .map(|(k, v)| {
                let hits = if v.len() > words {
                    let mut b = Bits::zeros(self.n);
                    for i in v {
                        b.set(i as usize);
                    }
                    Hits::Many(b)
                } else {
                    Hits::Few(v)
                };
                (k, hits)
            })
            .collect();
        Ok(FieldIndex {
            always: self.always,
            exact,
            globs: self.globs.build().map_err(|e| PolicyError::InvalidRule {
                rule: "glob set".into(),
                source: Box::new(e),
            })?,
            glob_owner: self.glob_owner,
        })
    }
}

thread_local! {
    static MATCHES: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

impl FieldIndex {
    /// Adds the grants that `value` could match to `out`.
    pub(super) fn collect(&self, value: &str, out: &mut Bits) {
        out.or(&self.always);
        if let Some(hits) = self.exact.get(value) {
            hits.add_to(out);
        }
        if !self.globs.is_empty() {
            MATCHES.with_borrow_mut(|m| {
                self.globs.matches_into(value, m);
                for &g in m.iter() {
                    out.set(self.glob_owner[g] as usize);
                }
            });
        }
    }

    /// Adds the grants listed under literal `key` (no globs, no open grants).
    fn collect_exact(&self, key: &str, out: &mut Bits) {
        if let Some(hits) = self.exact.get(key) {
            hits.add_to(out);
        }
    }
}

/// The four field indexes of a grant set.
#[derive(Debug)]
pub(super) struct GrantIndex {
    pub(super) n: usize,
    pub(super) ids: FieldIndex,
    pub(super) roles: FieldIndex,
    pub(super) endpoints: FieldIndex,
    pub(super) servers: FieldIndex,
    pub(super) names: FieldIndex,
}

thread_local! {
    static SCRATCH: RefCell<(Bits, Bits)> = RefCell::new((Bits::default(), Bits::default()));
}

impl GrantIndex {
    /// Calls `f` with the grants that could match, ascending (config order).
    pub(super) fn with_candidates<R>(
        &self,
        id: &str,
        roles: &[String],
        endpoint: &str,
        server: &str,
        name: &str,
        f: impl FnOnce(&Bits) -> R,
    ) -> R {
        SCRATCH.with_borrow_mut(|(acc, field)| {
            acc.reset(self.n);
            self.ids.collect(id, acc);
            acc.or(&self.roles.always);
            for r in roles {
                self.roles.collect_exact(r, acc);
            }
            for (index, value) in [
                (&self.endpoints, endpoint),
                (&self.servers, server),
                (&self.names, name),
            ] {
                field.reset(self.n);
                index.collect(value, field);
                acc.and(field);
            }
            f(acc)
        })
    }
}

/// An index over entries constrained by two fields (`[[labels]]`: server and tool).
#[derive(Debug)]
pub(super) struct PairIndex {
    pub(super) n: usize,
    pub(super) first: FieldIndex,
    pub(super) second: FieldIndex,
}

thread_local! {
    static PAIR_SCRATCH: RefCell<(Bits, Bits)> = RefCell::new((Bits::default(), Bits::default()));
}

impl PairIndex {
    /// Calls `f` with the entries whose first field matches `a` and second `b`.
    pub(super) fn with_matches<R>(&self, a: &str, b: &str, f: impl FnOnce(&Bits) -> R) -> R {
        PAIR_SCRATCH.with_borrow_mut(|(acc, field)| {
            acc.reset(self.n);
            self.first.collect(a, acc);
            field.reset(self.n);
            self.second.collect(b, field);
            acc.and(field);
            f(acc)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_iterate_in_order() {
        let mut b = Bits::zeros(200);
        for i in [0, 63, 64, 130, 199] {
            b.set(i);
        }
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 63, 64, 130, 199]);
    }
}
