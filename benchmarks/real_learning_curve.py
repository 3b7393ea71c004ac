"""Learning curve of the self-blended (SBI) network over the number of real identities.

What stops `make real`'s SBI network on this CPU: data (too few people), or training time and
capacity? This trains the network of ``dflab.workflows.real`` (same settings, same epochs) with 0, 750,
3,000 and all 7,249 face photos beside the FF++ train clips' real frames, and prints, per
count, the training's seconds, the AUC on the pseudo-fakes of the validation reals after each epoch,
and, for the epoch kept (best pseudo-fake val AUC, as `make real` keeps), the video AUC on
the 12 real validation videos (FF++ val pairs; SBI protocol) with its
95% interval. Only the validation split is scored: nothing here looks at the test videos.

    python benchmarks/real_learning_curve.py --shared ../shared/data --data-root /tmp/curve \
        [--counts 0 750 3000 -1] [--epochs 4]        # -1: all photos

Reuses ``<data-root>/processed/real_clips`` and photo folders of an earlier ``dflab demo
--real --set env.data_root=<data-root>`` (or makes them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dflab import Lab
from dflab.workflows.real import photo_subset, real_clips, train_once


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--counts", nargs="+", type=int, default=[0, 750, 3000, -1],
                    help="numbers of face photos; -1: all")
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()

    shared = Path(a.shared)
    base, _, clips = real_clips(Lab(None, data_root=a.data_root), shared)
    photo_lab = base.derive({"preprocess.save_frames": False})
    every = photo_lab.list_videos("photos", shared / "faces")
    rows = []
    for count in a.counts:
        records = photo_subset(every, count) if count else []
        extra = []
        if records:
            faces = photo_lab.preprocess("photos", shared / "faces", records=records,
                                         out=base.paths["processed"] / f"real_photos_{len(records)}")
            extra = [str(faces.out)]
        lab = base.derive({"train.pseudo_fakes": "sbi", "train.epochs": a.epochs,
                           "train.extra_reals": extra})
        name = f"curve-{len(records)}-e{a.epochs}"
        run = train_once(lab, clips.out, name)
        history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        video = lab.evaluate(run, clips.out, "val")["visual"]["video"]  # best.pt, as make real
        rows.append({"photos": len(records), "people": len({r.source_id for r in records}),
                     "seconds": json.loads((run / "train_summary.json").read_text())["seconds"],
                     "pseudo_fake_val_auc": [round(h["val_auc"], 3) for h in history],
                     "real_val_video_auc": round(video["auc"], 3),
                     "ci": [round(x, 3) for x in video["auc_ci"]], "n": video.get("n")})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'photos':>7} {'people':>7} {'seconds':>8}  pseudo-fake val AUC per epoch"
          f"          real val video AUC [95% CI]")
    for r in rows:
        print(f"{r['photos']:>7} {r['people']:>7} {r['seconds']:>8.0f}  "
              f"{' '.join(f'{x:.3f}' for x in r['pseudo_fake_val_auc']):<36} "
              f"{r['real_val_video_auc']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] n={r['n']}")


if __name__ == "__main__":
    main()
