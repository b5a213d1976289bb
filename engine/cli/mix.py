"""``pixelchain mix A B [...] --out OUT``: an ensemble of trained checkpoints as one model.

    pixelchain mix A.safetensors B.safetensors [...] --out ENSEMBLE.safetensors [--name NAME]

The models (trained on the same data set at the same levels, with the same head kind and classes,
each able to follow the first one's ordering) become the members of a mixture
(:mod:`engine.models.mixture`, written by :func:`engine.ensemble.write_ensemble`): ``p(x)`` is the
mean of theirs, the log-mean-exp of their joint log-likelihoods, with exact conditionals along the
ordering, so every command and the app use it as they use any model. Nothing is trained or measured
here: ``eval`` and ``classify`` measure it.
"""

from __future__ import annotations

import argparse

from .options import add_command

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..models.mixture import CLASSIFIERS, MAX_MEMBERS

    m = add_command(sub, "mix", "make one model of several trained checkpoints: their mixture (an ensemble)", f"""\
p(x) becomes the mean of the members' p(x) (log-mean-exp of their joint log-likelihoods), and each
pixel's conditional the members' conditionals weighted by how well each explains the pixels before
it, so the ensemble is itself an autoregressive model with exact conditionals in the first model's
ordering. The members must be trained on the same data set, at the same levels, with the same head
kind and classes; 2 to {MAX_MEMBERS} of them. A class-conditional ensemble mixes p(x | y) class by
class, so `pixelchain classify` reads p(y | x) ~ p(y) mean_m p_m(x | y), or with --classifier vote
the mean of the members' posteriors p_m(y | x). Measure the result with
`pixelchain eval` or `pixelchain classify`.""")
    m.add_argument("checkpoints", nargs="+", metavar="CKPT", help="the members' .safetensors checkpoints")
    m.add_argument("--out", required=True, help="where to write the ensemble's checkpoint")
    m.add_argument("--name", default=None, help="the name the app shows (default: OUT's file name)")
    m.add_argument("--classifier", choices=CLASSIFIERS, default="bayes",
                   help="how class-conditional members classify together: bayes, Bayes' rule on the ensemble's own "
                        "p(x | y); vote, the mean of the members' posteriors p_m(y | x) (default: %(default)s)")
    m.set_defaults(handler=_cmd_mix)


def _cmd_mix(a: argparse.Namespace) -> int:
    from ..datasets import describe
    from ..ensemble import write_ensemble

    out, mix, meta = write_ensemble(a.checkpoints, a.out, a.name, a.classifier)
    kinds = ", ".join(f"{m['name']} ({m['family']})" for m in meta["mixture"]["members"])
    print(f"an ensemble of {len(mix.models)} models on {describe(meta['dataset'], mix.levels)} in the {mix.ordering.label} "
          f"ordering, {mix.num_parameters():,} parameters: {kinds} -> {out}")
    return 0
