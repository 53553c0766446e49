#!/usr/bin/env bash
# Provision the local Elasticsearch and OpenSearch the integration tests run: make sure Maven and
# a JDK are there, then fetch, verify and assemble the pinned versions into $DAC_CACHE_DIR
# (default ~/.cache/dac). A warm cache makes this a no-op. No server is started.
set -euo pipefail
cd "$(dirname "$0")/.."

export DAC_CACHE_DIR="${DAC_CACHE_DIR:-$HOME/.cache/dac}"
mkdir -p "$DAC_CACHE_DIR"

need_apt=()
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if ! ls /usr/lib/jvm/*/bin/java >/dev/null 2>&1 && ! command -v java >/dev/null 2>&1; then
  need_apt+=(openjdk-17-jdk-headless)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need_apt[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} (install them, then run this script again)" >&2
    exit 2
  fi
fi

start=$(date +%s)
dac cluster fetch --engine "${1:-all}"
echo "provisioned in $(( $(date +%s) - start ))s (cache: $DAC_CACHE_DIR)"
