#!/usr/bin/env bash
# Fetches the real IP-to-ASN/country data the collector's enrichment tests use, from the npm
# packages of the ip-location-db project (https://github.com/sapics/ip-location-db):
#   @ip-location-db/asn                         CSV: range_start,range_end,ASN,organisation
#   @ip-location-db/geo-whois-asn-country       CSV: range_start,range_end,country_code
#   @ip-location-db/geo-whois-asn-country-mmdb  the same data as a MaxMind DB (country_code)
#
# Versions are pinned (found with `npm view <package> version`); bump them together.
# Idempotent: a package already unpacked at the pinned version is skipped.
#
# Output directory: ${VANTAGE_IP_DATA:-$HOME/.cache/vantage/ip-data}, laid out as
#   asn/                          asn-ipv4.csv, asn-ipv6.csv, ... (the package's files)
#   geo-whois-asn-country/        geo-whois-asn-country-ipv4.csv, ...-ipv6.csv, ...
#   geo-whois-asn-country-mmdb/   geo-whois-asn-country.mmdb, ...
# each with a .version stamp. The directory is printed on the last line of stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=install-ip-data
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

IP_DATA_VERSION="2.3.2026061719"
PACKAGES=(asn geo-whois-asn-country geo-whois-asn-country-mmdb)
DEST="${VANTAGE_IP_DATA:-$HOME/.cache/vantage/ip-data}"

command -v npm >/dev/null 2>&1 || ci_die "npm is needed to fetch @ip-location-db packages"
mkdir -p "$DEST"

fetch() {
    local name="$1" target="$DEST/$1"
    if [[ -f "$target/.version" && "$(cat "$target/.version")" == "$IP_DATA_VERSION" ]]; then
        ci_log "@ip-location-db/$name $IP_DATA_VERSION already in $target"
        return
    fi
    local tmp
    tmp="$(mktemp -d "$DEST/.fetch-$name.XXXXXX")"
    ci_log "npm pack @ip-location-db/$name@$IP_DATA_VERSION"
    (cd "$tmp" && npm pack --silent "@ip-location-db/$name@$IP_DATA_VERSION" >/dev/null)
    local tarball
    tarball="$(find "$tmp" -maxdepth 1 -name '*.tgz' -print -quit)"
    [[ -n "$tarball" ]] || ci_die "npm pack produced no tarball for @ip-location-db/$name"
    tar -xzf "$tarball" -C "$tmp"
    printf '%s\n' "$IP_DATA_VERSION" >"$tmp/package/.version"
    # Swap in whole, so an interrupted run never leaves a half-unpacked directory behind a
    # valid stamp.
    rm -rf "$target"
    mv "$tmp/package" "$target"
    rm -rf "$tmp"
    ci_log "unpacked @ip-location-db/$name into $target"
}

for p in "${PACKAGES[@]}"; do
    fetch "$p"
done
printf '%s\n' "$DEST"
