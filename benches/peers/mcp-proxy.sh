#!/bin/sh
# Runs joshrotenberg/mcp-proxy as the `load` bench's peer target: one HTTP backend (the
# bench's upstream, $UPSTREAM_URL) named `up`, listening on 127.0.0.1:$PORT, with its
# echo tool exposed as `up/echo`. Install it outside the workspace, for example
#   cargo install mcp-proxy --version 0.6.0 --root /opt/peers/mcp-proxy
# and point MCP_PROXY at the binary. Use with
#   load --era legacy --peer-cmd benches/peers/mcp-proxy.sh --peer-tool up/echo
set -eu
: "${UPSTREAM_URL:?set by the load bench}" "${PORT:?set by the load bench}"
bin="${MCP_PROXY:-mcp-proxy}"
dir="$(mktemp -d)"
cat > "$dir/proxy.toml" <<TOML
[proxy]
name = "load-peer"
separator = "/"

[proxy.listen]
host = "127.0.0.1"
port = $PORT

[[backends]]
name = "up"
transport = "http"
url = "$UPSTREAM_URL"
TOML
cd "$dir"
exec "$bin" --config "$dir/proxy.toml"
