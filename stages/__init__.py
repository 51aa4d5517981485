"""Thin command-line stages of the pipeline: `python -m stages.<name> --help`.

Each stage reads its own section of params.yaml into a typed, validated object
(see :mod:`stages.params`) and takes paths as arguments. Snakemake rules and
dvc.yaml stages call these very commands.
"""
