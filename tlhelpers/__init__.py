"""tlhelpers: the helper package of the transfer-learning course.

Reference implementations of every exercise (``from tlhelpers import freeze``),
the checks that grade them (``tlhelpers.checks``), pretrained backbones that
also work offline, the ants-vs-bees data, training utilities, plots and widgets.
"""

from . import plots, widgets
from .data import (
    eval_transforms,
    image_folder,
    load_hymenoptera,
    make_loaders,
    split_indices,
    train_transforms,
    verify_image_folder,
)
from .imagenet import preprocess, top_k
from .models import (
    Backbone,
    build_feature_extractor,
    count_parameters,
    describe_head,
    find_head,
    freeze,
    freeze_batchnorm,
    headless,
    load_pretrained,
    param_groups,
    replace_head,
    split_at_top,
    trainable_parameters,
    unfreeze,
)
from .training import (
    History,
    evaluate,
    extract_features,
    fit,
    load_checkpoint,
    make_optimizer,
    predict,
    save_checkpoint,
    train_linear_head,
    train_one_epoch,
)
from .utils import in_colab, is_autograding, pick_device, set_seed

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "History",
    "build_feature_extractor",
    "count_parameters",
    "describe_head",
    "eval_transforms",
    "evaluate",
    "extract_features",
    "find_head",
    "fit",
    "freeze",
    "freeze_batchnorm",
    "headless",
    "image_folder",
    "in_colab",
    "is_autograding",
    "load_checkpoint",
    "load_hymenoptera",
    "load_pretrained",
    "make_loaders",
    "make_optimizer",
    "param_groups",
    "pick_device",
    "plots",
    "predict",
    "preprocess",
    "replace_head",
    "save_checkpoint",
    "set_seed",
    "split_at_top",
    "split_indices",
    "top_k",
    "train_linear_head",
    "train_one_epoch",
    "train_transforms",
    "trainable_parameters",
    "unfreeze",
    "verify_image_folder",
    "widgets",
]
