# Architecture search, one rule per experiment; the same commands as dvc.yaml.
# Only summary.json is declared as output: Snakemake deletes the outputs of a failed
# job, and history.jsonl / checkpoint.pt must survive an interruption so that
# re-running resumes the search instead of starting over.

SEARCH_CODE = ["stages/search.py", "stages/params.py", "nasseg/genotypes.py",
               *[f"nasseg/search/{m}.py" for m in ("proxy", "runner", "store", "workers",
                                                     "data", "teachers", "strategies", "controllers")],
               *[f"nasseg/models/{m}.py" for m in ("ops", "encoder", "cvpr_decoder",
                                                     "wacv_decoder", "segmenter", "weights")]]
SEARCH_DATA = {"wacv": "cityscapes", "cvpr": "voc"}


def search_gpus(experiment):
    """GPUs a search holds, for `--resources gpu=N` scheduling."""
    devices = config["search"][experiment][config["preset"]]["devices"]
    return sum(1 for d in devices if str(d).startswith("cuda"))


for _exp, _ds in SEARCH_DATA.items():

    rule:
        name: f"search_{_exp}"
        input:
            "build/ext.json",
            f"data/prepared/{_ds}/meta.json",
            SEARCH_CODE,
        output:
            f"runs/search/{_exp}/summary.json",
        params:
            experiment=_exp,
            data=f"data/prepared/{_ds}",
            out=f"runs/search/{_exp}",
            section=config["search"][_exp][config["preset"]],
        resources:
            gpu=search_gpus(_exp),
        log:
            f"logs/search_{_exp}.log",
        shell:
            "python -m stages.search --experiment {params.experiment} --data {params.data} "
            "--out {params.out} --no-progress > {log} 2>&1"
