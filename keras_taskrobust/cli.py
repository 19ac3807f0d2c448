"""The command-line main job: `keras-taskrobust [run] [recipe] [options]`.

`keras-taskrobust` alone runs the default recipe (`domains`: robust against
average-loss pre-training on the multi-domain digits that ship with the
package); `keras-taskrobust run <recipe>` runs another; `keras-taskrobust
list` lists them. `python -m keras_taskrobust` is the same command.
"""

import argparse
import json
import os
import pathlib
import sys

from keras_taskrobust import recipes

BACKENDS = ("jax", "tensorflow", "torch")


def _common_parser(recipe):
    from keras_taskrobust import rules

    parser = argparse.ArgumentParser(
        prog=f"keras-taskrobust run {recipe}",
        description=recipes.RECIPES[recipe][1],
    )
    parser.add_argument("--backend", choices=BACKENDS, help="Keras backend (default: $KERAS_BACKEND or jax).")
    parser.add_argument("--epochs", type=int, help="pre-training epochs (default: the recipe's).")
    parser.add_argument("--output", default=None, help="output folder (default: taskrobust-output/<recipe>).")
    parser.add_argument("--seed", type=int, default=0, help="random seed of data, model and rule (default: 0).")
    parser.add_argument(
        "--weighting", default="exponentiated_gradient",
        choices=[n for n in rules.available() if n != "uniform"],
        help="the robust rule compared with the average loss (default: exponentiated_gradient).",
    )
    parser.add_argument("--quick", action="store_true", help="a small, fast run (for CI and smoke tests).")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras verbosity (default: 1).")
    return parser


def _split_recipe(argv):
    """`(recipe, rest)` from `[run] [recipe] options...`."""
    if argv and argv[0] == "run":
        argv = argv[1:]
    if argv and not argv[0].startswith("-"):
        return argv[0], argv[1:]
    return recipes.DEFAULT_RECIPE, argv


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("list", "-l"):
        for name in sorted(recipes.RECIPES):
            print(f"{name:10s} {recipes.RECIPES[name][1]}")
        return 0
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\nrecipes: {', '.join(sorted(recipes.RECIPES))}; `keras-taskrobust run <recipe> --help` for options.")
        return 0
    recipe_name, rest = _split_recipe(argv)
    try:
        recipe = recipes.get(recipe_name)
    except ValueError as error:
        print(f"keras-taskrobust: error: {error}", file=sys.stderr)
        return 2
    parser = _common_parser(recipe_name)
    recipe.add_arguments(parser)
    args = parser.parse_args(rest)

    import keras

    if args.backend and args.backend != keras.backend.backend():
        # The backend is fixed when Keras is imported (it already is, by this
        # package): start again with it set.
        env = {**os.environ, "KERAS_BACKEND": args.backend}
        os.execve(sys.executable, [sys.executable, "-m", "keras_taskrobust", "run", recipe_name, *rest], env)
    args.backend = keras.backend.backend()
    args.recipe = recipe_name
    args.output = pathlib.Path(args.output or pathlib.Path("taskrobust-output") / recipe_name)
    args.output.mkdir(parents=True, exist_ok=True)
    report = recipe.run(args)
    report = {"recipe": recipe_name, "backend": args.backend, "seed": args.seed, **report}
    path = args.output / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Report: {path}")
    return 0
