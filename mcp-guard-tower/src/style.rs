//! The one stylesheet of the gateway's pages (sign-in, consent, credentials), served
//! from the gateway's own origin so the pages' CSP needs no inline style.

/// The stylesheet.
pub(crate) const STYLE: &str = "\
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}\
main{max-width:40rem;margin:3rem auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 3px #0002}\
h1{font-size:1.5rem;margin-top:0}dt{font-weight:600}dd{margin:0 0 .75rem 0;word-break:break-all}\
fieldset{border:1px solid #ccd;border-radius:6px;margin:1rem 0}legend{font-weight:600}\
button{font:inherit;padding:.5rem 1.25rem;border-radius:6px;border:1px solid #245;background:#245;color:#fff;cursor:pointer}\
button.secondary{background:#fff;color:#245}button:disabled{opacity:.45;cursor:not-allowed}\
td form{display:grid;gap:.4rem}input[type=text],input[type=password]{font:inherit;padding:.4rem;width:100%;box-sizing:border-box}\
.state{font-weight:600}.state-done{color:#176b2c}.state-needed{color:#8a4b00}.error{color:#a1151b}\
ul.tools{columns:2}li{margin:.15rem 0}.actions{display:flex;gap:1rem;margin-top:1.5rem}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.4rem;border-bottom:1px solid #e3e5e8}";
