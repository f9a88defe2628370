#!/usr/bin/env bash
# Installs what the end-to-end browser test needs, idempotently:
# Debian's Chromium (/usr/bin/chromium) and playwright-core, pinned by package-lock.json.
# Playwright's own browser download is never used (and could not be fetched here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ ! -x /usr/bin/chromium ]; then
  echo "e2e setup: installing Debian's chromium"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q chromium
fi

for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "e2e setup: $tool is missing (Node.js 20 or newer is needed)" >&2
    exit 1
  fi
done

# npm ci only when node_modules doesn't hold what the lock file pins.
want=$(node -p "require('./package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "try { require('./node_modules/playwright-core/package.json').version } catch (e) { '' }")
if [ "$want" != "$have" ]; then
  echo "e2e setup: npm ci (playwright-core $want)"
  # No browser download: Debian's chromium is used (executablePath).
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
echo "e2e setup: $(/usr/bin/chromium --version 2>/dev/null | tail -n 1), playwright-core $want"
