"""Reading the router's per-version metrics back from Prometheus text (no Ray)."""

from __future__ import annotations

import math

from mlplatform.serve.metrics import VersionStats, parse_prometheus, version_stats

TEXT = """
# HELP ray_mlplatform_requests_total Requests answered by a model version, by HTTP status.
# TYPE ray_mlplatform_requests_total counter
ray_mlplatform_requests_total{application="churn",code="200",model="churn",replica="a",version="1"} 90.0
ray_mlplatform_requests_total{application="churn",code="200",model="churn",replica="b",version="1"} 10.0
ray_mlplatform_requests_total{application="churn",code="503",model="churn",replica="a",version="2"} 5.0
ray_mlplatform_requests_total{application="churn",code="200",model="churn",replica="a",version="2"} 15.0
ray_mlplatform_requests_total{application="x",code="200",model="other",replica="a",version="1"} 7.0
ray_mlplatform_request_latency_ms_bucket{model="churn",version="1",le="5.0"} 50.0
ray_mlplatform_request_latency_ms_bucket{model="churn",version="1",le="10.0"} 99.0
ray_mlplatform_request_latency_ms_bucket{model="churn",version="1",le="+Inf"} 100.0
ray_other_metric 3
garbage line
"""


def test_parse_prometheus_reads_labels_and_values():
    samples = parse_prometheus('m{a="x\\"y",b="2"} 1.5\n# c\nn 2\n')
    assert samples == [("m", {"a": 'x\\"y', "b": "2"}, 1.5), ("n", {}, 2.0)]


def test_version_stats_sum_replicas_and_split_errors():
    stats = version_stats(parse_prometheus(TEXT), "churn")
    assert set(stats) == {"1", "2"}
    assert (stats["1"].requests, stats["1"].errors) == (100.0, 0.0)
    assert (stats["2"].requests, stats["2"].errors, stats["2"].error_rate) == (20.0, 5.0, 0.25)


def test_latency_quantiles_interpolate_in_buckets():
    s = version_stats(parse_prometheus(TEXT), "churn")["1"]
    assert s.latency_quantile(0.5) == 5.0
    assert math.isclose(s.latency_quantile(0.99), 10.0)  # rank 99 is the top of the 5..10 bucket
    assert math.isclose(s.latency_quantile(0.745), 7.5)
    assert s.latency_quantile(0.999) == 10.0  # in +Inf: the last finite bound
    assert math.isnan(VersionStats().latency_quantile(0.99))


def test_window_is_a_difference_of_snapshots():
    before = VersionStats(requests=100, errors=1, latency_buckets={5.0: 50, math.inf: 100})
    after = VersionStats(requests=150, errors=11, latency_buckets={5.0: 60, math.inf: 150})
    window = after.minus(before)
    assert (window.requests, window.errors, window.error_rate) == (50, 10, 0.2)
    assert window.latency_buckets == {5.0: 10, math.inf: 50}


def test_grafana_dashboard_uses_the_metrics_the_router_records():
    import json
    import re

    from mlplatform.serve import metrics

    from tests.conftest import ROOT

    text = json.dumps(json.loads((ROOT / "dashboards" / "grafana.json").read_text()))
    used = set(re.findall(r"ray_(mlplatform_[a-z_]+?)(?:_total|_bucket)?\b", text))
    recorded = {metrics.REQUESTS, metrics.LATENCY, metrics.SCORE, metrics.SHADOW, metrics.SHADOW_DIFF}
    assert used and used <= recorded, used - recorded
