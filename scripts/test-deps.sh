#!/bin/sh
# Debian packages the test suite drives: curl (a harness test client) and nginx (the reverse
# proxy of the deployment test). Installs what is missing (as root; otherwise says what to run).
set -eu
missing=""
command -v curl >/dev/null 2>&1 || missing="$missing curl"
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing="$missing nginx"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "the tests need:$missing; run: sudo apt-get install -y$missing" >&2
    exit 1
fi
apt-get update -qq && apt-get install -y -qq $missing >/dev/null
