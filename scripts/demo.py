"""`make demo`: classify the embedded sample city through real QGIS Processing (qgis_process).

Prints where the styled result is, the onnxruntime provider that actually ran, the time and the
area of every class.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from plugin.samplecity import generate_sample_city  # noqa: E402

PARAM_FOR = {"vhr": "VHR", "ntl": "NTL", "s2_spring": "S2_SPRING", "s2_summer": "S2_SUMMER",
             "s2_autumn": "S2_AUTUMN", "s2_winter": "S2_WINTER"}


def qgis_process(*args):
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    # qgis_process (the shell wrapper) passes a bad option from /etc/default/qgis: use the binary
    proc = subprocess.run(["qgis_process.bin", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"qgis_process failed (exit {proc.returncode}); see the log above.")
    return proc.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="build/demo")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    t = time.perf_counter()
    city = generate_sample_city(os.path.join(out_dir, "sample_city"), seed=args.seed)
    print(f"Sample city (seed {args.seed}) ready in {time.perf_counter() - t:.1f} s: {city.out_dir}")

    output = os.path.join(out_dir, "urban_functions.tif")
    params = [f"{PARAM_FOR[m]}={p}" for m, p in city.inputs.items()]
    params += ["MODEL=sample-city-fusion", "OVERWRITE=true", "CONFIDENCE=true", f"OUTPUT={output}"]
    t = time.perf_counter()
    raw = qgis_process("--json", "run", "urbanfunctions:classify", "--", *params)
    wall = time.perf_counter() - t
    results = json.loads(raw[raw.index("{"):])["results"]
    with open(results["MANIFEST"], encoding="utf-8") as f:
        manifest = json.load(f)

    print(f"\nStyled functional-zone map: {results['OUTPUT']}")
    qml = os.path.splitext(results["OUTPUT"])[0] + ".qml"
    if os.path.exists(qml):
        print(f"QGIS style (loads with the layer): {qml}")
    print(f"Run manifest: {results['MANIFEST']}")
    print(f"Execution provider that ran: {results['PROVIDER']}")
    print(f"Classification time: {float(results['SECONDS']):.1f} s (qgis_process wall time {wall:.1f} s)")
    print(f"Grid: {manifest['output']['size'][0]} x {manifest['output']['size'][1]} cells, "
          f"{manifest['output']['crs']}")
    print("\nClass areas:")
    total = sum(a["area_m2"] for a in manifest["class_areas"]) or 1.0
    for a in manifest["class_areas"]:
        print(f"  {a['code']}  {a['name']:<26} {a['area_m2'] / 1e4:9.2f} ha  {100 * a['area_m2'] / total:5.1f} %")


if __name__ == "__main__":
    main()
