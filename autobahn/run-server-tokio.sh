#!/usr/bin/env bash
# Runs the Autobahn *server* suite against the tokio adapter's echo example
# (engine/examples/tokio_echo.rs) and checks the report against
# expected-server-tokio.json.
# Every case, permessage-deflate (12.*, 13.*) included (517, as for the mio
# engine). The expectations were merged from two runs of the code of commit
# cb54fca, 12.*/13.* alone and 1.*-10.* alone (each PASS, every case OK or
# INFORMATIONAL); the whole suite has not yet been run in one go (about 10 min).
#
# usage: autobahn/run-server-tokio.sh [--quick] [--update]
# Same options and environment as run-server.sh, which does the work.
set -euo pipefail
AB_EXAMPLE=tokio_echo AB_FEATURES=tokio \
    AB_EXPECTED=expected-server-tokio.json \
    exec bash "$(dirname "${BASH_SOURCE[0]}")/run-server.sh" "$@"
