"""How verdicts are printed: one human line block, or one JSON object per line."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from shared.schemas import Verdict


def verdict_json(v: Verdict) -> str:
    d: dict[str, Any] = v.to_dict()
    return json.dumps(d, ensure_ascii=False, sort_keys=True)


def print_verdict(v: Verdict, as_json: bool, out: TextIO = sys.stdout) -> None:
    if as_json:
        print(verdict_json(v), file=out, flush=True)
        return
    name = v.filename.replace("\n", "\\n")
    if v.status != "ok":
        print(f"{name}  [{v.song_id}]  ERROR: {v.error}", file=out, flush=True)
        return
    print(
        f"{name}  [{v.song_id}]  {v.genre}  (confidence {v.confidence:.2f}, {v.chunk_count} chunk"
        f"{'s' if v.chunk_count != 1 else ''}, model {v.model_version})",
        file=out,
    )
    print("  votes: " + " ".join(f"{i}:{g}" for i, g in enumerate(v.votes)), file=out)
    top = sorted(v.probabilities.items(), key=lambda kv: -kv[1])[:3]
    print("  mean probabilities: " + ", ".join(f"{g} {p:.2f}" for g, p in top), file=out, flush=True)
