#!/bin/sh
# Debian packages the test suite drives: curl (a harness test client, and HTTP/2 with
# --http2-prior-knowledge), nginx (the reverse proxy of the deployment test), nghttp2-client
# (nghttp, the HTTP/2 end-to-end client; h2load, the HTTP/2 benchmark) and chromium (the
# headless browser of the HTTP/2 page test). Installs what is missing (as root; otherwise says
# what to run). Idempotent and quiet: when everything is there it only checks.
set -eu
missing=""
command -v curl >/dev/null 2>&1 || missing="$missing curl"
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing="$missing nginx"
command -v nghttp >/dev/null 2>&1 || missing="$missing nghttp2-client"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
# A C compiler and Python's headers: CI also runs the suite with the HTTP/1.1 request path compiled
# by mypyc (scripts/compile.py).
command -v cc >/dev/null 2>&1 || missing="$missing gcc"
"${PYTHON:-python3}" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null || missing="$missing python3-dev"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "the tests need:$missing; run: sudo apt-get install -y$missing" >&2
    exit 1
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
