"""One line for the paper-table recipes (paper_recipe.sh): a run's test mAP beside the paper's number.
    python benchmarks/beside_paper.py RUN_FOLDER PAPER_MAP SOURCE"""

import json
import sys
from pathlib import Path

run, paper, source = sys.argv[1:]
metrics = json.loads((Path(run) / "metrics.json").read_text())
print(f"{run}: test mAP {metrics['test']['mAP']:.2f} (epoch {metrics['test']['epoch']} of {metrics['epochs']}, "
      f"chosen on validation); {source}: {paper}")
