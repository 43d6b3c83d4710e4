#!/usr/bin/env bash
# Fetches the next Debian release's libmongocrypt binary packages (libmongocrypt0 and
# libmongocrypt-dev) and unpacks them into a private prefix, without installing anything:
#   scripts/fetch-next-libmongocrypt.sh <dir>   ->  <dir>/prefix/usr/{include,lib/...}
# The apt state (sources, package lists, cache) lives under <dir>/apt, so the machine's own
# sources and package lists are untouched. Prints the unpacked version on the last line.
# Set AZKMS_NEXT_DEBIAN to choose the release (default: trixie).
set -euo pipefail
dir="${1:?usage: $0 <dir>}"
release="${AZKMS_NEXT_DEBIAN:-trixie}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
apt_dir="$dir/apt"
prefix="$dir/prefix"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

fail() {
  echo "fetch-next-libmongocrypt: $*" >&2
  exit 1
}

[[ -r "$keyring" ]] || fail "$keyring is missing (apt-get install debian-archive-keyring)"
rm -rf "$apt_dir" "$prefix"
mkdir -p "$apt_dir/etc/none" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" \
  "$apt_dir/debs" "$prefix"
echo "deb [signed-by=$keyring] http://deb.debian.org/debian $release main" \
  >"$apt_dir/etc/sources.list"
apt_options=(
  -o "Dir::Etc::sourcelist=$apt_dir/etc/sources.list"
  -o "Dir::Etc::sourceparts=$apt_dir/etc/none"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o "APT::Sandbox::User=root"
)

echo "== fetching Debian $release's package list (private apt state in $apt_dir)"
apt-get "${apt_options[@]}" -q update >"$apt_dir/update.log" 2>&1 ||
  fail "could not read Debian $release's package list from deb.debian.org; see $apt_dir/update.log: $(tail -3 "$apt_dir/update.log" | tr '\n' ' ')"
echo "== downloading libmongocrypt0 and libmongocrypt-dev"
(cd "$apt_dir/debs" && apt-get "${apt_options[@]}" -q download libmongocrypt0 libmongocrypt-dev) \
  >"$apt_dir/download.log" 2>&1 ||
  fail "could not download Debian $release's libmongocrypt packages; see $apt_dir/download.log: $(tail -3 "$apt_dir/download.log" | tr '\n' ' ')"
for deb in "$apt_dir"/debs/*.deb; do
  dpkg -x "$deb" "$prefix"
done
config="$prefix/usr/include/mongocrypt/mongocrypt-config.h"
[[ -r "$config" ]] || fail "the packages held no $config"
version=$(sed -n 's/^#define MONGOCRYPT_VERSION "\(.*\)"$/\1/p' "$config")
[[ -n "$version" ]] || fail "no MONGOCRYPT_VERSION in $config"
echo "libmongocrypt $version unpacked into $prefix"
