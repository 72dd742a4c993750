#!/usr/bin/env bash
# Invoke round trip on an open local session, beside its peers, measured in one run:
#   CLI:     tether invoke -s S true   vs   bash -c true   (hyperfine, whole process)
#   library: Client::run("true")        (examples/quickstart, 500 round trips)
# Usage: bench/invoke.sh [RUNS]   (needs hyperfine: apt-get install hyperfine)
set -euo pipefail
runs=${1:-300}
command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install hyperfine" >&2; exit 1; }
BENCH_EXTRA_TARGETS="--example quickstart"
source "$(dirname "$0")/common.sh"
"$T" new --name bench >/dev/null
echo "machine: $(nproc) cores, $(uname -srm); bash $(bash --version | head -1 | sed 's/.*version //')"
md=$TETHER_HOME/hyperfine.md
hyperfine -N --warmup 20 --runs "$runs" --export-markdown "$md" \
  "$T invoke -s bench true" "bash -c true" >/dev/null 2>&1
cat "$md"
TETHER_EXE=$T ./target/release/examples/quickstart | grep 'round trip'
