"""The study behind ``attnvision compare``: which attention helps, at what cost, and does it look at
the right place. ``grid`` (what to train: the grid and its cells), ``layout`` (the study folder's
names), ``execute`` (training the cells), ``cluster`` (on a Ray cluster, first: does every node see the
paths the cells use), ``measure`` (costs), ``results`` (numbers and
statistics), ``report`` (HTML, Markdown, CSV, plots), ``run`` (the phases)."""
