#!/usr/bin/env bash
# Builds a Debian package of tether with dpkg-deb, from this checkout and nothing else (no
# network beyond what `cargo build` needs for crates not yet fetched).
#
#   packaging/deb/build.sh            # builds target/release/tether, then the .deb
#   TETHER_BIN=path packaging/deb/build.sh   # packages an existing binary instead
#
# The last line printed is the path of the .deb (target/deb/tether_VERSION_ARCH.deb).
# Man pages and shell completions come from the binary itself (`tether man --dir`,
# `tether completions SHELL`) when it has those commands, and are skipped with a message when
# it does not.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in dpkg-deb dpkg; do
  command -v "$tool" >/dev/null 2>&1 || { echo "build.sh needs $tool (Debian package dpkg)" >&2; exit 1; }
done

# The version from Cargo.toml: [workspace.package], else [package].
version=$(awk -F'"' '
  /^\[workspace\.package\]/ { s = 1; next }
  /^\[package\]/ { s = 2; next }
  /^\[/ { s = 0 }
  s && /^version *=/ { v[s] = $2 }
  END { print (v[1] != "" ? v[1] : v[2]) }' Cargo.toml)
[ -n "$version" ] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)

if [ -n "${TETHER_BIN:-}" ]; then
  bin=$TETHER_BIN
else
  cargo build --release --locked >&2
  bin=target/release/tether
fi
[ -x "$bin" ] || { echo "build.sh: $bin is not an executable" >&2; exit 1; }
bin=$(realpath "$bin")
built=$("$bin" --version | awk '{ print $2 }')
if [ "$built" != "$version" ]; then
  echo "build.sh: $bin says version $built, Cargo.toml says $version" >&2
  exit 1
fi

out=target/deb
stage=$out/tether_${version}_${arch}
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
install -D -m 0755 "$bin" "$stage/usr/bin/tether"

# Units: the same templates `tether daemon install` writes, pointing at /usr/bin/tether.
for unit in tether.service:user tether-system.service:system; do
  name=${unit%%:*} kind=${unit##*:}
  mkdir -p "$stage/usr/lib/systemd/$kind"
  sed -e 's|@TETHER@|/usr/bin/tether|g' -e '/^@ENVIRONMENT@$/d' \
    "packaging/systemd/$name" >"$stage/usr/lib/systemd/$kind/$name"
  chmod 0644 "$stage/usr/lib/systemd/$kind/$name"
done

if "$bin" man --help >/dev/null 2>&1; then
  mkdir -p "$stage/usr/share/man/man1"
  "$bin" man --dir "$stage/usr/share/man/man1" >&2
  find "$stage/usr/share/man/man1" -type f -name '*.1' -exec gzip -9n {} +
  chmod 0644 "$stage"/usr/share/man/man1/*
else
  echo "build.sh: skipping man pages: this tether has no 'man' command" >&2
fi

if "$bin" completions --help >/dev/null 2>&1; then
  # The scripts name the program they call back as it was called: call it `tether` from PATH
  # so they run /usr/bin/tether once installed, not this build's path.
  shim=$(mktemp -d)
  trap 'rm -rf "$shim"' EXIT
  ln -s "$bin" "$shim/tether"
  comp() { # SHELL DEST
    mkdir -p "$(dirname "$2")"
    env -u TETHER_COMPLETE PATH="$shim:$PATH" tether completions "$1" >"$2"
    chmod 0644 "$2"
  }
  comp bash "$stage/usr/share/bash-completion/completions/tether"
  comp zsh "$stage/usr/share/zsh/vendor-completions/_tether"
  comp fish "$stage/usr/share/fish/vendor_completions.d/tether.fish"
else
  echo "build.sh: skipping shell completions: this tether has no 'completions' command" >&2
fi

mkdir -p "$stage/usr/share/doc/tether"
cat >"$stage/usr/share/doc/tether/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tether
License: MIT OR Apache-2.0
EOF
chmod 0644 "$stage/usr/share/doc/tether/copyright"

installed_size=$(du -sk --exclude=DEBIAN "$stage" | awk '{ print $1 }')
cat >"$stage/DEBIAN/control" <<EOF
Package: tether
Version: $version
Section: admin
Priority: optional
Architecture: $arch
Maintainer: tether <tether@localhost>
Depends: openssh-client
Installed-Size: $installed_size
Description: PowerShell-style persistent remote sessions for Unix
 tether keeps named shell sessions on local and remote computers (over ssh):
 their variables, functions, working directory and environment persist between
 commands, they can be disconnected and reconnected from another computer, and
 one-off commands fan out to many computers at once.
 .
 Units for the per-user daemon (systemctl --user enable --now tether) and the
 system daemon (tether-system) are included but not enabled.
EOF

find "$stage" -type d -exec chmod 0755 {} +
deb=$out/tether_${version}_${arch}.deb
dpkg-deb --build --root-owner-group "$stage" "$deb" >&2
echo "$deb"
