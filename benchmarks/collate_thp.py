"""Child process of the THP benchmark: times (a) fastcollate vs default_collate, interleaved, prints JSON ratios.

Run with THP_MEM_ALLOC_ENABLE=1 in the environment (torch reads it once, at its first CPU allocation).
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _collate_workloads import assert_equal, collate_fns, samples
from _scale import scaled


def main() -> None:
    result = {}
    for workload, rounds in (("a64", scaled(15, 1)), ("a256", scaled(6, 1))):
        batch = samples(workload)
        baseline, candidate = collate_fns(workload)
        assert_equal(candidate(batch), baseline(batch))
        base, cand = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            baseline(batch)
            base.append(time.perf_counter() - start)
            start = time.perf_counter()
            candidate(batch)
            cand.append(time.perf_counter() - start)
        result[workload] = {
            "baseline_min": min(base),
            "candidate_min": min(cand),
            "ratio_min": min(cand) / min(base),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
