#!/usr/bin/env bash
# Runs the Autobahn *client* suite through the tokio adapter's client
# (engine/examples/tokio_autobahn_client.rs) and checks the report against
# expected-client-tokio.json. The permessage-deflate cases (12.*, 13.*) are left
# out (fuzzingserver-tokio.json): the adapter does not negotiate it yet.
#
# usage: autobahn/run-client-tokio.sh [--quick] [--update]
# Same options and environment as run-client.sh, which does the work.
set -euo pipefail
AB_EXAMPLE=tokio_autobahn_client AB_FEATURES=tokio AB_SPEC=fuzzingserver-tokio.json \
    AB_EXPECTED=expected-client-tokio.json \
    exec bash "$(dirname "${BASH_SOURCE[0]}")/run-client.sh" "$@"
