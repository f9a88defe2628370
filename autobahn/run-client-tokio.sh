#!/usr/bin/env bash
# Runs the Autobahn *client* suite through the tokio adapter's client
# (engine/examples/tokio_autobahn_client.rs) and checks the report against
# expected-client-tokio.json.
# Every case, permessage-deflate (12.*, 13.*) included (517, as for the mio
# engine): OK 514, INFORMATIONAL 3 in one full run of the code of commit
# 4a48c17 (650 s on a busy two-core machine). Reports in autobahn/reports-tokio/.
#
# usage: autobahn/run-client-tokio.sh [--quick] [--update]
# Same options and environment as run-client.sh, which does the work.
set -euo pipefail
AB_REPORTS_DIR=reports-tokio AB_EXAMPLE=tokio_autobahn_client AB_FEATURES=tokio \
    AB_EXPECTED=expected-client-tokio.json \
    exec bash "$(dirname "${BASH_SOURCE[0]}")/run-client.sh" "$@"
