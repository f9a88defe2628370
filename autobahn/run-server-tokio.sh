#!/usr/bin/env bash
# Runs the Autobahn *server* suite against the tokio adapter's echo example
# (engine/examples/tokio_echo.rs) and checks the report against
# expected-server-tokio.json.
# Every case, permessage-deflate (12.*, 13.*) included (517, as for the mio
# engine): OK 514, INFORMATIONAL 3 in one full run of the code of commit
# 4a48c17 (552 s on a busy two-core machine). Reports in autobahn/reports-tokio/.
#
# usage: autobahn/run-server-tokio.sh [--quick] [--update]
# Same options and environment as run-server.sh, which does the work.
set -euo pipefail
AB_REPORTS_DIR=reports-tokio AB_EXAMPLE=tokio_echo AB_FEATURES=tokio \
    AB_EXPECTED=expected-server-tokio.json \
    exec bash "$(dirname "${BASH_SOURCE[0]}")/run-server.sh" "$@"
