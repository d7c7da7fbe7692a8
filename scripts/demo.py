"""`make demo`: classify the embedded sample city through real QGIS Processing (qgis_process).

Prints where the styled result is, the onnxruntime provider that actually ran, the time and the
area of every class; then validates the map as planners do: stratified random points, labelled
here automatically from the sample city's ground truth (in QGIS a person labels them in the
labelling dock), and a design-based accuracy assessment with 95 % confidence intervals.
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
from plugin.validation.labelling import label_points_file  # noqa: E402

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


def run_json(algorithm, *params):
    raw = qgis_process("--json", "run", algorithm, "--", *params)
    return json.loads(raw[raw.index("{"):])["results"]


def validate(output, ground_truth, out_dir, seed):
    """Create points, label them from the ground truth, assess: the validation loop."""
    points = os.path.join(out_dir, "validation_points.gpkg")
    if os.path.exists(points):
        os.remove(points)
    created = run_json("urbanfunctions:createvalidationpoints", f"INPUT={output}", "DESIGN=0",
                       "ALLOCATION=0", "SAMPLE_SIZE=400", "MIN_PER_STRATUM=25", f"SEED={seed}",
                       f"OUTPUT={points}")
    labels = label_points_file(points, ground_truth)
    report = os.path.join(out_dir, "accuracy_report.html")
    assessed = run_json("urbanfunctions:assessaccuracy", f"POINTS={points}",
                        "REFERENCE_FIELD=ref_class", f"RASTER={output}", f"OUTPUT_HTML={report}",
                        f"OUTPUT_JSON={os.path.join(out_dir, 'accuracy.json')}",
                        f"OUTPUT_CSV={os.path.join(out_dir, 'accuracy.csv')}", "OVERWRITE=true")
    print(f"\nValidation: {int(created['N_POINTS'])} stratified random points ({points}),")
    print(f"  labelled from the sample city's ground truth ({sum(l is not None for l in labels)} labelled)")
    print(f"  Overall accuracy {float(assessed['OVERALL_ACCURACY']):.3f} "
          f"(95 % CI {float(assessed['OA_CI_LOW']):.3f}-{float(assessed['OA_CI_HIGH']):.3f}, "
          f"SE {float(assessed['OA_SE']):.3f})")
    print(f"  Report with error matrix and area estimates: {report}")


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
    results = run_json("urbanfunctions:classify", *params)
    wall = time.perf_counter() - t
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
    validate(results["OUTPUT"], city.ground_truth, out_dir, args.seed)


if __name__ == "__main__":
    main()
