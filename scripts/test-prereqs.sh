#!/usr/bin/env bash
# Installs the Debian packages the tests use when they are missing: mosquitto_pub/mosquitto_sub
# (a third-party MQTT client), openssl, VictoriaMetrics (a real server for the InfluxDB
# /api/v2/write path, test/victoria.ts) and Chromium (the web console's browser tests, driven by
# playwright-core).
set -euo pipefail
missing=()
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} for the tests" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
