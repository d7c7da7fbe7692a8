"""Command line: ``python -m plugin.samplecity --out DIR [--seed N] [--size-m M]``."""
import argparse
import sys
import time

from .generator import generate_sample_city


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m plugin.samplecity",
                                description="Generate the synthetic sample city.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size-m", type=float, default=2400.0, help="side of the city square (m)")
    p.add_argument("--vhr-gsd-m", type=float, default=0.8)
    p.add_argument("--ntl-gsd-deg", type=float, default=0.001)
    p.add_argument("--force", action="store_true", help="regenerate even if already complete")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)

    def progress(fraction, message):
        if not a.quiet:
            print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr)

    t = time.time()
    city = generate_sample_city(a.out, seed=a.seed, size_m=a.size_m, vhr_gsd_m=a.vhr_gsd_m,
                                ntl_gsd_deg=a.ntl_gsd_deg, force=a.force, progress=progress)
    print(f"ground_truth\t{city.ground_truth}")
    for key, path in city.inputs.items():
        print(f"{key}\t{path}")
    print(f"metadata\t{city.metadata}")
    if not a.quiet:
        print(f"({time.time() - t:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
