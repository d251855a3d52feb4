"""What a user gets with the defaults: from scratch, no tuning flags, on two real datasets, beside torchvision.

    python3 benchmarks/bench_learning.py [--jobs seed,chess,bccd,speed] [--reference-python REFPY]
                                         [--out benchmarks/results/learning.json] [--work /tmp/bench_learning]

Jobs (each a `train_ssd.py` command as a user types it, run in its own process, one after the other):
- `bccd`:  BCCD trainval -> test, 80 epochs at batch 16 (targets: mAP 0.60, mAP@0.5 0.90);
- `chess`: chess train -> test, 40 epochs at batch 16 (target: 1.2x torchvision's mAP on the same protocol);
- `seed`:  the seed's own command on BCCD: `--epochs 10 --batch-size 5 --lr 0.001` (target: mAP@0.5 0.5);
- `speed`: training pictures/s at batch 16 over the second of two epochs, on BCCD (640x480), chess (416x416) and
  BCCD upscaled to 2000 px wide (targets: 2x torchvision's, 1.5x on the large pictures).
With `--reference-python` (the venv of ../shared/reference/make-venv.sh), torchvision's SSDLite recipe runs the
same protocol right after ours (`tv_train.py`), and each figure is given beside it. The figures are the last
epoch's, as logged by the run (the same numbers `ssd eval` gives for its last.pt). Writes JSON (merged with the
jobs already in the file; a job run without `--reference-python` keeps the reference figures it had) and, per
job, a plot of validation mAP by epoch beside the reference's final mAP, in benchmarks/results/learning/.
`--reference-only` runs torchvision's side alone and keeps our figures from the file, to measure the
reference again on the machine our figures came from.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BCCD = SHARED / "data" / "bccd" / "BCCD"
CHESS = SHARED / "data" / "chess"
TV_TRAIN = SHARED / "reference" / "tv_train.py"

# name: (dataset, our flags beyond --datapath, torchvision's flags beyond ROOT)
JOBS = {
    "bccd": (
        BCCD,
        ["--arch", "mobilenetv3_ssd", "--epochs", "80", "--batch-size", "16", "--train-split", "trainval",
         "--val-split", "test"],
        ["--epochs", "80", "--trainset", "trainval", "--testset", "test"],
    ),
    "chess": (
        CHESS,
        ["--arch", "mobilenetv3_ssd", "--epochs", "40", "--batch-size", "16", "--val-split", "test"],
        ["--epochs", "40", "--trainset", "train", "--testset", "test"],
    ),
    "seed": (
        BCCD,
        ["--arch", "mobilenetv3_ssd", "--epochs", "10", "--batch-size", "5", "--lr", "0.001", "--save", "ssd.pt"],
        None,
    ),
}  # fmt: skip
TARGETS = {
    "bccd": {"mAP": 0.60, "mAP50": 0.90},
    "chess": {"mAP_vs_reference": 1.2},
    "seed": {"mAP50": 0.5},
    "speed": {"vs_reference": 2.0, "floor": 1.5, "large_vs_reference": 1.5},
}
LARGE_WIDTH = 2000


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", lscpu)
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def train_ours(name: str, datapath: Path, flags: list[str], work: Path) -> dict:
    """One `train_ssd.py` run; its history and figures from its last.pt."""
    command = [sys.executable, str(ROOT / "train_ssd.py"), "--datapath", str(datapath), *flags]
    command += ["--project", str(work), "--name", name, "--quiet", "--no-tensorboard"]
    shutil.rmtree(
        work / name, ignore_errors=True
    )  # else the run would go to <name>2 and this read the old one
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=work)  # --save ssd.pt lands in work/
    wall = time.perf_counter() - started
    checkpoint = torch.load(work / name / "last.pt", map_location="cpu", weights_only=True)
    history = checkpoint["metrics"]
    last = history[-1]
    return {
        "command": " ".join(["python", "train_ssd.py", "--datapath", str(datapath), *flags]),
        "mAP": last.get("mAP"),
        "mAP50": last.get("mAP50"),
        "mAP75": last.get("mAP75"),
        "per_class_AP": last.get("per_class_AP"),
        "epochs": last["epoch"],
        "wall_seconds": round(wall, 1),
        "train_seconds": round(sum(row["train_seconds"] for row in history), 1),
        "pictures_per_s": round(sum(r["pictures_per_s"] for r in history) / len(history), 2),
        "map_by_epoch": [row.get("mAP") for row in history],
        "map50_by_epoch": [row.get("mAP50") for row in history],
        "run_dir": str(work / name),
    }


def train_reference(python: str, datapath: Path, flags: list[str], work: Path, name: str) -> dict:
    """torchvision's recipe on the same protocol: its RESULT line and per-epoch pictures/s."""
    command = [python, str(TV_TRAIN), str(datapath), "--out", str(work / f"tv_{name}"), *flags]
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    speeds = [float(s) for s in re.findall(r"\(([\d.]+) img/s\)", out)]
    result = re.search(r"RESULT epochs (\d+) train_s (\d+) mAP ([\d.]+) mAP50 ([\d.]+)", out)
    return {
        "command": " ".join(["REFPY", "tv_train.py", str(datapath), *flags]),
        "mAP": float(result.group(3)),
        "mAP50": float(result.group(4)),
        "train_seconds": float(result.group(2)),
        "wall_seconds": round(wall, 1),
        "pictures_per_s_by_epoch": speeds,
        "machine": machine(),
    }


def upscaled_bccd(work: Path) -> Path:
    """BCCD's trainval pictures at 2000 px wide (boxes scaled with them), as a VOC folder."""
    from PIL import Image

    target = work / "bccd_2000"
    if (target / "ImageSets" / "Main" / "trainval.txt").exists():
        return target
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    names = (BCCD / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    for name in names:
        picture = Image.open(BCCD / "JPEGImages" / f"{name}.jpg").convert("RGB")
        scale = LARGE_WIDTH / picture.width
        picture.resize((LARGE_WIDTH, round(picture.height * scale)), Image.BICUBIC).save(
            target / "JPEGImages" / f"{name}.jpg", quality=90
        )
        xml = (BCCD / "Annotations" / f"{name}.xml").read_text()
        xml = re.sub(
            r"<(xmin|ymin|xmax|ymax|width|height)>(\d+(?:\.\d+)?)</\1>",
            lambda m, scale=scale: f"<{m.group(1)}>{round(float(m.group(2)) * scale)}</{m.group(1)}>",
            xml,
        )
        (target / "Annotations" / f"{name}.xml").write_text(xml)
    (target / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(names) + "\n")
    (target / "ImageSets" / "Main" / "test.txt").write_text("\n".join(names[:8]) + "\n")  # tv_train needs one
    return target


def speed(work: Path, reference: str | None) -> dict:
    """Pictures/s at batch 16 over the second of two epochs (the first pays for warm-up), ours then torchvision's."""
    results = {}
    datasets = {
        "bccd_640x480": (BCCD, ["--train-split", "trainval", "--val-split", "test"], ["--trainset", "trainval"]),
        "chess_416": (CHESS, ["--val-split", "test"], ["--trainset", "train"]),
        "bccd_2000px": (upscaled_bccd(work), ["--train-split", "trainval", "--val-split", "none"],
                        ["--trainset", "trainval"]),
    }  # fmt: skip
    for name, (datapath, flags, tv_flags) in datasets.items():
        command = [sys.executable, str(ROOT / "train_ssd.py"), "--datapath", str(datapath), "--epochs", "2"]
        command += [
            *flags,
            "--eval-every",
            "100",
            "--project",
            str(work),
            "--name",
            f"speed_{name}",
            "--quiet",
        ]
        shutil.rmtree(work / f"speed_{name}", ignore_errors=True)  # else the run goes to speed_<name>2
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        history = torch.load(work / f"speed_{name}" / "last.pt", weights_only=True)["metrics"]
        entry = {"ours": round(history[-1]["pictures_per_s"], 2)}
        if reference is not None:
            out = subprocess.run(
                [reference, str(TV_TRAIN), str(datapath), "--out", str(work / f"tvspeed_{name}"), "--epochs", "2",
                 *tv_flags, "--testset", "test"],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            entry["torchvision"] = float(re.findall(r"\(([\d.]+) img/s\)", out)[-1])
            entry["ratio"] = round(entry["ours"] / entry["torchvision"], 2)
        results[name] = entry
    return results


def plot(name: str, ours: dict, reference: dict | None, folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    epochs = range(1, len(ours["map_by_epoch"]) + 1)
    axes.plot(epochs, ours["map_by_epoch"], color="tab:blue", label="ours, mAP")
    if ours.get("map50_by_epoch"):
        axes.plot(epochs, ours["map50_by_epoch"], color="tab:blue", linestyle=":", label="ours, mAP@0.5")
    if reference is not None:
        axes.axhline(reference["mAP"], color="tab:red", linestyle="--", label="torchvision recipe, final mAP")
        axes.axhline(
            reference["mAP50"], color="tab:red", linestyle=":", label="torchvision recipe, final mAP@0.5"
        )
    flags = ours["command"].split("--arch", 1)[-1]
    axes.set(xlabel="epoch", ylabel="validation (COCO)", ylim=(0, 1), title=f"{name}: --arch{flags}")
    axes.title.set_fontsize(8)
    axes.grid(alpha=0.3)
    axes.legend()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_map.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", default="seed,chess,bccd,speed")
    parser.add_argument("--reference-python", help="python of the torchvision reference venv")
    parser.add_argument(
        "--reference-only",
        action="store_true",
        help="run torchvision's recipe alone; keep our figures from --out",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "learning.json"))
    parser.add_argument("--work", default="/tmp/bench_learning", help="run folders and the upscaled pictures")
    args = parser.parse_args(argv)
    if not BCCD.exists() or not CHESS.exists():
        print(f"needs {BCCD} and {CHESS} (../shared/data)", file=sys.stderr)
        return 2
    if args.reference_only and not args.reference_python:
        parser.error("--reference-only needs --reference-python")
    if args.reference_only and "speed" in args.jobs.split(","):
        parser.error("--reference-only: the speed job times both sides one after the other; run it whole")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    report = json.loads(out.read_text()) if out.exists() else {}
    report["machine"] = machine()
    report["targets"] = TARGETS
    for job in args.jobs.split(","):
        print(f"{job} ...", flush=True)
        if job == "speed":
            report["speed"] = {"machine": machine(), **speed(work, args.reference_python)}
        else:
            datapath, flags, tv_flags = JOBS[job]
            if args.reference_only:
                if tv_flags is None:
                    parser.error(f"--reference-only: {job!r} has no torchvision protocol")
                if "ours" not in report.get(job, {}):
                    parser.error(f"--reference-only: {out} has no figures of ours for {job!r} to keep")
                entry = {"machine": report[job]["machine"], "ours": report[job]["ours"]}
            else:
                entry = {"machine": machine(), "ours": train_ours(job, datapath, flags, work)}
            if args.reference_python and tv_flags is not None:
                entry["torchvision"] = train_reference(args.reference_python, datapath, tv_flags, work, job)
            elif "torchvision" in report.get(job, {}):
                # Not run again: the figures of an earlier run are kept (their note says where they ran).
                entry["torchvision"] = report[job]["torchvision"]
            if "torchvision" in entry:
                entry["mAP_ratio"] = round(entry["ours"]["mAP"] / entry["torchvision"]["mAP"], 3)
            picture = plot(job, entry["ours"], entry.get("torchvision"), out.parent / "learning").resolve()
            entry["plot"] = str(picture.relative_to(ROOT) if picture.is_relative_to(ROOT) else picture)
            report[job] = entry
        report["machine"] = machine()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report[job], indent=2)[:2000], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
