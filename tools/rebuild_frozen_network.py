"""Give a model artifact the frozen network of today's `shared/musicnn.py`, keeping its head.

    python tools/rebuild_frozen_network.py MODEL [--out DIR] [--chunks 8] [--audio FILE ...]

A model with the pre-trained branch carries the musicnn tagger as Keras layers, built when
it was trained. When `shared/musicnn.py` computes the same numbers more cheaply (the front
end's max over frequency before its ReLU and batch norm), an artifact trained before keeps
the older, slower layers. This rebuilds the frozen network from the `musicnn` wheel's
weights, puts the artifact's trained head after it, and checks on generated 30-s chunks
and the first chunk of each --audio file (through the real extractor and the artifact's
preprocessing) that both networks give **the same probabilities bit for bit**; only then
is it saved (in place unless --out). The metadata, its version included, stay as they
were: the verdicts are the same. Exit status 0 saved, 1 not the same, 2 nothing to rebuild.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="model artifact folder with the pre-trained branch (e.g. models/default)")
    ap.add_argument("--out", help="write the rebuilt artifact here (default: in place)")
    ap.add_argument("--chunks", type=int, default=8, help="generated chunks to compare on (default 8)")
    ap.add_argument("--audio", nargs="*", default=[], help="audio files whose first chunk is compared too")
    cli = ap.parse_args()
    from shared.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    from shared.audio import decode_file
    from shared.features import extract_chunk, get_extractor
    from shared.model import EMBEDDING_INPUT, PRETRAINED_NETWORKS, ModelArtifact, assemble_pretrained, input_names
    from shared.musicnn import build_chunk_embedder
    from tests.fixtures.audio import SYNTH_GENRES, make_song

    old = ModelArtifact.load(cli.model)
    if "musicnn" not in [layer.name for layer in old.model.layers]:
        print(f"{cli.model}: no frozen musicnn network in it; nothing to rebuild", file=sys.stderr)
        return 2
    networks = tuple(old.metadata.get("pretrained", {}).get("networks", PRETRAINED_NETWORKS))
    head = old.model.get_layer("head")
    if EMBEDDING_INPUT not in input_names(head):
        print(f"{cli.model}: its head does not read {EMBEDDING_INPUT!r}", file=sys.stderr)
        return 2
    new = ModelArtifact(assemble_pretrained(head, build_chunk_embedder(networks)), old.metadata)

    extract = get_extractor("builtin")
    n = old.spec.chunk_samples
    genres = sorted(SYNTH_GENRES)
    batch = [extract_chunk(make_song(genres[i % len(genres)], old.spec.chunk_seconds, seed=100 + i)[:n], old.spec, extract)
             for i in range(cli.chunks)]
    for path in cli.audio:
        pcm = decode_file(path, old.spec.sample_rate)[0][:n]
        batch.append(extract_chunk(np.pad(pcm, (0, n - len(pcm))), old.spec, extract))
    arrays = old.input_arrays(batch)
    timings = {}
    probs = {}
    for name, art in (("before", old), ("after", new)):
        art.predict_arrays(arrays)  # trace
        t0 = time.process_time()
        probs[name] = art.predict_arrays(arrays)
        timings[name] = (time.process_time() - t0) / len(batch) * 1000
    diff = float(np.max(np.abs(probs["before"] - probs["after"])))
    print(f"{len(batch)} chunks: largest probability difference {diff:.3g}; CPU per chunk "
          f"{timings['before']:.0f} -> {timings['after']:.0f} ms")
    if not np.array_equal(probs["before"], probs["after"]):
        print("the rebuilt network does not give the same probabilities; not saved", file=sys.stderr)
        return 1
    out = new.save(cli.out or cli.model)
    print(f"saved {out} (version {new.version}, unchanged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
