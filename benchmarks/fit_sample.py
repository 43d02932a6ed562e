"""Held-out quality of the scoring model fit on a user sample (factors folded in) vs on everyone.

``scoring_run.fit_scoring_model`` fits the product model on a hash sample of
``NOTIFY_SCORING_FIT_USERS`` users when the population is larger, and folds every user's
collaborative factors in against the fitted item factors (``scoring_run.fold_in``). This script
measures what that costs in recommendation quality on generated data, with the split and metrics
of ``benchmarks/recs_quality.py`` (every purchase of each user's last purchase day held out,
recommendations as of the first held-out purchase, recall@10 / hit@10 / NDCG@10 over ALL
held-out users, sampled or not):

- full: ``products_fit.fit_products_model`` on every user's training history (the nightly fit);
- 1/k: the same fit on the users with ``io.shards.shard_of(user, k) == 0`` only, then every
  user's factors folded in from their own training history.

Product text vectors are seeded random unit vectors (encoding the 39,596-product catalog with
the real model takes minutes; the sample changes the collaborative, popularity, co-purchase and
repurchase parts, which the text vectors do not enter), so the content part carries no signal
here, for both fits alike.

    .venv/bin/python benchmarks/fit_sample.py --users 10000 --samples 2 4 8
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RUN_DATE = date(2026, 11, 24)


def main(argv: list[str] | None = None) -> int:
    import recs_quality as rq

    from include.notify.io.shards import shard_of
    from include.notify.stages import embeddings, products_fit
    from include.notify.stages import products as products_mod
    from include.notify.stages.scoring_run import fold_in
    from notify_tools.datagen import build_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--samples", type=int, nargs="*", default=[2, 4, 8], help="k: fit on 1/k of the users")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fit_sample.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/fit_sample.py " + " ".join(argv if argv is not None else sys.argv[1:])

    data = build_dataset(args.users, RUN_DATE, seed=args.seed)
    catalog = data.products.reset_index(drop=True)
    vectors = embeddings.normalize_rows(np.random.default_rng(11).normal(size=(len(catalog), 384)).astype(np.float32))
    product_ids = catalog["product_id"].astype(str).to_numpy(object)
    types = catalog["articleType"].astype(str).to_numpy()
    items = catalog.assign(article_type=catalog["articleType"])
    test = rq.make_split(data, data.purchases.copy(), data.clickstream, product_ids, RUN_DATE)
    build_vectors = rq.content_user_vectors(data, product_ids, vectors, RUN_DATE)
    test_content = build_vectors(test.train, test.clicks, RUN_DATE)
    groups = products_mod.item_groups(items)
    all_ids = data.users["user_id"].astype(str).to_numpy(object)

    def evaluate(model: Any) -> dict[str, float]:
        terms = products_mod.repurchase_terms(model.repurchase, test.history, types, test.as_of)
        scored = products_mod.score_products(test_content[test.users], vectors, model, terms, groups,
                                             user_rows=test.users)  # fmt: skip
        return rq.metrics(scored.indices, test.targets, vectors)

    rows = []
    for k in [1, *args.samples]:
        keep = shard_of(all_ids, k) == 0
        ids = all_ids[keep]
        sample = SimpleNamespace(users=data.users[keep].reset_index(drop=True))
        train = test.train[test.train["user_id"].astype(str).isin(set(ids))]
        clicks = test.clicks[test.clicks["user_id"].astype(str).isin(set(ids))]
        started = time.monotonic()
        model = products_fit.fit_products_model(
            products_fit.TrainingData(items, vectors, ids, train, clicks,
                                      rq.content_user_vectors(sample, product_ids, vectors, RUN_DATE)),
            RUN_DATE, seed=args.seed,
        )  # fmt: skip
        fit_s = time.monotonic() - started
        if k > 1:  # every user's factors from their own training history, as fit_scoring_model does
            matrix = products_mod.interaction_matrix(test.history)
            model = replace(model, collaborative=replace(model.collaborative, user_factors=fold_in(model.collaborative, matrix)))  # fmt: skip
        result = evaluate(model)
        rows.append({"fit": "full" if k == 1 else f"1/{k}", "fit_users": int(keep.sum()), "fit_purchases": len(train),
                     "fit_s": fit_s, **result, "weights": model.weights, "als": model.validation})  # fmt: skip
        print(rows[-1], flush=True)

    base = rows[0]
    lines = [
        "# Scoring fit on a user sample vs on everyone (held-out quality)",
        "",
        f"Command: `{command}` (generated data, {args.users:,} users, seed {args.seed}; this machine: 2 cores "
        "shared with other sessions). Test: every purchase on each user's last purchase day "
        f"({len(test.users):,} users with purchases on >= 2 days), all of them scored, sampled or not; "
        "product text vectors seeded random (see the script's docstring).",
        "",
        "| fit on | users in the fit | their training purchases | fit time | recall@10 | hit@10 | ndcg@10 | "
        "recall@10 vs full |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['fit']} | {r['fit_users']:,} | {r['fit_purchases']:,} | {r['fit_s']:.1f} s | "
                     f"{r['recall@10']:.4f} | {r['hit@10']:.4f} | {r['ndcg@10']:.4f} | "
                     f"{r['recall@10'] / base['recall@10']:.3f} |")  # fmt: skip
    lines += ["", "Fitted settings: " + "; ".join(
        f"{r['fit']}: weights " + ", ".join(f"{n} {v:.3g}" for n, v in r["weights"].items())
        + f", ALS {r['als'].get('factors', 0):g} factors, alpha {r['als'].get('alpha', 0):g}" for r in rows)]  # fmt: skip
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
