use secrecy::SecretString;

use crate::credential::{CredentialError, CredentialKey, CredentialStore};

/// A configuration string that may name secrets as `${NAME}` (`$$` is a literal `$`).
///
/// Parsed once at configuration time so a malformed placeholder is a configuration
/// error, not a connect-time surprise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(String),
}

impl Template {
    /// Parses `s`.
    ///
    /// # Errors
    /// An unterminated `${`, an empty name, or a name outside `[A-Za-z0-9_]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                lit.push('$');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('{') {
                let end = tail
                    .find('}')
                    .ok_or_else(|| format!("unterminated placeholder in {s:?}"))?;
                let name = &tail[..end];
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(format!("invalid placeholder name {name:?} (use [A-Za-z0-9_])"));
                }
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Var(name.to_owned()));
                rest = &tail[end + 1..];
            } else {
                lit.push('$');
                rest = after;
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self { parts })
    }

    /// The placeholder names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(n) => Some(n.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Whether the template names any secret.
    pub fn has_placeholders(&self) -> bool {
        self.names().next().is_some()
    }
}

/// Fills `template` from `store` for `server` (shared credentials, then the principal's
/// personal ones when `principal` is given).
///
/// # Errors
/// [`CredentialError::Missing`] listing every name not found; backend failures.
pub async fn resolve_template(
    template: &Template,
    server: &str,
    principal: Option<&str>,
    store: &dyn CredentialStore,
) -> Result<SecretString, CredentialError> {
    let mut out = String::new();
    let mut missing = Vec::new();
    for part in &template.parts {
        match part {
            Part::Lit(s) => out.push_str(s),
            Part::Var(name) => {
                let mut found = None;
                if let Some(p) = principal {
                    found = store
                        .get(&CredentialKey::personal(server, p, name.as_str()))
                        .await?;
                }
                if found.is_none() {
                    found = store.get(&CredentialKey::shared(server, name.as_str())).await?;
                }
                match found {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "filling an upstream credential template"
                    )]
                    Some(c) => out.push_str(secrecy::ExposeSecret::expose_secret(&c.secret)),
                    None => missing.push(name.clone()),
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(SecretString::from(out))
    } else {
        Err(CredentialError::Missing {
            key: missing.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_placeholders() {
        let t = Template::parse("Bearer ${TOKEN} $$x $y").unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["TOKEN"]);
        assert!(Template::parse("${").is_err());
        assert!(Template::parse("${}").is_err());
        assert!(Template::parse("${A-B}").is_err());
    }

    #[tokio::test]
    async fn resolves_personal_before_shared_and_lists_missing() {
        let store = crate::MemoryCredentialStore::new();
        store.set(CredentialKey::shared("gh", "T"), "shared".to_owned().into());
        store.set(
            CredentialKey::personal("gh", "alice", "T"),
            "mine".to_owned().into(),
        );
        let t = Template::parse("x-${T}").unwrap();
        #[expect(clippy::disallowed_methods, reason = "test reads the resolved value")]
        let got = |s: SecretString| secrecy::ExposeSecret::expose_secret(&s).to_owned();
        assert_eq!(
            got(resolve_template(&t, "gh", Some("alice"), &store).await.unwrap()),
            "x-mine"
        );
        assert_eq!(
            got(resolve_template(&t, "gh", Some("bob"), &store).await.unwrap()),
            "x-shared"
        );
        let t2 = Template::parse("${T}${U}${V}").unwrap();
        let err = resolve_template(&t2, "gh", None, &store).await.unwrap_err();
        assert_eq!(err.to_string(), "missing credential U, V");
    }
}
