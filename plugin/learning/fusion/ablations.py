"""The fusion ablation study (``make fusion-ablations``): train the bundled design and each
ablation on a short schedule for several seeds, then tabulate the exported models' scores.

    python -m plugin.learning.fusion.ablations [--steps 500] [--seeds 0 1]
        [--variants base concat ...] [--report-only]

Every run is ``python -m plugin.learning.fusion.train --steps S --seed K [--ablation A]`` in its
own process, written to ``build/fusion_ablations/seed<K>/<variant>.onnx`` (a finished run is
not redone, so an interrupted study resumes). All runs share the training and validation scenes
of the bundled model (the seed changes the initialisation, the crops and the dropout draws, not
the data). The report reads the cards of the finished runs and writes
``docs/fusion_ablations.md`` and ``.json``, and the same table into README.md between the
``fusion-ablations`` markers.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from ..data import BUILD_DIR, REPO_ROOT

OUT_DIR = os.path.join(BUILD_DIR, "fusion_ablations")
DOC_MD = os.path.join(REPO_ROOT, "docs", "fusion_ablations.md")
DOC_JSON = os.path.join(REPO_ROOT, "docs", "fusion_ablations.json")
README = os.path.join(REPO_ROOT, "README.md")
MARK_START = "<!-- fusion-ablations:start -->"
MARK_END = "<!-- fusion-ablations:end -->"
DEFAULT_STEPS = 500
DEFAULT_SEEDS = (0, 1, 2)
# variant -> (train.py --ablation value or None, row label)
VARIANTS = {
    "base": (None, "Bundled design: gated fusion, NTL alignment, aux. losses, decision-level "
                   "seasons, VHR trunk from the VHR classifier"),
    "concat": ("concat", "Concatenation instead of gated fusion"),
    "no_align": ("no_align", "No NTL alignment (offset module off)"),
    "no_aux": ("no_aux", "No feature-consistency / triplet losses"),
    "feature_s2": ("feature_s2", "Feature-level instead of decision-level seasons"),
    "no_vhr_init": ("no_vhr_init", "VHR trunk trained from scratch"),
}
SINGLE = ("vhr_only", "ntl_only", "s2_only", "temporal_only")
DROP_ONE = ("all_but_vhr", "all_but_ntl", "all_but_s2", "all_but_temporal")


def run_path(seed, variant, out_dir=OUT_DIR):
    return os.path.join(out_dir, f"seed{seed}", f"{variant}.onnx")


def run_one(seed, variant, steps, threads):
    """Train one variant for one seed (skipped when its model exists); returns seconds."""
    out = run_path(seed, variant)
    if os.path.exists(out) and read_card(out)["training"]["steps"] == steps:
        print(f"  seed {seed} {variant}: done before ({out})", flush=True)
        return 0.0
    ablation = VARIANTS[variant][0]
    cmd = [sys.executable, "-m", "plugin.learning.fusion.train", "--out", out,
           "--steps", str(steps), "--seed", str(seed), "--threads", str(threads),
           "--workdir", os.path.join(BUILD_DIR, "fusion_train", f"ablation_s{seed}_{variant}")]
    if ablation:
        cmd += ["--ablation", ablation]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    log = out[:-len(".onnx")] + ".log"
    print(f"  seed {seed} {variant}: {' '.join(cmd[1:])} (log {log})", flush=True)
    t = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise SystemExit(f"seed {seed} {variant} failed (exit {r.returncode}); see {log}")
    return time.perf_counter() - t


def read_card(path):
    from ...core.model_card import read_card as read
    return read(path).raw


def run_scores(card, path):
    """The numbers one run contributes to the table."""
    sub = card["metrics"]["subsets"]
    mis = card["metrics"].get("ntl_misregistration", {})
    miou = {k: v["miou"] for k, v in sub.items()}
    best_single = max(SINGLE, key=lambda k: miou[k])
    return {
        "all": miou["all"],
        "all_oa": sub["all"]["overall_accuracy"],
        "best_single": miou[best_single],
        "best_single_key": best_single,
        "fusion_gain": round(miou["all"] - miou[best_single], 4),
        "vhr_only": miou["vhr_only"],
        "s2_only": miou["s2_only"],
        "vhr_ntl": miou.get("vhr_ntl"),
        "vhr_ntl_shift0": mis.get("0px", {}).get("vhr_ntl", {}).get("miou"),
        "vhr_ntl_shift2": mis.get("2px", {}).get("vhr_ntl", {}).get("miou"),
        "all_shift2": mis.get("2px", {}).get("all", {}).get("miou"),
        "drop_one_mean": round(float(np.mean([miou["all"] - miou[k] for k in DROP_ONE])), 4),
        "drop_one_worst": round(float(max(miou["all"] - miou[k] for k in DROP_ONE)), 4),
        "drop_one": {k: round(miou["all"] - miou[k], 4) for k in DROP_ONE},
        "training_s": card["training"]["timing"]["training_s"],
        "s_per_step": card["training"]["timing"]["s_per_step_median"],
        "steps": card["training"]["steps"],
        "parameters": card["architecture"]["parameters"],
        "onnx_mb": round(os.path.getsize(path) / 1e6, 2),
    }


COLUMNS = [  # key, header, format
    ("all", "All inputs mIoU", "{:.3f}"),
    ("fusion_gain", "All − best single", "{:+.3f}"),
    ("vhr_only", "VHR only", "{:.3f}"),
    ("s2_only", "S2 only", "{:.3f}"),
    ("vhr_ntl_shift0", "VHR+NTL, NTL shift 0", "{:.3f}"),
    ("vhr_ntl_shift2", "VHR+NTL, NTL shift 80 m", "{:.3f}"),
    ("drop_one_mean", "One input missing: mean loss", "{:.3f}"),
    ("drop_one_worst", "worst loss", "{:.3f}"),
    ("training_s", "Training (s)", "{:.0f}"),
]


def _cell(values, fmt):
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt.format(vals[0])
    spread = fmt.replace("+", "").format(float(np.std(vals, ddof=0)))
    return f"{fmt.format(float(np.mean(vals)))} ± {spread}"


def report(seeds, steps, out_dir=OUT_DIR, doc_md=DOC_MD, doc_json=DOC_JSON, readme=README):
    """Table of the finished runs with ``steps`` steps: written to ``doc_md`` / ``doc_json``
    and between the markers of ``readme``; returns {variant: {seed: scores}}."""
    runs = {}
    for variant in VARIANTS:
        for seed in seeds:
            path = run_path(seed, variant, out_dir)
            if os.path.exists(path):
                card = read_card(path)
                if card["training"]["steps"] != steps:
                    continue
                runs.setdefault(variant, {})[seed] = run_scores(card, path)
    if "base" not in runs:
        raise SystemExit(f"no finished base runs with {steps} steps under {out_dir}")
    base_card = read_card(run_path(min(runs["base"]), "base", out_dir))
    hw = base_card["training"]["hardware"]
    lines = [
        f"Each row: {steps} training steps (batch 4 of 64 x 64 cells; the bundled model has "
        "2,688) from the same 192 generated training scenes; scores of the exported ONNX model "
        "on the 16 held-out validation scenes (unseen layouts, unseen real VHR images, "
        "simulated NTL / Sentinel-2 / temporal signature); mIoU over the 8 classes; "
        f"mean ± standard deviation over seeds {', '.join(str(s) for s in seeds)} "
        "(runs finished: " + ", ".join(f"{v} {len(r)}" for v, r in runs.items()) + "). "
        "NTL shift: the validation scenes again with the night light shifted by exactly 0 or "
        "2 pixels of 40 m. One input missing: mIoU with all inputs minus mIoU without VHR, "
        "NTL, Sentinel-2 or the temporal signature (mean and worst of the four). "
        f"Hardware: {hw}. Made by `make fusion-ablations`.",
        "",
        "| Variant | " + " | ".join(h for _, h, _ in COLUMNS) + " | Parameters | ONNX (MB) |",
        "|---|" + "---:|" * (len(COLUMNS) + 2),
    ]
    for variant, (_, label) in VARIANTS.items():
        if variant not in runs:
            lines.append(f"| {label} | " + " | ".join("not run" for _ in COLUMNS) + " | | |")
            continue
        rs = list(runs[variant].values())
        cells = [_cell([r[k] for r in rs], fmt) for k, _, fmt in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) +
                     f" | {rs[0]['parameters']:,} | {rs[0]['onnx_mb']:.1f} |")
    table = "\n".join(lines)
    with open(doc_json + ".tmp", "w") as f:
        json.dump({"steps": steps, "seeds": list(seeds), "hardware": hw, "runs": {
            v: {str(s): r for s, r in rr.items()} for v, rr in runs.items()}}, f, indent=1)
    os.replace(doc_json + ".tmp", doc_json)
    md = ["# Fusion ablation study", "",
          "Measured by `python -m plugin.learning.fusion.ablations` (`make fusion-ablations`). "
          "All numbers are inside the simulation described in "
          "[fusion_training_data.md](fusion_training_data.md): real VHR scene images, "
          "simulated night light, Sentinel-2 and temporal signature. Per-run values are in "
          "[fusion_ablations.json](fusion_ablations.json).", "", table, ""]
    with open(doc_md + ".tmp", "w") as f:
        f.write("\n".join(md))
    os.replace(doc_md + ".tmp", doc_md)
    with open(readme) as f:
        text = f.read()
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        _, tail = rest.split(MARK_END, 1)
        with open(readme + ".tmp", "w") as f:
            f.write(head + MARK_START + "\n" + table + "\n" + MARK_END + tail)
        os.replace(readme + ".tmp", readme)
    print(table)
    return runs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if not args.report_only:
        for seed in args.seeds:          # seed by seed: a partial study still covers every row
            for variant in args.variants:
                run_one(seed, variant, args.steps, args.threads)
    report(args.seeds, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
