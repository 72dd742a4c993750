# Shared set-up for the bench scripts (sourced): builds the release binary (plus any extra
# cargo targets in BENCH_EXTRA_TARGETS), points TETHER_HOME at a fresh private directory, and on
# exit removes every session, stops the daemon and deletes the directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Extra targets (examples, benches) first: they turn on dev-dependencies, whose features would
# otherwise be unified into the binary (regex's Unicode tables alone add ~7,000 relocations to
# every process start). The binary is built last, alone, as `cargo install` builds it.
# shellcheck disable=SC2086
if [ -n "${BENCH_EXTRA_TARGETS:-}" ]; then cargo build --release --quiet ${BENCH_EXTRA_TARGETS}; fi
cargo build --release --quiet --bin tether
T=${CARGO_TARGET_DIR:-$PWD/target}/release/tether
TETHER_HOME=$(mktemp -d /tmp/tether-bench.XXXXXX)
export TETHER_HOME
trap '"$T" remove --all >/dev/null 2>&1; "$T" daemon stop >/dev/null 2>&1; rm -rf "$TETHER_HOME"' EXIT
