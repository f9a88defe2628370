#!/usr/bin/env bash
# The PostgreSQL store's tests (chat/tests/postgres_store.rs, #[ignore]d in a plain
# `cargo test`) against a private server:
#
#   bash chat/scaleout/pg-tests.sh [TEST-NAME-FILTER...]
#
# scripts/postgres.sh starts the server (installing PostgreSQL with apt-get if it is missing)
# and this script resets its `sockeye` database, then runs
# `cargo test -p sockeye-chat --test postgres_store -- --ignored` with SOCKEYE_TEST_PG_URL set.
# A server this script started is stopped at the end (PG_KEEP=1 keeps it); one that was
# already running is left running.
set -euo pipefail
cd "$(dirname "$0")/../.."
pg=scripts/postgres.sh
[ -f "$pg" ] || { echo "pg-tests.sh: $pg is missing" >&2; exit 1; }

was_running=
if bash "$pg" psql -tAc 'SELECT 1' > /dev/null 2>&1; then
    was_running=1
fi
stop() {
    if [ -z "$was_running" ] && [ -z "${PG_KEEP:-}" ]; then
        bash "$pg" stop || true
    fi
}
trap stop EXIT

env=$(bash "$pg" start)
eval "$env"
bash "$pg" reset
echo "pg-tests.sh: PostgreSQL on port $PG_PORT (database reset)" >&2
SOCKEYE_TEST_PG_URL="$PG_URL" cargo test -p sockeye-chat --test postgres_store -- --ignored "$@"
