rule build_ext:
    """Compile the Cython extensions in place (nasseg.metrics._confusion)."""
    input:
        "setup.py",
        "nasseg/metrics/_confusion.pyx",
        "stages/build_ext.py",
    output:
        "build/ext.json",
    log:
        "logs/build_ext.log",
    shell:
        "python -m stages.build_ext --out {output} > {log} 2>&1"
