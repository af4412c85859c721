#!/bin/bash
# EMR bootstrap action: the CA bundle of the databases the jobs reach over TLS (RDS's
# global-bundle.pem), on every node, in the two forms the drivers read:
#   <dest>/db-ca.pem          PEM, for libpq and PgJDBC          (a sink's or catalog's tls.ca_file)
#   <dest>/db-truststore.p12  PKCS12 truststore, for Connector/J (a source's tls.truststore)
# Arguments: the bundle (s3://bucket/key, or a local path) and the destination folder
# (default /etc/pki/spotlake). The truststore's password is "changeit": it holds only public
# certificates (spark_jobs.common.database_secret.TRUSTSTORE_PASSWORD).
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: install-db-ca.sh <s3://bucket/global-bundle.pem | path> [destination folder]" >&2
  exit 2
fi
source_bundle="$1"
dest="${2:-/etc/pki/spotlake}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

case "$source_bundle" in
  s3://*) aws s3 cp --only-show-errors "$source_bundle" "$work/bundle.pem" ;;
  *) cp "$source_bundle" "$work/bundle.pem" ;;
esac
count="$(grep -c -- '-----BEGIN CERTIFICATE-----' "$work/bundle.pem" || true)"
if [ "$count" -eq 0 ]; then
  echo "install-db-ca: $source_bundle holds no PEM certificate; give the databases' CA bundle (RDS:" \
    "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem, copied to S3)" >&2
  exit 2
fi

# One file per certificate, each imported as a trusted entry.
awk -v out="$work/cert-" '
  /-----BEGIN CERTIFICATE-----/ { n++; file = sprintf("%s%04d.pem", out, n) }
  n > 0 { print > file }
  /-----END CERTIFICATE-----/ { close(file) }
' "$work/bundle.pem"
for cert in "$work"/cert-*.pem; do
  keytool -importcert -noprompt -alias "$(basename "$cert" .pem)" -file "$cert" \
    -keystore "$work/db-truststore.p12" -storetype PKCS12 -storepass changeit >/dev/null
done

run=""
if [ "$(id -u)" -ne 0 ] && [ ! -w "$(dirname "$dest")" ]; then
  run="sudo"  # EMR runs bootstrap actions as hadoop, with sudo
fi
$run mkdir -p "$dest"
$run install -m 0644 "$work/bundle.pem" "$dest/db-ca.pem"
$run install -m 0644 "$work/db-truststore.p12" "$dest/db-truststore.p12"
echo "install-db-ca: $count certificate(s) in $dest/db-ca.pem and $dest/db-truststore.p12"
