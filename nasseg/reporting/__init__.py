"""The report of one experiment: one self-contained HTML page and Markdown with its figures.

One concern per module: :mod:`.collect` reads the run's artefacts into typed records;
:mod:`.baselines`, :mod:`.qualitative`, :mod:`.provenance` and :mod:`.changes` compute
what the artefacts do not hold (the floors: a constant prediction and the untrained
network; sample predictions, where the numbers come from, what changed since git's HEAD); :mod:`.figures` and
:mod:`.architecture` draw (matplotlib on Agg, no pyplot, no graphviz);
:mod:`.sections` lays the report out as a :mod:`.document`, which :mod:`.render`
writes as HTML and Markdown; :mod:`.build` puts the steps together
(:func:`~.build.make_report`). Paths come in as arguments: the pipeline's layout is the
stage's business (``stages/report.py``).

The evaluate stage's own files (metrics JSON, confusion matrix, per-class IoU CSV) are
:mod:`nasseg.reports`, which this package reuses.
"""
