#!/usr/bin/env bash
# Installs everything the tests need (Debian peers + Python test extras) and runs them.
# This is the README's second command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
# the cluster tests run real Kamailio (dispatcher) in front of the nodes (tests/integration/test_cluster.py)
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
# the robustness harness runs the server inside a private network namespace (unshare -n, ip)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# systemd-analyze checks deploy/systemd/mediasrv.service (tests/unit/test_systemd_unit.py)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# the live page is tested in headless Chromium (tests/integration/test_console.py; no browser download)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# the C fast path (mediasrv/rtp/_fastsend.c) is built by pip and needs the Python headers
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need+=(python3-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
for tool in sipp baresip espeak-ng sox chromium systemd-analyze /usr/sbin/kamailio; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FATAL: $tool is required by the tests and is not installed" >&2; exit 1; }
done

python3 -m pip install -q -e '.[test]'
python3 -m ruff check mediasrv codecs tests bench robustness
python3 -m mypy  # mediasrv/ and codecs/, configured in pyproject.toml [tool.mypy]
python3 -m pytest -q -p no:cacheprovider "$@"
