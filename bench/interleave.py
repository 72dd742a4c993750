#!/usr/bin/env python3
"""Times short commands interleaved: round after round, each command once per round, so that
every command sees the same machine (on a shared VM, runs of one command after another drift
by more than the differences being measured). Prints each command's median wall time, its
first quartile, and the ratio of its median to the first command's.

Usage: bench/interleave.py ROUNDS 'CMD ARGS…' 'CMD ARGS…' …   (a command is split on spaces;
       its stdout goes to /dev/null)
Example: bench/interleave.py 1500 'bash -c true' 'target/release/tether invoke -s q true'
"""
import os
import shutil
import statistics
import sys
import time


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    cmds = [c.split() for c in sys.argv[2:]]
    for c in cmds:
        c[0] = shutil.which(c[0]) or c[0]
    times: list[list[int]] = [[] for _ in cmds]
    devnull = os.open(os.devnull, os.O_WRONLY)
    out = [(os.POSIX_SPAWN_DUP2, devnull, 1)]
    for _ in range(rounds):
        for k, c in enumerate(cmds):
            t = time.perf_counter_ns()
            pid = os.posix_spawn(c[0], c, os.environ, file_actions=out)
            os.waitpid(pid, 0)
            times[k].append(time.perf_counter_ns() - t)
    base = statistics.median(times[0])
    for c, t in zip(cmds, times):
        m = statistics.median(t)
        q1 = statistics.quantiles(t, n=4)[0]
        print(f"{' '.join(c)}: median {m / 1e6:.3f} ms, first quartile {q1 / 1e6:.3f} ms, "
              f"{m / base:.2f}x the first")


if __name__ == "__main__":
    main()
