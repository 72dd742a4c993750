#!/usr/bin/env bash
# Invoke round trip on an open local session, beside its peers, measured in one run:
#   CLI:     tether invoke -s S true   vs   bash -c true   (hyperfine, whole process)
#   library: Client::run("true")        (examples/quickstart, 500 round trips)
# Usage: bench/invoke.sh [RUNS]   (needs hyperfine: apt-get install hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install hyperfine" >&2; exit 1; }
cargo build --release --quiet --bin tether --example quickstart
T=$PWD/target/release/tether
export TETHER_HOME=$(mktemp -d /tmp/tether-bench.XXXXXX)
trap '"$T" remove --all >/dev/null 2>&1; "$T" daemon stop >/dev/null 2>&1; rm -rf "$TETHER_HOME"' EXIT
"$T" new --name bench >/dev/null
echo "machine: $(nproc) cores, $(uname -srm); bash $(bash --version | head -1 | sed 's/.*version //')"
md=$TETHER_HOME/hyperfine.md
hyperfine -N --warmup 20 --runs "$runs" --export-markdown "$md" \
  "$T invoke -s bench true" "bash -c true" >/dev/null 2>&1
cat "$md"
TETHER_EXE=$T ./target/release/examples/quickstart | grep 'round trip'
