"""The layout of a study folder: every name in it, spelled in this one place.

    study.yaml                               STUDY_FILE    the resolved grid (``compare --grid study.yaml`` re-runs it)
    environment.json                         ENVIRONMENT   command, commit, versions, device, dates
    runs/<configuration>-s<seed>/            MAIN          one run folder per cell (``run_folder``'s layout),
        train.log                            TRAIN_LOG       the cell process's output
        failed.json                          FAILED          while the cell has failed: its error
    localization/<configuration>-s<seed>/    LOCALIZATION  the localisation part's cells, the same layout, plus
        explain/scores.json, pairs.pt        EXPLAIN         ``attnvision explain``'s output (``explain.run``)
    permuted/<configuration>-s<seed>/        PERMUTED      the localisation cells retrained on permuted labels
                                                           (the sanity checks' data randomisation test)
    costs.json                               COSTS         cost measurements per configuration
    report.html, report.md, results.csv      REPORT_HTML, REPORT_MD, RESULTS_CSV
    plots/*.png, *.svg, gallery.png          PLOTS, GALLERY
    .attnvision-cluster-check-<hex>          CLUSTER_CHECK while ``cluster`` checks that every Ray node sees the folder
"""

from __future__ import annotations

STUDY_FILE = "study.yaml"
ENVIRONMENT = "environment.json"
COSTS = "costs.json"

MAIN = "runs"  # the part of the main grid (also its folder)
LOCALIZATION = "localization"  # the localisation part (also its folder)
PERMUTED = "permuted"  # the localisation part's models trained on permuted labels (also its folder)
TRAIN_LOG = "train.log"
FAILED = "failed.json"
EXPLAIN = "explain"

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
RESULTS_CSV = "results.csv"
PLOTS = "plots"
GALLERY = "gallery.png"
CLUSTER_CHECK = ".attnvision-cluster-check-"  # + random hex; removed when the check ends
