"""Serial link efficiency and training throughput on the emulated board.

    python benchmarks/link.py

Runs digits end to end on mps2_an500 (QEMU -icount) and reads, per streamed task, what the
session measured: payload bytes against the encoded bytes written (the protocol's overhead:
header, CRC, COBS, delimiter, retransmissions) and training samples per second. Also streams
one task through the fault proxy to show the cost of a damaged link. Writes
benchmarks/results/link.json and link.md.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from tinycil import software  # noqa: E402


def main() -> None:
    from device_runs import private_project

    from tinycil.deploy import emulator
    from tinycil.deploy.boards import load_board
    from tinycil.link.bridge import DeviceLink
    from tinycil.link.faultproxy import FaultProxy, Faults
    from tinycil.cli.run import run_end_to_end
    from tinycil.link.stream import stream_task

    with tempfile.TemporaryDirectory(prefix="tinycil-link-") as tmp:
        tmp = Path(tmp)
        os.environ["TINYCIL_STATE_DIR"] = str(tmp / "state")
        project = private_project(tmp / "project")
        results = run_end_to_end("digits", "mps2_an500", tmp / "run", root=project, epochs=4,
                                 distill_iters=10, icount=True, progress=False, echo=print)
        tasks = results["device_log"]["tasks"]
        payload = sum(m["link"]["payload_bytes"] for m in tasks.values())
        wire = sum(m["link"]["wire_bytes"] for m in tasks.values())
        samples = sum(m["samples"] for m in tasks.values())
        train_s = sum(m["train_seconds"] for m in tasks.values())
        # Packed frames: a streamed sample's bytes on the wire (label included) against plain.
        from tinycil.link.packing import FramePlan
        from tinycil.link.stream import RunData

        data = RunData.load(tmp / "run")
        plans = [FramePlan(data.samples("train", int(t))[0]) for t in tasks]
        packed_bytes = float(np.mean(np.concatenate([p.wire for p in plans])))

        # The same first task again through a damaged link, on a fresh board.
        import shutil

        shutil.copytree(tmp / "run", tmp / "faulty")
        elf = project / "firmware" / ".pio" / "build" / "mps2_an500" / "firmware.elf"
        faults = Faults(drop=0.005, corrupt=0.005, duplicate=0.005, delay=0.005, garbage=0.005,
                        seed=1, limit=100)
        with emulator.emulator(load_board("mps2_an500"), elf, icount=True) as state:
            with FaultProxy("127.0.0.1", state.port, faults) as proxy:
                with DeviceLink(proxy.url, timeout=0.5, retries=10) as link:
                    t0 = time.monotonic()
                    faulty = stream_task(tmp / "faulty", link, 1, progress=False,
                                         echo=lambda *_: None, timeout=0.3, max_sends=40)
                    faulty_s = time.monotonic() - t0
                injected = proxy.counts.total

    out = {
        "efficiency": payload / wire,
        "samples_per_second": samples / train_s,
        "sample_bytes": {"plain": data.input_size + 1, "packed": packed_bytes,
                         "packed_fraction": packed_bytes / (data.input_size + 1)},
        "payload_bytes": payload, "wire_bytes": wire, "training_samples": samples,
        "training_seconds": train_s,
        "per_task": {t: {"efficiency": m["link"]["payload_bytes"] / m["link"]["wire_bytes"],
                         "samples_per_second": m["samples_per_second"],
                         "retransmissions": m["link"]["retransmissions"]}
                     for t, m in tasks.items()},
        "damaged_link": {"faults_injected": injected,
                         "efficiency": faulty["link"]["payload_bytes"] / faulty["link"]["wire_bytes"],
                         "retransmissions": faulty["link"]["retransmissions"],
                         "seconds": faulty_s,
                         "same_accuracy_row": faulty["row"] == tasks["1"]["row"]},
        "note": "efficiency = payload bytes / encoded bytes written by the host (header, CRC, COBS, "
                "delimiter and retransmissions are the overhead); QEMU delivers host-to-device "
                "bytes at its own pace, so samples per second is the emulator's, not a UART's",
        "software": software.versions(programs=True),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "link.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# Serial link on the emulated board (digits, 4 device tasks)", "",
          "| measure | value |", "|---|---|",
          f"| link efficiency (payload / raw bytes), clean | {100 * out['efficiency']:.1f}% (target >= 90%) |",
          f"| training samples per second | {out['samples_per_second']:.0f} |",
          f"| bytes of a training sample on the wire, packed (plain) | "
          f"{packed_bytes:.1f} ({data.input_size + 1}): "
          f"{100 * out['sample_bytes']['packed_fraction']:.0f}% |",
          f"| damaged link: faults injected | {injected} |",
          f"| damaged link: efficiency | {100 * out['damaged_link']['efficiency']:.1f}% |",
          f"| damaged link: same accuracy row as clean | {out['damaged_link']['same_accuracy_row']} |",
          "", out["note"], "", f"Software: {software.describe(out['software'])}.", ""]
    (RESULTS_DIR / "link.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
