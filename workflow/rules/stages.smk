# One rule per stage of the table in workflow/pipeline.py (the single definition that
# dvc.yaml is written from). Inputs: the stage's code (the computed import closure of
# its entry modules) and data; params: the values of the params.yaml keys it reads, so
# that editing one reruns the stage and what follows; a log per rule.
#
# Resources: `gpu` is the number of GPUs the stage uses (the search: its `devices`; a
# training: its device), which a cluster profile turns into the job's GPU request
# (workflow/profiles/slurm). `gpu_jobs` is 1 for every stage that uses a GPU: the
# workstation profile (workflow/profiles/default) allows one such job at a time, since
# each stage uses the devices its parameters name and Snakemake does not give local jobs
# GPUs of their own. The Snakefile scopes `gpu_jobs` as local, so on a cluster each job
# has its own and the limit does not hold jobs back there. `machine_share` is 1, or 100 for
# a stage that must run alone (the latency benchmark: jobs beside it would slow what it
# times); the workstation profile allows 100 at a time, and it is local too.
#
# Software: the conda environment that `--software-deployment-method conda` builds for
# every rule (workflow/envs/nasseg.yaml, the dependencies of pyproject.toml); without that
# option the rules run in the environment Snakemake runs in (the project's .venv).

for _stage in pipeline.stages(config):
    if not _stage.snakemake:
        continue

    rule:
        name: _stage.name
        input:
            code=_stage.code(),
            data=list(_stage.deps),
        output:
            # report(): shown by `snakemake --report` under the stage table's category
            [report(directory(o.path), category=o.report, patterns=["{name}.png", "{name}.svg"])
             if o.report and o.directory else report(o.path, category=o.report) if o.report
             else directory(o.path) if o.directory else o.path for o in _stage.outs],
            metrics=list(_stage.metrics),
            plots=list(_stage.plots),
        params:
            values=_stage.param_values(config),
            # bound here: `shell:` is evaluated when the job runs, after the loop has moved on
            cmd=_stage.cmd,
        resources:
            gpu=_stage.gpus,
            gpu_jobs=int(_stage.gpus > 0),
            # an exclusive stage (the latency benchmark) takes the machine's whole share
            machine_share=100 if _stage.exclusive else 1,
        log:
            f"logs/{_stage.name}.log",
        conda:
            "../envs/nasseg.yaml"
        shell:
            "{params.cmd} > {log} 2>&1"
