#!/bin/bash
# make release: the artifact every instance installs from, offline.
#
#   deploy/release.sh                      dist/rapid-release-<version>-<commit>.tar.gz
#   RELEASE_BUCKET=b deploy/release.sh     … and upload it to s3://b/releases/ (prints the key)
#   deploy/release.sh --layout DIR         only lay out DIR (boot scripts, units, lock), no
#                                          wheels: what tests/test_boot.py builds a bundle from
#
# The bundle: wheelhouse/ (every wheel of requirements.lock for Amazon Linux 2023 on x86_64,
# CPython 3.11, hashes checked, plus the project's own wheel), requirements.lock, boot/
# (deploy/boot: boot.sh, rapid-env, units, log shipping) and RELEASE (what it was built from).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
LOCK=${LOCK:-requirements.lock}
#: glibc of Amazon Linux 2023 is 2.34: wheels for any manylinux up to it run there.
PLATFORMS=(manylinux2014_x86_64)
for minor in $(seq 17 34); do PLATFORMS+=("manylinux_2_${minor}_x86_64"); done

layout() {
  local dir=$1
  [ -f "$LOCK" ] || { echo "release: $LOCK is missing (make lock)" >&2; exit 1; }
  install -d "$dir/boot/units" "$dir/wheelhouse"
  install -m 0755 deploy/boot/boot.sh deploy/boot/rapid-env deploy/boot/rapid-shell \
    deploy/boot/rapid-health deploy/boot/rapid-drain "$dir/boot/"
  install -m 0644 deploy/boot/cloudwatch-agent.json deploy/boot/logrotate.conf "$dir/boot/"
  install -m 0644 deploy/boot/units/* "$dir/boot/units/"
  install -m 0644 "$LOCK" "$dir/requirements.lock"
  echo "$(git describe --always --dirty) $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$dir/RELEASE"
}

if [ "${1:-}" = "--layout" ]; then
  layout "${2:?directory}"
  exit 0
fi

if [ -n "$(git status --porcelain --untracked-files=no)" ] && [ -z "${ALLOW_DIRTY:-}" ]; then
  echo "release: the work tree has uncommitted changes; commit them (or ALLOW_DIRTY=1)" >&2
  exit 1
fi
version=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
name="rapid-release-$version-$(git rev-parse --short=12 HEAD)"
work="build/release/$name"
rm -rf "$work" && layout "$work"

platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
# Binary wheels only, for the instances' platform, each checked against the lock's hashes.
"$PYTHON" -m pip download --quiet --require-hashes --no-deps --only-binary=:all: \
  "${platform_args[@]}" --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
  -r "$LOCK" -d "$work/wheelhouse"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$work/wheelhouse" .

mkdir -p dist
tar -C "$work" -czf "dist/$name.tar.gz" .
sha256sum "dist/$name.tar.gz" | tee "dist/$name.tar.gz.sha256"
if [ -n "${RELEASE_BUCKET:-}" ]; then
  aws s3 cp "dist/$name.tar.gz" "s3://$RELEASE_BUCKET/releases/$name.tar.gz"
  echo "ReleaseKey=releases/$name.tar.gz"
fi
