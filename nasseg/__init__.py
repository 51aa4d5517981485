"""nasseg: NAS of compact semantic segmentation models (CVPR 2019 / WACV 2020)."""
