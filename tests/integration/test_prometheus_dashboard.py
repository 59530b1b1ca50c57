"""Every Grafana panel and every alert rule returns real data from a real Prometheus.

A real Prometheus (Debian's package) scrapes the three services, run as processes
against the real broker, every second and loads deploy/prometheus/alerts.yml. Songs of
both synthetic genres, one corrupt file and one non-msgpack chunk record go through the
pipeline; then every PromQL expression of deploy/grafana/dashboards/*.json and every
alert rule's query (the expression without its threshold) is evaluated through
/api/v1/query and must return at least one sample that is a number. `absent()` rules must
return nothing while every stage is up, and /api/v1/rules must show every rule loaded and
evaluated without error.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest
import yaml

from shared import kafka_io
from tests.fixtures.audio import make_song, write_audio
from tests.fixtures.prometheus import ALERT_RULES, dashboard_queries, grafana_to_promql, has_data

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(\s*bool\b)?")


def split_threshold(expr: str) -> str:
    """The query of `<query> <comparison> <threshold>`: the left side of the first
    comparison outside parentheses, braces, brackets and strings (the whole expression
    when there is none)."""
    depth, quote, i = 0, "", 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0:
            m = _COMPARISON.match(expr, i)
            if m:
                return expr[:i].strip()
        i += 1
    return expr.strip()


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERT_RULES.read_text())
    return [dict(rule, group=g["name"]) for g in doc["groups"] for rule in g["rules"] if "alert" in rule]


def test_split_threshold() -> None:
    assert split_threshold('up{job=~"a|b"} == 0') == 'up{job=~"a|b"}'
    assert split_threshold("sum by (a) (rate(x[5m])) > 0.1") == "sum by (a) (rate(x[5m]))"
    assert split_threshold('sum(x{l!="a>b"}) >= bool 3') == 'sum(x{l!="a>b"})'
    assert split_threshold("absent(up)") == "absent(up)"
    assert grafana_to_promql('rate(x{job=~"$job"}[$__rate_interval])') == 'rate(x{job=~".*"}[1m])'


def corpus(root: Path) -> tuple[list[Path], list[Path]]:
    """Two waves: (one song and one corrupt file), then three songs; both genres in each."""
    def song(genre: str, seconds: float, seed: int) -> Path:
        return write_audio(root / f"{genre} {seed}.flac", make_song(genre, seconds, seed))

    bad = root / "corrupt.mp3"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"\xff\xfb\x90\x64" + random.Random(7).randbytes(30000))
    first = [song("drone", 60, 14), bad]
    second = [song("clicks", 60, 11), song("drone", 45, 12), song("clicks", 35, 13)]
    return first, second


def send_garbage(settings, topic: str) -> None:
    producer = kafka_io.make_producer(settings)
    try:
        producer.send(topic, key=b"not-msgpack", value=b"\xc1 this is not msgpack").get(timeout=30)
    finally:
        producer.close()


def evaluate(prom, queries: list[tuple[str, str]], at: float) -> dict[str, list[dict]]:
    return {where: prom.query(expr, at=at) for where, expr in queries}


def test_every_panel_and_alert_query_returns_data(pipeline, prometheus_server, tmp_path):
    t0 = time.monotonic()
    ports = pipeline.expose_metrics()
    prom = prometheus_server(ports)
    pipeline.start()
    prom.wait_for_targets_up(timeout=90)

    # Two waves: the first creates every labelled series (a series is born at its first
    # value, and rate() over a window that starts at its birth sees no increase); the
    # second moves them all while Prometheus watches, so quantiles and rates are real.
    first, second = corpus(tmp_path / "songs")
    ids = pipeline.produce(*first)
    send_garbage(pipeline.settings, pipeline.settings.topic_chunks)
    pipeline.verdicts(len(first))
    prom.wait_for_scrapes(3)
    ids.update(pipeline.produce(*second))
    send_garbage(pipeline.settings, pipeline.settings.topic_chunks)
    verdicts = {v["song_id"]: v for v in pipeline.verdicts(len(ids))}
    assert set(verdicts) == set(ids.values())
    assert sorted(v["status"] for v in verdicts.values()) == ["error", "ok", "ok", "ok", "ok"]
    assert {v["genre"] for v in verdicts.values() if v["status"] == "ok"} == {"clicks", "drone"}

    panels = dashboard_queries()
    assert panels, "no dashboard queries found"
    rules = alert_rules()
    rule_queries = [(f"alerts.yml: {r['alert']}", split_threshold(r["expr"])) for r in rules
                    if not r["expr"].lstrip().startswith("absent(")]
    absent_rules = [(f"alerts.yml: {r['alert']}", r["expr"]) for r in rules if r["expr"].lstrip().startswith("absent(")]
    queries = panels + rule_queries

    # Let the last increments (dead letter, verdicts, lag back at 0) be scraped, then poll
    # until every query has data (or give up and report which have none).
    prom.wait_for_scrapes(3)
    deadline = time.monotonic() + 60
    while True:
        at = time.time()
        results = evaluate(prom, queries, at)
        missing = [w for w, r in results.items() if not has_data(r)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    exprs = dict(queries)
    assert not missing, "queries without data:\n" + "\n".join(
        f"  {w}: {exprs[w]} -> {results[w]}" for w in missing) + f"\n--- prometheus ---\n{prom.log_tail()}"

    # A few spot checks that the data is the data this run produced.
    up = {s["metric"]["job"]: float(s["value"][1]) for s in prom.query(
        'sum by (job) (up{job=~"chunker|extractor|classifier"})', at=at)}
    assert up == {"chunker": 1.0, "extractor": 1.0, "classifier": 1.0}
    by_genre = {s["metric"]["genre"]: float(s["value"][1]) for s in prom.query(
        'sum by (genre) (increase(genre_verdicts_total{status="ok"}[1h]))', at=at)}
    assert set(by_genre) == {"clicks", "drone"}
    dead = {(s["metric"]["service"], s["metric"]["topic"]) for s in prom.query("genre_deadletter_total", at=at)}
    assert ("extractor", pipeline.settings.topic_chunks) in dead
    kinds = {(s["metric"]["service"], s["metric"]["kind"]) for s in prom.query("genre_errors_total", at=at)}
    assert ("chunker", "decode") in kinds

    # absent() rules are silent while every stage is scraped.
    for where, expr in absent_rules:
        assert prom.query(expr, at=at) == [], f"{where}: {expr} returns data while every stage is up"

    # Every rule is loaded and has been evaluated without error.
    want = {(r["group"], r["alert"]) for r in rules}
    deadline = time.monotonic() + 30
    while True:
        groups = prom.rule_groups()
        loaded = {(g["name"], r["name"]): r for g in groups for r in g["rules"]}
        evaluated = all(loaded.get(k, {}).get("health") == "ok" for k in want)
        if evaluated or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(loaded) >= want, f"rules not loaded: {want - set(loaded)}"
    bad = {k: (loaded[k].get("health"), loaded[k].get("lastError")) for k in want if loaded[k].get("health") != "ok"}
    assert not bad, f"rules not evaluated cleanly: {bad}"
    print(f"\n{len(panels)} dashboard queries, {len(rule_queries)} alert queries with data, "
          f"{len(absent_rules)} absent() rule(s) silent, {len(want)} rules loaded; "
          f"{time.monotonic() - t0:.1f} s")
