"""The papers' published figures for their released architectures, with where each comes from.

What: :data:`PUBLISHED_FIGURES`, one record per published number -- the quality of the
released models on their datasets and the eval-mode latency of the WACV models -- so
that the report can show them beside this project's own measurements, always
labelled as the papers' figures (their data, their hardware, their training), never
mixed with ours.

Why one constant: the numbers are facts about the papers, quoted in one place with
their source, instead of copied into each table that shows them. They come from
``search-spaces.md`` ("Published quality of these models", "Eval-mode latency"),
which quotes the papers and the authors' README.

Latency: the WACV paper first gave 95.7 and 145 ms for arch0 and arch1 at 2048x1024,
timed with the models in training mode; the authors' README (DrSleep/nas-segm-pytorch,
"Note on the runtime of WACV 2020 models") corrects them to the eval-mode figures
below, measured on one GTX 1080Ti (mean +- std as the README gives them).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PublishedFigure", "PUBLISHED_FIGURES", "published_figures"]

_CVPR = "Nekrasov et al., CVPR 2019 (arXiv 1810.10804)"
_WACV = "Nekrasov et al., WACV 2020 (arXiv 1904.02365)"
_README = ("the authors' README, DrSleep/nas-segm-pytorch, 'Note on the runtime of WACV 2020 "
           "models' (eval mode; corrects the paper's train-mode figures)")


@dataclass(frozen=True)
class PublishedFigure:
    """One published number about one released architecture (``space``/``arch``).

    ``kind`` is ``quality`` (``dataset``/``split``/``metric``, e.g. cityscapes val miou, as a
    fraction; RMSE in metres) or ``latency`` (``size`` as height x width, ``value`` in
    milliseconds, ``std`` its spread, measured on ``device``, for the network of ``params``
    parameters with ``num_classes`` outputs).
    """
    kind: str
    space: str
    arch: str
    value: float
    source: str
    dataset: str = ""
    split: str = ""
    metric: str = ""
    size: tuple[int, int] | None = None
    std: float | None = None
    device: str = ""
    num_classes: int | None = None
    params: int | None = None


def _quality(space: str, arch: str, dataset: str, split: str, metric: str, value: float,
             source: str) -> PublishedFigure:
    return PublishedFigure("quality", space, arch, value, source, dataset=dataset, split=split, metric=metric)


#: Parameters of the released WACV models with 19 output classes (the README's table, and the spec's).
_WACV_PARAMS = {"arch0": 280_147, "arch1": 268_235}


def _latency(arch: str, size: tuple[int, int], ms: float, std: float) -> PublishedFigure:
    return PublishedFigure("latency", "wacv", arch, ms, _README, size=size, std=std, device="GTX 1080Ti",
                           num_classes=19, params=_WACV_PARAMS[arch])


#: Every published figure of the released models.
PUBLISHED_FIGURES: tuple[PublishedFigure, ...] = (
    # CVPR 2019: PASCAL VOC val mIoU and NYUD-v2 depth RMSE (metres) of arch0/1/2
    _quality("cvpr", "arch0", "voc", "val", "miou", 0.780, _CVPR),
    _quality("cvpr", "arch1", "voc", "val", "miou", 0.771, _CVPR),
    _quality("cvpr", "arch2", "voc", "val", "miou", 0.773, _CVPR),
    _quality("cvpr", "arch0", "nyud", "test", "rmse", 0.523, _CVPR),
    _quality("cvpr", "arch1", "nyud", "test", "rmse", 0.526, _CVPR),
    _quality("cvpr", "arch2", "nyud", "test", "rmse", 0.525, _CVPR),
    # WACV 2020: CityScapes val/test and CamVid test mIoU of arch0/1
    _quality("wacv", "arch0", "cityscapes", "val", "miou", 0.681, _WACV),
    _quality("wacv", "arch1", "cityscapes", "val", "miou", 0.695, _WACV),
    _quality("wacv", "arch0", "cityscapes", "test", "miou", 0.677, _WACV),
    _quality("wacv", "arch1", "cityscapes", "test", "miou", 0.678, _WACV),
    _quality("wacv", "arch0", "camvid", "test", "miou", 0.639, _WACV),
    _quality("wacv", "arch1", "camvid", "test", "miou", 0.632, _WACV),
    # WACV 2020 latency, eval mode, batch 1, one GTX 1080Ti (height x width)
    _latency("arch0", (1024, 2048), 52.25, 0.03),
    _latency("arch1", (1024, 2048), 97.11, 0.24),
    _latency("arch0", (360, 480), 8.97, 0.10),
    _latency("arch1", (360, 480), 11.51, 0.14),
)


def published_figures(kind: str, space: str) -> list[PublishedFigure]:
    """The figures of one kind (``quality``, ``latency``) for the architectures of ``space``."""
    return [f for f in PUBLISHED_FIGURES if f.kind == kind and f.space == space]
