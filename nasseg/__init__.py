"""nasseg: NAS of compact semantic segmentation models (CVPR 2019 / WACV 2020).

The public API used by the pipeline and by users::

    g = nasseg.published_genotype("wacv", "arch0")       # or genotype_from_legacy / _json
    model = nasseg.build_segmenter(g, num_classes=19)    # agg_size=64, repeats=2
    nasseg.load_original_weights(model, torch.load("authors.ckpt"))
"""
from .genotypes import (CVPRGenotype, Genotype, GenotypeError, WACVGenotype, genotype_from_dict,
                        genotype_from_json, genotype_from_legacy, published_genotype,
                        random_genotype)
from .models import (PretrainedWeightsUnavailable, WeightsError, build_segmenter, count_parameters,
                     export_original_weights, load_imagenet_encoder, load_original_weights)

__all__ = [
    "CVPRGenotype", "WACVGenotype", "Genotype", "GenotypeError",
    "genotype_from_legacy", "genotype_from_json", "genotype_from_dict", "published_genotype",
    "random_genotype", "build_segmenter", "count_parameters", "load_original_weights",
    "export_original_weights", "load_imagenet_encoder", "WeightsError",
    "PretrainedWeightsUnavailable",
]
