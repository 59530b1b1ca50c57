"""How far can any model go on the Emotify clips with frozen pre-trained embeddings? A ceiling.

    python tools/real_ceiling.py $CACHE/datasets/emotify [--networks MSD_musicnn MTT_musicnn]

The goal "Emotify test >= 0.90, pop and rock recall >= 0.80" asks whether pop and rock are
separable across artists. This prints, for the 4-genre Emotify task alone (no MIDI data, so
nothing else competes for the head):

1. the test split (275 train clips, 125 test, artists disjoint): several well-tuned classical
   classifiers on each clip's embedding statistics, per network and both networks together;
2. pop vs rock alone (the pair that fails), 5-fold cross-validation over all 200 pop and
   rock clips with folds by artist, against the same folds drawn ignoring the artist
   (clips of one artist on both sides): the gap is how much of "pop or rock" is the artist's
   identity rather than anything a genre model can learn;
3. per pop artist of the test split, how many of its clips the best classifier names pop:
   recall moves in steps of whole artists.

Clip features: the chunks' patch embeddings (penultimate + tags of each network), mean and
std over patches, averaged over the clip's chunks. Embeddings come from the cache that
`genre train` fills (computed here when missing: about 0.4 s per chunk and network).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def clip_features(folder: Path, networks: list[str]):
    """(X per network, labels, clip ids, artist per clip) of folder/<genre>/ with its manifest."""
    from shared.cli.train import dataset_sources, load_sources
    from shared.featurespec import MEL_SPEC
    from shared.training import pretrained_embeddings

    args = argparse.Namespace(jobs=2, backend="builtin", no_cache=False)
    chunks, groups, _, _ = load_sources(args, dataset_sources([f"real={folder}"], None), spec=MEL_SPEC)
    per_net = {}
    for net in networks:
        _, emb = pretrained_embeddings(chunks.features, networks=[net], progress=sys.stderr.isatty())
        stats = np.concatenate([emb.mean(1), emb.std(1)], axis=1)
        per_net[net] = stats
    clips = list(dict.fromkeys(chunks.songs))
    index = {c: i for i, c in enumerate(clips)}
    rows = np.array([index[s] for s in chunks.songs])
    X = {}
    for net, stats in per_net.items():
        sums = np.zeros((len(clips), stats.shape[1]))
        np.add.at(sums, rows, stats)
        X[net] = sums / np.bincount(rows, minlength=len(clips))[:, None]
    labels = np.array([str(dict(zip(chunks.songs, chunks.labels))[c]) for c in clips])
    artists = np.array([str(dict(zip(chunks.songs, groups))[c]) for c in clips])
    return X, labels, np.array(clips), artists


def classifiers() -> dict:
    """tools/pretrained_probe.py's classifiers (the probe's 0.80-0.82), plus a wider search."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from tools.pretrained_probe import classifiers as probe_classifiers

    out = {name: make(0) for name, make in probe_classifiers().items()}
    out.update({f"logistic C={c}": make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
                for c in (0.01, 1.0)})
    out["SVM (RBF) C=10"] = make_pipeline(StandardScaler(), SVC(C=10.0))
    out["5-nn"] = make_pipeline(StandardScaler(), KNeighborsClassifier(5))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("emotify", type=Path, help="split dataset folder with train/ and test/ (genre dataset split)")
    ap.add_argument("--networks", nargs="+", default=["MSD_musicnn"],
                    help="musicnn networks (MTT_musicnn too: about 0.4 s more per chunk when not cached)")
    args = ap.parse_args()
    from shared.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    from sklearn.base import clone
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    Xtr, ytr, _, artists_tr = clip_features(args.emotify / "train", args.networks)
    Xte, yte, clips_te, artists_te = clip_features(args.emotify / "test", args.networks)
    if len(args.networks) > 1:
        Xtr["+".join(args.networks)] = np.concatenate([Xtr[n] for n in args.networks], axis=1)
        Xte["+".join(args.networks)] = np.concatenate([Xte[n] for n in args.networks], axis=1)
    print(f"1. test split: {len(ytr)} train clips, {len(yte)} test clips, artists disjoint")
    best = (0.0, "", "")
    for net in Xtr:
        for name, clf in classifiers().items():
            pred = clone(clf).fit(Xtr[net], ytr).predict(Xte[net])
            acc = float(np.mean(pred == yte))
            rec = {g: float(np.mean(pred[yte == g] == g)) for g in ("pop", "rock")}
            print(f"   {net:<24} {name:<16} accuracy {acc:.3f}  pop recall {rec['pop']:.2f}  rock recall {rec['rock']:.2f}")
            if acc > best[0]:
                best = (acc, net, name)
    print(f"   best: {best[0]:.3f} ({best[2]} on {best[1]})")

    net, name = best[1], best[2]
    X = np.concatenate([Xtr[net], Xte[net]])
    y = np.concatenate([ytr, yte])
    artists = np.concatenate([artists_tr, artists_te])
    pair = np.isin(y, ["pop", "rock"])
    Xp, yp, ap_ = X[pair], y[pair], artists[pair]
    print(f"2. pop vs rock, {int(pair.sum())} clips of {len(set(ap_))} artists, 5 folds, {name} on {net}:")
    for label, splitter, groups in (("folds by artist", GroupKFold(5), ap_),
                                    ("folds ignoring the artist", StratifiedKFold(5, shuffle=True, random_state=0), None)):
        accs = []
        for tr, te in splitter.split(Xp, yp, groups):
            accs.append(np.mean(clone(classifiers()[name]).fit(Xp[tr], yp[tr]).predict(Xp[te]) == yp[te]))
        print(f"   {label:<26} accuracy {np.mean(accs):.3f} (folds {', '.join(f'{a:.2f}' for a in accs)})")

    pred = clone(classifiers()[name]).fit(Xtr[net], ytr).predict(Xte[net])
    per_artist: dict[str, list[str]] = defaultdict(list)
    for p, g, a in zip(pred, yte, artists_te):
        if g == "pop":
            per_artist[a].append(p)
    print(f"3. pop clips of the test split by artist ({name} on {net}): named pop / clips, and what else")
    for a, ps in sorted(per_artist.items(), key=lambda kv: -len(kv[1])):
        other = {str(p): ps.count(p) for p in sorted(set(ps)) if p != "pop"}
        print(f"   {a:<40} {ps.count('pop')}/{len(ps)}  {other or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
