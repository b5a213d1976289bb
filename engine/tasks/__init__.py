"""Things done with a trained model: lossless compression (:mod:`.compress`), digit-likeness scores
(:mod:`.score`) and the measured conditional likelihood of an inpainted region (:mod:`.inpaint_eval`).

Each module takes an :class:`~engine.models.base.ARModel` and data; none of them trains."""
