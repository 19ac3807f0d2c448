"""A recipe's robust runs from the command line: which rule, following which losses.

Every recipe compares `uniform` task weights with one robust run, the rule
of `--weighting` following the losses of `--signal`:

- `training`: each task's loss on the training batch, inside the step;
- `held_out`: its loss on a small held-out set the recipe sets aside,
  measured every `--update-every` steps (`MirrorDescent(held_out=...)`);
- `excess`: its held-out loss in excess of the `uniform` run's model on
  the same elements (DoReMi's reference; needs task ids in x).

`--compare rule@signal,...` runs several robust arms beside one `uniform`
run per seed (the same data, seed and budget), e.g.
`--compare exponentiated_gradient@training,learning_progress@held_out`.
A recipe whose tasks are not the same size (pos-mlm's groups) also takes
`average`: plain `fit` on the pooled loss, no task weights at all.
"""

import argparse

from keras_taskrobust import cli
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent

SIGNALS = ("training", "held_out", "excess")
# The rules whose step size and mixing towards uniform the command line sets.
TUNABLE = ("exponentiated_gradient", "learning_progress")


class Arm:
    """One robust run: its name in the report, its rule and the losses the rule follows.

    The `average` arm has neither: the recipe trains on the pooled loss.
    """

    def __init__(self, name, rule, signal):
        self.name, self.rule, self.signal = name, rule, signal

    @property
    def pooled(self):
        """Whether this is the `average` arm: plain `fit` on the pooled loss."""
        return self.rule is None

    def callback(self, held_out, reference=None, update_every=10):
        """The `MirrorDescent` of this arm, given the recipe's held-out set and the `uniform` run's model."""
        if self.signal == "training":
            return MirrorDescent(self.rule)
        return MirrorDescent(self.rule, update_every=update_every, held_out=held_out,
                             reference=reference if self.signal == "excess" else None)


def add_arguments(parser, defaults, signal="training", signals=SIGNALS, average=False, compare=None):
    """Adds `--signal`, `--step-size`, `--smoothing`, `--update-every` and `--compare`.

    `defaults`: `{rule name: {argument: value}}`, the recipe's settings of
    each rule where they differ from the rule's own defaults, and
    `{"rule@signal": {...}}` where they differ for that signal (a rule that
    updates every 10 steps on held-out losses takes 10 times the step size
    of one that updates every step on the training batch). `average`:
    whether `--compare` takes `average`, the pooled loss. `compare`: the
    recipe's default arms, as `--compare` takes them, run when none of
    `--compare`, `--weighting` and `--signal` is given (default: one arm,
    `--weighting` following `signal`).
    """
    def default(name, key):
        value = defaults.get(name, {}).get(key)
        return "the rule's" if value is None else value

    parser.add_argument("--signal", default=None, choices=signals,
                        help=f"the losses the robust rule follows: the training batch's, a held-out set's, or the "
                             f"held-out excess over the uniform run's model (default: {signal}).")
    parser.add_argument("--step-size", type=cli.non_negative_float, default=None,
                        help=f"the step size of exponentiated_gradient (default: {default(TUNABLE[0], 'step_size')}) "
                             f"or learning_progress (default: {default(TUNABLE[1], 'step_size')}).")
    parser.add_argument("--smoothing", type=cli.share, default=None,
                        help=f"their mixing towards uniform weights (default: {default(TUNABLE[0], 'smoothing')}, "
                             f"{default(TUNABLE[1], 'smoothing')}).")
    parser.add_argument("--update-every", type=cli.positive_int, default=10,
                        help="steps between weight updates on held-out losses (default: 10).")
    pooled = ", or average (plain fit on the pooled loss)" if average else ""
    parse = _arm_list(signals, average)
    parser.add_argument("--compare", type=parse, default=None, metavar="RULE@SIGNAL,...",
                        help="several robust runs beside one uniform run, e.g. "
                             f"exponentiated_gradient@training,learning_progress@held_out{pooled} "
                             f"(default: {compare or '--weighting@--signal'}; --weighting or --signal alone: that one).")
    parser.set_defaults(rule_defaults=defaults, default_signal=signal, default_compare=compare and parse(compare),
                        default_weighting=parser.get_default("weighting"))
    if compare:
        # `None` tells "not given" from the default rule given explicitly.
        parser.set_defaults(weighting=None)


def _arm_list(signals, average):
    def parse(text):
        arms = []
        for entry in filter(None, (e.strip() for e in text.split(","))):
            if average and entry == "average":
                arms.append(("average", None))
                continue
            name, _, signal = entry.partition("@")
            if name not in rules.available() or name == "uniform" or signal not in signals:
                raise argparse.ArgumentTypeError(
                    f"{entry!r} is not RULE@SIGNAL with RULE one of "
                    f"{[n for n in rules.available() if n != 'uniform']} and SIGNAL one of {list(signals)}"
                    + (", or average" if average else ""))
            arms.append((name, signal))
        if not arms or len(set(arms)) != len(arms):
            raise argparse.ArgumentTypeError(f"give distinct RULE@SIGNAL entries; got {text!r}")
        return arms

    return parse


def arms(args):
    """The robust `Arm`s of this command: `--compare`'s, `--weighting` following `--signal`, or the recipe's."""
    weighting, signal, compare = args.weighting, args.signal, args.compare
    if compare is None and weighting is None and signal is None:
        compare = args.default_compare
    weighting = weighting or args.default_weighting
    signal = signal or args.default_signal
    given = {"step_size": args.step_size, "smoothing": args.smoothing}
    if not any(name in TUNABLE for name, _ in compare or [(weighting, None)]):
        for key, value in given.items():
            if value is not None:
                raise SystemExit(f"keras-taskrobust: error: --{key.replace('_', '-')} sets "
                                 f"{' and '.join(TUNABLE)}, not {weighting}.")
    if compare is None:
        return [Arm(weighting, _rule(weighting, signal, args.rule_defaults, given), signal)]
    return [Arm("average", None, None) if name == "average" else
            Arm(f"{name}@{signal}", _rule(name, signal, args.rule_defaults, given), signal)
            for name, signal in compare]


def _rule(name, signal, defaults, given):
    settings = {**defaults.get(name, {}), **defaults.get(f"{name}@{signal}", {})}
    if name in TUNABLE:
        settings.update({k: v for k, v in given.items() if v is not None})
    return type(rules.get(name))(**settings)
