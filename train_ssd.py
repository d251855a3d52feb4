#!/usr/bin/env python3
"""Train an SSD: the same as `ssd train` (every option of it works here too), e.g.

    python train_ssd.py --arch mobilenetv3_ssd --datapath dataset_coco --epochs 10 --batch-size 5 --lr 0.001 --save ssd.pt

Runs from a checkout without installing: the package's `src/` folder is put on the path.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from ssd.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
