"""Fuzzing the firmware's serial front end on the host, longer than the suite does.

    python benchmarks/fuzz.py [--seconds 300] [--seeds 1,2,3]

Builds tests/fuzz_host (the firmware's main loop, protocol, sequencer, handlers, runtime and
kernels for the host, with the tiny test model, under AddressSanitizer and
UndefinedBehaviorSanitizer) and runs its fuzzer for each seed: random and crafted conversations,
after each of which the device must still answer a HELLO and a new session's SYNC, and every byte
it sends must decode as a frame. Writes benchmarks/results/fuzz.json and fuzz.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tinycil import software

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    from fuzz_host import build

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="tinycil-fuzz-") as tmp:
        exe = build.build(ROOT, Path(tmp))
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.monotonic()
            proc = subprocess.run([str(exe), "fuzz", str(seed), str(args.seconds)],
                                  capture_output=True, text=True)
            line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            fields = dict(re.findall(r"(\w+)=(\d+)", line))
            runs.append({"seed": seed, "exit_code": proc.returncode,
                         "seconds": time.monotonic() - t0,
                         "iterations": int(fields.get("iterations", 0)),
                         "bytes_in": int(fields.get("bytes_in", 0)),
                         "replies": int(fields.get("replies", 0)),
                         "findings": (proc.stdout + proc.stderr)[-2000:] if proc.returncode else ""})
            print(json.dumps({k: runs[-1][k] for k in ("seed", "exit_code", "iterations",
                                                       "bytes_in")}), flush=True)
    out = {"runs": runs, "clean": all(r["exit_code"] == 0 for r in runs),
           "note": "firmware front end built for the host with -fsanitize=address,undefined; "
                   "conversations of valid, damaged and crafted frames with a fixed seed",
           "software": software.versions()}
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "fuzz.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# Fuzzing the firmware's frame parser and handlers (host build, ASan + UBSan)", "",
          "| seed | seconds | conversations | bytes fed | replies | result |",
          "|---|---|---|---|---|---|"]
    for r in runs:
        md.append(f"| {r['seed']} | {r['seconds']:.0f} | {r['iterations']} | {r['bytes_in']} | "
                  f"{r['replies']} | {'clean' if r['exit_code'] == 0 else 'FINDING'} |")
    md += ["", out["note"], "", f"Software: {software.describe(out['software'])}.", ""]
    (RESULTS_DIR / "fuzz.md").write_text("\n".join(md))
    print("\n".join(md))
    if not out["clean"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
