"""The router's own cost per request, in-process: its ASGI app called directly (no HTTP, no Serve), with
versions colocated as in `make demo`, against XGBoost's `inplace_predict` of one row alone.

    python benchmarks/router_inprocess.py [--features 17] [--requests 4000] [--profile]

Prints µs per request for 1, 8 and 16 concurrent requests (colocated versions batch the requests that reach
them in one turn of the event loop) and, with --profile, the functions that take the most time at 8
concurrent (cProfile). Results in benchmarks/results/router_inprocess-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import time

import numpy as np
import xgboost as xgb
from _record import save
from mlplatform.serve.config import AppArgs
from mlplatform.serve.endpoint import create_app
from mlplatform.serve.model import LocalVersion
from mlplatform.serve.router import RouterCore


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", type=int, default=17)
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    features = [f"f{i}" for i in range(args.features)]
    x = np.random.default_rng(0).normal(size=(2000, len(features))).astype(np.float32)
    booster = xgb.train({"max_depth": 6, "nthread": 1}, xgb.DMatrix(x, label=(x[:, 0] > 0)), 100)
    app_args = AppArgs.model_validate(
        {
            "model_name": "m",
            "auth": "none",
            "features": features,
            "versions": [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}],
        }
    )
    handles = {v: LocalVersion("m", v, None, lambda *_: booster, features) for v in ("1", "2")}
    app = create_app(RouterCore(app_args, features, handles))
    body = json.dumps({"instances": [{f: 1.5 for f in features}]}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/models/m:predict",
        "raw_path": b"/v1/models/m:predict",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def one() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(_: dict) -> None:
            pass

        await app(dict(scope), receive, send)

    async def run(n: int, c: int) -> float:
        for _ in range(50):
            await asyncio.gather(*(one() for _ in range(c)))
        started = time.perf_counter()
        for _ in range(n // c):
            await asyncio.gather(*(one() for _ in range(c)))
        return (time.perf_counter() - started) / n * 1e6

    results = {}
    row = x[:1]
    started = time.perf_counter()
    for _ in range(args.requests):
        booster.inplace_predict(row)
    results["inplace_predict_one_row_us"] = (time.perf_counter() - started) / args.requests * 1e6
    print(f"inplace_predict of one row alone: {results['inplace_predict_one_row_us']:.0f} us")
    for c in (1, 8, 16):
        results[f"router_us_per_request_c{c}"] = asyncio.run(run(args.requests, c))
        print(f"router, {c:>2} concurrent: {results[f'router_us_per_request_c{c}']:.0f} us per request")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, run(args.requests, 8))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    print(f"written to {save('router_inprocess', {'args': vars(args), 'results': results})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
