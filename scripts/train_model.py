"""Train the shipped DOS ensemble and copy it into the package (src/atomvib/learn/weights/model.pt).

Equivalent to ``atomvib train --data ../shared/data/petretto-dfpt --out runs/dos-model --members 5 --jobs 2``
followed by a copy; about 25 min on 2 idle CPU cores. Seeded: member k uses seed k.
"""

import shutil
import sys
from pathlib import Path

from atomvib.learn.train import TrainConfig, train

root = Path(__file__).resolve().parents[1]
data = root.parent / "shared" / "data" / "petretto-dfpt"
out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "runs" / "dos-model"

if __name__ == "__main__":
    model = train(data, out, members=5, seed=0, cfg=TrainConfig(), jobs=2, progress=True)
    dest = root / "src" / "atomvib" / "learn" / "weights" / "model.pt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, dest)
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.2f} MB)")
