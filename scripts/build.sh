#!/usr/bin/env bash
# build.sh builds bouncemilter the way it is installed, into OUT (default
# bin/bouncemilter):
#
#   scripts/build.sh [OUT]
#
# Sourced (". scripts/build.sh"), it only sets build_tags and build_flags,
# so that contrib/install.sh builds, and scripts/test.sh tests, with the
# same ones.
#
# The binary is linked statically. The SQLite driver is cgo, and a
# dynamically linked binary spends about a third of its start-up in the
# dynamic loader (about 7 ms of 24 here): every "bouncemilter parse" or
# "accounts" pays it. The tags keep what a static glibc binary cannot do at
# run time out of it: netgo and osusergo make the DNS resolver and user
# lookups (the service user, in doctor and serve) Go's own, which read
# /etc/resolv.conf, /etc/hosts, /etc/passwd and /etc/group, instead of
# glibc's NSS modules; sqlite_omit_load_extension leaves out SQLite's
# dlopen of extensions, which nothing here uses. The static C library is
# in libc6-dev, which cgo needs anyway.
build_tags=netgo,osusergo,sqlite_omit_load_extension
build_flags=(-tags "$build_tags" -ldflags '-linkmode=external -extldflags=-static')

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	out=$(realpath -m "${1:-bin/bouncemilter}")
	cd "$(dirname "$0")/.."
	export PATH="$PATH:/usr/local/go/bin"
	command -v go >/dev/null || { echo "build.sh: Go 1.25 or newer is needed (see README)" >&2; exit 1; }
	go build "${build_flags[@]}" -o "$out" ./cmd/bouncemilter
fi
