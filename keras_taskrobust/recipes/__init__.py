"""Recipes of the command-line main job: `keras-taskrobust run <recipe>`.

A recipe is a module with a one-line `DESCRIPTION`, `add_arguments(parser)`
for its own options and `run(args) -> dict`, which pre-trains, prints its
results and returns a JSON-serialisable report (the command line writes it
to `<output>/report.json`). The options every recipe shares are in
`keras_taskrobust.cli`. Modules are imported on demand, so a recipe's heavy
dependencies (keras-hub, TFDS) load only when it runs.
"""

import importlib

__all__ = ["DEFAULT_RECIPE", "RECIPES", "get"]

# name: (module, what it does); listed without importing the modules.
RECIPES = {
    "views": (
        "keras_taskrobust.recipes.digit_views",
        "average vs robust pre-training on four views of the same digits (class, rotation, position, mirror), "
        "linear probes per view",
    ),
    "domains": (
        "keras_taskrobust.recipes.digit_domains",
        "average vs robust pre-training on digits in six imbalanced domains, linear probes per domain",
    ),
    "pos-mlm": (
        "keras_taskrobust.recipes.pos_mlm",
        "masked language modelling on BERT with the masked words grouped by part of speech",
    ),
    "mim": (
        "keras_taskrobust.recipes.masked_image",
        "masked image modelling on ViT with several recovery targets",
    ),
}
DEFAULT_RECIPE = "views"


def get(name):
    """The module of the recipe `name`; a `ValueError` lists the valid names."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. The recipes are: {', '.join(sorted(RECIPES))}.")
    return importlib.import_module(RECIPES[name][0])
