#!/usr/bin/env bash
# What the compose tier needs besides the virtualenv (podman-compose is in requirements/dev.txt):
# Debian's podman with runc (crun refuses some cgroup layouts), debootstrap for the local Debian
# base image, and catatonit for the compose file's `init: true`. Installed when missing.
set -euo pipefail
missing=()
command -v podman > /dev/null || missing+=(podman)
command -v runc > /dev/null || missing+=(runc)
command -v debootstrap > /dev/null || missing+=(debootstrap)
[ -x /usr/libexec/podman/catatonit ] || command -v catatonit > /dev/null || missing+=(catatonit)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the compose tier needs ${missing[*]}: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
fi
