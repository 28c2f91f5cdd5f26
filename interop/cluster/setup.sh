#!/usr/bin/env bash
# Installs what the cluster-mode tests run for real, all from Debian's packages:
#   - PostgreSQL (15 on bookworm): the tests make a private cluster with initdb in a
#     temporary directory, on 127.0.0.1 and a free port, as the unprivileged user
#     `mcpguard-pg` (initdb refuses to run as root), which this script creates;
#   - redis-server (shared rate limits), run by the tests on 127.0.0.1 without persistence;
#   - haproxy, the load balancer the tests put in front of three gateway replicas
#     (round robin, no stickiness).
# Nothing is started or enabled as a system service. Idempotent: each part is skipped
# when it is already there. Needs root for apt-get and useradd (CI and the development
# machines run as root); without root it says what is missing.
set -euo pipefail

user=mcpguard-pg
missing=()
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
[[ -n "$pg_bin" && -x "$pg_bin/initdb" && -x "$pg_bin/pg_ctl" && -x "$pg_bin/psql" ]] || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "cluster setup: postgresql ($pg_bin), redis-server, haproxy present"
elif [[ $EUID -ne 0 ]]; then
    echo "cluster setup: missing ${missing[*]} and this is not root; install them with apt-get" >&2
    exit 1
else
    echo "cluster setup: apt-get install ${missing[*]}"
    # Keep the package scripts from starting system services: the tests run their own.
    added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" || {
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    }
    [[ $added_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi

if id "$user" >/dev/null 2>&1; then
    echo "cluster setup: user $user present"
elif [[ $EUID -ne 0 ]]; then
    echo "cluster setup: user $user is missing and this is not root" >&2
    exit 1
else
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    echo "cluster setup: created user $user (runs the tests' private PostgreSQL)"
fi

"$pg_bin/postgres" --version
redis-server --version
haproxy -v | head -1
