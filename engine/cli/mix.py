"""``pixelchain mix A B [...] --out OUT``: an ensemble of trained checkpoints as one model.

    pixelchain mix A.safetensors B.safetensors [...] --out ENSEMBLE.safetensors [--name NAME]

The models (trained on the same data set at the same levels, with the same head kind and classes,
each able to follow the first one's ordering) become the members of a mixture
(:mod:`engine.models.mixture`): ``p(x)`` is the mean of theirs, the log-mean-exp of their joint
log-likelihoods, with exact conditionals along the ordering, so every command and the app use it as
they use any model. Nothing is trained or measured here: ``eval`` and ``classify`` measure it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import CommandError, add_command

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..models.mixture import MAX_MEMBERS

    m = add_command(sub, "mix", "make one model of several trained checkpoints: their mixture (an ensemble)", f"""\
p(x) becomes the mean of the members' p(x) (log-mean-exp of their joint log-likelihoods), and each
pixel's conditional the members' conditionals weighted by how well each explains the pixels before
it, so the ensemble is itself an autoregressive model with exact conditionals in the first model's
ordering. The members must be trained on the same data set, at the same levels, with the same head
kind and classes; 2 to {MAX_MEMBERS} of them. A class-conditional ensemble mixes p(x | y) class by
class, so `pixelchain classify` reads p(y | x) ~ p(y) mean_m p_m(x | y). Measure the result with
`pixelchain eval` or `pixelchain classify`.""")
    m.add_argument("checkpoints", nargs="+", metavar="CKPT", help="the members' .safetensors checkpoints")
    m.add_argument("--out", required=True, help="where to write the ensemble's checkpoint")
    m.add_argument("--name", default=None, help="the name the app shows (default: OUT's file name)")
    m.set_defaults(handler=_cmd_mix)


def _cmd_mix(a: argparse.Namespace) -> int:
    from ..checkpoint import check_can_save, load_checkpoint, save_checkpoint
    from ..datasets import dataset_of, describe
    from ..models.mixture import MAX_MEMBERS, Mixture

    paths = [Path(p) for p in a.checkpoints]
    if not 2 <= len(paths) <= MAX_MEMBERS:
        raise CommandError(f"an ensemble takes 2 to {MAX_MEMBERS} checkpoints, got {len(paths)}")
    out = Path(a.out)
    if out.exists() and any(out.resolve() == p.resolve() for p in paths if p.exists()):
        raise CommandError(f"--out {out} is one of the members: write the ensemble to a new file")
    check_can_save(out)
    cks = [load_checkpoint(p) for p in paths]
    datasets = [dataset_of(ck.meta) for ck in cks]
    for p, ck, ds in zip(paths[1:], cks[1:], datasets[1:], strict=True):
        if ds != datasets[0]:
            raise CommandError(f"{p} was trained on {describe(ds, ck.model.levels)}, {paths[0]} on "
                               f"{describe(datasets[0], cks[0].model.levels)}: the members must model the same data")
    for p, ck in zip(paths, cks, strict=True):
        if ck.model.family == Mixture.family:
            raise CommandError(f"{p} is itself an ensemble: list its members' checkpoints instead")
    try:
        mix = Mixture.of([ck.model for ck in cks])
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    members = [{"file": p.name, "name": ck.name, "family": ck.model.family,
                "metrics": ck.meta.get("metrics", {})} for p, ck in zip(paths, cks, strict=True)]
    meta = {"name": a.name or out.stem, "dataset": datasets[0], "mixture": {"members": members}}
    if "data" in cks[0].meta:
        meta["data"] = cks[0].meta["data"]
    save_checkpoint(out, mix, meta)
    kinds = ", ".join(f"{m['name']} ({m['family']})" for m in members)
    print(f"an ensemble of {len(cks)} models on {describe(datasets[0], mix.levels)} in the {mix.ordering.label} ordering, "
          f"{mix.num_parameters():,} parameters: {kinds} -> {out}")
    return 0
