#!/usr/bin/env bash
# Installs the real receivers the audit-forwarding and telemetry tests talk to:
#   - rsyslog from Debian, with its TLS driver (rsyslog-gnutls), run by the tests in the
#     foreground on 127.0.0.1 with a configuration each test writes;
#   - openssl (the tests make a throwaway CA and server certificate with it);
#   - a Python venv (interop/siem/.venv) with opentelemetry-proto, pinned in
#     requirements.txt, for the OTLP/HTTP receiver (otlp_receiver.py).
# Idempotent: each part is skipped when it is already there. Needs root for apt-get
# (CI and the development machines run as root); without root it says what is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
start=$SECONDS

have_rsyslog() {
    command -v rsyslogd >/dev/null 2>&1 && [[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so || -n "$(find /usr/lib -name 'lmnsd_gtls.so' -print -quit 2>/dev/null)" ]]
}

# --- rsyslog + TLS driver + openssl ---------------------------------------------------------
if have_rsyslog && command -v openssl >/dev/null 2>&1; then
    echo "siem setup: rsyslog $(rsyslogd -v | head -1 | awk '{print $2}' | tr -d ,) and openssl present"
elif [[ $EUID -ne 0 ]]; then
    echo "siem setup: rsyslog (with rsyslog-gnutls) and openssl are missing and this is not root; install them with apt-get" >&2
    exit 1
else
    echo "siem setup: apt-get install rsyslog rsyslog-gnutls openssl"
    # Keep the package scripts from starting a system rsyslog: the tests run their own.
    added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rsyslog rsyslog-gnutls openssl >/dev/null; }
    install || { apt-get update -qq && install; }
    [[ $added_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
fi

# --- Python: opentelemetry-proto for the OTLP receiver --------------------------------------
stamp=.venv/.siem-req.sha256
if [[ -f "$stamp" && "$(cat "$stamp")" == "$(sha256sum requirements.txt | cut -d' ' -f1)" && -x .venv/bin/python ]]; then
    echo "siem setup: python venv up to date"
else
    echo "siem setup: python venv + pip install -r requirements.txt"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    sha256sum requirements.txt | cut -d' ' -f1 >"$stamp"
fi
proto_v="$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
echo "siem setup: opentelemetry-proto ${proto_v}, done in $((SECONDS - start))s"
