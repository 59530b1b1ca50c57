"""Would the tagger's own genre tags guard render-only genres on real recordings? A measurement.

    python tools/tag_prior_probe.py MODEL NAME=DIR [NAME=DIR ...]

for example `python tools/tag_prior_probe.py models/default real=$CACHE/datasets/emotify/test
midi=$CACHE/render/r90/test gtzan=$CACHE/extra_short` (each DIR holds <genre>/ folders of
audio, as for `genre evaluate`).

For a model with the pre-trained branch, each chunk's probabilities are multiplied by the
musicnn MSD tagger's own genre tags raised to a power w (log p + w log s_genre; s_genre
the largest of the genre's tag probabilities, mean over the chunk's patches), for several
w, and song accuracy (first 3 chunks, mode vote) is printed per folder and genre.
Embeddings come from the cache that training filled.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
LABELS = ['rock','pop','alternative','indie','electronic','female vocalists','dance','00s','alternative rock','jazz','beautiful','metal','chillout','male vocalists','classic rock','soul','indie rock','Mellow','electronica','80s','folk','90s','chill','instrumental','punk','oldies','blues','hard rock','ambient','acoustic','experimental','female vocalist','guitar','Hip-Hop','70s','party','country','easy listening','sexy','catchy','funk','electro','heavy metal','Progressive rock','60s','rnb','indie pop','sad','House','happy']
MAP = {"blues": ["blues"], "country": ["country"], "electronic": ["electronic", "electronica", "electro", "dance", "House"],
       "folk": ["folk", "acoustic"], "hiphop": ["Hip-Hop", "rnb"], "jazz": ["jazz"], "pop": ["pop", "indie pop", "catchy"],
       "rock": ["rock", "classic rock", "hard rock", "alternative rock", "indie rock", "punk", "metal", "heavy metal", "Progressive rock"],
       "classical": ["instrumental", "beautiful", "ambient"]}
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="model artifact folder with the pre-trained branch (e.g. models/default)")
    ap.add_argument("datasets", nargs="+", metavar="NAME=DIR", help="labelled <genre>/ folders of audio, one per source")
    cli = ap.parse_args()
    from shared.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    from shared.cli.train import dataset_sources, load_sources
    from shared.featurespec import MEL_SPEC
    from shared.model import ModelArtifact
    from shared.training import predict_chunks, pretrained_embeddings
    from shared.evaluation import song_predictions
    from shared.crossval import chunk_positions
    art = ModelArtifact.load(cli.model)
    args = argparse.Namespace(jobs=2, backend="builtin", no_cache=False)
    sets = {n: load_sources(args, [(n, f, m)], spec=MEL_SPEC)[0] for n, f, m in dataset_sources(cli.datasets, None)}
    emb = None
    for name, ch in sets.items():
        p = predict_chunks(art, ch.features)
        emb, e = pretrained_embeddings(ch.features, embedder=emb)
        tags = e[:, :, 200:250].mean(1)
        s = np.stack([tags[:, [LABELS.index(t) for t in MAP[g]]].max(1) for g in art.genres], 1)
        keep = chunk_positions(ch.songs) < 3
        songs = [x for x, k in zip(ch.songs, keep) if k]; truth = {x: y for x, y in zip(ch.songs, ch.labels)}
        out = []
        for w in (0, 0.5, 1, 2, 4):
            lp = np.log(p + 1e-9) + w * np.log(s + 1e-3)
            q = np.exp(lp - lp.max(1, keepdims=True)); q /= q.sum(1, keepdims=True)
            v = song_predictions(q[keep], songs, art.genres)
            acc = np.mean([v[x] == truth[x] for x in v])
            per = {}
            for x in v: per.setdefault(truth[x], []).append(v[x] == truth[x])
            out.append(f"w={w}: {acc:.3f} " + " ".join(f"{g[:4]}{np.mean(per[g]):.1f}" for g in sorted(per)))
        print(name, " | ".join(out), flush=True)
if __name__ == "__main__":
    main()
