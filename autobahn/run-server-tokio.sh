#!/usr/bin/env bash
# Runs the Autobahn *server* suite against the tokio adapter's echo example
# (engine/examples/tokio_echo.rs) and checks the report against
# expected-server-tokio.json. The permessage-deflate cases (12.*, 13.*) are left
# out (fuzzingclient-tokio.json): the adapter does not negotiate it yet.
#
# usage: autobahn/run-server-tokio.sh [--quick] [--update]
# Same options and environment as run-server.sh, which does the work.
set -euo pipefail
AB_EXAMPLE=tokio_echo AB_FEATURES=tokio AB_SPEC=fuzzingclient-tokio.json \
    AB_EXPECTED=expected-server-tokio.json \
    exec bash "$(dirname "${BASH_SOURCE[0]}")/run-server.sh" "$@"
