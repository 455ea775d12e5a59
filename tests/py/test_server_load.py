"""Load test of `llama3c serve` (tests/server_load.py): 2,000 requests from 32 concurrent clients,
zero failures, latency percentiles and RSS before/after reported in
build/test-artifacts/server_load.json. It takes minutes, so it runs only with L3C_LOAD_TESTS=1
(`L3C_LOAD_TESTS=1 python -m pytest -q tests/py/test_server_load.py -s`)."""
import json
import os
import sys

import pytest

from server_util import ARTIFACTS, REPO

pytestmark = [pytest.mark.load, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("L3C_LOAD_TESTS") != "1",
                                 reason="load test: set L3C_LOAD_TESTS=1 to run it (takes minutes)")]


def test_load_2000_requests_32_clients(llama3c, smollm2_path):
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import server_load

    out = os.path.join(ARTIFACTS, "server_load.json")
    rc = server_load.main(["--requests", os.environ.get("L3C_LOAD_REQUESTS", "2000"), "--clients", "32",
                           "--model", smollm2_path, "--binary", llama3c, "--json", out])
    with open(out) as f:
        res = json.load(f)
    assert res["failures"] == 0, res["failure_samples"]
    assert res.get("server_exit_code") == 0
    assert rc == 0
    # memory stays bounded: no growth beyond allocator noise after 2,000 requests, besides what
    # the prompt cache holds on purpose (within --cache-ram)
    assert res["prompt_cache_kib"] is not None and res["prompt_cache_kib"] <= 256 * 1024, res
    assert res["rss_kib_after"] < res["rss_kib_before"] + 64 * 1024 + res["prompt_cache_kib"], res
