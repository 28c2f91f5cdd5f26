//! The operator console: server-rendered pages at `{prefix}/console` for the people
//! who run the gateway (servers and their status, endpoints and their tools,
//! approvals of quarantined tool definitions and of calls waiting for a person,
//! gateway sessions, the audit trail, the configuration).
//!
//! - **Who**: the browser's sign-in at the built-in authorization server (its session
//!   cookie; a one-time link or OpenID Connect), nothing of its own. Holders of
//!   `console.admin_role` may change things, holders of `console.auditor_role` see
//!   everything and change nothing; everyone else gets 403. Every refusal of a change
//!   is audited (`console_action`, outcome `denied`), and so is every change, with who
//!   made it. A call waiting for approval is decided by who may decide it on the
//!   approval page (a holder of one of `approval.approver_roles`, or the user the call
//!   acts for), whatever their console role.
//! - **Forms**: each carries the sign-in's CSRF token; a POST also needs an `Origin`
//!   (and `Sec-Fetch-Site`, where the browser sends it) of the gateway's own.
//! - **Pages**: maud templates (every value escaped), one stylesheet from the same
//!   origin, one small script that carries the response's nonce; the CSP allows
//!   nothing else (`frame-ancestors 'none'`).
//! - **Changes**: a tool switched on or off, a redaction direction, a whole proposed
//!   file: each is an edit of the configuration file (format-preserving, comments
//!   kept), checked as `mcp-guard check` checks, applied through the [`Reloader`]
//!   (so the next call sees it and clients get `list_changed`), and only then written.
//!   A form names the digest of the file it was rendered from; a change to a file that
//!   changed since is refused as stale.

mod actions;
mod change;
mod pages;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse as _, Redirect, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use mcp_guard_core::access::{AccessStore, Sessions};
use mcp_guard_core::audit::{AuditPrincipal, EventKind, Outcome};
use mcp_guard_core::config::ConsoleSection;
use mcp_guard_core::pin::PinGate;
use mcp_guard_core::redact::KnownSecrets;
use mcp_guard_core::{AuditEvent, AuditSink, Principal, Redactor, Target};
use sha2::{Digest as _, Sha256};

use super::Reloader;
use crate::authorize::AuthorizationServer;
use crate::federation::Gateway;

/// What the console is built from (all of it the running gateway's own).
pub(crate) struct Parts {
    pub(crate) settings: ConsoleSection,
    pub(crate) prefix: String,
    pub(crate) auth: AuthorizationServer,
    pub(crate) reloader: Reloader,
    pub(crate) gateway: Gateway,
    pub(crate) sessions: Sessions,
    pub(crate) store: AccessStore,
    pub(crate) sink: Arc<dyn AuditSink>,
    pub(crate) pins: Arc<PinGate>,
    pub(crate) lock_path: PathBuf,
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) base: PathBuf,
    pub(crate) known: Arc<KnownSecrets>,
    pub(crate) redactor: Arc<dyn Redactor>,
    /// Calls waiting for a person's approval (listed on the Approvals page, decided
    /// there by an approver).
    pub(crate) approvals: crate::approval::Approvals,
}

/// The console of one gateway.
#[derive(Clone)]
pub(crate) struct Console {
    inner: Arc<State>,
}

/// What the handlers share.
struct State {
    p: Parts,
    /// The origin forms must come from (the issuer's).
    origin: String,
    /// Changes to the configuration file and the lock file run one at a time.
    change: tokio::sync::Mutex<()>,
    /// One message for the next page of a browser sign-in (by its CSRF token), after
    /// a change redirected there.
    flash: Mutex<HashMap<String, Notice>>,
    /// The last failure seen of each server, with its time (kept after it recovers).
    last_errors: Mutex<BTreeMap<String, (SystemTime, String)>>,
    /// The last "test connection" of each server.
    tests: Mutex<BTreeMap<String, Tested>>,
    /// The last check of the audit trail's chain.
    chain: Mutex<Option<(SystemTime, Result<pages::Chain, String>)>>,
}

/// When a connection was tested, and what it found.
type Tested = (SystemTime, Result<String, String>);

/// A message shown once at the top of the next page.
#[derive(Debug, Clone)]
struct Notice {
    ok: bool,
    text: String,
}

/// What a signed-in user may do here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Auditor,
}

/// The signed-in user of a request, with a console role.
#[derive(Debug, Clone)]
struct Operator {
    principal: Principal,
    role: Role,
    csrf: String,
}

type Shared = axum::extract::State<Arc<State>>;
type Params = Vec<(String, String)>;

/// One value of a form or query (empty counts as absent); `None` when missing or
/// given twice.
fn one<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    let mut it = params.iter().filter(|(k, _)| k == name);
    let first = it.next()?;
    if it.next().is_some() {
        return None;
    }
    Some(first.1.as_str()).filter(|v| !v.is_empty())
}

/// Constant-time equality of two tokens (through their digests, so lengths leak
/// nothing either).
fn same(a: &str, b: &str) -> bool {
    let (x, y): ([u8; 32], [u8; 32]) = (Sha256::digest(a).into(), Sha256::digest(b).into());
    mcp_guard_core::access::tokens::digests_equal(&x, &y)
}

/// SHA-256 of bytes, hex.
fn digest(bytes: &[u8]) -> String {
    mcp_guard_core::hex::encode(&Sha256::digest(bytes))
}

fn origin_of(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.origin().ascii_serialization())
}

impl Console {
    pub(crate) fn new(parts: Parts) -> Self {
        let origin = origin_of(parts.auth.issuer());
        Self {
            inner: Arc::new(State {
                p: parts,
                origin,
                change: tokio::sync::Mutex::new(()),
                flash: Mutex::default(),
                last_errors: Mutex::default(),
                tests: Mutex::default(),
                chain: Mutex::default(),
            }),
        }
    }

    /// The console's routes, under `{prefix}/console`.
    pub(crate) fn router(&self) -> axum::Router {
        let base = format!("{}/console", self.inner.p.prefix);
        let at = |s: &str| format!("{base}{s}");
        axum::Router::new()
            .route(&base, get(index))
            .route(&at("/"), get(index))
            .route(&at("/style.css"), get(style))
            .route(&at("/servers"), get(pages::servers))
            .route(&at("/servers/test"), post(actions::test_connection))
            .route(&at("/endpoints"), get(pages::endpoints))
            .route(&at("/endpoints/toggle"), post(actions::toggle_tool))
            .route(&at("/endpoints/redaction"), post(actions::redaction))
            .route(&at("/approvals"), get(pages::approvals))
            .route(&at("/approvals/approve"), post(actions::approve))
            .route(&at("/approvals/reject"), post(actions::reject))
            .route(&at("/approvals/calls"), post(actions::decide_call))
            .route(&at("/sessions"), get(pages::sessions))
            .route(&at("/sessions/revoke"), post(actions::revoke))
            .route(&at("/audit"), get(pages::audit))
            .route(&at("/audit/record"), get(pages::audit_record))
            .route(&at("/config"), get(pages::config))
            .route(&at("/config/check"), post(actions::config_check))
            .route(&at("/config/apply"), post(actions::config_apply))
            .layer(DefaultBodyLimit::max(1024 * 1024))
            .with_state(self.inner.clone())
    }
}

async fn index(state: Shared) -> Response {
    see_other(&state.path("/servers"))
}

async fn style() -> Response {
    let mut r = format!("{}{}", crate::web::STYLE, pages::STYLE).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn see_other(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    crate::web::secure_headers(r.headers_mut());
    r
}

/// Whether a state-changing request comes from the gateway's own pages: its
/// `Origin`, and `Sec-Fetch-Site` where the browser sends it.
fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let from = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let origin_ok = from(header::ORIGIN.as_str()).is_none_or(|o| o == origin);
    let site_ok = from("sec-fetch-site").is_none_or(|s| s == "same-origin");
    origin_ok && site_ok
}

impl State {
    /// `{prefix}/console{rest}`.
    fn path(&self, rest: &str) -> String {
        format!("{}/console{rest}", self.p.prefix)
    }

    /// The signed-in user of a page request, with their console role; a browser that
    /// is not signed in is sent to sign in and back, anyone else is refused.
    async fn viewer(&self, headers: &HeaderMap, uri: &Uri) -> Result<Operator, Response> {
        let Some((principal, csrf)) = self.p.auth.browser_session(headers) else {
            let here = uri
                .path_and_query()
                .map_or_else(|| self.path(""), ToString::to_string);
            let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
            return Err(see_other(&format!("/oauth/signin?next={next}")));
        };
        self.role_of(principal, csrf, uri.path()).await
    }

    async fn role_of(&self, principal: Principal, csrf: String, what: &str) -> Result<Operator, Response> {
        let s = &self.p.settings;
        let role = if principal.has_role(&s.admin_role) {
            Role::Admin
        } else if principal.has_role(&s.auditor_role) {
            Role::Auditor
        } else {
            self.record(
                &principal,
                "open",
                format!("{what}: refused, no console role"),
                false,
                None,
            )
            .await;
            return Err(pages::refusal(
                StatusCode::FORBIDDEN,
                "Not allowed",
                &format!(
                    "You are signed in as {}, who holds neither the {} nor the {} role. Ask an administrator.",
                    principal.id(),
                    s.admin_role,
                    s.auditor_role
                ),
            ));
        };
        Ok(Operator {
            principal,
            role,
            csrf,
        })
    }

    /// The operator of a form post that changes something: signed in, holding the
    /// admin role (or, with `read_only`, any console role), posting the sign-in's
    /// CSRF token from the gateway's own origin. Every refusal is audited.
    async fn poster(
        &self,
        headers: &HeaderMap,
        form: &Params,
        action: &str,
        what: &str,
        read_only: bool,
    ) -> Result<Operator, Response> {
        let Some((principal, csrf)) = self.p.auth.browser_session(headers) else {
            return Err(pages::refusal(
                StatusCode::UNAUTHORIZED,
                "Not signed in",
                "Sign in to the console and try again.",
            ));
        };
        let op = self.role_of(principal, csrf, &self.path("")).await?;
        let refuse = async |why: &str| {
            self.record(
                &op.principal,
                action,
                format!("{what}: refused, {why}"),
                false,
                None,
            )
            .await;
            pages::refusal(
                StatusCode::FORBIDDEN,
                "Refused",
                &format!("Refused: {why}. Nothing was changed."),
            )
        };
        if !one(form, "csrf").is_some_and(|t| same(t, &op.csrf)) {
            tracing::warn!(user = %op.principal.id(), action, "console form without a valid CSRF token refused");
            return Err(refuse("the form's CSRF token is missing or wrong").await);
        }
        if !same_origin(headers, &self.origin) {
            return Err(refuse("the form was not sent from this gateway's own pages").await);
        }
        if op.role == Role::Auditor && !read_only {
            return Err(refuse(&format!(
                "the {} role changes nothing",
                self.p.settings.auditor_role
            ))
            .await);
        }
        Ok(op)
    }

    /// Records a console action (done, or refused) in the audit trail, as `who`.
    async fn record(
        &self,
        who: &Principal,
        action: &str,
        detail: String,
        done: bool,
        target: Option<Target>,
    ) {
        let mut event = AuditEvent::new(EventKind::ConsoleAction {
            action: action.to_owned(),
            detail: self.p.redactor.redact_str(&detail).into_owned(),
        });
        let mut p = AuditPrincipal::new(who.id(), who.kind());
        p.on_behalf_of = who.on_behalf_of().map(str::to_owned);
        p.roles = Some(who.roles().to_vec());
        event.principal = Some(p);
        event.outcome = Some(if done { Outcome::Ok } else { Outcome::Denied });
        event.target = target;
        if let Err(e) = self.p.sink.record(&event).await {
            tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), action, "could not record a console action");
        }
    }

    /// Leaves `text` for the operator's next page and sends them there.
    fn done(&self, op: &Operator, to: &str, ok: bool, text: String) -> Response {
        let mut f = self.flash.lock().unwrap_or_else(PoisonError::into_inner);
        if f.len() > 1000 {
            f.clear();
        }
        f.insert(op.csrf.clone(), Notice { ok, text });
        drop(f);
        see_other(&self.path(to))
    }

    fn take_flash(&self, op: &Operator) -> Option<Notice> {
        self.flash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&op.csrf)
    }

    /// The configuration file's text and digest now (`None` for a configuration built
    /// in code, or a file that cannot be read).
    fn file(&self) -> Option<(String, String)> {
        let path = self.p.config_path.as_ref()?;
        let bytes = std::fs::read(path).ok()?;
        let d = digest(&bytes);
        Some((String::from_utf8_lossy(&bytes).into_owned(), d))
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn the_console_mounts_under_the_embedders_prefix_and_sends_strangers_to_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            "[gateway]\npublic_url = \"http://127.0.0.1:9\"\n\n[auth.server]\n\n\
             [[auth.server.users]]\nid = \"root\"\nroles = [\"admin\"]\n\n\
             [console]\nenabled = true\n\n[audit]\nsinks = [\"jsonl\"]\n",
        )
        .unwrap();
        let loaded = crate::server::load_config(&path).unwrap();
        let gw = crate::server::ServerBuilder::from_loaded(loaded)
            .path_prefix("/tools")
            .build()
            .await
            .unwrap();
        let app = gw.app();
        let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
        let r = app
            .clone()
            .oneshot(get("/tools/console/servers?x=1"))
            .await
            .unwrap();
        assert_eq!(r.status(), http::StatusCode::SEE_OTHER);
        assert_eq!(
            r.headers()[http::header::LOCATION],
            "/oauth/signin?next=%2Ftools%2Fconsole%2Fservers%3Fx%3D1"
        );
        let r = app
            .clone()
            .oneshot(get("/tools/console/style.css"))
            .await
            .unwrap();
        assert_eq!(r.status(), http::StatusCode::OK);
        // Not at the root, and a form post without a sign-in changes nothing.
        let r = app.clone().oneshot(get("/console/servers")).await.unwrap();
        assert_eq!(r.status(), http::StatusCode::NOT_FOUND);
        let post = Request::post("/tools/console/sessions/revoke")
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("session=x&csrf=y"))
            .unwrap();
        let r = app.oneshot(post).await.unwrap();
        assert_eq!(r.status(), http::StatusCode::UNAUTHORIZED);
        gw.shutdown().await.unwrap();
    }
}
