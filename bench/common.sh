# Shared set-up for the bench scripts (sourced): builds the release binary (plus any extra
# cargo targets in BENCH_EXTRA_TARGETS), points TETHER_HOME at a fresh private directory, and on
# exit removes every session, stops the daemon and deletes the directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC2086
cargo build --release --quiet --bin tether ${BENCH_EXTRA_TARGETS:-}
T=$PWD/target/release/tether
TETHER_HOME=$(mktemp -d /tmp/tether-bench.XXXXXX)
export TETHER_HOME
trap '"$T" remove --all >/dev/null 2>&1; "$T" daemon stop >/dev/null 2>&1; rm -rf "$TETHER_HOME"' EXIT
